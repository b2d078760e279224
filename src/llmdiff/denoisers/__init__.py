"""Denoisers: LI-DiT, a diffusers U-Net conditioned on an encoder, and the LLMDiff U-Net adapter.

``DENOISERS`` is the one mapping from a model kind (``model.kind`` in an experiment config) to the class that
implements it; a model folder names its class (``_class_name`` in ``denoiser/config.json``), which ``model_class``
resolves through the same mapping. A class's module is imported when the class is first asked for, so that
sampling with one kind does not import the others (the U-Net kinds import diffusers' U-Net).
"""

from __future__ import annotations

import importlib

from ..errors import LLMDiffError

# model.kind -> "module:Class", the module under llmdiff.denoisers
DENOISERS = {
    "lidit": "lidit:LIDiT",  # LI-DiT, reading several LLMs through connectors and refiners
    "unet": "unet:TextUNet",  # a diffusers UNet2DConditionModel reading one encoder, as Stable Diffusion reads CLIP
    "unet_adapter": "adapter:AdaptedUNet",  # the LLMDiff adapter on a frozen U-Net base (model.base)
}
KINDS = tuple(DENOISERS)
KIND_OF_CLASS = {path.partition(":")[2]: kind for kind, path in DENOISERS.items()}  # saved _class_name -> kind


def _module(kind: str):
    if kind not in DENOISERS:
        raise LLMDiffError(f"unknown model kind {kind!r}; known: {', '.join(KINDS)}")
    return importlib.import_module(f"{__name__}.{DENOISERS[kind].partition(':')[0]}")


def denoiser_class(kind: str) -> type:
    """The class that implements a model kind."""
    return getattr(_module(kind), DENOISERS[kind].partition(":")[2])


def kind_presets(kind: str) -> dict[str, dict]:
    """The named layouts ``model.preset`` chooses from (a module's PRESETS); none for the adapter, whose layout is
    its base's."""
    return getattr(_module(kind), "PRESETS", {})


def model_class(name: str) -> type:
    """The llmdiff model class saved under this ``_class_name``."""
    if name not in KIND_OF_CLASS:
        raise LLMDiffError(f"{name!r} is not an llmdiff model (those are {', '.join(KIND_OF_CLASS)})")
    return denoiser_class(KIND_OF_CLASS[name])
