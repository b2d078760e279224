"""The dense (DPG-style) and lexical suites: their prompts, the dependent questions and how they are scored."""

import numpy as np
import pytest

from llmdiff.evaluation.detect import Detection, detect
from llmdiff.evaluation.evaluate import summarize
from llmdiff.evaluation.scoring import DPG_CATEGORIES, image_score, score_dpg, score_entry
from llmdiff.shapes.dense import MAX_WORDS, MIN_WORDS
from llmdiff.shapes.suites import GENEVAL_TAGS, load_suite
from llmdiff.shapes.world import SceneSpec, render


def det(shape, color, size, box, conf=0.9):
    return Detection(shape, color, size, box, conf, 10)


def test_dense_prompts_are_long_with_three_to_five_objects_and_one_or_two_relations():
    entries = load_suite("dense")
    assert len(entries) >= 80
    for e in entries:
        assert MIN_WORDS <= len(e["prompt"].split()) <= MAX_WORDS, e["prompt"]
        spec = SceneSpec.from_dict(e["scene"])
        assert 3 <= len(spec.objects) <= 5 and 1 <= len(spec.relations) <= 2
        assert all(o.color and o.size for o in spec.objects)
        kinds = [(c["class"], c["color"]) for c in e["include"]]
        assert len(set(kinds)) == len(kinds)  # "the red circle" names one group
        for q, question in enumerate(e["questions"]):
            assert all(p < q and e["questions"][p]["category"] == "entity" for p in question.get("parents", []))
    categories = {q["category"] for e in entries for q in e["questions"]}
    assert categories == set(DPG_CATEGORIES)


@pytest.mark.parametrize("model", ["smollm2-135m", "gemma3-270m", "minilm-l6"])
def test_dense_prompts_fit_the_prompt_length_the_encoders_keep(model):
    # longer prompts would lose their last sentences (a relation) to truncation
    from transformers import AutoTokenizer

    from llmdiff.encoders.base import EncoderConfig
    from llmdiff.encoders.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(model).path)
    lengths = [len(tokenizer(e["prompt"], add_special_tokens=False)["input_ids"]) for e in load_suite("dense")]
    assert max(lengths) <= EncoderConfig().max_length


def test_lexical_suite_has_every_geneval_task():
    entries = load_suite("lexical")
    assert len(entries) >= 80
    assert {e["tag"] for e in entries} == set(GENEVAL_TAGS)
    assert all(e["benchmark"] == "geneval" for e in entries)


@pytest.mark.parametrize("index", [0, 30, 50, 70, 95])
def test_a_ground_truth_render_answers_every_question(index):
    entry = load_suite("dense")[index]
    rng = np.random.default_rng(index)
    for _ in range(3):
        dets = detect(render(SceneSpec.from_dict(entry["scene"]), rng).image)
        correct, clauses = score_entry(dets, entry)
        assert correct and image_score(correct, clauses, "dpg") == 1.0, [c for c in clauses if not c["passed"]]


# An entry by hand: a large red circle left of a small blue square, and two small green triangles.
ENTRY = {
    "benchmark": "dpg", "tag": "dense", "prompt": "...",
    "include": [{"class": "circle", "count": 1, "color": "red", "size": "large"},
                {"class": "square", "count": 1, "color": "blue", "size": "small"},
                {"class": "triangle", "count": 2, "color": "green", "size": "small"}],
    "questions": [
        {"category": "entity", "object": 0, "question": "is there a circle?"},
        {"category": "attribute", "object": 0, "attribute": "color", "parents": [0], "question": "red?"},
        {"category": "attribute", "object": 0, "attribute": "size", "parents": [0], "question": "large?"},
        {"category": "entity", "object": 1, "question": "is there a square?"},
        {"category": "attribute", "object": 1, "attribute": "color", "parents": [3], "question": "blue?"},
        {"category": "entity", "object": 2, "question": "are there triangles?"},
        {"category": "count", "object": 2, "parents": [5], "question": "exactly two green triangles?"},
        {"category": "relation", "relation": [0, "left of", 1], "parents": [0, 3], "question": "circle left of square?"},
    ],
}
CIRCLE = det("circle", "red", "large", (2, 10, 14, 22))
SQUARE = det("square", "blue", "small", (20, 12, 28, 20))
TRIANGLES = [det("triangle", "green", "small", (2, 24, 10, 32)), det("triangle", "green", "small", (20, 24, 28, 32))]


