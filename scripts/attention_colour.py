"""Where a colour or shape word's attention goes: on its own object, on the other object, or spread out.

    python scripts/attention_colour.py [--model models/shapes-lidit] [--seeds 8]

For prompts with one or two coloured objects, the studio's heat map of each colour and shape token (mean over
layers and steps, and per layer) is compared with the pixels the evaluator assigns to that word's object, found
by the object's colour: the share of the token's heat that falls on them, next to their share of the image (what
a uniform map would give), and the same for the other object (does "circle" look at the circle or at any
object?). Prints a table.
"""

import argparse

import numpy as np

from llmdiff.evaluation.detect import _PALETTE_NAMES, estimate_background, unmix
from llmdiff.shapes.world import SHAPES
from llmdiff.studio import Studio

PROMPTS = ["a red circle", "a blue square", "a red circle to the left of a blue square",
           "a green triangle above a yellow cross", "a blue triangle and a red circle"]


def colour_mask(image: np.ndarray, colour: str) -> np.ndarray:
    img = image.astype(np.float32) / 255
    label, alpha = unmix(img, estimate_background(img))
    return (label == _PALETTE_NAMES.index(colour)) & (alpha > 0.5)


def objects(prompt: str) -> list[tuple[str, str]]:
    """(colour, shape) of each object the prompt names, in order: "a red circle left of a blue square"."""
    words = prompt.split()
    return [(w, words[i + 1]) for i, w in enumerate(words[:-1]) if w in _PALETTE_NAMES and words[i + 1] in SHAPES]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/shapes-lidit")
    ap.add_argument("--seeds", type=int, default=8)
    args = ap.parse_args()
    studio = Studio()
    print(f"{args.model}: share of a word's heat on its object's pixels (uniform = their area share)\n")
    print("| prompt | token | on its object | area | on the other object | area | per layer (on its object) |")
    print("|---|---|---:|---:|---:|---:|---|")
    for prompt in PROMPTS:
        named = objects(prompt)
        gens = studio.generate(args.model, prompt, list(range(args.seeds)))
        layers = gens[0].attention.layers
        for k, (colour, shape) in enumerate(named):
            other = named[1 - k][0] if len(named) == 2 else None
            for word in (colour, shape):
                rows = []
                for g in gens:
                    ti = next(i for i, t in enumerate(g.attention.tokens) if t.strip() == word)
                    own, oth = colour_mask(g.image, colour), colour_mask(g.image, other) if other else None
                    if not own.any():
                        continue  # the object's colour was not drawn: nothing to look at
                    heat = g.attention.heat()[ti].numpy()
                    per_layer = [g.attention.heat([n])[ti].numpy() for n in layers]
                    rows.append((heat[own].sum() / heat.sum(), own.mean(),
                                 heat[oth].sum() / heat.sum() if other is not None and oth.any() else np.nan,
                                 oth.mean() if other is not None else np.nan,
                                 [h[own].sum() / h.sum() for h in per_layer]))
                if not rows:
                    print(f"| {prompt} | {word} | (its colour never drawn) | | | | |")
                    continue

                def m(j):
                    vals = [r[j] for r in rows if not np.isnan(r[j])]
                    return float(np.mean(vals)) if vals else float("nan")

                layer = np.mean([r[4] for r in rows], 0)
                print(f"| {prompt} | {word} | {m(0):.2f} | {m(1):.2f} | {m(2):.2f} | {m(3):.2f} | "
                      + " ".join(f"{n.rsplit('.', 1)[0]}={v:.2f}" for n, v in zip(layers, layer)) + " |")


if __name__ == "__main__":
    main()
