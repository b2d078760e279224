"""GenEval's folder convention: OUT/<00000>/metadata.jsonl + OUT/<00000>/samples/<0000>.png.

Any generator that writes this layout can be evaluated by ``llmdiff eval``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..utils import atomic_write_bytes, atomic_write_text


def write_prompt_folder(out: Path, index: int, entry: dict, images: list) -> Path:
    """Write one prompt's metadata and its images (PIL images or uint8 arrays) atomically."""
    folder = Path(out) / f"{index:05d}"
    (folder / "samples").mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "metadata.jsonl", json.dumps(entry) + "\n")
    for k, img in enumerate(images):
        img = Image.fromarray(img) if isinstance(img, np.ndarray) else img
        atomic_write_bytes(folder / "samples" / f"{k:04d}.png", _png_bytes(img))
    return folder


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
    folders = sorted(p for p in root.iterdir() if p.is_dir() and re.fullmatch(r"\d+", p.name))
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
                    arr = np.asarray(im.convert("RGB"))
            except (OSError, UnidentifiedImageError) as e:
                layout.errors.append({"path": str(img_path), "error": f"unreadable image ({type(e).__name__})"})
                continue
            h, w, _ = arr.shape
            if h != w or h < 16 or (resolution and h != resolution):
                want = f"{resolution}x{resolution}" if resolution else "square, at least 16x16"
                layout.errors.append({"path": str(img_path), "error": f"wrong image size {w}x{h} (expected {want})"})
                continue
            layout.samples.append(Sample(img_path, entry, int(folder.name), arr))
    return layout
