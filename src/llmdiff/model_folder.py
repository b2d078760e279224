"""Model folders: diffusers' pipeline layout, the one export path, loading a folder's denoiser, and conversion of
old folders. Folders are written and read here without diffusers' pipeline class (``LLMDiffPipeline`` loads the same
layout), so that this module sits below the pipelines.

    model_index.json   the components, `sample_config` (the model's steps, guidance scale and scheduler;
                       checked on load against config.py's limits) and `_sha256` (each weight file's hash,
                       checked on load; a folder without it loads with a warning)
    denoiser/          config.json (with the prompt-encoder spec it was trained on) + safetensors
    scheduler/         the diffusers scheduler it samples with
    vae/               the autoencoder, for a latent model
    training.json      how it was trained (name, steps, data, text); not read at generation
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

from .config import SampleConfig, check_sampling
from .errors import LLMDiffError

SAMPLE_DEFAULTS = {f.name: f.default for f in fields(SampleConfig)}  # steps, guidance_scale, scheduler
# The shipped models live next to the package source (an editable install, as `make setup` makes).
MODELS = Path(__file__).resolve().parents[2] / "models"
DEFAULT_MODEL = MODELS / "shapes-lidit"
PIPELINE_CLASS = "LLMDiffPipeline"  # model_index.json's _class_name: the diffusers pipeline class that loads a folder


def checked_sample_config(given: dict | None, where: str) -> dict:
    """SAMPLE_DEFAULTS with `given` on top, each value within the limits the CLI accepts (SampleConfig's);
    `where` names the source in the one-line error ("models/x/model_index.json: sample_config")."""
    given = {} if given is None else given
    if not isinstance(given, dict):
        raise LLMDiffError(f"{where} must be a JSON object with {', '.join(SAMPLE_DEFAULTS)}, got {given!r}")
    unknown = sorted(set(given) - set(SAMPLE_DEFAULTS))
    if unknown:
        raise LLMDiffError(f"{where} has unknown key(s) {', '.join(map(str, unknown))}; known: "
                           f"{', '.join(SAMPLE_DEFAULTS)}")
    config = {**SAMPLE_DEFAULTS, **given}
    check_sampling(where, config["steps"], config["guidance_scale"], config["scheduler"])
    return config


def read_model_index(path: Path | str, verify: bool = False) -> dict:
    """model_index.json of a model folder; a one-line error that says how to convert an old-layout folder.
    `verify`: also check the weight files against their recorded hashes (what loading does)."""
    path = Path(path)
    index = path / "model_index.json"
    if not index.is_file():
        if (path / "config.json").is_file() and (path / "diffusion_pytorch_model.safetensors").is_file():
            raise LLMDiffError(f"{path} is a model folder in the old llmdiff layout (no model_index.json); convert it "
                               f"with `llmdiff convert {path} {path}-converted`")
        raise LLMDiffError(f"no trained model at {path} (no model_index.json); pass a model folder such as "
                           "models/shapes-lidit or a run's model/ folder (train one with `llmdiff train`)")
    from .utils import read_json

    info = read_json(index)
    if not isinstance(info, dict):
        raise LLMDiffError(f"{index} is not a model index (a JSON object); export the model again")
    for name in ("denoiser", "scheduler"):
        entry = info.get(name)
        if not (isinstance(entry, list) and len(entry) == 2 and entry[1]):
            raise LLMDiffError(f"{index} names no {name}; re-export the model with `llmdiff export`")
        if not (path / name).is_dir():
            raise LLMDiffError(f"{path} is missing its {name}/ folder (model_index.json names one)")
    if (info.get("vae") or [None, None])[1] and not (path / "vae").is_dir():
        raise LLMDiffError(f"{path} is missing its vae/ folder (model_index.json names one)")
    checked_sample_config(info.get("sample_config"), f"{index}: sample_config")
    if verify:
        from .integrity import verify_model_folder

        verify_model_folder(path, info)
    return info


def sample_config_of(info: dict) -> dict:
    """The sampling defaults of a model index that `read_model_index` returned (and so checked)."""
    return {**SAMPLE_DEFAULTS, **(info.get("sample_config") or {})}


def load_denoiser(path: Path | str):
    """The denoiser of a model folder, of any kind, its weights checked against their recorded hashes."""
    from .denoisers import model_class

    info = read_model_index(path, verify=True)
    return model_class(info["denoiser"][1]).from_pretrained(Path(path) / "denoiser")


def denoiser_folder(path: Path | str) -> Path:
    """Where a folder's denoiser lies: DIR/denoiser for a model folder, DIR for a bare diffusers model (e.g. a Stable
    Diffusion unet/ folder)."""
    from .denoisers import KIND_OF_CLASS
    from .utils import read_json

    path = Path(path)
    config = path / "config.json"
    if config.is_file() and not (path / "model_index.json").is_file():
        info = read_json(config)
        if not isinstance(info, dict) or info.get("_class_name") not in KIND_OF_CLASS:
            return path
    read_model_index(path)
    return path / "denoiser"


def load_base_unet(path: Path | str):
    """The frozen base an LLM adapter is trained on: a trained U-Net model folder's diffusers U-Net, or a diffusers
    UNet2DConditionModel folder (a Stable Diffusion unet/)."""
    from diffusers import UNet2DConditionModel

    from .denoisers import KIND_OF_CLASS, denoiser_class
    from .utils import read_json

    if not Path(path).is_dir():
        raise LLMDiffError(f"no trained base U-Net at {path}; train it with configs/shapes-unet-base.yaml, or point "
                           "model.base at a Stable Diffusion unet/ folder")
    path = denoiser_folder(path)
    config = read_json(path / "config.json")
    class_name = config.get("_class_name") if isinstance(config, dict) else None
    if KIND_OF_CLASS.get(class_name) == "unet":
        return denoiser_class("unet").from_pretrained(path).unet
    if class_name == "UNet2DConditionModel":
        return UNet2DConditionModel.from_pretrained(path)
    raise LLMDiffError(f"{path} holds a {class_name!r}; the adapter needs a UNet2DConditionModel or a model trained "
                       "with model.kind=unet")


# The prompt encoders as pipeline components, with diffusers' names: the LLM of the denoiser's first encoder and
# its tokenizer, then the second's (a collaborative model). Export leaves them empty: they are referenced.
TEXT_ENCODER_COMPONENTS = ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")


def export_model(denoiser, out: Path | str, sample_config: dict | None = None, vae=None,
                 training: dict | None = None) -> Path:
    """Write a model folder (the one export path: training, `llmdiff export` and `llmdiff convert` use it).

    The folder is written beside `out` and renamed into place; an existing `out` is replaced only if it is a
    model folder (a re-export), never anything else.
    """
    import os
    import shutil
    import tempfile

    from .diffusion import make_scheduler
    from .integrity import record_model_hashes
    from .utils import atomic_write_text

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not _is_model_folder(out):
        raise LLMDiffError(f"{out} exists and is not a model folder; choose another output folder")
    sample_config = checked_sample_config(sample_config, "sample_config")
    scheduler = make_scheduler(denoiser.config.objective, sample_config["scheduler"])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _save_components(tmp, {"denoiser": denoiser, "scheduler": scheduler, "vae": vae,
                               **dict.fromkeys(TEXT_ENCODER_COMPONENTS)}, sample_config)
        if training:
            atomic_write_text(tmp / "training.json", json.dumps(training, indent=2) + "\n")
        record_model_hashes(tmp)
        if out.exists():
            shutil.rmtree(out)
        os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _save_components(folder: Path, components: dict, sample_config: dict) -> None:
    """Each component in its subfolder and model_index.json, as diffusers' ``DiffusionPipeline.save_pretrained``
    writes them for ``LLMDiffPipeline``: a component is [library, class], the library "diffusers" for diffusers'
    classes and the defining module for ours (diffusers imports it on loading); vae is [null, null] when absent, and
    so are the text encoders (the denoiser's config names the LLMs it reads, loaded by that reference)."""
    import diffusers

    index = {"_class_name": PIPELINE_CLASS, "_diffusers_version": diffusers.__version__, "sample_config": sample_config}
    for name, component in components.items():
        if component is None:
            index[name] = [None, None]
            continue
        module = type(component).__module__
        index[name] = ["diffusers" if module.startswith("diffusers.") else module, type(component).__name__]
        component.save_pretrained(folder / name)
    (folder / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def _is_model_folder(path: Path) -> bool:
    return (path / "model_index.json").is_file() or (path / "config.json").is_file()


def convert_model_folder(old: Path | str, new: Path | str) -> Path:
    """An old-layout folder (config.json + safetensors + llmdiff.json [+ vae/]) in the pipeline layout."""
    from .denoisers import model_class
    from .utils import read_json

    old, new = Path(old), Path(new)
    if (old / "model_index.json").is_file():
        raise LLMDiffError(f"{old} is already in the pipeline layout")
    if not (old / "config.json").is_file():
        raise LLMDiffError(f"{old} is not an llmdiff model folder (no config.json)")
    if new.exists() and (not new.is_dir() or any(new.iterdir())):
        raise LLMDiffError(f"{new} exists; give a new folder to convert into")
    config = read_json(old / "config.json")
    denoiser = model_class(config.get("_class_name") if isinstance(config, dict) else None).from_pretrained(old)
    info = read_json(old / "llmdiff.json") if (old / "llmdiff.json").is_file() else {}
    if not isinstance(info, dict):
        raise LLMDiffError(f"{old / 'llmdiff.json'} is not a JSON object; remove it to convert without it")
    vae = None
    if (old / "vae" / "config.json").is_file():
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(old / "vae")
    training = {k: v for k, v in info.items() if k != "sample"}
    return export_model(denoiser.eval(), new, info.get("sample"), vae, training or None)


def load_scheduler(path: Path, class_name: str):
    """A saved scheduler of one of the kinds llmdiff samples with (nothing else is imported)."""
    from .diffusion import SCHEDULER_CLASSES

    if class_name not in SCHEDULER_CLASSES:
        raise LLMDiffError(f"{path} holds a {class_name}; llmdiff samples with {', '.join(SCHEDULER_CLASSES)}")
    import diffusers

    return getattr(diffusers, class_name).from_pretrained(path)
