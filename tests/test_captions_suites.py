import itertools
import json
import re

import numpy as np
import pytest

from llmdiff.errors import LLMDiffError
from llmdiff.shapes.captions import (
    EVAL, LEXICAL, PARAPHRASE, PHRASEBOOKS, TRAIN, TRAIN_RICH, TRAINING_PHRASEBOOKS, caption,
)
from llmdiff.shapes.dense import CLOSINGS, LISTING_FRAMES, PREAMBLES, RELATION_FRAMES
from llmdiff.shapes.suites import (
    FRAME_LENGTHS, HELDOUT_COMPOSITIONS, SINGLE_FRAMES, SUITES, build_suite, contradicting_spec, is_heldout, load_suite,
    suite_path,
)
from llmdiff.shapes.training_set import build_caption_set
from llmdiff.shapes.world import COLORS, SHAPES, ObjectSpec, SceneSpec


@pytest.mark.parametrize("field", ["single", "pair", "relation", "count", "listing"])
def test_sentence_frames_are_disjoint_between_phrasebooks(field):
    for a, b in [*itertools.combinations((TRAIN, EVAL, PARAPHRASE), 2), (TRAIN_RICH, EVAL), (TRAIN_RICH, PARAPHRASE)]:
        assert not set(getattr(a, field)) & set(getattr(b, field)), (a.name, b.name)


def _words(book, field):
    return {w for ws in getattr(book, field).values() for w in ws}


@pytest.mark.parametrize("phrasebook", TRAINING_PHRASEBOOKS)
def test_no_paraphrase_word_or_frame_reaches_training_captions(phrasebook):
    text = " ".join(build_caption_set(3000, 2, seed=5, phrasebook=phrasebook).captions)
    unseen = set()
    for field in ("nouns", "colors", "sizes", "relations", "relations_from_object"):
        unseen |= _words(PARAPHRASE, field) - _words(TRAIN, field)
    assert {"three-sided shape", "scarlet", "tiny", "beneath", "floating over it"} <= unseen
    for w in sorted(unseen):
        assert w not in text, w
    for frame in PARAPHRASE.attribute_frames:  # "{size} {noun} in {color}": the word after the noun
        joint = frame.split("{noun}")[1].split("{color}")[0].strip()
        assert f" {joint} red" not in text and f" {joint} blue" not in text, joint


# Words a held-out phrase may share with training captions: articles, prepositions, "is", "and".
FUNCTION_WORDS = frozenset({"a", "an", "and", "are", "for", "in", "is", "it", "its", "of", "on", "the", "to", "with"})
VOCABULARY = ("nouns", "colors", "sizes", "relations", "relations_from_object", "count_words")
FRAMES = ("single", "pair", "relation", "count", "listing", "attribute_frames", "suffixes", "prefixes")


def _tokens(text: str) -> set[str]:
    """The lower-case words of a text or a frame (placeholders such as {A} dropped; "grass-green" is two words)."""
    return set(re.findall(r"[a-z0-9]+", re.sub(r"\{\w+\}", " ", text.lower())))


def _vocabulary(book) -> set[str]:
    """The words of a phrasebook's colour, shape (and plural), size, relation and number phrases."""
    phrases = [p for f in VOCABULARY for ps in getattr(book, f).values() for p in ps]
    phrases += [book.plurals[n] for ns in book.nouns.values() for n in ns]
    return set().union(*map(_tokens, phrases))


def _fragments(frames) -> list[str]:
    """The literal pieces of frames between their placeholders that hold more than function words."""
    pieces = (p.strip(" ,.:;").lower() for f in frames for p in re.split(r"\{\w+\}", f))
    return [p for p in pieces if _tokens(p) - FUNCTION_WORDS]


# Every word a training caption can contain: each training phrasebook's vocabulary and frames.
TRAINING_WORDS = set().union(*(_vocabulary(PHRASEBOOKS[b]) | set().union(*(
    _tokens(f) for field in FRAMES for f in getattr(PHRASEBOOKS[b], field))) for b in TRAINING_PHRASEBOOKS))
