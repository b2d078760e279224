"""Training you can watch: trackers (TensorBoard), validation prompts, and the paths a config names."""

import json

import pytest

from llmdiff.config import load_config
from llmdiff.errors import LLMDiffError
from llmdiff.training import trainer as trainer_module
from llmdiff.training.trainer import SAMPLE_PROMPTS, Trainer, train, validation_prompts


def test_tensorboard_gets_scalars_and_sample_grids(tmp_path, tiny_cfg):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    prompts = ["a red circle", "two blue squares", "a green cross above a yellow triangle"]
    cfg = tiny_cfg("train.report_to=tensorboard", "train.steps=8", "train.sample_every=4",
                   f"train.validation_prompts={json.dumps(prompts)}")
    train(cfg, tmp_path / "run", progress=False)
    [events] = list((tmp_path / "run" / "logs").glob("*/events.out.tfevents.*"))
    acc = EventAccumulator(str(events.parent), size_guidance={"images": 0, "scalars": 0}).Reload()
    tags = acc.Tags()
    assert {"train/loss", "train/lr", "train/grad_norm", "train/images_per_s"} <= set(tags["scalars"])
    assert [e.step for e in acc.Scalars("train/loss")] == [2, 4, 6, 8]  # every log_every steps
    assert all(e.value > 0 for e in acc.Scalars("train/images_per_s"))
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [e.value for e in acc.Scalars("train/lr")] == pytest.approx([r["lr"] for r in log if "img_s" in r])
    grids = acc.Images("samples")
    assert [g.step for g in grids] == [4, 8]
    assert grids[0].height > 100 and grids[0].width > 100


def test_validation_prompts_from_a_list_or_a_suite(tiny_cfg):
    from llmdiff.shapes.suites import load_suite

    assert validation_prompts(tiny_cfg().train) == SAMPLE_PROMPTS
    assert validation_prompts(tiny_cfg("train.validation_prompts=[a red circle]").train) == ["a red circle"]
    suite = validation_prompts(tiny_cfg("train.validation_prompts=geneval").train)
    tags = {e["prompt"]: e["tag"] for e in load_suite("geneval")}
    assert len(suite) == 8 and len({tags[p] for p in suite}) == 6  # spread over every GenEval task
    with pytest.raises(LLMDiffError, match="validation_prompts"):
        validation_prompts(tiny_cfg("train.validation_prompts=no-such-suite").train)


def test_report_to_is_checked(monkeypatch, tmp_path, tiny_cfg):
    with pytest.raises(LLMDiffError, match="report_to must be one of none, tensorboard, wandb"):
        tiny_cfg("train.report_to=mlflow")
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(LLMDiffError, match=r"pip install 'llmdiff\[wandb\]'"):
        Trainer(tiny_cfg("train.report_to=wandb"), tmp_path / "run", progress=False)


def test_relative_paths_in_a_config_file_are_relative_to_its_folder(tmp_path, monkeypatch):
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "c.yaml").write_text("data: {world: folder, path: ../data}\nmodel: {kind: unet_adapter, base: base}\n"
                                   "text: {refiner_depth: 0, standardize: false}\n")
    monkeypatch.chdir(tmp_path / "configs")
    cfg = load_config(folder / "c.yaml", ["model.init=runs/x/model"])
    assert cfg.data.path == str(tmp_path / "data")
    assert cfg.model.base == str(folder / "base")
    assert cfg.model.init == str(folder / "runs" / "x" / "model")  # a command-line value: the working directory
    monkeypatch.chdir(tmp_path)
    assert load_config(folder / "c.yaml").data.path == str(tmp_path / "data")  # wherever it is run from


def test_every_path_is_checked_before_the_caption_cache(tmp_path, monkeypatch, tiny_cfg):
    def no_cache(cfg):
        raise AssertionError("the caption cache was built before the paths were checked")

    monkeypatch.setattr(trainer_module, "training_data", no_cache)
    cfg = tiny_cfg("data.world=folder", f"data.path={tmp_path / 'nothing'}", f"model.init={tmp_path / 'no-model'}",
                   f"text.encoders=[{{model: {tmp_path / 'llm.gguf'}}}]")
    with pytest.raises(LLMDiffError) as e:
        Trainer(cfg, tmp_path / "run", progress=False)
    msg = str(e.value)
    assert "data.path" in msg and "model.init" in msg and "text.encoders[0].model" in msg
    assert not (tmp_path / "run").exists()
