"""Decoder-only LLMs as prompt encoders (LI-DiT's instruction insertion, LLMDiff's block-wise encoding).

* **Early exit.** The decoder stack is cut after the deepest block the layer spec needs, so
  ``layers=-3`` of 30 blocks runs 28 blocks and no LM head.
* **Instruction insertion** (LI-DiT). ``[template prefix][prompt][template suffix]``; the
  prefix and suffix are tokenized on their own, so where the prompt starts is computed from
  the tokenizer for every model and template, never hard-coded.
* **Prefix cache.** A causal LM's states for the instruction do not depend on what follows:
  its key/value cache is computed once and expanded to every batch, with position ids
  continuing after it; only prompt (and suffix) tokens are computed.
* **Block-wise differences** (LLMDiff). For every block t, the block's output for each token
  with its context minus its output when the same input token attends only to itself:
  ``D_t = S_t(x^{t-1} | x^t, x_<d) - S_t(x^{t-1} | x^t)``. A single token attending to itself
  is the token run as a length-1 sequence, which is what the second call of each block does.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from ..errors import LLMDiffError
from .base import (
    EncoderConfig, PromptEncoder, TextInput, drop_instruction, pad_stack, rms_normalize, special_tokens_around,
)

PAD, PREFIX, PROMPT, SUFFIX = 0, 1, 2, 3  # token roles in an assembled sequence
_PLACEHOLDER = "\u2063PROMPT\u2063"


def parse_layers(spec, n_blocks: int) -> list[int]:
    """Indices into the hidden states 0..n_blocks (0 = embeddings, n_blocks = final, normed output)."""
    if spec == "last":
        return [n_blocks]
    if spec == "all":
        return list(range(n_blocks + 1))
    items = [spec] if isinstance(spec, int) else list(spec) if isinstance(spec, (list, tuple)) else None
    if not items or not all(isinstance(i, int) for i in items):
        raise LLMDiffError(f"layers must be 'last', 'all', an index such as -3, or a list of indices; got {spec!r}")
    out = []
    for i in items:
        j = i if i >= 0 else n_blocks + 1 + i
        if not 0 <= j <= n_blocks:
            raise LLMDiffError(f"layer {i} is out of range for a model with {n_blocks} blocks "
                               f"(hidden states 0..{n_blocks}, or -1..-{n_blocks + 1})")
        out.append(j)
    return sorted(set(out))


@contextmanager
def truncated(core: nn.Module, depth: int):
    """Run only the first `depth` decoder blocks (the modules are shared, nothing is copied)."""
    full = core.layers
    core.layers = nn.ModuleList(list(full)[:depth])
    try:
        yield
    finally:
        core.layers = full


class _Recorder:
    """Forward hooks that record every block's input and output (and, for LLMDiff, its context-free output)."""

    def __init__(self, layers, blockwise: bool):
        self.hidden: list[torch.Tensor] = []  # h_0 (block 0 input), then each block's output
        self.diffs: list[torch.Tensor] = []  # D_t per block
        self.blockwise = blockwise
        self._inside = False
        self.handles = [layers[0].register_forward_pre_hook(self._first_input, with_kwargs=True)] if layers else []
        self.handles += [l.register_forward_hook(self._output, with_kwargs=True) for l in layers]

    def _first_input(self, module, args, kwargs):
        if not self._inside:
            self.hidden.append(args[0] if args else kwargs["hidden_states"])

    def _output(self, module, args, kwargs, output):
        if self._inside:
            return
        out = output[0] if isinstance(output, tuple) else output
        self.hidden.append(out)
        if self.blockwise:
            h = args[0] if args else kwargs["hidden_states"]
            self.diffs.append(out - self._alone(module, h, kwargs))

    def _alone(self, module, h, kwargs):
        """The block's output when every token sees only itself: tokens as length-1 sequences."""
        b, n, d = h.shape
        kw = {}
        if kwargs.get("position_embeddings") is not None:
            kw["position_embeddings"] = tuple(t.expand(b, n, t.shape[-1]).reshape(b * n, 1, -1)
                                              for t in kwargs["position_embeddings"])
        if kwargs.get("position_ids") is not None:
            kw["position_ids"] = kwargs["position_ids"].expand(b, n).reshape(b * n, 1)
        self._inside = True
        try:
            out = module(h.reshape(b * n, 1, d), attention_mask=None, **kw)
        finally:
            self._inside = False
        return (out[0] if isinstance(out, tuple) else out).reshape(b, n, d)

    def remove(self):
        for h in self.handles:
            h.remove()


