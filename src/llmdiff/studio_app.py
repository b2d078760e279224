"""``llmdiff serve``: the studio page (gradio) over ``llmdiff.studio``.

Type a prompt, pick a model (a shipped one or any trained model folder), get images with their seeds, and
under the selected image: one heat map per prompt token, the objects the evaluator detects and, for a
suite prompt, its verdict per clause. A second model draws the same prompt with the same seeds beside it.
A seed gives the images `llmdiff generate --seed --batch-size 1` gives (the page samples one image at a time;
in a larger batch a pixel may come out one level apart), and every downloaded PNG carries the settings
`llmdiff generate --from-png` reads.
"""

from __future__ import annotations

import logging
import os
import random
import tempfile
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a local tool
import gradio as gr  # noqa: E402

from .config import GUIDANCE_SCALE, SAMPLE_STEPS  # noqa: E402
from .errors import LLMDiffError  # noqa: E402
from .model_folder import DEFAULT_MODEL, MODELS, SAMPLE_DEFAULTS  # noqa: E402
from .studio import (DISPLAY_SIZE, Studio, clause_verdicts, detections_overlay, heat_tiles, image_seeds,  # noqa: E402
                     shipped_models)

log = logging.getLogger(__name__)
NO_COMPARE = "none"
CSS = ".pixelated img { image-rendering: pixelated; }"


def _suite_prompts() -> dict[str, dict]:
    from .shapes.suites import load_suite

    return {e["prompt"]: e for e in load_suite("geneval")}


def _message(e: Exception) -> str:
    if isinstance(e, LLMDiffError):
        return f"**Error:** {e}"
    log.exception("studio request failed")
    return f"**Error:** the request failed ({type(e).__name__}: {e}); the server keeps running"


