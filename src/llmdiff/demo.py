"""The main job on the embedded default: the Shapes world end to end.

Renders the ``geneval`` suite as a generator would deliver it (blurred, noisy, colour-shifted),
scores it with the evaluator, and writes a grid of samples with their prompts and the report.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .evaluation.evaluate import markdown_summary, run_eval
from .evaluation.layout import write_prompt_folder
from .shapes.corrupt import corrupt
from .shapes.suites import load_suite
from .shapes.world import SceneSpec, render
from .viz import image_grid


def run_demo(out: Path, images_per_prompt: int = 2, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    entries = load_suite("geneval")
    images_dir = out / "images"
    grid, captions = [], []
    for i, entry in enumerate(entries):
        spec = SceneSpec.from_dict(entry["scene"])
        imgs = [corrupt(render(spec, rng, 32, warp=0.15).image, rng) for _ in range(images_per_prompt)]
        write_prompt_folder(images_dir, i, entry, imgs)
        if i % 11 == 0 and len(grid) < 16:
            grid.append(imgs[0])
            captions.append(entry["prompt"])
    summary = run_eval(images_dir, out / "eval")
    path = image_grid(grid, captions, out / "grid.png", title="Shapes world: geneval prompts, rendered with corruptions")
    print(markdown_summary(summary, "Shapes world demo: ground-truth renders with corruptions"))
    print(f"grid: {path}\nreport: {out / 'eval' / 'summary.md'}")
    return summary
