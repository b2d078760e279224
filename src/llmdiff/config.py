"""Typed experiment configuration: frozen dataclasses, YAML files, dotted command-line overrides.

    llmdiff train configs/shapes-lidit.yaml train.steps=2000 model.depth=6

Unknown keys are errors (with the known ones listed), values are checked against the field
types, and every run writes the resolved configuration next to its checkpoints.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .encoders.base import EncoderConfig
from .errors import LLMDiffError


@dataclass(frozen=True)
class DataConfig:
    world: str = "shapes"  # "shapes" (rendered on the fly) or "folder" (your images + captions)
    path: str | None = None  # world "folder": DIR with metadata.jsonl lines {"file_name": ..., "text": ...}
    resolution: int = 32
    n_scenes: int = 6000  # scene specifications drawn for the finite caption set
    captions_per_scene: int = 2
    mix: dict | None = None  # weights of single/pair/relation/count/listing scenes (None: the default mix)
    seed: int = 0


@dataclass(frozen=True)
class TextConfig:
    """How cached LLM features become the tokens the denoiser attends to."""

    encoders: tuple[EncoderConfig, ...] = (EncoderConfig(),)
    connector: str = "single"  # "single" layer, learnable "layer_mix", or LLMDiff "blockwise"
    refiner_depth: int = 2  # linguistic token refiner blocks per LLM (0 = none)
    refiner_causal: bool = False  # ablation only: keep the causal mask in the refiner
    collaborative: bool = True  # with several LLMs: collaborative refiner (False: plain concatenation)
    standardize: bool = True  # LI-DiT: per-channel standardisation of LLM features (statistics from the cache)
    cache_dtype: str = "float16"
    batch_size: int = 64  # encoding batch size when the cache is built


@dataclass(frozen=True)
class ModelConfig:
    kind: str = "lidit"  # "lidit", "unet" (a diffusers UNet2DConditionModel) or "unet_adapter" (LLMDiff)
    preset: str = "tiny"
    overrides: dict = field(default_factory=dict)  # preset fields to change, e.g. {depth: 6}
    base: str | None = None  # unet_adapter: the frozen base model folder
    autoencoder: str | None = None  # latent diffusion: a trained autoencoder folder (None: pixel space)
    init: str | None = None  # start from this trained model folder's weights (same architecture): fine-tuning


REPORTERS = ("none", "tensorboard", "wandb")  # accelerate's trackers we support


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 3000
    batch_size: int = 64
    lr: float = 3e-4
    weight_decay: float = 0.0
    adam_beta2: float = 0.999  # AdamW's second-moment decay (0.95 reacts faster to changing gradient scales)
    warmup: int = 200
    schedule: str = "cosine"  # "cosine" or "constant" after warmup
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    caption_dropout: float = 0.1  # for classifier-free guidance
    objective: str = "flow"  # "flow" (rectified flow, v-prediction) or "eps" (DDPM epsilon-prediction)
    flow_shift: float = 1.0  # flow: time shift k of the training noise levels (SD3); k > 1 trains more at high noise
    checkpoint_every: int = 500
    sample_every: int = 1000
    log_every: int = 25
    keep_checkpoints: int = 2
    seed: int = 0
    threads: int = 0  # torch threads (0: leave as is)
    report_to: str = "none"  # "none", "tensorboard" (RUN/logs) or "wandb": loss, lr, grad norm, images/s, samples
    # the sample grid's prompts: a list, or a suite name (8 of its prompts, every task); empty: a fixed set of 8
    validation_prompts: str | tuple[str, ...] = ()

    def __post_init__(self):
        if not 0.0 <= self.adam_beta2 < 1.0:
            raise LLMDiffError(f"train.adam_beta2 must be in [0, 1), got {self.adam_beta2}")
        if self.report_to not in REPORTERS:
            raise LLMDiffError(f"train.report_to must be one of {', '.join(REPORTERS)}, got {self.report_to!r}")


@dataclass(frozen=True)
class SampleConfig:
    steps: int = 25
    guidance_scale: float = 2.0
    scheduler: str = "default"  # default for the objective, or flow_euler / dpm_solver / ddim


@dataclass(frozen=True)
class EvalConfig:
    suites: tuple[str, ...] = ("geneval",)
    images_per_prompt: int = 4
    seed: int = 0


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = "experiment"
    data: DataConfig = DataConfig()
    text: TextConfig = TextConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    sample: SampleConfig = SampleConfig()
    eval: EvalConfig = EvalConfig()


# --- building configs from plain data -------------------------------------------------------------

def _is_dataclass_type(tp) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _convert(tp, value, where: str):
    """Check and convert a YAML value to the annotated type."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for opt in options:
            if opt is type(None):
                continue
            try:
                return _convert(opt, value, where)
            except LLMDiffError as e:
                errors.append(str(e))
        raise LLMDiffError(errors[0] if errors else f"{where}: bad value {value!r}")
    if _is_dataclass_type(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise LLMDiffError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, f"{where}." if where else "")
    if origin is tuple:
        (item, *rest) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            value = [value]
        return tuple(_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise LLMDiffError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp in (int, str, bool) and isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
        return value
    if tp is typing.Any:
        return value
    if origin is None and tp in (int, str, bool, float):
        raise LLMDiffError(f"{where}: expected {tp.__name__}, got {value!r}")
    if isinstance(value, (list, tuple)) and origin is list:
        return list(value)
    return value


def from_dict(cls, data: dict, where: str = ""):
    """Build a (nested) config dataclass from a mapping; unknown keys are errors."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise LLMDiffError(f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(sorted(f'{where}{k}' for k in unknown))}"
                           f"; known keys{' under ' + where.rstrip('.') if where else ''}: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {k: _convert(hints[k], v, f"{where}{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise LLMDiffError(f"{where or cls.__name__}: {e}") from None


def to_dict(cfg) -> dict:
    """Plain data (lists, dicts, scalars) for YAML/JSON."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg


def _set_dotted(data: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    node = data
    for k in keys[:-1]:
        if isinstance(node, list):
            node = node[int(k)]
            continue
        node = node.setdefault(k, {})
    if isinstance(node, list):
        node[int(keys[-1])] = value
    else:
        node[keys[-1]] = value


def parse_overrides(items: list[str]) -> list[tuple[str, object]]:
    """['train.steps=100', '--model.preset=small'] -> [('train.steps', 100), ('model.preset', 'small')]."""
    out = []
    for item in items:
        item = item.removeprefix("--")
        if "=" not in item:
            raise LLMDiffError(f"override {item!r} must look like key.sub=value (e.g. train.steps=200)")
        key, text = item.split("=", 1)
        out.append((key, yaml.safe_load(text) if text else ""))
    return out


# Config fields that name files or folders: relative values in a config file mean relative to that file's folder.
PATH_FIELDS = (("data", "path"), ("model", "base"), ("model", "autoencoder"), ("model", "init"))


def _resolve_paths(data: dict, folder: Path) -> None:
    """Make the relative paths of a config file's data absolute against the file's folder (in place). An
    encoder's ``model`` is a name or a path: it is taken as a path when that path exists."""
    for section, key in PATH_FIELDS:
        value = data[section].get(key) if isinstance(data.get(section), dict) else None
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            data[section][key] = str((folder / Path(value).expanduser()).resolve())
    text = data.get("text") if isinstance(data.get("text"), dict) else {}
    for enc in text.get("encoders") or []:
        model = enc.get("model") if isinstance(enc, dict) else None
        if isinstance(model, str) and not Path(model).is_absolute() and (folder / model).exists():
            enc["model"] = str((folder / model).resolve())


def load_config(path: Path | str | None = None, overrides: list[str] = (), cls=ExperimentConfig):
    """A config from a YAML file (or the defaults) with dotted overrides applied. Relative paths in the file
    are relative to the file's folder; in the overrides, relative to the working directory."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise LLMDiffError(f"no config file {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise LLMDiffError(f"{path}: not valid YAML ({e})") from None
        if not isinstance(data, dict):
            raise LLMDiffError(f"{path}: the top level must be a mapping")
        if cls is ExperimentConfig:
            _resolve_paths(data, path.resolve().parent)
    data = to_dict(from_dict(cls, data)) if data else to_dict(cls())
    for key, value in parse_overrides(list(overrides)):
        _set_dotted(data, key, value)
    if cls is ExperimentConfig:  # what is left relative came from the command line; saved configs hold absolute paths
        _resolve_paths(data, Path.cwd())
    return from_dict(cls, data)


def save_config(cfg, path: Path | str) -> None:
    from .utils import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
