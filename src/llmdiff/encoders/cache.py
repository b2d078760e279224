"""The feature cache: every caption is read by the frozen LLM once, and training reads the result.

Layout of a cache folder::

    manifest.json              key (model id, layers, template, max length, padding side, ...),
                               caption-set hash, shard size, dtype, completeness
    captions.json              the captions, in order
    shard-00000.safetensors    features (n, [k,] L, D), mask (n, L) and, when the encoder keeps
                               instruction tokens, prompt_mask (n, L) for captions 0..n-1
    ...

Shards are written atomically (temp file + rename), so a killed run resumes at the first
missing shard and nothing is lost or duplicated. Each shard records the index of its first
caption; a complete manifest records every shard's SHA-256, and loading checks both, so a
damaged, truncated or swapped shard is an error (and a rerun of ``encode`` encodes it again)
instead of wrong rows. A folder whose manifest has another key is never reused silently, and
a lock file keeps a second writer out. Shards are split across processes with accelerate, so the same
command runs on one CPU, two CPU processes (gloo) or many GPUs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors import safe_open
from safetensors.torch import load_file, save

from ..errors import LLMDiffError
from ..integrity import folder_lock, sha256_file
from ..utils import atomic_write_bytes, atomic_write_text, cache_dir, read_text
from .base import PromptEncoder, TextInput, check_text, pad_stack

log = logging.getLogger(__name__)

FORMAT = 1
DTYPES = {"float16": torch.float16, "float32": torch.float32, "bfloat16": torch.bfloat16}


def key_hash(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def captions_hash(captions: list[str]) -> str:
    return hashlib.sha256("\n".join(captions).encode()).hexdigest()[:16]


def default_cache_folder(key: dict, captions: list[str]) -> Path:
    """Where training keeps the features of a caption set for an encoder: one folder per (key, captions)."""
    return cache_dir() / "features" / f"{key_hash(key)}-{captions_hash(captions)}"


@dataclass
class CachedFeatures:
    text: TextInput  # every caption's features (N, [k,] L, D) and masks (N, L), in caption order
    captions: list[str]
    manifest: dict


def _shard_path(root: Path, i: int) -> Path:
    return root / f"shard-{i:05d}.safetensors"


def _read_shard(root: Path, i: int, shard_size: int, n_captions: int, digest: str | None = None) -> dict:
    """The tensors of shard i, checked: its recorded hash (when the manifest has one), that it starts at caption
    i * shard_size and holds the rows of exactly that range. A clear error otherwise."""
    path = _shard_path(root, i)
    first, n = i * shard_size, min(shard_size, n_captions - i * shard_size)
    advice = "rerun the same `llmdiff encode` command to encode it again"
    if digest is not None and sha256_file(path) != digest:
        raise LLMDiffError(f"cache shard {path} does not match its recorded SHA-256 (damaged or replaced); {advice}")
    try:
        with safe_open(path, "pt") as f:
            meta = f.metadata() or {}
        t = load_file(path)
    except (SafetensorError, OSError) as e:
        raise LLMDiffError(f"corrupt cache shard {path} ({e}); {advice}") from None
    if meta.get("first") != str(first) or not {"features", "mask"} <= set(t) <= {"features", "mask", "prompt_mask"} \
            or any(v.shape[0] != n for v in t.values()):
        raise LLMDiffError(f"cache shard {path} should hold captions {first}..{first + n - 1} but records first="
                           f"{meta.get('first')} and {t['mask'].shape[0] if 'mask' in t else '?'} rows "
                           f"(a shard from elsewhere?); {advice}")
    return t


def _shard_done(root: Path, i: int, shard_size: int, n_captions: int, digest: str | None) -> bool:
    if not _shard_path(root, i).is_file():
        return False
    try:
        _read_shard(root, i, shard_size, n_captions, digest)
    except LLMDiffError as e:
        log.warning("%s", e)
        return False
    return True


def _manifest(encoder_key: dict, captions: list[str], shard_size: int, dtype: str) -> dict:
    return {"format": FORMAT, "key": encoder_key, "key_hash": key_hash(encoder_key),
            "captions_sha256": captions_hash(captions), "n_captions": len(captions), "shard_size": shard_size,
            "dtype": dtype, "complete": False}


def _check_compatible(root: Path, want: dict, overwrite: bool) -> None:
    """An existing folder must hold the same key and captions, else be wiped (overwrite) or refused."""
    path = root / "manifest.json"
    if not path.is_file():
        return
    have = json.loads(path.read_text())
    same = {k: have.get(k) for k in ("format", "key_hash", "captions_sha256", "shard_size", "dtype")} == \
           {k: want[k] for k in ("format", "key_hash", "captions_sha256", "shard_size", "dtype")}
    if same:
        return
    if not overwrite:
        raise LLMDiffError(f"{root} holds features of another encoder setting or caption set "
                           f"(key {have.get('key_hash')}, captions {have.get('captions_sha256')}); "
                           "use another --out or pass --overwrite")
    for f in root.glob("shard-*.safetensors"):
        f.unlink()
    path.unlink()


def build_cache(encoder: PromptEncoder, captions: list[str], root: Path | str, shard_size: int = 256,
                dtype: str = "float16", batch_size: int = 64, overwrite: bool = False, progress: bool = True,
                on_shard=None, wait: bool = False) -> Path:
    """Encode every caption into `root`, resuming where a previous run stopped; returns `root`.

    Run under ``torchrun``/``accelerate launch`` to split the shards across processes. Another process building
    the same cache is an error, or with ``wait`` is waited for (its shards are then reused).
    """
    from accelerate import PartialState

    if dtype not in DTYPES:
        raise LLMDiffError(f"cache dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if not captions:
        raise LLMDiffError("no captions to encode")
    root = Path(root)
    state = PartialState(cpu=not torch.cuda.is_available())  # on CPU, torchrun ranks need cpu=True to form a gloo group
    # the main process holds the folder's lock for the whole build; other processes are part of the same job
    with folder_lock(root, "a feature cache", wait=wait) if state.is_main_process else contextlib.nullcontext():
        _build(encoder, captions, root, shard_size, dtype, batch_size, overwrite, progress, on_shard, state)
    return root


def _build(encoder, captions, root, shard_size, dtype, batch_size, overwrite, progress, on_shard, state) -> None:
    from tqdm.auto import tqdm

    want = _manifest(encoder.cache_key(), captions, shard_size, dtype)
    if state.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        _check_compatible(root, want, overwrite)
        if not (root / "manifest.json").is_file():
            atomic_write_text(root / "captions.json", json.dumps(captions) + "\n")
            atomic_write_text(root / "manifest.json", json.dumps(want, indent=2) + "\n")
    state.wait_for_everyone()
    n_shards = (len(captions) + shard_size - 1) // shard_size
    manifest = json.loads((root / "manifest.json").read_text())
    recorded = manifest.get("shards") or [None] * n_shards
    todo = [i for i in range(n_shards) if not _shard_done(root, i, shard_size, len(captions), recorded[i])]
    state.wait_for_everyone()  # every process has decided before the manifest changes
    if todo and state.is_main_process:  # shards are about to change: no longer complete until they are hashed again
        if manifest.get("complete"):
            manifest.update(complete=False, shards=None)
            atomic_write_text(root / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    with state.split_between_processes(todo) as mine:
        total = sum(len(captions[i * shard_size:(i + 1) * shard_size]) for i in todo)
        bar = tqdm(total=total, desc="encoding captions", unit="caption",
                   disable=not (progress and state.is_main_process))
        for i in mine:
            part = captions[i * shard_size:(i + 1) * shard_size]
            out = encoder.encode(part, batch_size=batch_size)
            tensors = {"features": out.features.to(DTYPES[dtype]).contiguous().cpu(),
                       "mask": out.mask.contiguous().cpu()}
            if out.prompt_mask is not None:
                tensors["prompt_mask"] = out.prompt_mask.contiguous().cpu()
            atomic_write_bytes(_shard_path(root, i), save(tensors, metadata={"first": str(i * shard_size),
                                                                          "rank": str(state.process_index)}))
            bar.update(min(len(part) * state.num_processes, total - bar.n))  # the other processes move alike
            if on_shard is not None:
                on_shard(i)
        bar.close()
    state.wait_for_everyone()
    if state.is_main_process:
        missing = [i for i in range(n_shards) if not _shard_path(root, i).is_file()]
        if missing:
            raise LLMDiffError(f"cache {root} is missing shards {missing[:5]}; run the same command again to resume")
        manifest = json.loads((root / "manifest.json").read_text())
        manifest.update(complete=True, n_shards=n_shards, hidden_size=encoder.hidden_size, n_outputs=encoder.n_outputs,
                        shards=[sha256_file(_shard_path(root, i)) for i in range(n_shards)])
        atomic_write_text(root / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    state.wait_for_everyone()


def load_cache(root: Path | str, expect_key: dict | None = None, dtype: torch.dtype | None = torch.float32) -> CachedFeatures:
    """All features of a complete cache folder, padded to the longest caption (dtype None: as stored)."""
    root = Path(root)
    path = root / "manifest.json"
    if not path.is_file():
        raise LLMDiffError(f"no feature cache at {root} (no manifest.json); build it with `llmdiff encode`")
    manifest = json.loads(path.read_text())
    if not manifest.get("complete"):
        raise LLMDiffError(f"feature cache {root} is incomplete; run the same `llmdiff encode` command to resume")
    if expect_key is not None and manifest["key_hash"] != key_hash(expect_key):
        raise LLMDiffError(f"feature cache {root} was built with another encoder setting "
                           f"({manifest['key']}); rebuild it for {expect_key}")
    if manifest["key"].get("keep_instruction") and not manifest["key"].get("stores_prompt_mask"):
        raise LLMDiffError(f"feature cache {root} keeps instruction tokens but not the mask of the prompt's own "
                           "(it was built by an older llmdiff); rebuild it with `llmdiff encode ... --overwrite`")
    feats, masks, prompt_masks = [], [], []
    digests = manifest.get("shards") or [None] * manifest["n_shards"]
    for i in range(manifest["n_shards"]):
        t = _read_shard(root, i, manifest["shard_size"], manifest["n_captions"], digests[i])
        feats += list(t["features"] if dtype is None else t["features"].to(dtype))
        masks += list(t["mask"])
        prompt_masks += list(t["prompt_mask"]) if "prompt_mask" in t else []  # stored by every shard or none
    length = max(m.shape[0] for m in masks)
    captions = json.loads((root / "captions.json").read_text())
    if len(captions) != len(feats):
        raise LLMDiffError(f"feature cache {root} holds {len(feats)} rows for {len(captions)} captions; rebuild it")
    text = TextInput(pad_stack(feats, length, feats[0].dim() - 2), pad_stack(masks, length, 0),
                     pad_stack(prompt_masks, length, 0) if prompt_masks else None)
    return CachedFeatures(text, captions, manifest)


def read_captions(path: Path | str) -> list[str]:
    """Captions from a text file (one per line) or JSONL (a "caption" or "prompt" field per line)."""
    path = Path(path)
    if not path.is_file():
        raise LLMDiffError(f"no captions file {path}")
    lines = read_text(path).splitlines()
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if path.suffix != ".jsonl":
            caption = line
        else:
            try:
                d = json.loads(line)
                caption = d["caption"] if "caption" in d else d["prompt"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise LLMDiffError(f"{path}:{n}: expected a JSON object with a 'caption' or 'prompt' field") from None
            if not isinstance(caption, str):
                raise LLMDiffError(f"{path}:{n}: the caption must be a string, got {caption!r}")
        check_text(caption, f"{path}:{n}")
        out.append(caption)
    if not out:
        raise LLMDiffError(f"{path} holds no captions (one per line, or JSONL with a 'caption' field)")
    return out
