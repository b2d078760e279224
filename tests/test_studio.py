"""The studio (``llmdiff serve``): its engine on the shipped models, the served page through gradio's client and in
a real headless Chromium, and its PNGs drawn again by ``llmdiff generate``."""

import json
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from llmdiff.errors import LLMDiffError

pytestmark = pytest.mark.integration  # the shipped models read prompts with the packaged LLMs

MODELS = Path(__file__).resolve().parents[1] / "models"
LIDIT, ADAPTER = str(MODELS / "shapes-lidit"), str(MODELS / "shapes-unet-adapter")
# every folder under models/ in the pipeline layout: the autoencoder beside them (shapes-ae) is not one
PIPELINE_MODELS = sorted(d.name for d in MODELS.iterdir() if (d / "model_index.json").is_file())


@pytest.fixture(scope="module")
def studio():
    from llmdiff.studio import Studio

    return Studio()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(studio):
    """`llmdiff serve` as the command line starts it (the shipped models, no --model), on a free loopback port."""
    from llmdiff.cli import DEFAULT_MODEL
    from llmdiff.studio_app import serve

    port = _free_port()
    demo = serve("127.0.0.1", port, None, block=False, shipped_dir=MODELS, shipped_default=DEFAULT_MODEL,
                 studio=studio)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


def test_menu_holds_every_shipped_model_default_first():
    from llmdiff.studio import shipped_models

    assert len(PIPELINE_MODELS) >= 6 and "shapes-ae" not in PIPELINE_MODELS
    menu = [Path(m).name for m in shipped_models(MODELS, LIDIT)]
    assert menu[0] == "shapes-lidit"
    assert sorted(menu) == PIPELINE_MODELS


def test_sliders_span_the_sampling_limits_at_the_sampling_defaults():
    from llmdiff.config import GUIDANCE_SCALE, SAMPLE_STEPS, SampleConfig
    from llmdiff.studio_app import build_app

    demo = build_app(shipped_dir=None, shipped_default=None)
    sliders = {b.label: b for b in demo.blocks.values() if type(b).__name__ == "Slider"}
    for label, (lo, hi), default in (("Steps", SAMPLE_STEPS, SampleConfig.steps),
                                     ("Guidance scale", GUIDANCE_SCALE, SampleConfig.guidance_scale)):
        assert (sliders[label].minimum, sliders[label].maximum, sliders[label].value) == (lo, hi, default), label


def test_seeds_are_the_ones_generate_gives():
    from llmdiff.pipelines import image_seed
    from llmdiff.studio import image_seeds

    assert image_seeds(5, 3) == [image_seed(5, 0, k) for k in range(3)]
    assert len(set(image_seeds(5, 3) + image_seeds(6, 3))) == 6


def test_a_seed_gives_its_image_whatever_else_is_asked(studio):
    alone = studio.generate(LIDIT, "a red circle", [7], steps=4, attention=False)[0]
    among = studio.generate(LIDIT, "a red circle", [5, 6, 7], steps=4, attention=False)
    assert np.array_equal(alone.image, among[2].image)
    assert not np.array_equal(among[0].image, among[2].image)
    assert [g.seed for g in among] == [5, 6, 7]


@pytest.mark.parametrize("model", [LIDIT, ADAPTER])
def test_token_maps_are_attention_on_the_prompt_tokens(studio, model):
    from llmdiff.evaluation.probe import AttentionRecorder

    gen = studio.generate(model, "two blue squares", [0], steps=3)[0]
    pipe = studio.pipeline(model)
    tok = pipe.load_encoders()[0].tokenizer
    ids = tok("two blue squares", add_special_tokens=False)["input_ids"]
    att = gen.attention
    assert att.tokens == [tok.decode([i]) for i in ids]  # as the tokenizer splits them, no instruction tokens
    n_layers = len(AttentionRecorder(pipe.denoiser).handles)
    assert att.maps.shape == (n_layers, 3, len(ids), *gen.image.shape[:2])
    heat = att.heat()
    # shares of a softmax over the text tokens: the prompt's tokens hold some of it, never more than all
    total = heat.sum(0)
    assert (heat >= 0).all() and (total <= 1 + 1e-2).all() and total.mean() > 0.01
    late = att.heat(att.layers[:1], (2, 3))
    torch.testing.assert_close(late, att.maps[0, 2].float())
    with pytest.raises(LLMDiffError, match="step range"):
        att.heat(steps=(2, 9))


