"""``llmdiff generate``: images from one prompt, a prompt file or a prompt suite, as files people can use.

* one prompt or a ``.txt`` file (one prompt per line): one PNG per image, named ``NNN-SEED.png`` (prompt
  index, the image's seed), plus a captioned grid as an extra file when there are several images. Every batch's
  images are saved as soon as it is sampled, and images already saved with the same settings are not drawn
  again: a stopped run keeps what it finished, and the same command continues it;
* a suite name or GenEval JSONL (``--prompts geneval``): GenEval's folder layout (``00000/metadata.jsonl``,
  ``00000/samples/0000.png``), which ``llmdiff eval`` scores.

Every PNG written for a prompt carries its settings as text metadata (key ``llmdiff``: prompt, negative
prompt, seed, steps, guidance scale, scheduler, model); ``llmdiff generate --from-png x.png`` reads them back
and draws the same image. Image k of prompt i always has the seed ``image_seed(seed, i, k)``, whatever the
batch, so a file's seed alone regenerates it.
"""

from __future__ import annotations

import json
from pathlib import Path

from .config import check_choice, check_guidance_scale, check_steps
from .encoders.base import check_text
from .errors import LLMDiffError, LLMDiffTypeError
from .integrity import check_replaceable, check_writable, is_llmdiff_figure
from .utils import read_text

METADATA_KEY = "llmdiff"
# The settings a PNG records (what --from-png reads back); `generate` also records its weights' hash (WEIGHTS).
SETTINGS = ("prompt", "seed", "negative_prompt", "num_inference_steps", "guidance_scale", "scheduler", "model")
WEIGHTS = "model_sha256"
DTYPES = ("float32", "float16", "bfloat16")


def read_prompt_file(path: Path | str) -> list[str]:
    """Prompts of a text file, one per line (blank lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise LLMDiffError(f"no prompt file {path}")
    prompts = [line.strip() for line in read_text(path).splitlines() if line.strip()]
    if not prompts:
        raise LLMDiffError(f"{path} holds no prompts (one per line)")
    return prompts


def png_metadata(path: Path | str) -> dict:
    """The settings `llmdiff generate` stored in a PNG."""
    if not Path(path).is_file():
        raise LLMDiffError(f"no PNG {path}: it does not exist" if not Path(path).exists() else
                           f"{path} is a folder, not a PNG")
    meta = _llmdiff_text(path)
    if not isinstance(meta, dict) or not all(k in meta for k in SETTINGS):
        raise LLMDiffError(f"{path} carries no llmdiff metadata (only PNGs written by `llmdiff generate` do)")
    from .diffusion import SCHEDULERS

    where = f"{path}: llmdiff metadata"
    for key in ("prompt", "negative_prompt", "model"):
        if not isinstance(meta[key], str):
            raise LLMDiffTypeError(f"{where} {key} must be text, got {meta[key]!r}")
    seed = meta["seed"]
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**64:
        raise LLMDiffError(f"{where} seed must be a whole number in [0, 2**64), got {seed!r}")
    check_steps(f"{where} num_inference_steps", meta["num_inference_steps"])
    check_guidance_scale(f"{where} guidance_scale", meta["guidance_scale"])
    check_choice(f"{where} scheduler", meta["scheduler"], SCHEDULERS)
    return {k: meta[k] for k in SETTINGS}


def _llmdiff_text(path: Path | str):
    """The JSON a PNG holds under METADATA_KEY (None when it holds none, or is no PNG)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            text = getattr(im, "text", {}).get(METADATA_KEY)
        return json.loads(text) if text is not None else None
    except (OSError, UnidentifiedImageError, json.JSONDecodeError):
        return None


def save_png(image, path: Path, metadata: dict, display_size: int | None = None) -> None:
    """The image (nearest-upscaled to `display_size`) with `metadata` as PNG text, written atomically."""
    import io

    from PIL.PngImagePlugin import PngInfo

    from . import __version__
    from .utils import atomic_write_bytes

    info = PngInfo()
    info.add_text(METADATA_KEY, json.dumps(metadata))
    info.add_text("Software", f"llmdiff {__version__}")
    if display_size and display_size != image.size[0]:
        image = image.resize((display_size, display_size), 0)
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    atomic_write_bytes(path, buf.getvalue())


