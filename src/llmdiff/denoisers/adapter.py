"""The LLMDiff adapter (Dong et al., 2025): a frozen LLM into a frozen pre-trained U-Net.

Every cross-attention (``attn2``) of a diffusers ``UNet2DConditionModel`` gets a processor in
the style of ``IPAdapterAttnProcessor2_0`` (decoupled cross-attention):

    f = attn_orig(q, phi(c)) * a1 exp(b1) + attn_new(q, c) * a2 exp(b2)

* ``attn_orig`` is the U-Net's own, frozen attention; it reads phi(c), a trainable linear map
  from the LLM encoding c into the U-Net's original context width.
* ``attn_new`` is a new trainable attention over c, with the padding mask; its output
  projection starts at zero.
* a1, b1, a2, b2 are learnable scalars per layer (a = 1, b = 0 at start).

What is identical at initialisation: the new branch adds exactly zero, so the adapted U-Net
equals the frozen U-Net fed with phi(c) as its context. It does not equal the U-Net fed with
its original encoder's context: phi is new (a random linear map), and learning it is part of
the adaptation. Widths are read from each attention module, so any U-Net layout works.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention_processor import Attention
from diffusers.models.modeling_utils import ModelMixin
from safetensors.torch import load_file, save
from torch import nn

from ..connectors.features import make_feature_connector
from ..encoders.base import TextInput
from ..errors import LLMDiffError
from ..layers import with_null_token
from ..utils import atomic_write_bytes, atomic_write_text


class LLMDiffAttnProcessor(nn.Module):
    """Gated decoupled cross-attention for one ``attn2``; the U-Net passes the LLM encoding as context."""

    def __init__(self, query_dim: int, inner_dim: int, context_dim: int, llm_dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.phi = nn.Linear(llm_dim, context_dim)
        self.to_q = nn.Linear(query_dim, inner_dim, bias=False)
        self.to_k = nn.Linear(llm_dim, inner_dim, bias=False)
        self.to_v = nn.Linear(llm_dim, inner_dim, bias=False)
        self.to_out = nn.Linear(inner_dim, query_dim)
        nn.init.zeros_(self.to_out.weight)  # the new branch adds nothing until it has learnt something
        nn.init.zeros_(self.to_out.bias)
        self.a1, self.b1 = nn.Parameter(torch.ones(())), nn.Parameter(torch.zeros(()))
        self.a2, self.b2 = nn.Parameter(torch.ones(())), nn.Parameter(torch.zeros(()))

    @property
    def gates(self) -> tuple[float, float]:
        """a1 exp(b1) (original branch) and a2 exp(b2) (new branch)."""
        return float((self.a1 * self.b1.exp()).detach()), float((self.a2 * self.b2.exp()).detach())

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.heads, d // self.heads).transpose(1, 2)  # (B, H, N, d_h)

    def __call__(self, attn: Attention, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        if encoder_hidden_states is None:
            raise LLMDiffError("the LLMDiff adapter only replaces cross-attention (attn2) processors")
        b, n, _ = hidden_states.shape
        c = encoder_hidden_states  # (B, L, llm_dim)
        mask = None
        if attention_mask is not None:  # the U-Net's additive bias (B, 1, L) -> (B, H, 1, L)
            mask = attn.prepare_attention_mask(attention_mask, c.shape[1], b).view(b, attn.heads, -1, c.shape[1])
        # 1. The frozen original attention, reading phi(c)
        ctx = self.phi(c)
        if attn.norm_cross:
            ctx = attn.norm_encoder_hidden_states(ctx)
        q, k, v = (self._heads(t) for t in (attn.to_q(hidden_states), attn.to_k(ctx), attn.to_v(ctx)))
        orig = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(b, n, -1)
        orig = attn.to_out[1](attn.to_out[0](orig))
        # 2. The new attention, reading c itself
        q2, k2, v2 = (self._heads(t) for t in (self.to_q(hidden_states), self.to_k(c), self.to_v(c)))
        new = F.scaled_dot_product_attention(q2, k2, v2, attn_mask=mask).transpose(1, 2).reshape(b, n, -1)
        new = self.to_out(new)
        # 3. Fusion with learnable scales
        out = orig * (self.a1 * self.b1.exp()) + new * (self.a2 * self.b2.exp())
        return out / attn.rescale_output_factor


def cross_attentions(unet) -> dict[str, Attention]:
    """Every cross-attention module of a U-Net, by name."""
    return {name: m for name, m in unet.named_modules() if isinstance(m, Attention) and m.is_cross_attention}


def attach_adapter(unet, llm_dim: int) -> dict[str, LLMDiffAttnProcessor]:
    """Install an LLMDiff processor on every attn2 (widths read from each module); returns them by name."""
    procs = {}
    for name, attn in cross_attentions(unet).items():
        procs[name] = LLMDiffAttnProcessor(query_dim=attn.to_q.in_features, inner_dim=attn.to_q.out_features,
                                           context_dim=attn.to_k.in_features, llm_dim=llm_dim, heads=attn.heads)
        attn.set_processor(procs[name])
    if not procs:
        raise LLMDiffError("this U-Net has no cross-attention layers to adapt")
    return procs


def llm_context(encoding: nn.Module, null_c: torch.Tensor, text: TextInput) -> tuple[torch.Tensor, torch.Tensor]:
    """The adapter's context (B, 1 + L, D_llm): a learnt null token, then the encoded LLM features; and its mask."""
    c = encoding(text.features) * text.mask[..., None]  # (B, L, D_llm)
    return with_null_token(null_c, c, text.mask)


