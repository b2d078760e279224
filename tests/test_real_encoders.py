"""Integration tests on the models that ship inside pip packages (converted once into the user cache)."""

import pytest
import torch

from llmdiff.encoders import EncoderConfig, load_encoder
from llmdiff.encoders.bidirectional import BidirectionalPromptEncoder
from llmdiff.encoders.llm import PROMPT, DecoderPromptEncoder
from llmdiff.errors import LLMDiffError

pytestmark = pytest.mark.integration

PROMPTS = ["a red circle to the left of a blue square", "", "three green triangles on a plain background, flat colors"]


def close(a, b, rel=1e-5):
    torch.testing.assert_close(a, b, rtol=rel, atol=rel * max(a.abs().max().item(), 1e-6))


@pytest.fixture(scope="module")
def smollm2():
    return load_encoder(EncoderConfig(model="smollm2-135m", layers=-3, instruction="default"))


@pytest.fixture(scope="module")
def gemma():
    return load_encoder(EncoderConfig(model="gemma3-270m", layers=-3, instruction="default"))


def test_smollm2_early_exit_matches_the_peers_full_forward(smollm2):
    from transformers import AutoModelForCausalLM

    from llmdiff.encoders.models import resolve_model

    assert isinstance(smollm2, DecoderPromptEncoder) and smollm2.depth == 28 and smollm2.n_blocks == 30
    lm = AutoModelForCausalLM.from_pretrained(resolve_model("smollm2-135m").path)
    out = smollm2.encode(PROMPTS)
    ids, roles = smollm2.token_layout(PROMPTS[0])
    with torch.no_grad():
        hs = lm(torch.tensor([ids]), output_hidden_states=True).hidden_states
    keep = torch.tensor(roles) == PROMPT
    close(out.features[0, : int(keep.sum())], hs[-3][0, keep])


@pytest.mark.parametrize("which", ["smollm2", "gemma"])
def test_prefix_cache_equals_the_full_pass_on_real_models(which, request):
    enc = request.getfixturevalue(which)
    full = DecoderPromptEncoder(enc.config.replace(prefix_cache=False), model=enc.core, tokenizer=enc.tokenizer)
    a, b = enc.encode(PROMPTS), full.encode(PROMPTS)
    assert torch.equal(a.mask, b.mask)
    close(a.features, b.features)


@pytest.mark.parametrize("which, chat", [("smollm2", False), ("smollm2", True), ("gemma", False)])
def test_prompt_tokens_decode_to_the_prompt_on_real_tokenizers(which, chat, request):
    enc = request.getfixturevalue(which)
    enc = DecoderPromptEncoder(enc.config.replace(chat_template=chat), model=enc.core, tokenizer=enc.tokenizer)
    for p in PROMPTS:
        ids, roles = enc.token_layout(p)
        assert enc.tokenizer.decode([i for i, r in zip(ids, roles) if r == PROMPT]).strip() == p
    assert len(enc.prefix_ids) >= 20


def test_minilm_is_a_bidirectional_baseline():
    enc = load_encoder(EncoderConfig(model="minilm-l6", layers="last"))
    assert isinstance(enc, BidirectionalPromptEncoder) and enc.hidden_size == 384
    out = enc.encode(PROMPTS)
    n_words = len(enc.tokenizer(PROMPTS[0], add_special_tokens=False)["input_ids"])
    assert int(out.mask[0].sum()) == n_words + 2  # [CLS] ... [SEP]
    assert not out.mask[1].any() and (out.features[1] == 0).all()
    right_alone = enc.encode(PROMPTS[:1])
    close(out.features[0, : n_words + 2], right_alone.features[0, : n_words + 2])
    with pytest.raises(LLMDiffError, match="echo is for decoder-only LLMs"):
        load_encoder(EncoderConfig(model="minilm-l6", layers="last", echo=True))


def test_gemmas_tokenizer_read_directly_gives_the_ids_transformers_gives(gemma):
    """Gemma's tokenizer is read from its tokenizer.json by the tokenizers library (load_tokenizer: 2.5x faster than
    transformers' GemmaTokenizer, which rebuilds it): the ids of every suite prompt, with and without special tokens,
    and of the instruction template must be the ones AutoTokenizer gives."""
    from transformers import AutoTokenizer

    from llmdiff.encoders.models import resolve_model
    from llmdiff.shapes.suites import SUITES, load_suite

    reference = AutoTokenizer.from_pretrained(resolve_model("gemma3-270m").path)
    direct = gemma.tokenizer
    assert type(direct).__name__ != type(reference).__name__ == "GemmaTokenizer"  # the direct path was taken
    prompts = [e["prompt"] for suite in SUITES for e in load_suite(suite)] + ["", "  two   spaces", "ünïcode ✓"]
    for prompt in prompts:
        assert direct(prompt)["input_ids"] == reference(prompt)["input_ids"], prompt
        assert direct(prompt, add_special_tokens=False)["input_ids"] == \
            reference(prompt, add_special_tokens=False)["input_ids"], prompt
    assert gemma.prefix_ids == [reference.bos_token_id] + reference(
        gemma.config.instruction_text + "\n", add_special_tokens=False)["input_ids"]
    assert (direct.pad_token_id, direct.eos_token_id, direct.bos_token_id) == \
        (reference.pad_token_id, reference.eos_token_id, reference.bos_token_id)
