"""Validation of the evaluator on ground truth: suites rendered clean or corrupted, and contradicting scenes.

``llmdiff eval --validate`` runs this and reports per-task accuracy on true renders (should be
~1), on contradicting renders (should be ~0), and the detector's colour and shape confusion
matrices against the scene graphs. A dense (DPG-style) prompt passes when every question does; its
questions' accuracy per category and the mean per-question score are reported beside.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from tqdm.auto import tqdm

from ..shapes.corrupt import corrupt
from ..shapes.suites import SUITES, build_suite, contradicting_spec
from ..shapes.world import COLORS, SHAPES, SceneSpec, render
from .detect import detect
from .scoring import DPG_CATEGORIES, box_iou, image_score, score_entry

MISSED = "missed"


def validate(suites=SUITES, images_per_prompt: int = 4,
             resolution: int = 32, strength: float = 1.0, warp: float = 0.15, seed: int = 0,
             progress: bool = True) -> dict:
    """Score true and contradicting renders of every suite prompt; tabulate colour and shape confusions."""
    rng = np.random.default_rng(seed)
    true_acc: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    false_acc: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    # per suite of DPG-style questions: {"true"/"contradicting": {category or "score": [values]}}
    questions: dict = defaultdict(lambda: defaultdict(dict))
    shape_conf = np.zeros((len(SHAPES), len(SHAPES) + 1), int)  # last column: object not detected
    color_conf = np.zeros((len(COLORS), len(COLORS) + 1), int)
    colors = list(COLORS)
    jobs = [(s, e) for s in suites for e in build_suite(s)]
    for suite, entry in tqdm(jobs, desc="validating", unit="prompt", disable=not progress):
        spec = SceneSpec.from_dict(entry["scene"])
        for _ in range(images_per_prompt):
            scene = render(spec, rng, resolution, warp=warp)
            image = corrupt(scene.image, rng, strength) if strength > 0 else scene.image
            dets = detect(image)
            correct, clauses = score_entry(dets, entry)
            true_acc[suite][entry["tag"]].append(correct)
            _record_questions(questions, suite, "true", entry, correct, clauses)
            for obj in scene.objects:  # match each true object to the detection that overlaps it most
                best = max(dets, key=lambda d: box_iou(d.bbox, obj.bbox), default=None)
                hit = best is not None and box_iou(best.bbox, obj.bbox) >= 0.3
                shape_conf[SHAPES.index(obj.shape), SHAPES.index(best.shape) if hit else -1] += 1
                color_conf[colors.index(obj.color), colors.index(best.color) if hit else -1] += 1
            bad = render(contradicting_spec(entry, rng), rng, resolution, warp=warp)
            bad_image = corrupt(bad.image, rng, strength) if strength > 0 else bad.image
            correct, clauses = score_entry(detect(bad_image), entry)
            false_acc[suite][entry["tag"]].append(correct)
            _record_questions(questions, suite, "contradicting", entry, correct, clauses)

    def table(acc):
        return {s: {t: float(np.mean(v)) for t, v in tags.items()} for s, tags in acc.items()}

    return {
        "settings": {"images_per_prompt": images_per_prompt, "resolution": resolution, "strength": strength,
                     "warp": warp, "seed": seed},
        "true_renders": table(true_acc),
        "contradicting_renders": table(false_acc),
        "questions": {s: {renders: {k: float(np.mean(v)) if v else None for k, v in acc.items()}
                          for renders, acc in q.items()} for s, q in questions.items()},
        "shape_confusion": {"rows": list(SHAPES), "cols": [*SHAPES, MISSED], "counts": shape_conf.tolist()},
        "color_confusion": {"rows": colors, "cols": [*colors, MISSED], "counts": color_conf.tolist()},
    }


def _record_questions(questions: dict, suite: str, renders: str, entry: dict, correct: bool,
                      clauses: list[dict]) -> None:
    """A dense prompt's image: each question's result by category, and the image's per-question score."""
    if entry.get("benchmark") != "dpg":
        return
    acc = questions[suite][renders]
    for category in (*DPG_CATEGORIES, "score"):  # every category a column, in DPG's order
        acc.setdefault(category, [])
    for c in clauses:
        acc[c["category"]].append(c["passed"])
    acc["score"].append(image_score(correct, clauses, "dpg"))


def validation_markdown(report: dict) -> str:
    s = report["settings"]
    lines = ["# Evaluator validation", "",
             f"Ground-truth renders at {s['resolution']} px, {s['images_per_prompt']} per prompt, corruption strength "
             f"{s['strength']} (blur, colour jitter, noise) and shape warp {s['warp']}; seed {s['seed']}.", "",
             "| suite | task | true renders (want ~1) | contradicting renders (want ~0) |", "|---|---|---:|---:|"]
    for suite, tags in report["true_renders"].items():
        for tag, acc in tags.items():
            lines.append(f"| {suite} | {tag} | {acc:.3f} | {report['contradicting_renders'][suite][tag]:.3f} |")
    for suite, q in report.get("questions", {}).items():
        keys = list(q["true"])
        lines += ["", f"## {suite}: questions by category (a child question counts 0 when its parent fails)", "",
                  "| renders | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
        lines += [f"| {kind} | " + " | ".join("-" if q[kind][k] is None else f"{q[kind][k]:.3f}" for k in keys) + " |"
                  for kind in q]
    for name in ("shape_confusion", "color_confusion"):
        c = report[name]
        lines += ["", f"## {name.replace('_', ' ')} (rows: truth, columns: detected)", "",
                  "| | " + " | ".join(c["cols"]) + " |", "|---|" + "---:|" * len(c["cols"])]
        lines += [f"| {r} | " + " | ".join(str(v) for v in row) + " |" for r, row in zip(c["rows"], c["counts"])]
    return "\n".join(lines) + "\n"
