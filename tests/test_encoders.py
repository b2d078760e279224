import logging

import pytest
import torch

from llmdiff.encoders import EncoderConfig, TextInput
from llmdiff.encoders.base import drop_instruction
from llmdiff.encoders.llm import PROMPT, DecoderPromptEncoder, parse_layers
from llmdiff.errors import LLMDiffError

PROMPTS = ["a red circle to the left of a blue square", "three green triangles", "a disc",
           "there is a small yellow plus sign, a pink box and a large brown triangle on a plain background"]


def make(lm, **cfg):
    model, tok = lm
    return DecoderPromptEncoder(EncoderConfig(model="tiny", **cfg), model=model, tokenizer=tok)


def close(a, b, rel=1e-5):
    scale = max(a.abs().max().item(), 1e-6)
    torch.testing.assert_close(a, b, rtol=rel, atol=rel * scale)


def test_text_input_trims_selects_and_drops_rows_with_their_prompt_masks():
    # rows as a cache holds left-padded batches: padding before the tokens, then up to the longest caption
    mask = torch.tensor([[0, 0, 1, 1, 0, 0, 0], [0, 1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0]], dtype=torch.bool)
    prompt = mask & (torch.arange(7) > 1)  # the first two positions hold the instruction
    text = TextInput(torch.randn(3, 2, 7, 5) * mask[:, None, :, None], mask, prompt)
    trimmed = text.trimmed()
    assert trimmed.mask.shape == (3, 4) and torch.equal(trimmed.mask.sum(1), mask.sum(1))  # no token lost
    assert torch.equal(trimmed.features, text.features[..., :4, :]) and torch.equal(trimmed.prompt_mask, prompt[:, :4])
    picked = text.select(torch.tensor([2, 0]))
    assert torch.equal(picked.mask, mask[[2, 0]]) and torch.equal(picked.prompt_mask, prompt[[2, 0]])
    dropped = text.dropped(torch.tensor([False, True, False]))
    assert not dropped.mask[1].any() and not dropped.prompt_mask[1].any()
    assert torch.equal(dropped.mask[[0, 2]], mask[[0, 2]]) and torch.equal(dropped.prompt_mask[[0, 2]], prompt[[0, 2]])
    both = TextInput.cat([text, text.empty_like()])
    assert both.features.shape == (6, 2, 7, 5) and not both.mask[3:].any() and torch.equal(both.prompt_mask[:3], prompt)
    plain = TextInput(torch.ones(1, 2, 9, 5), torch.ones(1, 9, dtype=torch.bool))  # longer, no prompt mask
    mixed = TextInput.cat([text, plain])
    assert mixed.features.shape == (4, 2, 9, 5) and torch.equal(mixed.mask[:3, :7], mask)
    assert not mixed.mask[:3, 7:].any()
    assert torch.equal(mixed.prompt_mask[3], plain.mask[0]) and (mixed.features[:3, :, 7:] == 0).all()
    half = text.to(dtype=torch.float16)
    assert half.features.dtype == torch.float16 and half.mask.dtype == torch.bool


def test_parse_layers():
    assert parse_layers("last", 30) == [30]
    assert parse_layers(-3, 30) == [28]
    assert parse_layers([0, -1, 10], 30) == [0, 10, 30]
    assert parse_layers("all", 2) == [0, 1, 2]
    with pytest.raises(LLMDiffError, match="out of range"):
        parse_layers(31, 30)
    with pytest.raises(LLMDiffError, match="layers must be"):
        parse_layers("middle", 30)


@pytest.mark.parametrize("layers", ["last", -2, -3, [1, -1]])
def test_early_exit_matches_the_full_forward(tiny_lm, layers):
    model, tok = tiny_lm
    enc = make(tiny_lm, layers=layers)
    out = enc.encode(PROMPTS[:2])
    for b, p in enumerate(PROMPTS[:2]):
        ids, roles = enc.token_layout(p)
        hs = model(torch.tensor([ids]), output_hidden_states=True).hidden_states  # HF: last entry is normed
        keep = torch.tensor(roles) == PROMPT
        want = torch.stack([hs[i][0, keep] for i in enc.layer_ids])
        got = out.features[b] if out.features.dim() == 4 else out.features[b][None]
        close(got[:, : int(keep.sum())], want.squeeze(0) if got.dim() == 2 else want)


def test_early_exit_runs_only_the_blocks_it_needs(tiny_bpe_llama):
    model, _ = tiny_bpe_llama
    calls = []
    hooks = [l.register_forward_hook(lambda m, a, o, k=k: calls.append(k)) for k, l in enumerate(model.layers)]
    try:
        make(tiny_bpe_llama, layers=-3).encode(PROMPTS)  # hidden state 1 of 3: one block
    finally:
        for h in hooks:
            h.remove()
    assert set(calls) == {0}


