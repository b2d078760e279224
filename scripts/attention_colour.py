"""Where a colour word's cross-attention goes: on the object drawn in that colour, or spread over the image.

    python scripts/attention_colour.py [--model models/shapes-lidit] [--seeds 8]

For prompts with one or two coloured objects, the studio's heat map of each colour token (mean over layers
and steps, and per layer) is compared with the pixels the evaluator assigns to that colour: the share of the
token's heat that falls on them, next to their share of the image (what a uniform map would give), and the
same for the other colour's object (does "red" look at the red object or at any object?). Prints a table.
"""

import argparse

import numpy as np

from llmdiff.evaluation.detect import _PALETTE_NAMES, estimate_background, unmix
from llmdiff.studio import Studio

PROMPTS = ["a red circle", "a blue square", "a red circle to the left of a blue square",
           "a green triangle above a yellow cross"]


def colour_mask(image: np.ndarray, colour: str) -> np.ndarray:
    img = image.astype(np.float32) / 255
    label, alpha = unmix(img, estimate_background(img))
    return (label == _PALETTE_NAMES.index(colour)) & (alpha > 0.5)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/shapes-lidit")
    ap.add_argument("--seeds", type=int, default=8)
    args = ap.parse_args()
    studio = Studio()
    print(f"{args.model}: share of a colour token's heat on the pixels of that colour (uniform = their area share)\n")
    print("| prompt | token | on its colour | area | on the other colour | area | per layer (on its colour) |")
    print("|---|---|---:|---:|---:|---:|---|")
    for prompt in PROMPTS:
        colours = [w for w in prompt.split() if w in _PALETTE_NAMES]
        gens = studio.generate(args.model, prompt, list(range(args.seeds)))
        layers = gens[0].attention.layers
        for c in colours:
            other = next((o for o in colours if o != c), None)
            rows = []
            for g in gens:
                ti = next(i for i, t in enumerate(g.attention.tokens) if t.strip() == c)
                own, oth = colour_mask(g.image, c), colour_mask(g.image, other) if other else None
                if not own.any():
                    continue  # the colour was not drawn: nothing to look at
                heat = g.attention.heat()[ti].numpy()
                per_layer = [g.attention.heat([n])[ti].numpy() for n in layers]
                rows.append((heat[own].sum() / heat.sum(), own.mean(),
                             heat[oth].sum() / heat.sum() if other is not None and oth.any() else np.nan,
                             oth.mean() if other is not None else np.nan,
                             [h[own].sum() / h.sum() for h in per_layer]))
            if not rows:
                print(f"| {prompt} | {c} | (colour never drawn) | | | | |")
                continue
            def m(k):
                vals = [r[k] for r in rows if not np.isnan(r[k])]
                return float(np.mean(vals)) if vals else float("nan")

            layer = np.mean([r[4] for r in rows], 0)
            print(f"| {prompt} | {c} | {m(0):.2f} | {m(1):.2f} | {m(2):.2f} | {m(3):.2f} | "
                  + " ".join(f"{n.split('.cross_attn')[0]}={v:.2f}" for n, v in zip(layers, layer)) + " |")


if __name__ == "__main__":
    main()
