"""Training batches: Shapes scenes rendered on the fly (or your own images), text features from the cache.

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
from ..encoders import EncoderConfig, TextInput, load_encoder
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


class TrainingData:
    """Captions with their cached features (every configured LLM); subclasses supply the images."""

    def __init__(self, cfg: ExperimentConfig, captions: list[str]):
        self.cfg = cfg
        self.caption_list = captions
        self.features = [cached_features(e, captions, cfg.text.cache_dtype, cfg.text.batch_size)
                         for e in cfg.text.encoders]

    def __len__(self) -> int:
        return len(self.caption_list)

    @property
    def text_dims(self) -> list[int]:
        return [f.text.features.shape[-1] for f in self.features]

    @property
    def text_outputs(self) -> list[int]:
        return [f.text.features.shape[1] if f.text.features.dim() == 4 else 1 for f in self.features]

    def feature_sample(self, n: int = 2048, seed: int = 0) -> list[TextInput]:
        """Cached features of up to `n` captions (the same ones on every rank), for feature statistics."""
        index = torch.from_numpy(np.sort(np.random.default_rng(seed).permutation(len(self))[:n]))
        return [f.text.select(index).to(dtype=torch.float32) for f in self.features]

    def texts(self, index: np.ndarray | torch.Tensor) -> list[TextInput]:
        """Cached features of some captions (prompt masks included), trimmed to the positions they use."""
        index = torch.as_tensor(index)
        return [f.text.select(index).trimmed().to(dtype=torch.float32) for f in self.features]

    def images(self, index: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(B, R, R, 3) uint8 images for these caption indices."""
        raise NotImplementedError

    def batch(self, step: int, rank: int, batch_size: int, caption_dropout: float):
        """(x0 in [-1, 1] of shape (B, 3, R, R), texts, torch generator for noise) for one step and rank."""
        seed = step_seed(self.cfg.train.seed, step, rank)
        rng = np.random.default_rng(seed)
        index = rng.integers(0, len(self), batch_size)
        x0 = torch.from_numpy(self.images(index, rng)).permute(0, 3, 1, 2).float() / 127.5 - 1
        drop = torch.from_numpy(rng.random(batch_size) < caption_dropout)
        texts = [t.dropped(drop) for t in self.texts(index)]
        return x0, texts, torch.Generator().manual_seed(seed)


class ShapesTrainingData(TrainingData):
    """A finite caption set of the Shapes world; every draw renders a new layout of the caption's scene."""

    def __init__(self, cfg: ExperimentConfig, caption_set: CaptionSet | None = None):
        self.captions = caption_set or build_caption_set(cfg.data.n_scenes, cfg.data.captions_per_scene,
                                                         cfg.data.seed, cfg.data.mix, cfg.data.phrasebook)
        super().__init__(cfg, self.captions.captions)

    def images(self, index, rng):
        return np.stack([self.captions.render(int(i), rng, self.cfg.data.resolution) for i in index])


class FolderTrainingData(TrainingData):
    """Your own images and captions: DIR/metadata.jsonl with {"file_name": ..., "text": ...} per line
    (Hugging Face's imagefolder convention), images resized and centre-cropped to the resolution."""

    def __init__(self, cfg: ExperimentConfig):
        root = Path(cfg.data.path or "")
        meta = root / "metadata.jsonl"
        if not meta.is_file():
            raise LLMDiffError(f"data.path {root} has no metadata.jsonl (lines of {{\"file_name\": ..., \"text\": ...}})")
        self.files, captions = [], []
        for n, line in enumerate(meta.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                file, text = root / row["file_name"], row.get("text", row.get("caption"))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise LLMDiffError(f"{meta}:{n}: expected {{\"file_name\": ..., \"text\": ...}}") from None
            if not isinstance(text, str) or not file.is_file():
                raise LLMDiffError(f"{meta}:{n}: missing image {file} or caption")
            self.files.append(file)
            captions.append(text)
        super().__init__(cfg, captions)

    def images(self, index, rng):
        from PIL import Image

        res = self.cfg.data.resolution
        out = []
        for i in index:
            with Image.open(self.files[int(i)]) as im:
                im = im.convert("RGB")
                scale = res / min(im.size)
                im = im.resize((max(res, round(im.width * scale)), max(res, round(im.height * scale))), Image.BICUBIC)
                left, top = (im.width - res) // 2, (im.height - res) // 2
                out.append(np.asarray(im.crop((left, top, left + res, top + res))))
        return np.stack(out)


def training_data(cfg: ExperimentConfig) -> TrainingData:
    if cfg.data.world == "shapes":
        return ShapesTrainingData(cfg)
    if cfg.data.world == "folder":
        return FolderTrainingData(cfg)
    raise LLMDiffError(f"unknown data world {cfg.data.world!r}; known: shapes, folder")
