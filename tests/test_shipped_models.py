"""The committed models load from a fresh clone, generate deterministically and follow prompts.

The thresholds sit well below what the models score on the full suites (docs/lidit, docs/results/adapter)
and well above chance, so a broken loader, encoder mismatch or sampler shows up here.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from llmdiff.evaluation.detect import detect
from llmdiff.evaluation.evaluate import run_eval
from llmdiff.evaluation.model_eval import generate_suite
from llmdiff.pipelines import generators_for, load_pipeline
from llmdiff.shapes.suites import load_suite

pytestmark = pytest.mark.integration

MODELS = Path(__file__).resolve().parents[1] / "models"
# single_object, colors: the two tasks the models get right most often. Chance (the right one of four
# shapes; and one of eight colours) is about 0.25 and 0.03. Full-suite scores (4 or 2 images per prompt):
# shapes-lidit 0.98 and 1.00, shapes-lidit-colour-after 0.98 and 0.96, shapes-lidit-smollm2 0.97 and 1.00,
# shapes-lidit-latent 0.92 and 0.99, shapes-lidit-pixel 0.41 and 0.31, shapes-unet-adapter 0.97 and 0.86.
EASY = ("single_object", "colors")


@pytest.mark.parametrize("name, floor", [("shapes-lidit", {"single_object": 0.6, "colors": 0.6}),
                                         ("shapes-lidit-colour-after", {"single_object": 0.6, "colors": 0.6}),
                                         ("shapes-lidit-smollm2", {"single_object": 0.6, "colors": 0.6}),
                                         ("shapes-lidit-latent", {"single_object": 0.6, "colors": 0.6}),
                                         ("shapes-lidit-pixel", {"single_object": 0.2, "colors": 0.15}),
                                         ("shapes-unet-adapter", {"single_object": 0.5, "colors": 0.6})])
def test_shipped_model_follows_easy_prompts(tmp_path, name, floor):
    pipe = load_pipeline(MODELS / name)
    entries = [e for e in load_suite("geneval") if e["tag"] in EASY][::3]
    images = generate_suite(pipe, entries, tmp_path / "gen", images_per_prompt=2, seed=0, progress=False)
    summary = run_eval(images, tmp_path / "eval", progress=False, plots=False)
    tasks = summary["benchmarks"]["geneval"]["tasks"]
    scores = {t: tasks[t]["accuracy"] for t in EASY}
    assert all(scores[t] >= floor[t] for t in EASY), scores


def test_latent_model_draws_the_asked_colours():
    """The latent model's sampled latents reach beyond ±1; clamping them before decoding turned red, blue and
    green circles pink (4 of these 16 right), decoding them as sampled draws every colour (16 of 16)."""
    pipe = load_pipeline(MODELS / "shapes-lidit-latent")
    pipe.set_progress_bar_config(disable=True)
    drawn = {}
    for colour in ("red", "blue", "green", "yellow"):
        images = pipe(f"a photo of a {colour} circle", num_images_per_prompt=4, generator=generators_for(range(4)),
                      output_type="np").images
        drawn[colour] = [sorted({d.color for d in detect((im * 255).round().astype(np.uint8))}) for im in images]
    assert all(found == [colour] for colour, row in drawn.items() for found in row), drawn


def test_shipped_model_is_deterministic_for_a_seed():
    pipe = load_pipeline(MODELS / "shapes-lidit")

    def run(seed):
        return pipe("two red circles", num_images_per_prompt=2, num_inference_steps=8,
                    generator=torch.Generator().manual_seed(seed), output_type="np").images

    a, b, c = run(3), run(3), run(4)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_shipped_adapter_loads_whole_and_equals_its_adapter_loaded_onto_its_base(tmp_path):
    """shapes-unet-adapter was written when the adapter's layers sat inside the U-Net: every tensor still loads
    (through diffusers and through load_state_dict, as a checkpoint does), and the adapter saved from it,
    loaded onto shapes-unet-base, draws the very images the folder draws."""
    from safetensors.torch import load_file

    from llmdiff.denoisers.adapter import AdaptedUNet

    folder = MODELS / "shapes-unet-adapter"
    model, info = AdaptedUNet.from_pretrained(folder / "denoiser", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    fresh = AdaptedUNet.from_config(model.config)
    fresh.load_state_dict(load_file(folder / "denoiser" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in fresh.state_dict().items())
    model.save_adapter(tmp_path / "adapter")
    adapted, base = load_pipeline(folder), load_pipeline(MODELS / "shapes-unet-base")
    base.load_llm_adapter(tmp_path / "adapter")

    def run(pipe):
        return pipe(["a red circle", "a blue square above a green cross"], num_inference_steps=6,
                    generator=generators_for([0, 1]), output_type="pt").images

    torch.testing.assert_close(run(base), run(adapted))


def test_shipped_model_generates_in_bfloat16_close_to_float32():
    from llmdiff import LLMDiffPipeline

    pipe = LLMDiffPipeline.from_pretrained(MODELS / "shapes-lidit")
    pipe.set_progress_bar_config(disable=True)
    want = pipe("a red circle", num_inference_steps=4, generator=generators_for([0]), output_type="pt").images
    pipe.to(torch.bfloat16)
    got = pipe("a red circle", num_inference_steps=4, generator=generators_for([0]), output_type="pt").images
    assert got.dtype == torch.float32 and torch.isfinite(got).all() and 0 <= got.min() and got.max() <= 1
    assert (got - want).abs().mean() < 0.02
    (image,) = pipe("a red circle", num_inference_steps=4, generator=generators_for([0])).images
    assert image.size == (32, 32)


def test_shipped_models_generate_other_sizes_and_name_the_sizes_they_take():
    latent = load_pipeline(MODELS / "shapes-lidit-latent")  # 8x8 latents of a 4x autoencoder, patch size 1
    latent.set_progress_bar_config(disable=True)
    images = latent("a red circle", height=48, width=32, num_inference_steps=2, output_type="np").images
    assert images.shape == (1, 48, 32, 3) and np.isfinite(images).all()
    with pytest.raises(ValueError, match=r"height must be .*a multiple of 4 .*\(the autoencoder's scale 4 x the "
                                         r"patch size 1\), e.g. 32; got 30"):
        latent("a red circle", height=30)
    hourglass = load_pipeline(MODELS / "shapes-lidit")  # patch size 2, then 2x2 patches merged
    with pytest.raises(ValueError, match=r"width must be .*a multiple of 4 .*hourglass merging 2x2 patches.*got 34"):
        hourglass("a red circle", width=34)
