"""Side-by-side samples of several models on the same GenEval prompts (the same sampling seeds).

    python scripts/compare_samples.py --out docs/results/scale/samples.png \
        tiny=runs/experiments/ladder/smollm2-last/s0/eval/geneval tiny-p2=runs/.../tiny-p2/s0/eval/geneval

Each argument is LABEL=FOLDER, a GenEval folder written by `llmdiff generate --prompts geneval`
(images/NNNNN/metadata.jsonl + samples/). Columns: the first prompts of every task; rows: the models.
"""

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from llmdiff.viz import image_grid


def prompts_by_task(folder: Path, per_task: int) -> list[tuple[str, str]]:
    """(prompt folder name, prompt) for the first `per_task` prompts of every task."""
    chosen, counts = [], {}
    for d in sorted((folder / "images").iterdir()):
        meta = json.loads((d / "metadata.jsonl").read_text().splitlines()[0])
        if counts.get(meta["tag"], 0) < per_task:
            counts[meta["tag"]] = counts.get(meta["tag"], 0) + 1
            chosen.append((d.name, meta["prompt"]))
    return chosen


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="LABEL=GENEVAL_FOLDER")
    p.add_argument("--out", required=True)
    p.add_argument("--per-task", type=int, default=2)
    p.add_argument("--title")
    a = p.parse_args()
    models = [m.split("=", 1) for m in a.models]
    for label, folder in models:
        if not (Path(folder) / "images").is_dir():
            raise SystemExit(f"{folder} has no images/ folder; pass the geneval folder of an evaluated run")
    chosen = prompts_by_task(Path(models[0][1]), a.per_task)
    images, captions = [], []
    for label, folder in models:
        for name, prompt in chosen:
            images.append(np.asarray(Image.open(Path(folder) / "images" / name / "samples" / "0000.png").convert("RGB")))
            captions.append(f"[{label}] {prompt}")
    print(image_grid(images, captions, a.out, cols=len(chosen), title=a.title, wrap=30))


if __name__ == "__main__":
    main()