TRAINING_FRAMES = [f for b in TRAINING_PHRASEBOOKS for field in FRAMES for f in getattr(PHRASEBOOKS[b], field)]
DENSE_FRAMES = PREAMBLES + LISTING_FRAMES + RELATION_FRAMES + CLOSINGS
ONE_OBJECT_FRAMES = tuple(f for frames in SINGLE_FRAMES.values() for f in frames)


def test_lexical_words_are_in_no_training_phrasebook():
    held_out = _vocabulary(LEXICAL) - FUNCTION_WORDS
    assert {"ruby", "quadrangle", "ball", "trio", "quartet", "leftward", "atop"} <= held_out
    assert not held_out & TRAINING_WORDS, sorted(held_out & TRAINING_WORDS)
    for book in TRAINING_PHRASEBOOKS:  # and its frames (eval's) are no training frames
        for field in FRAMES[:5]:
            assert not set(getattr(LEXICAL, field)) & set(getattr(PHRASEBOOKS[book], field)), (book, field)


@pytest.mark.parametrize("suite, frames", [("dense", DENSE_FRAMES), ("frames", ONE_OBJECT_FRAMES)])
def test_dense_and_frames_prompts_use_no_training_word_beside_the_object_vocabulary(suite, frames):
    # their prompts name objects in eval's words (those of the geneval suite); everything else is new
    allowed = _vocabulary(EVAL) | FUNCTION_WORDS
    for e in load_suite(suite):
        leaked = (_tokens(e["prompt"]) - allowed) & TRAINING_WORDS
        assert not leaked, (sorted(leaked), e["prompt"])
    for fragment in _fragments(frames):
        assert not any(fragment in f.lower() for f in TRAINING_FRAMES), fragment


@pytest.mark.parametrize("phrasebook", TRAINING_PHRASEBOOKS)
def test_no_dense_lexical_or_frames_word_or_frame_reaches_training_captions(phrasebook):
    captions = build_caption_set(3000, 2, seed=5, phrasebook=phrasebook).captions
    words = set().union(*map(_tokens, captions))
    text = " ".join(captions).lower()
    assert not (_vocabulary(LEXICAL) - FUNCTION_WORDS) & words
    for suite in ("dense", "frames"):
        suite_words = set().union(*(_tokens(e["prompt"]) for e in load_suite(suite)))
        assert not (suite_words - _vocabulary(EVAL) - FUNCTION_WORDS) & words, suite
    lexical_frames = [f for field in FRAMES for f in getattr(LEXICAL, field)]
    for fragment in _fragments(DENSE_FRAMES + ONE_OBJECT_FRAMES + tuple(lexical_frames)):
        assert fragment not in text, fragment


def test_frames_suite_says_every_coloured_shape_once_per_length_of_frame():
    entries = load_suite("frames")
    for tag, (low, high) in FRAME_LENGTHS.items():
        mine = [e for e in entries if e["tag"] == tag]
        assert sorted((e["include"][0]["class"], e["include"][0]["color"]) for e in mine) == \
            sorted(itertools.product(SHAPES, COLORS))
        assert all(low <= len(e["prompt"].split()) <= high for e in mine), tag
        assert len({e["prompt"].replace(e["include"][0]["color"], "") for e in mine}) > 8  # frames vary
    assert {e["tag"] for e in entries} == set(SINGLE_FRAMES)


def test_frames_prompts_pass_only_with_the_one_object_asked_for():
    from llmdiff.evaluation.detect import Detection
    from llmdiff.evaluation.scoring import score_entry

    entry = next(e for e in load_suite("frames") if e["include"][0] == {"class": "square", "count": 1, "color": "blue"})
    square = Detection("square", "blue", "small", (0, 0, 8, 8), 0.9, 10)
    assert score_entry([square], entry)[0]
    assert not score_entry([square, Detection("square", "blue", "small", (20, 0, 28, 8), 0.9, 10)], entry)[0]
    assert not score_entry([square, Detection("circle", "red", "small", (20, 20, 28, 28), 0.9, 10)], entry)[0]
    assert not score_entry([Detection("square", "red", "small", (0, 0, 8, 8), 0.9, 10)], entry)[0]


