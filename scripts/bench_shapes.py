"""Speed of the Shapes world: rendering (per scene kind and for the training mix) and evaluation.

    python scripts/bench_shapes.py [--resolution 32] [--seconds 3]
"""

import argparse
import time

import numpy as np

from llmdiff.evaluation.detect import detect
from llmdiff.evaluation.scoring import score_entry
from llmdiff.shapes.suites import load_suite
from llmdiff.shapes.training_set import sample_spec
from llmdiff.shapes.world import ObjectSpec, SceneSpec, render


def rate(fn, seconds):
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - t0)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--seconds", type=float, default=3.0)
    a = p.parse_args()
    rng = np.random.default_rng(0)
    kinds = {
        "1 object": SceneSpec((ObjectSpec("circle", "red"),)),
        "2 objects + relation": SceneSpec((ObjectSpec("circle"), ObjectSpec("square")), ((0, "left of", 1),)),
        "4 objects": SceneSpec((ObjectSpec("triangle"),) * 4),
        "5 small objects": SceneSpec((ObjectSpec("cross", None, "small"),) * 5),
    }
    print(f"| render at {a.resolution} px (one core) | images/s |\n|---|---:|")
    for name, spec in kinds.items():
        print(f"| {name} | {rate(lambda: render(spec, rng, a.resolution), a.seconds):,.0f} |")
    specs = [sample_spec(rng) for _ in range(2000)]
    it = iter(range(10**9))
    print(f"| training mix | {rate(lambda: render(specs[next(it) % 2000], rng, a.resolution), a.seconds):,.0f} |")
    entries = load_suite("geneval")
    imgs = [(e, render(SceneSpec.from_dict(e["scene"]), rng, a.resolution).image) for e in entries]
    it = iter(range(10**9))

    def score():
        e, img = imgs[next(it) % len(imgs)]
        score_entry(detect(img), e)

    print(f"| evaluate (detect + score), geneval suite | {rate(score, a.seconds):,.0f} |")


if __name__ == "__main__":
    main()
