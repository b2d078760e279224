"""The engine behind ``llmdiff serve``: models kept loaded, images with their seeds, what each prompt token
attends to, what the evaluator sees, and PNGs that ``llmdiff generate --from-png`` draws again.

    studio = Studio()
    [gen] = studio.generate("models/shapes-lidit", "a red circle", image_seeds(0, 1))
    gen.attention.tokens, gen.attention.heat()   # ['a', ' red', ' circle'], (3, 32, 32)

The page itself (gradio) is ``llmdiff.studio_app``.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import check_guidance_scale, check_steps
from .errors import LLMDiffError
from .generate import save_png as save_png_with_settings
from .model_folder import read_model_index
from .pipelines import image_seed, load_pipeline

log = logging.getLogger(__name__)
DISPLAY_SIZE = 256  # 32 px images are shown nearest-neighbour upscaled to this side
SEED_LIMIT = 2**64  # torch's generators take seeds below it, and PNG metadata holds no others


def shipped_models(models_dir: Path | str, default: Path | str | None = None) -> list[str]:
    """The model folders in `models_dir` that generate images (not the autoencoder kept beside them), `default`
    first, then by name."""
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        return []
    found = []
    for folder in sorted(models_dir.iterdir()):
        try:
            read_model_index(folder)
        except LLMDiffError as e:  # not a pipeline model folder, so not in the menu
            log.debug("%s is not in the model menu: %s", folder, e)
            continue
        found.append(str(folder))
    first = Path(default).resolve() if default else None
    return sorted(found, key=lambda m: Path(m).resolve() != first)


def image_seeds(seed: int, n: int) -> list[int]:
    """The seeds of a request's `n` images: those `llmdiff generate PROMPT --seed SEED` gives its one prompt's images,
    so the studio and the command line draw the same pictures."""
    return [image_seed(seed, 0, k) for k in range(n)]


@dataclass
class TokenMaps:
    """Cross-attention heat maps of one image: ``maps`` (layers, steps, tokens, H, W), each the attention mass
    (softmax over the text tokens, mean over heads) that image position puts on the token, at image size."""

    tokens: list[str]
    layers: list[str]
    maps: torch.Tensor

    def heat(self, layers: list[str] | None = None, steps: tuple[int, int] | None = None) -> torch.Tensor:
        """(tokens, H, W): mean over the chosen layers (default all) and sampling steps [first, last)."""
        idx = [self.layers.index(n) for n in layers] if layers else list(range(len(self.layers)))
        if not idx:
            raise LLMDiffError("choose at least one attention layer")
        first, last = steps or (0, self.maps.shape[1])
        if not 0 <= first < last <= self.maps.shape[1]:
            raise LLMDiffError(f"step range must lie in [0, {self.maps.shape[1]}], got [{first}, {last})")
        return self.maps[idx, first:last].float().mean((0, 1))


@dataclass
class Generation:
    """One generated image and everything needed to make it again."""

    model: str
    prompt: str
    seed: int
    steps: int
    guidance_scale: float
    scheduler: str
    image: np.ndarray  # (H, W, 3) uint8
    attention: TokenMaps | None = None
    negative_prompt: str = ""

    def settings(self) -> dict:
        """The settings `llmdiff generate` records in a PNG, under its keys."""
        return {"prompt": self.prompt, "seed": self.seed, "negative_prompt": self.negative_prompt,
                "num_inference_steps": self.steps, "guidance_scale": self.guidance_scale,
                "scheduler": self.scheduler, "model": self.model}

    def save_png(self, path: Path | str, scale: int = 1) -> Path:
        """The image (nearest-neighbour upscaled by ``scale``) with its settings in the PNG text chunks
        `llmdiff generate` writes, so that ``llmdiff generate --from-png`` draws it again."""
        from PIL import Image

        save_png_with_settings(Image.fromarray(self.image), Path(path), self.settings(), self.image.shape[1] * scale)
        return Path(path)


class Studio:
    """Loaded pipelines by model folder (the ``keep`` most recently used stay in memory) and generation."""

    def __init__(self, keep: int = 2):
        self.keep = keep
        self._pipes: OrderedDict[str, object] = OrderedDict()
        self._lock = threading.Lock()  # one generation at a time: the hooks and the models are shared

    def pipeline(self, model: str):
        key = str(Path(model).expanduser().resolve())
        if key not in self._pipes:
            if not Path(key).is_dir():
                raise LLMDiffError(f"no model folder {model}")
            try:
                pipe = load_pipeline(key)
                pipe.load_encoders()  # the first request should not wait for the LLM
            except LLMDiffError:
                raise
            except Exception as e:  # a broken folder: unreadable config, missing or corrupt weights
                raise LLMDiffError(f"{model} is not a usable model folder ({type(e).__name__}: {e})") from None
            self._pipes[key] = pipe
            while len(self._pipes) > self.keep:
                self._pipes.popitem(last=False)
        self._pipes.move_to_end(key)
        return self._pipes[key]

    def generate(self, model: str, prompt: str, seeds: list[int], steps: int | None = None,
                 guidance_scale: float | None = None, attention: bool = True,
                 negative_prompt: str = "") -> list[Generation]:
        """One image per seed (the same seed gives the same image whatever else is asked)."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise LLMDiffError("the prompt is empty: describe the image (e.g. 'a red circle above a blue square')")
        if not seeds:
            raise LLMDiffError("no seeds given")
        bad = [s for s in seeds if not 0 <= int(s) < SEED_LIMIT]
        if bad:
            raise LLMDiffError(f"seeds must lie in [0, 2**64), got {bad[0]}")
        negative_prompt = negative_prompt if negative_prompt and negative_prompt.strip() else ""
        with self._lock:
            pipe = self.pipeline(model)
            steps, guidance_scale = pipe.sampling(int(steps) if steps else None, guidance_scale)
            check_steps("steps", steps)
            check_guidance_scale("guidance_scale", guidance_scale)
            guidance_scale = float(guidance_scale)
            return [self._one(pipe, model, prompt, int(s), steps, guidance_scale, attention, negative_prompt)
                    for s in seeds]

    @torch.no_grad()
    def _one(self, pipe, model, prompt, seed, steps, guidance_scale, attention, negative_prompt) -> Generation:
        from .evaluation.probe import AttentionRecorder

        rec = AttentionRecorder(pipe.denoiser, per_position=True) if attention else None
        try:
            pil = pipe(prompt, negative_prompt=negative_prompt or None, num_images_per_prompt=1,
                       guidance_scale=guidance_scale, num_inference_steps=steps,
                       generator=torch.Generator().manual_seed(seed)).images[0]
            image = np.asarray(pil)  # the pixels `llmdiff generate --batch-size 1` writes
            maps = _token_maps(pipe, prompt, rec.mass, image.shape[0]) if rec else None
        finally:
            if rec:
                rec.remove()
        return Generation(str(model), prompt, seed, steps, guidance_scale, pipe.sample_config["scheduler"], image,
                          maps, negative_prompt)


