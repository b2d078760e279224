"""Text-sensitivity probe: which words of a prompt a trained denoiser reads, and at which noise level.

For prompt pairs that differ in one word (a colour, a shape, a count, a relation), the model first
draws an image for prompt A; that image is noised to a high, a middle and a low noise level with
fixed noise, and the model predicts the clean image from it once reading A and once reading B.
The probe reports

* ``change``: the mean absolute difference of the two predicted clean images, in [0, 1] RGB units
  (decoded to pixels for a latent model): how much the one word moves the prediction;
* ``text_effect``: the same between A and the empty prompt (all the text together), and
  ``share = change / text_effect``;
* ``attention``: the cross-attention mass each attention layer puts on the differing token
  (A's token; softmax over the text tokens including the null token, averaged over heads, image
  positions and images), next to the uniform share 1 / (number of text tokens), and
  ``null_attention``: the mass on the learnt null token (attention that reads no word at all).

It needs no data and no evaluator, runs in seconds on any model folder, and works for every
denoiser (LI-DiT, U-Net, U-Net + adapter) and both objectives.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..utils import atomic_write_text

# One word changes between A and B; `kind` groups the pairs in the report.
DEFAULT_PAIRS: list[tuple[str, str, str]] = [
    ("colour", "a photo of a red circle", "a photo of a blue circle"),
    ("colour", "a photo of a green square", "a photo of a yellow square"),
    ("colour", "a purple triangle above an orange circle", "a purple triangle above a brown circle"),
    ("shape", "a photo of a red circle", "a photo of a red square"),
    ("shape", "a photo of a blue triangle", "a photo of a blue cross"),
    ("count", "a photo of two green triangles", "a photo of four green triangles"),
    ("count", "a photo of one blue square", "a photo of three blue squares"),
    ("relation", "a red circle to the left of a blue square", "a red circle to the right of a blue square"),
    ("relation", "a yellow cross above a green triangle", "a yellow cross below a green triangle"),
]
# Noise levels as the fraction of noise s (flow: x_s = (1 - s) x0 + s eps; eps models: 1 - alpha_bar = s).
NOISE_LEVELS = {"high": 0.9, "middle": 0.5, "low": 0.1}


def prompt_tokens(pipe, prompt: str) -> list[tuple[int, str]]:
    """The prompt's own tokens as the first encoder's tokenizer splits them: (index in the text sequence the
    denoiser attends to, token text), the learnt null token being index 0 and instruction or special tokens
    left out."""
    enc = pipe.load_encoders()[0]
    tok = enc.tokenizer
    ids = tok(prompt, add_special_tokens=False)["input_ids"][: enc.config.max_length]
    if hasattr(enc, "token_layout") and not enc.config.keep_instruction:
        lead = 0  # a causal LLM's features start at the prompt (the instruction is dropped)
    elif hasattr(enc, "token_layout"):
        from ..encoders.llm import PROMPT

        lead = enc.token_layout(prompt)[1].index(PROMPT)  # the kept instruction tokens come first
    else:
        from ..encoders.base import special_tokens_around

        lead = len(special_tokens_around(tok)[0])
    return [(1 + lead + j, tok.decode([i])) for j, i in enumerate(ids)]


def differing_token(pipe, a: str, b: str) -> int:
    """Index of the first token of A that differs from B, in the text sequence the model attends to."""
    ta, tb = prompt_tokens(pipe, a), prompt_tokens(pipe, b)
    j = next((k for k, (x, y) in enumerate(zip(ta, tb)) if x != y), min(len(ta), len(tb)))
    return ta[0][0] + j if ta else 1


class AttentionRecorder:
    """Forward hooks on every cross-attention that record its attention probabilities (softmax over the text
    tokens, mean over heads): per text token (B, M), mean over image positions (the probe's measure), or with
    ``per_position`` per image position and text token (B, N, M), for heat maps (DAAM, Tang et al., 2023).

    For the LLMDiff adapter's decoupled cross-attention the two branches (the frozen one reading phi(c), the
    new one reading c) are averaged with the magnitudes of their learnt gates as weights.
    """

    def __init__(self, model, per_position: bool = False):
        from diffusers.models.attention_processor import Attention

        from ..denoisers.adapter import LLMDiffAttnProcessor
        from ..layers import JointAttention, MultiHeadAttention

        self.per_position = per_position
        self.mass: dict[str, list[torch.Tensor]] = {}
        self.handles = []
        for name, m in model.named_modules():
            if isinstance(m, JointAttention):
                hook = self._joint(name)
            elif isinstance(m, MultiHeadAttention) and name.endswith("cross_attn"):
                hook = self._lidit(name)
            elif isinstance(m, Attention) and name.endswith("attn2"):
                hook = self._adapter(name) if isinstance(m.processor, LLMDiffAttnProcessor) else self._diffusers(name)
            else:
                continue
            self.handles.append(m.register_forward_hook(hook, with_kwargs=True))

    def _keep(self, name: str, probs: torch.Tensor) -> None:
        """probs (B, H, N, M) -> the recorded mean over heads (and over positions unless per_position)."""
        probs = probs.mean(1)  # (B, N, M)
        self.mass.setdefault(name, []).append(probs if self.per_position else probs.mean(1))

    @staticmethod
    def _lidit_probs(m, q, kv, key_mask) -> torch.Tensor:
        """Softmax attention (B, H, N, M) of an LI-DiT attention's q (B, N, D) on the keys in kv (B, M, 2D)."""
        b, n, _ = q.shape
        q = m.q_norm(q.view(b, n, m.heads, -1)).transpose(1, 2)
        k = m.k_norm(kv.view(b, kv.shape[1], 2, m.heads, -1)[:, :, 0]).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
        return scores.softmax(-1)

    def _lidit(self, name):
        def hook(m, args, kwargs, out):
            x, ctx = args[0], kwargs["context"]
            self._keep(name, self._lidit_probs(m, m.q(x), m.kv(ctx), kwargs.get("key_mask")))
        return hook

    def _joint(self, name):
        """A joint attention's softmax covers the image and the text tokens: the text tokens' columns are kept,
        shares of the whole softmax (the rest went to image tokens)."""
        def hook(m, args, kwargs, out):
            x = args[0]
            probs = self._lidit_probs(m, *m.projections(x, kwargs["context"], kwargs["key_mask"]))
            self._keep(name, probs[..., x.shape[1]:])
        return hook

    @staticmethod
    def _diffusers_probs(h, ctx, to_q, to_k, heads: int, bias) -> torch.Tensor:
        """Softmax attention (B, H, N, M) of queries to_q(h) on keys to_k(ctx), with the U-Net's additive bias."""
        if h.dim() == 4:
            h = h.flatten(2).transpose(1, 2)
        b, n, _ = h.shape
        q = to_q(h).view(b, n, heads, -1).transpose(1, 2)
        k = to_k(ctx).view(b, ctx.shape[1], heads, -1).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
        if bias is not None:  # (B, 1, M) additive bias from the U-Net's encoder_attention_mask
            scores = scores + bias.view(b, 1, 1, -1).to(scores.dtype)
        return scores.softmax(-1)

    def _diffusers(self, name):
        def hook(m, args, kwargs, out):
            h = args[0] if args else kwargs["hidden_states"]
            self._keep(name, self._diffusers_probs(h, kwargs.get("encoder_hidden_states"), m.to_q, m.to_k, m.heads,
                                                   kwargs.get("attention_mask")))
        return hook

    def _adapter(self, name):
        def hook(m, args, kwargs, out):
            h = args[0] if args else kwargs["hidden_states"]
            c, bias, proc = kwargs.get("encoder_hidden_states"), kwargs.get("attention_mask"), m.processor
            ctx = proc.phi(c)
            if m.norm_cross:
                ctx = m.norm_encoder_hidden_states(ctx)
            orig = self._diffusers_probs(h, ctx, m.to_q, m.to_k, m.heads, bias)
            new = self._diffusers_probs(h, c, proc.to_q, proc.to_k, proc.heads, bias)
            g1, g2 = (abs(g) for g in proc.gates)
            self._keep(name, (g1 * orig + g2 * new) / max(g1 + g2, 1e-12))
        return hook

    def pop(self) -> dict[str, torch.Tensor]:
        out = {k: v[-1] for k, v in self.mass.items()}
        self.mass.clear()
        return out

    def remove(self):
        for h in self.handles:
            h.remove()


