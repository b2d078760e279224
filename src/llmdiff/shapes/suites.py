"""Prompt suites in GenEval's metadata format, the train/eval split, and contradicting scenes.

Every suite entry is one JSON object: GenEval's ``prompt``, ``tag``, ``include``
([{class, count, color?, position?: [relation, index]}]) and ``exclude``, plus our own
``benchmark`` (which scoring rules apply), ``scene`` (the specification, so ground truth can
be rendered) and ``heldout`` (whether the prompt uses a composition no training image has).
The dense suite's entries (benchmark ``dpg``) also carry their ``questions`` (shapes/dense.py).
"""

from __future__ import annotations

import itertools
import json
from importlib import resources
from pathlib import Path

import numpy as np

from ..errors import LLMDiffError
from ..utils import read_text

from .captions import EVAL, LEXICAL, PARAPHRASE, Phrasebook, caption, noun_phrase
from .dense import CLOSINGS, PREAMBLES, STRUCTURES, dense_prompt, dense_questions, dense_scene, fits, sample_layout
from .world import COLORS, RELATIONS, SHAPES, SIZES, ObjectSpec, SceneSpec

# (colour, shape) pairs that no training image or caption contains: eval-only compositions.
HELDOUT_COMPOSITIONS: frozenset[tuple[str, str]] = frozenset(
    {("purple", "triangle"), ("orange", "square"), ("green", "cross"), ("pink", "circle")}
)
SUITES = ("geneval", "compbench", "position_bias", "paraphrase", "dense", "lexical", "frames")
GENEVAL_TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
COMPBENCH_TAGS = ("color", "shape", "size", "spatial")
POSITION_BINS = 5
MIRROR = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


def is_heldout(spec: SceneSpec) -> bool:
    return any((o.color, o.shape) in HELDOUT_COMPOSITIONS for o in spec.objects)


def clause(o: ObjectSpec, count: int = 1, with_color: bool = True) -> dict:
    c = {"class": o.shape, "count": count}
    if with_color and o.color:
        c["color"] = o.color
    if o.size:
        c["size"] = o.size
    return c


def _entry(tag: str, benchmark: str, spec: SceneSpec, prompt: str, include: list, exclude=None, **extra) -> dict:
    e = {"tag": tag, "include": include, "prompt": prompt}
    if exclude:
        e["exclude"] = exclude
    e.update(benchmark=benchmark, scene=spec.to_dict(), heldout=is_heldout(spec), **extra)
    return e


def _geneval_specs(rng: np.random.Generator) -> list[tuple[str, SceneSpec]]:
    colors = list(COLORS)
    out: list[tuple[str, SceneSpec]] = []
    for shape, _ in itertools.product(SHAPES, range(4)):
        out.append(("single_object", SceneSpec((ObjectSpec(shape),))))
    for a, b in itertools.permutations(SHAPES, 2):
        out.append(("two_object", SceneSpec((ObjectSpec(a), ObjectSpec(b)))))
    for shape, n, _ in itertools.product(SHAPES, (2, 3, 4), range(2)):
        out.append(("counting", SceneSpec((ObjectSpec(shape),) * n)))
    for shape, color in itertools.product(SHAPES, colors):
        out.append(("colors", SceneSpec((ObjectSpec(shape, color),))))
    for (a, b), rel in itertools.product(itertools.permutations(SHAPES, 2), RELATIONS):
        # GenEval order: include[0] is the reference, include[1] is "<relation> include[0]".
        out.append(("position", SceneSpec((ObjectSpec(b), ObjectSpec(a)), ((1, rel, 0),))))
    for _ in range(32):
        a, b = rng.choice(len(SHAPES), 2, replace=False)
        ca, cb = rng.choice(len(colors), 2, replace=False)
        out.append(("color_attr", SceneSpec((ObjectSpec(SHAPES[a], colors[ca]), ObjectSpec(SHAPES[b], colors[cb])))))
    return out


