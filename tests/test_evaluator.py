import json

import numpy as np
import pytest
from PIL import Image

from llmdiff.cli import main
from llmdiff.evaluation.detect import Detection, detect
from llmdiff.evaluation.evaluate import run_eval
from llmdiff.evaluation.layout import write_prompt_folder
from llmdiff.evaluation.scoring import score_attributes, score_geneval, score_spatial
from llmdiff.evaluation.validate import validate
from llmdiff.shapes.suites import load_suite
from llmdiff.shapes.world import COLORS, SHAPES, ObjectSpec, SceneSpec, render


def det(shape, box, color="red", size="small", conf=0.9):
    return Detection(shape, color, size, box, conf, 10)


@pytest.fixture(scope="module")
def validation():
    return validate(images_per_prompt=4, seed=0, progress=False)


def test_corrupted_ground_truth_scores_at_least_099_per_task(validation):
    for suite, tags in validation["true_renders"].items():
        for tag, acc in tags.items():
            assert acc >= 0.99, (suite, tag, acc)


def test_contradicting_images_score_at_most_005_per_task(validation):
    for suite, tags in validation["contradicting_renders"].items():
        for tag, acc in tags.items():
            assert acc <= 0.05, (suite, tag, acc)


def test_detector_confusions_are_rare(validation):
    for name in ("shape_confusion", "color_confusion"):
        counts = np.array(validation[name]["counts"])
        assert np.trace(counts[:, :-1]) / counts.sum() > 0.995


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("color", list(COLORS))
def test_detector_reads_clean_objects_at_any_resolution(shape, color):
    rng = np.random.default_rng(0)
    for res in (32, 64, 128):
        scene = render(SceneSpec((ObjectSpec(shape, color, "large"),)), rng, res)
        (d,) = detect(scene.image)
        assert (d.shape, d.color, d.size) == (shape, color, "large")


def test_detector_rejects_non_rgb():
    with pytest.raises(ValueError, match="RGB"):
        detect(np.zeros((32, 32), np.uint8))


# --- GenEval's clause rules on hand-made detections ---------------------------------------------

COUNT3 = {"tag": "counting", "include": [{"class": "circle", "count": 3}], "exclude": [{"class": "circle", "count": 4}]}


def test_counting_is_exact():
    three = [det("circle", (i * 10, 0, i * 10 + 8, 8)) for i in range(3)]
    assert score_geneval(three, COUNT3)[0]
    assert not score_geneval(three[:2], COUNT3)[0]
    four = three + [det("circle", (0, 20, 8, 28))]
    ok, clauses = score_geneval(four, COUNT3)
    assert not ok and clauses[-1]["kind"] == "exclude" and not clauses[-1]["passed"]


def test_colour_is_checked_on_the_most_confident_objects():
    entry = {"include": [{"class": "square", "count": 1, "color": "red"}]}
    assert score_geneval([det("square", (0, 0, 8, 8), "red", conf=0.9)], entry)[0]
    # GenEval looks only at the top-`count` objects of the class
    dets = [det("square", (0, 0, 8, 8), "blue", conf=0.95), det("square", (20, 0, 28, 8), "red", conf=0.6)]
    assert not score_geneval(dets, entry)[0]


def test_position_uses_genevals_margin():
    entry = {"include": [{"class": "square", "count": 1}, {"class": "circle", "count": 1, "position": ["left of", 0]}]}
    square = det("square", (20, 10, 30, 20))
    assert score_geneval([square, det("circle", (0, 10, 10, 20))], entry)[0]
    # centre offset 1.5 px < 0.1 x (10 + 10) summed widths: no relation
    assert not score_geneval([square, det("circle", (18, 10, 28, 20))], entry)[0]
    # mirrored
    ok, clauses = score_geneval([square, det("circle", (40, 10, 50, 20))], entry)
    assert not ok and "right of" in clauses[1]["reason"]


