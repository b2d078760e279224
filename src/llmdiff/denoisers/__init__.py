"""Denoisers: LI-DiT, a diffusers U-Net conditioned on an encoder, and the LLMDiff U-Net adapter."""

from __future__ import annotations

from pathlib import Path

from ..errors import LLMDiffError

KINDS = ("lidit", "unet", "unet_adapter")


def from_preset(cls, presets: dict[str, dict], preset: str, overrides: dict | None, label: str, **kwargs):
    """`cls` built from a named preset, with the preset fields in `overrides` changed, plus `kwargs`."""
    if preset not in presets:
        raise LLMDiffError(f"unknown {label} preset {preset!r}; known: {', '.join(presets)}")
    return cls(**{**presets[preset], **(overrides or {}), **kwargs})


def model_class(name: str):
    """The llmdiff model class saved under this ``_class_name``."""
    if name == "LIDiT":
        from .lidit import LIDiT

        return LIDiT
    if name == "TextUNet":
        from .unet import TextUNet

        return TextUNet
    if name == "AdaptedUNet":
        from .adapter import AdaptedUNet

        return AdaptedUNet
    raise LLMDiffError(f"{name!r} is not an llmdiff model")


def load_denoiser(path):
    """The denoiser of a model folder (pipeline layout: its denoiser/ folder) of any kind."""
    from ..model_folder import read_model_index

    info = read_model_index(path, verify=True)
    return model_class(info["denoiser"][1]).from_pretrained(Path(path) / "denoiser")


def denoiser_folder(path) -> Path:
    """Where a model folder's denoiser lies: DIR/denoiser for a model folder, DIR for a bare diffusers model."""
    from ..model_folder import read_model_index
    from ..utils import read_json

    path = Path(path)
    config = path / "config.json"
    if config.is_file() and not (path / "model_index.json").is_file():
        info = read_json(config)
        if not isinstance(info, dict) or info.get("_class_name") not in ("LIDiT", "TextUNet", "AdaptedUNet"):
            return path  # e.g. a Stable Diffusion unet/ folder
    read_model_index(path)
    return path / "denoiser"
