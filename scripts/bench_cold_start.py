"""Cold start of `llmdiff generate`: one 32 px image at the model's default steps, from a fresh process.

    python scripts/bench_cold_start.py [--model models/shapes-lidit] [--runs 3] [--src src] [--cli-only]

Two measurements, each the best of --runs fresh processes, as wall time and as CPU time (user + system: on a
machine other jobs keep busy the wall time grows several-fold, the CPU time much less):
* the time of `python -m llmdiff.cli generate PROMPT --out x.png` (interpreter start to exit);
* the same work split into stages inside one fresh process: imports, loading the pipeline (denoiser,
  scheduler), loading the LLM, encoding the prompt, sampling, decoding + writing the PNG.
Then the throughput of a warm pipeline on a batch of 64 images (16 prompts x 4). `--src` points PYTHONPATH at
another checkout's src/ (with --cli-only, for a checkout whose Python API differs). The machine's load average
is recorded with the numbers: other jobs on the CPU slow every stage. `python -c "import torch"` is timed in a fresh
process before each run of the command, and the report gives the ratio of the two best times. Writes
docs/benchmarks/cold_start.json and cold_start_latest.md (cold_start.md keeps the history of measurements).
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

from llmdiff.utils import atomic_write_text

PROMPT = "a red circle to the left of a blue square"

STAGES = """
import json, sys, time
marks = [(time.perf_counter(), time.process_time())]
mark = lambda: marks.append((time.perf_counter(), time.process_time()))
import torch
from llmdiff.pipelines import load_pipeline
mark()
pipe = load_pipeline(sys.argv[1])
pipe.set_progress_bar_config(disable=True)
mark()
pipe.load_encoders()
mark()
embeds, negative = pipe.encode_prompt(sys.argv[2])
mark()
latents = pipe(prompt_embeds=embeds, negative_prompt_embeds=negative, generator=torch.Generator().manual_seed(0),
               output_type="latent").images
mark()
pipe.postprocess(latents, "pil")[0].save(sys.argv[3])
mark()
names = ["imports", "pipeline load", "LLM load", "encoding", "sampling", "decoding"]
print(json.dumps({n: [b[0] - a[0], b[1] - a[1]] for n, a, b in zip(names, marks, marks[1:])}))
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


def run(cmd: list[str], env: dict) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + system, what other load inflates least) and stdout of a fresh process."""
    import resource

    cpu = lambda: (lambda r: r.ru_utime + r.ru_stime)(resource.getrusage(resource.RUSAGE_CHILDREN))  # noqa: E731
    t, c = time.perf_counter(), cpu()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"{' '.join(cmd[:4])} ... failed:\n{out.stderr[-2000:]}")
    return time.perf_counter() - t, cpu() - c, out.stdout


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="models/shapes-lidit")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--src", default=str(Path(__file__).resolve().parents[1] / "src"))
    p.add_argument("--cli-only", action="store_true", help="only the command's wall time (e.g. for an old checkout)")
    p.add_argument("--out", default="docs/benchmarks", help="where cold_start.json and cold_start_latest.md go ('' to only print)")
    args = p.parse_args()
    env = {**os.environ, "PYTHONPATH": args.src}
    tmp = Path(tempfile.mkdtemp(prefix="llmdiff-bench-"))
    load_before = os.getloadavg()[0]
    # a new file each run: generate skips an image already written with the same settings; `import torch` in a
    # fresh process is timed before each run, so that the ratio between the two holds whatever the machine's pace
    torch_import, cli = [], []
    for i in range(args.runs):
        torch_import.append(run([sys.executable, "-c", "import torch"], env))
        cli.append(run([sys.executable, "-m", "llmdiff.cli", "generate", PROMPT, "--model", args.model, "--out",
                        str(tmp / f"x{i}.png")], env))
    wall, cpu = min(r[0] for r in cli), min(r[1] for r in cli)
    torch_wall = min(r[0] for r in torch_import)
    result = {"command_seconds": wall, "command_cpu_seconds": cpu, "import_torch_seconds": torch_wall,
              "ratio_to_import_torch": wall / torch_wall, "model": args.model, "src": args.src,
              "cores": os.cpu_count()}
    if not args.cli_only:
        stages = [json.loads(run([sys.executable, "-c", STAGES, args.model, PROMPT, str(tmp / "y.png")], env)[2])
                  for _ in range(args.runs)]
        result["stages_seconds"] = {k: min(s[k][0] for s in stages) for k in stages[0]}
        result["stages_cpu_seconds"] = {k: min(s[k][1] for s in stages) for k in stages[0]}
        batch = json.loads(run([sys.executable, "-c", THROUGHPUT, args.model], env)[2])
        result["batch64_images_per_second"] = batch["images"] / batch["seconds"]
    result["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    lines = [f"`llmdiff generate` one 32 px image ({args.model}, default steps): **{wall:.1f} s** wall, {cpu:.1f} s "
             f"CPU (best of {args.runs} fresh processes; load average {result['load_average'][0]} -> "
             f"{result['load_average'][1]} on {os.cpu_count()} cores); `python -c \"import torch\"` timed before each "
             f"run: {torch_wall:.2f} s, so the command takes **{wall / torch_wall:.1f}x** that", ""]
    if "stages_seconds" in result:
        wall_s, cpu_s = result["stages_seconds"], result["stages_cpu_seconds"]
        lines += ["| stage | wall s | CPU s |", "|---|---:|---:|"]
        lines += [f"| {k} | {wall_s[k]:.2f} | {cpu_s[k]:.2f} |" for k in wall_s]
        lines += [f"| **sum** | **{sum(wall_s.values()):.2f}** | **{sum(cpu_s.values()):.2f}** |", "",
                  f"Batch of 64 images (16 prompts x 4), warm: {result['batch64_images_per_second']:.1f} images/s"]
    print("\n".join(lines))
    print(json.dumps(result))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "cold_start.json", json.dumps(result, indent=2) + "\n")
        atomic_write_text(out / "cold_start_latest.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
