"""Which path carries the prompt in a trained LI-DiT: cross-attention or the pooled text token?

    python scripts/path_ablation.py models/shapes-lidit --out docs/lidit/path_ablation [--limit 48] [--task position]

An LI-DiT reads the prompt twice: every block cross-attends to the text tokens, and the mean text token
is added to the timestep embedding that modulates every block (``pooled_text``). GenEval (2 images per
prompt, the suite's first LIMIT prompts, or those of one TASK) is scored three ways with the same seeds:

* ``full``: the model as trained;
* ``no-pooled``: the pooled path is given what the unconditional branch gives it (zeros);
* ``no-cross``: cross-attention may attend to the null token only, so the prompt arrives only pooled.

Writes ablation.json and ablation.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from llmdiff.cli import int_in, run_script
from llmdiff.denoisers.lidit import LIDiT, LIDiTBlock
from llmdiff.errors import LLMDiffError
from llmdiff.evaluation.evaluate import geneval_row, geneval_table, run_eval
from llmdiff.evaluation.model_eval import generate_suite
from llmdiff.evaluation.scoring import POSITION_OUTCOMES
from llmdiff.pipelines import load_pipeline
from llmdiff.shapes.suites import GENEVAL_TAGS, load_suite
from llmdiff.utils import atomic_write_text

CONDITIONS = ("full", "no-pooled", "no-cross")


def _ablate(model: LIDiT, condition: str) -> list:
    if condition == "no-pooled":
        return [model.pool_text.register_forward_pre_hook(lambda mod, args: (torch.zeros_like(args[0]),))]

    def null_only(mod, args, kwargs):
        mask = kwargs["key_mask"].clone()
        mask[:, 1:] = False  # index 0 is the learnt null token
        return args, {**kwargs, "key_mask": mask}

    if condition == "no-cross":
        return [(b.joint_attn if b.joint else b.cross_attn).register_forward_pre_hook(null_only, with_kwargs=True)
                for b in model.modules() if isinstance(b, LIDiTBlock)]
    return []


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--limit", type=int_in(1, 100_000), help="score only the suite's first LIMIT prompts")
    p.add_argument("--task", choices=GENEVAL_TAGS, help="score only the prompts of this GenEval task")
    args = p.parse_args()
    pipe = load_pipeline(args.model)
    if not isinstance(pipe.denoiser, LIDiT) or pipe.denoiser.pool_text is None:
        raise LLMDiffError(f"{args.model} is not an LI-DiT with a pooled text path")
    entries = [e for e in load_suite("geneval") if args.task in (None, e["tag"])][: args.limit]
    rows = {}
    for condition in CONDITIONS:
        hooks = _ablate(pipe.denoiser, condition)
        images = generate_suite(pipe, entries, args.out / condition / "images", images_per_prompt=2)
        for h in hooks:
            h.remove()
        summary = run_eval(images, args.out / condition / "eval", progress=False)
        rows[condition] = geneval_row(summary)
        if "position_outcomes" in summary["benchmarks"]["geneval"]:
            rows[condition]["position_outcomes"] = summary["benchmarks"]["geneval"]["position_outcomes"]
    atomic_write_text(args.out / "ablation.json", json.dumps(rows, indent=2) + "\n")
    which = f"GenEval's {args.task} prompts" if args.task else "GenEval's prompts"
    lines = [f"# Which path carries the prompt: {args.model.name}, {which}, the first {len(entries)} x 2 images",
             "", *geneval_table(rows, "condition")]
    if "position_outcomes" in rows["full"]:
        lines += ["", "Images of prompts with a relation:", "", "| condition | " + " | ".join(POSITION_OUTCOMES) + " |",
                  "|---|" + "---:|" * len(POSITION_OUTCOMES)]
        lines += [f"| {c} | " + " | ".join(str(r["position_outcomes"][k]) for k in POSITION_OUTCOMES) + " |"
                  for c, r in rows.items()]
    atomic_write_text(args.out / "ablation.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    run_script(main)