class BlendedAttnProcessor:
    """What ``LLMAdapter.attach`` installs on an attn2: the processor that was there, blended with the adapter's.

        out = previous(q, base context) + scale * (adapter(q, LLM context) - previous(q, base context))

    so scale 0 is the base exactly and 1 the trained adapter exactly. It is not a ``Module``: the adapter's
    weights stay in the ``LLMAdapter`` and never enter the U-Net's ``state_dict`` / ``save_pretrained``.
    The U-Net is called with ``encoder_hidden_states = (base context, LLM context, LLM attention bias)``.
    """

    def __init__(self, previous, adapter: LLMDiffAttnProcessor):
        self.previous, self.adapter, self.scale = previous, adapter, 1.0

    def __call__(self, attn: Attention, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        if not isinstance(encoder_hidden_states, tuple):
            raise LLMDiffError("a U-Net with an LLM adapter is called with (base context, LLM context, LLM bias); "
                               "sample through the pipeline")
        ctx, llm_ctx, llm_bias = encoder_hidden_states
        if self.scale == 0:
            return self.previous(attn, hidden_states, ctx, attention_mask, temb)
        new = self.adapter(attn, hidden_states, llm_ctx, llm_bias, temb)
        if self.scale == 1:
            return new
        base = self.previous(attn, hidden_states, ctx, attention_mask, temb)
        return base + self.scale * (new - base)


ADAPTER_CONFIG, ADAPTER_WEIGHTS = "llm_adapter_config.json", "llm_adapter.safetensors"  # not PEFT's file names
# The blend's scale: 0 is the base, 1 the trained adapter; past 1 it extrapolates the adapter's change beyond anything
# trained, which a little way (up to 2x) may strengthen the prompt and further only breaks the image.
ADAPTER_SCALE = (0.0, 2.0)


def check_adapter_scale(scale) -> float:
    lo, hi = ADAPTER_SCALE
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not lo <= scale <= hi:  # NaN fails too
        raise LLMDiffError(f"the LLM adapter scale must be a number in [{lo:g}, {hi:g}] (0 is the base U-Net, 1 the "
                           f"trained adapter, above 1 extrapolates past it), got {scale!r}")
    return float(scale)


def _key(name: str) -> str:
    return name.replace(".", "-")  # a module path as a ModuleDict key


class LLMAdapter(nn.Module):
    """The LLMDiff adapter alone (processors, encoding connector, null token), loadable onto a U-Net base.

    ``config``: ``llm_dim``, ``connector``, ``text_outputs``, ``encoders`` (the prompt encoder it reads),
    ``base`` (what it was trained on) and ``layers`` ({attn2 name: [query, inner, context width, heads]}).
    """

    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)
        d = config["llm_dim"]
        self.processors = nn.ModuleDict({_key(n): LLMDiffAttnProcessor(q, i, c, d, h)
                                         for n, (q, i, c, h) in config["layers"].items()})
        self.llm_encoding = make_feature_connector(config["connector"], d, d, config["text_outputs"])
        self.null_c = nn.Parameter(torch.zeros(1, 1, d))
        self._installed: dict[str, BlendedAttnProcessor] = {}

    @classmethod
    def from_adapted(cls, model: "AdaptedUNet") -> "LLMAdapter":
        layers = {n: [p.to_q.in_features, p.to_q.out_features, p.phi.out_features, p.heads]
                  for n, p in model.processors.items()}
        c = model.config
        adapter = cls({"llm_dim": c.text_dims[0], "connector": c.connector, "text_outputs": c.text_outputs[0],
                       "encoders": [dict(e) for e in c.encoders], "base": c.base_path, "layers": layers})
        for n, p in model.processors.items():
            adapter.processors[_key(n)].load_state_dict(p.state_dict())
        adapter.llm_encoding.load_state_dict(model.llm_encoding.state_dict())
        adapter.null_c.data.copy_(model.null_c.data)
        return adapter.to(model.dtype)

    @classmethod
    def load(cls, path: Path | str) -> "LLMAdapter":
        path = Path(path)
        if not (path / ADAPTER_CONFIG).is_file() or not (path / ADAPTER_WEIGHTS).is_file():
            raise LLMDiffError(f"no LLM adapter at {path} (expected {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS}; write one "
                               "with AdaptedUNet.save_adapter)")
        adapter = cls(json.loads((path / ADAPTER_CONFIG).read_text()))
        adapter.load_state_dict(load_file(path / ADAPTER_WEIGHTS))
        return adapter.eval().requires_grad_(False)

    def save(self, path: Path | str) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path / ADAPTER_WEIGHTS, save({k: v.detach().contiguous() for k, v in self.state_dict().items()}))
        atomic_write_text(path / ADAPTER_CONFIG, json.dumps(self.config, indent=2) + "\n")
        return path

    def context(self, text: TextInput) -> tuple[torch.Tensor, torch.Tensor]:
        return llm_context(self.llm_encoding, self.null_c, text)

    def attach(self, unet) -> None:
        """Install a blended processor on every attn2 of `unet`, remembering the processor each had."""
        attns = cross_attentions(unet)
        if set(attns) != set(self.config["layers"]):
            raise LLMDiffError("this adapter was trained for another U-Net layout (its cross-attention layers differ)")
        for name, attn in attns.items():
            self._installed[name] = BlendedAttnProcessor(attn.processor, self.processors[_key(name)])
            attn.set_processor(self._installed[name])

    def detach(self, unet) -> None:
        """Give every attn2 back the very processor it had before ``attach``."""
        for name, attn in cross_attentions(unet).items():
            if name in self._installed:
                attn.set_processor(self._installed[name].previous)
        self._installed = {}

    def set_scale(self, scale: float) -> None:
        scale = check_adapter_scale(scale)
        for proc in self._installed.values():
            proc.scale = scale


