"""``llmdiff eval``: detect, score and summarise a GenEval-layout folder; write JSON, Markdown and plots."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..errors import LLMDiffError
from ..integrity import check_replaceable, folder_lock
from ..shapes.suites import COMPBENCH_TAGS, GENEVAL_TAGS, POSITION_BINS
from ..utils import atomic_write_text
from .detect import DEFAULT_THRESHOLD, detect
from .layout import Layout, read_layout, read_record
from .scoring import DPG_CATEGORIES, POSITION_OUTCOMES, image_score, position_outcome, score_entry

BENCHMARK_ORDER = ("geneval", "compbench", "position_bias")


def evaluate_layout(layout: Layout, threshold: float = DEFAULT_THRESHOLD, progress: bool = True) -> list[dict]:
    """One result per image: pass/fail, every clause's result, and the detections."""
    results = []
    for s in tqdm(layout.samples, desc="evaluating", unit="img", disable=not progress):
        detections = detect(s.image, threshold=threshold)
        correct, clauses = score_entry(detections, s.entry)
        benchmark = s.entry.get("benchmark", "geneval")
        results.append({
            "filename": str(s.path),
            "prompt_index": s.prompt_index,
            "benchmark": benchmark,
            "tag": s.entry.get("tag", ""),
            "prompt": s.entry["prompt"],
            "heldout": bool(s.entry.get("heldout", False)),
            "correct": correct,
            "score": image_score(correct, clauses, benchmark),
            "clauses": clauses,
            "detections": [d.to_dict() for d in detections],
        })
    return results


def summarize(results: list[dict], errors: list[dict] | None = None) -> dict:
    """Per-benchmark task accuracies, overall = mean of task accuracies (GenEval's aggregation); for DPG-Bench's
    questions, accuracy per question category and overall = the mean of the images' scores (DPG's aggregation)."""
    summary: dict = {"n_images": len(results), "errors": errors or [], "benchmarks": {}}
    groups: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))  # image scores per task
    split: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    bins: dict[int, list[bool]] = defaultdict(list)
    outcomes: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(POSITION_OUTCOMES, 0))
    questions: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    objects: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))  # detections per image
    for r in results:
        groups[r["benchmark"]][r["tag"]].append(r.get("score", r["correct"]))
        objects[r["benchmark"]][r["tag"]].append(len(r["detections"]))
        outcome = position_outcome(r["correct"], r["clauses"])
        if outcome:
            outcomes[r["benchmark"]][outcome] += 1
        split[r["benchmark"]]["heldout" if r["heldout"] else "seen"].append(r.get("score", r["correct"]))
        for c in r["clauses"]:
            if "position_bin" in c:
                bins[c["position_bin"]].append(c["passed"])
            if "category" in c:
                questions[r["benchmark"]][c["category"]].append(c["passed"])
    for bench in sorted(groups, key=lambda b: (BENCHMARK_ORDER + (b,)).index(b)):
        order = list(GENEVAL_TAGS + COMPBENCH_TAGS)
        ordered = sorted(groups[bench].items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else len(order), kv[0]))
        tags = {t: {"accuracy": float(np.mean(v)), "n": len(v)} for t, v in ordered}
        entry = {
            "tasks": tags,
            "overall": float(np.mean([t["accuracy"] for t in tags.values()])),
            "by_composition": {k: {"accuracy": float(np.mean(v)), "n": len(v)} for k, v in sorted(split[bench].items())},
            "objects_per_image": {t: float(np.mean(objects[bench][t])) for t in tags},
        }
        if bench in questions:
            entry.update(_question_summary(questions[bench], [s for v in groups[bench].values() for s in v]))
        if bench in outcomes:  # where the images of prompts with a relation went wrong
            entry["position_outcomes"] = outcomes[bench]
        summary["benchmarks"][bench] = entry
    if bins:
        summary["position_bias"] = {
            "bins": list(range(POSITION_BINS)),
            "pair_accuracy": [float(np.mean(bins[b])) if bins[b] else None for b in range(POSITION_BINS)],
            "n_pairs": [len(bins[b]) for b in range(POSITION_BINS)],
        }
    return summary


def _question_summary(by_category: dict[str, list[bool]], scores: list[float]) -> dict:
    """DPG-Bench's report: accuracy per question category (a question whose parent failed counts 0) and overall =
    the mean over images of the fraction of its questions passed."""
    order = sorted(by_category, key=lambda k: (DPG_CATEGORIES + (k,)).index(k))
    return {"tasks": {k: {"accuracy": float(np.mean(by_category[k])), "n": len(by_category[k])} for k in order},
            "overall": float(np.mean(scores)), "n_unit": "questions", "overall_rule": "mean per-question score"}


def geneval_row(summary: dict) -> dict:
    """{"overall", "tasks": {task: accuracy}} of one `run_eval` summary's GenEval benchmark."""
    b = summary["benchmarks"]["geneval"]
    return {"overall": b["overall"], "tasks": {t: v["accuracy"] for t, v in b["tasks"].items()}}


def geneval_table(rows: dict[str, dict], label: str) -> list[str]:
    """Markdown table lines, one row per condition: its GenEval overall and per-task accuracies (`geneval_row`)."""
    tasks = list(next(iter(rows.values()))["tasks"])
    lines = [f"| {label} | overall | " + " | ".join(tasks) + " |", "|---|---:|" + "---:|" * len(tasks)]
    return lines + [f"| {c} | {r['overall']:.3f} | " + " | ".join(f"{r['tasks'][t]:.3f}" for t in tasks) + " |"
                    for c, r in rows.items()]


