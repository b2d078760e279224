"""Content hashes of weights, checkpoints and cache shards, and the folder and output guards every writer shares.

A folder of safetensors records the SHA-256 of each weight file in its JSON (``model_index.json`` of a
model folder, under ``_sha256``, which diffusers' loader ignores; ``state.json`` of a checkpoint, ``manifest.json`` of a feature cache); loading checks
them, so flipped bytes or a truncated file are an error instead of a black image or a wrong row.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from filelock import FileLock, Timeout

from .errors import LLMDiffError

log = logging.getLogger(__name__)

MODEL_INFO = "model_index.json"  # a model folder's index (pipeline layout), which records its hashes
LOCK_NAME = ".llmdiff.lock"


def sha256_file(path: Path | str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def weight_hashes(folder: Path | str) -> dict[str, str]:
    """{relative path: sha256} of every safetensors file under a folder (sub-folders such as vae/ included)."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*.safetensors"))}


def verify_hashes(folder: Path | str, recorded: dict[str, str], what: str) -> None:
    """Every recorded file exists with its recorded hash, else a one-line error naming the first bad file."""
    folder = Path(folder)
    for name, digest in recorded.items():
        path = folder / name
        if not path.is_file():
            raise LLMDiffError(f"{what} {folder} is incomplete: {name} is missing")
        if sha256_file(path) != digest:
            raise LLMDiffError(f"{what} {folder} is damaged: {name} does not match its recorded SHA-256 "
                               "(flipped bytes or a truncated copy); copy or export it again")


def record_model_hashes(folder: Path | str) -> None:
    """Add the weight files' hashes (denoiser/, vae/, ...) to a model folder's model_index.json."""
    from .utils import atomic_write_text

    info_path = Path(folder) / MODEL_INFO
    info = json.loads(info_path.read_text())
    info["_sha256"] = weight_hashes(folder)
    atomic_write_text(info_path, json.dumps(info, indent=2, sort_keys=True) + "\n")


def verify_model_folder(folder: Path | str, info: dict | None = None) -> None:
    """Check a model folder's weights against the hashes in its model_index.json (`info`, read if not given).

    A weight file without a recorded hash (no `_sha256` at all, or a file it does not list) cannot be checked: the
    folder still loads, with a warning, since folders exported by hand or by older tools record none."""
    folder = Path(folder)
    info_path = folder / MODEL_INFO
    if info is None:
        if not info_path.is_file():
            return
        from .utils import read_json

        info = read_json(info_path)
    recorded = info.get("_sha256") if isinstance(info, dict) else None
    if recorded is not None and not (isinstance(recorded, dict)
                                     and all(isinstance(v, str) for v in recorded.values())):
        raise LLMDiffError(f"{info_path}: _sha256 must map each weight file to its SHA-256 hash; export the model "
                           "again")
    recorded = recorded or {}
    verify_hashes(folder, recorded, "model folder")
    unchecked = [p.relative_to(folder).as_posix() for p in sorted(folder.rglob("*.safetensors"))
                 if p.relative_to(folder).as_posix() not in recorded]
    if unchecked:
        log.warning("%s records no SHA-256 for %s (_sha256 in %s): these weights cannot be verified; re-export the "
                    "model to record them", folder, ", ".join(unchecked), MODEL_INFO)


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """A hash of named tensors' contents (names, dtypes, shapes, bytes): what a model computes with."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


# --- folder guards ----------------------------------------------------------------------------------


def check_writable(path: Path | str, option: str, folder: bool = True) -> Path:
    """Refuse, before any work, an output path that cannot be written: a file where a folder is needed (or the
    reverse), a parent that is a file, or a read-only location. Nothing is created."""
    path = Path(path).expanduser()
    if path.exists():
        if folder and not path.is_dir():
            raise LLMDiffError(f"{option} {path} is a file, not a folder; pass a folder")
        if not folder and path.is_dir():
            raise LLMDiffError(f"{option} {path} is a folder; pass a file name")
        target = path if path.is_dir() else path.parent
    else:
        target = path.parent
        while not target.exists():
            target = target.parent
        if not target.is_dir():
            raise LLMDiffError(f"{option} {path} cannot be created: {target} is a file")
    if not os.access(target, os.W_OK | os.X_OK):
        raise LLMDiffError(f"{option} {path} is not writable (no write permission in {target})")
    return path


def check_replaceable(path: Path | str, option: str, ours: Callable[[Path], bool] | bool = False,
                      overwrite: bool = False, remedy: str | None = None) -> Path:
    """Refuse, before any work, to replace what the command did not write: an existing `path` is written only
    when `ours` says it is the command's own output (a predicate of the path, or the caller's verdict) or the user
    passed --overwrite. Absent paths and empty folders hold nothing to lose; every command's outputs go through
    here, each with its own notion of `ours` (a PNG's llmdiff text, a folder's record of what made it)."""
    path = Path(path).expanduser()
    if overwrite or not os.path.lexists(path):
        return path
    if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
        return path
    if ours(path) if callable(ours) else ours:
        return path
    raise LLMDiffError(f"{option}: {path} exists and was not written by this command; "
                       + (remedy or f"pass --overwrite to replace it, or choose another {option}"))


def llmdiff_png(path: Path | str) -> str | None:
    """What wrote a PNG: "image" (`llmdiff generate`, its settings as metadata), "figure" (every other PNG llmdiff
    draws) or None (not llmdiff, or not a readable PNG). Read from the PNG's text, without decoding the pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            text = dict(getattr(im, "text", {}) or {})
    except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError):
        return None
    if not str(text.get("Software", "")).startswith("llmdiff"):
        return None
    return "image" if "llmdiff" in text else "figure"


def is_llmdiff_figure(path: Path) -> bool:
    return llmdiff_png(path) == "figure"


def child_folder(parent: Path | str, name, what: str) -> Path:
    """`parent / name` for a name that becomes a folder name (a run's, an experiment's, a variant's), after checking
    that it stays inside `parent`: one plain folder name, without '/', '..' or control characters."""
    text = name if isinstance(name, str) else None
    if (not text or text in (".", "..") or any(c in text for c in "/\\") or text != text.strip()
            or any(ord(c) < 32 or ord(c) == 127 for c in text)):
        raise LLMDiffError(f"{what} {name!r} would not name one folder inside {parent}: use a plain name, "
                           "without '/', '..', control characters or spaces at its ends")
    return Path(parent) / text


@contextlib.contextmanager
def folder_lock(folder: Path | str, what: str, wait: bool = False):
    """Hold an exclusive lock on a folder while writing into it; a second writer gets a one-line error, or with
    ``wait`` waits for the first to finish (for a folder both would fill with the same content, a feature cache).

    The lock is an OS file lock (filelock's FileLock is flock on Unix): it is released when the process ends, even
    by kill -9. Each call takes its own lock object, so a second writer in the same process is refused as well.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # no soft (marker file) fallback where the file system lacks flock: a marker outlives a killed writer and would
    # refuse every later one
    lock = FileLock(folder / LOCK_NAME, fallback_to_soft=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if not wait:
            raise LLMDiffError(f"another llmdiff process is writing {what} {folder}; wait for it to finish "
                               "or use another folder") from None
        log.warning("another llmdiff process is writing %s %s; waiting for it", what, folder)
        lock.acquire()
    try:
        yield folder
    finally:
        lock.release()


def remove_temp_folders(folder: Path | str) -> list[Path]:
    """Delete ``.tmp-*`` folders a killed writer left behind (only ever created under temporary names)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.glob(".tmp-*") if p.is_dir()]
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return stale
