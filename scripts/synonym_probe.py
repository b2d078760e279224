"""Do a prompt encoder's features put the paraphrase suite's unseen words next to the words they mean?

    python scripts/synonym_probe.py --out docs/lidit/synonyms.md

For every shape and colour word of the paraphrase phrasebook that no training caption uses
("three-sided shape", "scarlet", ...), the feature of the last token of "a photo of a WORD" (shapes) or
"a photo of a WORD circle" (colours) is compared, by cosine after per-channel standardisation over all
phrases of the group, with the same phrase for every training word. A word counts as understood when its
nearest training word means the same. This bounds what a denoiser can generalise to from the text side:
if the encoder already places "three-sided shape" next to "triangle" and the model still does not draw a
triangle, the denoiser, not the encoder, is what ignores the meaning.

The second measure reads the words in whole captions, as the denoiser gets them: a linear read-out (ridge
regression onto one-hot classes, on standardised features) of the shape from the feature of a shape word's last
token, and of the colour from a colour word's, fitted on single-object training captions and tested on the
evaluation and paraphrase phrasebooks' captions (truncated after the word: a causal LLM's feature of a token does
not depend on what follows). Training words in unseen sentence frames against unseen words in seen frames
separates the two halves of the paraphrase suite's change. The third measure reads an object's colour from its
noun's token, which tells whether a colour named after its noun ("a square in blue") reaches the noun.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from llmdiff.encoders import EncoderConfig, load_encoder
from llmdiff.shapes.captions import EVAL, PARAPHRASE, TRAIN, Phrasebook, caption
from llmdiff.shapes.world import COLORS, SHAPES, SIZES, ObjectSpec, SceneSpec
from llmdiff.utils import atomic_write_text
from paraphrase_factors import FACTORS, phrasebook as factor_phrasebook  # scripts/, on the path when this script runs

ENCODERS = [  # (label, config)
    ("SmolLM2-135M, instruction, layer -3 (the default's)", EncoderConfig(model="smollm2-135m", layers=-3,
                                                                           instruction="default")),
    ("SmolLM2-135M, last layer", EncoderConfig(model="smollm2-135m", layers="last")),
    ("Gemma 3 270M, layer -3", EncoderConfig(model="gemma3-270m", layers=-3)),
    ("Gemma 3 270M, instruction, layer -3", EncoderConfig(model="gemma3-270m", layers=-3, instruction="default")),
    ("all-MiniLM-L6-v2 (encoder baseline)", EncoderConfig(model="minilm-l6", layers="last")),
]
# the decoder-only LLMs: a bidirectional encoder's features of a truncated caption see the truncation
READOUT_ENCODERS = [(label, cfg) for label, cfg in ENCODERS if cfg.model != "minilm-l6"]
BINDING_ENCODERS = [READOUT_ENCODERS[0],
                    ("SmolLM2-135M, instruction, layer -3, echo", EncoderConfig(model="smollm2-135m", layers=-3,
                                                                                 instruction="default", echo=True)),
                    READOUT_ENCODERS[2]]
READOUT_SETS = [  # (label, phrasebook) of the test captions; the read-out is fitted on TRAIN's
    ("eval captions", EVAL),
    ("training words, paraphrase frames", factor_phrasebook(FACTORS["+ sentence frames"])),
    ("paraphrase words, eval frames", factor_phrasebook(FACTORS["+ shape words"] + FACTORS["+ colour words"])),
    ("paraphrase captions", PARAPHRASE),
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


class WordCaption(NamedTuple):
    text: str  # a whole single-object caption
    label: str  # the class of the word looked at: its shape or its colour
    word: str
    start: int  # where the word is in the text
    end: int
    color: str  # the object's colour


def _word_captions(book: Phrasebook, field: str, n: int, seed: int) -> list[WordCaption]:
    """n random single-object scenes captioned with `book`, looking at the shape (nouns) or colour (colors) word."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        o = ObjectSpec(SHAPES[rng.integers(len(SHAPES))], list(COLORS)[rng.integers(len(COLORS))],
                       SIZES[rng.integers(len(SIZES))] if rng.random() < 0.3 else None)
        text = caption(SceneSpec((o,)), book, rng)
        label = o.shape if field == "nouns" else o.color
        words = sorted(getattr(book, field)[label], key=len, reverse=True)
        word, m = next((w, m) for w in words for m in [re.search(rf"\b{re.escape(w)}\b", text)] if m)
        out.append(WordCaption(text, label, word, m.start(), m.end(), o.color))
    return out


def _word_features(encoder, captions: list[WordCaption], whole: bool = False) -> dict[str, torch.Tensor]:
    """Features of each caption's word, read from the caption cut after the word (or the whole caption): its last
    token's, and the mean over its tokens."""
    out = encoder.encode([c.text if whole else c.text[:c.end] for c in captions])
    end = torch.tensor([len(ids) for ids in encoder.prompt_ids([c.text[:c.end] for c in captions])])
    start = torch.tensor([len(ids) for ids in encoder.prompt_ids([c.text[:c.start].rstrip() for c in captions])])
    position = torch.arange(out.mask.shape[1])
    keep = (position < end[:, None]) & (position >= start[:, None])
    f = out.features.double()
    return {"last token": f[torch.arange(len(captions)), end - 1],
            "word's tokens": (f * keep[..., None]).sum(1) / (end - start)[:, None]}


