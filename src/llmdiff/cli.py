"""The ``llmdiff`` command line: one subcommand per stage of the data flow.

    llmdiff shapes render|prompts|gt     the Shapes world: scenes, prompt suites, ground truth
    llmdiff encode --captions FILE ...   read captions with a frozen LLM into a feature cache
    llmdiff train CONFIG.yaml [k=v ...]  train a denoiser (LI-DiT, U-Net, U-Net + LLMDiff adapter)
    llmdiff generate "PROMPT" --out x.png    images from a trained model (or --prompts FILE|SUITE --out DIR)
    llmdiff export RUN --out DIR         a model folder from a run's checkpoint (convert: from an old folder)
    llmdiff eval --images DIR            score a GenEval-layout folder (or --validate the evaluator)
    llmdiff probe MODEL [MODEL ...]      which prompt words a trained model reads, at which noise level
    llmdiff experiment SPEC.yaml         train and compare variants (the papers' ablations)
    llmdiff autoencoder --out DIR        train the small autoencoder for latent diffusion
    llmdiff demo                         the main job on the embedded default
    llmdiff serve [--port 7860]          the studio: a local web page to generate, compare and look inside
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from .errors import LLMDiffError
from .integrity import check_replaceable, check_writable, child_folder, is_llmdiff_figure
from .model_folder import DEFAULT_MODEL

COMMANDS: dict[str, "callable"] = {}


def _run_export(args) -> None:
    from .training.checkpoint import export_checkpoint, list_checkpoints

    run = Path(args.run_dir)
    check_writable(args.out, "--out")
    ckpts = list_checkpoints(run / "checkpoints")
    if not ckpts:
        raise LLMDiffError(f"{run} holds no checkpoints")
    ckpt = ckpts[-1] if args.step is None else run / "checkpoints" / f"step-{args.step:07d}"
    if not ckpt.is_dir():
        raise LLMDiffError(f"no checkpoint {ckpt.name} in {run}; have {', '.join(c.name for c in ckpts)}")
    out = export_checkpoint(ckpt, Path(args.out), ema=not args.no_ema)
    print(f"exported {ckpt} ({'raw training' if args.no_ema else 'EMA'} weights) to {out}")


def command(name):
    def register(fn):
        COMMANDS[name] = fn
        return fn

    return register


# --- shapes -------------------------------------------------------------------------------------


@command("shapes render")
def _shapes_render(args) -> None:
    import numpy as np

    from .shapes.captions import caption
    from .shapes.suites import load_suite, with_scenes
    from .shapes.training_set import sample_spec
    from .shapes.world import SceneSpec, render
    from .viz import image_grid

    check_writable(args.out, "--out", folder=False)
    check_replaceable(args.out, "--out", is_llmdiff_figure, args.overwrite)  # a grid llmdiff drew, or nothing
    rng = np.random.default_rng(args.seed)
    if args.suite:
        entries = with_scenes(load_suite(args.suite)[: args.n], args.suite)
        specs = [SceneSpec.from_dict(e["scene"]) for e in entries]
        captions = [e["prompt"] for e in entries]
    else:
        specs = [sample_spec(rng) for _ in range(args.n)]
        captions = [caption(s, "train", rng) for s in specs]
    images = [render(s, rng, args.resolution).image for s in specs]
    path = image_grid(images, captions, args.out, cols=args.cols)
    print(f"wrote {len(images)} scenes to {path}")


@command("shapes prompts")
def _shapes_prompts(args) -> None:
    from .shapes.suites import build_suite
    from .utils import atomic_write_text

    if args.out:
        check_writable(args.out, "--out", folder=False)
    lines = "".join(json.dumps(e) + "\n" for e in build_suite(args.suite))
    if args.out:  # a JSONL file carries no mark of its writer: only the same prompts are written over it
        check_replaceable(args.out, "--out", lambda p: p.read_bytes() == lines.encode(), args.overwrite)
        atomic_write_text(args.out, lines)
        print(f"wrote {lines.count(chr(10))} prompts to {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(lines)


@command("shapes gt")
def _shapes_gt(args) -> None:
    import numpy as np
    from tqdm.auto import tqdm

    from .evaluation.layout import claim_output, prompts_digest, write_prompt_folder
    from .integrity import folder_lock
    from .shapes.corrupt import corrupt
    from .shapes.suites import contradicting_spec, load_suite, with_scenes
    from .shapes.world import SceneSpec, render

    check_writable(args.out, "--out")
    rng = np.random.default_rng(args.seed)
    entries = with_scenes(load_suite(args.suite), args.suite)
    # the folder's record, as `generate` keeps one: only renders of these settings are written over
    record = {"made_by": "llmdiff shapes gt", "suite": args.suite, "prompts_sha256": prompts_digest(entries),
              "images_per_prompt": args.images_per_prompt, "resolution": args.resolution, "seed": args.seed,
              "corrupt": args.corrupt, "contradict": args.contradict}
    with folder_lock(args.out, "renders into"):
        claim_output(Path(args.out), record, args.overwrite)
        for i, entry in enumerate(tqdm(entries, desc="rendering", unit="prompt")):
            images = []
            for _ in range(args.images_per_prompt):
                spec = contradicting_spec(entry, rng) if args.contradict else SceneSpec.from_dict(entry["scene"])
                img = render(spec, rng, args.resolution, warp=0.15 if args.corrupt else 0.0).image
                images.append(corrupt(img, rng) if args.corrupt else img)
            write_prompt_folder(Path(args.out), i, entry, images)
    print(f"wrote {len(entries)} prompts x {args.images_per_prompt} images to {args.out}")


# --- encode -------------------------------------------------------------------------------------


def parse_layers_arg(text: str):
    """'-3', 'last', 'all' or '0,10,20' from the command line."""
    if text in ("last", "all"):
        return text
    try:
        items = [int(t) for t in text.split(",")]
    except ValueError:
        raise LLMDiffError(f"--layers takes 'last', 'all', an index such as -3 or a list such as 10,20,-1; got {text!r}") from None
    return items[0] if len(items) == 1 else tuple(items)


@command("encode")
def _encode(args) -> None:
    from .encoders import EncoderConfig, load_encoder
    from .encoders.cache import build_cache, read_captions

    cfg = EncoderConfig(model=args.encoder, layers=parse_layers_arg(args.layers), mode=args.mode,
                        block_groups=args.block_groups, instruction=args.instruction, chat_template=args.chat_template,
                        max_length=args.max_length, padding_side=args.padding_side, strict=args.strict, echo=args.echo)
    check_writable(args.out, "--out")
    captions = read_captions(args.captions)
    encoder = load_encoder(cfg)
    root = build_cache(encoder, captions, args.out, shard_size=args.shard_size, dtype=args.dtype,
                       batch_size=args.batch_size, overwrite=args.overwrite)
    print(f"encoded {len(captions)} captions with {args.encoder} into {root}")


# --- train and generate -------------------------------------------------------------------------


@command("train")
def _train(args) -> None:
    from .config import load_config
    from .training.trainer import train

    cfg = load_config(args.config, args.overrides + (["data.skip_bad=true"] if args.skip_bad else []))
    run_dir = check_writable(Path(args.run_dir) if args.run_dir else child_folder("runs", cfg.name, "name"),
                             "--run-dir")
    model_dir = train(cfg, run_dir, resume=args.resume)
    print(f"trained model in {model_dir}; run folder {run_dir} (loss.png, samples/, log.jsonl)")


@command("generate")
def _generate(args) -> None:
    from .generate import run_generate

    run_generate(args, DEFAULT_MODEL)


command("export")(_run_export)


@command("convert")
def _convert(args) -> None:
    from .model_folder import convert_model_folder

    check_writable(args.new, "NEW")
    out = convert_model_folder(args.old, args.new)
    print(f"converted {args.old} into the pipeline layout at {out}")


@command("autoencoder")
def _autoencoder(args) -> None:
    from .autoencoder import train_autoencoder

    check_writable(args.out, "--out")  # before training, so the result is never lost
    out = train_autoencoder(args.out, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                            resolution=args.resolution, seed=args.seed, latent_channels=args.latent_channels,
                            rgb_anchor=args.rgb_anchor, overwrite=args.overwrite)
    print(f"autoencoder in {out}; use it with model.autoencoder={out}")


@command("experiment")
def _experiment(args) -> None:
    from .experiments import load_spec, run_experiment

    check_writable(args.runs, "--runs")
    check_writable(args.results, "--results")
    spec = load_spec(args.spec)
    variants = args.variants.split(",") if args.variants else None
    seeds = args.seeds
    report = run_experiment(spec, variants, Path(args.runs), Path(args.results), seeds=seeds, jobs=args.jobs)
    print((Path(args.results) / spec.name / "results.md").read_text())
    print(f"{len(report['variants'])} variant(s) reported in {Path(args.results) / spec.name}")


# --- eval ---------------------------------------------------------------------------------------


@command("eval")
def _eval(args) -> None:
    from .evaluation.evaluate import VALIDATION_FILES, check_report_folder, markdown_summary, run_eval
    from .utils import atomic_write_text

    if args.out:
        check_writable(args.out, "--out")
    if args.validate:
        from .evaluation.validate import validate, validation_markdown

        if args.out:
            check_report_folder(Path(args.out), VALIDATION_FILES, args.overwrite)
        report = validate(images_per_prompt=args.images_per_prompt, resolution=args.resolution or 32)
        md = validation_markdown(report)
        if args.out:
            out = Path(args.out)
            atomic_write_text(out / "validation.json", json.dumps(report, indent=2) + "\n")
            atomic_write_text(out / "validation.md", md)
        print(md)
        return
    if not args.images:
        raise LLMDiffError("pass --images DIR (a GenEval-layout folder) or --validate")
    summary = run_eval(Path(args.images), Path(args.out) if args.out else None, args.threshold, args.resolution,
                       overwrite=args.overwrite)
    print(markdown_summary(summary, f"Evaluation of {args.images}"))
    print(f"results in {args.out or Path(args.images) / 'eval'}")


# --- demo ---------------------------------------------------------------------------------------


@command("demo")
def _demo(args) -> None:
    from .demo import run_demo

    check_writable(args.out, "--out")
    run_demo(Path(args.out), Path(args.model) if args.model else DEFAULT_MODEL, args.images_per_prompt, args.seed,
             args.full)


def _version() -> str:
    from . import __version__

    return __version__


class UsageError(Exception):
    """A command line argparse refuses; reported in one line like every other bad input."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print the whole usage block and exit
        raise UsageError(f"{self.prog}: error: {message} (see `{self.prog} --help`)")


