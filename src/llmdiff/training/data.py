"""Training batches: Shapes scenes rendered on the fly, text features from the cache.

Every batch is a pure function of (seed, step, rank): caption indices, layouts, colours left
open by the caption, caption dropout, noise and timesteps all come from generators seeded
with those three numbers. Resuming at step s therefore replays exactly what an uninterrupted
run would have seen, and nothing about data order has to be saved.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from ..config import ExperimentConfig
from ..connectors.conditioner import TextInput
from ..encoders import EncoderConfig, load_encoder
from ..encoders.cache import CachedFeatures, build_cache, default_cache_folder, load_cache
from ..errors import LLMDiffError
from ..shapes.training_set import CaptionSet, build_caption_set

log = logging.getLogger(__name__)


def step_seed(seed: int, step: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0])


def cached_features(enc_cfg: EncoderConfig, captions: list[str], dtype: str = "float16", batch_size: int = 64,
                    folder: Path | None = None) -> CachedFeatures:
    """The features of `captions` under `enc_cfg`, encoding them first if no complete cache exists."""
    encoder = load_encoder(enc_cfg)
    key = encoder.cache_key()
    folder = folder or default_cache_folder(key, captions)
    if not (folder / "manifest.json").is_file() or not _complete(folder):
        log.warning("encoding %d captions with %s into %s (once)", len(captions), enc_cfg.model, folder)
        build_cache(encoder, captions, folder, dtype=dtype, batch_size=batch_size)
    del encoder
    return load_cache(folder, expect_key=key, dtype=None)  # kept as stored (fp16): converted per batch


def _complete(folder: Path) -> bool:
    return bool(json.loads((folder / "manifest.json").read_text()).get("complete"))


class ShapesTrainingData:
    """A finite caption set of the Shapes world with the cached features of every configured LLM."""

    def __init__(self, cfg: ExperimentConfig, caption_set: CaptionSet | None = None):
        if cfg.data.world != "shapes":
            raise LLMDiffError(f"unknown data world {cfg.data.world!r}; llmdiff ships the 'shapes' world")
        self.cfg = cfg
        self.captions = caption_set or build_caption_set(cfg.data.n_scenes, cfg.data.captions_per_scene,
                                                         cfg.data.seed, cfg.data.mix)
        self.features = [cached_features(e, self.captions.captions, cfg.text.cache_dtype, cfg.text.batch_size)
                         for e in cfg.text.encoders]

    @property
    def text_dims(self) -> list[int]:
        return [f.features.shape[-1] for f in self.features]

    @property
    def text_outputs(self) -> list[int]:
        return [f.features.shape[1] if f.features.dim() == 4 else 1 for f in self.features]

    def texts(self, index: np.ndarray | torch.Tensor) -> list[TextInput]:
        """Cached features of some captions, trimmed to the longest of them."""
        index = torch.as_tensor(index)
        out = []
        for f in self.features:
            mask = f.mask[index]
            n = max(1, int(mask.sum(1).max()))
            feats = f.features[index][..., :n, :]
            out.append(TextInput(feats.float(), mask[:, :n]))
        return out

    def batch(self, step: int, rank: int, batch_size: int, caption_dropout: float):
        """(x0 in [-1, 1] of shape (B, 3, R, R), texts, torch generator for noise) for one step and rank."""
        seed = step_seed(self.cfg.train.seed, step, rank)
        rng = np.random.default_rng(seed)
        index = rng.integers(0, len(self.captions), batch_size)
        res = self.cfg.data.resolution
        images = np.stack([self.captions.render(int(i), rng, res) for i in index])
        x0 = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
        drop = torch.from_numpy(rng.random(batch_size) < caption_dropout)
        texts = [t.dropped(drop) for t in self.texts(index)]
        return x0, texts, torch.Generator().manual_seed(seed)
