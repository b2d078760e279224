"""Checkpoints that never unpickle: tensors in safetensors, everything else in JSON.

A checkpoint is a folder ``checkpoints/step-0000500/`` with model, EMA and optimizer tensors
(``*.safetensors``) and ``state.json`` (step, optimizer hyper-parameters, data-order seed, and
the SHA-256 of every tensor file, checked on load). It is written under a temporary name and
renamed when complete, so a run killed while saving keeps its previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import LLMDiffError
from ..integrity import MODEL_INFO, check_replaceable, verify_hashes, weight_hashes

PREFIX = "step-"


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state_dict into tensors (for safetensors) and plain data (for JSON)."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for name, value in st.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{name}"] = value.detach().clone().contiguous()
            else:
                scalars[f"{pid}.{name}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for key, value in list(tensors.items()) + list(meta["scalars"].items()):
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(root: Path, step: int, model: torch.nn.Module, ema: dict[str, torch.Tensor] | None,
                    opt: torch.optim.Optimizer, extra: dict, keep: int = 2) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"{PREFIX}{step:07d}"
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, tmp / "model.safetensors")
        if hasattr(model, "save_config"):  # lets a checkpoint be exported without rebuilding the data
            model.save_config(tmp)
        if ema is not None:
            save_file({k: v.contiguous() for k, v in ema.items()}, tmp / "ema.safetensors")
        tensors, meta = optimizer_tensors(opt)
        save_file(tensors, tmp / "optimizer.safetensors")
        state = {"step": step, "optimizer": meta, **extra, "sha256": weight_hashes(tmp)}
        (tmp / "state.json").write_text(json.dumps(state, indent=1))
        if target.exists():
            shutil.rmtree(target)
        os.rename(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def list_checkpoints(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and (p / "state.json").is_file())


def verify_checkpoint(path: Path) -> dict:
    """The state of a checkpoint whose tensor files match their recorded hashes; a clear error otherwise."""
    try:
        state = json.loads((path / "state.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise LLMDiffError(f"corrupt checkpoint {path} ({type(e).__name__}: {e}); delete it to resume from the "
                           "previous one") from None
    try:
        verify_hashes(path, state.get("sha256") or {}, "checkpoint")
    except LLMDiffError as e:
        raise LLMDiffError(f"{e}; delete it to resume from the previous one") from None
    return state


def last_good_checkpoint(root: Path) -> Path | None:
    """The newest checkpoint that verifies (the one a diverged run can go back to)."""
    for ckpt in reversed(list_checkpoints(root)):
        try:
            verify_checkpoint(ckpt)
        except LLMDiffError:
            continue
        return ckpt
    return None


def load_checkpoint(path: Path) -> dict:
    """Tensors and state of one checkpoint folder; a clear error if any file is damaged."""
    verify_checkpoint(path)
    try:
        out = {"model": load_file(path / "model.safetensors"), "optimizer": load_file(path / "optimizer.safetensors"),
               "state": json.loads((path / "state.json").read_text())}
        out["ema"] = load_file(path / "ema.safetensors") if (path / "ema.safetensors").is_file() else None
    except (SafetensorError, OSError, json.JSONDecodeError) as e:
        raise LLMDiffError(f"corrupt checkpoint {path} ({type(e).__name__}: {e}); delete it to resume from the "
                           "previous one") from None
    return out


def check_export_target(ckpt: Path, out: Path) -> None:
    """A model folder is exported beside the checkpoint it reads, never into or over it (the run could not
    resume), over another checkpoint, or over a folder that is not a model folder."""
    ckpt, target = Path(ckpt).resolve(), Path(out).resolve()
    if target == ckpt or target in ckpt.parents or ckpt in target.parents:
        raise LLMDiffError(f"--out {out} would write over the checkpoint being exported ({ckpt}); export to a "
                           "folder outside it, e.g. models/NAME")
    if (target / "state.json").is_file() or (target.name.startswith(PREFIX) and target.parent.name == "checkpoints"):
        raise LLMDiffError(f"--out {out} is a training checkpoint, not a model folder; export to another folder")
    check_replaceable(out, "--out", lambda p: (p / MODEL_INFO).is_file() or (p / "llmdiff.json").is_file(),
                      remedy="only a model folder is exported over; choose another --out")


def export_checkpoint(ckpt: Path, out: Path, ema: bool = True) -> Path:
    """A model folder in the pipeline layout (EMA weights unless ``ema`` is False, the run's sampling defaults,
    vae/ for a latent model) from one checkpoint; the trainer's final export and `llmdiff export` both come here."""
    from ..denoisers import model_class
    from ..model_folder import export_model

    ckpt, out = Path(ckpt), Path(out)
    check_export_target(ckpt, out)
    if not (ckpt / "config.json").is_file():
        raise LLMDiffError(f"{ckpt} is not an exportable checkpoint (no config.json)")
    cls = model_class(json.loads((ckpt / "config.json").read_text())["_class_name"])
    model = cls.from_config(cls.load_config(ckpt))
    tensors = load_checkpoint(ckpt)
    state = tensors["model"]
    ema = ema and tensors["ema"] is not None
    if ema:
        state.update(tensors["ema"])
    model.load_state_dict(state)
    run = tensors["state"]
    cfg = run.get("config", {})
    vae = None
    if cfg.get("model", {}).get("autoencoder"):
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(cfg["model"]["autoencoder"])
    training = {"name": cfg.get("name"), "steps": run["step"], "processes": run.get("processes", 1),
                "weights": "ema" if ema else "raw",
                "train_minutes": round(run.get("train_seconds", 0.0) / 60, 1),
                "parameters": sum(p.numel() for p in model.parameters()),
                "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
                "data": cfg.get("data"), "text": cfg.get("text")}
    return export_model(model.eval(), out, cfg.get("sample"), vae, training)
