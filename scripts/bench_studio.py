"""Latency of a warm studio request: one image at the model's default settings, the model already loaded.

    python scripts/bench_studio.py [--model models/shapes-lidit] [--repeats 10] [--threads 2]

Prints the cold first request (model and LLM loading included), then the median and best of the warm
requests with the attention maps the page draws and without them, and the request through the page's own
callback (PNG writing and the evaluator included). Wall-clock timings swing with other load on the machine;
the CPU seconds beside them (with --threads 1, what an idle core would take) do not.
"""

import argparse
import statistics
import tempfile
import time

import torch

from llmdiff.studio import Studio
from llmdiff.studio_app import StudioApp


def timed(fn, repeats: int) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU seconds of each call."""
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return wall, cpu


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/shapes-lidit")
    ap.add_argument("--prompt", default="a red circle to the left of a blue square")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    studio = Studio()
    t = time.perf_counter()
    studio.generate(args.model, args.prompt, [0])
    print(f"cold first request: {time.perf_counter() - t:.2f} s ({args.model}, {torch.get_num_threads()} threads)")
    app = StudioApp(studio, tempfile.mkdtemp(prefix="llmdiff-bench-"))
    cases = {
        "warm, one image, with attention maps": lambda: studio.generate(args.model, args.prompt, [1]),
        "warm, one image, no attention maps": lambda: studio.generate(args.model, args.prompt, [1], attention=False),
        "warm, the page's request (PNGs, evaluator, maps)": lambda: app.generate(
            args.model, "none", args.prompt, "", 1, False, 1, 25, 2.0),
    }
    for name, fn in cases.items():
        wall, cpu = timed(fn, args.repeats)
        print(f"{name}: median {statistics.median(wall):.3f} s wall, best {min(wall):.3f} s; "
              f"median {statistics.median(cpu):.3f} CPU s over {args.repeats}")


if __name__ == "__main__":
    main()