class DecoderPromptEncoder(PromptEncoder):
    """A frozen causal LM as a prompt encoder; see the module docstring for what it computes."""

    def __init__(self, config: EncoderConfig, device: str | torch.device = "cpu", model: nn.Module | None = None,
                 tokenizer=None, model_id: str | None = None):
        self.config = config
        if model is None:
            from .models import load_pretrained

            depth = lambda n: self._depth(parse_layers(config.layers, n), n)  # noqa: E731
            model, tokenizer, model_id = load_pretrained(config.model, config.dtype, depth=depth, revision=config.revision)
        self.core = getattr(model, "model", model) if not hasattr(model, "layers") else model
        if not hasattr(self.core, "layers"):
            raise LLMDiffError(f"{config.model!r} is not a decoder-only LM with a `layers` stack")
        self.core.eval().requires_grad_(False).to(device)
        self.device = torch.device(device)
        self.tokenizer = tokenizer
        self.model_id = model_id or "in-memory"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        self.n_blocks = getattr(self.core.config, "full_num_hidden_layers", len(self.core.layers))
        self.layer_ids = parse_layers(config.layers, self.n_blocks)
        self.depth = self._depth(self.layer_ids, self.n_blocks)
        if config.mode == "blockwise" and self.depth == 0:
            raise LLMDiffError("blockwise encoding needs at least one block; use layers='all' or a positive depth")
        self.prefix_ids, self.suffix_ids = self._template_ids()
        self._prefix_state = None

    def _depth(self, layer_ids: list[int], n_blocks: int) -> int:
        """Decoder blocks that must run: up to the deepest layer asked for (every block for block-wise 'all')."""
        return n_blocks if self.config.mode == "blockwise" and self.config.layers == "all" else max(layer_ids)

    # --- template ---------------------------------------------------------------------------------

    def _template_ids(self) -> tuple[list[int], list[int]]:
        """Token ids of the text before and after the prompt, for this tokenizer and template."""
        text = self.config.instruction_text
        tok = self.tokenizer
        if self.config.chat_template:
            if not tok.chat_template:
                raise LLMDiffError(f"{self.config.model!r} has no chat template; set chat_template: false")
            content = f"{text}\n{_PLACEHOLDER}" if text else _PLACEHOLDER
            rendered = tok.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                               add_generation_prompt=True)
            before, after = rendered.split(_PLACEHOLDER)
            return (tok(before, add_special_tokens=False)["input_ids"],
                    tok(after, add_special_tokens=False)["input_ids"] if after else [])
        prefix = special_tokens_around(tok)[0]
        if text:
            prefix += tok(text + "\n", add_special_tokens=False)["input_ids"]
        return prefix, []

    # --- encoding ---------------------------------------------------------------------------------

    @property
    def hidden_size(self) -> int:
        return int(self.core.config.hidden_size)

    @property
    def n_outputs(self) -> int:
        if self.config.mode == "blockwise":
            return 1 + (self.config.block_groups or self.depth)
        return len(self.layer_ids)

    @torch.inference_mode()
    def encode(self, prompts, batch_size: int = 64) -> TextInput:
        ids = self.prompt_ids(prompts)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths share a batch
        feats, masks, pmasks = [None] * len(ids), [None] * len(ids), [None] * len(ids)
        for s in range(0, len(order), batch_size):
            chunk = order[s:s + batch_size]
            f, m, pm = self._encode_batch([ids[i] for i in chunk])
            for k, i in enumerate(chunk):
                feats[i], masks[i], pmasks[i] = f[k], m[k], None if pm is None else pm[k]
        length = max(m.shape[0] for m in masks)
        seq_dim = feats[0].dim() - 2
        return TextInput(pad_stack(feats, length, seq_dim), pad_stack(masks, length, 0),
                         None if pmasks[0] is None else pad_stack(pmasks, length, 0))

    def cache_key(self) -> dict:
        # the template's token ids: a changed tokenizer or instruction text changes the features
        return {**super().cache_key(), "prefix_ids": self.prefix_ids, "suffix_ids": self.suffix_ids}

    def token_layout(self, prompt: str) -> tuple[list[int], list[int]]:
        """The token ids the LLM reads for one prompt and each token's role (PREFIX, PROMPT, SUFFIX)."""
        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"][: self.config.max_length] if prompt else []
        row = self._row(ids, with_prefix=True)
        return [t for t, _ in row], [r for _, r in row]

    def _row(self, ids: list[int], with_prefix: bool) -> list[tuple[int, int]]:
        """(token id, role) of one prompt's sequence: the instruction prefix (unless its cache is used), with echo
        the prompt's first copy as context like the instruction (dropped unless keep_instruction), the prompt, the
        template suffix."""
        context = (self.prefix_ids if with_prefix else []) + (ids if self.config.echo else [])
        return [(t, PREFIX) for t in context] + [(t, PROMPT) for t in ids] + [(t, SUFFIX) for t in self.suffix_ids]

    def _assemble(self, batch: list[list[int]], with_prefix: bool):
        """Padded input ids and token roles (B, L) for one batch."""
        rows = [self._row(p, with_prefix) for p in batch]
        length = max(len(r) for r in rows)
        pad = [(self.tokenizer.pad_token_id, PAD)]
        rows = [r + pad * (length - len(r)) if self.config.padding_side == "right" else pad * (length - len(r)) + r
                for r in rows]
        t = torch.tensor(rows, dtype=torch.long).reshape(len(rows), length, 2)
        return t[..., 0].to(self.device), t[..., 1].to(self.device)

    def _run(self, input_ids, attention_mask, position_ids, past=None):
        if self.depth == 0:  # only the embeddings are asked for
            rec = _Recorder([], False)
            rec.hidden.append(self.core.embed_tokens(input_ids))
            return rec
        rec = _Recorder(self.core.layers[: self.depth], self.config.mode == "blockwise")
        try:
            with truncated(self.core, self.depth):
                self.core(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          past_key_values=past, use_cache=past is not None)
        finally:
            rec.remove()
        return rec

    def _outputs(self, rec: _Recorder) -> torch.Tensor:
        """(B, n, L, D) from the recorded states: selected layers, or h_0 and the grouped block differences."""
        if self.config.mode == "blockwise":
            diffs = torch.stack(rec.diffs, 1)  # (B, T, L, D)
            if self.config.block_groups:
                groups = torch.tensor_split(diffs, self.config.block_groups, dim=1)
                diffs = torch.stack([g.sum(1) for g in groups], 1)
            return torch.cat([rec.hidden[0][:, None], diffs], 1)
        hs = [self.core.norm(rec.hidden[i]) if i == self.n_blocks else rec.hidden[i] for i in self.layer_ids]
        out = torch.stack(hs, 1)
        return rms_normalize(out) if self.config.normalize else out

    def _prefix(self):
        """Key/value cache and outputs of the template prefix, computed once."""
        if self._prefix_state is None:
            from transformers import DynamicCache

            ids = torch.tensor([self.prefix_ids], device=self.device)
            cache = DynamicCache(config=self.core.config)
            rec = self._run(ids, torch.ones_like(ids), torch.arange(len(self.prefix_ids), device=self.device)[None], cache)
            kv = [(layer.keys, layer.values) for layer in cache.layers[: self.depth]]
            self._prefix_state = (kv, self._outputs(rec))
        return self._prefix_state

    def _encode_batch(self, batch: list[list[int]]):
        """Features (B, [n,] L, D), mask (B, L) and prompt mask for one batch of prompt token lists."""
        use_cache = self.config.prefix_cache and len(self.prefix_ids) > 0
        input_ids, roles = self._assemble(batch, with_prefix=not use_cache)
        b, length = roles.shape
        valid = roles != PAD
        offset = len(self.prefix_ids) if use_cache else 0
        positions = (valid.long().cumsum(1) - 1).clamp(min=0) + offset
        if length == 0 or not valid.any():
            feats = torch.zeros(b, self.n_outputs, 0, self.hidden_size, device=self.device)
        elif use_cache:
            from transformers import DynamicCache

            kv, _ = self._prefix()
            past = DynamicCache(ddp_cache_data=[(k.expand(b, -1, -1, -1).contiguous(), v.expand(b, -1, -1, -1).contiguous())
                                                for k, v in kv], config=self.core.config)
            mask2d = torch.cat([torch.ones(b, offset, dtype=torch.long, device=self.device), valid.long()], 1)
            feats = self._outputs(self._run(input_ids, mask2d, positions, past))
        else:
            feats = self._outputs(self._run(input_ids, valid.long(), positions))
        if use_cache and self.config.keep_instruction:  # put the cached prefix's own features in front
            _, prefix_feats = self._prefix()
            feats = torch.cat([prefix_feats.expand(b, -1, -1, -1), feats], 2)
            roles = torch.cat([torch.full((b, offset), PREFIX, device=self.device), roles], 1)
            valid = roles != PAD
        feats = torch.where(valid[:, None, :, None], feats, torch.zeros((), dtype=feats.dtype, device=feats.device))
        prompt_mask = roles == PROMPT
        if not self.config.keep_instruction:
            feats, valid = drop_instruction(feats, valid, prompt_mask)
            prompt_mask = None
        if feats.shape[1] == 1:
            feats = feats[:, 0]
        return feats, valid, prompt_mask
