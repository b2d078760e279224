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


def test_train_takes_dotted_overrides_before_and_after_its_options(monkeypatch, capsys):
    from llmdiff import cli

    seen = {}
    monkeypatch.setitem(cli.COMMANDS, "train", lambda args: seen.update(vars(args)))
    assert cli.main(["train", "c.yaml", "train.steps=3", "--run-dir", "r", "train.lr=0.1", "--resume"]) == 0
    assert seen["overrides"] == ["train.steps=3", "train.lr=0.1"]
    assert (seen["run_dir"], seen["resume"]) == ("r", True)
    assert cli.main(["train", "c.yaml", "--run-dir", "r", "--steps=3"]) == 2  # an unknown option stays an error
    assert "unrecognized arguments: --steps=3" in capsys.readouterr().err
    assert cli.main(["eval", "--images", "i", "--out", "o", "x=1"]) == 2  # commands without overrides refuse them
    assert "unrecognized arguments: x=1" in capsys.readouterr().err


def test_every_model_kind_names_one_class_and_a_folder_finds_it_by_name():
    from llmdiff.denoisers import KINDS, denoiser_class, model_class

    classes = [denoiser_class(kind) for kind in KINDS]
    assert len(set(classes)) == len(KINDS)
    assert [model_class(cls.__name__) for cls in classes] == classes
    with pytest.raises(LLMDiffError, match="'UNet2DConditionModel' is not an llmdiff model"):
        model_class("UNet2DConditionModel")
    with pytest.raises(LLMDiffError, match="model.kind must be one of lidit, unet, unet_adapter"):
        load_config(None, ["model.kind=dit"])


def test_generate_offers_the_samplers_values_and_limits(monkeypatch, capsys):
    """--steps and --guidance-scale take exactly what SampleConfig accepts, --scheduler the sampler's schedulers."""
    from llmdiff import cli
    from llmdiff.config import GUIDANCE_SCALE, SAMPLE_STEPS
    from llmdiff.diffusion import SCHEDULERS

    seen = {}
    monkeypatch.setitem(cli.COMMANDS, "generate", lambda args: seen.update(vars(args)))
    for option, (lo, hi) in (("--steps", SAMPLE_STEPS), ("--guidance-scale", GUIDANCE_SCALE)):
        for value, code in ((lo, 0), (hi, 0), (hi + 1, 2), (lo - 1, 2)):
            assert cli.main(["generate", "a red circle", option, str(value)]) == code, (option, value)
    for scheduler in SCHEDULERS:
        assert cli.main(["generate", "a red circle", "--scheduler", scheduler]) == 0
        assert seen["scheduler"] == scheduler
    capsys.readouterr()
    assert cli.main(["generate", "a red circle", "--scheduler", "euler"]) == 2
    error = capsys.readouterr().err
    assert "invalid choice: 'euler'" in error and all(scheduler in error for scheduler in SCHEDULERS)
