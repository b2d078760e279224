"""Two-level paired bootstrap over training runs and prompts (evaluation/stats.py)."""

import numpy as np
import pytest

from llmdiff.errors import LLMDiffError
from llmdiff.evaluation.stats import paired_bootstrap, per_prompt_scores, suite_score

TASKS = {"counting": 24, "position": 48, "colors": 32}


def _record(values_by_task: dict[str, np.ndarray]) -> dict:
    """{task: {prompt index: score}} with indices running on over the tasks, as in a suite."""
    record, start = {}, 0
    for task, values in values_by_task.items():
        record[task] = {str(start + k): float(v) for k, v in enumerate(values)}
        start += len(values)
    return record


def _pass_rates(rng, p: float, images: int = 4) -> dict[str, np.ndarray]:
    return {task: rng.binomial(images, p, size=n) / images for task, n in TASKS.items()}


def test_per_prompt_scores_average_each_prompts_images():
    results = [{"tag": "counting", "prompt_index": 3, "correct": True}, {"tag": "counting", "prompt_index": 3, "correct": False},
               {"tag": "position", "prompt_index": 7, "correct": True},
               {"tag": "dense", "prompt_index": 0, "correct": False, "score": 0.75},
               {"tag": "dense", "prompt_index": 0, "correct": True, "score": 1.0}]
    assert per_prompt_scores(results) == {"counting": {"3": 0.5}, "position": {"7": 1.0}, "dense": {"0": 0.875}}


def test_a_known_difference_is_found():
    rng = np.random.default_rng(1)
    baseline = _pass_rates(rng, 0.4)
    variant = {t: np.clip(v + 0.2 + rng.normal(0, 0.1, len(v)), 0, 1) for t, v in baseline.items()}
    out = paired_bootstrap([_record(variant)], [_record(baseline)])
    assert out["n_prompts"] == sum(TASKS.values())
    assert out["diff"] == pytest.approx(suite_score(_record(variant)) - suite_score(_record(baseline)))
    low, high = out["ci95"]
    assert 0.1 < low < out["diff"] < high < 0.3


def test_pairing_narrows_the_interval_below_that_of_unrelated_prompts():
    # prompts vary far more than the variant's effect; pairing removes that variation
    rng = np.random.default_rng(2)
    baseline = {t: rng.uniform(0, 0.8, n) for t, n in TASKS.items()}
    variant = {t: v + 0.05 for t, v in baseline.items()}
    low, high = paired_bootstrap([_record(variant)], [_record(baseline)])["ci95"]
    assert low == pytest.approx(0.05) and high == pytest.approx(0.05)


def test_identical_inputs_give_an_interval_around_zero():
    record = _record(_pass_rates(np.random.default_rng(3), 0.5))
    out = paired_bootstrap([record], [record])
    assert out["diff"] == 0 and out["ci95"] == [0.0, 0.0]


def test_two_draws_of_one_model_give_an_interval_containing_zero():
    rng = np.random.default_rng(4)
    a, b = _record(_pass_rates(rng, 0.5)), _record(_pass_rates(rng, 0.5))
    low, high = paired_bootstrap([a], [b])["ci95"]
    assert low < 0 < high and high - low < 0.3


def test_the_bootstrap_is_deterministic():
    rng = np.random.default_rng(5)
    a, b = _record(_pass_rates(rng, 0.5)), _record(_pass_rates(rng, 0.6))
    assert paired_bootstrap([a], [b]) == paired_bootstrap([a], [b])
    other = paired_bootstrap([a], [b], seed=1)
    assert other["diff"] == paired_bootstrap([a], [b])["diff"] and other["ci95"] != paired_bootstrap([a], [b])["ci95"]


def test_only_prompts_both_scored_are_compared():
    a = {"counting": {"0": 1.0, "1": 0.0, "2": 1.0}}
    b = {"counting": {"1": 0.0, "2": 0.0, "3": 1.0}}
    assert paired_bootstrap([a], [b])["n_prompts"] == 2
    assert paired_bootstrap([a], [b])["diff"] == pytest.approx(0.5)
    with pytest.raises(LLMDiffError, match="share no scored prompt"):
        paired_bootstrap([a], [{"position": {"0": 1.0}}])


def test_a_difference_carried_by_one_training_seed_is_not_separated():
    # each run shifts every prompt by a constant: prompts alone would give the interval [+0.1, +0.1]; resampling the
    # variant's runs draws both from seed 0 (+0.3), both from seed 1 (-0.1) or one of each (+0.1)
    rng = np.random.default_rng(6)
    base = {t: rng.uniform(0.2, 0.6, n) for t, n in TASKS.items()}
    runs = [_record({t: v + shift for t, v in base.items()}) for shift in (0.3, -0.1)]
    out = paired_bootstrap(runs, [_record(base)])
    assert out["diff"] == pytest.approx(0.1)
    assert out["ci95"] == pytest.approx([-0.1, 0.3])
    one_seed = paired_bootstrap([runs[0]], [_record(base)])
    assert one_seed["ci95"] == pytest.approx([0.3, 0.3])


def test_consistent_seeds_keep_a_separated_interval():
    rng = np.random.default_rng(7)
    base = [_record(_pass_rates(rng, 0.4)) for _ in range(2)]
    variant = [_record({t: np.clip(np.array(list(r[t].values())) + 0.25, 0, 1) for t in TASKS}) for r in base]
    low, high = paired_bootstrap(variant, base)["ci95"]
    assert 0.1 < low < high < 0.3


def test_only_prompts_every_run_scored_are_compared():
    a = [{"counting": {"0": 1.0, "1": 0.0, "2": 1.0}}, {"counting": {"1": 1.0, "2": 1.0}}]
    b = [{"counting": {"0": 0.0, "1": 0.0, "2": 0.0}}]
    assert paired_bootstrap(a, b)["n_prompts"] == 2
    assert paired_bootstrap(a, b)["diff"] == pytest.approx(0.75)
    with pytest.raises(LLMDiffError, match="at least one scored run"):
        paired_bootstrap([], b)
