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
        # two runs started together (`llmdiff experiment --jobs 2`) may need the same cache: one waits
        build_cache(encoder, captions, folder, dtype=dtype, batch_size=batch_size, wait=True)
    try:
        return load_cache(folder, expect_key=key, dtype=None)  # kept as stored (fp16): converted per batch
    except LLMDiffError as e:  # a damaged shard: encode it again (the build re-encodes only shards that fail)
        log.warning("%s; encoding it again", e)
        build_cache(encoder, captions, folder, dtype=dtype, batch_size=batch_size, wait=True)
        return load_cache(folder, expect_key=key, dtype=None)


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
                                                         cfg.data.seed, cfg.data.mix, cfg.data.phrasebook,
                                                         cfg.data.p_color)
        super().__init__(cfg, self.captions.captions)

    def images(self, index, rng):
        return np.stack([self.captions.render(int(i), rng, self.cfg.data.resolution) for i in index])


IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")
MAX_IMAGE_SIDE = 8192


def _row_problem(root: Path, row) -> tuple[Path | None, str | None, str | None]:
    """(image file, caption, problem) of one metadata line; the file is opened and fully decoded here, so a
    truncated or mislabelled image is found before training starts, not at the step that draws it."""
    from PIL import Image, UnidentifiedImageError

    from ..encoders.base import check_text

    if not isinstance(row, dict) or not isinstance(row.get("file_name"), str):
        return None, None, 'expected {"file_name": ..., "text": ...}'
    text = row.get("text", row.get("caption"))
    if not isinstance(text, str):
        return None, None, "no caption (a \"text\" string)"
    try:
        check_text(text, "the caption")
    except LLMDiffError as e:
        return None, None, str(e)
    name = row["file_name"]
    file = (root / name).resolve()
    if Path(name).is_absolute() or not file.is_relative_to(root.resolve()):
        return None, None, f"file_name {name!r} is outside {root}; give a path inside the folder"
    if not file.is_file():
        return None, None, f"missing image {name}"
    try:
        with Image.open(file) as im:
            if im.format not in IMAGE_FORMATS:
                return None, None, f"{name}: unsupported image format {im.format}"
            if max(im.size) > MAX_IMAGE_SIDE or min(im.size) < 1:
                return None, None, f"{name}: image size {im.width}x{im.height} outside 1..{MAX_IMAGE_SIDE} px"
            im.load()
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError, SyntaxError) as e:
        return None, None, f"{name}: unreadable image ({type(e).__name__}: {str(e)[:80]})"
    return file, text, None


class FolderTrainingData(TrainingData):
    """Your own images and captions: DIR/metadata.jsonl with {"file_name": ..., "text": ...} per line
    (Hugging Face's imagefolder convention), images resized and centre-cropped to the resolution.

    Every row is checked before any caption is encoded: file names must stay inside DIR, and every
    image must open and decode completely. Bad rows are listed in one error, or skipped with a
    warning when ``data.skip_bad`` is set (``llmdiff train --skip-bad``).
    """

    def __init__(self, cfg: ExperimentConfig):
        root = Path(cfg.data.path or "")
        meta = root / "metadata.jsonl"
        if not meta.is_file():
            raise LLMDiffError(f"data.path {root} has no metadata.jsonl (lines of {{\"file_name\": ..., \"text\": ...}})")
        self.files, captions, bad = [], [], []
        for n, line in enumerate(meta.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None
            file, text, problem = _row_problem(root, row)
            if problem:
                bad.append(f"{meta}:{n}: {problem}")
                continue
            self.files.append(file)
            captions.append(text)
        if bad and not cfg.data.skip_bad:
            shown = "; ".join(bad[:3]) + (f"; and {len(bad) - 3} more" if len(bad) > 3 else "")
            raise LLMDiffError(f"{len(bad)} bad row(s) in {meta}: {shown}; fix them, or train on the other "
                               f"{len(captions)} rows with --skip-bad (data.skip_bad=true)")
        for problem in bad:
            log.warning("skipped %s", problem)
        if not captions:
            raise LLMDiffError(f"{meta} has no usable rows")
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
