"""Where a trained LI-DiT loses a relation's side: the text, the image tokens, or its first guess.

    python scripts/relation_tokens.py models/shapes-lidit [MORE MODELS] --out docs/lidit/relation_tokens \
        [--names default,...]

For prompt pairs that differ only in the relation's direction ("a circle to the left of a square" against
"... to the right of ..."), the tokens the denoiser cross-attends to are compared position by position
(1 - cosine similarity), split into the tokens before the relation word (the subject), the relation word
itself, and the tokens after it (the reference): once as the text side's input (the LLM's features after
the connector's standardisation and projection) and once as its output (after the token refiner), at the
probe's high and middle noise levels (the refiner is conditioned on the timestep). A causal LLM's subject
tokens are the same in both prompts; only a bidirectional refiner (or an echoed prompt) can tell them the
direction, and this measures how much it does.

The image side needs the other half: a cross-attention query has to know where it is to take the subject
or the reference. For each block with cross-attention, a ridge read-out of the token's column and row from
the query's input (the normalised residual stream), fitted on half of 16 noised images and scored (R^2) on
the other half, at the same two noise levels.

And the output: at the highest noise levels the model's predicted clean image is its guess of the mean image
for the prompt, which for "a red circle to the left of a blue square" has more red on the left. For a
horizontal and a vertical relation with a red subject and a blue reference, the red-minus-blue difference
between the subject's half of the predicted image and the other half (64 noise draws), once for each
direction of the relation: a model that reads the direction gives a positive number for both; one that does
not draws the same mean image for both prompts, so the two numbers have opposite signs. This part works for
any denoiser (a U-Net too); the first two need an LI-DiT.

Writes tokens.json and tokens.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from llmdiff.cli import run_script
from llmdiff.errors import LLMDiffError
from llmdiff.evaluation.probe import NOISE_LEVELS, differing_token, prompt_tokens
from llmdiff.pipelines import load_pipeline
from llmdiff.utils import atomic_write_text

PAIRS = [
    ("a photo of a circle to the left of a square", "a photo of a circle to the right of a square"),
    ("a photo of a triangle to the right of a cross", "a photo of a triangle to the left of a cross"),
    ("a photo of a square above a triangle", "a photo of a square below a triangle"),
    ("a red circle to the left of a blue square", "a red circle to the right of a blue square"),
    ("a green cross below a yellow triangle", "a green cross above a yellow triangle"),
]
PARTS = ("subject", "relation", "reference")
LEVELS = ("high", "middle")


def _distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (1 - torch.nn.functional.cosine_similarity(a, b, dim=-1)).clamp_min(0)


def _parts(d: torch.Tensor, first: int, n: int) -> dict[str, float]:
    """Mean distance over the tokens before the first differing token, that token, and the rest of the prompt."""
    return {"subject": float(d[:first].mean()), "relation": float(d[first]), "reference": float(d[first + 1:n].mean())}


@torch.no_grad()
def measure(pipe) -> dict[str, list[dict]]:
    """Per text stream (one per LLM reading, e.g. "gemma3-270m" and "gemma3-270m echo"), the rows of every pair."""
    model = pipe.denoiser
    if not hasattr(model, "text"):
        raise LLMDiffError(f"{type(model).__name__} has no token refiner to measure; give LI-DiT model folders")
    encoders = pipe.load_encoders()
    if len({e.tokenizer.name_or_path for e in encoders}) > 1:
        raise LLMDiffError("relation_tokens.py compares token positions, so every LLM the model reads must share "
                           "one tokenizer; this model's do not")
    names = [f"{k}: {e.config.model}" + (" echo" if e.config.echo else "") for k, e in enumerate(encoders)]
    rows: dict[str, list[dict]] = {name: [] for name in names}
    for a, b in PAIRS:
        texts, _ = pipe.encode_prompt([a, b], None, False, 1)
        tokens_a = prompt_tokens(pipe, a)
        if len(tokens_a) != len(prompt_tokens(pipe, b)):
            raise LLMDiffError(f"the pair {a!r} / {b!r} must have as many tokens in both prompts")
        if len(texts) > 1 and any(t.prompt_mask is not None for t in texts):
            raise LLMDiffError("relation_tokens.py measures several LLM streams only when none keeps an instruction")
        # prompt_tokens counts the learnt null token in front, which the text side's output does not have
        first = differing_token(pipe, a, b) - 1
        start, n = tokens_a[0][0] - 1, len(tokens_a)
        inputs = [conn(t.features) * t.mask[..., None] for conn, t in zip(model.text.connectors, texts)]
        outputs = {level: model.text(texts, torch.full((2,), NOISE_LEVELS[level] * 1000))[0] for level in LEVELS}
        offset = 0
        for name, x in zip(names, inputs):  # the text side concatenates its streams along the sequence
            row = {"a": a, "b": b, "input": _parts(_distance(x[0], x[1])[start:], first - start, n)}
            for level, tokens in outputs.items():
                y = tokens[:, offset:offset + x.shape[1]]
                row[level] = _parts(_distance(y[0], y[1])[start:], first - start, n)
            rows[name].append(row)
            offset += x.shape[1]
    return rows


@torch.no_grad()
def position_readout(pipe, n_images: int = 16, seed: int = 0) -> dict[str, dict]:
    """{block: {level: {"column": R^2, "row": R^2}, "grid": "HxW"}} of a linear read-out of each image token's
    grid position from its cross-attention query input."""
    from llmdiff.denoisers.lidit import LIDiTBlock
    from llmdiff.diffusion import add_noise

    model = pipe.denoiser
    inputs: dict[str, list[torch.Tensor]] = {}
    hooks = [block.norm2.register_forward_hook(lambda m, a, out, name=name: inputs.setdefault(name, []).append(out))
             for name, block in model.named_modules() if isinstance(block, LIDiTBlock) and not block.joint]
    prompts = [a for a, _ in PAIRS] * (n_images // len(PAIRS) + 1)
    texts, _ = pipe.encode_prompt(prompts[:n_images], None, False, 1)
    gen = torch.Generator().manual_seed(seed)
    x0 = pipe(prompt_embeds=texts, generator=gen, output_type="latent").images
    try:
        for level in LEVELS:
            noise = torch.randn(x0.shape, generator=gen)
            model(*add_noise(model.config.objective, x0, noise, torch.full((n_images,), NOISE_LEVELS[level])), texts)
    finally:
        for h in hooks:
            h.remove()
    half = n_images // 2
    out: dict[str, dict] = {}
    for name, per_level in inputs.items():
        out[name] = {}
        for level, x in zip(LEVELS, per_level):
            side = int(round(x.shape[1] ** 0.5))
            grid = torch.arange(x.shape[1])
            out[name][level] = {axis: _ridge_r2(x[:half], x[half:], target)
                                for axis, target in (("column", grid % side), ("row", grid // side))}
        out[name]["grid"] = f"{side}x{side}"
    return out


def _ridge_r2(train: torch.Tensor, test: torch.Tensor, target: torch.Tensor, alpha: float = 0.1) -> float:
    """R^2 on `test` (B, N, D) of a ridge regression of the per-token `target` (N,) fitted on `train`."""
    def design(x):
        x = x.reshape(-1, x.shape[-1])
        return torch.cat([x, torch.ones(len(x), 1)], 1)

    a, y = design(train), target.repeat(len(train)).float()
    w = torch.linalg.solve(a.T @ a + alpha * torch.eye(a.shape[1]), a.T @ y)
    y_test = target.repeat(len(test)).float()
    return float(1 - ((design(test) @ w - y_test) ** 2).mean() / y_test.var())


SIDE_PAIRS = [("a red circle to the left of a blue square", "a red circle to the right of a blue square"),
              ("a red circle above a blue square", "a red circle below a blue square")]
SIDE_LEVELS = (0.999, 0.97, 0.9)


@torch.no_grad()
def mean_side(pipe, n: int = 64, seed: int = 0) -> list[dict]:
    """Per relation and noise level: red-minus-blue in the subject's half minus the other half of the predicted
    clean image, for the prompt as written and for the opposite direction."""
    from llmdiff.diffusion import add_noise, predicted_clean

    model = pipe.denoiser
    objective = model.config.objective
    shape = (model.config.in_channels, model.config.sample_size, model.config.sample_size)
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for a, b in SIDE_PAIRS:
        texts, _ = pipe.encode_prompt([a, b], None, False, n)
        ta, tb = [t.select(slice(0, n)) for t in texts], [t.select(slice(n, None)) for t in texts]
        axis = -1 if "left" in a else -2  # columns for left/right, rows for above/below
        row = {"a": a, "b": b, "levels": {}}
        for level in SIDE_LEVELS:
            lv = torch.full((n,), level)
            x_t, t = add_noise(objective, torch.zeros(n, *shape), torch.randn(n, *shape, generator=gen), lv)
            sides = []
            # a's subject belongs in the first half (left, top), b's in the second
            for texts_k, first_half in ((ta, True), (tb, False)):
                x0 = predicted_clean(objective, x_t, model(x_t, t, texts_k), lv)
                if pipe.codec is not None:
                    x0 = pipe.codec.decode(x0)
                red = x0[:, 0] - x0[:, 2]
                half = red.shape[axis] // 2
                near, far = red.narrow(axis, 0, half).mean(), red.narrow(axis, half, half).mean()
                sides.append(float((near - far) if first_half else (far - near)))
            row["levels"][str(level)] = {"as_written": sides[0], "opposite": sides[1]}
        rows.append(row)
    return rows


def _mean(rows: list[dict], key: str, part: str) -> float:
    return sum(r[key][part] for r in rows) / len(rows)


def write(results: dict[str, dict], out: Path) -> None:
    atomic_write_text(out / "tokens.json", json.dumps(results, indent=2) + "\n")
    lines = ["# A relation's side: what the text tells its subject, and whether the image tokens know where "
             "they are", "",
             "1 − cosine similarity between the tokens of two prompts that differ only in the relation's "
             "direction, per part of the prompt, averaged over the pairs: the text side's input (the LLM's "
             "features, standardised and projected) and its output after the token refiner at high (0.9) and "
             "middle (0.5) noise. `python scripts/relation_tokens.py MODEL ... --out DIR`.", "",
             "| model | stream | part | input | refined, high noise | refined, middle noise |",
             "|---|---|---|---:|---:|---:|"]
    for name, result in results.items():
        for stream, rows in result["tokens"].items():
            for part in PARTS:
                lines.append(f"| {name} | {stream} | {part} | {_mean(rows, 'input', part):.4f} "
                             f"| {_mean(rows, 'high', part):.4f} | {_mean(rows, 'middle', part):.4f} |")
    lines += ["", "Whether the image tokens know where they are: R^2 of a linear read-out of each token's column "
              "and row from its cross-attention query input (held-out images), per block:", "",
              "| model | block | grid | column, high noise | row, high noise | column, middle noise "
              "| row, middle noise |", "|---|---|---|---:|---:|---:|---:|"]
    for name, result in results.items():
        for block, levels in result["positions"].items():
            cells = " | ".join(f"{levels[level][axis]:.3f}" for level in LEVELS for axis in ("column", "row"))
            lines.append(f"| {name} | {block} | {levels['grid']} | {cells} |")
    lines += ["", "Whether the predicted clean image at the highest noise levels puts the red subject on its side: "
              "red − blue in the subject's half minus the other half (64 noise draws), for each direction of "
              "the relation (positive: on its side; opposite signs: the same mean image for both directions):", "",
              "| model | relation | noise | as written | opposite direction |", "|---|---|---:|---:|---:|"]
    for name, result in results.items():
        for row in result["side"]:
            for level, v in row["levels"].items():
                lines.append(f"| {name} | {row['a']} | {level} | {v['as_written']:+.3f} | {v['opposite']:+.3f} |")
    lines += ["", "Per pair (subject / relation / reference):", ""]
    for name, result in results.items():
        for stream, rows in result["tokens"].items():
            lines += [f"**{name}**, {stream}", ""]
            for r in rows:
                cells = "; ".join(f"{key} " + " / ".join(f"{r[key][p]:.4f}" for p in PARTS)
                                  for key in ("input",) + LEVELS)
                lines.append(f"- \"{r['a']}\" against \"{r['b']}\": {cells}")
            lines.append("")
    atomic_write_text(out / "tokens.md", "\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", type=Path, nargs="+",
                   help="model folders (the token and position tables need LI-DiT models; other denoisers get the "
                        "high-noise table only)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--names", help="comma-separated names for the models in the report (default: their paths)")
    args = p.parse_args()
    names = args.names.split(",") if args.names else [str(m) for m in args.models]
    if len(names) != len(args.models):
        p.error(f"--names has {len(names)} names for {len(args.models)} models; give one name per model")
    results = {}
    for name, folder in zip(names, args.models):
        pipe = load_pipeline(folder)
        lidit = hasattr(pipe.denoiser, "text")  # the token and position measurements need LI-DiT's text side and blocks
        results[name] = {"tokens": measure(pipe) if lidit else {}, "positions": position_readout(pipe) if lidit else {},
                         "side": mean_side(pipe)}
    args.out.mkdir(parents=True, exist_ok=True)
    write(results, args.out)
    print((args.out / "tokens.md").read_text())


if __name__ == "__main__":
    run_script(main)