def _geneval_entry(tag: str, spec: SceneSpec, book: Phrasebook, rng: np.random.Generator, benchmark="geneval") -> dict:
    objs = spec.objects
    if tag == "position":
        # Caption reads "<include[1]> <rel> <include[0]>" as GenEval's prompts do.
        i, rel, j = spec.relations[0]
        prompt = caption(SceneSpec((objs[i], objs[j]), ((0, rel, 1),)), book, rng)
        include = [clause(objs[0]), {**clause(objs[1]), "position": [rel, 0]}]
        return _entry(tag, benchmark, spec, prompt, include)
    prompt = caption(spec, book, rng)
    if tag == "counting":
        n = len(objs)
        return _entry(tag, benchmark, spec, prompt, [clause(objs[0], n)], [{"class": objs[0].shape, "count": n + 1}])
    return _entry(tag, benchmark, spec, prompt, [clause(o) for o in objs])


def geneval_suite(book: Phrasebook = EVAL, seed: int = 0, name: str = "geneval") -> list[dict]:
    rng = np.random.default_rng(seed)
    entries = [_geneval_entry(tag, spec, book, rng) for tag, spec in _geneval_specs(rng)]
    if name in ("paraphrase", "lexical"):  # lighter suites: every other prompt of each task
        entries = entries[::2]
    return entries


def compbench_suite(seed: int = 1) -> list[dict]:
    """T2I-CompBench-style attribute binding (colour, shape, size) and spatial prompts."""
    rng = np.random.default_rng(seed)
    colors = list(COLORS)
    entries = []
    for tag in COMPBENCH_TAGS:
        for _ in range(32):
            a, b = (SHAPES[k] for k in rng.choice(len(SHAPES), 2, replace=False))
            ca, cb = (colors[k] for k in rng.choice(len(colors), 2, replace=False))
            if tag == "color":
                spec = SceneSpec((ObjectSpec(a, ca), ObjectSpec(b, cb)))
            elif tag == "shape":  # the same colour: only the nouns tell the objects apart
                spec = SceneSpec((ObjectSpec(a, ca), ObjectSpec(b, ca)))
            elif tag == "size":
                sa, sb = SIZES if rng.random() < 0.5 else SIZES[::-1]
                spec = SceneSpec((ObjectSpec(a, ca, sa), ObjectSpec(b, cb, sb)))
            else:
                rel = RELATIONS[int(rng.integers(len(RELATIONS)))]
                spec = SceneSpec((ObjectSpec(a, ca), ObjectSpec(b, cb)), ((0, rel, 1),))
            prompt = caption(spec, EVAL, rng)
            include = [clause(o) for o in spec.objects]
            if spec.relations:  # GenEval order: the reference first, then "<relation> include[0]"
                include = [include[1], {**include[0], "position": [spec.relations[0][1], 0]}]
            entries.append(_entry(tag, "compbench", spec, prompt, include))
    return entries


def position_bias_suite(seed: int = 2, per_bin: int = 24) -> list[dict]:
    """Prompts of k = 3-5 attribute-noun pairs; every pair's relative position in the prompt is binned.

    The tested pair of each prompt is placed so that each of the 5 bins (first ... last) is
    tested ``per_bin`` times; every other pair of the prompt is scored too, in its own bin.
    """
    rng = np.random.default_rng(seed)
    colors = list(COLORS)
    entries = []
    for b, rep in itertools.product(range(POSITION_BINS), range(per_bin)):
        k = [3, 5][rep % 2] if b in (0, 2, 4) else [4, 5][rep % 2]  # k=3 has no bins 1/3, k=4 no bin 2
        while True:
            pairs = {(colors[int(rng.integers(len(colors)))], SHAPES[int(rng.integers(len(SHAPES)))]) for _ in range(k)}
            if len(pairs) == k:
                break
        pairs = sorted(pairs)
        rng.shuffle(pairs)
        spec = SceneSpec(tuple(ObjectSpec(s, c, "small") for c, s in pairs))
        bins = [int(round(i / (k - 1) * (POSITION_BINS - 1))) for i in range(k)]
        tested = bins.index(b)
        prompt = caption(SceneSpec(tuple(ObjectSpec(o.shape, o.color) for o in spec.objects)), EVAL, rng)
        include = [{**clause(ObjectSpec(o.shape, o.color)), "position_bin": bins[i]} for i, o in enumerate(spec.objects)]
        entries.append(_entry(f"bin{b}", "position_bias", spec, prompt, include, tested=tested))
    return entries


