"""Building blocks shared by the connectors and the denoisers.

Masks are bool (B, L), True = keep, everywhere; ``attention`` is the one place that turns
them into what ``F.scaled_dot_product_attention`` takes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .errors import LLMDiffError


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None = None,
              causal: bool = False) -> torch.Tensor:
    """SDPA over heads: q (B, H, Lq, d), k/v (B, H, Lk, d), key_mask (B, Lk) bool, True = keep.

    A row whose keys are all masked would give NaN; such rows attend to every key instead, and
    their (padding) outputs are discarded by the caller's mask.
    """
    mask = None
    if key_mask is not None:
        key_mask = key_mask | ~key_mask.any(-1, keepdim=True)
        mask = key_mask[:, None, None, :]  # (B, 1, 1, Lk)
        if causal:
            lq, lk = q.shape[-2], k.shape[-2]
            mask = mask & torch.ones(lq, lk, dtype=torch.bool, device=q.device).tril()
        causal = False
    if q.device.type == "cpu" and (q.dtype == torch.bfloat16 or torch.is_autocast_enabled("cpu")):
        return _fp32_attention(q, k, v, mask, causal)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)


def _fp32_attention(q, k, v, mask, causal):
    """Attention in fp32 with PyTorch's fused kernel, for bf16 training on a CPU: there the fused kernel's bf16
    backward is not vectorised (about 3x slower than fp32) and the unfused bf16 path spends its time in
    softmax and copies, while the fp32 kernel runs at the shapes here 1.3-2.7x faster than either
    (docs/benchmarks/mixed_precision.md). The output keeps the inputs' dtype."""
    with torch.autocast("cpu", enabled=False):
        out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask, is_causal=causal)
    return out.to(q.dtype)


def rotary(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotary position embedding (RoFormer, Su et al. 2021, eq. 34) of x (B, H, L, d) at integer `positions` (B, L):
    each pair of channels (i, i + d/2) turned by the angle position * base^(-2i/d), so that a query-key product
    depends on the two tokens' distance. (Lumina-Image-2.0's context refiner gives its text tokens the same.)"""
    half = x.shape[-1] // 2
    freqs = base ** (-torch.arange(half, device=x.device, dtype=torch.float32) / half)  # (d/2,)
    angle = positions[:, None, :, None].float() * freqs  # (B, 1, L, d/2)
    cos, sin = angle.cos(), angle.sin()
    x1, x2 = x[..., :half].float(), x[..., half:2 * half].float()
    turned = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1).to(x.dtype)
    return torch.cat([turned, x[..., 2 * half:]], -1) if x.shape[-1] % 2 else turned


class MultiHeadAttention(nn.Module):
    """Self- or cross-attention with optional QK-RMSNorm; context defaults to the input."""

    def __init__(self, dim: int, heads: int, context_dim: int | None = None, qk_norm: bool = True):
        super().__init__()
        if dim % heads:
            raise LLMDiffError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(context_dim or dim, 2 * dim)
        self.out = nn.Linear(dim, dim)
        head_dim = dim // heads
        self.q_norm = nn.RMSNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()

    def forward(self, x, context=None, key_mask=None, causal: bool = False, positions: torch.Tensor | None = None):
        """``positions`` (B, L) of self-attention's tokens: rotary position embedding of queries and keys."""
        context = x if context is None else context
        # QK-RMSNorm before the heads are moved to dim 1, while the tensors are still contiguous (~2x cheaper)
        q, kv = self._self_qkv(x) if context is x else (self.q(x), self.kv(context))
        return self._attend(q, kv, key_mask, causal, positions)

    def _self_qkv(self, x):
        """q (B, N, D) and kv (B, N, 2D) of self-attention in one matmul (the weights stay two modules)."""
        qkv = F.linear(x, torch.cat([self.q.weight, self.kv.weight]), torch.cat([self.q.bias, self.kv.bias]))
        return qkv.split([x.shape[-1], 2 * x.shape[-1]], -1)

    def _attend(self, q, kv, key_mask=None, causal: bool = False, positions: torch.Tensor | None = None):
        """q (B, N, D) and kv (B, M, 2D) projections -> attention output (B, N, D)."""
        b, n, d = q.shape
        q = self.q_norm(q.view(b, n, self.heads, -1)).transpose(1, 2)  # (B, H, N, d_h)
        kv = kv.view(b, kv.shape[1], 2, self.heads, -1)  # (B, M, 2, H, d_h)
        k, v = self.k_norm(kv[:, :, 0]).transpose(1, 2), kv[:, :, 1].transpose(1, 2)  # (B, H, M, d_h)
        if positions is not None:
            q, k = rotary(q, positions), rotary(k, positions)
        out = attention(q, k, v, key_mask, causal)
        return self.out(out.transpose(1, 2).reshape(b, n, d))


