"""Denoisers: LI-DiT, a diffusers U-Net conditioned on an encoder, and the LLMDiff U-Net adapter."""

from __future__ import annotations

from pathlib import Path

from ..config import ExperimentConfig, to_dict
from ..errors import LLMDiffError

KINDS = ("lidit", "unet", "unet_adapter")


def build_denoiser(cfg: ExperimentConfig, text_dims: list[int], text_outputs: list[int]):
    """The model an experiment trains (fresh, or ``model.init``'s weights); its encoders are recorded in its config."""
    model = _build(cfg, text_dims, text_outputs)
    if cfg.model.init:
        init = load_denoiser(cfg.model.init)
        try:
            model.load_state_dict(init.state_dict())
        except RuntimeError as e:
            first = str(e).split("\n\t")[1] if "\n\t" in str(e) else str(e)
            raise LLMDiffError(f"model.init {cfg.model.init} does not fit this config's model ({first.strip()}); "
                               "use the config it was trained with") from None
    return model


def _build(cfg: ExperimentConfig, text_dims: list[int], text_outputs: list[int]):
    encoders = tuple(to_dict(e) for e in cfg.text.encoders)
    size, channels = denoised_shape(cfg)
    common = dict(sample_size=size, in_channels=channels, objective=cfg.train.objective, encoders=encoders)
    if cfg.model.kind == "lidit":
        from .lidit import build_lidit

        return build_lidit(cfg.model.preset, cfg.model.overrides, text_dims=tuple(text_dims),
                           text_outputs=tuple(text_outputs), connector=cfg.text.connector,
                           refiner_depth=cfg.text.refiner_depth, refiner_causal=cfg.text.refiner_causal,
                           collaborative=cfg.text.collaborative, **common)
    if cfg.model.kind == "unet":
        from .unet import build_unet

        return build_unet(cfg.model.preset, cfg.model.overrides, text_dims=tuple(text_dims), **common)
    if cfg.model.kind == "unet_adapter":
        from .adapter import build_adapter_model

        return build_adapter_model(cfg, text_dims, text_outputs)
    raise LLMDiffError(f"unknown model kind {cfg.model.kind!r}; known: {', '.join(KINDS)}")


def from_preset(cls, presets: dict[str, dict], preset: str, overrides: dict | None, label: str, **kwargs):
    """`cls` built from a named preset, with the preset fields in `overrides` changed, plus `kwargs`."""
    if preset not in presets:
        raise LLMDiffError(f"unknown {label} preset {preset!r}; known: {', '.join(presets)}")
    return cls(**{**presets[preset], **(overrides or {}), **kwargs})


def denoised_shape(cfg: ExperimentConfig) -> tuple[int, int]:
    """(side, channels) of what the denoiser sees: pixels, or the autoencoder's latents."""
    if not cfg.model.autoencoder:
        return cfg.data.resolution, 3
    import json

    path = Path(cfg.model.autoencoder) / "config.json"
    if not path.is_file():
        raise LLMDiffError(f"no autoencoder at {cfg.model.autoencoder}; train one with `llmdiff autoencoder`")
    ae = json.loads(path.read_text())
    factor = 2 ** (len(ae["block_out_channels"]) - 1)
    if cfg.data.resolution % factor:
        raise LLMDiffError(f"resolution {cfg.data.resolution} is not a multiple of the autoencoder's factor {factor}")
    return cfg.data.resolution // factor, int(ae["latent_channels"])


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
