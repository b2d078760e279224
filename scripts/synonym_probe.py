"""Do a prompt encoder's features put the paraphrase suite's unseen words next to the words they mean?

    python scripts/synonym_probe.py --out docs/lidit/synonyms.md

For every shape and colour word of the paraphrase phrasebook that no training caption uses
("three-sided shape", "scarlet", ...), the feature of the last token of "a photo of a WORD" (shapes) or
"a photo of a WORD circle" (colours) is compared, by cosine after per-channel standardisation over all
phrases of the group, with the same phrase for every training word. A word counts as understood when its
nearest training word means the same. This bounds what a denoiser can generalise to from the text side:
if the encoder already places "three-sided shape" next to "triangle" and the model still does not draw a
triangle, the denoiser, not the encoder, is what ignores the meaning.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from llmdiff.encoders import EncoderConfig, load_encoder
from llmdiff.shapes.captions import PARAPHRASE, TRAIN
from llmdiff.utils import atomic_write_text

ENCODERS = [  # (label, config)
    ("SmolLM2-135M, instruction, layer -3 (the default's)", EncoderConfig(model="smollm2-135m", layers=-3,
                                                                           instruction="default")),
    ("SmolLM2-135M, last layer", EncoderConfig(model="smollm2-135m", layers="last")),
    ("Gemma 3 270M, layer -3", EncoderConfig(model="gemma3-270m", layers=-3)),
    ("all-MiniLM-L6-v2 (encoder baseline)", EncoderConfig(model="minilm-l6", layers="last")),
]
GROUPS = [("nouns", "a photo of a {}"), ("colors", "a photo of a {} circle")]


def _last_token(encoder, phrases: list[str]) -> torch.Tensor:
    out = encoder.encode(phrases)
    f = out.features if out.features.dim() == 3 else out.features[:, -1]
    return f[torch.arange(len(phrases)), out.mask.long().sum(1) - 1].float()


def probe(encoder) -> list[tuple[str, str, str, list[tuple[float, str]]]]:
    rows = []
    for field, frame in GROUPS:
        seen = [(k, w) for k, ws in getattr(TRAIN, field).items() for w in ws]
        known = {w for _, w in seen}
        unseen = [(k, w) for k, ws in getattr(PARAPHRASE, field).items() for w in ws if w not in known]
        f = _last_token(encoder, [frame.format(w) for _, w in seen + unseen])
        f = torch.nn.functional.normalize((f - f.mean(0)) / (f.std(0) + 1e-6), dim=-1)
        sim = f[len(seen):] @ f[:len(seen)].T
        for (meaning, word), s in zip(unseen, sim):
            top = sorted(((float(v), seen[i][1]) for i, v in enumerate(s)), reverse=True)[:3]
            rows.append((word, meaning, seen[int(s.argmax())][0], top))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    lines = ["# Unseen paraphrase words: nearest training word in the encoder's features", "",
             "Last-token features of \"a photo of a WORD\" (shapes) and \"a photo of a WORD circle\" (colours), "
             "standardised per channel, cosine similarity; `python scripts/synonym_probe.py`.", ""]
    for label, cfg in ENCODERS:
        rows = probe(load_encoder(cfg))
        right = sum(meaning == nearest for _, meaning, nearest, _ in rows)
        lines += [f"## {label}: {right}/{len(rows)} nearest to their meaning", "",
                  "| unseen word | means | nearest | top 3 (cosine) |", "|---|---|---|---|"]
        lines += [f"| {w} | {m} | {n}{'' if m == n else ' ✗'} | " + ", ".join(f"{b} {a:.2f}" for a, b in top) + " |"
                  for w, m, n, top in rows]
        lines.append("")
    atomic_write_text(args.out, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
