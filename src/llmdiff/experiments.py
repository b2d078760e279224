"""``llmdiff experiment``: train variants of one base config with the same budget and compare them.

An experiment file names a base config, a step budget, seeds, suites, and variants (dotted
overrides of the base). Every (variant, seed) trains in ``runs/experiments/NAME/VARIANT/sSEED``
and is evaluated on the same prompts with the same sampling seeds; results go to
``docs/results/NAME/`` as ``results.json``, ``results.md`` and plots. Finished variants are
skipped when the command is run again, so a long experiment can be stopped and resumed; each result records
the settings it was made with, and a variant whose settings have changed since is trained and scored again.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import PATH_FIELDS, from_dict, load_config, read_yaml_mapping, to_dict
from .errors import LLMDiffError
from .evaluation.stats import bar_intervals, paired_differences, paired_table, read_per_prompt
from .integrity import child_folder
from .utils import atomic_write_text


@dataclass(frozen=True)
class ExperimentSpec:
    name: str
    base: str  # the base experiment config (YAML)
    variants: dict  # variant name -> {dotted.key: value}
    overrides: dict = field(default_factory=dict)  # {dotted.key: value} for every variant (the budget's own settings)
    steps: int = 1500
    seeds: tuple[int, ...] = (0,)
    seeded_variants: tuple[str, ...] = ()  # variants trained with every seed (the key comparisons); others: seeds[0]
    suites: tuple[str, ...] = ("geneval", "position_bias", "paraphrase")
    images_per_prompt: int = 2
    threads: int = 0
    description: str = ""
    notes: dict = field(default_factory=dict)  # variant -> one-line explanation for the table
    reuse: str | None = None  # another experiment whose runs and results of the same variant names are reused
    baseline: str | None = None  # the variant every other is compared with, prompt by prompt (default: the first)


def load_spec(path: Path | str) -> ExperimentSpec:
    """An experiment file, checked: variants and seeds to run, seeded variants among the variants, and a `reuse`
    experiment that exists (its file beside this one)."""
    path = Path(path)
    spec = from_dict(ExperimentSpec, read_yaml_mapping(path, "experiment file"))
    if not spec.variants:
        raise LLMDiffError(f"{path}: variants is empty; name at least one (one of no overrides: {{name: {{}}}})")
    bad = [name for name, v in spec.variants.items() if not isinstance(v, dict)]
    if bad:
        raise LLMDiffError(f"{path}: variant {bad[0]} must map dotted keys to values, got {spec.variants[bad[0]]!r}")
    if not spec.seeds:
        raise LLMDiffError(f"{path}: seeds is empty; give at least one, e.g. seeds: [0]")
    unknown = [v for v in spec.seeded_variants if v not in spec.variants]
    if unknown:
        raise LLMDiffError(f"{path}: seeded_variants names {', '.join(unknown)}, not among the variants "
                           f"({', '.join(spec.variants)})")
    if spec.reuse is not None:
        other = child_folder(path.parent, spec.reuse, f"{path}: reuse").with_name(f"{spec.reuse}.yaml")
        if not other.is_file():
            raise LLMDiffError(f"{path}: reuse names the experiment {spec.reuse!r}, but there is no {other}")
    return spec


# Each suite's headline metric: the report's table columns, in this order, and one bar plot each.
SUITE_METRICS = ("geneval/overall", "paraphrase/overall", "compbench/overall", "dense/overall", "lexical/overall",
                 "frames/overall", "position_bias/mean_pair_accuracy")
MODEL_KEY = "_model"  # a variant that evaluates an existing model folder (for every seed, or {seed: folder})


def variant_config(spec: ExperimentSpec, variant: str, seed: int):
    # ``steps`` is every variant's budget; a variant may set its own train.steps (e.g. a reference trained for
    # the same wall-clock time), and the report's steps column shows it.
    settings = {"train.steps": spec.steps, **spec.overrides, **spec.variants[variant]}
    overrides = [f"{k}={json.dumps(v)}" for k, v in settings.items() if k != MODEL_KEY]
    # The seed changes initialisation, data order and noise; the caption set (and its cache) stays the same.
    overrides += [f"name={spec.name}-{variant}", f"train.seed={seed}", "train.sample_every=0"]
    if spec.threads:
        overrides.append(f"train.threads={spec.threads}")
    return load_config(spec.base, overrides)


# Settings that name or pace a run without changing its numbers: left out of the settings a result records.
# (Gradient checkpointing recomputes the same arithmetic: bit for bit the same gradients on a CPU.)
BOOKKEEPING = ("name", "train.threads", "train.report_to", "train.log_every", "train.checkpoint_every",
               "train.keep_checkpoints", "train.sample_every", "train.gradient_checkpointing")


def _flat(config: dict) -> dict:
    """A config mapping as {dotted.key: value}: one key per field of each section and of each text encoder (their
    number under text.encoders); a mapping a field holds (model.overrides, data.mix) stays one value."""
    out = {}
    for section, fields in config.items():
        if not isinstance(fields, dict):
            out[section] = fields
            continue
        for key, value in fields.items():
            if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
                out[f"{section}.{key}"] = len(value)
                for i, item in enumerate(value):
                    out.update({f"{section}.{key}.{i}.{k}": v for k, v in item.items()})
            else:
                out[f"{section}.{key}"] = value
    return out


def _portable(value):
    """A path inside an llmdiff checkout relative to it (the working directory the experiment runs from, else the
    checkout the path lies in), so that the same settings read the same from another copy of the checkout: a run
    recorded from one copy is resumed, not started anew, from another."""
    if isinstance(value, str) and value.startswith("/"):
        path = Path(value)
        for root in (Path.cwd(), *(p for p in path.parents if _is_llmdiff_checkout(p))):
            if path.is_relative_to(root):
                return path.relative_to(root).as_posix()
    return value


def _is_llmdiff_checkout(folder: Path) -> bool:
    try:
        return 'name = "llmdiff"' in (folder / "pyproject.toml").read_text()
    except OSError:
        return False


def config_settings(config: dict) -> dict:
    """The settings of a run's config (a to_dict mapping) that decide its numbers, as {dotted.key: value}."""
    paths = {f"{section}.{key}" for section, key in PATH_FIELDS}
    flat = {k: _portable(v) if k in paths or k.startswith("text.encoders.") and k.endswith(".model") else v
            for k, v in _flat(config).items() if k not in BOOKKEEPING}
    return json.loads(json.dumps(flat))  # as a result file holds them (lists, not tuples)