def test_png_carries_the_settings_and_regenerates_the_image(studio, tmp_path):
    from PIL import Image

    gen = studio.generate(LIDIT, "a green triangle", [3], steps=4, guidance_scale=3.0, attention=False,
                          negative_prompt="a red square")[0]
    big = Image.open(gen.save_png(tmp_path / "big.png", scale=8))
    assert big.size == (8 * gen.image.shape[1], 8 * gen.image.shape[0])
    assert np.array_equal(np.asarray(big)[::8, ::8], gen.image)
    meta = json.loads(big.text["llmdiff"])
    assert meta == {"prompt": "a green triangle", "seed": 3, "negative_prompt": "a red square",
                    "num_inference_steps": 4, "guidance_scale": 3.0,
                    "scheduler": studio.pipeline(LIDIT).sample_config["scheduler"], "model": LIDIT}
    again = studio.generate(meta["model"], meta["prompt"], [meta["seed"]], meta["num_inference_steps"],
                            meta["guidance_scale"], attention=False, negative_prompt=meta["negative_prompt"])[0]
    small = np.asarray(Image.open(gen.save_png(tmp_path / "small.png")))
    assert np.array_equal(again.image, small)


def test_studio_images_are_generates_images_and_its_pngs_regenerate(studio, tmp_path, capsys):
    """The page's seed gives the images `llmdiff generate --seed` gives, and a downloaded PNG goes through
    `llmdiff generate --from-png` to the same image."""
    from PIL import Image

    from llmdiff.cli import main
    from llmdiff.generate import png_metadata
    from llmdiff.studio_app import StudioApp

    app = StudioApp(studio, tmp_path / "studio")
    status, gallery, _, files, state, *_ = app.generate(LIDIT, "none", "a blue square", "", 5, False, 2, 3, 2.0)
    assert status.startswith("2 image(s) from shapes-lidit, seed 5"), status
    studio_images = [np.asarray(Image.open(f)) for f in files]
    assert not np.array_equal(*studio_images)

    # The page samples one image at a time; images sampled together in one batch may differ from those by a
    # level of one pixel (the batch's matrix products sum in another order), so the CLI samples one at a time too.
    assert main(["generate", "a blue square", "--model", LIDIT, "--seed", "5", "--images-per-prompt", "2",
                 "--steps", "3", "--guidance-scale", "2", "--display-size", "32", "--batch-size", "1",
                 "--out", str(tmp_path / "cli")]) == 0
    cli_files = sorted((tmp_path / "cli").glob("000-*.png"))
    assert [int(f.stem.split("-")[1]) for f in cli_files] == sorted(g.seed for g in state["gens"]["a"])
    by_seed = {png_metadata(f)["seed"]: np.asarray(Image.open(f)) for f in cli_files}
    for gen, image in zip(state["gens"]["a"], studio_images):
        assert np.array_equal(by_seed[gen.seed], image)

    out = tmp_path / "again.png"
    assert main(["generate", "--from-png", files[1], "--out", str(out)]) == 0
    capsys.readouterr()
    again = Image.open(out)
    assert png_metadata(out) == png_metadata(files[1])
    k = again.width // studio_images[1].shape[1]
    assert k > 1 and np.array_equal(np.asarray(again)[::k, ::k], studio_images[1])


def test_bad_requests_give_a_message_and_the_next_request_works(tmp_path, studio):
    from llmdiff.studio_app import StudioApp

    app = StudioApp(studio, tmp_path / "out")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text('{"_class_name": "LLMDiffPipeline", "denoiser": ')
    args = dict(compare="none", negative="", seed=0, random_seed=False, n_images=1, steps=2, guidance=2.0)
    for model, prompt in ((str(broken), "a red circle"), (str(tmp_path / "nowhere"), "a red circle"), (LIDIT, "  ")):
        status = app.generate(model, prompt=prompt, **args)[0]
        assert status.startswith("**Error:**") and "Traceback" not in status, status
    status, gallery, *_ = app.generate(LIDIT, prompt="a red circle", **args)
    assert "1 image" in status and len(gallery) == 1


def test_suite_prompt_gets_a_verdict_per_clause(tmp_path, studio):
    from llmdiff.studio_app import StudioApp

    app = StudioApp(studio, tmp_path / "out")
    prompt, entry = next((p, e) for p, e in app.suite.items() if e["tag"] == "color_attr")
    out = app.generate(LIDIT, "none", prompt, "", 0, False, 1, 3, 2.0)
    verdict = out[6]
    assert "GenEval verdict" in verdict
    assert verdict.count("- ✓") + verdict.count("- ✗") == len(entry["include"]) + len(entry.get("exclude", []))


