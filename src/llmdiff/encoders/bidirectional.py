"""Encoder-only models (BERT-style, e.g. all-MiniLM-L6-v2) as prompt encoders: the CLIP/T5 stand-in.

Same interface and mask convention as the LLM encoders. Special tokens ([CLS], [SEP]) are kept,
as CLIP and T5 pipelines keep theirs; an empty prompt encodes as an all-masked row.
"""

from __future__ import annotations

import torch

from ..errors import LLMDiffError
from .base import EncoderConfig, PromptEncoder, TextInput, pad_stack, rms_normalize, special_tokens_around
from .llm import parse_layers


class BidirectionalPromptEncoder(PromptEncoder):
    def __init__(self, config: EncoderConfig, device: str | torch.device = "cpu", model=None, tokenizer=None,
                 model_id: str | None = None):
        if config.mode != "hidden":
            raise LLMDiffError("block-wise (LLMDiff) encoding needs a decoder-only LLM; encoder models give hidden states")
        if config.instruction_text or config.chat_template:
            raise LLMDiffError("instructions are for decoder-only LLMs; set instruction: none for encoder models")
        if config.echo:
            raise LLMDiffError("echo is for decoder-only LLMs (an encoder model already reads the whole prompt); "
                               "set echo: false for encoder models")
        self.config = config
        if model is None:
            from .models import load_pretrained

            model, tokenizer, model_id = load_pretrained(config.model, config.dtype, revision=config.revision)
        self.model = model.eval().requires_grad_(False).to(device)
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.model_id = model_id or "in-memory"
        self.layer_ids = parse_layers(config.layers, int(model.config.num_hidden_layers))

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def n_outputs(self) -> int:
        return len(self.layer_ids)

    @torch.inference_mode()
    def encode(self, prompts, batch_size: int = 64) -> TextInput:
        body = self.prompt_ids(prompts)
        tok = self.tokenizer
        lead, trail = special_tokens_around(tok)
        ids = [lead + b + trail if b else [] for b in body]
        feats, masks = [], []
        for s in range(0, len(ids), batch_size):
            chunk = ids[s:s + batch_size]
            length = max(1, max(len(x) for x in chunk))
            input_ids = torch.full((len(chunk), length), tok.pad_token_id, dtype=torch.long)
            mask = torch.zeros(len(chunk), length, dtype=torch.bool)
            for i, x in enumerate(chunk):
                sl = slice(0, len(x)) if self.config.padding_side == "right" else slice(length - len(x), length)
                input_ids[i, sl] = torch.tensor(x, dtype=torch.long)
                mask[i, sl] = True
            out = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.long().to(self.device),
                             output_hidden_states=True)
            f = torch.stack([out.hidden_states[i] for i in self.layer_ids], 1)  # (B, n, L, D)
            if self.config.normalize:
                f = rms_normalize(f)
            f = torch.where(mask.to(self.device)[:, None, :, None], f, torch.zeros((), dtype=f.dtype, device=f.device))
            feats += list(f[:, 0] if f.shape[1] == 1 else f)
            masks += list(mask.to(self.device))
        length = max(m.shape[0] for m in masks)
        return TextInput(pad_stack(feats, length, feats[0].dim() - 2), pad_stack(masks, length, 0))