def test_the_rich_phrasebook_uses_its_extra_words_and_frames():
    text = " ".join(build_caption_set(3000, 2, seed=5, phrasebook="train-rich").captions)
    for w in ("orb", "wedge", "cobalt", "west of", "that is", "painted", "giant"):
        assert w in text, w
    with pytest.raises(LLMDiffError, match="phrasebook"):
        build_caption_set(10, phrasebook="paraphrase")


def test_colour_after_phrasebook_names_colours_after_their_noun_in_the_training_words():
    captions = build_caption_set(3000, 2, seed=5, phrasebook="train-colour-after").captions
    after = [c for c in captions if " that is " in c or " painted " in c]
    assert 0.3 < len(after) / len(captions) < 0.9
    words = lambda cs: set(re.findall(r"[\w-]+", " ".join(cs)))  # noqa: E731
    assert words(captions) - words(build_caption_set(3000, 2, seed=5).captions) == {"that", "painted"}


def test_subject_first_phrasebook_names_a_relations_subject_before_its_reference():
    book = PHRASEBOOKS["train-colour-after-subject-first"]
    cs = build_caption_set(3000, 2, seed=5, phrasebook=book.name)
    relations = [(c, s) for c, s in zip(cs.captions, cs.specs) if s.relations]
    assert len(relations) > 500
    for c, s in relations:
        i, rel, j = s.relations[0]
        word = lambda o: next(w for w in book.nouns[o.shape] if re.search(rf"\b{w}\b", c))  # noqa: E731
        subject, reference = s.objects[i], s.objects[j]
        rel_at = min(c.find(w) for w in book.relations[rel] if w in c)
        if subject.shape != reference.shape:  # one noun twice says nothing about the order
            assert c.find(word(subject)) < rel_at < c.rfind(word(reference)), c
    # everything else is train-colour-after's
    other = build_caption_set(3000, 2, seed=5, phrasebook="train-colour-after")
    assert [c for c, s in zip(cs.captions, cs.specs) if not s.relations][:50] == \
        [c for c, s in zip(other.captions, other.specs) if not s.relations][:50]


def test_paraphrase_synonyms_never_appear_in_training_captions():
    cs = build_caption_set(2000, 2, seed=5)
    text = " ".join(cs.captions)
    for words in PARAPHRASE.nouns.values():
        for w in words:
            assert w not in text
    for w in ("scarlet", "violet", "beneath", "further left than", "tiny", "huge"):
        assert w not in text


def test_captions_name_every_specified_attribute():
    rng = np.random.default_rng(0)
    spec = SceneSpec((ObjectSpec("circle", "red", "small"), ObjectSpec("square", "blue")), ((0, "left of", 1),))
    for _ in range(20):
        text = caption(spec, TRAIN, rng)
        assert "red" in text and "blue" in text and "small" in text
        assert any(w in text for w in ("circle", "disc")) and any(w in text for w in ("square", "box"))
        assert "left" in text


def test_counting_captions_use_words_and_digits():
    rng = np.random.default_rng(0)
    texts = {caption(SceneSpec((ObjectSpec("triangle", "green"),) * 3), TRAIN, rng) for _ in range(40)}
    assert any("three" in t for t in texts) and any("3" in t for t in texts)


@pytest.mark.parametrize("name", SUITES)
def test_shipped_suites_match_the_generator(name):
    shipped = [json.loads(l) for l in suite_path(name).read_text().splitlines()]
    assert shipped == build_suite(name)


@pytest.mark.parametrize("name", SUITES)
def test_suites_are_valid_geneval_metadata(name):
    for e in load_suite(name):
        assert isinstance(e["prompt"], str) and e["prompt"] and e["tag"]
        for i, c in enumerate(e["include"]):
            assert c["count"] >= 1 and isinstance(c["class"], str)
            if "position" in c:  # GenEval only refers to groups matched before this clause
                assert c["position"][1] < i
        assert e["heldout"] == is_heldout(SceneSpec.from_dict(e["scene"]))


def test_geneval_suite_covers_tasks_and_heldout_compositions():
    entries = load_suite("geneval")
    assert {e["tag"] for e in entries} == {"single_object", "two_object", "counting", "colors", "position", "color_attr"}
    colors = {(c.get("color"), c["class"]) for e in entries for c in e["include"]}
    assert HELDOUT_COMPOSITIONS <= colors


