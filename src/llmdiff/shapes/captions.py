"""Captions with real language for Shapes scenes.

Phrasebooks with disjoint sentence frames:

* ``train``      — the frames and words training captions are made of;
* ``train-rich`` — the same with more words per concept and more frames (``data.phrasebook``);
* ``eval``       — other frames over the same words (the ``geneval``/``compbench``/``position_bias`` suites);
* ``paraphrase`` — other frames again, plus synonyms that no training caption uses;
* ``lexical``    — ``eval``'s frames with colour, shape, number and relation words that no phrasebook above
  uses (the ``lexical`` suite): only the words differ from the ``geneval`` suite.

Every frame is a ``str.format`` template over noun phrases ({A}, {B}, ... with their
determiners), relation words ({rel}) and counts ({N} {nouns}).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..errors import LLMDiffError
from .world import ObjectSpec, SceneSpec

NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}
STANDARD_ATTRIBUTES = "{size} {color} {noun}"


@dataclass(frozen=True)
class Phrasebook:
    name: str
    nouns: dict[str, tuple[str, ...]]
    plurals: dict[str, str]
    colors: dict[str, tuple[str, ...]]
    sizes: dict[str, tuple[str, ...]]
    relations: dict[str, tuple[str, ...]]
    # "B with A <on its left>": relation seen from B, as a pronoun phrase
    relations_from_object: dict[str, tuple[str, ...]]
    single: tuple[str, ...]
    pair: tuple[str, ...]
    relation: tuple[str, ...]
    count: tuple[str, ...]
    listing: tuple[str, ...]
    count_words: dict[int, tuple[str, ...]]
    attribute_frames: tuple[str, ...]  # how colour and size attach to a noun: "{size} {color} {noun}", "{size} {noun} in {color}"
    suffixes: tuple[str, ...]
    prefixes: tuple[str, ...]
    # None: one prefix and one suffix per caption. (low, high): prefixes and suffixes, each at most once, are added
    # around the body until the caption has at least a number of words drawn uniformly from low to high
    caption_words: tuple[int, int] | None = None


_COMMON_NOUNS = {
    "circle": ("circle", "disc"),
    "square": ("square", "box"),
    "triangle": ("triangle",),
    "cross": ("cross", "plus sign"),
}
_PLURALS = {
    "circle": "circles", "disc": "discs", "square": "squares", "box": "boxes", "triangle": "triangles",
    "cross": "crosses", "plus sign": "plus signs", "round shape": "round shapes", "block": "blocks",
    "three-sided shape": "three-sided shapes", "plus symbol": "plus symbols",
}
_COMMON_COLORS = {c: (c,) for c in ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown")}
_COMMON_SIZES = {"small": ("small",), "large": ("large", "big")}
_COMMON_RELATIONS = {
    "left of": ("to the left of", "left of"),
    "right of": ("to the right of", "right of"),
    "above": ("above", "over"),
    "below": ("below", "under"),
}
_COMMON_FROM_OBJECT = {
    "left of": ("on its left", "to its left"),
    "right of": ("on its right", "to its right"),
    "above": ("above it",),
    "below": ("below it", "under it"),
}

TRAIN = Phrasebook(
    name="train",
    nouns=_COMMON_NOUNS,
    plurals=_PLURALS,
    colors=_COMMON_COLORS,
    sizes=_COMMON_SIZES,
    relations=_COMMON_RELATIONS,
    relations_from_object=_COMMON_FROM_OBJECT,
    single=("{A}", "there is {A}", "an image of {A}", "{A} in the picture", "a drawing of {A}"),
    pair=("{A} and {B}", "there is {A} and {B}", "an image of {A} and {B}", "{A} together with {B}"),
    relation=(
        "{A} {rel} {B}",
        "there is {A} {rel} {B}",
        "{rel} {B} there is {A}",
        "{B} with {A} {rel_from_object}",
        "an image of {A} {rel} {B}",
    ),
    count=("{N} {nouns}", "there are {N} {nouns}", "an image of {N} {nouns}", "{N} {nouns} in the picture"),
    listing=("{list}", "there is {list}", "an image of {list}"),
    count_words={n: (w, str(n)) for n, w in NUMBER_WORDS.items()},
    attribute_frames=(STANDARD_ATTRIBUTES,),
    suffixes=("", "", "", " on a plain background", " in a simple drawing", ", flat colors"),
    prefixes=("",),
)

EVAL = Phrasebook(
    name="eval",
    nouns=_COMMON_NOUNS,
    plurals=_PLURALS,
    colors=_COMMON_COLORS,
    sizes=_COMMON_SIZES,
    relations=_COMMON_RELATIONS,
    relations_from_object=_COMMON_FROM_OBJECT,
    single=("a photo of {A}", "we see {A}"),
    pair=("a photo of {A} and {B}", "{A} as well as {B}"),
    relation=("a photo of {A} {rel} {B}", "{A} placed {rel} {B}"),
    count=("a photo of {N} {nouns}", "exactly {N} {nouns}"),
    listing=("a photo of {list}", "we see {list}"),
    count_words={n: (w,) for n, w in NUMBER_WORDS.items()},
    attribute_frames=(STANDARD_ATTRIBUTES,),
    suffixes=("", " on a white background", ", minimal illustration"),
    prefixes=("",),
)

PARAPHRASE = Phrasebook(
    name="paraphrase",
    nouns={
        "circle": ("round shape",),
        "square": ("block",),
        "triangle": ("three-sided shape",),
        "cross": ("plus symbol",),
    },
    plurals=_PLURALS,
    colors={**_COMMON_COLORS, "red": ("scarlet",), "purple": ("violet",)},
    sizes={"small": ("tiny", "little"), "large": ("huge",)},
    relations={
        "left of": ("on the left side of", "further left than"),
        "right of": ("on the right side of", "further right than"),
        "above": ("on top of", "higher up than"),
        "below": ("beneath", "lower down than"),
    },
    relations_from_object={
        "left of": ("sitting on its left-hand side",),
        "right of": ("sitting on its right-hand side",),
        "above": ("floating over it",),
        "below": ("resting beneath it",),
    },
    single=("the picture contains {A} and nothing else", "somewhere in the image is {A}"),
    pair=("both {A} and {B} appear", "the scene shows {B}, and also {A}"),
    relation=("{A} sits {rel} {B}", "look at {B}: {A} is {rel} it", "{B}, with {A} {rel_from_object}"),
    count=("the picture holds {N} {nouns}", "{N} {nouns}, no more and no less"),
    listing=("the picture shows {list}", "in this drawing: {list}"),
    count_words={1: ("a single",), 2: ("a pair of", "exactly two"), 3: ("a trio of", "exactly three"),
                 4: ("exactly four",), 5: ("exactly five",)},
    attribute_frames=("{size} {noun} in {color}", "{size} {noun} colored {color}"),
    suffixes=("", " against an empty light backdrop"),
    prefixes=("", "in a minimalist flat illustration, "),
)

# The training phrasebook with a wider vocabulary: more words per shape, colour, size and relation,
# more ways to attach a colour and more sentence frames, so that a denoiser learns what the LLM's
# features of a word mean rather than which word it was. None of it is in EVAL or PARAPHRASE.
TRAIN_RICH = Phrasebook(
    name="train-rich",
    nouns={
        "circle": ("circle", "disc", "dot", "orb"),
        "square": ("square", "box", "tile", "cube"),
        "triangle": ("triangle", "wedge", "pyramid"),
        "cross": ("cross", "plus sign", "cross mark"),
    },
    plurals={**_PLURALS, "dot": "dots", "orb": "orbs", "tile": "tiles", "cube": "cubes", "wedge": "wedges",
             "pyramid": "pyramids", "cross mark": "cross marks"},
    colors={
        "red": ("red", "crimson", "cherry"), "orange": ("orange", "tangerine"), "yellow": ("yellow", "lemon"),
        "green": ("green", "emerald", "grass-green"), "blue": ("blue", "cobalt", "sapphire"),
        "purple": ("purple", "lavender", "amethyst"), "pink": ("pink", "rose"), "brown": ("brown", "chocolate"),
    },
    sizes={"small": ("small", "mini"), "large": ("large", "big", "giant")},
    relations={
        "left of": ("to the left of", "left of", "west of"),
        "right of": ("to the right of", "right of", "east of"),
        "above": ("above", "over", "north of"),
        "below": ("below", "under", "south of"),
    },
    relations_from_object={
        "left of": ("on its left", "to its left", "west of it"),
        "right of": ("on its right", "to its right", "east of it"),
        "above": ("above it", "north of it"),
        "below": ("below it", "under it", "south of it"),
    },
    single=TRAIN.single + ("here is {A}", "just {A}"),
    pair=TRAIN.pair + ("{A} next to {B}", "a picture with {A} alongside {B}"),
    relation=TRAIN.relation + ("you can see {A} {rel} {B}", "drawn {rel} {B}: {A}"),
    count=TRAIN.count + ("a group of {N} {nouns}", "{N} {nouns} drawn"),
    listing=TRAIN.listing + ("a picture with {list}",),
    count_words=TRAIN.count_words,
    attribute_frames=(STANDARD_ATTRIBUTES, STANDARD_ATTRIBUTES, "{size} {noun} that is {color}",
                      "{size} {noun} painted {color}"),
    suffixes=TRAIN.suffixes,
    prefixes=TRAIN.prefixes,
)

# The training phrasebook with half of the colours and sizes named after their noun ("a square that is blue",
# "a small circle painted red"), in words the paraphrase suite does not use ("in blue", "colored blue"): in "train"
# every colour comes before its noun, which is all a causal LLM's noun token can have read.
TRAIN_COLOUR_AFTER = replace(
    TRAIN, name="train-colour-after",
    attribute_frames=(STANDARD_ATTRIBUTES, STANDARD_ATTRIBUTES, "{size} {noun} that is {color}",
                      "{size} {noun} painted {color}"),
)

# train-colour-after with every relation said subject first ("A left of B", never "B with A on its left" or "left of
# B there is A"): in "train" the noun after the relation word is the reference in some frames and the subject in
# others, so the side a noun goes to depends on the frame, not on its place in the prompt.
TRAIN_SUBJECT_FIRST = replace(
    TRAIN_COLOUR_AFTER, name="train-colour-after-subject-first",
    relation=("{A} {rel} {B}", "there is {A} {rel} {B}", "an image of {A} {rel} {B}"),
)

# train-colour-after with preambles and closing clauses of every length (0 to 14 words) on every kind of scene, none
# naming an object: in "train" a caption's length grows with its number of objects, so a denoiser can count the
# prompt's words instead of reading them (an unseen 8-word one-object prompt drew two objects). Their words are in no
# held-out suite (the held-out tests check it).
TRAIN_VARIED = replace(
    TRAIN_COLOUR_AFTER, name="train-varied",
    prefixes=("", "", "", "drawn in a calm style, ", "a neat cartoon sketch. ", "made as a matte card by kids, ",
              "in a quiet flat style with smooth fills and soft even lighting, ",
              "rendered with sharp outlines and vivid matte colors like a kids' art lesson, "),
    suffixes=TRAIN.suffixes + (", drawn in a calm style", ", as a neat cartoon sketch",
                               ", rendered with sharp outlines and vivid matte colors",
                               " on a smooth card from a kids' art lesson, with soft even lighting"),
)

# Filler clauses that name no object, in words no held-out suite uses (the held-out tests check it), made by
# combining a few word lists so that no clause is frequent enough to be learnt as a fixed string.
_MANNERS = ("calm", "neat", "quiet", "playful", "gentle", "cheerful", "modest", "steady", "friendly", "humble")
_MEDIA = ("sketch", "drawing", "doodle", "cartoon", "cutout", "stencil", "mural", "card")
_MAKERS = ("by kids", "by a teacher", "for a class quiz", "for a board game", "for a memory game",
           "in an art lesson", "for a school wall", "by a cartoonist")
_FINISHES = ("soft even lighting", "warm lighting", "smooth fills", "sharp outlines", "matte colors",
             "thin outlines", "even fills", "cool lighting")
_SETTINGS = ("on a smooth card", "on a felt board", "on a matte board", "on a wooden tray", "on a school slate",
             "on a cork board")

# train-colour-after whose captions run from 3 to 40 words on every kind of scene, whatever the number of
# objects: a drawn length pads the body with filler sentences before it and clauses after it. In train-varied the
# padding is one of a few fixed clauses of up to 14 words, so a caption's length still tells the number of objects
# (correlation of words and objects over the default's 6000 scenes: 0.60 in train-colour-after, 0.43 in
# train-varied, 0.12 here) and a long unseen one-object frame still draws two or three objects.
TRAIN_ANY_LENGTH = replace(
    TRAIN_COLOUR_AFTER, name="train-any-length",
    prefixes=tuple(f"a {m} {medium} {maker}. " for m in _MANNERS for medium in _MEDIA for maker in _MAKERS)
    + tuple(f"{medium} made {maker} with {finish}, " for medium in _MEDIA for maker in _MAKERS for finish in _FINISHES),
    suffixes=tuple(f", in a {m} style" for m in _MANNERS) + tuple(f", with {f}" for f in _FINISHES)
    + tuple(f" {setting}" for setting in _SETTINGS) + tuple(f", made {maker}" for maker in _MAKERS),
    caption_words=(3, 40),
)

# EVAL's frames with words of its own for every colour, shape, number and relation. No word of a colour, shape or
# number phrase is a word of any training phrasebook (the held-out test checks it); a relation phrase keeps its
# direction's stem ("leftward of") where English has no other word for it.
LEXICAL = replace(
    EVAL, name="lexical",
    nouns={
        "circle": ("ball", "round figure"),
        "square": ("quadrangle", "rectangle"),
        "triangle": ("delta", "arrowhead"),
        "cross": ("addition symbol", "positive symbol"),
    },
    plurals={"ball": "balls", "round figure": "round figures", "quadrangle": "quadrangles", "rectangle": "rectangles",
             "delta": "deltas", "arrowhead": "arrowheads", "addition symbol": "addition symbols",
             "positive symbol": "positive symbols"},
    colors={
        "red": ("ruby", "vermilion"), "orange": ("pumpkin", "apricot"), "yellow": ("golden", "canary"),
        "green": ("jade", "verdant"), "blue": ("navy", "azure"), "purple": ("plum", "grape"),
        "pink": ("fuchsia", "bubblegum"), "brown": ("chestnut", "coffee"),
    },
    sizes={"small": ("miniature", "petite"), "large": ("enormous", "massive")},
    relations={
        "left of": ("leftward of", "on the leftward side of"),
        "right of": ("rightward of", "on the rightward side of"),
        "above": ("higher than", "atop"),
        "below": ("lower than", "underneath"),
    },
    relations_from_object={
        "left of": ("leftward of it",), "right of": ("rightward of it",), "above": ("higher than it",),
        "below": ("lower than it",),
    },
    # EVAL's "exactly {N} {nouns}" does not take a number phrase ("exactly a trio of balls")
    count=("a photo of {N} {nouns}", "we see {N} {nouns}"),
    count_words={1: ("a lone",), 2: ("a duo of", "twin"), 3: ("a trio of", "a triad of"),
                 4: ("a quartet of", "a foursome of"), 5: ("a quintet of",)},
)

PHRASEBOOKS = {p.name: p for p in (TRAIN, TRAIN_RICH, TRAIN_COLOUR_AFTER, TRAIN_SUBJECT_FIRST, TRAIN_VARIED,
                                   TRAIN_ANY_LENGTH, EVAL, PARAPHRASE, LEXICAL)}
TRAINING_PHRASEBOOKS = ("train", "train-rich", "train-colour-after", "train-colour-after-subject-first", "train-varied",
                        "train-any-length")


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def article(next_word: str) -> str:
    return "an" if next_word[:1].lower() in "aeiou" else "a"


def noun_phrase(o: ObjectSpec, book: Phrasebook, rng: np.random.Generator) -> str:
    """'a small red circle', 'a box in blue', ... — attributes the spec leaves open are not mentioned."""
    noun = _pick(rng, book.nouns[o.shape])
    color = _pick(rng, book.colors[o.color]) if o.color else ""
    size = _pick(rng, book.sizes[o.size]) if o.size else ""
    frame = _pick(rng, book.attribute_frames)
    if not color:  # frames such as "{noun} in {color}" only read well with a colour
        frame = STANDARD_ATTRIBUTES
    words = " ".join(frame.format(size=size, color=color, noun=noun).split())
    return f"{article(words)} {words}"


def count_phrase(o: ObjectSpec, n: int, book: Phrasebook, rng: np.random.Generator) -> tuple[str, str]:
    """('three', 'small red circles'): the number and the plural noun phrase of a counting caption."""
    noun = book.plurals[_pick(rng, book.nouns[o.shape])]
    size = _pick(rng, book.sizes[o.size]) if o.size else ""
    color = _pick(rng, book.colors[o.color]) if o.color else ""
    return _pick(rng, book.count_words[n]), " ".join(f"{size} {color} {noun}".split())


def _join_list(phrases: list[str]) -> str:
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def caption(spec: SceneSpec, book: Phrasebook | str, rng: np.random.Generator) -> str:
    """One caption for a scene specification in the phrasebook's language."""
    book = PHRASEBOOKS[book] if isinstance(book, str) else book
    objs = spec.objects
    if spec.relations:
        if len(objs) != 2 or len(spec.relations) != 1:
            raise LLMDiffError("relation captions describe exactly two objects and one relation")
        i, rel, j = spec.relations[0]
        body = _pick(rng, book.relation).format(
            A=noun_phrase(objs[i], book, rng),
            B=noun_phrase(objs[j], book, rng),
            rel=_pick(rng, book.relations[rel]),
            rel_from_object=_pick(rng, book.relations_from_object[rel]),
        )
    elif len(objs) > 1 and len(set(objs)) == 1:  # N identical objects: a counting caption
        number, nouns = count_phrase(objs[0], len(objs), book, rng)
        body = _pick(rng, book.count).format(N=number, nouns=nouns)
    elif len(objs) == 1:
        body = _pick(rng, book.single).format(A=noun_phrase(objs[0], book, rng))
    elif len(objs) == 2:
        body = _pick(rng, book.pair).format(A=noun_phrase(objs[0], book, rng), B=noun_phrase(objs[1], book, rng))
    else:
        body = _pick(rng, book.listing).format(list=_join_list([noun_phrase(o, book, rng) for o in objs]))
    if book.caption_words is None:
        return _pick(rng, book.prefixes) + body + _pick(rng, book.suffixes)
    return _padded(body, book, rng)


def _padded(body: str, book: Phrasebook, rng: np.random.Generator) -> str:
    """The body with prefixes before it and suffixes after it, each used at most once and the side drawn at
    random, until the caption has at least a drawn number of words (``book.caption_words``)."""
    low, high = book.caption_words
    target = int(rng.integers(low, high + 1))
    before, after = [p for p in book.prefixes if p], [s for s in book.suffixes if s]
    chosen_before, chosen_after = [], []
    while len(" ".join([*chosen_before, body, *chosen_after]).split()) < target and (before or after):
        if after and (not before or rng.integers(2)):
            chosen_after.append(after.pop(int(rng.integers(len(after)))))
        else:
            chosen_before.insert(0, before.pop(int(rng.integers(len(before)))))
    return "".join(chosen_before) + body + "".join(chosen_after)
