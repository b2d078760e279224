"""The studio (``llmdiff serve``): its engine on the shipped models, and the page in a real headless Chromium."""

import json
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from llmdiff.errors import LLMDiffError

pytestmark = pytest.mark.integration  # the shipped models read prompts with the packaged LLMs

MODELS = Path(__file__).resolve().parents[1] / "models"
LIDIT, ADAPTER = str(MODELS / "shapes-lidit"), str(MODELS / "shapes-unet-adapter")


@pytest.fixture(scope="module")
def studio():
    from llmdiff.studio import Studio

    return Studio()


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

    gen = studio.generate(LIDIT, "a green triangle", [3], steps=4, guidance_scale=3.0, attention=False)[0]
    big = Image.open(gen.save_png(tmp_path / "big.png", scale=8))
    assert big.size == (8 * gen.image.shape[1], 8 * gen.image.shape[0])
    meta = json.loads(big.text["llmdiff"])
    assert meta["seed"] == 3 and meta["num_inference_steps"] == 4 and meta["guidance_scale"] == 3.0
    assert "a green triangle" in big.text["parameters"]
    again = studio.generate(meta["model"], meta["prompt"], [meta["seed"]], meta["num_inference_steps"],
                            meta["guidance_scale"], attention=False)[0]
    small = np.asarray(Image.open(gen.save_png(tmp_path / "small.png")))
    assert np.array_equal(again.image, small)


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_page_in_a_real_browser(tmp_path):
    """Type a prompt, generate, see images and one heat map per token: the page as a visitor uses it."""
    from llmdiff.studio_app import CHROMIUM, chromium, serve

    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run installs it)")
    from playwright.sync_api import sync_playwright

    port = _free_port()
    demo = serve("127.0.0.1", port, LIDIT, block=False)
    try:
        with sync_playwright() as p:
            browser = chromium(p)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/")
            page.click("#generate")  # no prompt yet: a message, not a crash
            page.wait_for_function("document.querySelector('#status').innerText.includes('Error')", timeout=60_000)
            page.fill("#prompt textarea", "a red circle")
            page.click("#generate")
            page.wait_for_selector("#gallery img", timeout=120_000)
            page.wait_for_selector("#attention img", timeout=120_000)
            assert page.locator("#gallery img").count() >= 4
            tokenizer = demo.studio_app.studio.pipeline(LIDIT).load_encoders()[0].tokenizer
            tokens = tokenizer("a red circle", add_special_tokens=False)["input_ids"]  # no BOS: Gemma has one
            assert page.locator("#attention img").count() == len(tokens)
            assert "red" in page.locator("#attention").inner_text()
            assert "seed 0" in page.locator("#gallery").inner_text()
            assert "object(s) detected" in page.locator("#verdict").inner_text()
            page.screenshot(path=str(tmp_path / "studio.png"), full_page=True)
            browser.close()
    finally:
        demo.close()
    assert (tmp_path / "studio.png").stat().st_size > 10_000
