"""Cold start of `llmdiff generate`: one 32 px image at the model's default steps, from a fresh process.

    python scripts/bench_cold_start.py [--model models/shapes-lidit] [--runs 3] [--src src] [--cli-only]

Two measurements, each the best of --runs fresh processes:
* the wall time of `python -m llmdiff.cli generate PROMPT --out x.png` (interpreter start to exit);
* the same work split into stages inside one fresh process: imports, loading the pipeline (denoiser,
  scheduler), loading the LLM, encoding the prompt, sampling, decoding + writing the PNG.
Then the throughput of a warm pipeline on a batch of 64 images (16 prompts x 4). `--src` points PYTHONPATH at
another checkout's src/ (with --cli-only, for a checkout whose Python API differs). The machine's load average
is recorded with the numbers: other jobs on the CPU slow every stage. Writes docs/benchmarks/cold_start.{md,json}.
The one-time GGUF conversion of the LLM must have run before (any first `llmdiff generate` does it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMPT = "a red circle to the left of a blue square"

STAGES = """
import json, sys, time
t0 = time.perf_counter()
import torch
from llmdiff.pipelines import load_pipeline
t1 = time.perf_counter()
pipe = load_pipeline(sys.argv[1])
pipe.set_progress_bar_config(disable=True)
t2 = time.perf_counter()
pipe.load_encoders()
t3 = time.perf_counter()
embeds, negative = pipe.encode_prompt(sys.argv[2])
t4 = time.perf_counter()
latents = pipe(prompt_embeds=embeds, negative_prompt_embeds=negative, generator=torch.Generator().manual_seed(0),
               output_type="latent").images
t5 = time.perf_counter()
pipe.postprocess(latents, "pil")[0].save(sys.argv[3])
t6 = time.perf_counter()
print(json.dumps({"imports": t1 - t0, "pipeline load": t2 - t1, "LLM load": t3 - t2, "encoding": t4 - t3,
                  "sampling": t5 - t4, "decoding": t6 - t5}))
"""

THROUGHPUT = """
import json, sys, time
import torch
from llmdiff.pipelines import load_pipeline
pipe = load_pipeline(sys.argv[1])
pipe.set_progress_bar_config(disable=True)
prompts = [f"{n} {c} circles" for n in ("one", "two", "three", "four") for c in ("red", "blue", "green", "yellow")]
pipe(prompts[:2], num_images_per_prompt=2)  # warm-up
t = time.perf_counter()
pipe(prompts, num_images_per_prompt=4, generator=torch.Generator().manual_seed(0))
print(json.dumps({"images": 64, "seconds": time.perf_counter() - t}))
"""


def run(cmd: list[str], env: dict) -> tuple[float, str]:
    t = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"{' '.join(cmd[:4])} ... failed:\n{out.stderr[-2000:]}")
    return time.perf_counter() - t, out.stdout


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="models/shapes-lidit")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--src", default=str(Path(__file__).resolve().parents[1] / "src"))
    p.add_argument("--cli-only", action="store_true", help="only the command's wall time (e.g. for an old checkout)")
    p.add_argument("--out", default="docs/benchmarks", help="where cold_start.md/json go ('' to only print)")
    args = p.parse_args()
    env = {**os.environ, "PYTHONPATH": args.src}
    tmp = Path(tempfile.mkdtemp(prefix="llmdiff-bench-"))
    load_before = os.getloadavg()[0]
    wall = min(run([sys.executable, "-m", "llmdiff.cli", "generate", PROMPT, "--model", args.model, "--out",
                    str(tmp / "x.png")], env)[0] for _ in range(args.runs))
    result = {"command_seconds": wall, "model": args.model, "src": args.src, "threads": os.cpu_count()}
    if not args.cli_only:
        stages = [json.loads(run([sys.executable, "-c", STAGES, args.model, PROMPT, str(tmp / "y.png")], env)[1])
                  for _ in range(args.runs)]
        result["stages_seconds"] = {k: min(s[k] for s in stages) for k in stages[0]}
        batch = json.loads(run([sys.executable, "-c", THROUGHPUT, args.model], env)[1])
        result["batch64_images_per_second"] = batch["images"] / batch["seconds"]
    result["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    lines = [f"`llmdiff generate` one 32 px image ({args.model}, default steps): **{wall:.1f} s** wall "
             f"(best of {args.runs} fresh processes; load average {result['load_average'][0]} -> "
             f"{result['load_average'][1]} on {os.cpu_count()} cores)", ""]
    if "stages_seconds" in result:
        lines += ["| stage | seconds |", "|---|---:|"]
        lines += [f"| {k} | {v:.2f} |" for k, v in result["stages_seconds"].items()]
        lines += [f"| **sum** | **{sum(result['stages_seconds'].values()):.2f}** |", "",
                  f"Batch of 64 images (16 prompts x 4), warm: {result['batch64_images_per_second']:.1f} images/s"]
    print("\n".join(lines))
    print(json.dumps(result))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "cold_start.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
