"""``llmdiff generate``: images from one prompt, a prompt file or a prompt suite, as files people can use.

* one prompt or a ``.txt`` file (one prompt per line): one PNG per image, named ``NNN-SEED.png`` (prompt
  index, the image's seed), plus a captioned grid as an extra file when there are several images;
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
from .integrity import check_writable

METADATA_KEY = "llmdiff"
DTYPES = ("float32", "float16", "bfloat16")


def read_prompt_file(path: Path | str) -> list[str]:
    """Prompts of a text file, one per line (blank lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise LLMDiffError(f"no prompt file {path}")
    prompts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not prompts:
        raise LLMDiffError(f"{path} holds no prompts (one per line)")
    return prompts


def png_metadata(path: Path | str) -> dict:
    """The settings `llmdiff generate` stored in a PNG."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            text = getattr(im, "text", {}).get(METADATA_KEY)
        meta = json.loads(text) if text is not None else None
    except (OSError, UnidentifiedImageError, json.JSONDecodeError):
        meta = None
    keys = ("prompt", "seed", "negative_prompt", "num_inference_steps", "guidance_scale", "scheduler", "model")
    if not isinstance(meta, dict) or not all(k in meta for k in keys):
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
    return meta


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
    from .pipelines import generators_for, image_seed, load_pipeline

    model = Path(args.model) if args.model else default_model
    pipe = load_pipeline(model, scheduler=args.scheduler, device=args.device, torch_dtype=getattr(torch, args.dtype))
    if suite:
        from .evaluation.model_eval import generate_suite  # with the evaluator (scipy.ndimage): suites only
        from .shapes.suites import load_suite

        out = generate_suite(pipe, load_suite(args.prompts), args.out, args.images_per_prompt, args.seed,
                             args.guidance_scale, args.steps, overwrite=args.overwrite)
        print(f"wrote images for {args.prompts} to {out} (score them with `llmdiff eval --images {out}`)")
        return
    if not args.from_png:
        seeds = [[image_seed(args.seed, i, k) for k in range(args.images_per_prompt)] for i in range(len(prompts))]
    steps, guidance_scale = pipe.sampling(args.steps, args.guidance_scale)
    settings = {"negative_prompt": args.negative_prompt or "", "num_inference_steps": steps,
                "guidance_scale": guidance_scale, "scheduler": pipe.sample_config["scheduler"], "model": str(model)}
    flat = [(i, s) for i, row in enumerate(seeds) for s in row]
    paths = output_paths(Path(args.out), flat)
    if not args.overwrite:
        for path in paths:
            refuse_foreign_file(path)
    images = []
    for start in range(0, len(flat), args.batch_size):  # one progress bar per batch of images
        chunk = flat[start:start + args.batch_size]
        images += pipe([prompts[i] for i, _ in chunk], negative_prompt=settings["negative_prompt"] or None,
                       num_inference_steps=settings["num_inference_steps"], guidance_scale=settings["guidance_scale"],
                       generator=generators_for([s for _, s in chunk])).images
    for (i, seed), image, path in zip(flat, images, paths):
        save_png(image, path, {"prompt": prompts[i], "seed": seed, **settings}, args.display_size)
    if len(images) > 1:
        import numpy as np

        from .viz import image_grid

        grid = paths[0].parent / (f"{Path(args.out).stem}-grid.png" if args.out.endswith(".png") else "grid.png")
        image_grid([np.asarray(im) for im in images], [prompts[i] for i, _ in flat], grid)
        print(f"wrote {len(images)} images to {paths[0].parent} ({paths[0].name}, ...) and the grid {grid}")
    else:
        print(f"wrote {paths[0]}")


def refuse_foreign_file(path: Path) -> None:
    """Replace only PNGs this command wrote (they carry its metadata); anything else at `path` is the user's."""
    if not path.exists():
        return
    try:
        png_metadata(path)
    except LLMDiffError:
        raise LLMDiffError(f"{path} exists and was not written by `llmdiff generate`; choose another --out "
                           "or pass --overwrite") from None


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
