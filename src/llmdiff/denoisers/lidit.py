"""LI-DiT: the LLM-infused diffusion transformer (Ma et al., NeurIPS 2024).

    image (B, C, H, W) -> patch embedding -> convolutional position encoding (+ optional sin-cos)
    -> N x [self-attention, cross-attention to refined text tokens, FFN]   (adaLN-single, QK-RMSNorm;
                                              or one joint attention over image and text tokens, SD3)
    -> modulated final layer -> unpatchify (-> optional smoothing conv) -> prediction (B, C, H, W)

The text side (connectors, token refiners, collaborative refiner) lives in the same model, so
one ``save_pretrained`` folder holds everything that was trained; the frozen LLMs are named in
the config (``encoders``) and their features come from the cache.
"""

from __future__ import annotations

import math

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from ..connectors.conditioner import TextConditioner
from ..encoders.base import TextInput
from ..errors import LLMDiffError
from ..layers import (
    FeedForward, JointAttention, MixFFN, MultiHeadAttention, TimestepEmbedder, masked_mean, modulate, with_null_token,
)
from ..utils import from_preset

# Named sizes. Parameter counts (denoiser + one-LLM text side at width 576) are checked in tests.
PRESETS: dict[str, dict] = {
    "tiny": dict(hidden_size=128, depth=4, heads=4, patch_size=4),  # the CPU default, ~1.5M parameters
    "tiny-p2": dict(hidden_size=128, depth=4, heads=4, patch_size=2),
    "tiny-latent": dict(hidden_size=128, depth=4, heads=4, patch_size=1),  # 8x8x4 autoencoder latents
    "small-latent": dict(hidden_size=192, depth=6, heads=6, patch_size=1),
    "small": dict(hidden_size=192, depth=6, heads=6, patch_size=4),  # ~4M
    # pixels, patch 2 (16x16 tokens) in an hourglass: 64-wide blocks at 16x16 around 192-wide ones at 8x8,
    # Mix-FFN and U-ViT long skips; about the cost per image of "small"
    "hourglass": dict(hidden_size=192, depth=4, heads=6, patch_size=2, outer_depth=2, outer_width=64,
                      ffn="mixffn", long_skips=True, pos_embed="conv+sincos", out_conv=True),
    "base": dict(hidden_size=384, depth=12, heads=6, patch_size=2),  # DiT-S-like, ~30M
    "1b": dict(hidden_size=1536, depth=28, heads=24, patch_size=2),  # the paper's LI-DiT-1B scale
}