class JointAttention(MultiHeadAttention):
    """Self-attention whose keys and values also hold the text tokens, in one softmax: SD3's joint attention
    (MMDiT) seen from the image stream, with the text's own key/value projection. The text tokens are keys
    and values only: the text side refines them once, the image blocks do not update them.

    x (B, N, D) image tokens, context (B, M, D_c) text tokens with key_mask (B, M); image keys are all valid.
    """

    def __init__(self, dim: int, heads: int, context_dim: int | None = None, qk_norm: bool = True):
        super().__init__(dim, heads, None, qk_norm)
        self.context_kv = nn.Linear(context_dim or dim, 2 * dim)

    def projections(self, x, context, key_mask):
        """q (B, N, D), kv (B, N + M, 2D) over [image; text] and the key mask (B, N + M)."""
        q, kv = self._self_qkv(x)
        kv = torch.cat([kv, self.context_kv(context)], 1)
        mask = torch.cat([key_mask.new_ones(x.shape[:2]), key_mask], 1)
        return q, kv, mask

    def forward(self, x, context, key_mask):
        return self._attend(*self.projections(x, context, key_mask))


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, ratio: float = 4.0):
        hidden = int(dim * ratio)
        super().__init__(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))


class MixFFN(nn.Module):
    """Feed-forward with a depthwise 3x3 convolution over the token grid between its two linears
    (Sana's Mix-FFN, simplified to GELU): every block sees its neighbours, so tokens know where they are.

    x (B, H*W, D) with the grid size ``hw`` = (H, W).
    """

    def __init__(self, dim: int, ratio: float = 4.0):
        super().__init__()
        hidden = int(dim * ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        b, n, _ = x.shape
        h = self.fc1(x)
        grid = h.transpose(1, 2).reshape(b, -1, *hw)
        h = h + self.dwconv(grid).flatten(2).transpose(1, 2)
        return self.fc2(F.gelu(h, approximate="tanh"))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x (B, N, D) with per-sample shift/scale (B, D)."""
    return x * (1 + scale[:, None]) + shift[:, None]


def timestep_features(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of (B,) timesteps in [0, 1000] (DiT's TimestepEmbedder.timestep_embedding)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], -1)


class TimestepEmbedder(nn.Module):
    def __init__(self, dim: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_features(t, self.freq_dim).to(self.mlp[0].weight.dtype))  # fp32 sinusoids, then the model's dtype


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over valid tokens: x (B, L, D), mask (B, L) -> (B, D); zeros for an all-masked row."""
    w = mask.to(x.dtype)[..., None]
    return (x * w).sum(1) / w.sum(1).clamp(min=1.0)


def with_null_token(null: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-attention context (B, 1 + L, D) and mask (B, 1 + L): a learnt null token (1, 1, D) in front of the
    text tokens (B, L, D), always valid, so that an empty prompt still has a key to attend to (no NaN) and
    "no text" is something the model learns."""
    b = tokens.shape[0]
    return torch.cat([null.expand(b, -1, -1), tokens], 1), torch.cat([mask.new_ones(b, 1), mask], 1)
