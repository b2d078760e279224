"""Side-by-side samples of several models on the same GenEval prompts (the same sampling seeds).

    python scripts/compare_samples.py --out docs/results/scale/samples.png \
        tiny=runs/experiments/ladder/smollm2-last/s0/eval/geneval tiny-p2=runs/.../tiny-p2/s0/eval/geneval

Each argument is LABEL=FOLDER, a GenEval folder written by `llmdiff generate --prompts geneval`
(images/NNNNN/metadata.jsonl + samples/). Columns: the first prompts of every task; rows: the models.
"""

import argparse
from pathlib import Path

from llmdiff.evaluation.layout import read_layout
from llmdiff.viz import image_grid


def first_images(folder: Path) -> dict[int, tuple[dict, object]]:
    """prompt index -> (metadata entry, first image) of a GenEval folder."""
    try:
        layout = read_layout(folder / "images")
    except FileNotFoundError as e:
        raise SystemExit(f"{e}; pass the geneval folder of an evaluated run") from None
    if layout.errors:
        raise SystemExit(f"{folder}: {layout.errors[0]['path']}: {layout.errors[0]['error']}")
    out = {}
    for sample in layout.samples:  # samples come in prompt order, 0000.png first
        out.setdefault(sample.prompt_index, (sample.entry, sample.image))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="LABEL=GENEVAL_FOLDER")
    p.add_argument("--out", required=True)
    p.add_argument("--per-task", type=int, default=2)
    p.add_argument("--title")
    a = p.parse_args()
    models = [(label, first_images(Path(folder))) for label, folder in (m.split("=", 1) for m in a.models)]
    chosen, counts = [], {}  # the first `per_task` prompts of every task, from the first model's folder
    for index, (entry, _) in models[0][1].items():
        if counts.get(entry["tag"], 0) < a.per_task:
            counts[entry["tag"]] = counts.get(entry["tag"], 0) + 1
            chosen.append(index)
    images = [samples[i][1] for _, samples in models for i in chosen]
    captions = [f"[{label}] {samples[i][0]['prompt']}" for label, samples in models for i in chosen]
    print(image_grid(images, captions, a.out, cols=len(chosen), title=a.title, wrap=30))


if __name__ == "__main__":
    main()
