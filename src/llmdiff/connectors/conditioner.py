"""The text side of LI-DiT: cached features of K LLMs -> one token sequence for cross-attention.

    per LLM:   connector (single layer / layer mix / LLMDiff block-wise) -> token refiner
    K >= 2:    collaborative refiner, or plain concatenation (ablation)
    finally:   instruction tokens, if the encoder kept them, are dropped (LI-DiT drops them here)
"""

from __future__ import annotations

import torch
from torch import nn

from ..encoders.base import TextInput, drop_instruction
from .features import make_feature_connector
from .refiner import CollaborativeRefiner, TokenRefiner


class TextConditioner(nn.Module):
    def __init__(self, in_dims: list[int], n_outputs: list[int], dim: int, heads: int, connector: str = "single",
                 refiner_depth: int = 2, refiner_causal: bool = False, collaborative: bool = True,
                 refiner_gates: bool = True, refiner_rope: bool = False, blockwise_noise: bool = True):
        super().__init__()
        self.connectors = nn.ModuleList(make_feature_connector(connector, d, dim, n, blockwise_noise)
                                        for d, n in zip(in_dims, n_outputs))
        self.refiners = nn.ModuleList(TokenRefiner(dim, heads, refiner_depth, refiner_causal, refiner_gates, refiner_rope)
                                      for _ in in_dims) \
            if refiner_depth > 0 else None
        self.collaborative = CollaborativeRefiner(dim, heads, len(in_dims)) if len(in_dims) > 1 and collaborative else None

    def fit_statistics(self, texts: list[TextInput]) -> None:
        """Per-channel feature statistics of each LLM, from a sample of its training features."""
        for connector, text in zip(self.connectors, texts):
            connector.fit_statistics(text.features, text.mask)

    def forward(self, texts: list[TextInput], t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens (B, L, dim) and mask (B, L) for the denoiser's cross-attention."""
        active = torch.stack([text.mask.any(-1) for text in texts]).any(0)  # (B,) rows with any text
        if not self.training and active.any() and not active.all():
            # An empty prompt's tokens are all zero and masked (every stage multiplies by the mask), so
            # at inference only the other rows are computed: the unconditional half of guidance is free.
            # Training keeps every row, so its random draws (block-wise noise) and results stay as they were.
            tokens, mask = self._forward([text.select(active) for text in texts], t[active])
            out = tokens.new_zeros(len(active), *tokens.shape[1:])
            out[active] = tokens
            full_mask = mask.new_zeros(len(active), mask.shape[1])
            full_mask[active] = mask
            return out, full_mask
        return self._forward(texts, t)

    def _forward(self, texts: list[TextInput], t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xs, masks = [], []
        for k, text in enumerate(texts):
            x = self.connectors[k](text.features) * text.mask[..., None]  # (B, L_k, dim)
            if self.refiners is not None:
                x = self.refiners[k](x, text.mask, t)
            xs.append(x)
            masks.append(text.mask)
        if self.collaborative is not None:
            xs = self.collaborative(xs, masks, t)
        tokens, mask = torch.cat(xs, 1), torch.cat(masks, 1)
        if any(text.prompt_mask is not None for text in texts):
            prompt = torch.cat([m if text.prompt_mask is None else text.prompt_mask for text, m in zip(texts, masks)], 1)
            tokens, mask = drop_instruction(tokens, mask, prompt)
        return tokens, mask
