"""From cached LLM features to one token sequence per prompt (before the refiners).

* ``SingleLayer``   — one hidden state (B, L, D).
* ``LayerMix``      — a learnable softmax-weighted sum over several per-layer-normalised hidden
                      states (B, n, L, D); Wang et al. (CVPR 2025) found it beats the last layer.
* ``BlockwiseLLMDiff`` — LLMDiff's encoding over (B, 1 + T, L, D) = [h_0, D_1 .. D_T]:

      c = h_0 + sum_t g(t) * D_t + sum_t sqrt(2 h(t)) * eps_t      (LLMDiff; noise only in training)

  with learnable per-block scalars g(t) (init 1) and h(t) >= 0 (softplus, init ~1e-4). The noise
  of block t is scaled by the RMS of D_t so that h(t) is a relative, unit-free strength.

Each ends in LayerNorm + Linear to the conditioning width. Before that LayerNorm, features can
be standardised per channel with statistics measured once on the training captions
(``fit_statistics``; stored as buffers, so they travel with the weights). Decoder-only LLMs have
"massive activations": a few channels sit far from zero on every token, so after a plain
LayerNorm they carry most of the variance and prompts that differ in one word give nearly the
same tokens. Per-channel standardisation removes that shared offset, and the denoiser's
cross-attention sees tokens that differ where the words differ (measurements in
docs/lidit/README.md). Encoders such as MiniLM are not affected much either way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import LLMDiffError


class FeatureStatistics(nn.Module):
    """Per-channel mean and std of a connector's input, measured on the training features (identity until fitted)."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("std", torch.ones(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    @torch.no_grad()
    def fit(self, x: torch.Tensor, mask: torch.Tensor, min_std: float = 1e-3) -> None:
        """x (N, [n,] L, D), mask (N, L): statistics over the valid tokens (per layer when n is there)."""
        x = x.float()
        valid = x.movedim(-2, 1)[mask] if x.dim() == 4 else x[mask]  # (tokens, [n,] D)
        self.mean.copy_(valid.mean(0).view_as(self.mean))
        self.std.copy_(valid.std(0).clamp(min=min_std).view_as(self.std))


class StandardizedProjection(nn.Module):
    """What every connector ends in: per-channel standardisation (``fit_statistics``), LayerNorm, Linear."""

    def __init__(self, in_dim: int, out_dim: int, stats_shape: tuple[int, ...] | None = None):
        super().__init__()
        self.stats = FeatureStatistics(stats_shape or (in_dim,))
        self.norm = nn.LayerNorm(in_dim)
        self.proj = nn.Linear(in_dim, out_dim)

    def fit_statistics(self, feats: torch.Tensor, mask: torch.Tensor) -> None:
        self.stats.fit(feats, mask)


class SingleLayer(StandardizedProjection):
    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(self.stats(feats)))  # (B, L, D) -> (B, L, out)


class LayerMix(StandardizedProjection):
    def __init__(self, in_dim: int, out_dim: int, n_layers: int):
        super().__init__(in_dim, out_dim, (n_layers, 1, in_dim))  # statistics per layer, broadcast over tokens
        self.logits = nn.Parameter(torch.zeros(n_layers))  # uniform mix at init

    @property
    def weights(self) -> torch.Tensor:
        return self.logits.softmax(0)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        per_layer = F.layer_norm(self.stats(feats), feats.shape[-1:])  # (B, n, L, D), each layer on one scale
        mixed = torch.einsum("n,bnld->bld", self.weights, per_layer)
        return self.proj(self.norm(mixed))


class BlockwiseLLMDiff(StandardizedProjection):
    def __init__(self, in_dim: int, out_dim: int, n_blocks: int, h_init: float = 1e-4, noise: bool = True):
        super().__init__(in_dim, out_dim)  # statistics of c at g = 1 (the initial encoding)
        self.noise = noise  # False: the ablation without the training noise term (h then stays unused)
        self.g = nn.Parameter(torch.ones(n_blocks))
        # h = softplus(rho) >= 0; rho chosen so that h starts at h_init
        self.rho = nn.Parameter(torch.full((n_blocks,), float(torch.log(torch.expm1(torch.tensor(h_init))))))

    def fit_statistics(self, feats: torch.Tensor, mask: torch.Tensor) -> None:
        self.stats.fit(feats.float().sum(1), mask)  # h_0 + sum_t D_t

    @property
    def h(self) -> torch.Tensor:
        return F.softplus(self.rho)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        h0, diffs = feats[:, 0], feats[:, 1:]  # (B, L, D), (B, T, L, D)
        c = h0 + torch.einsum("t,btld->bld", self.g, diffs)
        if self.training and self.noise:
            rms = diffs.pow(2).mean(-1, keepdim=True).sqrt().detach()  # (B, T, L, 1)
            noise = torch.randn_like(diffs) * rms * torch.sqrt(2 * self.h)[None, :, None, None]
            c = c + noise.sum(1)
        return self.proj(self.norm(self.stats(c)))


def make_feature_connector(kind: str, in_dim: int, out_dim: int, n_outputs: int, blockwise_noise: bool = True
                           ) -> nn.Module:
    if kind == "single":
        if n_outputs != 1:
            raise LLMDiffError(f"connector 'single' takes one layer, the encoder gives {n_outputs}; use 'layer_mix'")
        return SingleLayer(in_dim, out_dim)
    if kind == "layer_mix":
        return LayerMix(in_dim, out_dim, n_outputs)
    if kind == "blockwise":
        return BlockwiseLLMDiff(in_dim, out_dim, n_outputs - 1, noise=blockwise_noise)
    raise LLMDiffError(f"unknown connector {kind!r}; known: single, layer_mix, blockwise")
