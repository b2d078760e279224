"""Which part of an unseen phrasing does a trained model fail on: the shape words, the colour words, the relation
and count words, or the sentence frames?

    python scripts/paraphrase_factors.py models/shapes-lidit --out DIR [--conditions ...] [--limit N]

The `paraphrase` suite changes everything at once against `geneval`'s phrasebook. Here the same scenes (the
paraphrase suite's, same order and seeds) are captioned with the evaluation phrasebook and one part swapped in
from the paraphrase phrasebook at a time, then with all of them (the `paraphrase` suite itself). Each
condition is generated with the same sampling seeds and scored with GenEval's rules. Writes factors.json and
factors.md (docs/lidit/paraphrase_factors holds the shipped model's); each condition's images and report stay in
OUT/N, N the condition's row.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from llmdiff.cli import int_in, run_script
from llmdiff.evaluation.evaluate import geneval_row, geneval_table, run_eval
from llmdiff.evaluation.model_eval import generate_suite
from llmdiff.pipelines import load_pipeline
from llmdiff.shapes.captions import EVAL, PARAPHRASE
from llmdiff.shapes.suites import geneval_suite
from llmdiff.utils import atomic_write_text

# condition -> the Phrasebook fields taken from the paraphrase phrasebook (the rest from the evaluation one)
FACTORS = {
    "eval phrasing": (),
    "+ shape words": ("nouns", "plurals"),
    "+ colour words": ("colors",),
    "+ relation and count words": ("relations", "relations_from_object", "count_words"),
    "+ sentence frames": ("single", "pair", "relation", "count", "listing", "attribute_frames", "suffixes",
                          "prefixes"),
}
FACTORS["paraphrase (all)"] = ("sizes", *(f for fields in FACTORS.values() for f in fields))


def phrasebook(fields: tuple[str, ...]):
    """The evaluation phrasebook with `fields` taken from the paraphrase phrasebook."""
    return dataclasses.replace(EVAL, name="paraphrase", **{f: getattr(PARAPHRASE, f) for f in fields})


def suite(fields: tuple[str, ...]) -> list[dict]:
    return geneval_suite(phrasebook(fields), seed=3, name="paraphrase")  # the paraphrase suite's scenes and seed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--limit", type=int_in(1, 100_000), help="score only the suite's first LIMIT prompts")
    p.add_argument("--images-per-prompt", type=int_in(1, 64), default=4)
    p.add_argument("--conditions", nargs="+", choices=list(FACTORS), default=list(FACTORS), metavar="CONDITION",
                   help="which rows to score (default: all): " + ", ".join(f"'{c}'" for c in FACTORS))
    args = p.parse_args()
    pipe = load_pipeline(args.model)
    rows, examples = {}, {}
    for i, (name, fields) in enumerate(FACTORS.items()):
        if name not in args.conditions:
            continue
        entries = suite(fields)[: args.limit]
        folder = args.out / f"{i}"
        images = generate_suite(pipe, entries, folder / "images", images_per_prompt=args.images_per_prompt)
        rows[name] = geneval_row(run_eval(images, folder / "eval", progress=False))
        examples[name] = [e["prompt"] for e in entries[1::20]]
        print(f"{name}: GenEval {rows[name]['overall']:.3f}", flush=True)
    atomic_write_text(args.out / "factors.json", json.dumps({"rows": rows, "examples": examples}, indent=2) + "\n")
    lines = [f"# Unseen phrasings, one part at a time: {args.model.name}", "",
             f"The paraphrase suite's scenes ({len(entries)} prompts x {args.images_per_prompt} images, the same "
             "sampling seeds in every row), captioned with the evaluation phrasebook and one part of the paraphrase "
             "phrasebook swapped in; the last row is the paraphrase suite. "
             f"`python scripts/paraphrase_factors.py {args.model} --out {args.out}`", "",
             *geneval_table(rows, "phrasing"), "", "Example prompts (the same scenes in every row):", ""]
    for name, prompts in examples.items():
        lines.append(f"- {name}: " + "; ".join(f"\"{q}\"" for q in prompts))
    atomic_write_text(args.out / "factors.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    run_script(main)