def _ridge(x: torch.Tensor, labels: list[str], classes: list[str]):
    """A linear read-out of `classes` fitted on features x (ridge regression onto one-hot targets, standardised
    features): returns the function that scores other features' labels (a 0/1 tensor, one per row)."""
    mean, std = x.mean(0), x.std(0) + 1e-6
    z = (x - mean) / std
    y = torch.nn.functional.one_hot(torch.tensor([classes.index(c) for c in labels]), len(classes)).double()
    w = torch.linalg.solve(z.T @ z + 10.0 * torch.eye(z.shape[1], dtype=z.dtype), z.T @ y)
    return lambda x, labels: ((((x - mean) / std) @ w).argmax(1) ==
                              torch.tensor([classes.index(c) for c in labels])).double()


def readout(encoder, n: int = 400) -> dict[str, dict]:
    """Accuracy of a linear read-out of the shape (nouns) and colour (colors) in each test set's captions, overall
    and for each word no training caption uses, from the word's last token and from the mean over its tokens
    ({set: {(field, feature): acc, (field, feature, "words"): {word: acc}}})."""
    result = {}
    for field, classes in (("nouns", SHAPES), ("colors", list(COLORS))):
        fit = _word_captions(TRAIN, field, n, seed=0)
        seen = {w for ws in getattr(TRAIN, field).values() for w in ws}
        tests = {}
        for label, book in READOUT_SETS:
            test = _word_captions(book, field, n // 2, seed=1)
            if field == "colors" and book.colors is PARAPHRASE.colors:  # only the colour words no training caption uses
                test = [c for c in test if c.word not in seen]
            tests[label] = (test, _word_features(encoder, test))
        for feature, x in _word_features(encoder, fit).items():
            score = _ridge(x, [c.label for c in fit], list(classes))
            for label, (test, feats) in tests.items():
                right = score(feats[feature], [c.label for c in test])
                result.setdefault(label, {})[field, feature] = float(right.mean())
                result[label][field, feature, "words"] = {
                    word: float(right[[i for i, c in enumerate(test) if c.word == word]].mean())
                    for word in sorted({c.word for c in test} - seen)}
    return result


def binding_readout(encoder, n: int = 400) -> dict[str, float]:
    """Accuracy of a linear read-out of the object's colour from its noun's last token, in whole captions, fitted on
    single-object training captions ("a blue square": the noun comes after its colour) and tested on each set."""
    def features(captions: list[WordCaption]) -> torch.Tensor:
        return _word_features(encoder, captions, whole=True)["last token"]

    fit = _word_captions(TRAIN, "nouns", n, seed=0)
    score = _ridge(features(fit), [c.color for c in fit], list(COLORS))
    result = {}
    for label, book in READOUT_SETS:
        test = _word_captions(book, "nouns", n // 2, seed=1)
        result[label] = float(score(features(test), [c.color for c in test]).mean())
    return result


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
    lines += ["## Linear read-out in whole captions", "",
              "Accuracy of a ridge read-out of the shape (4 classes) from a shape word's last token and of the colour "
              "(8 classes) from a colour word's, from the word's last token or the mean over its tokens, fitted on "
              "400 single-object training captions, tested on 200 captions of each kind (paraphrase colours: only "
              "the two unseen words, scarlet and violet).", "",
              "| encoder | test captions | shape, last token | shape, word's tokens | colour, last token "
              "| colour, word's tokens |", "|---|---|---:|---:|---:|---:|"]
    per_word = []
    keys = [(f, feature) for f in ("nouns", "colors") for feature in ("last token", "word's tokens")]
    for label, cfg in READOUT_ENCODERS:
        for test, acc in readout(load_encoder(cfg)).items():
            lines.append(f"| {label} | {test} | " + " | ".join(f"{acc[k]:.2f}" for k in keys) + " |")
            if test == READOUT_SETS[-1][0]:
                per_word += [f"- {label}, {feature}: " + ", ".join(
                    f"{w} {a:.2f}" for field in ("nouns", "colors") for w, a in acc[field, feature, "words"].items())
                    for feature in ("last token", "word's tokens")]
    lines += ["", "Each unseen word in the paraphrase captions, read as its meaning:", "", *per_word, ""]
    lines += ["## Which colour a noun's token carries", "",
              "Accuracy of a ridge read-out of an object's colour (8 classes) from its noun's last token in the whole "
              "caption, fitted on 400 single-object training captions (\"a blue square\": the colour comes first), "
              "tested on 200 captions of each kind. In the paraphrase frames the colour follows the noun (\"a square "
              "in blue\"), which a causal LLM's noun token has not read; with `echo` the features are the prompt's "
              "second reading, whose tokens have seen the whole prompt.", "",
              "| encoder | " + " | ".join(label for label, _ in READOUT_SETS) + " |", "|---|" + "---:|" * len(READOUT_SETS)]
    for label, cfg in BINDING_ENCODERS:
        acc = binding_readout(load_encoder(cfg))
        lines.append(f"| {label} | " + " | ".join(f"{acc[t]:.2f}" for t, _ in READOUT_SETS) + " |")
    lines.append("")
    atomic_write_text(args.out, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