def _levels(objective: str, n: int) -> dict[str, torch.Tensor]:
    """NOISE_LEVELS as `add_noise` levels for n images: s for flow, the DDPM timestep whose alpha_bar is 1 - s."""
    if objective == "flow":
        return {name: torch.full((n,), s) for name, s in NOISE_LEVELS.items()}
    from ..diffusion import _alphas_cumprod

    ab = _alphas_cumprod(objective)
    return {name: torch.full((n,), int((ab - (1 - s)).abs().argmin())) for name, s in NOISE_LEVELS.items()}


@torch.no_grad()
def text_sensitivity(pipe, pairs: list[tuple[str, str, str]] | None = None, n_images: int = 4,
                     seed: int = 0) -> dict:
    """The probe's measurements for one pipeline (see the module docstring)."""
    from ..diffusion import add_noise, empty_like, predicted_clean
    from ..pipelines import generators_for

    pairs = pairs or DEFAULT_PAIRS
    model = pipe.denoiser
    objective = model.config.objective
    decode = pipe.codec.decode if pipe.codec is not None else (lambda x: x)
    rec = AttentionRecorder(model)
    rows = []
    try:
        for kind, a, b in pairs:
            texts, _ = pipe.encode_prompt([a, b], None, False, n_images)  # rows: A x n, then B x n
            ta = [t.select(slice(0, n_images)) for t in texts]
            tb = [t.select(slice(n_images, None)) for t in texts]
            x0 = pipe(prompt_embeds=ta, generator=generators_for([seed * 1000 + i for i in range(n_images)]),
                      output_type="latent").images
            token = differing_token(pipe, a, b)
            gen = torch.Generator().manual_seed(seed)
            noise = torch.randn(x0.shape, generator=gen)
            row = {"kind": kind, "a": a, "b": b, "token": token, "levels": {}}
            for level, lv in _levels(objective, n_images).items():
                x_t, t = add_noise(objective, x0, noise, lv)
                preds, attns = {}, {}
                for key, tt in (("a", ta), ("b", tb), ("empty", empty_like(ta))):
                    preds[key] = decode(predicted_clean(objective, x_t, model(x_t, t, tt), lv)).clamp(-1, 1) / 2
                    attns[key] = rec.pop()
                attn = attns["a"]
                change = (preds["a"] - preds["b"]).abs().mean().item()
                effect = (preds["a"] - preds["empty"]).abs().mean().item()
                n_tokens = int(ta[0].mask[0].sum()) + 1
                row["levels"][level] = {
                    "change": change, "text_effect": effect, "share": change / max(effect, 1e-8),
                    "uniform_attention": 1 / n_tokens,
                    "attention": {name: float(m[:, token].mean()) for name, m in attn.items()},
                    "null_attention": {name: float(m[:, 0].mean()) for name, m in attn.items()},
                }
            rows.append(row)
    finally:
        rec.remove()
    return {"objective": objective, "n_images": n_images, "noise_levels": NOISE_LEVELS, "pairs": rows}