def test_position_bias_suite_fills_every_bin():
    entries = load_suite("position_bias")
    bins = [c["position_bin"] for e in entries for c in e["include"]]
    assert set(bins) == {0, 1, 2, 3, 4}
    assert {len(e["include"]) for e in entries} == {3, 4, 5}


@pytest.mark.parametrize("name", SUITES)
def test_contradictions_differ_from_the_prompt(name):
    rng = np.random.default_rng(0)
    for e in load_suite(name):
        assert contradicting_spec(e, rng) != SceneSpec.from_dict(e["scene"])


def test_load_suite_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no prompt suite"):
        load_suite("nonexistent")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a"}\n{oops\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: malformed JSON"):
        load_suite(str(bad))


def test_paraphrase_factors_change_only_the_wording_of_the_paraphrase_suite():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "scripts" / "paraphrase_factors.py"
    spec = importlib.util.spec_from_file_location("paraphrase_factors", path)
    factors = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(factors)
    reference = load_suite("paraphrase")
    suites = {name: factors.suite(fields) for name, fields in factors.FACTORS.items()}
    for entries in suites.values():  # the same scenes, tasks and clauses in every condition
        assert [(e["tag"], e["scene"], e["include"]) for e in entries] == \
               [(e["tag"], e["scene"], e["include"]) for e in reference]
    assert [e["prompt"] for e in suites["paraphrase (all)"]] == [e["prompt"] for e in reference]
    assert not any(w in e["prompt"] for e in suites["eval phrasing"] for ws in PARAPHRASE.nouns.values() for w in ws)
    assert any("three-sided shape" in e["prompt"] for e in suites["+ shape words"])


def test_varied_phrasebook_stops_caption_length_from_telling_the_number_of_objects():
    def length_and_objects(book):
        cs = build_caption_set(1000, 2, seed=5, phrasebook=book)
        per = len(cs.captions) // len(cs.specs)
        objects = np.array([len(cs.specs[i // per].objects) for i in range(len(cs.captions))])
        return np.array([len(c.split()) for c in cs.captions]), objects

    words, objects = length_and_objects("train-colour-after")
    varied_words, varied_objects = length_and_objects("train-varied")
    assert np.corrcoef(varied_words, varied_objects)[0, 1] < np.corrcoef(words, objects)[0, 1] - 0.1
    # one-object captions now run as long as typical three-object ones
    assert np.percentile(varied_words[varied_objects == 1], 90) >= np.median(varied_words[varied_objects >= 3])
    assert np.percentile(words[objects == 1], 90) < np.median(words[objects >= 3])
    # with a drawn length the typical one-object caption is nearly as long as the typical three-object one
    any_words, any_objects = length_and_objects("train-any-length")
    assert np.corrcoef(any_words, any_objects)[0, 1] < min(0.2, np.corrcoef(varied_words, varied_objects)[0, 1] - 0.2)
    assert np.median(any_words[any_objects == 1]) >= 0.8 * np.median(any_words[any_objects >= 3])
    assert np.median(varied_words[varied_objects == 1]) < 0.8 * np.median(varied_words[varied_objects >= 3])


def test_a_drawn_caption_length_pads_with_each_clause_at_most_once():
    book = PHRASEBOOKS["train-any-length"]
    low, high = book.caption_words
    rng = np.random.default_rng(0)
    one = SceneSpec(objects=(ObjectSpec("circle", "red"),))
    captions = [caption(one, book, rng) for _ in range(300)]
    lengths = [len(c.split()) for c in captions]
    assert min(lengths) >= low and max(lengths) <= high + 12  # the last clause may pass the drawn length
    assert len(set(lengths)) > 20  # lengths spread over the range, not a few fixed paddings
    for c in captions:
        assert all(c.count(clause) <= 1 for clause in book.prefixes + book.suffixes), c
        assert ("red circle" in c or "red disc" in c or "circle that is red" in c or "disc that is red" in c
                or "circle painted red" in c or "disc painted red" in c), c