def dense_suite(seed: int = 4, per_structure: int = 12) -> list[dict]:
    """DPG-Bench-style dense prompts: ``per_structure`` prompts of each of dense.STRUCTURES (3-5 objects, a
    counted group in some, one or two relations), scored per question (scoring.score_dpg)."""
    rng = np.random.default_rng(seed)
    entries = []
    for structure in STRUCTURES:
        for _ in range(per_structure):
            groups, relations = sample_layout(structure, rng)
            include = [clause(g.obj, g.count) for g in groups]
            entries.append(_entry("dense", "dpg", dense_scene(groups, relations), dense_prompt(groups, relations, rng),
                                  include, questions=dense_questions(groups, relations)))
    return entries


# One object said in sentence frames no training caption has, by length: whether a denoiser reads how many objects a
# prompt names or counts its words (training captions grow longer with more objects). The long frames open with a
# dense prompt's preamble and may close with its closing. Beside the object's words (eval's), no word is a training
# word (the held-out tests check it).
SINGLE_FRAMES = {
    "short": ("only {A}", "behold {A}", "we spot {A}", "{A}, alone", "look, {A}", "{A} appears", "I noticed {A}",
              "our page holds {A}"),
    "medium": ("the page holds {A}, resting quietly at its centre",
               "this poster features {A} and no other item at all",
               "for today's exercise, a student produced {A} with great care",
               "a single glance reveals {A}, and the remainder stays blank",
               "somewhere near the middle of this sheet we find {A}"),
    "long": ("It shows {A}.", "At its centre sits {A}.", "Its only element is {A}.",
             "Near the middle, we find {A}."),
}
FRAME_LENGTHS = {"short": (3, 6), "medium": (9, 14), "long": (15, 30)}  # words per prompt


def frames_suite(seed: int = 6) -> list[dict]:
    """Every (shape, colour) once per length of frame: a prompt passes when the image holds that one object and no
    other (GenEval's clauses: the object, fewer than two of its shape, none of another shape)."""
    rng = np.random.default_rng(seed)
    entries = []
    for tag, frames in SINGLE_FRAMES.items():
        for shape, color in itertools.product(SHAPES, COLORS):
            o = ObjectSpec(shape, color)
            body = frames[int(rng.integers(len(frames)))].format(A=noun_phrase(o, EVAL, rng))
            if tag == "long":
                tail = [CLOSINGS[int(rng.integers(len(CLOSINGS)))]] if rng.random() < 0.5 else []
                body = " ".join([PREAMBLES[int(rng.integers(len(PREAMBLES)))], body, *tail])
            exclude = [{"class": shape, "count": 2}] + [{"class": s, "count": 1} for s in SHAPES if s != shape]
            entries.append(_entry(tag, "geneval", SceneSpec((o,)), body, [clause(o)], exclude))
    return entries


def build_suite(name: str) -> list[dict]:
    if name == "geneval":
        return geneval_suite()
    if name == "paraphrase":
        return geneval_suite(PARAPHRASE, seed=3, name="paraphrase")
    if name == "compbench":
        return compbench_suite()
    if name == "position_bias":
        return position_bias_suite()
    if name == "dense":
        return dense_suite()
    if name == "lexical":
        return geneval_suite(LEXICAL, seed=5, name="lexical")
    if name == "frames":
        return frames_suite()
    raise LLMDiffError(f"unknown suite {name!r}; known suites: {', '.join(SUITES)}")


def suite_path(name: str) -> Path:
    return Path(str(resources.files("llmdiff.shapes").joinpath("suite_prompts", f"{name}.jsonl")))


def load_suite(name_or_path: str) -> list[dict]:
    """A shipped suite by name, or any GenEval-format JSONL file by path."""
    path = suite_path(name_or_path) if name_or_path in SUITES else Path(name_or_path)
    if not path.is_file():
        raise FileNotFoundError(f"no prompt suite {name_or_path!r}: pass one of {', '.join(SUITES)} or a JSONL path")
    entries = []
    for n, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as e:
            raise LLMDiffError(f"{path}:{n}: malformed JSON ({e.msg})") from None
        if not isinstance(entry, dict) or not isinstance(entry.get("prompt"), str):
            raise LLMDiffError(f"{path}:{n}: expected a GenEval entry, a JSON object with a \"prompt\" string")
        entries.append(entry)
    if not entries:
        raise LLMDiffError(f"{path} holds no prompts")
    return entries


