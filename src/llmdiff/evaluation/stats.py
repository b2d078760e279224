"""Paired statistics over prompts: how much a variant differs from its baseline on a suite, with a 95 % interval.

Two models scored on the same prompts with the same sampling seeds are compared prompt by prompt. Each prompt's
score is the mean over its images (and over training seeds, when a variant was trained with several): the
fraction of images that pass, or for a dense prompt the mean per-question score. The suite's score is GenEval's
overall, the mean over tasks of each task's mean over prompts (a suite of one task: the mean over prompts, as
DPG-Bench reports). The interval is a paired bootstrap: resample prompts with replacement within each task (every
resample keeps each task's number of prompts, as the overall weighs tasks equally) and take the 2.5 and 97.5
percentiles of the variant's minus the baseline's score.
"""

from __future__ import annotations

from collections import defaultdict

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


def mean_over_runs(records: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per-prompt scores averaged over runs (training seeds) of one variant; a prompt takes the runs that scored it."""
    merged: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        for task, scores in record.items():
            for index, score in scores.items():
                merged[task][index].append(score)
    return {task: {i: float(np.mean(v)) for i, v in scores.items()} for task, scores in merged.items()}


def suite_score(record: dict[str, dict[str, float]]) -> float:
    """The suite's overall from per-prompt scores: the mean over tasks of the mean over each task's prompts."""
    return float(np.mean([np.mean(list(scores.values())) for scores in record.values()]))


def paired_bootstrap(variant: dict[str, dict[str, float]], baseline: dict[str, dict[str, float]],
                     n_resamples: int = N_RESAMPLES, seed: int = SEED) -> dict:
    """The variant's score minus the baseline's on the prompts both were scored on, and its paired bootstrap
    interval: {"diff", "ci95": [low, high], "n_prompts"}. Inputs are {task: {prompt index: score}}."""
    tasks = [t for t in variant if t in baseline and variant[t].keys() & baseline[t].keys()]
    if not tasks:
        raise LLMDiffError("the variant and its baseline share no scored prompt: were they run on the same suite?")
    rng = np.random.default_rng(seed)
    diff, resampled, n = 0.0, np.zeros(n_resamples), 0
    for task in tasks:
        shared = sorted(variant[task].keys() & baseline[task].keys(), key=int)
        d = np.array([variant[task][i] - baseline[task][i] for i in shared])  # (prompts,)
        picks = rng.integers(0, len(d), size=(n_resamples, len(d)))  # (resamples, prompts)
        diff += d.mean() / len(tasks)
        resampled += d[picks].mean(axis=1) / len(tasks)
        n += len(d)
    low, high = np.percentile(resampled, [2.5, 97.5])
    return {"diff": float(diff), "ci95": [float(low), float(high)], "n_prompts": n}
