import pytest
import torch
from diffusers import UNet2DConditionModel

from llmdiff.encoders import TextInput
from llmdiff.denoisers.adapter import (
    AdaptedDenoiser, AdaptedUNet, LLMAdapter, cross_attentions,
)
from llmdiff.denoisers.unet import TextUNet, build_unet

LLM = 24


def base():
    torch.manual_seed(0)
    return build_unet("tiny", {"block_out_channels": (8, 16, 16, 16)}, sample_size=16, text_dims=(12,))


def llm_text(b=2, n_blocks=3, length=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.arange(length)[None] < torch.tensor([length, 2][:b])[:, None]
    return TextInput(torch.randn(b, 1 + n_blocks, length, LLM, generator=g) * mask[:, None, :, None], mask)


def adapted(base_model):
    m = AdaptedUNet(base_config=dict(base_model.unet.config), text_dims=(LLM,), text_outputs=(4,), sample_size=16)
    m.unet.load_state_dict(base_model.unet.state_dict(), strict=False)
    return m.eval()


def test_text_unet_runs_and_ignores_padding():
    m = base().eval()
    x = torch.randn(2, 3, 16, 16)
    mask = torch.tensor([[True, True, False], [False, False, False]])
    feats = torch.randn(2, 3, 12)
    a = m(x, torch.tensor([10, 10]), [TextInput(feats, mask)])
    b = m(x, torch.tensor([10, 10]), [TextInput(feats + 5 * (~mask)[..., None], mask)])
    assert a.shape == x.shape and torch.isfinite(a).all()
    torch.testing.assert_close(a, b)


def test_adapter_at_init_equals_the_frozen_unet_reading_phi_c():
    b = base()
    m = adapted(b)
    text = llm_text()
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([100, 700])
    out = m(x, t, [text])
    # the same U-Net with plain processors, fed phi(c) computed by each layer's own phi
    c = m.adapter.llm_encoding(text.features) * text.mask[..., None]
    ctx = torch.cat([m.adapter.null_c.expand(2, -1, -1), c], 1)
    mask = torch.cat([torch.ones(2, 1, dtype=torch.bool), text.mask], 1).long()
    procs = m.processors
    for name, attn in cross_attentions(m.unet).items():  # plain attention reading phi(c) of that layer
        phi = procs[name].phi
        attn.set_processor(_PhiThenPlain(phi))
    ref = m.unet(x, t, encoder_hidden_states=ctx, encoder_attention_mask=mask).sample
    torch.testing.assert_close(out, ref)


class _PhiThenPlain:
    def __init__(self, phi):
        from diffusers.models.attention_processor import AttnProcessor2_0

        self.phi, self.plain = phi, AttnProcessor2_0()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        return self.plain(attn, hidden_states, self.phi(encoder_hidden_states), attention_mask, temb)


def test_new_branch_starts_at_zero_and_gates_at_one():
    m = adapted(base())
    for proc in m.processors.values():
        assert (proc.to_out.weight == 0).all() and proc.gates == (1.0, 1.0)


def test_only_adapter_parameters_get_gradients():
    m = adapted(base()).train()
    out = m(torch.randn(2, 3, 16, 16), torch.tensor([5, 500]), [llm_text()])
    out.pow(2).mean().backward()
    enc = m.adapter.llm_encoding
    adapter_ids = {id(p) for p in m.adapter_parameters()} | {id(p) for p in enc.parameters()} | {id(m.adapter.null_c)}
    for name, p in m.named_parameters():
        if id(p) in adapter_ids:
            assert p.requires_grad
        else:
            assert not p.requires_grad and p.grad is None, name
    assert enc.g.grad is not None and enc.rho.grad is not None  # LLMDiff's g and h train
    assert any(proc.a2.grad is not None for proc in m.processors.values())


def test_attaches_to_an_sd15_layout_unet_with_per_block_widths():
    cfg = dict(sample_size=8, block_out_channels=(32, 64, 128, 128), layers_per_block=1, cross_attention_dim=40,
               attention_head_dim=8, norm_num_groups=8,
               down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
               up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"))
    unet = UNet2DConditionModel(**cfg)  # Stable Diffusion 1.5's block layout, narrow
    adapter = LLMAdapter.for_unet(unet, llm_dim=LLM)
    adapter.attach(unet, blend=False)  # the U-Net reads the LLM context alone, as in training
    procs = adapter.processors
    widths = {p.to_out.out_features for p in procs.values()}
    assert len(procs) == 3 + 1 + 6 and widths == {32, 64, 128}  # down, mid, up; widths read from each module
    ctx = torch.randn(1, 4, LLM)
    out = unet(torch.randn(1, 4, 8, 8), 10, encoder_hidden_states=ctx).sample
    assert out.shape == (1, 4, 8, 8)


def test_the_adapter_alone_on_its_base_is_the_adapted_model_and_detaches_cleanly(tmp_path):
    b = base()
    m = adapted(b)
    for p in m.adapter_parameters():
        torch.nn.init.normal_(p, std=0.1)
    m.save_adapter(tmp_path / "adapter")
    assert sorted(f.name for f in (tmp_path / "adapter").iterdir()) == ["llm_adapter.safetensors",
                                                                        "llm_adapter_config.json"]
    other = base().eval()  # the same base, no adapter yet
    before = {n: a.processor for n, a in cross_attentions(other.unet).items()}
    keys = set(other.state_dict())
    x, t, text = torch.randn(2, 3, 16, 16), torch.tensor([3, 300]), llm_text()
    base_text = TextInput(torch.randn(2, 3, 12), torch.tensor([[True, True, False], [True, False, False]]))
    plain = other(x, t, [base_text])
    adapter = LLMAdapter.load(tmp_path / "adapter")
    adapter.attach(other.unet)
    assert set(other.state_dict()) == keys  # the adapter's weights stay out of the U-Net
    torch.testing.assert_close(AdaptedDenoiser(other, adapter)(x, t, [base_text, text]), m(x, t, [text]))
    adapter.set_scale(0.0)
    assert torch.equal(AdaptedDenoiser(other, adapter)(x, t, [base_text, text]), plain)  # scale 0: the base exactly
    adapter.detach(other.unet)
    assert all(a.processor is before[n] for n, a in cross_attentions(other.unet).items())


def test_full_model_save_load_roundtrip(tmp_path):
    m = adapted(base())
    for p in m.adapter_parameters():
        torch.nn.init.normal_(p, std=0.1)
    m.save_pretrained(tmp_path / "m")
    loaded = AdaptedUNet.from_pretrained(tmp_path / "m").eval()
    x, t, text = torch.randn(2, 3, 16, 16), torch.tensor([3, 300]), [llm_text()]
    torch.testing.assert_close(m(x, t, text), loaded(x, t, text))
    assert not any(p.requires_grad for p in loaded.unet.conv_in.parameters())


def test_text_unet_save_load(tmp_path):
    m = base()
    m.save_pretrained(tmp_path / "u")
    loaded = TextUNet.from_pretrained(tmp_path / "u")
    x, t = torch.randn(1, 3, 16, 16), torch.tensor([7])
    text = [TextInput(torch.randn(1, 3, 12), torch.ones(1, 3, dtype=torch.bool))]
    torch.testing.assert_close(m.eval()(x, t, text), loaded.eval()(x, t, text))


@pytest.mark.parametrize("kind", ["TextUNet", "UNet2DConditionModel"])
def test_build_adapter_around_a_saved_base(tmp_path, kind):
    from llmdiff.denoisers.adapter import build_adapter_model
    from llmdiff.model_folder import export_model, load_base_unet

    b = base()
    if kind == "TextUNet":  # a model folder, as training exports it
        export_model(b, tmp_path / "base")
    else:  # a Stable Diffusion style unet/ folder
        b.unet.save_pretrained(tmp_path / "base")
    base_path = tmp_path / "base"
    m = build_adapter_model(load_base_unet(base_path), base_path, (LLM,), (4,), connector="blockwise").eval()
    for name, p in b.unet.state_dict().items():
        torch.testing.assert_close(m.unet.state_dict()[name], p)
    assert m.config.sample_size == 16 and not m.unet.conv_in.weight.requires_grad
    with pytest.raises(Exception, match="no trained base U-Net"):
        load_base_unet(tmp_path / "none")
