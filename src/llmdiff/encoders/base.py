"""What every prompt encoder returns, its configuration, and the bad-input rules they share.

Mask convention everywhere in llmdiff: bool (B, L), True = keep.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, replace

import torch

from ..errors import LLMDiffError

log = logging.getLogger(__name__)

# LI-DiT's instruction, inserted before the prompt.
DEFAULT_INSTRUCTION = (
    "Describe the image by detailing the color, shape, size, texture, quantity, text, "
    "and spatial relationships of the objects:"
)


@dataclass(frozen=True)
class EncoderConfig:
    """How prompts become features. Every field is part of the feature-cache key."""

    model: str = "smollm2-135m"  # a packaged short name, a local folder, a .gguf file or a hub id
    revision: str | None = None  # a hub id's branch, tag or commit (pins the weights; None: the cached or main)
    layers: str | int | tuple[int, ...] = -3  # "last", an index into hidden states (0 = embeddings), a list, "all"
    mode: str = "hidden"  # "hidden": hidden states; "blockwise": LLMDiff per-block context differences
    normalize: bool = False  # RMS-normalise each returned layer (for a learnable layer mix)
    block_groups: int = 0  # blockwise: sum consecutive blocks into this many groups (0 = one per block)
    instruction: str | None = None  # None, "default" (LI-DiT's) or the instruction text itself
    chat_template: bool = False  # wrap instruction + prompt in the tokenizer's chat template
    max_length: int = 64  # prompt tokens kept; longer prompts are truncated with a warning (or refused if strict)
    padding_side: str = "right"  # "right" or "left"
    keep_instruction: bool = False  # also return instruction/template tokens, with prompt_mask marking the prompt
    prefix_cache: bool = True  # compute the instruction's key/value cache once and reuse it
    strict: bool = False  # refuse over-long prompts instead of truncating
    # decoder LLMs: read the prompt twice and keep the second copy, whose tokens have seen the whole prompt
    # (echo embeddings, Springer et al. 2024): a causal LLM's subject token precedes the words that place it
    echo: bool = False
    dtype: str = "float32"

    def __post_init__(self):
        if isinstance(self.layers, list):
            object.__setattr__(self, "layers", tuple(self.layers))
        if self.mode not in ("hidden", "blockwise"):
            raise LLMDiffError(f"encoder mode must be 'hidden' or 'blockwise', got {self.mode!r}")
        if self.padding_side not in ("left", "right"):
            raise LLMDiffError(f"padding_side must be 'left' or 'right', got {self.padding_side!r}")
        if not 1 <= self.max_length <= 8192:
            raise LLMDiffError(f"max_length must be in [1, 8192], got {self.max_length}")
        if not 0 <= self.block_groups <= 1024:
            raise LLMDiffError(f"block_groups must be in [0, 1024], got {self.block_groups}")
        if self.revision is not None and not (isinstance(self.revision, str) and self.revision.strip()):
            raise LLMDiffError(f"revision must be a branch, tag or commit of a hub model, got {self.revision!r}")
        if self.dtype not in ("float32", "float16", "bfloat16"):
            raise LLMDiffError(f"encoder dtype must be float32, float16 or bfloat16, got {self.dtype!r}")

    @property
    def instruction_text(self) -> str | None:
        if self.instruction in (None, "", "none"):
            return None
        return DEFAULT_INSTRUCTION if self.instruction == "default" else self.instruction

    def replace(self, **changes) -> "EncoderConfig":
        return replace(self, **changes)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layers"] = list(self.layers) if isinstance(self.layers, tuple) else self.layers
        return d


@dataclass
class TextInput:
    """A batch of prompt features, as the encoders return them, the cache stores them and the denoisers read them.

    features: (B, L, D), or (B, n, L, D) when several layers/blocks are kept; mask: (B, L) bool, True = keep.
    prompt_mask (B, L) marks the prompt's own tokens when instruction tokens are kept (``keep_instruction``);
    the text conditioner drops the others after its refiners (``drop_instruction``). None: every valid token
    is the prompt's.
    """

    features: torch.Tensor
    mask: torch.Tensor
    prompt_mask: torch.Tensor | None = None

    def _map(self, fn, features=None) -> "TextInput":
        """The same batch with `fn` applied to every tensor (`features` overrides the features' result)."""
        return TextInput(fn(self.features) if features is None else features, fn(self.mask),
                         None if self.prompt_mask is None else fn(self.prompt_mask))

    def to(self, device=None, dtype: torch.dtype | None = None) -> "TextInput":
        """Moved to `device`; `dtype` converts the features only (the masks stay bool)."""
        return self._map(lambda t: t.to(device=device), self.features.to(device=device, dtype=dtype))

    def select(self, index) -> "TextInput":
        """Some rows (an index or bool mask over the batch)."""
        return self._map(lambda t: t[index])

    def repeat(self, n: int) -> "TextInput":
        """Each prompt's row n times in a row (prompt 0 x n, prompt 1 x n, ...)."""
        return self._map(lambda t: t.repeat_interleave(n, dim=0))

    def dropped(self, drop: torch.Tensor) -> "TextInput":
        """Caption dropout: rows where `drop` (B,) is True become the empty (all-masked) prompt."""
        keep = ~drop[:, None]
        pm = None if self.prompt_mask is None else self.prompt_mask & keep
        return TextInput(self.features, self.mask & keep, pm)

    def trimmed(self) -> "TextInput":
        """Cut the sequence after the last position any row uses (left or right padding alike); at least one."""
        used = self.mask.any(0).nonzero()
        n = int(used[-1]) + 1 if len(used) else 1
        return TextInput(self.features[..., :n, :], self.mask[:, :n],
                         None if self.prompt_mask is None else self.prompt_mask[:, :n])

    def empty_like(self) -> "TextInput":
        """The unconditional (empty) prompt with the same shapes: zero features, nothing valid."""
        return self._map(torch.zeros_like)

    @staticmethod
    def cat(batches: list["TextInput"]) -> "TextInput":
        """Batches one after the other along the batch, shorter ones padded with masked zero tokens."""
        length = max(b.mask.shape[1] for b in batches)
        features = torch.cat([pad_to(b.features, length, b.features.dim() - 2) for b in batches])
        masks = torch.cat([pad_to(b.mask, length, 1) for b in batches])
        if all(b.prompt_mask is None for b in batches):
            return TextInput(features, masks)
        prompt = [b.mask if b.prompt_mask is None else b.prompt_mask for b in batches]  # no prompt mask: all prompt
        return TextInput(features, masks, torch.cat([pad_to(m, length, 1) for m in prompt]))


def drop_instruction(features: torch.Tensor, mask: torch.Tensor, prompt_mask: torch.Tensor):
    """Keep only the prompt tokens, left-aligned: (B, [n,] L, D) -> (B, [n,] L', D) with L' the longest prompt.

    Features at masked positions are zero.
    """
    keep = prompt_mask & mask
    n = int(keep.sum(1).max().item()) if keep.numel() else 0
    # stable sort puts each row's prompt tokens first, in their original order
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices[:, :n]  # (B, L')
    new_mask = torch.gather(keep, 1, order)
    if features.dim() == 4:
        idx = order[:, None, :, None].expand(-1, features.shape[1], -1, features.shape[-1])
        out = torch.gather(features, 2, idx)
        return torch.where(new_mask[:, None, :, None], out, torch.zeros((), dtype=out.dtype)), new_mask
    out = torch.gather(features, 1, order[..., None].expand(-1, -1, features.shape[-1]))
    return torch.where(new_mask[..., None], out, torch.zeros((), dtype=out.dtype)), new_mask


def check_prompts(prompts) -> list[str]:
    """A list of strings, or a clear error. Empty strings are allowed: they encode as the unconditional prompt."""
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts:
        raise LLMDiffError("no prompts to encode")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise LLMDiffError(f"prompts must be strings; prompt {i} is {type(p).__name__}: {p!r}")
        check_text(p, f"prompt {i}")
    return prompts


def check_text(text: str, where: str) -> None:
    """Refuse text that is not a sentence: bytes that are not UTF-8 (undecodable command-line bytes arrive as
    lone surrogates) or control characters (a binary file read as captions)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise LLMDiffError(f"{where} is not valid UTF-8 text: {text[:40]!r}") from None
    bad = next((c for c in text if (ord(c) < 32 and c not in "\t\n\r") or 0x7F <= ord(c) < 0xA0), None)
    if bad is not None:
        raise LLMDiffError(f"{where} holds the control character {bad!r} (binary data?): {text[:40]!r}")


def truncate_prompt_ids(ids: list[list[int]], max_length: int, strict: bool) -> None:
    """Cut prompt token lists to max_length; one warning for the batch (or an error when strict)."""
    cut = [max(0, len(x) - max_length) for x in ids]
    if any(cut):
        worst = max(range(len(cut)), key=cut.__getitem__)
        msg = (f"{sum(c > 0 for c in cut)} prompt(s) longer than max_length={max_length} tokens; "
               f"up to {cut[worst]} tokens cut (prompt {worst})")
        if strict:
            raise LLMDiffError(msg + "; shorten the prompt or raise max_length")
        log.warning(msg)
    for x in ids:
        del x[max_length:]


class PromptEncoder(ABC):
    """Frozen text encoder: ``encode(prompts) -> TextInput``. No gradients, eval mode."""

    config: EncoderConfig
    model_id: str
    tokenizer: object

    @property
    @abstractmethod
    def hidden_size(self) -> int: ...

    @property
    @abstractmethod
    def n_outputs(self) -> int:
        """How many layers/blocks each token carries: 1 for (B, L, D) features, n for (B, n, L, D)."""

    @abstractmethod
    def encode(self, prompts, batch_size: int = 64) -> TextInput: ...

    def prompt_ids(self, prompts) -> list[list[int]]:
        """Each prompt's own token ids (no special tokens), cut to max_length; an empty prompt has none."""
        ids = [self.tokenizer(p, add_special_tokens=False)["input_ids"] if p else [] for p in check_prompts(prompts)]
        truncate_prompt_ids(ids, self.config.max_length, self.config.strict)
        return ids

    def cache_key(self) -> dict:
        """Everything the features depend on: model weights, layers, template, max length, padding side."""
        key = {"model_id": self.model_id, **self.config.to_dict(), "encoder": type(self).__name__}
        if self.config.keep_instruction:  # caches built before the prompt mask was stored lack it: never reuse them
            key["stores_prompt_mask"] = True
        for option in ("echo", "revision"):  # caches built before these options existed stay valid
            if not key[option]:
                del key[option]
        return key


def special_tokens_around(tokenizer) -> tuple[list[int], list[int]]:
    """The ids a tokenizer puts before and after any text ([BOS], or [CLS] ... [SEP], or nothing)."""
    with_special = tokenizer("x", add_special_tokens=True)["input_ids"]
    bare = tokenizer("x", add_special_tokens=False)["input_ids"]
    for start in range(len(with_special) - len(bare) + 1):
        if with_special[start:start + len(bare)] == bare:
            return with_special[:start], with_special[start + len(bare):]
    return [], []


def rms_normalize(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def pad_to(t: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    """`t` zero-padded at the end of `dim` to `length` (False for bool masks: padding is masked)."""
    return torch.nn.functional.pad(t, [0, 0] * (t.dim() - dim - 1) + [0, length - t.shape[dim]])


def pad_stack(rows: list[torch.Tensor], length: int, dim: int) -> torch.Tensor:
    """Zero-pad tensors along `dim` to `length` and stack them on a new batch dimension."""
    return torch.stack([pad_to(r, length, dim) for r in rows])
