"""Dense prompts in the spirit of DPG-Bench: a scene preamble, 3-5 objects with colours and sizes, one or two
relations, and the DSG-style questions (entity, attribute, count, relation) they are scored by.

The objects are named with the ``eval`` phrasebook's words, so that a dense prompt asks for nothing a GenEval
prompt does not; what is new is its length and its frames (preambles, listing and relation sentences, closings),
which no training caption uses. A question's ``parents`` are the entity questions it depends on: in DPG-Bench a
child question counts 0 when a parent fails ("is the circle red?" after "is there a circle?" was answered no).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from .captions import EVAL, NUMBER_WORDS, article
from .world import COLORS, RELATIONS, SHAPES, SIZES, ObjectSpec, RenderError, SceneSpec, render

PREAMBLES = (
    "A clean vector poster on a pale sheet, with crisp edges and no shading.",
    "A minimalist composition printed on light paper, with generous empty space.",
    "An uncluttered diagram on a light grey canvas, in bold solid hues.",
    "Imagine a tidy graphic against a bright neutral backdrop, free of texture.",
    "A geometric still life in solid hues on an empty off-white field.",
    "Consider a sparse design exercise laid out on a blank pale surface.",
    "The scene is a sticker sheet for children, bright and textureless.",
    "What follows describes a crisp, textureless illustration on pale paper.",
)
LISTING_FRAMES = (
    "The composition holds {list}.",
    "Scattered across it are {list}.",
    "Its elements are {list}.",
    "Spread out with room between them, it features {list}.",
    "It contains {list}, each clearly separate.",
)
RELATION_FRAMES = (
    "The {A} is placed {rel} the {B}.",
    "Look closely: the {A} sits {rel} the {B}.",
    "Importantly, the {A} appears {rel} the {B}.",
    "The arrangement puts the {A} {rel} the {B}.",
)
CLOSINGS = ("Nothing else is present.", "The rest of the space stays empty.", "No further items appear.")
MIN_WORDS, MAX_WORDS = 25, 52
CATEGORIES = ("entity", "attribute", "count", "relation")

# (single objects, size of the counted group or 0, relations). At 32 px five objects fit only when all are small,
# with one relation, and four with at most two large: more large objects or relations often leave the renderer
# no layout (see LARGE_AT_MOST).
STRUCTURES = ((3, 0, 1), (3, 0, 2), (4, 0, 1), (4, 0, 2), (2, 2, 1), (5, 0, 1), (3, 2, 1), (2, 3, 1))
LARGE_AT_MOST = {3: 2, 4: 2, 5: 0}  # large objects per scene of that many objects


@dataclass(frozen=True)
class Group:
    """One object, or ``count`` identical ones (a counting clause)."""

    obj: ObjectSpec
    count: int = 1


def sample_layout(structure: tuple[int, int, int], rng: np.random.Generator) -> tuple[list[Group], list]:
    """Groups of distinct (colour, shape) in prompt order, and relations (i, relation, j) between single groups,
    drawn until the renderer lays the scene out every time (two large objects with a small one between them in a
    row of two relations do not fit in 32 px)."""
    while True:
        groups, relations = _draw_layout(structure, rng)
        if fits(dense_scene(groups, relations)):
            return groups, relations


def fits(spec: SceneSpec, draws: int = 16, tries: int = 200, resolution: int = 32) -> bool:
    """Whether `draws` renders of the scene each find a layout within `tries` attempts, a tenth of what the
    renderer allows, so that a render of it practically never fails (renders of a fixed seed: the answer is the
    same every time it is asked)."""
    rng = np.random.default_rng(0)
    try:
        for _ in range(draws):
            render(spec, rng, resolution, tries=tries)
    except RenderError:
        return False
    return True


def _draw_layout(structure: tuple[int, int, int], rng: np.random.Generator) -> tuple[list[Group], list]:
    singles, counted, n_relations = structure
    n_groups, n_objects = singles + bool(counted), singles + counted
    colors = list(COLORS)
    while True:
        kinds = {(colors[int(rng.integers(len(colors)))], SHAPES[int(rng.integers(len(SHAPES)))])
                 for _ in range(n_groups)}
        if len(kinds) < n_groups:
            continue
        kinds = sorted(kinds)
        rng.shuffle(kinds)
        counts = [1] * singles + ([counted] if counted else [])
        rng.shuffle(counts)
        sizes = [SIZES[int(rng.integers(len(SIZES)))] for _ in kinds]
        if sum(n for n, s in zip(counts, sizes) if s == "large") <= LARGE_AT_MOST[n_objects]:
            break
    groups = [Group(ObjectSpec(shape, color, size), n) for (color, shape), size, n in zip(kinds, sizes, counts)]
    single = [g for g, n in enumerate(counts) if n == 1]
    pairs = list(itertools.combinations(single, 2))
    relations = []
    for k in rng.choice(len(pairs), n_relations, replace=False):
        i, j = pairs[int(k)] if rng.random() < 0.5 else pairs[int(k)][::-1]
        relations.append((i, RELATIONS[int(rng.integers(len(RELATIONS)))], j))
    return groups, relations


def dense_scene(groups: list[Group], relations: list) -> SceneSpec:
    """The scene: every group's objects in prompt order; a relation between groups becomes one between objects."""
    first = list(itertools.accumulate([0] + [g.count for g in groups]))
    objects = tuple(g.obj for g in groups for _ in range(g.count))
    return SceneSpec(objects, tuple((first[i], rel, first[j]) for i, rel, j in relations))


