"""Prompt encoders: decoder-only LLMs (and an encoder baseline) turned into a ``TextInput`` (features, masks)."""

from __future__ import annotations

import torch

from ..errors import LLMDiffError

from .base import DEFAULT_INSTRUCTION, EncoderConfig, PromptEncoder, TextInput, drop_instruction

__all__ = ["DEFAULT_INSTRUCTION", "EncoderConfig", "PromptEncoder", "TextInput", "drop_instruction", "load_encoder"]


def load_encoder(config: EncoderConfig, device: str | torch.device = "cpu", model=None, tokenizer=None) -> PromptEncoder:
    """The right encoder for the model: causal LMs read prompts as decoders, others as bidirectional encoders.

    ``model`` and ``tokenizer``: a transformers model and its tokenizer already loaded (with whatever dtype,
    device map or quantisation the caller chose) to use instead of loading ``config.model``."""
    from .bidirectional import BidirectionalPromptEncoder
    from .llm import DecoderPromptEncoder
    from .models import is_causal_lm, resolve_model

    if (model is None) != (tokenizer is None):
        raise LLMDiffError("give a prompt encoder's model and its tokenizer together (or neither)")
    if model is not None:
        cls = DecoderPromptEncoder if is_causal_lm(model.config) else BidirectionalPromptEncoder
        return cls(config, device=device, model=model, tokenizer=tokenizer,
                   model_id=getattr(model.config, "_name_or_path", None) or None)
    path = resolve_model(config.model, config.revision).path
    cls = DecoderPromptEncoder if is_causal_lm(path) else BidirectionalPromptEncoder
    return cls(config, device=device)
