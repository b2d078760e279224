import itertools
import json

import numpy as np
import pytest

from llmdiff.shapes.captions import EVAL, PARAPHRASE, TRAIN, caption
from llmdiff.shapes.suites import (
    HELDOUT_COMPOSITIONS, SUITES, build_suite, contradicting_spec, is_heldout, load_suite, suite_path,
)
from llmdiff.shapes.training_set import build_caption_set
from llmdiff.shapes.world import ObjectSpec, SceneSpec


@pytest.mark.parametrize("field", ["single", "pair", "relation", "count", "listing"])
def test_sentence_frames_are_disjoint_between_phrasebooks(field):
    for a, b in itertools.combinations((TRAIN, EVAL, PARAPHRASE), 2):
        assert not set(getattr(a, field)) & set(getattr(b, field)), (a.name, b.name)


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
