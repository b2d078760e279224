"""LI-DiT's refiners (Ma et al., NeurIPS 2024): the linguistic token refiner and the collaborative refiner.

Both are transformer blocks whose sub-layers are gated by adaLN modulation computed from the
mask-weighted mean of the tokens plus the diffusion timestep embedding, zero-initialised so
that a fresh refiner is the identity (HunyuanVideo's ``IndividualTokenRefinerBlock`` is the
closest open design; it gates only, we also shift and scale).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import LLMDiffError
from ..layers import FeedForward, MultiHeadAttention, TimestepEmbedder, masked_mean, modulate


def _ada(dim: int, n: int) -> nn.Sequential:
    ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, n * dim))
    nn.init.zeros_(ada[1].weight)  # zero modulation and zero gates: the block starts as the identity
    nn.init.zeros_(ada[1].bias)
    return ada


class RefinerBlock(nn.Module):
    """Self-attention without the causal mask (unless ``causal``, for the ablation) + FFN.

    ``gates``: adaLN gates on both residual branches, zero at init (the block starts as the identity); without
    them (an ablation) the branches are added as they are. ``rope``: rotary positions of the tokens in attention,
    so that the refiner sees word order itself (cross-attention after it is blind to order)."""

    def __init__(self, dim: int, heads: int, causal: bool = False, gates: bool = True, rope: bool = False):
        super().__init__()
        self.causal, self.gates, self.rope = causal, gates, rope
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = MultiHeadAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ffn = FeedForward(dim)
        self.ada = _ada(dim, 6 if gates else 4)

    def forward(self, x, mask, cond):
        mods = self.ada(cond).chunk(6 if self.gates else 4, -1)  # (B, D) each
        if self.gates:
            shift1, scale1, gate1, shift2, scale2, gate2 = mods
            gate1, gate2 = gate1[:, None], gate2[:, None]
        else:
            (shift1, scale1, shift2, scale2), gate1, gate2 = mods, 1.0, 1.0
        positions = (mask.long().cumsum(1) - 1).clamp(min=0) if self.rope else None  # (B, L): index among real tokens
        # 1. Self attention (bidirectional)
        x = x + gate1 * self.attn(modulate(self.norm1(x), shift1, scale1), key_mask=mask, causal=self.causal,
                                  positions=positions)
        # 2. Feed-forward
        x = x + gate2 * self.ffn(modulate(self.norm2(x), shift2, scale2))
        return x * mask[..., None]


class TokenRefiner(nn.Module):
    """N refiner blocks for one LLM's tokens: removes the causal LM's positional bias."""

    def __init__(self, dim: int, heads: int, depth: int, causal: bool = False, gates: bool = True,
                 rope: bool = False):
        super().__init__()
        self.t_embed = TimestepEmbedder(dim)
        self.pool = nn.Linear(dim, dim)
        self.blocks = nn.ModuleList(RefinerBlock(dim, heads, causal, gates, rope) for _ in range(depth))

    def forward(self, x, mask, t):
        cond = self.t_embed(t) + self.pool(masked_mean(x, mask))  # (B, D)
        for block in self.blocks:
            x = block(x, mask, cond)
        return x


class CollaborativeRefiner(nn.Module):
    """One block over K branches: each cross-attends to the other branches, then an FFN.

    Every branch has its own weights (its LLM's features mean different things); the outputs
    are concatenated along the sequence by the caller.
    """

    def __init__(self, dim: int, heads: int, n_branches: int):
        super().__init__()
        if n_branches < 2:
            raise LLMDiffError("the collaborative refiner needs at least two LLM branches")
        self.t_embed = TimestepEmbedder(dim)
        self.pool = nn.Linear(dim, dim)
        self.norm_q = nn.ModuleList(nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6) for _ in range(n_branches))
        self.norm_kv = nn.ModuleList(nn.LayerNorm(dim, eps=1e-6) for _ in range(n_branches))
        self.cross = nn.ModuleList(MultiHeadAttention(dim, heads) for _ in range(n_branches))
        self.norm_ffn = nn.ModuleList(nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6) for _ in range(n_branches))
        self.ffn = nn.ModuleList(FeedForward(dim) for _ in range(n_branches))
        self.ada = nn.ModuleList(_ada(dim, 6) for _ in range(n_branches))

    def forward(self, xs: list[torch.Tensor], masks: list[torch.Tensor], t):
        pooled = torch.stack([masked_mean(x, m) for x, m in zip(xs, masks)]).mean(0)
        cond = self.t_embed(t) + self.pool(pooled)
        out = []
        for k, (x, m) in enumerate(zip(xs, masks)):
            others = torch.cat([self.norm_kv[k](xs[j]) for j in range(len(xs)) if j != k], 1)
            other_mask = torch.cat([masks[j] for j in range(len(xs)) if j != k], 1)
            shift1, scale1, gate1, shift2, scale2, gate2 = self.ada[k](cond).chunk(6, -1)
            # 1. Cross attention to the other LLMs' tokens
            q = modulate(self.norm_q[k](x), shift1, scale1)
            x = x + gate1[:, None] * self.cross[k](q, context=others, key_mask=other_mask)
            # 2. Feed-forward
            x = x + gate2[:, None] * self.ffn[k](modulate(self.norm_ffn[k](x), shift2, scale2))
            out.append(x * m[..., None])
        return out
