"""Training throughput of a config's denoiser in fp32 and under bf16 autocast, side by side in one process.

    python scripts/bench_training.py [--config configs/shapes-lidit.yaml] [--threads 1] [--rounds 6]
    python scripts/bench_training.py --batch-sizes 32,64,128

One training step (forward, backward, AdamW) of the config's model on a fixed batch of `train.batch_size`
random images and text features (the config's LLM width, 20 tokens), in three ways, alternating step by step so
that other load on the machine falls on all alike:

* ``fp32``: the default, and the path of every release before ``train.mixed_precision`` existed;
* ``bf16 unfused attention``: ``torch.autocast("cpu", torch.bfloat16)`` with attention in bf16 through PyTorch's
  unfused path (what ``train.mixed_precision=bf16`` ran before attention went to fp32);
* ``bf16``: what ``train.mixed_precision=bf16`` runs (autocast, attention in fp32 through the fused kernel).

Prints images/s (median over the rounds) and the ratio to fp32, and the operators that take the most time in
each way (PyTorch's profiler; ``mkldnn`` matmuls in bf16 are the AVX-512 BF16 kernels). Writes
docs/benchmarks/mixed_precision.{md,json}.

With ``--batch-sizes``, the ways are instead the ``bf16`` step at each of those batch sizes, alternating the same
way: whether a larger batch (with the learning rate scaled) makes a screen run's images cheaper. Writes
docs/benchmarks/batch_size.{md,json}.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from llmdiff import layers
from llmdiff.config import load_config
from llmdiff.diffusion import training_loss
from llmdiff.encoders import TextInput
from llmdiff.training.build import build_denoiser
from llmdiff.utils import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
TEXT_LEN = 20
LLM_WIDTHS = {"gemma3-270m": 640, "smollm2-135m": 576, "minilm": 384}


# way -> (bf16 autocast, attention in bf16 through PyTorch's unfused path instead of llmdiff's fp32 kernel)
WAYS = {"fp32": (False, False), "bf16 unfused attention": (True, True), "bf16": (True, False)}
LLMDIFF_ATTENTION = layers._fp32_attention


def _unfused_bf16_attention(q, k, v, mask, causal):
    with sdpa_kernel(SDPBackend.MATH):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)


def use_way(way: str):
    autocast, unfused = WAYS[way]
    layers._fp32_attention = _unfused_bf16_attention if unfused else LLMDIFF_ATTENTION
    return torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "shapes-lidit.yaml")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as a screen run uses)")
    p.add_argument("--rounds", type=int, default=6, help="timed steps of each way")
    p.add_argument("--batch-sizes", default="",
                   help="comma-separated batch sizes to compare under bf16 (e.g. 32,64,128) instead of the ways")
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks"), help="where the report goes ('' for none)")
    args = p.parse_args()
    try:
        sizes = [int(s) for s in args.batch_sizes.split(",")] if args.batch_sizes else []
    except ValueError:
        p.error("--batch-sizes takes comma-separated whole numbers, e.g. 32,64,128")
    if args.threads < 1 or args.rounds < 2 or min(sizes, default=1) < 1:
        p.error("--threads and every batch size must be at least 1, --rounds at least 2")
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    widths = [LLM_WIDTHS.get(e.model, 640) for e in cfg.text.encoders]
    torch.manual_seed(0)
    model = build_denoiser(cfg, widths, [1] * len(widths))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    # name -> (way, batch size); ratios are to the config's own batch size (fp32 among the three ways)
    ways = {f"batch {b}": ("bf16", b) for b in sizes} or {w: (w, cfg.train.batch_size) for w in WAYS}
    reference = f"batch {cfg.train.batch_size}" if f"batch {cfg.train.batch_size}" in ways else next(iter(ways))
    side = cfg.data.resolution
    batches = {b: (torch.rand(b, 3, side, side) * 2 - 1,
                   [TextInput(torch.randn(b, TEXT_LEN, w), torch.ones(b, TEXT_LEN, dtype=torch.bool)) for w in widths])
               for b in {b for _, b in ways.values()}}

    def step(name: str) -> float:
        way, b = ways[name]
        x0, texts = batches[b]
        start = time.perf_counter()
        with use_way(way):
            loss = training_loss(model, x0, texts, "flow", torch.Generator().manual_seed(0), cfg.train.flow_shift)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    for name in ways:  # warm-up
        step(name)
    seconds = {name: [] for name in ways}
    for _ in range(args.rounds):
        for name in ways:
            seconds[name].append(step(name))
    rate = {name: ways[name][1] / statistics.median(s) for name, s in seconds.items()}
    top = {}
    from torch.profiler import ProfilerActivity, profile

    for name in ways:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step(name)
        events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:6]
        total = sum(e.self_cpu_time_total for e in prof.key_averages())
        top[name] = [(e.key, round(e.self_cpu_time_total / total, 3)) for e in events]
    load = open("/proc/loadavg").read().split()[:3] if Path("/proc/loadavg").is_file() else []
    config = str(args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config)
    result = {"config": config, "threads": args.threads, "rounds": args.rounds, "load_average": load,
              "ways": {name: {"way": w, "batch": b} for name, (w, b) in ways.items()}, "reference": reference,
              "images_per_s": rate, "ratio": {name: rate[name] / rate[reference] for name in ways}, "top_ops": top}
    if sizes:
        title, report = f"Training throughput by batch size ({config})", "batch_size"
        what = f"the bf16 step at batch {', '.join(map(str, sizes))}"
        command = f"python scripts/bench_training.py --batch-sizes {args.batch_sizes} --threads {args.threads}"
    else:
        title, report = f"Training throughput under bf16 autocast ({config})", "mixed_precision"
        what = f"batch {cfg.train.batch_size}, the three ways"
        command = f"python scripts/bench_training.py --threads {args.threads}"
    lines = [f"# {title}", "",
             f"One training step of the config's denoiser, {args.threads} thread(s), {what} alternating step by step, "
             f"median of {args.rounds} steps each; load average at the end {' '.join(load)}. `{command}`.", "",
             f"| way | images/s | ratio to {reference} |", "|---|---:|---:|"]
    lines += [f"| {name} | {rate[name]:.1f} | {rate[name] / rate[reference]:.2f} |" for name in ways]
    lines += ["", "Where the time goes (share of the step's operator time, PyTorch's profiler):", ""]
    for name, ops in top.items():
        lines.append(f"* {name}: " + ", ".join(f"`{k}` {s:.0%}" for k, s in ops))
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / f"{report}.json", json.dumps(result, indent=2) + "\n")
        atomic_write_text(out / f"{report}.md", text)


if __name__ == "__main__":
    main()