def sincos_2d(h: int, w: int, dim: int, device=None) -> torch.Tensor:
    """Fixed 2D sin-cos position features (h*w, dim), computed for any grid size."""
    def one_d(n, d):
        pos = torch.arange(n, dtype=torch.float32, device=device)
        omega = 1.0 / 10000 ** (torch.arange(d // 2, dtype=torch.float32, device=device) / (d / 2))
        out = pos[:, None] * omega[None]
        return torch.cat([out.sin(), out.cos()], 1)  # (n, d)

    ey, ex = one_d(h, dim // 2), one_d(w, dim // 2)
    return torch.cat([ey[:, None].expand(h, w, -1), ex[None].expand(h, w, -1)], -1).reshape(h * w, dim)


class LIDiTBlock(nn.Module):
    """adaLN-single block. ``text_attention="cross"``: self-attention, then cross-attention to the text tokens
    (PixArt); ``"joint"``: one attention over the image and the text tokens together (SD3's joint attention,
    `JointAttention`), no separate cross-attention."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, ffn: str = "mlp", context_dim: int | None = None,
                 text_attention: str = "cross"):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.joint = text_attention == "joint"
        if self.joint:
            self.joint_attn = JointAttention(dim, heads, context_dim=context_dim)
        else:
            self.self_attn = MultiHeadAttention(dim, heads)
            self.norm2 = nn.LayerNorm(dim, eps=1e-6)
            self.cross_attn = MultiHeadAttention(dim, heads, context_dim=context_dim)
        self.norm3 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ffn = MixFFN(dim, mlp_ratio) if ffn == "mixffn" else FeedForward(dim, mlp_ratio)
        # adaLN-single (PixArt-alpha): a per-block table added to the shared timestep modulation
        self.scale_shift_table = nn.Parameter(torch.randn(6, dim) / math.sqrt(dim))

    def forward(self, x, t_mod, context, context_mask, hw: tuple[int, int]):
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (self.scale_shift_table[None] + t_mod).unbind(1)
        if self.joint:
            # 1-2. One attention over the image tokens and the (masked) text tokens
            h = modulate(self.norm1(x), shift_msa, scale_msa)
            x = x + gate_msa[:, None] * self.joint_attn(h, context=context, key_mask=context_mask)
        else:
            # 1. Self attention
            x = x + gate_msa[:, None] * self.self_attn(modulate(self.norm1(x), shift_msa, scale_msa))
            # 2. Cross attention to the text tokens (masked)
            x = x + self.cross_attn(self.norm2(x), context=context, key_mask=context_mask)
        # 3. Feed-forward
        h = modulate(self.norm3(x), shift_mlp, scale_mlp)
        x = x + gate_mlp[:, None] * (self.ffn(h, hw) if isinstance(self.ffn, MixFFN) else self.ffn(h))
        return x


def run_blocks(blocks: nn.ModuleList, skips: nn.ModuleList | None, x, t_mod, context, context_mask, hw, call):
    """Blocks in order, each through ``call(block, *inputs)``; with ``skips``, U-ViT long skips (Bao et al., CVPR
    2023): the output of block i of the first half is concatenated to the input of block depth-1-i of the second
    half, and a linear layer maps the pair back to the width."""
    half, stack = (len(skips) if skips is not None else 0), []
    for i, block in enumerate(blocks):
        if i >= len(blocks) - half:
            x = skips[len(blocks) - 1 - i](torch.cat([x, stack.pop()], -1))
        x = call(block, x, t_mod, context, context_mask, hw)
        if i < half:
            stack.append(x)
    return x


class LIDiT(ModelMixin, ConfigMixin):
    config_name = "config.json"
    _supports_gradient_checkpointing = True  # the blocks (enable_gradient_checkpointing, as diffusers' transformers)

    @register_to_config
    def __init__(
        self,
        sample_size: int = 32,
        in_channels: int = 3,
        patch_size: int = 4,
        hidden_size: int = 128,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        pos_embed: str = "conv",  # "conv" or "conv+sincos"
        out_conv: bool = False,  # a residual 3x3 conv after unpatchify (smooths patch seams)
        text_dims: tuple = (576,),  # width of each LLM's features
        text_outputs: tuple = (1,),  # layers/blocks per token of each LLM's features
        connector: str = "single",
        refiner_depth: int = 2,
        refiner_causal: bool = False,
        refiner_gates: bool = True,  # adaLN gates in the refiner blocks (False: the ablation without them)
        refiner_rope: bool = False,  # rotary positions in the refiner's self-attention
        blockwise_noise: bool = True,  # connector "blockwise": LLMDiff's training noise term (False: without)
        collaborative: bool = True,
        objective: str = "flow",
        encoders: tuple = (),  # the EncoderConfig dicts the features came from (checked at generation)
        pooled_text: bool = True,  # add the mean text token to the timestep embedding (as SD3 adds pooled CLIP)
        ffn: str = "mlp",  # "mlp" or "mixffn" (a depthwise 3x3 conv inside every feed-forward, Sana)
        long_skips: bool = False,  # U-ViT long skips between the first and second half of the blocks
        outer_depth: int = 0,  # hourglass (Crowson et al. 2024): blocks at the patch grid around the main ones
        outer_width: int = 64,  # width of the outer (full-resolution) blocks
        text_attention: str = "cross",  # "cross" (PixArt) or "joint" (SD3: one softmax over image and text tokens)
    ):
        super().__init__()
        if sample_size % patch_size:
            raise LLMDiffError(f"sample_size {sample_size} is not a multiple of patch_size {patch_size}")
        if ffn not in ("mlp", "mixffn"):
            raise LLMDiffError(f"unknown ffn {ffn!r}; known: mlp, mixffn")
        if text_attention not in ("cross", "joint"):
            raise LLMDiffError(f"unknown text_attention {text_attention!r}; known: cross, joint")
        if outer_depth % 2 or outer_depth < 0:
            raise LLMDiffError(f"outer_depth must be even (half before, half after the inner blocks), got {outer_depth}")
        if outer_depth and (sample_size // patch_size) % 2:
            raise LLMDiffError(f"an hourglass merges 2x2 tokens: the token grid {sample_size // patch_size} must be even")
        d = hidden_size
        dw = outer_width if outer_depth else d  # width at the patch grid
        self.text = TextConditioner(list(text_dims), list(text_outputs), d, heads, connector, refiner_depth,
                                    refiner_causal, collaborative, refiner_gates, refiner_rope, blockwise_noise)
        self.patch_embed = nn.Conv2d(in_channels, dw, patch_size, stride=patch_size)
        self.pos_conv = nn.Conv2d(dw, dw, 3, padding=1, groups=dw)  # zero padding tells tokens where the border is
        self.t_embed = TimestepEmbedder(d)
        self.pool_text = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d)) if pooled_text else None
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))
        self.null_text = nn.Parameter(torch.randn(1, 1, d) * 0.02)  # always attendable: no NaN, a learnt "no text"
        self.blocks = nn.ModuleList(LIDiTBlock(d, heads, mlp_ratio, ffn, None, text_attention) for _ in range(depth))
        self.skips = nn.ModuleList(nn.Linear(2 * d, d) for _ in range(depth // 2)) if long_skips else None
        if outer_depth:
            # Hourglass (k-diffusion's image_transformer_v2): outer blocks at the patch grid, 2x2 tokens merged
            # into one for the inner blocks, split back and joined with the outer skip by a learnt lerp.
            oh = max(1, dw // 32)
            self.outer_in = nn.ModuleList(LIDiTBlock(dw, oh, mlp_ratio, ffn, d, text_attention)
                                          for _ in range(outer_depth // 2))
            self.outer_out = nn.ModuleList(LIDiTBlock(dw, oh, mlp_ratio, ffn, d, text_attention)
                                           for _ in range(outer_depth // 2))
            self.merge = nn.Linear(4 * dw, d)
            self.split = nn.Linear(d, 4 * dw)
            self.skip_lerp = nn.Parameter(torch.full((dw,), 0.5))
            self.outer_t_block = nn.Sequential(nn.SiLU(), nn.Linear(d, 8 * dw))  # 6 for the blocks, 2 for the output
        self.norm_out = nn.LayerNorm(dw, elementwise_affine=False, eps=1e-6)
        self.out_table = nn.Parameter(torch.randn(2, dw) / math.sqrt(dw))
        self.proj_out = nn.Linear(dw, patch_size * patch_size * in_channels)
        self.smooth = nn.Conv2d(in_channels, in_channels, 3, padding=1) if out_conv else None
        self.gradient_checkpointing = False
        self.initialize_weights()

    def initialize_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        # the refiners re-zero their own modulation (identity at init)
        for m in self.text.modules():
            if hasattr(m, "ada"):
                for ada in m.ada if isinstance(m.ada, nn.ModuleList) else [m.ada]:
                    nn.init.zeros_(ada[1].weight)
                    nn.init.zeros_(ada[1].bias)
        w = self.patch_embed.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))  # like a linear layer over the flattened patch
        nn.init.normal_(self.t_embed.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embed.mlp[2].weight, std=0.02)
        # Zero-init: cross-attention outputs (PixArt), the output layer (DiT) and the smoothing conv,
        # so that training starts from a model that predicts 0 (and, with cross-attention, ignores the text).
        for block in (m for m in self.modules() if isinstance(m, LIDiTBlock) and not m.joint):
            nn.init.zeros_(block.cross_attn.out.weight)
            nn.init.zeros_(block.cross_attn.out.bias)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)
        if self.smooth is not None:
            nn.init.zeros_(self.smooth.weight)
            nn.init.zeros_(self.smooth.bias)

    def fit_text_statistics(self, texts: list[TextInput]) -> None:
        """Standardise each LLM's features per channel with statistics of a sample of the training features."""
        self.text.fit_statistics(texts)

    def _block(self, block: LIDiTBlock, *inputs):
        """One block; with gradient checkpointing on, its activations are recomputed in the backward pass instead
        of kept (diffusers' convention: ModelMixin.enable_gradient_checkpointing sets the flag and the function)."""
        if torch.is_grad_enabled() and self.gradient_checkpointing:
            return self._gradient_checkpointing_func(block, *inputs)
        return block(*inputs)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, texts: list[TextInput]) -> torch.Tensor:
        """sample (B, C, H, W), timestep (B,) in [0, 1000] -> prediction (B, C, H, W)."""
        b, c, h, w = sample.shape
        p = self.config.patch_size
        if h % p or w % p:
            raise LLMDiffError(f"image size {h}x{w} is not a multiple of the patch size {p}")
        timestep = timestep.expand(b) if timestep.dim() == 1 and timestep.shape[0] == 1 else timestep.reshape(-1)
        # Text: (B, L, D) tokens, plus the null token that is always valid
        tokens, mask = self.text(texts, timestep)
        context, context_mask = with_null_token(self.null_text, tokens, mask)  # (B, 1 + L, D)
        # Image tokens
        x = self.patch_embed(sample)  # (B, D, h', w')
        x = x + self.pos_conv(x)
        gh, gw = x.shape[-2:]
        # contiguous: a transposed residual stream would make every later Linear copy it first (~1.5x slower)
        x = x.flatten(2).transpose(1, 2).contiguous()  # (B, N, D)
        if self.config.pos_embed == "conv+sincos":
            x = x + sincos_2d(gh, gw, x.shape[-1], x.device).to(x.dtype)[None]  # fp32 features, the model's dtype
        t = self.t_embed(timestep)  # (B, D)
        if self.pool_text is not None:  # a global text signal for every block's modulation
            t = t + self.pool_text(masked_mean(tokens, mask))
        t_mod = self.t_block(t).view(b, 6, -1)  # (B, 6, D)
        if self.config.outer_depth:
            outer_mod = self.outer_t_block(t).view(b, 8, -1)  # (B, 8, D_outer): 6 for the blocks, 2 for the output
            for block in self.outer_in:
                x = self._block(block, x, outer_mod[:, :6], context, context_mask, (gh, gw))  # (B, N, D_outer)
            skip = x
            x = self.merge(_merge_2x2(x, gh, gw))  # (B, N / 4, D)
            x = run_blocks(self.blocks, self.skips, x, t_mod, context, context_mask, (gh // 2, gw // 2), self._block)
            # the lerp written out: torch.lerp needs one dtype, and under autocast `skip` may be bf16
            x = skip + self.skip_lerp * (_split_2x2(self.split(x), gh, gw) - skip)  # (B, N, D_outer)
            for block in self.outer_out:
                x = self._block(block, x, outer_mod[:, :6], context, context_mask, (gh, gw))
            shift, scale = (self.out_table[None] + outer_mod[:, 6:]).unbind(1)
        else:
            x = run_blocks(self.blocks, self.skips, x, t_mod, context, context_mask, (gh, gw), self._block)
            shift, scale = (self.out_table[None] + t[:, None]).unbind(1)
        x = self.proj_out(modulate(self.norm_out(x), shift, scale))  # (B, N, p*p*C)
        x = x.view(b, gh, gw, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, gh * p, gw * p)  # unpatchify
        if self.smooth is not None:
            x = x + self.smooth(x)
        return x


def _merge_2x2(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, h*w, D) -> (B, h/2*w/2, 4D): each 2x2 neighbourhood of tokens becomes one token."""
    b, _, d = x.shape
    return x.view(b, h // 2, 2, w // 2, 2, d).permute(0, 1, 3, 2, 4, 5).reshape(b, h * w // 4, 4 * d)


def _split_2x2(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The inverse of `_merge_2x2`: (B, h/2*w/2, 4D) -> (B, h*w, D)."""
    b, _, d4 = x.shape
    d = d4 // 4
    return x.view(b, h // 2, w // 2, 2, 2, d).permute(0, 1, 3, 2, 4, 5).reshape(b, h * w, d)


def build_lidit(preset: str, overrides: dict | None = None, **kwargs) -> LIDiT:
    return from_preset(LIDiT, PRESETS, preset, overrides, "LI-DiT", **kwargs)
