"""Typed experiment configuration: frozen dataclasses, YAML files, dotted command-line overrides.

    llmdiff train configs/shapes-lidit.yaml train.steps=2000 model.depth=6

Unknown keys are errors (with the known ones listed), values are checked against the field
types, and every run writes the resolved configuration next to its checkpoints.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import reprlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .encoders.base import EncoderConfig
from .errors import LLMDiffError, LLMDiffTypeError
from .shapes import P_COLOR
from .utils import read_text


def check_range(where: str, value, lo=None, hi=None, lo_open: bool = False) -> None:
    """A number within [lo, hi] (or (lo, hi] with lo_open), finite; else a one-line error naming the key."""
    if isinstance(value, float) and not math.isfinite(value):
        raise LLMDiffError(f"{where} must be a finite number, got {value}")
    low_ok = lo is None or (value > lo if lo_open else value >= lo)
    if not low_ok or (hi is not None and value > hi):
        span = f"{'(' if lo_open else '['}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
        raise LLMDiffError(f"{where} must be in {span}, got {value}")


def check_choice(where: str, value, known) -> None:
    if value not in known:
        raise LLMDiffError(f"{where} must be one of {', '.join(map(str, known))}, got {value!r}")


MAX_STEPS = 10_000_000  # training steps; anything larger is a typo, not a plan
MAX_RESOLUTION = 1024

# Sampling values, as every boundary accepts them: the CLI's --steps / --guidance-scale, experiment configs, a model
# folder's sample_config, PNG metadata and the pipeline's arguments all check them here.
SAMPLE_STEPS = (1, 1000)  # at most the schedulers' 1000 training timesteps
GUIDANCE_SCALE = (0.0, 100.0)  # 1 is no guidance; far past 100 every pixel saturates, so a larger value is a typo


def check_steps(where: str, value) -> None:
    """A whole number of sampling steps in SAMPLE_STEPS; True, 2.5 and "5" are refused, not rounded."""
    _check_number(where, value, *SAMPLE_STEPS, whole=True)


def check_guidance_scale(where: str, value) -> None:
    """A finite guidance scale in GUIDANCE_SCALE."""
    _check_number(where, value, *GUIDANCE_SCALE, whole=False)


def check_sampling(where: str, steps, guidance_scale, scheduler) -> None:
    """SampleConfig's three values; `where` prefixes the keys ("sample" -> "sample.steps must be ...")."""
    from .diffusion import SCHEDULERS

    check_steps(f"{where}.steps", steps)
    check_guidance_scale(f"{where}.guidance_scale", guidance_scale)
    check_choice(f"{where}.scheduler", scheduler, SCHEDULERS)


def _check_number(where: str, value, lo, hi, whole: bool) -> None:
    kind = "a whole number" if whole else "a finite number"
    if not isinstance(value, numbers.Integral if whole else numbers.Real) or isinstance(value, bool):
        raise LLMDiffTypeError(f"{where} must be {kind} in [{lo}, {hi}], got {reprlib.repr(value)}")
    if not lo <= value <= hi:  # NaN fails too
        raise LLMDiffError(f"{where} must be {kind} in [{lo}, {hi}], got {reprlib.repr(value)}")


@dataclass(frozen=True)
class DataConfig:
    world: str = "shapes"  # "shapes" (rendered on the fly) or "folder" (your images + captions)
    path: str | None = None  # world "folder": DIR with metadata.jsonl lines {"file_name": ..., "text": ...}
    resolution: int = 32
    n_scenes: int = 6000  # scene specifications drawn for the finite caption set
    captions_per_scene: int = 2
    mix: dict | None = None  # weights of single/pair/relation/count/listing scenes (None: the default mix)
    # training captions' words and frames: "train", "train-rich" (more synonyms and frames), "train-colour-after"
    # (half of the colours named after their noun), "train-colour-after-subject-first" (and every relation said
    # subject first), "train-varied" (train-colour-after with preambles and closing clauses of 0-14 words) or
    # "train-any-length" (train-colour-after padded with filler clauses to a drawn length of 3-40 words)
    phrasebook: str = "train"
    p_color: float = P_COLOR  # how often an object is named with its colour (single, pair, relation, count scenes)
    seed: int = 0
    skip_bad: bool = False  # world "folder": train on the good rows when some images are unreadable (else refuse)

    def __post_init__(self):
        check_choice("data.world", self.world, ("shapes", "folder"))
        if self.world == "folder" and not self.path:
            raise LLMDiffError("data.world=folder needs data.path=DIR (a folder with metadata.jsonl)")
        check_range("data.resolution", self.resolution, 8, MAX_RESOLUTION)
        check_range("data.n_scenes", self.n_scenes, 1, 10_000_000)
        check_range("data.captions_per_scene", self.captions_per_scene, 1, 100)
        check_range("data.p_color", self.p_color, 0.0, 1.0)
        check_range("data.seed", self.seed, 0, 2**63 - 1)
        for task, weight in (self.mix or {}).items():
            if not isinstance(weight, (int, float)) or isinstance(weight, bool):
                raise LLMDiffError(f"data.mix.{task} must be a number, got {weight!r}")
            check_range(f"data.mix.{task}", weight, 0)
        from .shapes.captions import TRAINING_PHRASEBOOKS

        check_choice("data.phrasebook", self.phrasebook, tuple(TRAINING_PHRASEBOOKS))