def variant_settings(spec: ExperimentSpec, variant: str, seed: int) -> dict:
    """What decides one (variant, seed)'s numbers: its resolved config (or the model folder it scores as is),
    the suites and images per prompt; recorded in its result and compared when the experiment runs again."""
    shipped = _existing_model(spec, variant, seed)
    config = {"model_folder": _portable(str(Path(shipped).resolve()))} if shipped else \
        config_settings(to_dict(variant_config(spec, variant, seed)))
    return {**config, "experiment.suites": list(spec.suites), "experiment.images_per_prompt": spec.images_per_prompt}


def changed_settings(recorded: dict, current: dict) -> list[str]:
    """The settings whose values differ. A key only one side has is left out: it is a setting added to (or
    removed from) llmdiff since, which keeps its earlier behaviour at its default."""
    return sorted(k for k in recorded.keys() & current.keys() if recorded[k] != current[k])


def _is_current(result: Path, settings: dict) -> bool:
    """Whether a recorded result was made with these settings; a result recorded before results carried their
    settings is taken as current (its run is not repeated)."""
    recorded = json.loads(result.read_text()).get("settings")
    return recorded is None or not changed_settings(recorded, settings)


def check_names(spec: ExperimentSpec, runs: Path, results: Path) -> None:
    """The experiment's, the reused experiment's and every variant's name each name one folder (they become
    folders under runs/ and results/)."""
    for parent in (runs, results):
        child_folder(parent, spec.name, "experiment name")
        if spec.reuse is not None:
            child_folder(parent, spec.reuse, "reuse")
    for variant in spec.variants:
        child_folder(runs / spec.name, variant, "variant name")


