"""An experiment's report compares every variant with its baseline prompt by prompt (paired bootstrap)."""

import json

import numpy as np
import pytest
import yaml

from llmdiff.errors import LLMDiffError
from llmdiff.evaluation.stats import read_per_prompt
from llmdiff.experiments import load_spec, write_report


def _experiment(tmp_path, **extra):
    tmp_path.mkdir(parents=True, exist_ok=True)
    base = tmp_path / "base.yaml"
    base.write_text("name: base\n")
    spec_path = tmp_path / "exp.yaml"
    spec_path.write_text(yaml.safe_dump({"name": "t", "base": str(base), "steps": 2, "seeds": [0, 1],
                                         "suites": ["geneval", "dense"],
                                         "variants": {"base": {}, "better": {}, "old": {}}, **extra}))
    out = tmp_path / "results" / "t"
    (out / "variants").mkdir(parents=True)
    return load_spec(spec_path), out


def _record(variant: str, seed: int, out, pass_rate: float | None):
    """A run's result; with a pass rate, per-prompt scores of 48 position prompts and 16 dense prompts."""
    summaries = {suite: {"benchmarks": {bench: {"overall": pass_rate or 0.5, "tasks": {tag: {
        "accuracy": pass_rate or 0.5, "n": 8}}}}} for suite, bench, tag in
        (("geneval", "geneval", "position"), ("dense", "dpg", "dense"))}
    result = {"variant": variant, "seed": seed, "steps": 2, "train_minutes": 1.0, "summaries": summaries}
    if pass_rate is not None:
        rng = np.random.default_rng(seed)
        result["per_prompt"] = {
            "geneval": {"position": {str(i): float(rng.binomial(4, pass_rate) / 4) for i in range(48)}},
            "dense": {"dense": {str(i): float(np.clip(pass_rate + rng.normal(0, 0.05), 0, 1)) for i in range(16)}}}
    (out / "variants" / f"{variant}-s{seed}.json").write_text(json.dumps(result))


def test_report_gives_each_variant_a_paired_interval_and_a_dash_without_per_prompt_scores(tmp_path):
    spec, out = _experiment(tmp_path)
    for seed in (0, 1):
        _record("base", seed, out, 0.3)
        _record("better", seed, out, 0.7)
    _record("old", 0, out, None)  # recorded before results carried per-prompt scores
    report = write_report(spec, out)
    paired = report["paired"]
    assert paired["baseline"] == "base" and set(paired["variants"]) == {"better", "old"}
    better = paired["variants"]["better"]["geneval"]
    assert better["n_prompts"] == 48 and 0 < better["ci95"][0] < better["diff"] < better["ci95"][1]
    assert paired["variants"]["old"] == {"geneval": None, "dense": None}
    assert json.loads((out / "results.json").read_text())["paired"] == paired
    md = (out / "results.md").read_text()
    d = paired["variants"]["better"]["dense"]
    assert f"+{d['diff']:.3f} [+{d['ci95'][0]:.3f}, +{d['ci95'][1]:.3f}]" in md
    assert "| old | - | - |" in md
    for plot in ("geneval_overall.png", "dense_overall.png"):
        assert (out / plot).is_file()


def test_an_experiment_may_name_its_baseline(tmp_path):
    spec, out = _experiment(tmp_path, baseline="better")
    for variant in ("base", "better"):
        _record(variant, 0, out, 0.3 if variant == "base" else 0.7)
    paired = write_report(spec, out)["paired"]
    assert paired["baseline"] == "better" and set(paired["variants"]) == {"base"}
    assert paired["variants"]["base"]["geneval"]["ci95"][1] < 0
    spec, out = _experiment(tmp_path / "other", baseline="missing")
    _record("base", 0, out, 0.3)
    with pytest.raises(LLMDiffError, match="baseline 'missing' is not a variant"):
        write_report(spec, out)


def test_a_runs_per_prompt_record_comes_from_its_evaluation(tmp_path):
    rows = [{"tag": "position", "prompt_index": 0, "correct": True}, {"tag": "position", "prompt_index": 0, "correct": False},
            {"tag": "dense", "prompt_index": 1, "correct": False, "score": 0.8}]
    for suite in ("geneval", "dense"):
        (tmp_path / suite / "eval").mkdir(parents=True)
        (tmp_path / suite / "eval" / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    record = read_per_prompt(tmp_path, ["geneval", "dense", "lexical"])
    assert record["dense"] == {"position": {"0": 0.5}, "dense": {"1": 0.8}}
    assert "lexical" not in record  # not evaluated: no interval for it