@dataclass(frozen=True)
class TextConfig:
    """How cached LLM features become the tokens the denoiser attends to."""

    encoders: tuple[EncoderConfig, ...] = (EncoderConfig(),)
    connector: str = "single"  # "single" layer, learnable "layer_mix", or LLMDiff "blockwise"
    blockwise_noise: bool = True  # connector blockwise: LLMDiff's training noise term (false: the ablation without)
    refiner_depth: int = 2  # linguistic token refiner blocks per LLM (0 = none)
    refiner_causal: bool = False  # ablation only: keep the causal mask in the refiner
    refiner_gates: bool = True  # adaLN gates on the refiner's residual branches (false: the ablation without)
    refiner_rope: bool = False  # rotary positions in the refiner's self-attention: word order it can see
    collaborative: bool = True  # with several LLMs: collaborative refiner (False: plain concatenation)
    standardize: bool = True  # LI-DiT: per-channel standardisation of LLM features (statistics from the cache)
    cache_dtype: str = "float16"
    batch_size: int = 64  # encoding batch size when the cache is built

    def __post_init__(self):
        from .encoders.cache import DTYPES

        if not self.encoders:
            raise LLMDiffError("text.encoders needs at least one encoder")
        check_choice("text.connector", self.connector, ("single", "layer_mix", "blockwise"))
        check_range("text.refiner_depth", self.refiner_depth, 0, 64)
        if not self.blockwise_noise and self.connector != "blockwise":
            raise LLMDiffError("text.blockwise_noise=false is for text.connector=blockwise (LLMDiff's encoding); "
                               "remove it or set the connector")
        check_choice("text.cache_dtype", self.cache_dtype, tuple(DTYPES))
        check_range("text.batch_size", self.batch_size, 1, 65536)


@dataclass(frozen=True)
class ModelConfig:
    kind: str = "lidit"  # one of denoisers.DENOISERS: "lidit", "unet" or "unet_adapter" (LLMDiff)
    preset: str = "tiny"
    overrides: dict = field(default_factory=dict)  # preset fields to change, e.g. {depth: 6}
    base: str | None = None  # unet_adapter: the frozen base model folder
    autoencoder: str | None = None  # latent diffusion: a trained autoencoder folder (None: pixel space)
    init: str | None = None  # start from this trained model folder's weights (same architecture): fine-tuning

    def __post_init__(self):
        from .denoisers import KINDS, kind_presets

        check_choice("model.kind", self.kind, KINDS)
        presets = kind_presets(self.kind)
        if presets:  # (the adapter takes its base's layout: unused_settings refuses a preset there)
            check_choice("model.preset", self.preset, tuple(presets))
        if self.kind == "unet_adapter" and not self.base:
            raise LLMDiffError("model.kind=unet_adapter needs model.base=FOLDER (the frozen U-Net to adapt)")