def _passed(detections):
    return [c["passed"] for c in score_dpg(detections, ENTRY)[1]]


def test_every_question_passes_on_the_asked_for_scene():
    correct, clauses = score_dpg([CIRCLE, SQUARE, *TRIANGLES], ENTRY)
    assert correct and all(c["passed"] and c["answered"] for c in clauses)


def test_a_missing_entity_fails_every_question_that_depends_on_it():
    passed = _passed([SQUARE, *TRIANGLES])  # no circle
    assert passed == [False, False, False, True, True, True, True, False]


def test_a_question_counts_zero_when_a_parent_fails_whatever_the_detector_answers():
    questions = [dict(q) for q in ENTRY["questions"]]
    questions[7]["parents"] = [0, 3, 5]  # the relation made to depend on the triangles too
    _, clauses = score_dpg([CIRCLE, SQUARE], {**ENTRY, "questions": questions})
    relation = clauses[7]
    assert relation["answered"] and not relation["passed"]
    assert relation["reason"] == "parent question 5 failed"


def test_attributes_fail_alone_and_relations_do_not_depend_on_them():
    recoloured = det("circle", "purple", "small", CIRCLE.bbox)
    assert _passed([recoloured, SQUARE, *TRIANGLES]) == [True, False, False, True, True, True, True, True]


def test_count_is_exact_and_relation_follows_geneval_positions():
    extra = det("triangle", "green", "small", (12, 0, 20, 8))
    assert _passed([CIRCLE, SQUARE, *TRIANGLES, extra])[6] is False
    assert _passed([CIRCLE, SQUARE, TRIANGLES[0]])[6] is False
    swapped = [det("circle", "red", "large", (16, 10, 28, 22)), det("square", "blue", "small", (2, 12, 10, 20))]
    assert _passed([*swapped, *TRIANGLES])[7] is False


def test_two_objects_of_one_class_are_matched_by_their_attributes():
    entry = {**ENTRY, "include": [ENTRY["include"][0], {"class": "circle", "count": 1, "color": "blue", "size": "small"}],
             "questions": [
                 {"category": "entity", "object": 0, "question": "circle?"},
                 {"category": "attribute", "object": 0, "attribute": "color", "parents": [0], "question": "red?"},
                 {"category": "entity", "object": 1, "question": "circle?"},
                 {"category": "attribute", "object": 1, "attribute": "color", "parents": [2], "question": "blue?"},
                 {"category": "relation", "relation": [1, "right of", 0], "parents": [0, 2], "question": "right?"}]}
    blue = det("circle", "blue", "small", SQUARE.bbox, conf=0.99)  # more confident: GenEval's rule would take it first
    correct, _ = score_dpg([blue, CIRCLE], entry)
    assert correct


def test_summary_reports_categories_and_the_mean_per_question_score():
    results = []
    for dets in ([CIRCLE, SQUARE, *TRIANGLES], [SQUARE, *TRIANGLES]):
        correct, clauses = score_dpg(dets, ENTRY)
        results.append({"benchmark": "dpg", "tag": "dense", "heldout": False, "correct": correct,
                        "score": image_score(correct, clauses, "dpg"), "clauses": clauses,
                        "detections": [d.to_dict() for d in dets]})
    bench = summarize(results)["benchmarks"]["dpg"]
    assert list(bench["tasks"]) == list(DPG_CATEGORIES)
    assert bench["tasks"]["entity"] == {"accuracy": 5 / 6, "n": 6}
    assert bench["tasks"]["attribute"]["accuracy"] == 4 / 6
    assert bench["tasks"]["relation"]["accuracy"] == 0.5
    assert bench["overall"] == pytest.approx((1 + 4 / 8) / 2)
