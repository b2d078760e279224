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
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from diffusers.models.modeling_utils import ModelMixin
from safetensors.torch import load_file, save_file
from torch import nn

from ..connectors.features import make_feature_connector
from ..encoders.base import TextInput
from ..errors import LLMDiffError
from ..layers import with_null_token
from ..utils import atomic_write_text


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


def unload_adapter(unet) -> None:
    """Restore the plain cross-attention processors."""
    for attn in cross_attentions(unet).values():
        attn.set_processor(AttnProcessor2_0())


def adapter_state_dict(unet) -> dict[str, torch.Tensor]:
    out = {}
    for name, attn in cross_attentions(unet).items():
        if isinstance(attn.processor, LLMDiffAttnProcessor):
            out.update({f"{name}.{k}": v for k, v in attn.processor.state_dict().items()})
    return out


def load_adapter(unet, path: Path | str) -> dict:
    """Attach an adapter saved by ``AdaptedUNet.save_adapter`` to a U-Net; returns its config."""
    path = Path(path)
    if not (path / "adapter_config.json").is_file():
        raise LLMDiffError(f"no adapter at {path} (expected adapter_config.json and adapter.safetensors)")
    cfg = json.loads((path / "adapter_config.json").read_text())
    attach_adapter(unet, cfg["llm_dim"])
    weights = load_file(path / "adapter.safetensors")
    for name, attn in cross_attentions(unet).items():
        own = {k[len(name) + 1:]: v for k, v in weights.items() if k.startswith(name + ".")}
        if not own:
            raise LLMDiffError(f"adapter at {path} has no weights for {name}: it was trained for another U-Net layout")
        attn.processor.load_state_dict(own)
    return cfg


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
        text = texts[0]
        c = self.llm_encoding(text.features) * text.mask[..., None]  # (B, L, D_llm)
        ctx, mask = with_null_token(self.null_c, c, text.mask)  # (B, 1 + L, D_llm)
        return self.unet(sample, timestep, encoder_hidden_states=ctx, encoder_attention_mask=mask.long()).sample

    def save_adapter(self, path: Path | str) -> Path:
        """The adapter alone: adapter.safetensors (processors, connector, null token) + adapter_config.json."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = adapter_state_dict(self.unet)
        tensors.update({f"llm_encoding.{k}": v for k, v in self.llm_encoding.state_dict().items()})
        tensors["null_c"] = self.null_c.detach()
        save_file({k: v.contiguous() for k, v in tensors.items()}, path / "adapter.safetensors")
        cfg = {"base_path": self.config.base_path, "llm_dim": self.config.text_dims[0],
               "connector": self.config.connector, "encoders": list(self.config.encoders)}
        atomic_write_text(path / "adapter_config.json", json.dumps(cfg, indent=2) + "\n")
        return path


def load_base_unet(path: Path | str):
    """The frozen base: a trained TextUNet folder (its inner U-Net) or a diffusers UNet2DConditionModel folder."""
    from diffusers import UNet2DConditionModel

    path = Path(path)
    if not (path / "config.json").is_file():
        raise LLMDiffError(f"no trained base U-Net at {path}; train it with configs/shapes-unet-base.yaml, or point "
                           "model.base at a Stable Diffusion unet/ folder")
    kind = json.loads((path / "config.json").read_text()).get("_class_name")
    if kind == "TextUNet":
        from .unet import TextUNet

        return TextUNet.from_pretrained(path).unet
    if kind == "UNet2DConditionModel":
        return UNet2DConditionModel.from_pretrained(path)
    raise LLMDiffError(f"{path} holds a {kind!r}; the adapter needs a UNet2DConditionModel or a TextUNet")


def build_adapter_model(cfg, text_dims: list[int], text_outputs: list[int]) -> AdaptedUNet:
    """A new adapter around the frozen base named by ``model.base``."""
    from ..config import to_dict

    if not cfg.model.base:
        raise LLMDiffError("model.base must name the trained base U-Net folder (e.g. models/shapes-unet-base)")
    base = load_base_unet(cfg.model.base)
    model = AdaptedUNet(base_config=dict(base.config), base_path=str(cfg.model.base), text_dims=tuple(text_dims),
                        text_outputs=tuple(text_outputs), connector=cfg.text.connector,
                        sample_size=base.config.sample_size, in_channels=base.config.in_channels,
                        objective=cfg.train.objective, encoders=tuple(to_dict(e) for e in cfg.text.encoders))
    result = model.unet.load_state_dict(base.state_dict(), strict=False)
    if result.unexpected_keys or any(not k.startswith(tuple(cross_attentions(model.unet))) for k in result.missing_keys):
        raise LLMDiffError(f"base U-Net weights do not fit: {(result.unexpected_keys or result.missing_keys)[:3]}")
    model.freeze_base()
    return model
