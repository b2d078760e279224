"""Does a trained flow model follow prompts better when the sampler spends its steps at high noise?

    python scripts/sampler_shift.py models/shapes-lidit --out docs/lidit/sampler_shift [--shifts 1 2 3] [--limit N]

The Euler sampler's time shift k (diffusers' ``FlowMatchEulerDiscreteScheduler(shift=k)``, SD3 eq. 23) moves
the same number of steps towards high noise, where a small image's layout, shapes and colours are decided;
the model is unchanged. GenEval (2 images per prompt, the same seeds for every k) is scored for each k.
Writes shift.json and shift.md; each k's images and report stay in OUT/shift-K.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from llmdiff.cli import float_in, int_in, run_script
from llmdiff.errors import LLMDiffError
from llmdiff.evaluation.evaluate import geneval_row, geneval_table, run_eval
from llmdiff.evaluation.model_eval import generate_suite
from llmdiff.pipelines import load_pipeline
from llmdiff.shapes.suites import load_suite
from llmdiff.utils import atomic_write_text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--shifts", type=float_in(0.0, 100.0, lo_open=True), nargs="+", default=[1.0, 2.0, 3.0],
                   help="time shifts k of the sampler (1: as trained)")
    p.add_argument("--limit", type=int_in(1, 100_000), help="score only the suite's first LIMIT prompts")
    p.add_argument("--images-per-prompt", type=int_in(1, 64), default=2)
    args = p.parse_args()
    pipe = load_pipeline(args.model)
    if type(pipe.scheduler).__name__ != "FlowMatchEulerDiscreteScheduler":
        raise LLMDiffError(f"{args.model} is not a flow model (it samples with {type(pipe.scheduler).__name__})")
    base = dict(pipe.scheduler.config)
    entries = load_suite("geneval")[: args.limit]
    rows = {}
    for k in args.shifts:
        pipe.scheduler = type(pipe.scheduler).from_config(base, shift=k)
        folder = args.out / f"shift-{k:g}"
        images = generate_suite(pipe, entries, folder / "images", images_per_prompt=args.images_per_prompt)
        rows[f"{k:g}"] = geneval_row(run_eval(images, folder / "eval", progress=False))
        print(f"shift {k:g}: GenEval {rows[f'{k:g}']['overall']:.3f}", flush=True)
    atomic_write_text(args.out / "shift.json", json.dumps(rows, indent=2) + "\n")
    lines = [f"# Sampler time shift: {args.model.name}, GenEval, {len(entries)} prompts x "
             f"{args.images_per_prompt} images, same seeds", "", *geneval_table(rows, "shift")]
    atomic_write_text(args.out / "shift.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    run_script(main)