def test_kept_tokens_decode_exactly_to_the_prompt(tiny_lm):
    check_kept_tokens(tiny_lm, chat=False)


def test_kept_tokens_decode_exactly_to_the_prompt_in_a_chat_template(tiny_bpe_llama):
    check_kept_tokens(tiny_bpe_llama, chat=True)  # SmolLM2's tokenizer ships a chat template


def check_kept_tokens(tiny_lm, chat):
    model, tok = tiny_lm
    enc = make(tiny_lm, instruction="default", chat_template=chat, keep_instruction=True)
    if chat:
        assert enc.suffix_ids  # the template continues after the prompt
    assert len(enc.prefix_ids) > 10  # the instruction is really there
    for p in PROMPTS:
        ids, roles = enc.token_layout(p)
        prompt_ids = [i for i, r in zip(ids, roles) if r == PROMPT]
        assert tok.decode(prompt_ids).strip() == p
    # in one padded batch, the prompt-masked features are exactly the default (dropped) output
    kept = enc.encode(PROMPTS)
    dropped = make(tiny_lm, instruction="default", chat_template=chat).encode(PROMPTS)
    f, m = drop_instruction(kept.features, kept.mask, kept.prompt_mask)
    assert torch.equal(m, dropped.mask)
    close(f, dropped.features)
    for b, p in enumerate(PROMPTS):
        assert int(kept.prompt_mask[b].sum()) == len(tok(p, add_special_tokens=False)["input_ids"])


@pytest.mark.parametrize("keep,echo", [(False, False), (True, False), (False, True), (True, True)])
def test_prefix_cache_equals_the_full_pass(tiny_lm, keep, echo):
    cached = make(tiny_lm, instruction="default", keep_instruction=keep, echo=echo).encode(PROMPTS)
    full = make(tiny_lm, instruction="default", keep_instruction=keep, prefix_cache=False, echo=echo).encode(PROMPTS)
    assert torch.equal(cached.mask, full.mask)
    close(cached.features, full.features)


def test_echo_lets_the_subject_token_see_the_relation(tiny_bpe_llama):
    left, right = "a red circle to the left of a blue square", "a red circle to the right of a blue square"
    n = len(tiny_bpe_llama[1]("a red circle to the", add_special_tokens=False)["input_ids"])
    for echo in (False, True):
        enc = make(tiny_bpe_llama, instruction="default", echo=echo)
        a, b = enc.encode([left]), enc.encode([right])
        assert a.mask.shape[1] == len(tiny_bpe_llama[1](left, add_special_tokens=False)["input_ids"])
        same = torch.equal(a.features[:, :n], b.features[:, :n])
        # a causal LLM's tokens before "left"/"right" cannot tell the prompts apart; the echoed copy's can
        assert same != echo
    keys = [make(tiny_bpe_llama, echo=e).cache_key() for e in (False, True)]
    assert "echo" not in keys[0] and keys[1]["echo"] is True