REPORTERS = ("none", "tensorboard", "wandb")  # accelerate's trackers we support
MIXED_PRECISION = ("fp32", "bf16", "fp16")  # train.mixed_precision


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 3000
    batch_size: int = 64  # images per process and optimiser step
    lr: float = 3e-4
    weight_decay: float = 0.0
    adam_beta2: float = 0.999  # AdamW's second-moment decay (0.95 reacts faster to changing gradient scales)
    warmup: int = 200
    schedule: str = "cosine"  # "cosine" or "constant" after warmup
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    caption_dropout: float = 0.1  # for classifier-free guidance
    objective: str = "flow"  # "flow" (rectified flow, v-prediction) or "eps" (DDPM epsilon-prediction)
    # flow: time shift k of the training noise levels (SD3); k > 1 trains more at high noise. The same as
    # logit-normal sampling with mean log k, so there is no separate logit-normal mean setting
    flow_shift: float = 1.0
    checkpoint_every: int = 500
    sample_every: int = 1000
    log_every: int = 25
    keep_checkpoints: int = 2
    seed: int = 0
    threads: int = 0  # torch threads (0: leave as is)
    report_to: str = "none"  # "none", "tensorboard" (RUN/logs) or "wandb": loss, lr, grad norm, images/s, samples
    # "fp32", "bf16" (autocast through accelerate's mixed_precision, on CPUs with AVX-512 BF16 or AMX and on GPUs;
    # weights, optimiser and EMA stay fp32) or "fp16" (GPUs only). Not accelerate's "no": YAML reads that as false
    mixed_precision: str = "fp32"
    # each step's batch split into this many equal micro-batches, one forward and backward each, for a batch that
    # does not fit in memory at once: the same data, noise and (to float rounding) updates as one pass
    gradient_accumulation_steps: int = 1
    # recompute the denoiser's blocks in the backward pass instead of keeping their activations: less memory for one
    # more forward pass of those blocks, the same gradients
    gradient_checkpointing: bool = False
    # the sample grid's prompts: a list, or a suite name (8 of its prompts, every task); empty: a fixed set of 8
    validation_prompts: str | tuple[str, ...] = ()

    def __post_init__(self):
        from .diffusion import OBJECTIVES

        check_range("train.steps", self.steps, 1, MAX_STEPS)
        check_range("train.batch_size", self.batch_size, 1, 65536)
        check_range("train.lr", self.lr, 0.0, 1.0, lo_open=True)
        check_range("train.weight_decay", self.weight_decay, 0.0, 10.0)
        if not 0.0 <= self.adam_beta2 < 1.0:
            raise LLMDiffError(f"train.adam_beta2 must be in [0, 1), got {self.adam_beta2}")
        check_range("train.warmup", self.warmup, 0, MAX_STEPS)
        check_choice("train.schedule", self.schedule, ("cosine", "constant"))
        check_range("train.grad_clip", self.grad_clip, 0.0, None, lo_open=True)
        check_range("train.ema_decay", self.ema_decay, 0.0, 1.0)
        check_range("train.caption_dropout", self.caption_dropout, 0.0, 1.0)
        check_choice("train.objective", self.objective, OBJECTIVES)
        check_range("train.flow_shift", self.flow_shift, 0.0, 100.0, lo_open=True)
        check_range("train.checkpoint_every", self.checkpoint_every, 1, MAX_STEPS)
        check_range("train.sample_every", self.sample_every, 0, MAX_STEPS)
        check_range("train.log_every", self.log_every, 1, MAX_STEPS)
        check_range("train.keep_checkpoints", self.keep_checkpoints, 1, 1000)
        check_range("train.seed", self.seed, 0, 2**63 - 1)
        check_range("train.threads", self.threads, 0, 4096)
        check_choice("train.report_to", self.report_to, REPORTERS)
        check_choice("train.mixed_precision", self.mixed_precision, MIXED_PRECISION)
        check_range("train.gradient_accumulation_steps", self.gradient_accumulation_steps, 1, 65536)
        if self.batch_size % self.gradient_accumulation_steps:
            raise LLMDiffError(f"train.batch_size {self.batch_size} is not divisible by "
                               f"train.gradient_accumulation_steps {self.gradient_accumulation_steps}: set a batch_size "
                               "that splits into equal micro-batches")


@dataclass(frozen=True)
class SampleConfig:
    steps: int = 25
    guidance_scale: float = 2.0
    scheduler: str = "default"  # default for the objective, or flow_euler / dpm_solver / ddim

    def __post_init__(self):
        check_sampling("sample", self.steps, self.guidance_scale, self.scheduler)


@dataclass(frozen=True)
class EvalConfig:
    suites: tuple[str, ...] = ("geneval",)
    images_per_prompt: int = 4
    seed: int = 0

    def __post_init__(self):
        if not self.suites:
            raise LLMDiffError("eval.suites needs at least one suite")
        check_range("eval.images_per_prompt", self.images_per_prompt, 1, 1000)
        check_range("eval.seed", self.seed, 0, 2**63 - 1)


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = "experiment"
    # factories: the sections' checks import the model and sampler registries, which import this module
    data: DataConfig = field(default_factory=DataConfig)
    text: TextConfig = field(default_factory=TextConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self):
        unused = unused_settings(self)
        if unused:
            raise LLMDiffError(f"model.kind={self.model.kind} does not use {'; '.join(unused)}")


