"""Paired statistics over prompts: how much a variant differs from its baseline on a suite, with a 95 % interval.

Two models scored on the same prompts with the same sampling seeds are compared prompt by prompt. Each prompt's
score is the mean over its images (and over training seeds, when a variant was trained with several): the
fraction of images that pass, or for a dense prompt the mean per-question score. The suite's score is GenEval's
overall, the mean over tasks of each task's mean over prompts (a suite of one task: the mean over prompts, as
DPG-Bench reports). The interval is a two-level paired bootstrap. Each resample first draws each side's training
runs with replacement (one draw for the whole suite, as a run scores every prompt), so that a difference carried
by one lucky seed is not taken for an effect; then it draws prompts with replacement within each task (every
resample keeps each task's number of prompts, as the overall weighs tasks equally). The interval is the 2.5 and
97.5 percentiles of the variant's minus the baseline's score. With one run per side only prompts are resampled;
with two, the run level gauges the seed-to-seed spread from two values only, coarsely. `llmdiff experiment`
records every run's per-prompt scores (``read_per_prompt``) and reports each variant against its baseline
(``paired_differences``).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..errors import LLMDiffError

N_RESAMPLES = 10_000
SEED = 0


def per_prompt_scores(results: list[dict]) -> dict[str, dict[str, float]]:
    """{task: {prompt index: mean score of its images}} from an evaluation's results.jsonl records; an image's
    score is its ``score`` (dense prompts) or whether it passes."""
    images: dict[tuple[str, int], list[float]] = defaultdict(list)
    for r in results:
        images[r["tag"], int(r["prompt_index"])].append(float(r.get("score", r["correct"])))
    record: dict[str, dict[str, float]] = defaultdict(dict)
    for (tag, index), scores in sorted(images.items(), key=lambda kv: kv[0][1]):
        record[tag][str(index)] = round(float(np.mean(scores)), 4)  # JSON keys: the prompt index as text
    return dict(record)


def suite_score(record: dict[str, dict[str, float]]) -> float:
    """The suite's overall from per-prompt scores: the mean over tasks of the mean over each task's prompts."""
    return float(np.mean([np.mean(list(scores.values())) for scores in record.values()]))


def paired_bootstrap(variant: list[dict[str, dict[str, float]]], baseline: list[dict[str, dict[str, float]]],
                     n_resamples: int = N_RESAMPLES, seed: int = SEED) -> dict:
    """The variant's score minus the baseline's on the prompts every run of both scored, and its two-level paired
    bootstrap interval (training runs, then prompts): {"diff", "ci95": [low, high], "n_prompts"}. Each side is a
    list of runs (training seeds), each run {task: {prompt index: score}}."""
    if not variant or not baseline:
        raise LLMDiffError("a paired difference needs at least one scored run of the variant and of its baseline")
    runs = [*variant, *baseline]
    shared = {t: sorted(set.intersection(*(set(r.get(t, ())) for r in runs)), key=int) for t in variant[0]}
    tasks = [t for t, prompts in shared.items() if prompts]
    if not tasks:
        raise LLMDiffError("the variant and its baseline share no scored prompt: were they run on the same suite?")
    rng = np.random.default_rng(seed)

    def run_weights(k: int) -> np.ndarray:
        """(resamples, k): each run's share in a draw of k runs with replacement."""
        if k == 1:
            return np.ones((n_resamples, 1))
        picks = rng.integers(0, k, size=(n_resamples, k))
        return (picks[..., None] == np.arange(k)).mean(axis=1)

    weights_v, weights_b = run_weights(len(variant)), run_weights(len(baseline))
    diff, resampled, n = 0.0, np.zeros(n_resamples), 0
    for task in tasks:
        v = np.array([[r[task][i] for i in shared[task]] for r in variant])  # (runs, prompts)
        b = np.array([[r[task][i] for i in shared[task]] for r in baseline])
        d = weights_v @ v - weights_b @ b  # (resamples, prompts): each resample's per-prompt difference
        picks = rng.integers(0, d.shape[1], size=d.shape)
        diff += (v.mean(axis=0) - b.mean(axis=0)).mean() / len(tasks)
        resampled += np.take_along_axis(d, picks, axis=1).mean(axis=1) / len(tasks)
        n += d.shape[1]
    low, high = np.percentile(resampled, [2.5, 97.5])
    return {"diff": float(diff), "ci95": [float(low), float(high)], "n_prompts": n}


def read_per_prompt(eval_dir: Path, suites) -> dict[str, dict[str, dict[str, float]]]:
    """{suite: {task: {prompt index: score}}} of one model from EVAL_DIR/<suite>/eval/results.jsonl (the layout
    model_eval writes); a suite without results is left out (its paired interval is then not reported)."""
    records = {}
    for suite in suites:
        path = Path(eval_dir) / suite / "eval" / "results.jsonl"
        if path.is_file():
            lines = path.read_text().splitlines()
            records[suite] = per_prompt_scores([json.loads(line) for line in lines if line.strip()])
    return records


def paired_differences(runs: dict[str, list[dict]], variants: list[str], baseline: str, suites) -> dict:
    """Every variant's overall score on every suite minus the baseline's, with its paired bootstrap interval, from
    the runs of each variant (results with a ``per_prompt`` record, one per training seed):
    {"baseline", "variants": {variant: {suite: {"diff", "ci95", "n_prompts"} | None}}}. None where a run of
    either was recorded without per-prompt scores."""

    def scores(variant: str, suite: str) -> list[dict] | None:
        own = runs.get(variant, [])
        if not own or any(suite not in r.get("per_prompt", {}) for r in own):
            return None
        return [r["per_prompt"][suite] for r in own]

    base = {suite: scores(baseline, suite) for suite in suites}
    compared = {}
    for variant in variants:
        if variant != baseline and variant in runs:
            compared[variant] = {suite: paired_bootstrap(own, base[suite]) if own and base[suite] else None
                                 for suite, own in ((s, scores(variant, s)) for s in suites)}
    return {"baseline": baseline, "variants": compared}


def paired_table(paired: dict, suites) -> list[str]:
    """Markdown lines: what the differences are, and one row per variant of "diff [low, high]" per suite."""
    if not paired["variants"]:
        return []
    suites = list(suites)
    pairs = " (for position_bias: of the images with every pair drawn)" if "position_bias" in suites else ""
    lines = ["", f"Differences from {paired['baseline']} in each suite's overall score{pairs}: the variant minus the "
             "baseline on the same prompts and sampling seeds, a prompt's score being the mean over its images (pass "
             "or fail; for dense prompts the share of questions passed) and seeds; with the two-level paired "
             f"bootstrap 95 % interval ({N_RESAMPLES:,} resamples of training seeds, then of prompts within tasks). "
             "`-`: a run recorded without "
             "per-prompt scores.", "", "| variant | " + " | ".join(suites) + " |", "|---|" + "---:|" * len(suites)]
    for variant, by_suite in paired["variants"].items():
        cells = ["-" if d is None else f"{d['diff']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"
                 for d in (by_suite[s] for s in suites)]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return lines


def bar_intervals(paired: dict, suite: str, baseline_mean: float) -> dict[str, tuple[float, float]]:
    """Each variant's interval on a suite placed at the baseline's mean score: where the variant's score lies,
    the baseline held fixed (for bar plots)."""
    return {variant: (baseline_mean + d[suite]["ci95"][0], baseline_mean + d[suite]["ci95"][1])
            for variant, d in paired["variants"].items() if d.get(suite)}