class StudioApp:
    """The page's callbacks, over one ``Studio`` shared by every visitor (requests are queued)."""

    def __init__(self, studio: Studio | None = None, out_dir: Path | None = None):
        self.studio = studio or Studio()
        self.out_dir = Path(out_dir or tempfile.mkdtemp(prefix="llmdiff-studio-"))
        self.suite = _suite_prompts()
        self._counter = 0

    def _save(self, gens) -> list[tuple[str, str, str]]:
        """(display PNG, original-size PNG, caption) per generation; both PNGs carry the settings."""
        out = []
        for g in gens:
            self._counter += 1
            stem = self.out_dir / f"{self._counter:05d}-seed{g.seed}"
            scale = max(1, DISPLAY_SIZE // g.image.shape[0])
            out.append((str(g.save_png(f"{stem}-x{scale}.png", scale)), str(g.save_png(f"{stem}.png")),
                        f"seed {g.seed}"))
        return out

    def generate(self, model, compare, prompt, negative, seed, random_seed, n_images, steps, guidance):
        """-> status, gallery A, gallery B, downloads, state, then the inspection of image 0."""
        state = {"gens": {}, "entry": None}
        try:
            if not model:
                raise LLMDiffError("choose a model")
            n = int(n_images)
            first = random.randrange(2**31) if random_seed else int(seed)
            seeds = image_seeds(first, n)
            entry = self.suite.get(prompt.strip()) if prompt else None
            state["entry"] = entry
            galleries, files = {}, []
            for side, m in (("a", model), ("b", compare)):
                if side == "b" and (not m or m == NO_COMPARE):
                    continue
                gens = self.studio.generate(m, prompt, seeds, int(steps), float(guidance), negative_prompt=negative)
                state["gens"][side] = gens
                saved = self._save(gens)
                galleries[side] = [(big, cap + (self._mark(g, entry))) for (big, _, cap), g in zip(saved, gens)]
                files += [small for _, small, _ in saved]
            status = (f"{n} image(s) from {Path(model).name}, seed {first}, {int(steps)} steps, "
                      f"guidance {float(guidance)}"
                      + (" · a GenEval suite prompt: verdicts below" if entry else ""))
        except Exception as e:  # the page shows why; the server keeps serving
            return (_message(e), None, _hidden(), None, state, None, "", [], _layers([]))
        inspected = self.inspect(state, "a", 0, None, 0, 100)
        b = galleries.get("b")
        return (status, galleries["a"], gr.update(value=b, visible=b is not None, label=f"compare: {Path(compare).name}"),
                files, state, *inspected[:3], _layers(state["gens"]["a"][0].attention.layers))

    @staticmethod
    def _mark(gen, entry) -> str:
        if entry is None:
            return ""
        ok, _ = clause_verdicts(detections_overlay(gen.image)[1], entry)
        return " ✓" if ok else " ✗"

    def inspect(self, state, side, index, layers, first_pct, last_pct):
        """-> evaluator picture, verdict text, heat tiles for one image (layers and a step range in % of steps)."""
        try:
            gen = state["gens"][side][index]
            overlay, dets = detections_overlay(gen.image)
            lines = [f"**{side.upper()}: seed {gen.seed}** · {len(dets)} object(s) detected"]
            if state.get("entry") is not None:
                ok, clauses = clause_verdicts(dets, state["entry"])
                lines += [f"GenEval verdict: **{'✓ correct' if ok else '✗ wrong'}**", ""] + [f"- {c}" for c in clauses]
            layers = [n for n in layers or [] if n in gen.attention.layers]  # a compared model has other layers
            steps = gen.attention.maps.shape[1]
            lo = min(steps - 1, int(steps * float(first_pct) / 100))
            hi = max(lo + 1, int(round(steps * float(last_pct) / 100)))
            tiles = heat_tiles(gen, gen.attention.heat(layers or None, (lo, hi)))
            lines.append(f"\nattention: {'all layers' if not layers else ', '.join(layers)}, steps {lo + 1}–{hi} "
                         f"of {steps}")
            return overlay, "\n".join(lines), tiles
        except (KeyError, IndexError, TypeError):
            return None, "generate images first", []
        except Exception as e:
            return None, _message(e), []


def _hidden():
    return gr.update(value=None, visible=False)


def _layers(names):
    return gr.update(choices=names, value=[])


def model_menu(model: str | None = None, shipped_dir: Path | None = MODELS, shipped_default: Path | None = DEFAULT_MODEL
               ) -> tuple[list[str], str | None]:
    """(the model menu, the model selected at start): the shipped models, their default first, and `model` (the one
    selected; the shipped default when None) at the top when it is a folder of one's own."""
    models = shipped_models(shipped_dir, shipped_default) if shipped_dir else []
    model = model or shipped_default
    if model is None:
        return models, models[0] if models else None
    same = [m for m in models if Path(m).resolve() == Path(model).resolve()]
    return (models, same[0]) if same else ([str(model)] + models, str(model))


def build_app(model: str | None = None, studio: Studio | None = None, shipped_dir: Path | None = MODELS,
              shipped_default: Path | None = DEFAULT_MODEL):
    """The gradio Blocks of the studio (not launched); the menu as ``model_menu`` makes it."""
    app = StudioApp(studio)
    models, default = model_menu(model, shipped_dir, shipped_default)
    with gr.Blocks(title="llmdiff studio") as demo:
        gr.Markdown("# llmdiff studio\nText to image with LLM-read prompts: generate, compare two models, and see "
                    "which prompt token each part of the image attends to and what the evaluator detects.")
        state = gr.State({"gens": {}, "entry": None})
        selected = gr.State(("a", 0))
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                model = gr.Dropdown([(Path(m).name, m) for m in models], value=default, allow_custom_value=True,
                                    label="Model", info="a shipped model, or type the path of any trained model folder",
                                    elem_id="model")
                compare = gr.Dropdown([NO_COMPARE] + [(Path(m).name, m) for m in models], value=NO_COMPARE, allow_custom_value=True,
                                      label="Compare with", info="the same prompt and seeds on a second model")
                suite = gr.Dropdown(list(app.suite), value=None, label="GenEval suite prompt",
                                    info="pick one to get the evaluator's verdict per clause")
                prompt = gr.Textbox(label="Prompt", lines=2, placeholder="a red circle to the left of a blue square",
                                    elem_id="prompt")
                negative = gr.Textbox(label="Negative prompt", lines=1)
                with gr.Row():
                    seed = gr.Number(0, precision=0, minimum=0, label="Seed",
                                     info="the images `llmdiff generate --seed` draws from it")
                    random_seed = gr.Checkbox(False, label="random seed")
                n_images = gr.Slider(1, 8, 4, step=1, label="Images per prompt", elem_id="n-images")
                # the limits every boundary accepts, at the defaults of a model folder without its own
                steps = gr.Slider(*SAMPLE_STEPS, SAMPLE_DEFAULTS["steps"], step=1, label="Steps", elem_id="steps")
                guidance = gr.Slider(*GUIDANCE_SCALE, SAMPLE_DEFAULTS["guidance_scale"], step=0.5,
                                     label="Guidance scale", info="1 is no guidance")
                go = gr.Button("Generate", variant="primary", elem_id="generate")
                status = gr.Markdown(elem_id="status")
            with gr.Column(scale=2):
                with gr.Row():
                    gallery_a = gr.Gallery(label="images (click one to inspect it)", columns=4, height=300, elem_id="gallery",
                                           elem_classes="pixelated", object_fit="contain")
                    gallery_b = gr.Gallery(label="compare", columns=4, height=300, visible=False,
                                           elem_id="gallery-compare", elem_classes="pixelated", object_fit="contain")
                with gr.Row():
                    overlay = gr.Image(label="what the evaluator sees", height=DISPLAY_SIZE, elem_classes="pixelated")
                    verdict = gr.Markdown(elem_id="verdict")
                maps = gr.Gallery(label="cross-attention per prompt token (mean over layers and steps)", columns=6,
                                  height=260, elem_id="attention", object_fit="contain")
                with gr.Accordion("attention: layers and steps", open=False):
                    layers = gr.Dropdown([], multiselect=True, label="layers (none chosen: all)")
                    with gr.Row():
                        first = gr.Slider(0, 100, 0, step=1, label="from step (% of sampling)")
                        last = gr.Slider(1, 100, 100, step=1, label="to step (% of sampling)")
                files = gr.File(label="download PNG (its settings are in its text chunks: "
                                      "`llmdiff generate --from-png FILE` draws it again)", file_count="multiple")

        suite.change(lambda p: p or gr.update(), suite, prompt)
        go.click(app.generate, [model, compare, prompt, negative, seed, random_seed, n_images, steps, guidance],
                 [status, gallery_a, gallery_b, files, state, overlay, verdict, maps, layers], api_name="generate"
                 ).then(lambda: ("a", 0), None, selected)

        def pick(side):
            def on_select(st, lay, lo, hi, evt: gr.SelectData):
                return (side, evt.index), *app.inspect(st, side, evt.index, lay, lo, hi)
            return on_select

        for side, gal in (("a", gallery_a), ("b", gallery_b)):
            gal.select(pick(side), [state, layers, first, last], [selected, overlay, verdict, maps])
        for ctl in (layers, first, last):
            ctl.change(lambda st, sel, lay, lo, hi: app.inspect(st, sel[0], sel[1], lay, lo, hi),
                       [state, selected, layers, first, last], [overlay, verdict, maps])
    demo.queue(default_concurrency_limit=1)
    app.default_model = default
    demo.studio_app = app
    return demo


def theme():
    # system fonts: the default theme would fetch web fonts, and the page must work offline
    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


def serve(host: str = "127.0.0.1", port: int = 7860, model: str | None = None, block: bool = True, *,
          shipped_dir: Path | None = MODELS, shipped_default: Path | None = DEFAULT_MODEL, studio: Studio | None = None):
    """Load the model (a bad folder is a one-line error before anything listens), then start the studio on
    host:port with the menu ``model_menu`` makes; ``block=False`` returns the running Blocks (for tests and
    scripts)."""
    selected = model_menu(model, shipped_dir, shipped_default)[1]
    if selected is None:
        raise LLMDiffError("no model to serve: give a model folder (--model DIR)")
    studio = studio or Studio()
    studio.pipeline(selected)  # and the first visitor does not wait for it
    demo = build_app(selected, studio, shipped_dir, shipped_default)
    app = demo.studio_app
    if block:
        print(f"llmdiff studio on http://{host}:{port} (Ctrl+C stops it)")
    demo.launch(server_name=host, server_port=port, share=False, inbrowser=False, prevent_thread_lock=not block,
                theme=theme(), css=CSS, ssr_mode=False, allowed_paths=[str(app.out_dir)],
                quiet=not block, footer_links=[])
    return demo


# The headless Chromium the page is tested and photographed with: Debian's package, never a downloaded browser.
CHROMIUM = os.environ.get("LLMDIFF_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium(playwright):
    """A Playwright browser on the system Chromium (LLMDIFF_CHROMIUM, default /usr/bin/chromium)."""
    if not Path(CHROMIUM).is_file():
        raise LLMDiffError(f"no Chromium at {CHROMIUM}; install it (apt-get install chromium) or set LLMDIFF_CHROMIUM")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
