"""GenEval's folder convention: OUT/<00000>/metadata.jsonl + OUT/<00000>/samples/<0000>.png.

Any generator that writes this layout can be evaluated by ``llmdiff eval``. llmdiff's own
generator also records what produced the images in OUT/llmdiff-generation.json (model weights
hash, seed, steps, guidance, scheduler, prompts; for ``llmdiff shapes gt`` the renderer's settings);
it adds to a folder only when that record matches, so an output folder never mixes two models'
images or passes old images off as new, and a folder of images it did not make is never written into.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import LLMDiffError
from ..utils import atomic_write_bytes, atomic_write_text

RECORD = "llmdiff-generation.json"
MAX_SIDE = 4096  # larger images are refused before they are decoded (a 6000x6000 PNG takes minutes to score)


def write_prompt_folder(out: Path, index: int, entry: dict, images: list) -> Path:
    """Write one prompt's metadata and its images (PIL images or uint8 arrays) atomically."""
    folder = Path(out) / f"{index:05d}"
    (folder / "samples").mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "metadata.jsonl", json.dumps(entry) + "\n")
    for k, img in enumerate(images):
        img = Image.fromarray(img) if isinstance(img, np.ndarray) else img
        atomic_write_bytes(folder / "samples" / f"{k:04d}.png", _png_bytes(img))
    return folder


def prompt_folders(root: Path) -> list[Path]:
    return sorted(p for p in Path(root).iterdir() if p.is_dir() and re.fullmatch(r"\d+", p.name))


def model_digest(pipe) -> str:
    """A hash of what a pipeline draws with: the denoiser's (and decoder's) weights."""
    from ..integrity import tensors_digest

    weights = dict(pipe.denoiser.state_dict())
    if pipe.codec is not None:
        weights.update({f"vae.{k}": v for k, v in pipe.codec.ae.state_dict().items()})
    return tensors_digest(weights)


def prompts_digest(entries: list[dict]) -> str:
    import hashlib

    return hashlib.sha256("\n".join(json.dumps(e, sort_keys=True) for e in entries).encode()).hexdigest()


def generation_record(pipe, entries: list[dict], seed: int, steps: int, guidance_scale: float) -> dict:
    """What decides a suite's images: the denoiser's (and decoder's) weights, encoders, sampler, seed and prompts."""
    prompts = prompts_digest(entries)
    return {"model_sha256": model_digest(pipe), "model_class": type(pipe.denoiser).__name__,
            "encoders": json.loads(json.dumps(pipe.encoder_configs)), "scheduler": type(pipe.scheduler).__name__,
            "seed": seed, "steps": steps, "guidance_scale": guidance_scale, "prompts_sha256": prompts}


def claim_output(out: Path, record: dict, overwrite: bool) -> None:
    """Let a generator write into `out` only if the images there were made the same way (or there are none);
    with `overwrite`, remove the other images first. The record is written before any image."""
    import shutil

    out = Path(out)
    path = out / RECORD
    have = json.loads(path.read_text()) if path.is_file() else None
    existing = prompt_folders(out) if out.is_dir() else []
    if have == record or (have is None and not existing):
        if have is None:
            atomic_write_text(path, json.dumps(record, indent=2) + "\n")
        return
    if not overwrite:
        if have is None:
            why = "images without a record of what made them"
        else:
            changed = [k for k in record if have.get(k) != record[k]]
            why = f"images made with another {', '.join(changed)}"
        raise LLMDiffError(f"{out} already holds {why}; pass --overwrite to replace them, or use another --out")
    for folder in existing:
        shutil.rmtree(folder)
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")


def read_record(root: Path) -> dict | None:
    """The generation record of a folder, if llmdiff wrote one."""
    path = Path(root) / RECORD
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def _png_bytes(img: Image.Image) -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class Sample:
    path: Path
    entry: dict
    prompt_index: int
    image: np.ndarray | None = None


@dataclass
class Layout:
    samples: list[Sample] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)  # {"path": ..., "error": ...}


def read_layout(root: Path, resolution: int | None = None) -> Layout:
    """All samples under a GenEval-layout folder; bad folders, metadata and images are reported in ``errors``."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no image folder {root}: pass the OUT folder that holds 00000/, 00001/, ...")
    folders = prompt_folders(root)
    if not folders:
        raise FileNotFoundError(f"{root} holds no GenEval-layout folders (expected {root}/00000/metadata.jsonl)")
    layout = Layout()
    for folder in folders:
        meta = folder / "metadata.jsonl"
        try:
            lines = [(n, l) for n, l in enumerate(meta.read_text().splitlines(), 1) if l.strip()]
            if not lines:
                raise ValueError("empty metadata")
            n, line = lines[0]
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"line {n}: malformed JSON ({e.msg})") from None
            if not isinstance(entry, dict) or "prompt" not in entry or "include" not in entry:
                raise ValueError(f"line {n}: not a GenEval entry (needs 'prompt' and 'include')")
        except (OSError, ValueError) as e:
            layout.errors.append({"path": str(meta), "error": str(e)})
            continue
        images = sorted((folder / "samples").glob("*.png")) if (folder / "samples").is_dir() else []
        if not images:
            layout.errors.append({"path": str(folder / "samples"), "error": "no PNG samples"})
        for img_path in images:
            try:
                with Image.open(img_path) as im:
                    if max(im.size) > MAX_SIDE:  # checked from the header, before decoding
                        raise ValueError(f"image too large ({im.width}x{im.height}; at most {MAX_SIDE} px a side)")
                    arr = np.asarray(im.convert("RGB"))
            except ValueError as e:
                layout.errors.append({"path": str(img_path), "error": str(e)})
                continue
            except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as e:
                layout.errors.append({"path": str(img_path), "error": f"unreadable image ({type(e).__name__})"})
                continue
            h, w, _ = arr.shape
            if h != w or h < 16 or (resolution and h != resolution):
                want = f"{resolution}x{resolution}" if resolution else "square, at least 16x16"
                layout.errors.append({"path": str(img_path), "error": f"wrong image size {w}x{h} (expected {want})"})
                continue
            layout.samples.append(Sample(img_path, entry, int(folder.name), arr))
    return layout