class AdaptedDenoiser(nn.Module):
    """A U-Net base (``TextUNet``) with an ``LLMAdapter`` attached, as the sampler calls it: texts are
    [the base encoder's, the adapter encoder's]."""

    def __init__(self, base, adapter: LLMAdapter):
        super().__init__()
        self.base, self.adapter = base, adapter

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, texts: list[TextInput]) -> torch.Tensor:
        ctx, mask = self.base.context(texts[0])
        llm_ctx, llm_mask = self.adapter.context(texts[1])
        llm_bias = ((1 - llm_mask.to(sample.dtype)) * -10000.0)[:, None]  # as the U-Net turns a mask into a bias
        return self.base.unet(sample, timestep, encoder_hidden_states=(ctx, llm_ctx, llm_bias),
                              encoder_attention_mask=mask.long()).sample


class AdaptedUNet(ModelMixin, ConfigMixin):
    """A frozen ``UNet2DConditionModel`` with the LLMDiff adapter and its encoding (g, h): the trainable part.

    The base is any U-Net: our ``TextUNet`` (the Shapes base) or a Stable Diffusion ``unet/`` folder.
    """

    config_name = "config.json"  # module names must differ from config keys (diffusers resolves config first)

    @register_to_config
    def __init__(self, base_config: dict | None = None, base_path: str = "", text_dims: tuple = (576,),
                 text_outputs: tuple = (1,), connector: str = "blockwise", sample_size: int = 32, in_channels: int = 3,
                 objective: str = "flow", encoders: tuple = ()):
        super().__init__()
        from diffusers import UNet2DConditionModel

        self.unet = UNet2DConditionModel.from_config({k: v for k, v in dict(base_config or {}).items()
                                                      if not k.startswith("_")})
        llm_dim = text_dims[0]
        self.llm_encoding = make_feature_connector(connector, llm_dim, llm_dim, text_outputs[0])
        self.null_c = nn.Parameter(torch.randn(1, 1, llm_dim) * 0.02)
        attach_adapter(self.unet, llm_dim)
        self.freeze_base()

    def freeze_base(self) -> None:
        """Only the adapter (phi, new attentions, gates), the encoding connector and the null token train."""
        adapter = {id(p) for p in self.adapter_parameters()}
        for p in self.unet.parameters():
            p.requires_grad_(id(p) in adapter)

    def adapter_parameters(self):
        for attn in cross_attentions(self.unet).values():
            yield from attn.processor.parameters()

    @property
    def processors(self) -> dict[str, LLMDiffAttnProcessor]:
        return {n: a.processor for n, a in cross_attentions(self.unet).items()}

    def fit_text_statistics(self, texts: list[TextInput]) -> None:
        """Nothing to fit: LLMDiff's encoding is used as published, with its LayerNorm but no standardisation."""

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, texts: list[TextInput]) -> torch.Tensor:
        ctx, mask = llm_context(self.llm_encoding, self.null_c, texts[0])
        return self.unet(sample, timestep, encoder_hidden_states=ctx, encoder_attention_mask=mask.long()).sample

    def save_adapter(self, path: Path | str) -> Path:
        """The adapter alone (llm_adapter.safetensors + llm_adapter_config.json), for ``load_llm_adapter``."""
        return LLMAdapter.from_adapted(self).save(path)


def build_adapter_model(base, base_path: Path | str, text_dims: tuple[int, ...], text_outputs: tuple[int, ...],
                        connector: str = "blockwise", objective: str = "flow", encoders: tuple[dict, ...] = ()) -> AdaptedUNet:
    """A new adapter around the frozen base U-Net `base` (a diffusers UNet2DConditionModel, as
    ``model_folder.load_base_unet`` loads it from `base_path`), with the base's weights copied and frozen."""
    model = AdaptedUNet(base_config=dict(base.config), base_path=str(base_path), text_dims=tuple(text_dims),
                        text_outputs=tuple(text_outputs), connector=connector, sample_size=base.config.sample_size,
                        in_channels=base.config.in_channels, objective=objective, encoders=tuple(encoders))
    result = model.unet.load_state_dict(base.state_dict(), strict=False)
    if result.unexpected_keys or any(not k.startswith(tuple(cross_attentions(model.unet))) for k in result.missing_keys):
        raise LLMDiffError(f"base U-Net weights do not fit: {(result.unexpected_keys or result.missing_keys)[:3]}")
    model.freeze_base()
    return model
