"""Prompt encoders: decoder-only LLMs (and an encoder baseline) turned into a ``TextInput`` (features, masks)."""

from __future__ import annotations

import torch

from .base import DEFAULT_INSTRUCTION, EncoderConfig, PromptEncoder, TextInput, drop_instruction

__all__ = ["DEFAULT_INSTRUCTION", "EncoderConfig", "PromptEncoder", "TextInput", "drop_instruction", "load_encoder"]


def load_encoder(config: EncoderConfig, device: str | torch.device = "cpu") -> PromptEncoder:
    """The right encoder for the model: causal LMs read prompts as decoders, others as bidirectional encoders."""
    from .bidirectional import BidirectionalPromptEncoder
    from .llm import DecoderPromptEncoder
    from .models import is_causal_lm, resolve_model

    path = resolve_model(config.model).path
    cls = DecoderPromptEncoder if is_causal_lm(path) else BidirectionalPromptEncoder
    return cls(config, device=device)