def test_position_outcomes_tell_mirrored_layouts_from_missing_objects():
    from llmdiff.evaluation.evaluate import markdown_summary, summarize
    from llmdiff.evaluation.scoring import position_outcome

    entry = {"include": [{"class": "square", "count": 1}, {"class": "circle", "count": 1, "position": ["left of", 0]}]}
    square = det("square", (20, 10, 30, 20))
    images = {"right": [square, det("circle", (0, 10, 10, 20))],
              "mirrored": [square, det("circle", (40, 10, 50, 20))],
              "other layout": [square, det("circle", (20, 30, 30, 40))],  # below, not beside
              "object missing": [square]}
    results = []
    for expected, dets in images.items():
        ok, clauses = score_geneval(dets, entry)
        assert position_outcome(ok, clauses) == expected
        results.append({"benchmark": "geneval", "tag": "position", "heldout": False, "correct": ok, "clauses": clauses,
                        "detections": [d.to_dict() for d in dets]})
    single = {"include": [{"class": "square", "count": 1}]}
    ok, clauses = score_geneval([square], single)
    assert position_outcome(ok, clauses) is None  # no relation asked for
    results.append({"benchmark": "geneval", "tag": "single_object", "heldout": False, "correct": ok, "clauses": clauses,
                    "detections": [square.to_dict()]})
    summary = summarize(results)
    assert summary["benchmarks"]["geneval"]["position_outcomes"] == dict.fromkeys(images, 1)
    assert summary["benchmarks"]["geneval"]["objects_per_image"] == {"position": 7 / 4, "single_object": 1}
    assert "1 right, 1 mirrored" in markdown_summary(summary)


def test_position_without_target_fails():
    entry = {"include": [{"class": "square", "count": 1}, {"class": "circle", "count": 1, "position": ["above", 0]}]}
    ok, clauses = score_geneval([det("circle", (0, 0, 8, 8))], entry)
    assert not ok and "no target" in clauses[1]["reason"]


def test_attribute_binding_needs_every_phrase():
    entry = {"include": [{"class": "circle", "count": 1, "color": "red"}, {"class": "square", "count": 1, "color": "blue"}]}
    good = [det("circle", (0, 0, 8, 8), "red"), det("square", (20, 0, 28, 8), "blue")]
    swapped = [det("circle", (0, 0, 8, 8), "blue"), det("square", (20, 0, 28, 8), "red")]
    assert score_attributes(good, entry)[0] and not score_attributes(swapped, entry)[0]


def test_spatial_score():
    entry = {"tag": "spatial", "include": [{"class": "square", "count": 1},
                                           {"class": "circle", "count": 1, "position": ["above", 0]}]}
    assert score_spatial([det("square", (10, 20, 18, 28)), det("circle", (10, 0, 18, 8))], entry)[0]
    assert not score_spatial([det("square", (10, 0, 18, 8)), det("circle", (10, 20, 18, 28))], entry)[0]


def test_spatial_outcomes_tell_mirrored_layouts_from_missing_objects():
    from llmdiff.evaluation.scoring import position_outcome

    entry = {"tag": "spatial", "include": [{"class": "square", "count": 1},
                                           {"class": "circle", "count": 1, "position": ["above", 0]}]}
    square = det("square", (10, 20, 18, 28))
    images = {"right": [square, det("circle", (10, 0, 18, 8))],
              "mirrored": [square, det("circle", (12, 40, 20, 48))],  # below it
              "other layout": [square, det("circle", (30, 22, 38, 30))],  # beside it
              "object missing": [square]}
    for expected, dets in images.items():
        ok, clauses = score_spatial(dets, entry)
        assert position_outcome(ok, clauses) == expected
    ok, clauses = score_spatial([square, det("circle", (11, 21, 19, 29))], entry)  # on top of each other
    assert position_outcome(ok, clauses) == "other layout"


# --- folders, reports and bad input -------------------------------------------------------------

def _gt_folder(tmp_path, n=6):
    rng = np.random.default_rng(0)
    entries = load_suite("geneval")[::30][:n]
    for i, e in enumerate(entries):
        imgs = [render(SceneSpec.from_dict(e["scene"]), rng, 32).image for _ in range(2)]
        write_prompt_folder(tmp_path / "imgs", i, e, imgs)
    return tmp_path / "imgs"