def run_generate(args, default_model: Path) -> None:
    import torch

    if args.from_png:
        meta = png_metadata(args.from_png)
        prompts, seeds = [meta["prompt"]], [[meta["seed"]]]
        args.negative_prompt = args.negative_prompt if args.negative_prompt is not None else meta["negative_prompt"]
        args.steps = args.steps or meta["num_inference_steps"]
        args.guidance_scale = meta["guidance_scale"] if args.guidance_scale is None else args.guidance_scale
        args.scheduler = args.scheduler or meta["scheduler"]
        args.model = args.model or meta["model"]
    elif bool(args.prompt) == bool(args.prompts):
        raise LLMDiffError("give one prompt in quotes, --prompts FILE.txt|SUITE|JSONL, or --from-png IMAGE.png")
    if args.dtype not in DTYPES:
        raise LLMDiffError(f"--dtype must be one of {', '.join(DTYPES)}, got {args.dtype!r}")
    suite = bool(args.prompts) and not args.prompts.endswith(".txt")
    if suite and args.negative_prompt:
        raise LLMDiffError("--negative-prompt is not used with a prompt suite (its images are scored as drawn)")
    if not args.from_png:
        prompts = read_prompt_file(args.prompts) if args.prompts and not suite else [args.prompt] if args.prompt else []
    for i, text in enumerate(prompts + ([args.negative_prompt] if args.negative_prompt else [])):
        check_text(text, "the negative prompt" if i == len(prompts) else f"prompt {i + 1}")
    check_device(args.device)
    check_writable(args.out, "--out", folder=suite or not args.out.endswith(".png"))
    from .evaluation.layout import model_digest
    from .evaluation.model_eval import generate_missing, generate_suite
    from .pipelines import image_seed, load_pipeline

    if not suite:  # what --out holds is checked before the model loads: only this command's images are replaced
        if not args.from_png:
            seeds = [[image_seed(args.seed, i, k) for k in range(args.images_per_prompt)] for i in range(len(prompts))]
        flat = [(i, s) for i, row in enumerate(seeds) for s in row]
        paths = output_paths(Path(args.out), flat)
        for path in paths:
            check_replaceable(path, "--out", _is_generated_png, args.overwrite)
        grid = None
        if len(flat) > 1:
            grid = paths[0].parent / (f"{Path(args.out).stem}-grid.png" if args.out.endswith(".png") else "grid.png")
            check_replaceable(grid, "--out", is_llmdiff_figure, args.overwrite)
    model = Path(args.model) if args.model else default_model
    pipe = load_pipeline(model, scheduler=args.scheduler, device=args.device, torch_dtype=getattr(torch, args.dtype))
    if suite:
        from .shapes.suites import load_suite

        out = generate_suite(pipe, load_suite(args.prompts), args.out, args.images_per_prompt, args.seed,
                             args.guidance_scale, args.steps, overwrite=args.overwrite)
        print(f"wrote images for {args.prompts} to {out} (score them with `llmdiff eval --images {out}`)")
        return
    steps, guidance_scale = pipe.sampling(args.steps, args.guidance_scale)
    settings = {"negative_prompt": args.negative_prompt or "", "num_inference_steps": steps,
                "guidance_scale": guidance_scale, "scheduler": pipe.sample_config["scheduler"], "model": str(model),
                WEIGHTS: model_digest(pipe)}  # a model retrained in the same folder draws its images anew
    metadata = [{"prompt": prompts[i], "seed": seed, **settings} for i, seed in flat]
    todo = [k for k, path in enumerate(paths) if not _saved_with(path, metadata[k], args.display_size)]
    if args.from_png and any(paths[k].resolve() == Path(args.from_png).resolve() for k in todo):
        raise LLMDiffError(f"--out {args.out} is the --from-png image being read, which these settings would "
                           "replace; choose another --out")

    def save(start: int, images: list) -> None:
        for k, image in zip(todo[start:start + len(images)], images):
            save_png(image, paths[k], metadata[k], args.display_size)

    generate_missing(pipe, [prompts[flat[k][0]] for k in todo], [[flat[k][1]] for k in todo], save, args.batch_size,
                     progress=False, negative_prompt=settings["negative_prompt"] or None,
                     num_inference_steps=steps, guidance_scale=guidance_scale)
    kept = f", {len(flat) - len(todo)} already there with these settings" if len(todo) < len(flat) else ""
    if grid is not None:
        import numpy as np
        from PIL import Image

        from .viz import image_grid

        images = []
        for path in paths:
            with Image.open(path) as im:
                images.append(np.asarray(im.convert("RGB")))
        image_grid(images, [prompts[i] for i, _ in flat], grid)
        print(f"wrote {len(todo)} images{kept} to {paths[0].parent} ({paths[0].name}, ...) and the grid {grid}")
    elif todo:
        print(f"wrote {paths[0]}")
    else:
        print(f"{paths[0]} already holds this image (the same settings and weights): nothing drawn")


def _is_generated_png(path: Path) -> bool:
    """A PNG `llmdiff generate` wrote (its settings as metadata): replaced; anything else is the user's."""
    try:
        png_metadata(path)
    except LLMDiffError:
        return False
    return True


def _saved_with(path: Path, metadata: dict, display_size: int | None) -> bool:
    """Whether `path` is already the image these settings and weights draw (saved at this size): a rerun skips it."""
    from PIL import Image

    try:
        if _llmdiff_text(path) != json.loads(json.dumps(metadata)):
            return False
        with Image.open(path) as im:
            return display_size is None or im.size[0] == display_size
    except OSError:
        return False


def check_device(device: str | None) -> None:
    """A one-line error for a device torch does not know or this machine does not have."""
    import torch

    if device is None:
        return
    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise LLMDiffError(f"--device {device!r} is not a torch device (cpu, cuda, cuda:1, mps, ...)") from None
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not available.get(kind, False):
        raise LLMDiffError(f"--device {device}: this machine has no {kind} device torch can use")


def output_paths(out: Path, images: list[tuple[int, int]]) -> list[Path]:
    """`out` itself for one image into a .png path; else NNN-SEED.png files (in `out`, or beside it with its
    stem as prefix when `out` names a .png)."""
    if out.suffix == ".png":
        if len(images) == 1:
            return [out]
        return [out.with_name(f"{out.stem}-{i:03d}-{seed}.png") for i, seed in images]
    return [out / f"{i:03d}-{seed}.png" for i, seed in images]
