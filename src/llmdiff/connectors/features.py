"""From cached LLM features to one token sequence per prompt (before the refiners).

* ``SingleLayer``   — one hidden state (B, L, D).
* ``LayerMix``      — a learnable softmax-weighted sum over several per-layer-normalised hidden
                      states (B, n, L, D); Wang et al. (CVPR 2025) found it beats the last layer.
* ``BlockwiseLLMDiff`` — LLMDiff's encoding over (B, 1 + T, L, D) = [h_0, D_1 .. D_T]:

      c = h_0 + sum_t g(t) * D_t + sum_t sqrt(2 h(t)) * eps_t      (SPEC §1; noise only in training)

  with learnable per-block scalars g(t) (init 1) and h(t) >= 0 (softplus, init ~1e-4). The noise
  of block t is scaled by the RMS of D_t so that h(t) is a relative, unit-free strength.

Each ends in LayerNorm + Linear to the conditioning width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SingleLayer(nn.Module):
    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(in_dim)
        self.proj = nn.Linear(in_dim, out_dim)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(feats))  # (B, L, D) -> (B, L, out)


class LayerMix(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, n_layers: int):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(n_layers))  # uniform mix at init
        self.norm = nn.LayerNorm(in_dim)
        self.proj = nn.Linear(in_dim, out_dim)

    @property
    def weights(self) -> torch.Tensor:
        return self.logits.softmax(0)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        per_layer = F.layer_norm(feats, feats.shape[-1:])  # (B, n, L, D), each layer on one scale
        mixed = torch.einsum("n,bnld->bld", self.weights, per_layer)
        return self.proj(self.norm(mixed))


class BlockwiseLLMDiff(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, n_blocks: int, h_init: float = 1e-4):
        super().__init__()
        self.g = nn.Parameter(torch.ones(n_blocks))
        # h = softplus(rho) >= 0; rho chosen so that h starts at h_init
        self.rho = nn.Parameter(torch.full((n_blocks,), float(torch.log(torch.expm1(torch.tensor(h_init))))))
        self.norm = nn.LayerNorm(in_dim)
        self.proj = nn.Linear(in_dim, out_dim)

    @property
    def h(self) -> torch.Tensor:
        return F.softplus(self.rho)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        h0, diffs = feats[:, 0], feats[:, 1:]  # (B, L, D), (B, T, L, D)
        c = h0 + torch.einsum("t,btld->bld", self.g, diffs)
        if self.training:
            rms = diffs.pow(2).mean(-1, keepdim=True).sqrt().detach()  # (B, T, L, 1)
            noise = torch.randn_like(diffs) * rms * torch.sqrt(2 * self.h)[None, :, None, None]
            c = c + noise.sum(1)
        return self.proj(self.norm(c))


def make_feature_connector(kind: str, in_dim: int, out_dim: int, n_outputs: int) -> nn.Module:
    if kind == "single":
        if n_outputs != 1:
            raise ValueError(f"connector 'single' takes one layer, the encoder gives {n_outputs}; use 'layer_mix'")
        return SingleLayer(in_dim, out_dim)
    if kind == "layer_mix":
        return LayerMix(in_dim, out_dim, n_outputs)
    if kind == "blockwise":
        return BlockwiseLLMDiff(in_dim, out_dim, n_outputs - 1)
    raise ValueError(f"unknown connector {kind!r}; known: single, layer_mix, blockwise")
