"""Generate a model's images for prompt suites (GenEval's folder layout) and score them: the measurement behind
every report. The sampling loop that saves every finished batch (`generate_missing`) is also `llmdiff generate`'s
for a prompt file."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from ..utils import atomic_write_text


def evaluate_model(model_dir: Path | str, out: Path | str, suites=("geneval",), images_per_prompt: int = 4,
                   seed: int = 0, guidance_scale: float | None = None, num_inference_steps: int | None = None,
                   pipe=None, progress: bool = True, overwrite: bool = False) -> dict:
    """OUT/<suite>/images (GenEval layout) and OUT/<suite>/eval (reports); returns {suite: summary}. With
    `overwrite`, images another model or setting made there are replaced (else refused)."""
    from ..pipelines import load_pipeline
    from ..shapes.suites import load_suite
    from .evaluate import run_eval  # the evaluator (scipy.ndimage) is not needed to generate

    out = Path(out)
    pipe = pipe or load_pipeline(model_dir)
    summaries = {}
    for suite in suites:
        images = generate_suite(pipe, load_suite(suite), out / suite / "images", images_per_prompt, seed,
                                guidance_scale, num_inference_steps, progress=progress, overwrite=overwrite)
        summaries[suite] = run_eval(images, out / suite / "eval", progress=progress, overwrite=overwrite)
    atomic_write_text(out / "summaries.json", json.dumps(summaries, indent=2) + "\n")
    return summaries


@torch.no_grad()
def generate_suite(pipe, entries: list[dict], out: Path | str, images_per_prompt: int = 4,
                   seed: int = 0, guidance_scale: float | None = None, num_inference_steps: int | None = None,
                   prompts_per_batch: int = 16, progress: bool = True, overwrite: bool = False) -> Path:
    """Images for every entry in GenEval's folder layout; prompts already complete are skipped (resumable)
    when the folder's record says the same model and settings made them, else refused (or replaced: overwrite)."""
    from ..integrity import folder_lock
    from .layout import claim_output, generation_record

    out = Path(out)
    steps, guidance_scale = pipe.sampling(num_inference_steps, guidance_scale)
    with folder_lock(out, "images into"):
        claim_output(out, generation_record(pipe, entries, seed, steps, guidance_scale), overwrite)
        _generate_missing(pipe, entries, out, images_per_prompt, seed, guidance_scale, steps, prompts_per_batch,
                          progress)
    return out


def _generate_missing(pipe, entries, out, images_per_prompt, seed, guidance_scale, steps, prompts_per_batch,
                      progress) -> None:
    import numpy as np

    from ..pipelines import image_seed
    from .layout import write_prompt_folder

    todo = [i for i, _ in enumerate(entries)
            if len(list((out / f"{i:05d}" / "samples").glob("*.png"))) < images_per_prompt]
    pipe.set_progress_bar_config(disable=True)

    def save(start: int, images: list) -> None:
        arrays = [np.asarray(im) for im in images]  # the pixels `llmdiff generate` writes
        for j, i in enumerate(todo[start:start + len(images) // images_per_prompt]):
            write_prompt_folder(out, i, entries[i], arrays[j * images_per_prompt:(j + 1) * images_per_prompt])

    generate_missing(pipe, [entries[i]["prompt"] for i in todo],
                     [[image_seed(seed, i, k) for k in range(images_per_prompt)] for i in todo], save,
                     prompts_per_batch, progress, guidance_scale=guidance_scale, num_inference_steps=steps)


@torch.no_grad()
def generate_missing(pipe, prompts: list[str], seeds: list[list[int]], save: Callable[[int, list], None],
                     prompts_per_batch: int, progress: bool = True, **sampling) -> None:
    """Images of every prompt (one per seed of its list; every list as long), `prompts_per_batch` prompts at a
    time, each finished batch handed to `save(index of its first prompt, its images)` before the next is
    sampled: an interrupt keeps every finished batch, and a rerun that leaves out what is saved continues."""
    from tqdm.auto import tqdm

    from ..pipelines import generators_for

    per_prompt = len(seeds[0]) if seeds else 1
    for start in tqdm(range(0, len(prompts), prompts_per_batch), desc="generating", unit="batch",
                      disable=not progress):
        chunk = slice(start, start + prompts_per_batch)
        images = pipe(prompts[chunk], num_images_per_prompt=per_prompt,
                      generator=generators_for([s for row in seeds[chunk] for s in row]), **sampling).images
        save(start, images)
