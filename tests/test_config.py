"""Experiment configs: settings a model kind would drop are refused, and every shipped config passes."""

import re
from pathlib import Path

import pytest

from llmdiff.config import load_config
from llmdiff.errors import LLMDiffError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("overrides,word", [
    (["model.kind=unet"], "text.refiner_depth=2"),
    (["model.kind=unet", "text.refiner_depth=0"], "text.standardize=true"),
    (["model.kind=unet", "text.refiner_depth=0", "text.standardize=false", "text.connector=layer_mix"],
     "text.connector=layer_mix"),
    (["model.kind=unet", "text.refiner_depth=0", "text.standardize=false",
      "text.encoders=[{model: smollm2-135m}, {model: minilm-l6}]"], "2 encoders"),
    (["model.base=models/shapes-unet-base"], "model.base="),
    (["model.kind=unet_adapter", "model.base=models/shapes-unet-base", "text.refiner_depth=0",
      "text.standardize=false", "model.preset=sd15"], "model.preset"),
])
def test_settings_a_model_kind_does_not_use_are_refused_not_dropped(overrides, word):
    with pytest.raises(LLMDiffError, match=re.escape(word)) as e:
        load_config(None, overrides)
    assert "\n" not in str(e.value)


def test_every_shipped_config_and_experiment_variant_uses_only_what_its_kind_reads():
    from llmdiff.experiments import load_spec, variant_config

    for path in sorted(CONFIGS.glob("*.yaml")):
        load_config(path)
    for path in sorted((CONFIGS / "experiments").glob("*.yaml")):
        spec = load_spec(path)
        for name, overrides in spec.variants.items():
            if "_model" not in overrides:  # a shipped model reused as is
                variant_config(spec, name, 0)
