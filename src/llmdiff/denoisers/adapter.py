"""The LLMDiff adapter (Dong et al., 2025): a frozen LLM into a frozen pre-trained U-Net.

Every cross-attention (``attn2``) of a diffusers ``UNet2DConditionModel`` gets a processor in
the style of ``IPAdapterAttnProcessor2_0`` (decoupled cross-attention):

    f = attn_orig(q, phi(c)) * a1 exp(b1) + attn_new(q, c) * a2 exp(b2)

* ``attn_orig`` is the U-Net's own, frozen attention; it reads phi(c), a trainable linear map
  from the LLM encoding c into the U-Net's original context width.
* ``attn_new`` is a new trainable attention over c, with the padding mask; its output
  projection starts at zero.
* a1, b1, a2, b2 are learnable scalars per layer (a = 1, b = 0 at start).

One module owns every trainable weight: ``LLMAdapter`` (an ``AdapterLayer`` per attn2, the
encoding's g, h and the null token). Training holds it inside ``AdaptedUNet`` around a frozen
U-Net; inference loads it onto a pipeline's U-Net base. Either way ``attach`` installs an
``LLMDiffAttnProcessor`` on each attn2 that reads the weights by reference, so they never enter
the U-Net's own modules, and blends with the processor it replaced: scale 0 is the base exactly.

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
from diffusers import UNet2DConditionModel
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


class AdapterLayer(nn.Module):
    """The adapter's weights for one attn2: phi, the new attention and the gates; ``forward`` is f above."""

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

    def forward(self, attn: Attention, hidden_states: torch.Tensor, c: torch.Tensor, bias: torch.Tensor | None):
        """hidden_states (B, N, query_dim), c the LLM context (B, L, llm_dim), bias the U-Net's additive (B, 1, L)."""
        b, n, _ = hidden_states.shape
        mask = None
        if bias is not None:  # (B, 1, L) -> (B, H, 1, L)
            mask = attn.prepare_attention_mask(bias, c.shape[1], b).view(b, attn.heads, -1, c.shape[1])
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


class LLMDiffAttnProcessor:
    """What ``LLMAdapter.attach`` installs on an attn2: the adapter's layer, blended with the processor it replaced.

        out = previous(q, base context) + scale * (layer(q, LLM context) - previous(q, base context))

    so scale 0 is the base exactly and 1 the trained adapter exactly. On a base U-Net the U-Net is called
    with ``encoder_hidden_states = (base context, LLM context, LLM attention bias)``; inside ``AdaptedUNet``
    (``previous`` None) with the LLM context alone and its mask. Not a ``Module``: the weights stay the
    adapter's. The layer's weights and gates read through it (``proc.phi``, ``proc.gates``) for attention hooks.
    """

    def __init__(self, layer: AdapterLayer, previous=None):
        self.layer, self.previous, self.scale = layer, previous, 1.0

    def __getattr__(self, name: str):
        layer = self.__dict__.get("layer")  # (absent while copy/pickle rebuild the object)
        if layer is None:
            raise AttributeError(name)
        return getattr(layer, name)

    def __call__(self, attn: Attention, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        if encoder_hidden_states is None:
            raise LLMDiffError("the LLMDiff adapter only replaces cross-attention (attn2) processors")
        if self.previous is None:
            return self.layer(attn, hidden_states, encoder_hidden_states, attention_mask)
        if not isinstance(encoder_hidden_states, tuple):
            raise LLMDiffError("a U-Net with an LLM adapter is called with (base context, LLM context, LLM bias); "
                               "sample through the pipeline")
        ctx, llm_ctx, llm_bias = encoder_hidden_states
        if self.scale == 0:
            return self.previous(attn, hidden_states, ctx, attention_mask, temb)
        new = self.layer(attn, hidden_states, llm_ctx, llm_bias)
        if self.scale == 1:
            return new
        base = self.previous(attn, hidden_states, ctx, attention_mask, temb)
        return base + self.scale * (new - base)


def cross_attentions(unet) -> dict[str, Attention]:
    """Every cross-attention module of a U-Net, by name."""
    return {name: m for name, m in unet.named_modules() if isinstance(m, Attention) and m.is_cross_attention}


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
    """The LLMDiff adapter: every trainable weight (a layer per attn2, the encoding connector g/h, the null token).

    ``config``: ``llm_dim``, ``connector``, ``text_outputs``, ``encoders`` (the prompt encoder it reads),
    ``base`` (what it was trained on) and ``layers`` ({attn2 name: [query, inner, context width, heads]}).
    """

    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)
        d = config["llm_dim"]
        self.llm_encoding = make_feature_connector(config["connector"], d, d, config["text_outputs"])
        self.null_c = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.processors = nn.ModuleDict({_key(n): AdapterLayer(q, i, c, d, h)  # (file key; they are layers)
                                         for n, (q, i, c, h) in config["layers"].items()})
        self._installed: dict[str, LLMDiffAttnProcessor] = {}

    @classmethod
    def for_unet(cls, unet, llm_dim: int, connector: str = "blockwise", text_outputs: int = 1,
                 encoders: list[dict] = (), base: str = "") -> "LLMAdapter":
        """A new adapter for `unet`'s layout (widths read from each attn2)."""
        layers = {n: [a.to_q.in_features, a.to_q.out_features, a.to_k.in_features, a.heads]
                  for n, a in cross_attentions(unet).items()}
        if not layers:
            raise LLMDiffError("this U-Net has no cross-attention layers to adapt")
        return cls({"llm_dim": llm_dim, "connector": connector, "text_outputs": text_outputs,
                    "encoders": [dict(e) for e in encoders], "base": base, "layers": layers})

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
        """The adapter's context (B, 1 + L, D_llm): the learnt null token, then the encoded LLM features; its mask."""
        c = self.llm_encoding(text.features) * text.mask[..., None]  # (B, L, D_llm)
        return with_null_token(self.null_c, c, text.mask)

    def attach(self, unet, blend: bool = True) -> None:
        """Install a processor on every attn2 of `unet`; with `blend` it keeps the processor there for the scale
        (a base U-Net), without it the U-Net reads the LLM context alone (``AdaptedUNet``)."""
        attns = cross_attentions(unet)
        if set(attns) != set(self.config["layers"]):
            raise LLMDiffError("this adapter was trained for another U-Net layout (its cross-attention layers differ)")
        for name, attn in attns.items():
            self._installed[name] = LLMDiffAttnProcessor(self.processors[_key(name)], attn.processor if blend else None)
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