def dense_prompt(groups: list[Group], relations: list, rng: np.random.Generator) -> str:
    """A preamble, a sentence listing every group, one sentence per relation and perhaps a closing, between
    MIN_WORDS and MAX_WORDS words."""
    pick = lambda options: options[int(rng.integers(len(options)))]  # noqa: E731
    noun_of = {shape: pick(words) for shape, words in EVAL.nouns.items()}  # one word per shape in a prompt
    nouns = [noun_of[g.obj.shape] for g in groups]
    sizes = [pick(EVAL.sizes[g.obj.size]) for g in groups]
    phrases = []
    for g, noun, size in zip(groups, nouns, sizes):
        if g.count == 1:
            words = f"{size} {g.obj.color} {noun}"
            phrases.append(f"{article(words)} {words}")
        else:
            phrases.append(f"{NUMBER_WORDS[g.count]} {size} {g.obj.color} {EVAL.plurals[noun]}")
    listing = ", ".join(phrases[:-1]) + " and " + phrases[-1]
    for _ in range(100):  # frames drawn until one preamble, with or without a closing, keeps the prompt in range
        body = [pick(LISTING_FRAMES).format(list=listing)]
        frames = [RELATION_FRAMES[int(k)] for k in rng.permutation(len(RELATION_FRAMES))]
        for (i, rel, j), frame in zip(relations, frames):
            body.append(frame.format(A=f"{groups[i].obj.color} {nouns[i]}", B=f"{groups[j].obj.color} {nouns[j]}",
                                     rel=pick(EVAL.relations[rel])))
        closing = pick(CLOSINGS)
        for k in rng.permutation(len(PREAMBLES)):
            for tail in ([closing], []):
                text = " ".join([PREAMBLES[int(k)], *body, *tail])
                if MIN_WORDS <= len(text.split()) <= MAX_WORDS:
                    return text
    raise ValueError(f"no frames keep {listing!r} within {MIN_WORDS}-{MAX_WORDS} words")


def dense_questions(groups: list[Group], relations: list) -> list[dict]:
    """DSG-style questions over the groups (``object`` and ``relation`` index the entry's ``include``); every
    question but an entity's names the entity questions it depends on."""
    questions, entity = [], {}
    for g, group in enumerate(groups):
        o, many = group.obj, group.count > 1
        noun = EVAL.plurals[o.shape] if many else o.shape
        entity[g] = len(questions)
        questions.append({"category": "entity", "object": g,
                          "question": f"are there {noun}?" if many else f"is there {article(noun)} {noun}?"})
        for attribute in ("color", "size"):
            questions.append({"category": "attribute", "object": g, "attribute": attribute, "parents": [entity[g]],
                              "question": f"{'are the' if many else 'is the'} {noun} {getattr(o, attribute)}?"})
        if many:
            questions.append({"category": "count", "object": g, "parents": [entity[g]],
                              "question": f"are there exactly {NUMBER_WORDS[group.count]} {o.color} {noun}?"})
    for i, rel, j in relations:
        a, b = groups[i].obj, groups[j].obj
        questions.append({"category": "relation", "relation": [i, rel, j], "parents": [entity[i], entity[j]],
                          "question": f"is the {a.color} {a.shape} {rel} the {b.color} {b.shape}?"})
    return questions