def run_experiment(spec: ExperimentSpec, variants: list[str] | None = None, runs: Path = Path("runs/experiments"),
                   results: Path = Path("docs/results"), progress: bool = True,
                   seeds: list[int] | None = None, jobs: int = 1) -> dict:
    """Train and evaluate every (variant, seed) not done yet, ``jobs`` at a time (one process each), then write
    the report."""
    names = variants or list(spec.variants)
    unknown = set(names) - set(spec.variants)
    if unknown:
        raise LLMDiffError(f"unknown variant(s) {', '.join(sorted(unknown))}; known: {', '.join(spec.variants)}")
    stray = sorted(set(seeds or ()) - set(spec.seeds))
    if stray:
        raise LLMDiffError(f"seed(s) {stray} are not in the experiment's seeds {list(spec.seeds)}")
    if jobs < 1:
        raise LLMDiffError(f"jobs must be at least 1, got {jobs}")
    check_names(spec, runs, results)
    out = child_folder(results, spec.name, "experiment name")
    out.mkdir(parents=True, exist_ok=True)
    pending = []
    for variant in names:
        variant_seeds = spec.seeds if variant in spec.seeded_variants else spec.seeds[:1]
        for seed in (s for s in variant_seeds if seeds is None or s in seeds):
            done = out / "variants" / f"{variant}-s{seed}.json"
            shared = results / spec.reuse / "variants" / done.name if spec.reuse else None
            settings = variant_settings(spec, variant, seed)
            if done.is_file() and _is_current(done, settings):
                continue
            if shared is not None and shared.is_file() and _is_current(shared, settings):  # the other experiment ran it
                atomic_write_text(done, shared.read_text())
                continue
            pending.append((variant, seed))
    if jobs == 1 or len(pending) < 2:
        for variant, seed in pending:
            _run_one(spec, variant, seed, runs, out, progress)
        return write_report(spec, out)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm.auto import tqdm

    _encode_captions(spec, pending, runs)
    threads = spec.threads or max(1, (os.cpu_count() or 1) // jobs)
    with ProcessPoolExecutor(min(jobs, len(pending)), mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init_worker, initargs=(threads, os.getpid())) as pool:
        futures = [pool.submit(_run_one, spec, variant, seed, runs, out, False) for variant, seed in pending]
        # every run finishes (or fails) before the first error is raised
        errors = [f.exception() for f in tqdm(as_completed(futures), total=len(futures), desc=f"{spec.name}: runs",
                                              unit="run", disable=not progress)]
    for error in errors:
        if error is not None:
            raise error
    return write_report(spec, out)


def _encode_captions(spec: ExperimentSpec, pending: list[tuple[str, int]], runs: Path) -> None:
    """Build the feature caches that the pending runs will train on, here, with every core: in the workers (a
    few threads each) the first run to need a cache would encode it alone while the runs that share it wait.
    A config that fails here is left to its run, which reports the error after the other runs finish."""
    from .training.data import training_data

    seen = set()
    for variant, seed in pending:
        if _existing_model(spec, variant, seed):
            continue
        cfg = variant_config(spec, variant, seed)
        run_dir = _run_folder(runs / (spec.reuse or spec.name) / variant, seed, cfg)
        if (run_dir / "model" / "model_index.json").is_file():
            continue  # trained already: only its evaluation is pending
        settings = to_dict(cfg)
        key = json.dumps([settings["data"], settings["text"]["encoders"], settings["text"]["cache_dtype"]],
                         sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        try:
            training_data(cfg)
        except LLMDiffError:
            continue


def _existing_model(spec: ExperimentSpec, variant: str, seed: int) -> str | None:
    """The model folder a variant evaluates as is for this seed, if any (else it is trained)."""
    shipped = spec.variants[variant].get(MODEL_KEY)
    if isinstance(shipped, dict):  # {seed: folder}: the other seeds are trained from the variant's config
        shipped = shipped.get(seed)
    return shipped or None


def _init_worker(threads: int, parent: int) -> None:
    """A run's worker process: ``threads`` torch threads, and it exits as soon as ``parent`` does (a spawn
    worker would otherwise train on when its parent alone is stopped, e.g. ``kill PID``; its run resumes from
    the last checkpoint)."""
    import threading

    import torch

    torch.set_num_threads(threads)
    threading.Thread(target=_exit_with_parent, args=(parent,), name="exit-with-parent", daemon=True).start()


def _exit_with_parent(parent: int, every: float = 1.0) -> None:
    # The standard library has no portable parent-death signal (Linux's prctl only), so poll: an orphan is
    # adopted by another process and its parent id changes.
    while os.getppid() == parent:
        time.sleep(every)
    os._exit(1)


def _run_one(spec: ExperimentSpec, variant: str, seed: int, runs: Path, out: Path, progress: bool) -> None:
    """Train (or resume, or reuse) one variant with one seed, evaluate it, and record variants/VARIANT-sSEED.json."""
    from .evaluation.model_eval import evaluate_model
    from .training.checkpoint import list_checkpoints
    from .training.trainer import train

    done = out / "variants" / f"{variant}-s{seed}.json"
    cfg = variant_config(spec, variant, seed)
    run_dir = _run_folder(runs / (spec.reuse or spec.name) / variant, seed, cfg)
    t0 = time.perf_counter()
    shipped = _existing_model(spec, variant, seed)
    if shipped:
        model = Path(shipped)
    elif (run_dir / "model" / "model_index.json").is_file():
        model = run_dir / "model"
    else:  # a run killed before its first checkpoint starts again
        model = train(cfg, run_dir, resume=bool(list_checkpoints(run_dir / "checkpoints")), progress=progress)
    minutes = (time.perf_counter() - t0) / 60
    # the run's own eval folder: images of another model (a variant's _model changed) are replaced
    summaries = evaluate_model(model, run_dir / "eval", spec.suites, spec.images_per_prompt, seed=0,
                               progress=progress, overwrite=True)
    steps = cfg.train.steps
    if (model / "training.json").is_file():  # the model records how long it trained (over resumes too)
        info = json.loads((model / "training.json").read_text())
        steps, minutes = info.get("steps", steps), info.get("train_minutes", minutes)
    atomic_write_text(done, json.dumps({"variant": variant, "seed": seed, "steps": steps,
                                        "train_minutes": None if shipped else round(minutes, 1),
                                        "summaries": summaries,
                                        "per_prompt": read_per_prompt(run_dir / "eval", spec.suites),
                                        "settings": variant_settings(spec, variant, seed)}) + "\n")


def _run_folder(variant_runs: Path, seed: int, cfg) -> Path:
    """The run folder of one (variant, seed): sSEED, unless that holds a run of other settings (the variant
    before a change), which is kept; then sSEED-HASH, named by a hash of these settings."""
    import hashlib

    run_dir = variant_runs / f"s{seed}"
    saved = run_dir / "config.yaml"
    settings = config_settings(to_dict(cfg))
    if not saved.is_file() or not changed_settings(config_settings(read_yaml_mapping(saved, "run config")), settings):
        return run_dir
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    return variant_runs / f"s{seed}-{digest}"


def _collect(out: Path) -> dict[str, list[dict]]:
    by_variant: dict[str, list[dict]] = {}
    for f in sorted((out / "variants").glob("*.json")):
        r = json.loads(f.read_text())
        by_variant.setdefault(r["variant"], []).append(r)
    return by_variant


def _stat(values: list[float]) -> dict:
    return {"mean": float(np.mean(values)), "spread": float(np.max(values) - np.min(values)) if len(values) > 1 else None,
            "n": len(values), "values": values}


def _metrics(summary_by_suite: dict) -> dict[str, float]:
    """Flat metrics of one run: per-suite overall and tasks, and the positional-bias bins."""
    m = {}
    for suite, s in summary_by_suite.items():
        for bench, b in s["benchmarks"].items():
            if bench == "position_bias":
                continue
            m[f"{suite}/overall"] = b["overall"]
            for tag, t in b["tasks"].items():
                m[f"{suite}/{tag}"] = t["accuracy"]
            for tag, n in b.get("objects_per_image", {}).items():  # runs scored before it existed lack it
                m[f"objects/{suite}/{tag}"] = n
            outcomes = b.get("position_outcomes")
            if outcomes:  # how the images of prompts with a relation came out (llmdiff eval)
                for outcome, n in outcomes.items():
                    m[f"relations/{suite}/{outcome}"] = n
                on_axis = outcomes["right"] + outcomes["mirrored"]
                if on_axis:  # the relation's direction read, of the images with both objects on its axis
                    m[f"relations/{suite}/right side"] = outcomes["right"] / on_axis
        if "position_bias" in s:
            for k, a in enumerate(s["position_bias"]["pair_accuracy"]):
                if a is not None:
                    m[f"{suite}/bin{k}"] = a
            acc = [a for a in s["position_bias"]["pair_accuracy"] if a is not None]
            m[f"{suite}/mean_pair_accuracy"] = float(np.mean(acc))
    return m


def write_report(spec: ExperimentSpec, out: Path) -> dict:
    by_variant = _collect(out)
    table = {}
    for variant in spec.variants:
        runs = by_variant.get(variant, [])
        if not runs:
            continue
        metrics = [_metrics(r["summaries"]) for r in runs]
        shared = [k for k in metrics[0] if all(k in m for m in metrics)]  # runs scored before a metric existed lack it
        table[variant] = {k: _stat([m[k] for m in metrics]) for k in shared}
        table[variant]["_seeds"] = len(runs)
        trained = [r["train_minutes"] for r in runs if r["train_minutes"] is not None]  # None: an existing model
        table[variant]["_train_minutes"] = _stat(trained) if trained else None
        table[variant]["_steps"] = _stat([r.get("steps", spec.steps) for r in runs])
        table[variant]["_unrecorded_settings"] = sum("settings" not in r for r in runs)
    report = {"experiment": spec.name, "description": spec.description, "steps": spec.steps, "seeds": list(spec.seeds),
              "suites": list(spec.suites), "images_per_prompt": spec.images_per_prompt, "variants": table,
              "overrides": spec.variants}
    report["paired"] = paired_differences(by_variant, list(spec.variants), baseline_variant(spec), spec.suites)
    atomic_write_text(out / "results.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(out / "results.md", _markdown(spec, table, report["paired"]))
    _plots(spec, table, out, report["paired"])
    return report


def _fmt(s: dict | None, digits: int = 3) -> str:
    if s is None:
        return "-"
    return f"{s['mean']:.{digits}f}" + (f" ± {s['spread'] / 2:.{digits}f}" if s["spread"] is not None else "")


def _markdown(spec: ExperimentSpec, table: dict, paired: dict | None = None) -> str:
    trained = [v for v in spec.variants if MODEL_KEY not in spec.variants[v]]
    budget = "Existing models (steps in the table); "
    if trained:
        own = [v for v in trained if "train.steps" in spec.variants[v]]
        budget = (f"Every trained variant: {spec.steps} training steps"
                  + (f" ({', '.join(own)}: the steps in the table)" if own else "")
                  + f" from the same base config (`{spec.base}`); ")
    lines = [f"# {spec.name}", "", spec.description, "",
             budget + "evaluated on "
             f"{', '.join(spec.suites)} with {spec.images_per_prompt} images per prompt and the same sampling seeds. "
             "`a ± b`: mean over seeds ± half the range (n seeds in the last column).", ""]
    cols = [c for c in SUITE_METRICS if any(c in v for v in table.values())]
    lines += ["| variant | " + " | ".join(cols) + " | steps | train min | seeds |", "|---|" + "---:|" * (len(cols) + 3)]
    for variant, v in table.items():
        minutes = "-" if v["_train_minutes"] is None else f"{v['_train_minutes']['mean']:.0f}"
        lines.append(f"| {variant} | " + " | ".join(_fmt(v.get(c)) for c in cols)
                     + f" | {v['_steps']['mean']:.0f} | {minutes} | {v['_seeds']} |")
    lines += paired_table(paired, spec.suites) if paired else []
    tasks = sorted({k.split("/")[1] for v in table.values() for k in v if k.startswith("geneval/")} - {"overall"})
    if tasks:
        lines += ["", "GenEval tasks:", "", "| variant | " + " | ".join(tasks) + " |", "|---|" + "---:|" * len(tasks)]
        lines += [f"| {variant} | " + " | ".join(_fmt(v.get(f"geneval/{t}")) for t in tasks) + " |"
                  for variant, v in table.items()]
    if any("frames/overall" in v for v in table.values()):
        from .shapes.suites import SINGLE_FRAMES

        lines += ["", "One object in unseen frames, by the frame's length: the share of images holding that one object "
                  "and nothing else, and the objects detected per image:", "",
                  "| variant | " + " | ".join(SINGLE_FRAMES) + " | " + " | ".join(f"objects: {t}" for t in SINGLE_FRAMES)
                  + " |", "|---|" + "---:|" * 2 * len(SINGLE_FRAMES)]
        lines += [f"| {variant} | " + " | ".join(_fmt(v.get(f"frames/{t}")) for t in SINGLE_FRAMES) + " | "
                  + " | ".join(_fmt(v.get(f"objects/frames/{t}"), 2) for t in SINGLE_FRAMES) + " |"
                  for variant, v in table.items() if "frames/overall" in v]
    from .evaluation.scoring import POSITION_OUTCOMES

    cols = POSITION_OUTCOMES + ("right side",)
    for suite in spec.suites:
        rows = {variant: v for variant, v in table.items() if f"relations/{suite}/right" in v}
        if rows:
            lines += ["", f"Images of {suite}'s prompts with a relation (per run, mean over seeds), and the share "
                      "drawn on the right side of those with both objects on the relation's axis:", "",
                      "| variant | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
            cell = lambda v, c: _fmt(v.get(f"relations/{suite}/{c}"), 3 if c == "right side" else 1)  # noqa: E731
            lines += [f"| {variant} | " + " | ".join(cell(v, c) for c in cols) + " |" for variant, v in rows.items()]
    bins = [f"position_bias/bin{k}" for k in range(5)]
    if any(bins[0] in v for v in table.values()):
        lines += ["", "Positional bias (pair accuracy by relative position, first to last):", "",
                  "| variant | first | 2 | middle | 4 | last |", "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {variant} | " + " | ".join(_fmt(v.get(b)) for b in bins) + " |" for variant, v in table.items()]
    if spec.notes:
        lines += ["", "Variants:", ""] + [f"- **{k}**: {v}" for k, v in spec.notes.items()]
    unrecorded = {variant: v["_unrecorded_settings"] for variant, v in table.items() if v.get("_unrecorded_settings")}
    if unrecorded:
        lines += ["", "Results recorded before each result carried its settings, taken as made with this file's "
                  "settings (they predate the check that reruns a changed variant): "
                  + ", ".join(f"{variant} ({n} run{'s' if n > 1 else ''})" for variant, n in unrecorded.items()) + "."]
    return "\n".join(lines) + "\n"


def _plots(spec: ExperimentSpec, table: dict, out: Path, paired: dict | None = None) -> None:
    from .viz import metric_bars, position_bias_plot

    for metric in SUITE_METRICS:
        if not any(metric in v for v in table.values()):
            continue
        means = {n: v[metric]["mean"] if metric in v else 0 for n, v in table.items()}
        errors = {n: (v[metric]["spread"] or 0) / 2 if metric in v else 0 for n, v in table.items()}
        values = {n: v[metric]["values"] for n, v in table.items() if metric in v}
        metric_bars(means, errors, metric, out / f"{metric.replace('/', '_')}.png",
                    f"{spec.name}: {metric} ({spec.steps} steps)", values, _intervals(table, paired, metric),
                    paired["baseline"] if paired else None)
    bins = [f"position_bias/bin{k}" for k in range(5)]
    curves = {n: [v[b]["mean"] for b in bins] for n, v in table.items() if bins[0] in v}
    if curves:
        position_bias_plot(curves, out / "position_bias_curve.png")


# --- paired differences against the baseline ------------------------------------------------------


def baseline_variant(spec: ExperimentSpec) -> str:
    """The variant the others are compared with: ``baseline`` when the experiment names one, else the first."""
    baseline = spec.baseline or next(iter(spec.variants))
    if baseline not in spec.variants:
        raise LLMDiffError(f"baseline {baseline!r} is not a variant; variants: {', '.join(spec.variants)}")
    return baseline


def _intervals(table: dict, paired: dict | None, metric: str) -> dict[str, tuple[float, float]]:
    """For a suite's overall, each variant's paired interval placed at the baseline's mean (plots)."""
    suite, name = metric.split("/")
    base = table.get(paired["baseline"], {}).get(metric) if paired else None
    return bar_intervals(paired, suite, base["mean"]) if name == "overall" and base else {}
