"""Generate a model's images for prompt suites and score them: the measurement behind every report."""

from __future__ import annotations

import json
from pathlib import Path

from ..utils import atomic_write_text
from .evaluate import run_eval


def evaluate_model(model_dir: Path | str, out: Path | str, suites=("geneval",), images_per_prompt: int = 4,
                   seed: int = 0, guidance_scale: float | None = None, num_inference_steps: int | None = None,
                   pipe=None, progress: bool = True) -> dict:
    """OUT/<suite>/images (GenEval layout) and OUT/<suite>/eval (reports); returns {suite: summary}."""
    from ..pipelines import generate_suite, load_pipeline
    from ..shapes.suites import load_suite

    out = Path(out)
    pipe = pipe or load_pipeline(model_dir)
    summaries = {}
    for suite in suites:
        images = generate_suite(pipe, load_suite(suite), out / suite / "images", images_per_prompt, seed,
                                guidance_scale, num_inference_steps, progress=progress)
        summaries[suite] = run_eval(images, out / suite / "eval", progress=progress)
    atomic_write_text(out / "summaries.json", json.dumps(summaries, indent=2) + "\n")
    return summaries

