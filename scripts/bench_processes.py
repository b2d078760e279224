"""Training throughput of two processes (torchrun, gloo) against one process with the same threads in all.

    python scripts/bench_processes.py [--config configs/shapes-lidit.yaml] [--steps 100] [--rounds 2]

Both ways train the same config from scratch in a temporary run folder, alternating (one, two, one, two, ...)
so that anything else the machine runs falls on both alike: one process with `--threads` torch threads
(`llmdiff train`), and `--threads` processes with one thread each (`torchrun --nproc_per_node`), batch
`train.batch_size` per process in both (the global batch of two processes is twice as large). The images/s
are the trainer's own (its log, every `train.log_every` steps), median over the run's logs after the first
(which includes start-up). The feature cache must exist (any earlier run of the config builds it).
Writes docs/benchmarks/processes.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from llmdiff.utils import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]


def run(config: Path, n: int, steps: int, threads: int, run_dir: Path) -> float:
    launcher = ["-m", "torch.distributed.run", "--nproc_per_node", str(n)] if n > 1 else []
    cmd = [sys.executable, *launcher, "-m", "llmdiff.cli", "train", str(config), f"train.steps={steps}",
           f"train.checkpoint_every={steps * 10}", "train.sample_every=0", f"train.warmup={min(steps // 4, 150)}",
           "--run-dir", str(run_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads // n)}
    done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise SystemExit(f"training with {n} process(es) failed: {last}")
    rates = [r["img_s"] for r in map(json.loads, (run_dir / "log.jsonl").read_text().splitlines()) if "img_s" in r]
    if len(rates) < 2:
        raise SystemExit(f"{run_dir}: fewer than two throughput logs; raise --steps")
    return statistics.median(rates[1:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "shapes-lidit.yaml")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="threads in all (default: the CPUs)")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    args = p.parse_args()
    if not args.config.is_file():
        p.error(f"--config {args.config}: no such file")
    if args.steps < 1 or args.rounds < 1:
        p.error("--steps and --rounds must be at least 1")
    if args.threads < 2:
        p.error("--threads must be at least 2 (one process with them all against one process per thread)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for n in (1, args.threads):
                rate = run(args.config, n, args.steps, args.threads, Path(tmp) / f"r{r}-p{n}")
                rows.append({"round": r, "processes": n, "img_s": rate})
                print(f"round {r}: {n} process(es): {rate:.1f} img/s", flush=True)
    one = statistics.median(x["img_s"] for x in rows if x["processes"] == 1)
    many = statistics.median(x["img_s"] for x in rows if x["processes"] == args.threads)
    load = os.getloadavg()[0]
    result = {"config": str(args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config),
              "steps": args.steps, "threads": args.threads, "runs": rows, "one_process_img_s": one,
              f"{args.threads}_processes_img_s": many, "ratio": many / one, "load_average_1min_at_end": load}
    md = [f"# Training throughput: {args.threads} processes against one ({result['config']})", "",
          f"{args.steps} training steps per run from scratch, alternating, {args.threads} threads in all; "
          f"images/s from the trainer's log (median after the first log). Load average at the end: {load:.1f}.", "",
          "| round | processes | img/s |", "|---:|---:|---:|",
          *[f"| {x['round']} | {x['processes']} | {x['img_s']:.1f} |" for x in rows], "",
          f"Median: one process {one:.1f} img/s, {args.threads} processes {many:.1f} img/s, "
          f"ratio {many / one:.2f}.", ""]
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "processes.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(args.out / "processes.md", "\n".join(md))
    print("\n".join(md[-2:]))


if __name__ == "__main__":
    main()
