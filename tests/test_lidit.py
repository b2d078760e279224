import math

import pytest
import torch

from llmdiff.connectors.conditioner import TextConditioner
from llmdiff.connectors.features import BlockwiseLLMDiff, LayerMix
from llmdiff.connectors.refiner import RefinerBlock, TokenRefiner
from llmdiff.denoisers.lidit import LIDiT, PRESETS, build_lidit
from llmdiff.diffusion import empty_like, make_scheduler, sample, training_loss
from llmdiff.encoders import TextInput
from llmdiff.errors import LLMDiffError
from llmdiff.layers import attention


def texts(b=3, length=7, dim=24, n=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (b, length, dim) if n is None else (b, n, length, dim)
    mask = torch.arange(length)[None] < torch.tensor([length, 4, 0][:b])[:, None]  # full, partial, empty
    feats = torch.randn(shape, generator=g)
    feats = feats * (mask[:, None, :, None] if n else mask[..., None])
    return TextInput(feats, mask)


def tiny(**kw):
    torch.manual_seed(0)
    return LIDiT(**{**dict(sample_size=16, patch_size=4, hidden_size=32, depth=2, heads=4, text_dims=(24,)), **kw})


def test_attention_never_gives_nan_for_fully_masked_rows():
    q = k = v = torch.randn(2, 2, 5, 8)
    mask = torch.tensor([[True, True, False, False, False], [False] * 5])
    out = attention(q, k, v, mask)
    assert torch.isfinite(out).all()
    ref = attention(q[:1, :, :, :], k[:1, :, :2], v[:1, :, :2])  # masked keys have no influence
    torch.testing.assert_close(out[:1], ref)


def test_attention_under_cpu_bf16_autocast_matches_fp32_and_keeps_the_input_dtype():
    """bf16 training on a CPU runs attention in fp32 (a speed choice): the result must be the fp32 attention of
    the bf16 inputs, masks applied, in the inputs' dtype, with gradients reaching them."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 5, 8, generator=g) for _ in range(3))
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    qb, kb, vb = (t.bfloat16().requires_grad_() for t in (q, k, v))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attention(qb, kb, vb, mask)
    scores = (qb.float() @ kb.float().transpose(-1, -2)) / math.sqrt(8)
    scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
    reference = scores.softmax(-1) @ vb.float()
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), reference, atol=1e-2, rtol=1e-2)  # bf16 keeps 8 mantissa bits
    out.float().sum().backward()
    assert all(t.grad is not None and t.grad.dtype == torch.bfloat16 for t in (qb, kb, vb))
    assert kb.grad[1, :, 2:].abs().max() == 0  # masked keys get no gradient


@pytest.mark.parametrize("causal", [False, True])
def test_refiner_is_identity_at_init_and_nan_free(causal):
    ref = TokenRefiner(24, 4, depth=2, causal=causal)
    t = texts()
    out = ref(t.features, t.mask, torch.tensor([10.0, 500.0, 999.0]))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, t.features)


def test_refiner_is_bidirectional_unless_causal():
    torch.manual_seed(0)
    x = torch.randn(1, 6, 16)
    mask = torch.ones(1, 6, dtype=torch.bool)
    cond = torch.randn(1, 16)
    for causal in (False, True):
        block = RefinerBlock(16, 2, causal=causal)
        torch.nn.init.normal_(block.ada[1].weight, std=0.5)  # leave the identity init
        y1 = block(x, mask, cond)
        x2 = x.clone()
        x2[0, -1] = torch.randn(16)  # change the last token
        y2 = block(x2, mask, cond)
        first_token_changed = not torch.allclose(y1[0, 0], y2[0, 0])
        assert first_token_changed == (not causal)


def test_rotary_positions_make_attention_scores_depend_on_distance_only():
    from llmdiff.layers import rotary

    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 1, 8, generator=g), torch.randn(1, 1, 1, 8, generator=g)

    def score(i, j):
        return (rotary(q, torch.tensor([[i]])) * rotary(k, torch.tensor([[j]]))).sum()

    torch.testing.assert_close(score(3, 1), score(7, 5))  # distance 2 both times
    assert not torch.allclose(score(3, 1), score(1, 3))  # the direction matters
    torch.testing.assert_close(rotary(q, torch.tensor([[0]])), q)  # position 0 is not turned


def test_refiner_sees_word_order_only_with_rotary_positions():
    """Without positions a bidirectional refiner is permutation-equivariant: reversing the tokens reverses its
    output. With rope it is not; both start as the identity (zero gates), and without gates they do not."""
    torch.manual_seed(0)
    x, mask, t = torch.randn(2, 6, 24), torch.ones(2, 6, dtype=torch.bool), torch.tensor([100.0, 900.0])
    outputs = {}
    for rope in (False, True):
        torch.manual_seed(1)
        ref = TokenRefiner(24, 4, depth=2, rope=rope)
        torch.testing.assert_close(ref(x, mask, t), x)  # identity at init
        with torch.no_grad():
            for p in ref.parameters():
                p.add_(torch.randn_like(p) * 0.1)
        outputs[rope] = (ref(x, mask, t), ref(x.flip(1), mask, t).flip(1))
    torch.testing.assert_close(*outputs[False])
    assert (outputs[True][0] - outputs[True][1]).abs().max() > 1e-3
    ungated = TokenRefiner(24, 4, depth=1, gates=False)
    assert len(ungated.blocks[0].ada[1].bias) == 4 * 24 and not torch.allclose(ungated(x, mask, t), x)


def test_refiner_ignores_padding():
    torch.manual_seed(0)
    ref = TokenRefiner(24, 4, depth=2)
    for p in ref.parameters():
        torch.nn.init.normal_(p, std=0.2)
    t = texts()
    a = ref(t.features, t.mask, torch.tensor([1.0, 1.0, 1.0]))
    junk = t.features + (~t.mask)[..., None] * 100.0  # garbage in the padding
    b = ref(junk, t.mask, torch.tensor([1.0, 1.0, 1.0]))
    torch.testing.assert_close(a * t.mask[..., None], b * t.mask[..., None])


def test_collaborative_refiner_and_concatenation():
    cond = TextConditioner([24, 40], [1, 1], 32, 4, collaborative=True)
    plain = TextConditioner([24, 40], [1, 1], 32, 4, collaborative=False)
    a, b = texts(dim=24), texts(length=5, dim=40, seed=1)
    for c in (cond, plain):
        tokens, mask = c([a, b], torch.tensor([5.0, 5.0, 5.0]))
        assert tokens.shape == (3, 12, 32) and torch.equal(mask, torch.cat([a.mask, b.mask], 1))
        assert torch.isfinite(tokens).all()
    assert plain.collaborative is None and cond.collaborative is not None


def test_instruction_tokens_are_dropped_after_the_refiners():
    c = TextConditioner([24], [1], 32, 4)
    t = texts()
    prompt_mask = t.mask.clone()
    prompt_mask[:, :2] = False  # the first two tokens are the instruction
    tokens, mask = c([TextInput(t.features, t.mask, prompt_mask)], torch.tensor([1.0, 1.0, 1.0]))
    assert mask.sum(1).tolist() == [5, 2, 0]


@pytest.mark.parametrize("n_llms", [1, 2])
def test_inference_skips_empty_prompts_and_gives_the_same_tokens(n_llms):
    torch.manual_seed(0)
    c = TextConditioner([24, 40][:n_llms], [1] * n_llms, 32, 4)
    for p in c.parameters():  # non-zero modulation: the refiners are not the identity
        torch.nn.init.normal_(p, std=0.2)
    ts = [texts(dim=24), texts(length=5, dim=40, seed=1)][:n_llms]  # rows: full, partial, empty
    step = torch.tensor([100.0, 300.0, 700.0])
    seen = []
    c.refiners[0].register_forward_hook(lambda mod, args, out: seen.append(args[0].shape[0]))
    full_tokens, full_mask = c.train()(ts, step)  # training computes every row
    tokens, mask = c.eval()(ts, step)
    assert seen == [3, 2]  # the empty third row never reached the refiner at inference
    # batches of 3 and 2 rows are not bitwise equal under BLAS: fp32 tolerance for a few summed matmuls
    torch.testing.assert_close(tokens, full_tokens, rtol=1e-4, atol=1e-4)
    assert torch.equal(mask, full_mask) and (tokens[2] == 0).all()


def test_layer_mix_and_blockwise_connectors():
    mix = LayerMix(24, 32, n_layers=3)
    assert torch.allclose(mix.weights, torch.full((3,), 1 / 3))
    assert mix(texts(n=3).features).shape == (3, 7, 32)
    bw = BlockwiseLLMDiff(24, 32, n_blocks=4)
    feats = texts(n=5).features
    bw.eval()
    a = bw(feats)
    manual = bw.proj(bw.norm(feats[:, 0] + feats[:, 1:].sum(1)))  # g = 1 at init, no noise in eval
    torch.testing.assert_close(a, manual)
    bw.train()
    assert not torch.allclose(bw(feats), a)  # Langevin noise sqrt(2h) eps in training
    (bw(feats).sum()).backward()
    assert bw.g.grad is not None and bw.rho.grad is not None
    quiet = BlockwiseLLMDiff(24, 32, n_blocks=4, noise=False)
    quiet.load_state_dict(bw.state_dict())
    torch.testing.assert_close(quiet.train()(feats), a)  # without the noise term training sees the eval encoding


# the pixel-space levers: hourglass (outer blocks around merged tokens), Mix-FFN, U-ViT long skips, joint attention
VARIANTS = [{}, {"ffn": "mixffn"}, {"long_skips": True, "depth": 4},
            {"outer_depth": 2, "outer_width": 16, "ffn": "mixffn", "long_skips": True, "patch_size": 2},
            {"text_attention": "joint"},
            {"outer_depth": 2, "outer_width": 16, "patch_size": 2, "text_attention": "joint"}]


@pytest.mark.parametrize("kw", VARIANTS)
def test_lidit_shapes_zero_init_and_text_is_ignored_at_init(kw):
    m = tiny(**kw)
    x = torch.randn(3, 3, 16, 16)
    out = m(x, torch.tensor([10.0, 500.0, 900.0]), [texts()])
    assert out.shape == x.shape and (out == 0).all()  # zero-initialised output layer


@pytest.mark.parametrize("kw", VARIANTS)
def test_lidit_conditions_on_text_and_respects_masks(kw):
    m = tiny(**kw)
    for p in m.parameters():
        if p.dim() > 0:
            torch.nn.init.normal_(p, std=0.1)
    t = texts()
    x = torch.randn(3, 3, 16, 16)
    step = torch.tensor([100.0, 100.0, 100.0])
    a = m(x, step, [t])
    other = TextInput(t.features + torch.randn_like(t.features) * (~t.mask)[..., None], t.mask)
    torch.testing.assert_close(a, m(x, step, [other]))  # padding content is ignored
    changed = TextInput(t.features * 2, t.mask)
    b = m(x, step, [changed])
    assert not torch.allclose(a[0], b[0]) and torch.allclose(a[2], b[2])  # the empty prompt has no text to change


@pytest.mark.parametrize("name, lo, hi", [("tiny", 1e6, 3e6), ("small", 4e6, 8e6), ("hourglass", 4e6, 6e6), ("base", 25e6, 45e6),
                                          ("1b", 0.9e9, 1.4e9)])
def test_presets_have_the_documented_sizes(name, lo, hi):
    with torch.device("meta"):
        m = build_lidit(name, text_dims=(576,))
    n = sum(p.numel() for p in m.parameters())
    assert lo <= n <= hi, f"{name}: {n / 1e6:.1f}M parameters"
    assert set(PRESETS) >= {"tiny", "1b"}


@pytest.mark.parametrize("kw", VARIANTS)
def test_save_and_load_give_the_same_outputs(tmp_path, kw):
    m = tiny(refiner_depth=1, pos_embed="conv+sincos", out_conv=True, **kw)
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.05)
    m.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "diffusion_pytorch_model.safetensors").is_file()
    loaded = LIDiT.from_pretrained(tmp_path / "m")
    x, step, t = torch.randn(3, 3, 16, 16), torch.tensor([1.0, 2.0, 3.0]), [texts()]
    torch.testing.assert_close(m(x, step, t), loaded(x, step, t))
    assert loaded.config.pos_embed == "conv+sincos"


def test_hourglass_merges_and_splits_2x2_tokens_exactly_and_checks_its_grid():
    from llmdiff.denoisers.lidit import _merge_2x2, _split_2x2

    x = torch.arange(2 * 16 * 3, dtype=torch.float32).view(2, 16, 3)  # a 4x4 grid
    merged = _merge_2x2(x, 4, 4)
    assert merged.shape == (2, 4, 12)
    # the first merged token holds grid positions (0,0), (0,1), (1,0), (1,1)
    assert torch.equal(merged[0, 0].view(4, 3), x[0, [0, 1, 4, 5]])
    assert torch.equal(_split_2x2(merged, 4, 4), x)
    with pytest.raises(ValueError, match="must be even"):
        tiny(outer_depth=2, patch_size=5, sample_size=15)  # a 3x3 token grid
    with pytest.raises(ValueError, match="outer_depth must be even"):
        tiny(outer_depth=1)
    with pytest.raises(ValueError, match="unknown ffn"):
        tiny(ffn="glu")


def test_long_skips_feed_the_first_half_into_the_second():
    m = tiny(long_skips=True, depth=4)
    assert len(m.skips) == 2
    seen = []
    for k, skip in enumerate(m.skips):
        skip.register_forward_hook(lambda mod, args, out, k=k: seen.append(k))
    m(torch.randn(1, 3, 16, 16), torch.tensor([5.0]), [texts(b=1)])
    assert seen == [1, 0]  # the innermost pair first, as in U-ViT


def test_any_resolution_works():
    m = tiny()
    assert m(torch.randn(2, 3, 32, 24), torch.tensor([1.0, 1.0]), [texts(b=2)]).shape == (2, 3, 32, 24)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        m(torch.randn(2, 3, 30, 30), torch.tensor([1.0, 1.0]), [texts(b=2)])


@pytest.mark.parametrize("objective", ["flow", "eps"])
def test_objectives_train_and_sample(objective):
    m = tiny(objective=objective)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    x0 = torch.rand(3, 3, 16, 16) * 2 - 1
    t = [texts()]
    losses = []
    for i in range(30):
        loss = training_loss(m, x0, t, objective, torch.Generator().manual_seed(i))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) < sum(losses[:5])
    imgs = sample(m, t, make_scheduler(objective), steps=4, guidance_scale=2.0,
                  generator=torch.Generator().manual_seed(0), shape=(3, 16, 16))
    assert imgs.shape == (3, 3, 16, 16) and torch.isfinite(imgs).all()  # as sampled: range is the decoder's job


def test_empty_like_is_fully_masked():
    e = empty_like([texts()])[0]
    assert not e.mask.any() and (e.features == 0).all()


@pytest.mark.parametrize("kind", ["single", "layer_mix", "blockwise"])
def test_feature_statistics_standardise_the_training_features_and_ignore_padding(kind):
    from llmdiff.connectors.features import make_feature_connector

    g = torch.Generator().manual_seed(0)
    n = 1 if kind == "single" else 3
    shape = (64, 5, 12) if kind == "single" else (64, n, 5, 12)
    offset = torch.zeros(12)
    offset[2] = 500.0  # a "massive activation": one channel far from zero on every token
    feats = torch.randn(shape, generator=g) * 3 + offset
    mask = torch.arange(5)[None] < torch.randint(1, 6, (64, 1), generator=g)
    feats = torch.where(mask[:, None, :, None] if n > 1 else mask[..., None], feats, torch.full_like(feats, 1e4))
    conn = make_feature_connector(kind, 12, 8, n)
    conn.fit_statistics(feats, mask)
    z = conn.stats(feats.sum(1) if kind == "blockwise" else feats)
    z = z.movedim(-2, 1)[mask] if z.dim() == 4 else z[mask]  # valid tokens: padding (1e4) did not enter the statistics
    torch.testing.assert_close(z.mean(0), torch.zeros_like(z.mean(0)), atol=1e-4, rtol=0)
    torch.testing.assert_close(z.std(0), torch.ones_like(z.std(0)), atol=1e-4, rtol=0)
    state = conn.state_dict()
    assert {"stats.mean", "stats.std"} <= set(state)  # saved with the weights


def test_fitted_feature_statistics_change_the_output_and_survive_save_and_load(tmp_path):
    tokens = texts(n=None)
    model = tiny().eval()
    for p in model.parameters():  # leave the zero init, where the output ignores the text
        torch.nn.init.normal_(p, std=0.1)
    x, t = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0)), torch.tensor([1.0, 2.0, 3.0])
    before = model(x, t, [tokens])
    model.fit_text_statistics([TextInput(tokens.features * 10 + 7, tokens.mask)])
    assert not torch.allclose(model.text.connectors[0].stats.mean, torch.zeros(24))
    after = model(x, t, [tokens])
    assert not torch.allclose(before, after, atol=1e-3)  # the statistics are part of the forward pass
    model.save_pretrained(tmp_path)
    loaded = LIDiT.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(loaded.text.connectors[0].stats.std, model.text.connectors[0].stats.std)
    torch.testing.assert_close(loaded(x, t, [tokens]), after)


def test_flow_shift_moves_training_towards_noise():
    from llmdiff.diffusion import flow_noise_levels

    plain = flow_noise_levels(20000, torch.Generator().manual_seed(0))
    shifted = flow_noise_levels(20000, torch.Generator().manual_seed(0), shift=3.0)
    assert abs(plain.median().item() - 0.5) < 0.02
    assert abs(shifted.median().item() - 0.75) < 0.02  # 3 * 0.5 / (1 + 2 * 0.5)
    assert (shifted > 0.9).float().mean() > 5 * (plain > 0.9).float().mean()
    assert torch.all((shifted > 0) & (shifted < 1))


def test_flow_shift_is_a_logit_normal_mean_of_log_k():
    # logit(k s / (1 + (k - 1) s)) = logit(s) + log k: shifting by k is SD3's logit-normal sampling with mean log k,
    # so one screened lever covers both knobs
    from llmdiff.diffusion import flow_noise_levels

    shifted = flow_noise_levels(1000, torch.Generator().manual_seed(0), shift=3.0)
    normal = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(torch.logit(shifted.double()), normal.double() + math.log(3.0), atol=1e-4, rtol=1e-4)


def test_fused_self_attention_projection_equals_separate_projections():
    from llmdiff.layers import MultiHeadAttention

    torch.manual_seed(0)
    attn, x = MultiHeadAttention(32, 4), torch.randn(2, 5, 32)
    fused = attn(x)  # self-attention: one matmul for q, k, v
    separate = attn(x, context=x.clone())  # the cross-attention path with the same tokens
    torch.testing.assert_close(fused, separate, atol=1e-6, rtol=1e-5)


def test_joint_attention_is_one_softmax_over_image_and_valid_text_tokens():
    from llmdiff.layers import JointAttention, attention

    torch.manual_seed(0)
    attn, x, ctx = JointAttention(16, 2, context_dim=8), torch.randn(2, 5, 16), torch.randn(2, 3, 8)
    mask = torch.tensor([[True, True, True], [True, False, False]])
    out = attn(x, context=ctx, key_mask=mask)
    # the same attention written out: keys and values of the image (its own projection) and the text (the
    # text's projection), one softmax, masked text keys left out
    q = attn.q_norm(attn.q(x).view(2, 5, 2, 8)).transpose(1, 2)
    for i, n_text in enumerate((3, 1)):
        kv = torch.cat([attn.kv(x[i]), attn.context_kv(ctx[i, :n_text])]).view(-1, 2, 2, 8)
        k, v = attn.k_norm(kv[:, 0]).transpose(0, 1), kv[:, 1].transpose(0, 1)
        ref = attn.out(attention(q[i:i + 1], k[None], v[None]).transpose(1, 2).reshape(1, 5, 16))
        torch.testing.assert_close(out[i:i + 1], ref, atol=1e-6, rtol=1e-5)
    with pytest.raises(LLMDiffError, match="unknown text_attention"):
        tiny(text_attention="mmdit")


@pytest.mark.parametrize("objective, level", [("flow", torch.tensor([0.1, 0.5, 0.9])),
                                              ("eps", torch.tensor([10, 500, 990])),
                                              ("eps_sd", torch.tensor([10, 500, 990]))])
def test_predicted_clean_inverts_add_noise_given_the_true_target(objective, level):
    from llmdiff.diffusion import add_noise, predicted_clean

    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 3, 8, 8, generator=g), torch.randn(3, 3, 8, 8, generator=g)
    x_t, timestep = add_noise(objective, x0, noise, level)
    assert timestep.shape == (3,) and 0 <= timestep.min() and timestep.max() <= 1000
    target = noise - x0 if objective == "flow" else noise
    torch.testing.assert_close(predicted_clean(objective, x_t, target, level), x0, rtol=1e-4, atol=1e-4)