def test_run_eval_writes_reports(tmp_path):
    images = _gt_folder(tmp_path)
    summary = run_eval(images, tmp_path / "report", progress=False)
    assert summary["benchmarks"]["geneval"]["overall"] == 1.0
    for name in ("results.jsonl", "summary.json", "summary.md", "tasks.png"):
        assert (tmp_path / "report" / name).is_file()
    rows = [json.loads(l) for l in (tmp_path / "report" / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and all(r["clauses"] for r in rows)
    # true renders: the objects detected per image are the objects each prompt asks for
    entries, asked = load_suite("geneval")[::30], {}  # the prompts _gt_folder drew
    for r in rows:
        asked.setdefault(r["tag"], []).append(sum(c["count"] for c in entries[r["prompt_index"]]["include"]))
    assert summary["benchmarks"]["geneval"]["objects_per_image"] == pytest.approx({t: np.mean(n) for t, n in asked.items()})
    assert max(summary["benchmarks"]["geneval"]["objects_per_image"].values()) > 1


def test_partly_bad_folder_is_scored_and_bad_items_reported(tmp_path):
    images = _gt_folder(tmp_path)
    (images / "00001" / "samples" / "0000.png").write_bytes(b"not a png")
    Image.new("RGB", (40, 32)).save(images / "00002" / "samples" / "0001.png")
    (images / "00003" / "metadata.jsonl").write_text("{broken\n")
    summary = run_eval(images, tmp_path / "report", progress=False)
    errors = {e["path"].split("imgs/")[1]: e["error"] for e in summary["errors"]}
    assert "unreadable" in errors["00001/samples/0000.png"]
    assert "wrong image size 40x32" in errors["00002/samples/0001.png"]
    assert "line 1: malformed JSON" in errors["00003/metadata.jsonl"]
    assert summary["n_images"] == 12 - 1 - 1 - 2
    assert "could not be scored" in (tmp_path / "report" / "summary.md").read_text()


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["eval", "--images", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no image folder" in err
    (tmp_path / "empty").mkdir()
    assert main(["eval", "--images", str(tmp_path / "empty")]) == 2
    assert "no GenEval-layout folders" in capsys.readouterr().err


def test_cli_turns_broken_files_into_one_line_and_bugs_into_a_traceback_file(tmp_path, capsys, monkeypatch):
    from llmdiff import cli

    model = tmp_path / "model"
    model.mkdir()
    (model / "model_index.json").write_text("{not json")
    assert main(["probe", str(model), "--out", str(tmp_path / "p")]) == 2  # broken JSON: bad input, one line
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err and err.startswith("llmdiff probe: error:")

    def bug(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setitem(cli.COMMANDS, "probe", bug)
    assert main(["probe", "x"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unexpected error: ZeroDivisionError" in err
    log = err.split("traceback in ")[1].split(";")[0]
    assert "ZeroDivisionError" in open(log).read()
    with pytest.raises(ZeroDivisionError):
        main(["--debug", "probe", "x"])


def test_cli_shapes_gt_then_eval(tmp_path, capsys):
    out = tmp_path / "gt"
    assert main(["shapes", "gt", "--suite", "compbench", "--out", str(out), "--images-per-prompt", "1", "--corrupt"]) == 0
    assert main(["eval", "--images", str(out), "--out", str(tmp_path / "r")]) == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["benchmarks"]["compbench"]["overall"] >= 0.97
    assert main(["shapes", "gt", "--suite", "compbench", "--out", str(tmp_path / "bad"), "--images-per-prompt", "1",
                 "--contradict"]) == 0
    assert main(["eval", "--images", str(tmp_path / "bad"), "--out", str(tmp_path / "rb")]) == 0
    summary = json.loads((tmp_path / "rb" / "summary.json").read_text())
    assert summary["benchmarks"]["compbench"]["overall"] <= 0.05


def test_cli_render_and_prompts(tmp_path, capsys):
    assert main(["shapes", "render", "--n", "4", "--out", str(tmp_path / "g.png")]) == 0
    assert (tmp_path / "g.png").stat().st_size > 1000
    capsys.readouterr()
    assert main(["shapes", "prompts", "--suite", "position_bias"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 120 and json.loads(lines[0])["benchmark"] == "position_bias"
