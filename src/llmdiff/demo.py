"""The main job on the embedded default: prompts -> LLM -> LI-DiT -> images -> scores.

Two prompts of every GenEval task (from the held-out ``geneval`` suite) go through the shipped
model; the images are written in GenEval's folder layout, scored by the evaluator, and shown
as a grid with their prompts. ``--full`` runs the whole suite (164 prompts).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def demo_entries(full: bool = False) -> list[dict]:
    from .shapes.suites import GENEVAL_TAGS, load_suite

    entries = load_suite("geneval")
    if full:
        return entries
    picked = []
    for tag in GENEVAL_TAGS:
        of_tag = [e for e in entries if e["tag"] == tag]
        picked += [of_tag[len(of_tag) // 3], of_tag[(2 * len(of_tag)) // 3]]
    return picked


def run_demo(out: Path, model: Path, images_per_prompt: int = 4, seed: int = 0, full: bool = False) -> dict:
    from .evaluation.evaluate import markdown_summary, run_eval
    from .evaluation.model_eval import generate_suite
    from .pipelines import load_pipeline
    from .viz import image_grid

    entries = demo_entries(full)
    pipe = load_pipeline(model)
    encoders = " + ".join(c["model"] for c in pipe.encoder_configs)
    print(f"model: {model}  (prompt encoder: {encoders}, {'latent' if pipe.codec else 'pixel'} diffusion)")
    images = generate_suite(pipe, entries, out / "images", images_per_prompt, seed)
    summary = run_eval(images, out / "eval")
    grid, captions = [], []
    for i, e in enumerate(entries[:12]):
        from PIL import Image

        for k in range(min(images_per_prompt, 4)):
            grid.append(np.asarray(Image.open(images / f"{i:05d}" / "samples" / f"{k:04d}.png").convert("RGB")))
            captions.append(e["prompt"] if k == 0 else "")
    path = image_grid(grid, captions, out / "grid.png", cols=min(images_per_prompt, 4) * 2, cell=1.4,
                      title=f"llmdiff: {encoders} + {type(pipe.denoiser).__name__} on held-out prompts")
    print(markdown_summary(summary, f"GenEval-style scores of {len(entries)} prompts x {images_per_prompt} images"))
    print(f"grid: {path}\nimages: {images}\nreport: {out / 'eval' / 'summary.md'}")
    return summary
