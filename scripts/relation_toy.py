"""Can a model read a relation's direction at all? Four captions about one pair of objects.

The Shapes models draw a relation's two objects on its axis but on either side, even for captions of their
own training set. This toy separates "cannot" from "has not learned": a model fine-tuned on four captions
(a red circle and a blue square, each as the subject, to the left or to the right of the other; 128 rendered
images each) must read the direction word and the subject to draw them, since every caption names the same
two objects. With `--pairs N` the same for N pairs of objects (4N captions): how the steps it takes grow
with the pairs, from four layouts towards a rule over objects.

    python scripts/relation_toy.py DIR [--wording bare] [--pairs N]   # DIR: images, metadata.jsonl, prompts.jsonl
    llmdiff train --run-dir RUN configs/shapes-lidit.yaml data.world=folder data.path=DIR \\
        model.init=models/shapes-lidit train.steps=300 train.lr=0.0003 train.warmup=15 train.ema_decay=0.99
    llmdiff generate --prompts DIR/prompts.jsonl --model RUN/model --images-per-prompt 16 --out E/images
    llmdiff eval --images E/images --out E              # right / mirrored per image
    python scripts/relation_tokens.py RUN/model --out T  # the high-noise guess of each direction
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from llmdiff.cli import run_script
from llmdiff.errors import LLMDiffError
from llmdiff.shapes.captions import article
from llmdiff.shapes.suites import clause, is_heldout
from llmdiff.shapes.world import COLORS, SHAPES, ObjectSpec, SceneSpec, render
from llmdiff.utils import atomic_write_text

RED_CIRCLE, BLUE_SQUARE = ObjectSpec("circle", "red"), ObjectSpec("square", "blue")
WORDING = {"to the": "to the {side} of", "bare": "{side} of"}  # relation_tokens.py's phrasing, or the shorter one


def object_pairs(n: int, seed: int = 0) -> list[tuple[ObjectSpec, ObjectSpec]]:
    """The red circle and the blue square, then n - 1 more pairs of coloured shapes (two shapes and two colours
    each, no held-out composition, no pair twice)."""
    rng = np.random.default_rng(seed)
    out = [(RED_CIRCLE, BLUE_SQUARE)]
    while len(out) < n:
        (a, b), (ca, cb) = rng.choice(SHAPES, 2, replace=False), rng.choice(list(COLORS), 2, replace=False)
        pair = (ObjectSpec(str(a), str(ca)), ObjectSpec(str(b), str(cb)))
        spec = SceneSpec(pair)
        if not is_heldout(spec) and pair not in out and pair[::-1] not in out:
            out.append(pair)
    return out


def captions(wording: str, pairs: list[tuple[ObjectSpec, ObjectSpec]]) -> list[tuple[str, ObjectSpec, ObjectSpec, str]]:
    """(caption, subject, reference, relation): each object of each pair as the subject, to the left and to the
    right of the other."""
    out = []
    for pair in pairs:
        for subject, reference in (pair, pair[::-1]):
            for side in ("left", "right"):
                words = WORDING[wording].format(side=side)
                a, b = (f"{article(o.color)} {o.color} {o.shape}" for o in (subject, reference))
                out.append((f"{a} {words} {b}", subject, reference, f"{side} of"))
    return out


def write_toy(out: Path, wording: str = "to the", n_pairs: int = 1, images_per_caption: int = 128,
              resolution: int = 32, seed: int = 0) -> None:
    if out.exists() and any(out.iterdir()):
        raise LLMDiffError(f"{out} is not empty; give a new folder")
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows, prompts = [], []
    for text, subject, reference, relation in captions(wording, object_pairs(n_pairs, seed)):
        spec = SceneSpec((subject, reference), ((0, relation, 1),))
        images = [render(spec, rng, resolution).image for _ in range(images_per_caption)]
        for image in images:
            name = f"images/{len(rows):04d}.png"
            Image.fromarray(image).save(out / name)
            rows.append(json.dumps({"file_name": name, "text": text}))
        # the evaluator's relation format (compbench's spatial prompts): the reference first, then the subject
        include = [clause(reference), {**clause(subject), "position": [relation, 0]}]
        prompts.append(json.dumps({"tag": "spatial", "include": include, "prompt": text, "benchmark": "compbench",
                                   "scene": spec.to_dict(), "heldout": is_heldout(spec)}))
        if {subject, reference} == {RED_CIRCLE, BLUE_SQUARE}:
            # what a model's high-noise guess would hold if it read the caption (relation_tokens.py's measure)
            red_minus_blue = (np.mean(images, axis=0, dtype=float) / 127.5 - 1) @ np.array([1.0, 0.0, -1.0])
            half = resolution // 2
            red_side = 1 if (subject == RED_CIRCLE) == (relation == "left of") else -1  # +1: red belongs left
            side = red_side * (red_minus_blue[:, :half].mean() - red_minus_blue[:, half:].mean())
            print(f"{text}: the mean image's red - blue, red's half minus the other, {side:+.3f}")
    atomic_write_text(out / "metadata.jsonl", "\n".join(rows) + "\n")
    atomic_write_text(out / "prompts.jsonl", "\n".join(prompts) + "\n")
    print(f"wrote {len(rows)} images of {len(prompts)} captions to {out} (metadata.jsonl, prompts.jsonl)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="a new folder for the images, metadata.jsonl and prompts.jsonl")
    p.add_argument("--wording", choices=list(WORDING), default="to the",
                   help='"to the": "a red circle to the left of a blue square"; "bare": "a red circle left of ..."')
    p.add_argument("--pairs", type=int, default=1,
                   help="pairs of objects (4 captions each); the first is the red circle and the blue square")
    p.add_argument("--images-per-caption", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.images_per_caption < 1:
        p.error("--images-per-caption must be at least 1")
    if not 1 <= args.pairs <= 64:
        p.error("--pairs must be in [1, 64]")
    write_toy(args.out, args.wording, args.pairs, args.images_per_caption, seed=args.seed)


if __name__ == "__main__":
    run_script(main)