def test_prefix_cache_computes_only_prompt_tokens(tiny_bpe_llama):
    model, _ = tiny_bpe_llama
    enc = make(tiny_bpe_llama, instruction="default")
    enc.encode(PROMPTS[:1])  # builds the prefix cache
    seen = []
    h = model.layers[0].register_forward_hook(lambda m, a, k, o: seen.append((a[0] if a else k["hidden_states"]).shape[1]),
                                              with_kwargs=True)
    try:
        enc.encode(PROMPTS)
    finally:
        h.remove()
    longest = max(len(enc.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in PROMPTS)
    assert max(seen) == longest < longest + len(enc.prefix_ids)


@pytest.mark.parametrize("instruction", [None, "default"])
def test_left_and_right_padding_agree(tiny_lm, instruction):
    right = make(tiny_lm, instruction=instruction).encode(PROMPTS)
    left = make(tiny_lm, instruction=instruction, padding_side="left").encode(PROMPTS)
    assert torch.equal(right.mask, left.mask)
    close(right.features, left.features)


def test_padding_invariance(tiny_lm):
    enc = make(tiny_lm, instruction="default")
    batch = enc.encode(PROMPTS)
    for b, p in enumerate(PROMPTS):
        alone = enc.encode([p])
        n = int(alone.mask.sum())
        assert int(batch.mask[b].sum()) == n and not batch.mask[b, n:].any()
        close(batch.features[b, :n], alone.features[0, :n])
        assert (batch.features[b, n:] == 0).all()


def test_repeat_keeps_features_and_masks_in_the_same_order(tiny_lm):
    out = make(tiny_lm, instruction="default", keep_instruction=True).encode(PROMPTS[:3])
    rep = out.repeat(4)
    assert rep.features.shape[0] == 12
    for i in range(3):
        for j in range(4):
            assert torch.equal(rep.features[4 * i + j], out.features[i])
            assert torch.equal(rep.mask[4 * i + j], out.mask[i])
            assert torch.equal(rep.prompt_mask[4 * i + j], out.prompt_mask[i])


def test_blockwise_difference_by_hand():
    """One block with q = k = 0 (uniform causal attention) and no MLP: the difference is known in closed form.

    With context, token d's attention output is o(mean_{j<=d} v_j); alone it is o(v_d). So
    D = W_o (mean_{j<=d} v_j - v_d) with v_j = W_v norm(h_j): zero for the first token.
    """
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=50, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    model = LlamaModel(cfg).eval()
    layer = model.layers[0]
    with torch.no_grad():
        layer.self_attn.q_proj.weight.zero_()
        layer.self_attn.k_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()

    class Tok:  # token ids are the characters' codes modulo the vocabulary
        pad_token_id, eos_token, unk_token, chat_template = 0, None, None, None

        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": [ord(c) % 49 + 1 for c in text]}

    enc = DecoderPromptEncoder(EncoderConfig(model="hand", layers="all", mode="blockwise"), model=model, tokenizer=Tok())
    out = enc.encode(["abcdef"])
    assert out.features.shape == (1, 2, 6, 8)  # h_0 and D_1
    h0 = model.embed_tokens(torch.tensor([[ord(c) % 49 + 1 for c in "abcdef"]]))[0]
    v = layer.self_attn.v_proj(layer.input_layernorm(h0))
    mean = torch.cumsum(v, 0) / torch.arange(1, 7)[:, None]
    want = layer.self_attn.o_proj(mean - v)
    close(out.features[0, 0], h0)
    close(out.features[0, 1], want)
    assert out.features[0, 1, 0].abs().max() < 1e-6


def test_blockwise_groups_sum_blocks(tiny_bpe_llama):
    per_block = make(tiny_bpe_llama, layers="all", mode="blockwise").encode(PROMPTS[:2])
    grouped = make(tiny_bpe_llama, layers="all", mode="blockwise", block_groups=2).encode(PROMPTS[:2])
    assert per_block.features.shape[1] == 4 and grouped.features.shape[1] == 3
    close(grouped.features[:, 1], per_block.features[:, 1:3].sum(1))
    close(grouped.features[:, 2], per_block.features[:, 3])


def test_normalized_layers_have_unit_rms(tiny_lm):
    out = make(tiny_lm, layers="all", normalize=True).encode(PROMPTS[:2])
    rms = out.features.pow(2).mean(-1).sqrt()[out.mask[:, None, :].expand(-1, out.features.shape[1], -1)]
    close(rms, torch.ones_like(rms), rel=1e-2)  # eps in the norm matters for tiny activations


# --- bad input -----------------------------------------------------------------------------------

def test_empty_prompt_is_the_unconditional_prompt(tiny_lm):
    for instruction in (None, "default"):
        out = make(tiny_lm, instruction=instruction).encode(["", "a red circle", ""])
        assert not out.mask[0].any() and not out.mask[2].any() and out.mask[1].any()
        assert (out.features[0] == 0).all() and torch.isfinite(out.features).all()
    only_empty = make(tiny_lm).encode([""])
    assert only_empty.mask.shape[1] == 0 or not only_empty.mask.any()


def test_long_prompt_is_truncated_with_one_warning(tiny_lm, caplog):
    enc = make(tiny_lm, max_length=5)
    with caplog.at_level(logging.WARNING):
        out = enc.encode(PROMPTS)
    warnings = [r for r in caplog.records if "max_length=5" in r.getMessage()]
    assert len(warnings) == 1
    n_tokens = len(enc.tokenizer(PROMPTS[3], add_special_tokens=False)["input_ids"])
    assert f"up to {n_tokens - 5} tokens cut (prompt 3)" in warnings[0].getMessage()  # prompt 3 is the longest
    assert out.mask.sum(1).max() == 5
    with pytest.raises(LLMDiffError, match="max_length=5"):
        make(tiny_lm, max_length=5, strict=True).encode(PROMPTS)


@pytest.mark.parametrize("bad, match", [([None], "prompt 0 is NoneType"), (["ok", 3], "prompt 1 is int"), ([], "no prompts")])
def test_non_string_prompts_are_refused(tiny_bpe_llama, bad, match):
    with pytest.raises(LLMDiffError, match=match):
        make(tiny_bpe_llama).encode(bad)


def test_unknown_model_names_list_the_known_ones():
    from llmdiff.encoders.models import resolve_model

    with pytest.raises(LLMDiffError, match=r"unknown model 'smollm9'.*smollm2-135m, gemma3-270m, minilm-l6.*local model folder"):
        resolve_model("smollm9")
    with pytest.raises(LLMDiffError, match="no GGUF file"):
        resolve_model("/nonexistent/model.gguf")


def test_config_errors():
    with pytest.raises(LLMDiffError, match="mode"):
        EncoderConfig(mode="sideways")
    with pytest.raises(LLMDiffError, match="padding_side"):
        EncoderConfig(padding_side="middle")