def with_scenes(entries: list[dict], name: str) -> list[dict]:
    """Entries that carry the Shapes scene they describe (needed to render them); a clear error otherwise."""
    missing = next((i for i, e in enumerate(entries) if not isinstance(e.get("scene"), dict)), None)
    if missing is not None:
        raise LLMDiffError(f"prompt {missing} of {name} has no \"scene\" to render (only Shapes suites do)")
    return entries


def contradicting_spec(entry: dict, rng: np.random.Generator) -> SceneSpec:
    """A scene that violates the prompt: another shape, wrong count, other colour, mirrored position, swapped attributes."""
    spec = SceneSpec.from_dict(entry["scene"])
    objs = list(spec.objects)
    tag = entry["tag"]
    colors = list(COLORS)
    if entry.get("benchmark") == "dpg":
        return _dense_contradiction(spec, entry["include"], rng)

    def other(options, *exclude):
        return [x for x in options if x not in exclude][int(rng.integers(len(options) - len(set(exclude))))]

    if tag in ("single_object",):
        objs = [ObjectSpec(other(SHAPES, objs[0].shape))]
    elif tag in ("two_object",):
        objs[1] = ObjectSpec(other(SHAPES, objs[0].shape, objs[1].shape))
    elif tag == "counting":
        n = len(objs)
        objs = [objs[0]] * (n - 1 if rng.random() < 0.5 or n >= 4 else n + 1)
    elif tag in ("colors",):
        objs = [ObjectSpec(objs[0].shape, other(colors, objs[0].color), objs[0].size)]
    elif tag in ("position", "spatial"):
        (i, rel, j), = spec.relations
        return SceneSpec(spec.objects, ((i, MIRROR[rel], j),))
    elif tag in ("color_attr", "color"):
        a, b = objs
        objs = [ObjectSpec(a.shape, b.color, a.size), ObjectSpec(b.shape, a.color, b.size)]
    elif tag == "shape":
        objs[1] = ObjectSpec(other(SHAPES, objs[0].shape, objs[1].shape), objs[1].color, objs[1].size)
    elif tag == "size":
        a, b = objs
        objs = [ObjectSpec(a.shape, a.color, b.size), ObjectSpec(b.shape, b.color, a.size)]
    elif tag in SINGLE_FRAMES:  # a second object, of the same shape or another, or the one object in another colour
        o, k = objs[0], int(rng.integers(3))
        objs = ([o, o] if k == 0 else [o, ObjectSpec(other(SHAPES, o.shape), other(colors, o.color))] if k == 1
                else [ObjectSpec(o.shape, other(colors, o.color))])
    elif entry.get("benchmark") == "position_bias":
        asked = {(o.color, o.shape) for o in objs}
        objs = [ObjectSpec(o.shape, rng.choice([c for c in colors if (c, o.shape) not in asked]), o.size) for o in objs]
    else:
        raise LLMDiffError(f"no contradiction rule for tag {tag!r}")
    return SceneSpec(tuple(objs))


def _dense_contradiction(spec: SceneSpec, include: list[dict], rng: np.random.Generator) -> SceneSpec:
    """A dense scene with one relation mirrored (when the mirrored scene can be drawn: mirroring one of two
    relations may ask for three objects in a row), or one group in a colour no group of its shape has."""
    if spec.relations and rng.random() < 0.5:
        k = int(rng.integers(len(spec.relations)))
        relations = list(spec.relations)
        i, rel, j = relations[k]
        relations[k] = (i, MIRROR[rel], j)
        mirrored = SceneSpec(spec.objects, tuple(relations))
        if fits(mirrored):
            return mirrored
    g = int(rng.integers(len(include)))
    shape = include[g]["class"]
    free = [c for c in COLORS if not any(r["class"] == shape and r.get("color") == c for r in include)]
    color = free[int(rng.integers(len(free)))]
    first = sum(r["count"] for r in include[:g])  # the scene lists every group's objects in include's order
    objects = [ObjectSpec(o.shape, color, o.size) if first <= k < first + include[g]["count"] else o
               for k, o in enumerate(spec.objects)]
    return SceneSpec(tuple(objects), spec.relations)
