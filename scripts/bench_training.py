"""Training throughput of a config's denoiser in fp32 and under bf16 autocast, side by side in one process.

    python scripts/bench_training.py [--config configs/shapes-lidit.yaml] [--threads 1] [--rounds 6]

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
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks"), help="where the report goes ('' for none)")
    args = p.parse_args()
    if args.threads < 1 or args.rounds < 2:
        p.error("--threads must be at least 1 and --rounds at least 2")
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    widths = [LLM_WIDTHS.get(e.model, 640) for e in cfg.text.encoders]
    torch.manual_seed(0)
    model = build_denoiser(cfg, widths, [1] * len(widths))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    b, side = cfg.train.batch_size, cfg.data.resolution
    x0 = torch.rand(b, 3, side, side) * 2 - 1
    texts = [TextInput(torch.randn(b, TEXT_LEN, w), torch.ones(b, TEXT_LEN, dtype=torch.bool)) for w in widths]

    def step(way: str) -> float:
        start = time.perf_counter()
        with use_way(way):
            loss = training_loss(model, x0, texts, "flow", torch.Generator().manual_seed(0), cfg.train.flow_shift)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    for way in WAYS:  # warm-up
        step(way)
    seconds = {way: [] for way in WAYS}
    for _ in range(args.rounds):
        for way in WAYS:
            seconds[way].append(step(way))
    rate = {way: b / statistics.median(s) for way, s in seconds.items()}
    top = {}
    from torch.profiler import ProfilerActivity, profile

    for way in WAYS:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step(way)
        events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:6]
        total = sum(e.self_cpu_time_total for e in prof.key_averages())
        top[way] = [(e.key, round(e.self_cpu_time_total / total, 3)) for e in events]
    load = open("/proc/loadavg").read().split()[:3] if Path("/proc/loadavg").is_file() else []
    result = {"config": str(args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config),
              "threads": args.threads, "batch": b, "rounds": args.rounds, "load_average": load,
              "images_per_s": rate, "ratio_to_fp32": {w: rate[w] / rate["fp32"] for w in WAYS}, "top_ops": top}
    lines = [f"# Training throughput under bf16 autocast ({result['config']})", "",
             f"One training step of the config's denoiser, batch {b}, {args.threads} thread(s), the three ways "
             f"alternating step by step, median of {args.rounds} steps each; load average at the end "
             f"{' '.join(load)}. `python scripts/bench_training.py --threads {args.threads}`.", "",
             "| way | images/s | ratio to fp32 |", "|---|---:|---:|"]
    lines += [f"| {w} | {rate[w]:.1f} | {rate[w] / rate['fp32']:.2f} |" for w in WAYS]
    lines += ["", "Where the time goes (share of the step's operator time, PyTorch's profiler):", ""]
    for way, ops in top.items():
        lines.append(f"* {way}: " + ", ".join(f"`{k}` {s:.0%}" for k, s in ops))
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "mixed_precision.json", json.dumps(result, indent=2) + "\n")
        atomic_write_text(out / "mixed_precision.md", text)


if __name__ == "__main__":
    main()