def summarize(result: dict) -> dict:
    """Mean change, share and attention (mean over layers, relative to uniform) per kind and noise level."""
    out: dict = {}
    for row in result["pairs"]:
        for level, m in row["levels"].items():
            att = list(m["attention"].values())
            rel = (sum(att) / len(att)) / m["uniform_attention"] if att else float("nan")
            null = list(m["null_attention"].values())
            d = out.setdefault(row["kind"], {}).setdefault(
                level, {"change": [], "share": [], "attention_x_uniform": [], "null_attention": []})
            d["change"].append(m["change"])
            d["share"].append(m["share"])
            d["attention_x_uniform"].append(rel)
            d["null_attention"].append(sum(null) / len(null) if null else float("nan"))
    return {k: {lv: {m: sum(v) / len(v) for m, v in d.items()} for lv, d in levels.items()} for k, levels in out.items()}


def write_probe(results: dict[str, dict], out: Path | str) -> Path:
    """probe.json, probe.md (one table per model) and probe.png for {model name: text_sensitivity result}."""
    from ..integrity import folder_lock

    out = Path(out)
    with folder_lock(out, "a probe report into"):
        _write_probe(results, out)
    return out


def _write_probe(results: dict[str, dict], out: Path) -> None:
    from ..viz import probe_plot

    summaries = {name: summarize(r) for name, r in results.items()}
    atomic_write_text(out / "probe.json", json.dumps({"results": results, "summary": summaries}, indent=2) + "\n")
    lines = ["# Text-sensitivity probe", "",
             "Prompt pairs that differ in one word; the model's own image for prompt A, noised to a level "
             "(fraction of noise s), then the clean image predicted reading A and reading B. "
             "**change**: mean |difference| of the two predictions (RGB in [0, 1]); **share**: change / "
             "(A vs the empty prompt); **attn×**: cross-attention mass on the differing token over the uniform "
             "share, mean over layers (1 = no preference); **null**: attention mass on the learnt null token.", ""]
    for name, summ in summaries.items():
        lines += [f"## {name}", "", "| word | " + " | ".join(f"{lv} change | share | attn× | null" for lv in NOISE_LEVELS) + " |",
                  "|---|" + "---:|" * (4 * len(NOISE_LEVELS))]
        for kind, levels in summ.items():
            cells = []
            for lv in NOISE_LEVELS:
                m = levels[lv]
                cells += [f"{m['change']:.3f}", f"{m['share']:.2f}", f"{m['attention_x_uniform']:.2f}",
                          f"{m['null_attention']:.2f}"]
            lines.append(f"| {kind} | " + " | ".join(cells) + " |")
        lines.append("")
    atomic_write_text(out / "probe.md", "\n".join(lines))
    probe_plot(summaries, list(NOISE_LEVELS), out / "probe.png")


def probe_models(models: list[str], out: Path | str, n_images: int = 4, seed: int = 0) -> Path:
    from ..model_folder import read_model_index
    from ..pipelines import load_pipeline

    for m in models:
        read_model_index(m)  # every folder is checked before the first one runs
    results = {}
    for m in models:
        pipe = load_pipeline(m)
        pipe.set_progress_bar_config(disable=True)
        results[Path(m).name] = text_sensitivity(pipe, n_images=n_images, seed=seed)
    return write_probe(results, out)
