"""Small shared helpers: atomic writes, reading text and JSON with errors that name the file, the user cache,
models built from named presets."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from .errors import LLMDiffError


def read_text(path: Path | str) -> str:
    """A text file's contents; a one-line error naming the file when it is not UTF-8 text (a binary file?)."""
    try:
        return Path(path).read_text()
    except UnicodeDecodeError:
        raise LLMDiffError(f"{path} is not UTF-8 text (a binary file?)") from None


def read_json(path: Path | str):
    """A JSON file's contents; a one-line error naming the file when it is malformed."""
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise LLMDiffError(f"{path}: malformed JSON ({e.msg}, line {e.lineno})") from None


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write via a temporary file in the same folder and rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path | str, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def cache_dir() -> Path:
    """llmdiff's user cache: $LLMDIFF_CACHE, else $XDG_CACHE_HOME/llmdiff, else ~/.cache/llmdiff."""
    if os.environ.get("LLMDIFF_CACHE"):
        return Path(os.environ["LLMDIFF_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "llmdiff"


def from_preset(cls, presets: dict[str, dict], preset: str, overrides: dict | None, label: str, **kwargs):
    """`cls` built from a named preset, with the preset fields in `overrides` changed, plus `kwargs`."""
    if preset not in presets:
        raise LLMDiffError(f"unknown {label} preset {preset!r}; known: {', '.join(presets)}")
    return cls(**{**presets[preset], **(overrides or {}), **kwargs})