SEED_MAX = 2**32 - 1


def int_in(lo: int, hi: int):
    """An argparse type: a whole number within [lo, hi]."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number in [{lo}, {hi}], got {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be in [{lo}, {hi}], got {value}")
        return value

    parse.__name__ = "int"
    return parse


def float_in(lo: float, hi: float, lo_open: bool = False):
    """An argparse type: a finite number within [lo, hi] (or (lo, hi] with lo_open)."""
    span = f"{'(' if lo_open else '['}{lo}, {hi}]"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number in {span}, got {text!r}") from None
        if not math.isfinite(value) or not (lo < value if lo_open else lo <= value) or value > hi:
            raise argparse.ArgumentTypeError(f"must be a finite number in {span}, got {text}")
        return value

    parse.__name__ = "float"
    return parse


def int_list(text: str) -> list[int]:
    """An argparse type: comma-separated seeds such as 0,1,2."""
    try:
        values = [int(t) for t in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers such as 0,1; got {text!r}") from None
    if any(not 0 <= v <= SEED_MAX for v in values):
        raise argparse.ArgumentTypeError(f"seeds must be in [0, {SEED_MAX}], got {text!r}")
    return values


SEED = int_in(0, SEED_MAX)
RESOLUTION = int_in(16, 1024)
IMAGES_PER_PROMPT = int_in(1, 256)


def build_parser() -> argparse.ArgumentParser:
    from .config import GUIDANCE_SCALE, SAMPLE_STEPS
    from .diffusion import SCHEDULERS

    p = _Parser(prog="llmdiff", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true", help="show the full traceback of an unexpected error")
    p.add_argument("--version", action="version", version=f"llmdiff {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    shapes = sub.add_parser("shapes", help="the Shapes world: render scenes, write prompt suites, ground truth")
    ssub = shapes.add_subparsers(dest="shapes_command", required=True, metavar="SUBCOMMAND")
    r = ssub.add_parser("render", help="a PNG grid of scenes with their captions")
    r.add_argument("--suite", help="render prompts of this suite (geneval, compbench, position_bias, paraphrase, dense, "
                   "lexical, frames or a JSONL)")
    r.add_argument("--n", type=int_in(1, 1024), default=16, help="number of scenes (default 16)")
    r.add_argument("--resolution", type=RESOLUTION, default=32, help="image side in pixels (default 32)")
    r.add_argument("--cols", type=int_in(1, 64), default=4, help="scenes per row of the grid (default 4)")
    r.add_argument("--seed", type=SEED, default=0, help="seed of the scenes and captions drawn (default 0)")
    r.add_argument("--out", default="shapes.png", help="output PNG (default shapes.png)")
    r.add_argument("--overwrite", action="store_true",
                   help="replace an --out file that is not a grid llmdiff drew (else refused)")
    pr = ssub.add_parser("prompts", help="a prompt suite in GenEval's metadata format (JSONL)")
    pr.add_argument("--suite", required=True,
                    help="geneval, compbench, position_bias, paraphrase, dense, lexical or frames")
    pr.add_argument("--out", help="write to this file instead of stdout")
    pr.add_argument("--overwrite", action="store_true",
                    help="replace an --out file that holds anything but these prompts (else refused)")
    gt = ssub.add_parser("gt", help="ground-truth renders of a suite in the GenEval folder layout")
    gt.add_argument("--suite", required=True,
                    help="geneval, compbench, position_bias, paraphrase, dense, lexical, frames or a JSONL")
    gt.add_argument("--out", required=True, help="the folder the GenEval layout is written to")
    gt.add_argument("--images-per-prompt", type=IMAGES_PER_PROMPT, default=4,
                    help="renders per prompt, each a new draw of its scene (default 4)")
    gt.add_argument("--resolution", type=RESOLUTION, default=32, help="image side in pixels (default 32)")
    gt.add_argument("--corrupt", action="store_true", help="blur, noise, colour jitter and shape warp")
    gt.add_argument("--contradict", action="store_true", help="render scenes that violate their prompts")
    gt.add_argument("--seed", type=SEED, default=0, help="seed of the renders (default 0)")
    gt.add_argument("--overwrite", action="store_true", help="replace the prompt folders --out holds when other "
                    "settings or another command made them (else refused)")

    enc = sub.add_parser("encode", help="encode a caption set into a feature cache (safetensors shards)")
    enc.add_argument("--encoder", default="smollm2-135m", help="packaged name, local folder, .gguf file or hub id")
    enc.add_argument("--layers", default="-3", help="'last', 'all', an index such as -3, or a list such as 10,20,-1")
    enc.add_argument("--mode", default="hidden", choices=["hidden", "blockwise"],
                     help="hidden states, or LLMDiff per-block context differences")
    enc.add_argument("--block-groups", type=int_in(0, 1024), default=0, help="blockwise: sum blocks into this many groups")
    enc.add_argument("--instruction", default=None, help="'default' (LI-DiT's), 'none', or the instruction text")
    enc.add_argument("--chat-template", action="store_true", help="wrap instruction and prompt in the chat template")
    enc.add_argument("--echo", action="store_true",
                     help="read the prompt twice and keep the second copy (its tokens have seen the whole prompt)")
    enc.add_argument("--max-length", type=int_in(1, 8192), default=64, help="prompt tokens kept (default 64)")
    enc.add_argument("--padding-side", default="right", choices=["right", "left"],
                     help="which end of a short prompt is padded (default right)")
    enc.add_argument("--strict", action="store_true", help="refuse over-long prompts instead of truncating them")
    enc.add_argument("--captions", required=True, help="text file (one caption per line) or JSONL with caption/prompt")
    enc.add_argument("--out", required=True, help="cache folder")
    enc.add_argument("--dtype", default="float16", choices=["float16", "float32", "bfloat16"],
                     help="how the features are stored (default float16)")
    enc.add_argument("--shard-size", type=int_in(1, 1_000_000), default=256,
                     help="captions per safetensors shard (default 256)")
    enc.add_argument("--batch-size", type=int_in(1, 65536), default=64,
                     help="captions the LLM reads at once (default 64)")
    enc.add_argument("--overwrite", action="store_true", help="replace a cache built with other settings")

    t = sub.add_parser("train", help="train a model from a YAML experiment config")
    t.add_argument("config", help="YAML config, e.g. configs/shapes-lidit.yaml")
    t.add_argument("overrides", nargs="*", help="dotted overrides such as train.steps=200 model.preset=small")
    t.add_argument("--run-dir", help="run folder (default runs/NAME)")
    t.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    t.add_argument("--skip-bad", action="store_true",
                   help="folder data: train on the good rows when some images are unreadable (same as data.skip_bad=true)")

    g = sub.add_parser("generate", help="images from prompts with a trained model")
    g.add_argument("prompt", nargs="?", help="one prompt, e.g. \"a red circle to the left of a blue square\"")
    g.add_argument("--prompts", help="a .txt file (one prompt per line), or a suite name or GenEval-format JSONL "
                   "(these write the GenEval folder layout that `llmdiff eval` scores)")
    g.add_argument("--from-png", help="regenerate the image a PNG written by `llmdiff generate` describes")
    g.add_argument("--negative-prompt", help="what the image should not show (the unconditional branch of guidance)")
    g.add_argument("--model", help="model folder (default: the shipped models/shapes-lidit)")
    g.add_argument("--out", default="out.png", help="a PNG for one image; with several images NAME-NNN-SEED.png "
                   "beside it (or NNN-SEED.png in a folder) and a grid; a folder for a suite (default out.png)")
    g.add_argument("--images-per-prompt", type=IMAGES_PER_PROMPT, default=1, help="images per prompt (default 1)")
    g.add_argument("--steps", type=int_in(*SAMPLE_STEPS), help="sampling steps (default: the model's sample_config)")
    g.add_argument("--guidance-scale", type=float_in(*GUIDANCE_SCALE),
                   help="classifier-free guidance, 1 = off (default: the model's)")
    g.add_argument("--scheduler", choices=SCHEDULERS,
                   help="sampling scheduler (default: the model's)")
    g.add_argument("--seed", type=SEED, default=0, help="image k of prompt i gets a seed derived from this (default 0)")
    g.add_argument("--batch-size", type=int_in(1, 1024), default=16, help="images sampled together (default 16)")
    g.add_argument("--device", help="cpu, cuda, cuda:1, mps ... (default cpu)")
    g.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                   help="weights and activations (default float32)")
    g.add_argument("--display-size", type=int_in(8, 4096), default=256,
                   help="pixel size of saved images (nearest upscale; default 256)")
    g.add_argument("--overwrite", action="store_true", help="replace what --out holds: a suite folder's images "
                   "made by another model or setting, or a PNG that `llmdiff generate` did not write (else refused)")

    ex = sub.add_parser("export", help="a model folder (EMA weights, pipeline layout) from a run's checkpoint")
    ex.add_argument("run_dir", help="a training run's folder (its --run-dir), e.g. runs/mine")
    ex.add_argument("--step", type=int_in(0, 10_000_000), help="checkpoint step (default: the last)")
    ex.add_argument("--out", required=True, help="the new model folder, e.g. models/mine")
    ex.add_argument("--no-ema", action="store_true", help="export the raw training weights instead of their EMA")

    cv = sub.add_parser("convert", help="rewrite a model folder of the old layout (config.json + llmdiff.json) in "
                        "the pipeline layout (model_index.json, denoiser/, scheduler/)")
    cv.add_argument("old", help="the old-layout model folder (left as it is)")
    cv.add_argument("new", help="where the converted model folder goes (a new folder)")

    a = sub.add_parser("autoencoder", help="train the small image autoencoder for latent diffusion")
    a.add_argument("--out", required=True, help="output folder, e.g. models/shapes-ae")
    a.add_argument("--steps", type=int_in(1, 1_000_000), default=1500, help="training steps (default 1500)")
    a.add_argument("--batch-size", type=int_in(1, 4096), default=32, help="images per step (default 32)")
    a.add_argument("--lr", type=float_in(0.0, 1.0, lo_open=True), default=1e-3, help="learning rate (default 1e-3)")
    a.add_argument("--resolution", type=RESOLUTION, default=32, help="image side in pixels (default 32)")
    a.add_argument("--seed", type=SEED, default=0, help="seed of the weights and the rendered scenes (default 0)")
    a.add_argument("--latent-channels", type=int_in(1, 64), default=6,
                   help="channels of the latent the diffusion model samples (default 6)")
    a.add_argument("--rgb-anchor", type=float_in(0.0, 100.0), default=1.0,
                   help="pull the first 3 latent channels towards the pooled image (colour stays linear)")
    a.add_argument("--overwrite", action="store_true", help="replace config.json, the weights and training.json "
                   "in --out when they are not an autoencoder llmdiff trained (else refused)")

    x = sub.add_parser("experiment", help="train and compare variants of a config with the same budget")
    x.add_argument("spec", help="experiment YAML, e.g. configs/experiments/ladder.yaml")
    x.add_argument("--variants", help="comma-separated subset of the variants")
    x.add_argument("--seeds", type=int_list, help="comma-separated subset of the experiment's seeds (the rest can run later)")
    x.add_argument("--runs", default="runs/experiments", help="where runs go (not committed)")
    x.add_argument("--results", default="docs/results", help="where tables and plots go")
    x.add_argument("--jobs", type=int_in(1, 64), default=1, help="runs trained at once, one process each (e.g. 2 "
                   "on a 2-core CPU with the experiment's threads: 1); each process gets cores / jobs threads "
                   "unless the experiment sets threads; the runs' caption features are encoded first, with every "
                   "core")

    e = sub.add_parser("eval", help="score generated images (GenEval layout) with the Shapes detector")
    e.add_argument("--images", help="folder with 00000/metadata.jsonl + 00000/samples/0000.png ...")
    e.add_argument("--out", help="report folder (default IMAGES/eval)")
    e.add_argument("--threshold", type=float_in(0.0, 1.0), default=0.5,
                   help="minimum shape similarity of a detection (default 0.5)")
    e.add_argument("--resolution", type=RESOLUTION, help="reject images of any other size")
    e.add_argument("--validate", action="store_true", help="validate the evaluator on true and contradicting renders")
    e.add_argument("--images-per-prompt", type=IMAGES_PER_PROMPT, default=4, help="with --validate (default 4)")
    e.add_argument("--overwrite", action="store_true", help="replace report files (summary.md, ...) in --out that "
                   "an earlier evaluation did not write (else refused)")

    pb = sub.add_parser("probe", help="text-sensitivity probe: how much one changed word (colour, shape, count, "
                        "relation) moves each model's prediction, and the attention on it, at high/middle/low noise")
    pb.add_argument("models", nargs="+", help="trained model folders, e.g. models/shapes-lidit models/shapes-unet-base")
    pb.add_argument("--out", default="outputs/probe", help="report folder: probe.md, probe.json, probe.png "
                    "(default outputs/probe)")
    pb.add_argument("--images", type=int_in(1, 256), default=4, help="images per prompt pair (default 4)")
    pb.add_argument("--seed", type=SEED, default=0, help="seed of the noise the prompt pairs share (default 0)")

    d = sub.add_parser("demo", help="the main job: the shipped model on held-out prompts, a grid and scores")
    d.add_argument("--out", default="outputs/demo", help="where the grid and the report go (default outputs/demo)")
    d.add_argument("--model", help="model folder (default: the shipped models/shapes-lidit)")
    d.add_argument("--images-per-prompt", type=IMAGES_PER_PROMPT, default=4, help="images per prompt (default 4)")
    d.add_argument("--seed", type=SEED, default=0, help="image k of prompt i gets a seed derived from this (default 0)")
    d.add_argument("--full", action="store_true", help="the whole geneval suite (164 prompts) instead of 12")

    sv = sub.add_parser("serve", help="the studio: a local web page to generate images, compare two models and see "
                        "each prompt token's attention and what the evaluator detects")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    sv.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    sv.add_argument("--model", help="model folder selected (and loaded) at start (default: the shipped "
                    "models/shapes-lidit)")
    return p


@command("probe")
def _probe(args) -> None:
    from .evaluation.probe import probe_models

    check_writable(args.out, "--out")
    out = probe_models(args.models, args.out, args.images, args.seed)
    print((out / "probe.md").read_text())
    print(f"wrote {out / 'probe.md'}, probe.json and probe.png")


@command("serve")
def _serve(args) -> None:
    import importlib.util

    if importlib.util.find_spec("gradio") is None:
        raise LLMDiffError("llmdiff serve needs the studio's packages: pip install 'llmdiff[studio]'")
    from .studio_app import serve

    if not 0 < args.port < 65536:
        raise LLMDiffError(f"--port must be in 1..65535, got {args.port}")
    check_host(args.host)
    serve(args.host, args.port, args.model)


def check_host(host: str) -> None:
    """The address to listen on resolves (else the web server reports only that it cannot find a free port)."""
    import socket

    try:
        socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError) as e:
        why = getattr(e, "strerror", None) or e
        raise LLMDiffError(f"--host {host!r} does not resolve to an address ({why}); use 127.0.0.1 (this machine "
                           "only), 0.0.0.0 (every interface) or a name that resolves") from None


def _expected_errors() -> tuple[type[BaseException], ...]:
    """Errors that bad input causes (a missing or unreadable file, broken JSON or weights, a bad image):
    reported in one line. Anything else is a bug and gets a traceback file."""
    import yaml
    from PIL import Image, UnidentifiedImageError
    from safetensors import SafetensorError

    return (LLMDiffError, OSError, json.JSONDecodeError, UnicodeError, SafetensorError, UnidentifiedImageError,
            Image.DecompressionBombError, yaml.YAMLError)


def _one_line(message: str) -> str:
    return " ".join(str(message).split("\n"))


def run_script(main) -> None:
    """Run a script's main(), turning the errors a user can fix into a one-line message (scripts/*.py)."""
    try:
        main()
    except LLMDiffError as e:
        raise SystemExit(_one_line(f"error: {e}")) from None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        # argparse ends a positional list at the first option, so `train CONFIG --run-dir R train.steps=9`
        # leaves the overrides after the option unparsed; they are overrides all the same
        if extra and hasattr(args, "overrides") and all("=" in x and not x.startswith("-") for x in extra):
            args.overrides = args.overrides + extra
        elif extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except UsageError as e:
        print(_one_line(e), file=sys.stderr)
        return 2
    key = args.command + (f" {args.shapes_command}" if args.command == "shapes" else "")
    try:
        COMMANDS[key](args)
    except KeyboardInterrupt:
        print(f"llmdiff {key}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the one place that turns errors into messages
        if args.debug:
            raise
        if isinstance(e, _expected_errors()):
            print(_one_line(f"llmdiff {key}: error: {e}"), file=sys.stderr)
            return 2
        import tempfile
        import traceback

        with tempfile.NamedTemporaryFile("w", prefix="llmdiff-error-", suffix=".txt", delete=False) as f:
            traceback.print_exc(file=f)
        print(_one_line(f"llmdiff {key}: unexpected error: {type(e).__name__}: {e} (traceback in {f.name}; "
                        "rerun with --debug to see it)"), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