def _token_maps(pipe, prompt: str, mass: dict[str, list[torch.Tensor]], size: int) -> TokenMaps:
    """Heat maps of the prompt's tokens from the recorder's (rows, N, M) tensors, one per layer and step; row 0
    reads the prompt (with guidance, row 1 reads the empty prompt)."""
    import torch.nn.functional as F

    from .evaluation.probe import prompt_tokens

    toks = prompt_tokens(pipe, prompt)
    per_layer = []
    for calls in mass.values():
        a = torch.stack([c[0] for c in calls])  # (steps, N, M)
        side = int(round(a.shape[1] ** 0.5))  # square images: the layer's token grid is side x side
        grid = a.transpose(1, 2).reshape(a.shape[0], a.shape[2], side, side)  # (steps, M, side, side)
        per_layer.append(F.interpolate(grid, size=(size, size), mode="bilinear", align_corners=False))
    keep = [i for i, _ in toks if i < per_layer[0].shape[1]]
    maps = torch.stack(per_layer)[:, :, keep]  # (layers, steps, tokens, H, W)
    return TokenMaps([t for i, t in toks if i < per_layer[0].shape[1]], list(mass), maps.half())


# --- pictures for the page ----------------------------------------------------------------------

def upscale(image: np.ndarray, side: int = DISPLAY_SIZE):
    from PIL import Image

    return Image.fromarray(image).resize((side, side), Image.NEAREST)


def heat_tiles(gen: Generation, heat: torch.Tensor, side: int = 160) -> list[tuple[object, str]]:
    """One picture per token: the heat map (one colour scale shared by the tokens, so they compare) over the
    image in grey, and a caption with the token and its share of the attention."""
    import matplotlib
    from PIL import Image

    cmap = matplotlib.colormaps["inferno"]
    grey = gen.image.astype(np.float32).mean(-1, keepdims=True) / 255
    top = float(heat.max()) or 1.0
    out = []
    for token, h in zip(gen.attention.tokens, heat):
        colour = cmap((h / top).numpy())[..., :3]
        mixed = (0.25 * grey + 0.75 * colour) * 255
        img = Image.fromarray(mixed.astype(np.uint8)).resize((side, side), Image.NEAREST)
        out.append((img, f"{token.strip() or repr(token)} · {100 * float(h.mean()):.0f}%"))
    return out


def detections_overlay(image: np.ndarray, side: int = DISPLAY_SIZE):
    """The image upscaled, with every object the evaluator detects boxed and labelled (colour, shape,
    confidence); returns (picture, detections)."""
    from PIL import ImageDraw, ImageFont

    from .evaluation.detect import detect
    from .shapes.world import COLORS

    dets = detect(image)
    img = upscale(image, side).convert("RGB")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=max(10, side // 20))
    k = side / image.shape[0]
    for d in dets:
        x0, y0, x1, y1 = (v * k for v in d.bbox)
        colour = tuple(COLORS.get(d.color, (0, 0, 0)))
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=(0, 0, 0), width=3)
        draw.rectangle([x0 + 1, y0 + 1, x1 - 2, y1 - 2], outline=colour, width=1)
        label = f"{d.color} {d.shape} {d.confidence:.2f}"
        ty = y0 - font.size - 4 if y0 >= font.size + 4 else y1 + 2
        draw.rectangle(draw.textbbox((x0, ty), label, font=font), fill=(0, 0, 0))
        draw.text((x0, ty), label, fill=(255, 255, 255), font=font)
    return img, dets


def clause_verdicts(detections, entry: dict) -> tuple[bool, list[str]]:
    """The suite entry's clauses, each as '✓ clause' or '✗ clause (why)'."""
    from .evaluation.scoring import score_entry

    ok, clauses = score_entry(detections, entry)
    return ok, [("✓ " if c["passed"] else "✗ ") + c["clause"] + (f" ({c['reason']})" if c.get("reason") else "")
                for c in clauses]
