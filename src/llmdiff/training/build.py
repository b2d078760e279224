"""The denoiser an experiment config describes: the one place where config sections become the plain
arguments of the denoisers' classes (the denoisers themselves know nothing of experiment configs)."""

from __future__ import annotations

from pathlib import Path

from ..config import ExperimentConfig, to_dict
from ..denoisers import denoiser_class, kind_presets
from ..errors import LLMDiffError
from ..model_folder import load_base_unet, load_denoiser
from ..utils import from_preset


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
    kind, encoders = cfg.model.kind, tuple(to_dict(e) for e in cfg.text.encoders)
    size, channels = denoised_shape(cfg)
    if kind == "unet_adapter":  # its layout is the base's
        from ..denoisers.adapter import build_adapter_model

        return build_adapter_model(load_base_unet(cfg.model.base), cfg.model.base, text_dims=tuple(text_dims),
                                   text_outputs=tuple(text_outputs), connector=cfg.text.connector,
                                   objective=cfg.train.objective, encoders=encoders)
    settings = dict(sample_size=size, in_channels=channels, objective=cfg.train.objective, encoders=encoders,
                    text_dims=tuple(text_dims))
    if kind == "lidit":  # LI-DiT's text side: connector and refiners (config.unused_settings refuses them elsewhere)
        settings.update(text_outputs=tuple(text_outputs), connector=cfg.text.connector,
                        refiner_depth=cfg.text.refiner_depth, refiner_causal=cfg.text.refiner_causal,
                        refiner_gates=cfg.text.refiner_gates, refiner_rope=cfg.text.refiner_rope,
                        blockwise_noise=cfg.text.blockwise_noise,
                        collaborative=cfg.text.collaborative)
    return from_preset(denoiser_class(kind), kind_presets(kind), cfg.model.preset, cfg.model.overrides, kind,
                       **settings)


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
