"""How much of an image's signal is its colour, in pixels and in an autoencoder's latents.

Scenes of one object are rendered once in every palette colour with the same shape, size and place, so that
within a group only the colour differs. For pixels (in [-1, 1], what a pixel model denoises) and the
autoencoder's normalised latents (what a latent model denoises), it reports:

* colour's share of the variance: the variance within the groups (colour alone) over the variance of all
  images (colour, shape, size and place); a denoiser's squared error weighs each part by its share;
* the RMS difference per element between two colours of the same scene, and between two scenes of the
  same colour;
* whether the colour can be told at each noise level: a rectified-flow sample x_s = (1 - s) x + s e of one
  colour, classified as the nearest of its group's clean images (scaled by 1 - s); chance is one in the
  palette's size.

    python scripts/latent_colour.py models/shapes-ae --out DIR     # a few seconds on one core
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from llmdiff.autoencoder import LatentCodec
from llmdiff.cli import run_script
from llmdiff.shapes.world import BACKGROUND, COLORS, SHAPES, SIZES, ObjectSpec, SceneSpec, render
from llmdiff.utils import atomic_write_text

NOISE_LEVELS = (0.5, 0.75, 0.9, 0.95, 0.98)


def colour_groups(n_groups: int, resolution: int = 32) -> torch.Tensor:
    """(groups, colours, 3, H, W) images in [-1, 1]: each group one shape, size and place in every colour."""
    rng = np.random.default_rng(0)
    groups = []
    for g in range(n_groups):
        shape, size = SHAPES[g % len(SHAPES)], SIZES[(g // len(SHAPES)) % len(SIZES)]
        seed = int(rng.integers(2**31))
        images = [render(SceneSpec((ObjectSpec(shape, color, size),)), np.random.default_rng(seed), resolution).image
                  for color in COLORS]
        groups.append(np.stack(images))
    x = torch.from_numpy(np.stack(groups)).float().div(127.5).sub(1.0)
    return x.permute(0, 1, 4, 2, 3).contiguous()


def _rms(d: torch.Tensor) -> float:
    """Mean over pairs of the RMS difference per element."""
    return d.pow(2).mean(dim=-1).sqrt().mean().item()


def measure_space(x: torch.Tensor, noise_draws: int = 8) -> dict:
    """The measures above for (groups, colours, ...) signals."""
    g, c = x.shape[:2]
    flat = x.reshape(g, c, -1).double()
    total = flat.reshape(g * c, -1).var(dim=0, unbiased=False).sum()
    within = flat.var(dim=1, unbiased=False).sum(dim=-1).mean()
    # every pair of colours of a scene (the mean over c x c pairs counts c zero diagonal ones: scaled back)
    colour_rms = _rms(flat[:, :, None] - flat[:, None, :]) * c / (c - 1)
    layout_rms = _rms(flat[1:] - flat[:-1])  # neighbouring groups, same colour: another shape, size or place
    gen = torch.Generator().manual_seed(0)
    accuracy = {}
    for s in NOISE_LEVELS:
        right = 0
        for _ in range(noise_draws):
            noisy = (1 - s) * flat + s * torch.randn(flat.shape, generator=gen, dtype=flat.dtype)
            dist = (noisy[:, :, None] - (1 - s) * flat[:, None, :]).pow(2).sum(dim=-1)  # (g, c, c)
            right += (dist.argmin(dim=-1) == torch.arange(c)).sum().item()
        accuracy[str(s)] = right / (noise_draws * g * c)
    return {"elements": flat.shape[-1], "colour_share": (within / total).item(), "colour_rms": colour_rms,
            "layout_rms": layout_rms, "colour_at_noise": accuracy}


def foreground_rgb(images: torch.Tensor, groups: torch.Tensor) -> dict:
    """Mean RGB (0-255) of `images` (one per group) over each group's object, and the nearest palette colour."""
    background = torch.tensor(BACKGROUND).float().div(127.5).sub(1.0).view(1, 1, 3, 1, 1)
    mask = (groups - background).abs().amax(dim=(1, 2)) > 0.1  # (groups, H, W): where any colour's object is
    rgb = (images.permute(0, 2, 3, 1)[mask].mean(dim=0) + 1).mul(127.5)
    nearest = min(COLORS, key=lambda k: sum((a - b) ** 2 for a, b in zip(COLORS[k], rgb.tolist())))
    return {"rgb": [round(v, 1) for v in rgb.tolist()], "nearest": nearest}


def write(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "latent_colour.json", json.dumps(result, indent=2) + "\n")
    spaces = result["spaces"]
    lines = [f"# Colour in pixels and in the latents of `{result['autoencoder']}`", "",
             f"{result['groups']} scenes of one object, each in all {result['colours']} palette colours "
             "(`python scripts/latent_colour.py AUTOENCODER --out DIR`). Colour share: variance within a "
             "scene's colours over all variance. RMS: per element. Colour told apart at noise s: a noised "
             f"image's nearest clean image of its scene has its colour (chance {1 / result['colours']:.3f}).", "",
             "| space | elements | colour share | colour RMS | layout RMS | "
             + " | ".join(f"told at s = {s}" for s in NOISE_LEVELS) + " |",
             "|---|---:|---:|---:|---:|" + "---:|" * len(NOISE_LEVELS)]
    for name, m in spaces.items():
        lines.append(f"| {name} | {m['elements']} | {m['colour_share']:.3f} | {m['colour_rms']:.3f} | "
                     f"{m['layout_rms']:.3f} | " + " | ".join(f"{m['colour_at_noise'][str(s)]:.3f}"
                                                               for s in NOISE_LEVELS) + " |")
    lines += ["", "The mean over the palette of each scene's images, as a denoiser predicts it while the colour is open "
              "(a latent mean decoded), over the objects' pixels:", "",
              "| space | mean RGB | nearest palette colour |", "|---|---|---|"]
    lines += [f"| {k} | {tuple(v['rgb'])} | {v['nearest']} |" for k, v in result["mean_colour"].items()]
    atomic_write_text(out / "latent_colour.md", "\n".join(lines) + "\n")
    print("\n".join(lines[4:]))
    print(f"wrote {out / 'latent_colour.md'}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("autoencoder", type=Path, help="an autoencoder folder (llmdiff autoencoder --out DIR)")
    p.add_argument("--groups", type=int, default=64, help="scenes, each drawn in every colour (at least 2)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    if args.groups < 2:
        p.error("--groups must be at least 2")
    codec = LatentCodec(args.autoencoder)
    x = colour_groups(args.groups)
    g, c = x.shape[:2]
    z = codec.encode(x.flatten(0, 1))
    z = z.reshape(g, c, *z.shape[1:])
    spaces = {"pixels": measure_space(x), "latents": measure_space(z)}
    means = {"pixels": x.mean(dim=1), "latents": codec.decode(z.mean(dim=1))}
    write({"autoencoder": str(args.autoencoder), "groups": g, "colours": c, "spaces": spaces,
           "mean_colour": {k: foreground_rgb(v, x) for k, v in means.items()}}, args.out)


if __name__ == "__main__":
    run_script(main)
