"""Prompt-encoder speed on this machine: early exit, the instruction prefix cache, loading, the feature cache.

    python scripts/bench_encoders.py [--batch 64] [--tokens 32] [--repeats 3] [--skip-convert]

Every row is prompts/s at batch 64 x 32 tokens; ratios compare rows measured in the same process
(timings here swing with other load, ratios much less). Prints a Markdown table and writes it
(with the raw numbers as JSON) to docs/benchmarks/encoders.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import torch

from llmdiff.encoders import EncoderConfig, load_encoder
from llmdiff.encoders.cache import build_cache, load_cache
from llmdiff.encoders.llm import DecoderPromptEncoder
from llmdiff.utils import atomic_write_text

WORDS = ("a small red circle to the left of a large blue square and three green triangles above "
         "a yellow cross on a plain white background in a simple flat drawing with pink discs").split()


def prompts_of(tokenizer, n: int, tokens: int) -> list[str]:
    """n different prompts of exactly `tokens` tokens each."""
    out = []
    for i in range(n):
        words = WORDS[i % 7:] + WORDS[: i % 7]
        text = " ".join(words)
        while len(tokenizer(text, add_special_tokens=False)["input_ids"]) > tokens:
            words = words[:-1]
            text = " ".join(words)
        while len(tokenizer(text, add_special_tokens=False)["input_ids"]) < tokens:
            text += " red"
        out.append(text)
    return out


def rate(fn, n_prompts: int, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return n_prompts / best


def peers_way(path: str, tokenizer, prompts: list[str]):
    """A full AutoModelForCausalLM forward, LM head included, with output_hidden_states=True."""
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(path).eval()

    @torch.inference_mode()
    def run():
        batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=True)
        return lm(**batch, output_hidden_states=True).hidden_states[-3]

    return run


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip-convert", action="store_true", help="do not time the first (GGUF) load")
    p.add_argument("--out", default="docs/benchmarks")
    a = p.parse_args()
    logging.getLogger("llmdiff").setLevel(logging.ERROR)
    from llmdiff.encoders.models import resolve_model

    rows, raw = [], {}

    def add(name, value, note=""):
        raw[name] = value
        rows.append((name, value, note))
        print(f"{name}: {value:.1f} {note}", flush=True)

    # First load (GGUF dequantisation) vs cached load
    for model in ("smollm2-135m", "gemma3-270m"):
        if not a.skip_convert:
            with tempfile.TemporaryDirectory() as tmp:
                old = os.environ.get("LLMDIFF_CACHE")
                os.environ["LLMDIFF_CACHE"] = tmp
                t = time.perf_counter()
                load_encoder(EncoderConfig(model=model))
                add(f"{model}: first load (GGUF -> safetensors), s", time.perf_counter() - t)
                if old is None:
                    del os.environ["LLMDIFF_CACHE"]
                else:
                    os.environ["LLMDIFF_CACHE"] = old
        resolve_model(model)  # make sure the user cache holds it
        t = time.perf_counter()
        load_encoder(EncoderConfig(model=model))
        add(f"{model}: cached load, s", time.perf_counter() - t)

    for model in ("smollm2-135m", "gemma3-270m"):
        full = load_encoder(EncoderConfig(model=model, layers="last", max_length=a.tokens))
        prompts = prompts_of(full.tokenizer, a.batch, a.tokens)
        early = DecoderPromptEncoder(full.config.replace(layers=-3), model=full.core, tokenizer=full.tokenizer)
        peer = rate(peers_way(resolve_model(model).path, full.tokenizer, prompts), a.batch, a.repeats)
        add(f"{model}: peers' way (CausalLM + LM head, all hidden states)", peer, "prompts/s")
        f = rate(lambda: full.encode(prompts, a.batch), a.batch, a.repeats)
        add(f"{model}: llmdiff, last layer", f, "prompts/s")
        e = rate(lambda: early.encode(prompts, a.batch), a.batch, a.repeats)
        add(f"{model}: llmdiff, early exit at -3", e, f"prompts/s ({e / peer:.2f}x the peers' way)")
        instr = dict(instruction="default", layers=-3)
        cached = DecoderPromptEncoder(full.config.replace(**instr), model=full.core, tokenizer=full.tokenizer)
        plain = DecoderPromptEncoder(full.config.replace(**instr, prefix_cache=False), model=full.core,
                                     tokenizer=full.tokenizer)
        r = rate(lambda: plain.encode(prompts, a.batch), a.batch, a.repeats)
        add(f"{model}: instruction re-encoded for every prompt ({len(cached.prefix_ids)} tokens)", r, "prompts/s")
        c = rate(lambda: cached.encode(prompts, a.batch), a.batch, a.repeats)
        add(f"{model}: instruction from the prefix cache", c, f"prompts/s ({c / r:.2f}x re-encoding)")
        raw[f"{model}: early-exit speed-up"] = e / peer
        raw[f"{model}: prefix-cache speed-up"] = c / r
        del full, early, cached, plain

    minilm = load_encoder(EncoderConfig(model="minilm-l6", layers="last", max_length=a.tokens))
    prompts = prompts_of(minilm.tokenizer, a.batch, a.tokens - 2)
    add("minilm-l6 (encoder baseline)", rate(lambda: minilm.encode(prompts, a.batch), a.batch, a.repeats), "prompts/s")

    # Feature cache: read throughput vs encoding the same captions
    enc = load_encoder(EncoderConfig(model="smollm2-135m", layers=-3, instruction="default"))
    captions = [f"{p} number {i}" for i, p in enumerate(prompts_of(enc.tokenizer, 64, 20) * 8)]
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        build_cache(enc, captions, Path(tmp) / "c", shard_size=128, progress=False)
        encode_rate = len(captions) / (time.perf_counter() - t)
        read = rate(lambda: load_cache(Path(tmp) / "c"), len(captions), a.repeats)
    add("feature cache: building (encode + write)", encode_rate, "captions/s")
    add("feature cache: reading", read, f"captions/s ({read / encode_rate:.0f}x encoding)")
    raw["cache read speed-up"] = read / encode_rate

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    md = [f"# Prompt encoders on this machine ({os.cpu_count()} CPU cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads)", "",
          f"Batch {a.batch} x {a.tokens} prompt tokens, fp32, best of {a.repeats}. "
          "Reproduce: `python scripts/bench_encoders.py`.", "", "| measurement | value | |", "|---|---:|---|"]
    md += [f"| {n} | {v:.1f} | {note} |" for n, v, note in rows]
    atomic_write_text(out / "encoders.md", "\n".join(md) + "\n")
    atomic_write_text(out / "encoders.json", json.dumps(raw, indent=2) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