def _renamed_weights(state_dict: dict) -> None:
    """Model folders and checkpoints written before the adapter was one module kept its layers in the U-Net
    (``unet.<attn2>.processor.*``) and its encoding at the top level: their keys, as ``adapter.*``."""
    for k in [k for k in state_dict if ".processor." in k or k.startswith(("llm_encoding.", "null_c"))]:
        name, _, rest = k.partition(".processor.")
        new = f"adapter.processors.{_key(name.removeprefix('unet.'))}.{rest}" if rest else f"adapter.{k}"
        state_dict[new] = state_dict.pop(k)


class AdaptedUNet(ModelMixin, ConfigMixin):
    """A frozen ``UNet2DConditionModel`` with the LLMDiff adapter (``self.adapter``, the trainable part) attached.

    The base is any U-Net: our ``TextUNet`` (the Shapes base) or a Stable Diffusion ``unet/`` folder.
    """

    config_name = "config.json"  # module names must differ from config keys (diffusers resolves config first)
    # enable_gradient_checkpointing reaches the frozen U-Net's blocks, the adapter's attention processors with them
    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(self, base_config: dict | None = None, base_path: str = "", text_dims: tuple = (576,),
                 text_outputs: tuple = (1,), connector: str = "blockwise", sample_size: int = 32, in_channels: int = 3,
                 objective: str = "flow", encoders: tuple = ()):
        super().__init__()
        self.unet = UNet2DConditionModel.from_config({k: v for k, v in dict(base_config or {}).items()
                                                      if not k.startswith("_")})
        self.adapter = LLMAdapter.for_unet(self.unet, text_dims[0], connector, text_outputs[0], encoders, base_path)
        self.adapter.attach(self.unet, blend=False)
        self.unet.requires_grad_(False)  # only the adapter trains
        self.register_load_state_dict_pre_hook(lambda module, state_dict, *args: _renamed_weights(state_dict))

    def _fix_state_dict_keys_on_load(self, state_dict) -> None:  # diffusers' hook for renamed weights
        super()._fix_state_dict_keys_on_load(state_dict)
        _renamed_weights(state_dict)

    def adapter_parameters(self):
        """phi, the new attentions and the gates (the encoding's g, h and the null token are the adapter's too)."""
        return self.adapter.processors.parameters()

    @property
    def processors(self) -> dict[str, LLMDiffAttnProcessor]:
        return {n: a.processor for n, a in cross_attentions(self.unet).items()}

    def fit_text_statistics(self, texts: list[TextInput]) -> None:
        """Nothing to fit: LLMDiff's encoding is used as published, with its LayerNorm but no standardisation."""

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, texts: list[TextInput]) -> torch.Tensor:
        ctx, mask = self.adapter.context(texts[0])
        return self.unet(sample, timestep, encoder_hidden_states=ctx, encoder_attention_mask=mask.long()).sample

    def save_adapter(self, path: Path | str) -> Path:
        """The adapter alone (llm_adapter.safetensors + llm_adapter_config.json), for ``load_llm_adapter``."""
        return self.adapter.save(path)


def build_adapter_model(base, base_path: Path | str, text_dims: tuple[int, ...], text_outputs: tuple[int, ...],
                        connector: str = "blockwise", objective: str = "flow", encoders: tuple[dict, ...] = ()) -> AdaptedUNet:
    """A new adapter around the frozen base U-Net `base` (a diffusers UNet2DConditionModel, as
    ``model_folder.load_base_unet`` loads it from `base_path`), with the base's weights copied and frozen."""
    model = AdaptedUNet(base_config=dict(base.config), base_path=str(base_path), text_dims=tuple(text_dims),
                        text_outputs=tuple(text_outputs), connector=connector, sample_size=base.config.sample_size,
                        in_channels=base.config.in_channels, objective=objective, encoders=tuple(encoders))
    result = model.unet.load_state_dict(base.state_dict(), strict=False)
    if result.unexpected_keys or result.missing_keys:
        raise LLMDiffError(f"base U-Net weights do not fit: {(result.unexpected_keys or result.missing_keys)[:3]}")
    return model
