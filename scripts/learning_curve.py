"""GenEval of a training run's checkpoints (EMA weights): the learning curve a screening budget is chosen from.

    python scripts/learning_curve.py CHECKPOINTS_DIR --steps 400,800,1600 --out docs/lidit/learning_curve \
        [--images-per-prompt 2] [--minutes-per-step 0.0133]

CHECKPOINTS_DIR holds `step-NNNNNNN/` checkpoint folders (a run's `checkpoints/`, or copies of them kept
aside: the trainer keeps only the last `train.keep_checkpoints`). Each step is exported and scored once;
finished steps are skipped when the script is run again. Writes curve.json, curve.md and curve.png.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from llmdiff.errors import LLMDiffError
from llmdiff.evaluation.model_eval import evaluate_model
from llmdiff.training.checkpoint import export_checkpoint
from llmdiff.utils import atomic_write_text
from llmdiff.viz import pyplot, save_figure

TASKS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", type=Path)
    p.add_argument("--steps", required=True, help="comma-separated checkpoint steps")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--images-per-prompt", type=int, default=2)
    p.add_argument("--minutes-per-step", type=float, help="wall-clock minutes per training step, for a minutes axis")
    args = p.parse_args()
    steps = sorted(int(s) for s in args.steps.split(","))
    rows = []
    for step in steps:
        ckpt = args.checkpoints / f"step-{step:07d}"
        done = args.out / "steps" / f"{step}.json"
        if not done.is_file():
            if not ckpt.is_dir():
                raise LLMDiffError(f"no checkpoint {ckpt}")
            model = export_checkpoint(ckpt, args.out / "models" / f"step-{step}")
            s = evaluate_model(model, args.out / "eval" / f"step-{step}", ["geneval"], args.images_per_prompt)
            b = s["geneval"]["benchmarks"]["geneval"]
            done.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(done, json.dumps({"step": step, "overall": b["overall"],
                                                "tasks": {t: b["tasks"][t]["accuracy"] for t in TASKS}}) + "\n")
        rows.append(json.loads(done.read_text()))
    atomic_write_text(args.out / "curve.json", json.dumps(rows, indent=2) + "\n")
    minutes = (lambda s: f"{s * args.minutes_per_step:.0f}") if args.minutes_per_step else (lambda s: "-")
    lines = ["| step | minutes | overall | " + " | ".join(TASKS) + " |", "|---:|---:|---:|" + "---:|" * len(TASKS)]
    lines += [f"| {r['step']} | {minutes(r['step'])} | {r['overall']:.3f} | "
              + " | ".join(f"{r['tasks'][t]:.3f}" for t in TASKS) + " |" for r in rows]
    atomic_write_text(args.out / "curve.md", "\n".join(lines) + "\n")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    x = [r["step"] for r in rows]
    for t in TASKS:
        ax.plot(x, [r["tasks"][t] for r in rows], lw=0.9, marker=".", label=t)
    ax.plot(x, [r["overall"] for r in rows], color="black", lw=2, marker="o", label="overall")
    ax.set_xlabel("training step")
    ax.set_ylabel("GenEval accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, ncol=2)
    save_figure(fig, args.out / "curve.png", 120)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
