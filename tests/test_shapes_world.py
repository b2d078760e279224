import numpy as np
import pytest

from llmdiff.shapes.suites import HELDOUT_COMPOSITIONS
from llmdiff.shapes.training_set import build_caption_set, sample_spec
from llmdiff.shapes.world import (
    COLORS, RELATIONS, SHAPES, ObjectSpec, RenderError, SceneSpec, relative_position, render,
)


def _spec4():
    return SceneSpec(tuple(ObjectSpec(s, c) for s, c in zip(SHAPES, ["red", "blue", "green", "yellow"])))


@pytest.mark.parametrize("resolution", [32, 64, 128])
def test_render_shapes_and_scene_graph(resolution):
    scene = render(_spec4(), np.random.default_rng(0), resolution)
    assert scene.image.shape == (resolution, resolution, 3) and scene.image.dtype == np.uint8
    assert [o.shape for o in scene.objects] == list(SHAPES)
    for o in scene.objects:
        x0, y0, x1, y1 = o.bbox
        assert 0 <= x0 < x1 <= resolution and 0 <= y0 < y1 <= resolution
        cx, cy = (int(v) for v in o.center)
        # the cross and circle are filled at the centre, the triangle at its lower middle
        py = cy + (y1 - y0) // 4 if o.shape == "triangle" else cy
        assert np.abs(scene.image[py, cx].astype(int) - COLORS[o.color]).max() <= 2


def test_objects_do_not_overlap_and_keep_a_gap():
    rng = np.random.default_rng(1)
    for _ in range(200):
        scene = render(SceneSpec((ObjectSpec("square"),) * 4), rng, 32)
        boxes = [o.bbox for o in scene.objects]
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                assert a[2] + 2 <= b[0] or b[2] + 2 <= a[0] or a[3] + 2 <= b[1] or b[3] + 2 <= a[1]


def test_render_is_deterministic_for_a_seed():
    a = render(_spec4(), np.random.default_rng(7), 32).image
    b = render(_spec4(), np.random.default_rng(7), 32).image
    c = render(_spec4(), np.random.default_rng(8), 32).image
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize("rel", RELATIONS)
def test_relations_hold_by_genevals_rule(rel):
    rng = np.random.default_rng(2)
    spec = SceneSpec((ObjectSpec("circle", "red"), ObjectSpec("square", "blue")), ((0, rel, 1),))
    for _ in range(50):
        objs = render(spec, rng, 32).objects
        assert relative_position(objs[0].bbox, objs[1].bbox) == {rel}


def test_relative_position_matches_geneval_examples():
    assert relative_position((0, 0, 10, 10), (20, 0, 30, 10)) == {"left of"}
    assert relative_position((0, 0, 10, 10), (12, 12, 22, 22)) == {"left of", "above"}
    # centres closer than 0.1 x the summed sizes: no relation at all
    assert relative_position((0, 0, 10, 10), (1, 0, 11, 10)) == set()


def test_forbidden_compositions_are_never_drawn():
    rng = np.random.default_rng(3)
    for _ in range(300):
        scene = render(SceneSpec((ObjectSpec("triangle"), ObjectSpec("square"))), rng, 32,
                       forbidden=HELDOUT_COMPOSITIONS)
        assert not {(o.color, o.shape) for o in scene.objects} & HELDOUT_COMPOSITIONS


def test_training_captions_avoid_heldout_compositions_and_render():
    cs = build_caption_set(300, 2, seed=0)
    assert len(cs) > 400 and len(set(cs.captions)) == len(cs)
    rng = np.random.default_rng(0)
    for i in range(0, len(cs), 7):
        assert not {(o.color, o.shape) for o in cs.specs[i].objects} & HELDOUT_COMPOSITIONS
        assert cs.render(i, rng).shape == (32, 32, 3)


def test_p_color_sets_how_often_objects_are_named_with_their_colour():
    def two_object_colour_words(p_color):
        cs = build_caption_set(3000, 2, seed=3, p_color=p_color)
        pairs = [s for s in cs.specs if len(s.objects) == 2]
        return [sum(o.color is not None for o in s.objects) for s in pairs]

    assert set(two_object_colour_words(0.0)) == {0} and set(two_object_colour_words(1.0)) == {2}
    half = two_object_colour_words(0.5)
    assert abs(half.count(0) / len(half) - 0.25) < 0.05  # both objects unnamed: (1 - p)^2
    default = two_object_colour_words(0.8)
    assert default.count(0) / len(default) < 0.1 < half.count(0) / len(half)


def test_crowded_scenes_render_every_object_apart_and_in_its_own_colour():
    rng = np.random.default_rng(4)
    specs = [SceneSpec((ObjectSpec("cross", None, "small"),) * 5),
             SceneSpec((ObjectSpec("circle", None, "large"),) * 4)]
    for spec in specs + [sample_spec(rng) for _ in range(100)]:
        scene = render(spec, rng, 32)
        assert [o.shape for o in scene.objects] == [o.shape for o in spec.objects]
        boxes = [o.bbox for o in scene.objects]
        for i, (o, a) in enumerate(zip(scene.objects, boxes)):
            assert 0 <= a[0] < a[2] <= 32 and 0 <= a[1] < a[3] <= 32
            assert o.size == (spec.objects[i].size or o.size) and o.color in COLORS
            for b in boxes[i + 1:]:  # the layout keeps a 2 px gap between objects
                assert a[2] + 2 <= b[0] or b[2] + 2 <= a[0] or a[3] + 2 <= b[1] or b[3] + 2 <= a[1]
            # the object is drawn: its box holds pixels of its colour
            patch = scene.image[a[1]:a[3], a[0]:a[2]].reshape(-1, 3).astype(int)
            assert (np.abs(patch - COLORS[o.color]).max(1) <= 2).any()


@pytest.mark.parametrize("spec, match", [
    (SceneSpec(()), "1 to 5 objects"),
    (SceneSpec((ObjectSpec("hexagon"),)), "unknown shape"),
    (SceneSpec((ObjectSpec("circle", "teal"),)), "unknown colour"),
    (SceneSpec((ObjectSpec("circle"), ObjectSpec("square")), ((0, "inside", 1),)), "bad relation"),
])
def test_bad_specs_raise_clear_errors(spec, match):
    with pytest.raises(RenderError, match=match):
        render(spec, np.random.default_rng(0), 32)
