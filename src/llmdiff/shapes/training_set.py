"""The training distribution: a finite set of captions, each rendered anew at every draw.

The caption set is finite on purpose: each unique caption is read by the LLM once
and cached, while its scene is laid out at random every time it is drawn, so a few thousand
captions give an unbounded stream of images. No caption or image contains a held-out
(colour, shape) composition, and captions use a training phrasebook only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import LLMDiffError
from ..utils import atomic_write_text
from . import P_COLOR
from .captions import TRAINING_PHRASEBOOKS, caption
from .suites import HELDOUT_COMPOSITIONS
from .world import COLORS, RELATIONS, SHAPES, SIZES, ObjectSpec, SceneSpec, render

# Kinds of scenes in the training mix and their default weights.
TASK_MIX: dict[str, float] = {"single": 0.15, "pair": 0.15, "relation": 0.3, "count": 0.2, "listing": 0.2}


def _object(rng, shape=None, p_color=P_COLOR, p_size=0.25, forbidden=HELDOUT_COMPOSITIONS, color=True) -> ObjectSpec:
    shape = shape or SHAPES[int(rng.integers(len(SHAPES)))]
    c = None
    if color and rng.random() < p_color:
        allowed = [k for k in COLORS if (k, shape) not in forbidden]
        c = allowed[int(rng.integers(len(allowed)))]
    size = SIZES[int(rng.integers(2))] if rng.random() < p_size else None
    return ObjectSpec(shape, c, size)


def sample_spec(rng: np.random.Generator, mix: dict[str, float] | None = None, p_color: float = P_COLOR,
                p_size: float = 0.25, forbidden=HELDOUT_COMPOSITIONS) -> SceneSpec:
    """One scene specification from the training mix."""
    mix = mix or TASK_MIX
    tasks, weights = list(mix), np.asarray(list(mix.values()), float)
    task = tasks[int(rng.choice(len(tasks), p=weights / weights.sum()))]
    obj = lambda **kw: _object(rng, p_color=p_color, p_size=p_size, forbidden=forbidden, **kw)  # noqa: E731
    if task == "single":
        return SceneSpec((obj(),))
    if task == "pair":
        return SceneSpec((obj(), obj()))
    if task == "relation":
        return SceneSpec((obj(), obj()), ((0, RELATIONS[int(rng.integers(len(RELATIONS)))], 1),))
    if task == "count":
        return SceneSpec((obj(),) * int(rng.integers(2, 5)))
    if task == "listing":
        k = int(rng.integers(3, 6))
        objs = tuple(ObjectSpec(o.shape, o.color, "small" if k == 5 else o.size)
                     for o in (_object(rng, p_color=1.0, p_size=p_size, forbidden=forbidden) for _ in range(k)))
        return SceneSpec(objs)
    raise LLMDiffError(f"unknown task {task!r} in the training mix; known: {', '.join(TASK_MIX)}")


@dataclass
class CaptionSet:
    """Unique training captions and the scene specification each one describes."""

    captions: list[str]
    specs: list[SceneSpec]

    def __len__(self) -> int:
        return len(self.captions)

    def render(self, index: int, rng: np.random.Generator, resolution: int = 32) -> np.ndarray:
        return render(self.specs[index], rng, resolution, forbidden=HELDOUT_COMPOSITIONS).image

    def save(self, path: Path | str) -> None:
        lines = (json.dumps({"caption": c, "scene": s.to_dict()}) for c, s in zip(self.captions, self.specs))
        atomic_write_text(path, "\n".join(lines) + "\n")

    @classmethod
    def load(cls, path: Path | str) -> "CaptionSet":
        captions, specs = [], []
        for n, line in enumerate(Path(path).read_text().splitlines(), 1):
            if line.strip():
                try:
                    d = json.loads(line)
                    captions.append(d["caption"])
                    specs.append(SceneSpec.from_dict(d["scene"]))
                except (json.JSONDecodeError, KeyError) as e:
                    raise LLMDiffError(f"{path}:{n}: not a caption record ({e})") from None
        return cls(captions, specs)


def build_caption_set(n_scenes: int, captions_per_scene: int = 2, seed: int = 0,
                      mix: dict[str, float] | None = None, phrasebook: str = "train",
                      p_color: float = P_COLOR) -> CaptionSet:
    """Draw scene specifications and phrase each a few ways; duplicate captions are kept once. ``p_color``: how
    often an object of a single, pair, relation or count scene is named with its colour (listings always are)."""
    if phrasebook not in TRAINING_PHRASEBOOKS:
        raise LLMDiffError(f"data.phrasebook must be one of {', '.join(TRAINING_PHRASEBOOKS)}, got {phrasebook!r}")
    rng = np.random.default_rng(seed)
    seen: dict[str, SceneSpec] = {}
    for _ in range(n_scenes):
        spec = sample_spec(rng, mix, p_color)
        for _ in range(captions_per_scene):
            seen.setdefault(caption(spec, phrasebook, rng), spec)
    return CaptionSet(list(seen), list(seen.values()))
