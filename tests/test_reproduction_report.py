"""scripts/reproduction_report.py: verdicts from paired intervals, on synthetic per-prompt results."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "reproduction_report.py"
spec = importlib.util.spec_from_file_location("reproduction_report", SCRIPT)
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)


def write_runs(results: Path, variant: str, scores_by_seed: list[list[float]]) -> None:
    folder = results / "claims" / "variants"
    folder.mkdir(parents=True, exist_ok=True)
    for seed, scores in enumerate(scores_by_seed):
        per_prompt = {"dense": {"dense": {str(i): s for i, s in enumerate(scores)}},
                      "geneval": {"single_object": {str(i): 0.7 for i in range(len(scores))}}}
        (folder / f"{variant}-s{seed}.json").write_text(json.dumps({"variant": variant, "seed": seed,
                                                                    "per_prompt": per_prompt}))


@pytest.mark.parametrize("ci, expect, verdict", [([0.01, 0.05], 1, "holds"), ([0.01, 0.05], -1, "contradicted"),
                                                  ([-0.01, 0.05], 1, "cannot separate at this scale"),
                                                  ([-0.05, -0.01], 0, "contradicted"),
                                                  ([-0.05, 0.01], 0, "cannot separate at this scale")])
def test_verdicts(ci, expect, verdict):
    assert report.verdict(ci, expect) == verdict


def test_rows_pair_the_same_prompts_and_report_seeds_and_the_baselines_geneval(tmp_path):
    write_runs(tmp_path, "base", [[0.2] * 40, [0.3] * 40])
    write_runs(tmp_path, "better", [[0.5] * 40, [0.6] * 40, [0.7] * 40])
    claims = [{"claim": "c", "paper": "p", "experiment": "claims", "variant": "better", "baseline": "base",
               "suites": ["dense", "compbench"], "expect": 1}]
    dense, compbench = report.rows(claims, tmp_path)
    assert dense["seeds"] == [0.5, 0.6, 0.7] and dense["baseline_seeds"] == [0.2, 0.3]
    assert dense["diff_mean"] == pytest.approx(0.35) and dense["verdict"] == "holds"
    assert dense["baseline_geneval"] == pytest.approx(0.7)
    assert compbench["verdict"] == "not run" and compbench["diff_mean"] is None  # no compbench results
    text = report.markdown([dense, compbench])
    assert "+0.350" in text and "not run yet" in text.lower() and "‡" in text  # the baseline has 2 seeds