@pytest.mark.parametrize("folder", ["shapes-ae", "half-written"])
def test_serve_refuses_a_bad_model_folder_before_serving(folder, tmp_path, monkeypatch, capsys):
    import gradio

    from llmdiff.cli import main

    launched = []
    monkeypatch.setattr(gradio.Blocks, "launch", lambda self, **kw: launched.append(self))
    model = MODELS / folder
    if folder == "half-written":
        model = tmp_path / folder
        shutil.copytree(MODELS / "shapes-unet-base", model)
        (model / "denoiser" / "diffusion_pytorch_model.safetensors").write_bytes(b"not weights")
    assert main(["serve", "--model", str(model)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("llmdiff serve: error:") and folder in err, err
    assert not launched


def test_serve_takes_any_model_folder(tmp_path, monkeypatch, capsys):
    import gradio

    from llmdiff.cli import main

    launched = []
    monkeypatch.setattr(gradio.Blocks, "launch", lambda self, **kw: launched.append(self))
    mine = tmp_path / "mine"
    shutil.copytree(MODELS / "shapes-unet-base", mine)
    assert main(["serve", "--model", str(mine), "--port", "7861"]) == 0, capsys.readouterr().err
    [demo] = launched
    [menu] = [b for b in demo.blocks.values() if isinstance(b, gradio.Dropdown) and b.label == "Model"]
    assert menu.value == str(mine)
    assert [name for name, _ in menu.choices] == ["mine", "shapes-lidit"] + [m for m in PIPELINE_MODELS
                                                                            if m != "shapes-lidit"]


def test_gradio_client_lists_the_shipped_models_and_draws_with_the_default(served, studio):
    from gradio_client import Client
    from PIL import Image

    from llmdiff.pipelines import image_seed

    client = Client(served, verbose=False)
    params = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/generate"]["parameters"]
    [model] = [p for p in params if p["parameter_name"] == "model"]
    assert [Path(m).name for m in model["type"]["enum"]] == ["shapes-lidit"] + [m for m in PIPELINE_MODELS
                                                                                 if m != "shapes-lidit"]
    assert model["parameter_default"] == LIDIT
    status, gallery, _, files, *_ = client.predict(prompt="a red circle", negative="", seed=4, n_images=1, steps=3,
                                                   api_name="/generate")
    assert status.startswith("1 image(s) from shapes-lidit, seed 4, 3 steps"), status
    expected = studio.generate(LIDIT, "a red circle", [image_seed(4, 0, 0)], 3, 2.0, attention=False)[0].image
    assert len(gallery) == 1 and len(files) == 1
    assert np.array_equal(np.asarray(Image.open(files[0])), expected)
    shown = np.asarray(Image.open(gallery[0]["image"]))
    k = shown.shape[0] // expected.shape[0]
    assert k > 1 and np.array_equal(shown[::k, ::k], expected)


def test_page_in_a_real_browser(served, studio, tmp_path):
    """Pick the shipped default in the model menu, type a prompt, generate, see the image and one heat map per
    token: the page as a visitor uses it."""
    from llmdiff.studio_app import CHROMIUM, chromium

    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = chromium(p)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(served)
        page.click("#generate")  # no prompt yet: a message, not a crash
        page.wait_for_function("document.querySelector('#status').innerText.includes('Error')", timeout=60_000)
        page.click("#model input")
        options = page.locator("#model [role=option]")
        assert [options.nth(i).get_attribute("aria-label") for i in range(options.count())] == \
            ["shapes-lidit"] + [m for m in PIPELINE_MODELS if m != "shapes-lidit"]
        page.click('#model [role=option][aria-label="shapes-lidit"]')
        for slider, value in (("#n-images", "1"), ("#steps", "3")):
            page.fill(f"{slider} input[type=number]", value)
            page.press(f"{slider} input[type=number]", "Enter")
        page.fill("#prompt textarea", "a red circle")
        page.click("#generate")
        page.wait_for_function("document.querySelector('#status').innerText.includes('image(s) from')",
                               timeout=120_000)
        page.wait_for_selector("#attention img", timeout=60_000)
        assert page.locator("#status").inner_text().startswith("1 image(s) from shapes-lidit, seed 0, 3 steps")
        assert page.locator("#gallery img").count() == 1
        tokenizer = studio.pipeline(LIDIT).load_encoders()[0].tokenizer
        tokens = tokenizer("a red circle", add_special_tokens=False)["input_ids"]  # no BOS: Gemma has one
        assert page.locator("#attention img").count() == len(tokens)
        assert "red" in page.locator("#attention").inner_text()
        assert "seed 0" in page.locator("#gallery").inner_text()
        assert "object(s) detected" in page.locator("#verdict").inner_text()
        page.screenshot(path=str(tmp_path / "studio.png"), full_page=True)
        browser.close()
    assert (tmp_path / "studio.png").stat().st_size > 10_000
