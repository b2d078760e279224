"""The papers' claims against our runs: docs/reproduction/README.md, claims.json and forest.png.

    python scripts/reproduction_report.py [--claims configs/reproduction/claims.yaml] [--results docs/results]

Each claim of configs/reproduction/claims.yaml compares a variant with a baseline of one experiment on some suites. For
every suite: the variant's score per training seed, the mean difference from the baseline over the same prompts and
sampling seeds, its two-level paired bootstrap 95 % interval (training seeds, then prompts: evaluation/stats.py), the
baseline's GenEval, and a verdict: *holds* when the interval excludes zero on the paper's side, *contradicted* when
it excludes zero on the other side (or at all, for a claim of no difference), else *cannot separate at this scale*.
A claim whose runs are not all there yet is listed as *not run* with the command that runs it. Rerun this script
after the experiments.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from llmdiff.config import read_yaml_mapping
from llmdiff.evaluation.stats import paired_bootstrap, suite_score
from llmdiff.utils import atomic_write_text
from llmdiff.viz import pyplot

ROOT = Path(__file__).resolve().parents[1]
COMPETENT = 0.60  # a baseline below this GenEval cannot show much: marked in the table
MIN_SEEDS = 3  # seeds per variant for a published claim


def load_runs(results: Path, experiment: str, variant: str) -> list[dict]:
    """Every recorded run (one per training seed) of a variant, in seed order."""
    folder = results / experiment / "variants"
    runs = [json.loads(p.read_text()) for p in sorted(folder.glob(f"{variant}-s*.json"))]
    return [r for r in runs if r.get("variant") == variant]


def geneval(runs: list[dict]) -> float | None:
    scores = [r["per_prompt"]["geneval"] for r in runs if "geneval" in r.get("per_prompt", {})]
    return float(np.mean([suite_score(s) for s in scores])) if scores else None


def verdict(ci: list[float], expect: int) -> str:
    separated = ci[0] > 0 or ci[1] < 0
    if not separated:
        return "cannot separate at this scale"
    if expect == 0:
        return "contradicted"
    return "holds" if (ci[0] > 0) == (expect > 0) else "contradicted"


def command(claim: dict) -> str:
    return (f"llmdiff experiment configs/experiments/{claim['experiment']}.yaml --variants "
            f"{claim['variant']},{claim['baseline']} --runs ~/llmdiff-runs/experiments --jobs 2")


def rows(claims: list[dict], results: Path) -> list[dict]:
    out = []
    for claim in claims:
        variant = load_runs(results, claim["experiment"], claim["variant"])
        baseline = load_runs(results, claim["experiment"], claim["baseline"])
        for suite in claim["suites"]:
            row = {"claim": claim["claim"], "paper": claim["paper"], "variant": claim["variant"],
                   "baseline": claim["baseline"], "experiment": claim["experiment"], "suite": suite,
                   "metric": f"{suite}/overall", "expect": claim["expect"], "command": command(claim),
                   "seeds": None, "baseline_seeds": None, "diff_mean": None, "ci95": None, "verdict": "not run",
                   "baseline_geneval": geneval(baseline)}
            have = [r for r in variant if suite in r.get("per_prompt", {})]
            base = [r for r in baseline if suite in r.get("per_prompt", {})]
            if have and base:
                row["seeds"] = [round(suite_score(r["per_prompt"][suite]), 4) for r in have]
                row["baseline_seeds"] = [round(suite_score(r["per_prompt"][suite]), 4) for r in base]
                paired = paired_bootstrap([r["per_prompt"][suite] for r in have],
                                          [r["per_prompt"][suite] for r in base])
                row["diff_mean"], row["ci95"] = round(paired["diff"], 4), [round(x, 4) for x in paired["ci95"]]
                row["verdict"] = verdict(paired["ci95"], claim["expect"])
            out.append(row)
    return out


def markdown(table: list[dict]) -> str:
    measured = [r for r in table if r["verdict"] != "not run"]
    lines = ["# The papers' claims, rerun", "",
             "Each row compares a variant with its baseline on one held-out suite: the same data, prompts and sampling "
             "seeds, each variant trained with several seeds at the screen budget (`configs/experiments/claims.yaml`: "
             "2400 steps x 64 on the default's recipe). *ours* is the variant's score (mean over seeds, then each "
             "seed's), *diff* the variant minus the baseline with its two-level paired bootstrap 95 % interval "
             "(training seeds, then prompts). "
             "*holds*: the interval excludes zero on the paper's side; *contradicted*: on the other side (or at all, "
             "for a claim of no difference); otherwise *cannot separate at this scale*. "
             f"A baseline below GenEval {COMPETENT:.2f} is marked (†): it may be too weak to show the effect; a "
             f"variant with fewer than {MIN_SEEDS} seeds is marked (‡). Built by `python scripts/reproduction_report.py` "
             "from docs/results; `claims.json` holds the same rows.", "",
             "| claim | paper | suite | ours (seeds) | diff [95 % interval] | verdict | baseline GenEval |",
             "|---|---|---|---|---|---|---:|"]
    for r in measured:
        seeds = ", ".join(f"{s:.3f}" for s in r["seeds"])
        low_seeds = " ‡" if len(r["seeds"]) < MIN_SEEDS or len(r["baseline_seeds"]) < MIN_SEEDS else ""
        weak = r["baseline_geneval"] is not None and r["baseline_geneval"] < COMPETENT
        base = "-" if r["baseline_geneval"] is None else f"{r['baseline_geneval']:.3f}" + (" †" if weak else "")
        lines.append(f"| {r['claim']} (`{r['variant']}` against `{r['baseline']}`) | {r['paper']} | {r['suite']} | "
                     f"{np.mean(r['seeds']):.3f} ({seeds}){low_seeds} | {r['diff_mean']:+.3f} "
                     f"[{r['ci95'][0]:+.3f}, {r['ci95'][1]:+.3f}] | {r['verdict']} | {base} |")
    if not measured:
        lines.append("| (no claim has its runs yet) | | | | | | |")
    pending = {}
    for r in table:
        if r["verdict"] == "not run":
            pending.setdefault((r["claim"], r["variant"], r["baseline"], r["command"]), []).append(r["suite"])
    if pending:
        lines += ["", "Not run yet (each command trains what is missing and can be stopped and started again; "
                  "the runs resume from their checkpoints):", ""]
        lines += [f"- {claim} (`{variant}` against `{baseline}`; {', '.join(suites)}): `{cmd}`"
                  for (claim, variant, baseline, cmd), suites in pending.items()]
    if measured:
        lines += ["", "![differences with their intervals](forest.png)"]
    return "\n".join(lines) + "\n"


def forest(table: list[dict], path: Path) -> None:
    """Every measured difference with its interval, one line per claim and suite."""
    measured = [r for r in table if r["verdict"] != "not run"]
    if not measured:
        return
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(measured) + 1))
    for i, r in enumerate(reversed(measured)):
        colour = {"holds": "#2a9d4a", "contradicted": "#c0392b"}.get(r["verdict"], "#555555")
        ax.plot(r["ci95"], [i, i], color=colour, lw=2)
        ax.plot([r["diff_mean"]], [i], "o", color=colour)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(range(len(measured)))
    ax.set_yticklabels([f"{r['variant']} vs {r['baseline']} ({r['suite']})" for r in reversed(measured)], fontsize=7)
    ax.set_xlabel("variant minus baseline (paired 95 % interval)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--claims", type=Path, default=ROOT / "configs" / "reproduction" / "claims.yaml")
    p.add_argument("--results", type=Path, default=ROOT / "docs" / "results")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "reproduction")
    args = p.parse_args()
    claims = read_yaml_mapping(args.claims, "claims file")["claims"]
    table = rows(claims, args.results)
    args.out.mkdir(parents=True, exist_ok=True)
    keys = ("claim", "paper", "variant", "baseline", "suite", "metric", "seeds", "diff_mean", "ci95", "verdict",
            "baseline_geneval", "baseline_seeds", "experiment", "expect", "command")
    atomic_write_text(args.out / "claims.json", json.dumps([{k: r[k] for k in keys} for r in table], indent=2) + "\n")
    forest(table, args.out / "forest.png")
    atomic_write_text(args.out / "README.md", markdown(table))
    done = sum(r["verdict"] != "not run" for r in table)
    print(f"{done} of {len(table)} claim rows measured; wrote {args.out}/README.md, claims.json")


if __name__ == "__main__":
    main()