def unused_settings(cfg: ExperimentConfig) -> list[str]:
    """Settings the model kind would silently drop, each with what to write instead.

    A U-Net reads one encoder's features as they are (no connector, refiner or standardisation); the adapter
    reads them through its connector, around the frozen base U-Net that `model.base` names.
    """
    kind, text, out = cfg.model.kind, cfg.text, []
    if kind != "lidit":
        if text.refiner_depth:
            out.append(f"text.refiner_depth={text.refiner_depth} (the refiner is LI-DiT's; set text.refiner_depth: 0)")
        if text.refiner_causal:
            out.append("text.refiner_causal=true (set it false)")
        if not text.refiner_gates:
            out.append("text.refiner_gates=false (set it true)")
        if text.refiner_rope:
            out.append("text.refiner_rope=true (set it false)")
        if not text.blockwise_noise:
            out.append("text.blockwise_noise=false (LI-DiT's blockwise connector only; set it true)")
        if text.standardize:
            out.append("text.standardize=true (LI-DiT's feature standardisation; set text.standardize: false)")
        if len(text.encoders) > 1:
            out.append(f"{len(text.encoders)} encoders (it reads one; list one under text.encoders)")
    if kind == "unet" and text.connector != "single":
        out.append(f"text.connector={text.connector} (it reads the encoder's features as they are; set single)")
    if kind == "unet_adapter":  # (ModelConfig already requires its model.base)
        if cfg.model.preset != ModelConfig.preset or cfg.model.overrides:
            out.append("model.preset / model.overrides (the base U-Net's layout is used; remove them)")
    elif cfg.model.base:
        out.append(f"model.base={cfg.model.base} (only model.kind=unet_adapter has a frozen base; remove it)")
    return out


# --- building configs from plain data -------------------------------------------------------------

def _is_dataclass_type(tp) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _finite(value: float, where: str) -> float:
    if not math.isfinite(value):
        raise LLMDiffError(f"{where}: expected a finite number, got {value}")
    return value


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
        for k, v in value.items():
            if isinstance(v, float):
                _finite(v, f"{where}.{k}")
        return dict(value)
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return _finite(float(value), where)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
        try:
            number = float(value)
        except ValueError:
            number = None
        if number is not None:
            return _finite(number, where)
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
    if not all(keys):
        raise LLMDiffError(f"override {dotted!r}: a key is empty; write it like train.steps=200")
    node = data
    for depth, k in enumerate(keys):
        here = ".".join(keys[:depth + 1])
        if isinstance(node, list):
            if not (k.lstrip("-").isdigit() and -len(node) <= int(k) < len(node)):
                raise LLMDiffError(f"override {dotted}: {here} must be an index below {len(node)}")
            k = int(k)
        elif not isinstance(node, dict) or not k:
            raise LLMDiffError(f"override {dotted}: {'.'.join(keys[:depth])} is a value, not a section")
        if depth == len(keys) - 1:
            node[k] = value
        else:
            node = node.setdefault(k, {}) if isinstance(node, dict) else node[k]


def parse_overrides(items: list[str]) -> list[tuple[str, object]]:
    """['train.steps=100', '--model.preset=small'] -> [('train.steps', 100), ('model.preset', 'small')]."""
    out = []
    for item in items:
        item = item.removeprefix("--")
        if "=" not in item:
            raise LLMDiffError(f"override {item!r} must look like key.sub=value (e.g. train.steps=200)")
        key, text = item.split("=", 1)
        try:
            out.append((key, yaml.safe_load(text) if text else ""))
        except yaml.YAMLError as e:
            raise LLMDiffError(f"override {item!r}: the value is not valid YAML ({getattr(e, 'problem', e)})") from None
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
    encoders = text.get("encoders")
    for enc in encoders if isinstance(encoders, list) else []:  # anything else is refused when the config is built
        model = enc.get("model") if isinstance(enc, dict) else None
        if isinstance(model, str) and not Path(model).is_absolute() and (folder / model).exists():
            enc["model"] = str((folder / model).resolve())


def read_yaml_mapping(path: Path, what: str) -> dict:
    """The mapping a YAML file holds (empty file: {}), or a one-line error naming the file."""
    if not path.is_file():
        raise LLMDiffError(f"no {what} {path}")
    try:
        data = yaml.safe_load(read_text(path)) or {}
    except yaml.YAMLError as e:
        raise LLMDiffError(f"{path}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
    if not isinstance(data, dict):
        raise LLMDiffError(f"{path}: the top level must be a mapping")
    return data


def load_config(path: Path | str | None = None, overrides: list[str] = (), cls=ExperimentConfig):
    """A config from a YAML file (or the defaults) with dotted overrides applied. Relative paths in the file
    are relative to the file's folder; in the overrides, relative to the working directory."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        data = read_yaml_mapping(path, "config file")
        if cls is ExperimentConfig:
            _resolve_paths(data, path.resolve().parent)
    data = to_dict(from_dict(cls, data)) if data else to_dict(cls())
    for key, value in parse_overrides(list(overrides)):
        _set_dotted(data, key, value)
    if cls is ExperimentConfig:  # what is left relative came from the command line; saved configs hold absolute paths
        _resolve_paths(data, Path.cwd())
    return from_dict(cls, data)


def yaml_text(cfg) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