def markdown_summary(summary: dict, title: str = "Evaluation") -> str:
    lines = [f"# {title}", "", f"{summary['n_images']} images scored."]
    producer = summary.get("producer")
    if producer and "made_by" in producer:  # a renderer's record (`llmdiff shapes gt`)
        lines += ["", f"Made by `{producer['made_by']}` from {producer.get('suite')}, seed {producer.get('seed')}."]
    elif producer:
        lines += ["", f"Made by {producer.get('model_class', 'a model')} with weights sha256 "
                      f"{str(producer.get('model_sha256'))[:12]}, seed {producer.get('seed')}, {producer.get('steps')} "
                      f"steps, guidance {producer.get('guidance_scale')}, {producer.get('scheduler')}."]
    elif "producer" in summary:
        lines += ["", "No record of what made these images (not written by `llmdiff generate`)."]
    for bench, s in summary["benchmarks"].items():
        lines += ["", f"## {bench}", "", f"| task | accuracy | {s.get('n_unit', 'images')} |", "|---|---:|---:|"]
        lines += [f"| {t} | {v['accuracy']:.3f} | {v['n']} |" for t, v in s["tasks"].items()]
        lines.append(f"| **overall** ({s.get('overall_rule', 'mean of tasks')}) | **{s['overall']:.3f}** | |")
        comp = ", ".join(f"{k}: {v['accuracy']:.3f} (n={v['n']})" for k, v in s["by_composition"].items())
        lines += ["", f"Images by composition: {comp}."]
        if "position_outcomes" in s:
            o = s["position_outcomes"]
            lines += ["", f"Images of prompts with a relation: {o['right']} right, {o['mirrored']} mirrored (both "
                          f"objects on the relation's axis, sides swapped), {o['other layout']} in another layout, "
                          f"{o['object missing']} with an object missing or in the wrong colour."]
    if "position_bias" in summary:
        pb = summary["position_bias"]
        lines += ["", "## positional bias (pair accuracy by relative position in the prompt)", "",
                  "| bin (0 = first, 4 = last) | " + " | ".join(str(b) for b in pb["bins"]) + " |",
                  "|---|" + "---:|" * len(pb["bins"]),
                  "| accuracy | " + " | ".join("-" if a is None else f"{a:.3f}" for a in pb["pair_accuracy"]) + " |",
                  "| pairs | " + " | ".join(str(n) for n in pb["n_pairs"]) + " |"]
    if summary["errors"]:
        lines += ["", f"## {len(summary['errors'])} items could not be scored", ""]
        lines += [f"- `{e['path']}`: {e['error']}" for e in summary["errors"]]
    return "\n".join(lines) + "\n"


def plot_summary(summary: dict, out: Path) -> list[Path]:
    """Per-task bars for every benchmark, and the positional-bias curve when present."""
    from ..viz import position_bias_plot, task_bars

    written = [task_bars(summary["benchmarks"], out / "tasks.png")] if summary["benchmarks"] else []
    if "position_bias" in summary:
        written.append(position_bias_plot({"": summary["position_bias"]["pair_accuracy"]}, out / "position_bias.png"))
    return written


# The files of a report folder; the first (the report's index) tells an earlier report from a user's files.
REPORT_FILES = ("summary.json", "results.jsonl", "summary.md", "tasks.png", "position_bias.png")
VALIDATION_FILES = ("validation.json", "validation.md")
_INDEX_KEYS = {"summary.json": ("n_images", "benchmarks", "errors"), "validation.json": ("settings", "true_renders")}


def check_report_folder(out: Path, files: tuple[str, ...] = REPORT_FILES, overwrite: bool = False) -> None:
    """Refuse, before evaluating, a report folder holding files of the report's names that are not an earlier
    report's (a summary.md of the user's), unless `overwrite`."""
    out = Path(out)
    try:
        index = json.loads((out / files[0]).read_text())
    except (OSError, ValueError):
        index = None
    ours = isinstance(index, dict) and all(k in index for k in _INDEX_KEYS[files[0]])
    for name in files:
        check_replaceable(out / name, "--out", ours, overwrite)


def run_eval(images: Path, out: Path | None = None, threshold: float = DEFAULT_THRESHOLD,
             resolution: int | None = None, progress: bool = True, plots: bool = True,
             overwrite: bool = False) -> dict:
    """Evaluate a folder and write summary.json, results.jsonl, summary.md and plots to ``out`` (default
    IMAGES/eval); files there that an earlier evaluation did not write are refused unless `overwrite`."""
    out = Path(out) if out else Path(images) / "eval"
    check_report_folder(out, REPORT_FILES, overwrite)
    layout = read_layout(images, resolution)
    if not layout.samples:
        first = layout.errors[0] if layout.errors else {"path": str(images), "error": "nothing to score"}
        raise LLMDiffError(f"no image in {images} could be scored; first problem: {first['path']}: {first['error']}")
    results = evaluate_layout(layout, threshold, progress)
    summary = summarize(results, layout.errors)
    summary["producer"] = read_record(images)
    with folder_lock(out, "a report into"):  # one writer: the report's files all come from one evaluation
        # the index first: every other report file is then beside the summary that claims the folder
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
        atomic_write_text(out / "results.jsonl", "".join(json.dumps(r) + "\n" for r in results))
        atomic_write_text(out / "summary.md", markdown_summary(summary, f"Evaluation of {images}"))
        if plots:
            plot_summary(summary, out)
    return summary
