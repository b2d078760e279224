"""Training objectives and sampling, on top of diffusers' schedulers.

* ``flow``: rectified flow as in SD3/Sana. x_s = (1 - s) x_0 + s eps, the model predicts the
  velocity v = eps - x_0, s ~ logit-normal(0, 1), optionally time-shifted towards noise
  (SD3 eq. 23: s' = k s / (1 + (k - 1) s)); sampled with FlowMatchEulerDiscreteScheduler.
* ``eps``:  DDPM epsilon-prediction with the linear beta schedule of Ho et al. (2020);
  sampled with DPM-Solver++ (default) or DDIM.
* ``eps_sd``: epsilon-prediction with Stable Diffusion's scaled-linear schedule (beta 0.00085 to
  0.012), for adapters trained on a Stable Diffusion U-Net.

Model timesteps are on [0, 1000] for both. Classifier-free guidance uses the empty prompt
(an all-masked text input), which caption dropout trains.
"""

from __future__ import annotations

import functools
from typing import Callable

import torch

from .encoders.base import TextInput
from .errors import LLMDiffError

OBJECTIVES = ("flow", "eps", "eps_sd")
SCHEDULERS = ("default", "flow_euler", "dpm_solver", "ddim")
# The diffusers classes behind them (what a model folder's scheduler/ may hold).
SCHEDULER_CLASSES = ("FlowMatchEulerDiscreteScheduler", "DPMSolverMultistepScheduler", "DDIMScheduler")


def _ddpm_config(objective: str = "eps") -> dict:
    if objective == "eps_sd":
        return dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    return dict(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear")


def training_loss(model, x0: torch.Tensor, texts: list[TextInput], objective: str,
                  generator: torch.Generator | None = None, flow_shift: float = 1.0,
                  draws: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Mean squared error of the model's prediction for one batch of clean images x0.

    ``flow_shift`` k > 1 trains more at high noise, where a small image's layout and colours are
    decided: with k = 1 only 1.4% of training draws have s > 0.9, with k = 3 about 14%.
    ``draws``: the (noise, level) of these rows, when they are a slice of a larger batch's `noise_draws`.
    """
    noise, level = noise_draws(x0, objective, generator, flow_shift) if draws is None else draws
    x_t, timestep = add_noise(objective, x0, noise, level)
    target = noise - x0 if objective == "flow" else noise
    return torch.nn.functional.mse_loss(model(x_t, timestep, texts), target)


def noise_draws(x0: torch.Tensor, objective: str, generator: torch.Generator | None = None,
                flow_shift: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The noise (like x0) and noise levels (B,) of a training batch, drawn for the whole batch at once: rows
    i..j of them are what rows i..j of the batch train on however the batch is split into micro-batches."""
    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
    if objective == "flow":
        level = flow_noise_levels(x0.shape[0], generator, flow_shift)
    elif objective in ("eps", "eps_sd"):
        level = torch.randint(0, 1000, (x0.shape[0],), generator=generator)
    else:
        raise LLMDiffError(f"unknown objective {objective!r}; known: {', '.join(OBJECTIVES)}")
    return noise, level.to(x0.device)


def add_noise(objective: str, x0: torch.Tensor, noise: torch.Tensor, level: torch.Tensor):
    """x_t and the model timestep (B,) on [0, 1000] for clean images x0 at noise `level` (B,): for flow the
    fraction of noise s in (0, 1), x_t = (1 - s) x0 + s eps; for eps integer DDPM timesteps t,
    x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps."""
    if objective == "flow":
        s = level[:, None, None, None]
        return (1 - s) * x0 + s * noise, level * 1000
    ab = _alphas_cumprod(objective).to(x0.device)[level][:, None, None, None]
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise, level.float()


def predicted_clean(objective: str, x_t: torch.Tensor, pred: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """The clean image a prediction implies at noise `level` (as in `add_noise`): flow x_t - s v, eps
    (x_t - sqrt(1 - a_t) eps) / sqrt(a_t)."""
    if objective == "flow":
        return x_t - level[:, None, None, None] * pred
    ab = _alphas_cumprod(objective).to(x_t.device)[level][:, None, None, None]
    return (x_t - (1 - ab).sqrt() * pred) / ab.sqrt()


def flow_noise_levels(n: int, generator: torch.Generator | None = None, shift: float = 1.0) -> torch.Tensor:
    """Rectified-flow noise levels s in (0, 1): logit-normal(0, 1) (SD3), time-shifted by `shift` (SD3 eq. 23)."""
    if shift <= 0:
        raise LLMDiffError(f"flow_shift must be positive, got {shift}")
    s = torch.sigmoid(torch.randn(n, generator=generator))
    return shift * s / (1 + (shift - 1) * s)


@functools.lru_cache(maxsize=None)  # a fixed schedule: built once, not at every training step
def _alphas_cumprod(objective: str) -> torch.Tensor:
    from diffusers import DDPMScheduler

    return DDPMScheduler(**_ddpm_config(objective)).alphas_cumprod


def make_scheduler(objective: str, kind: str = "default"):
    """The diffusers scheduler that matches the training objective."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler

    if kind not in SCHEDULERS:
        raise LLMDiffError(f"unknown scheduler {kind!r}; known: {', '.join(SCHEDULERS)}")
    if objective == "flow":
        if kind not in ("default", "flow_euler"):
            raise LLMDiffError(f"a flow model samples with flow_euler, not {kind}")
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
    if objective in ("eps", "eps_sd"):
        if kind == "ddim":
            return DDIMScheduler(**_ddpm_config(objective), clip_sample=False, set_alpha_to_one=False)
        if kind in ("default", "dpm_solver"):
            return DPMSolverMultistepScheduler(**_ddpm_config(objective), algorithm_type="dpmsolver++", solver_order=2)
        raise LLMDiffError(f"an eps model samples with dpm_solver or ddim, not {kind}")
    raise LLMDiffError(f"unknown objective {objective!r}; known: {', '.join(OBJECTIVES)}")


def empty_like(texts: list[TextInput]) -> list[TextInput]:
    """The unconditional (empty) prompt with the same shapes: zero features, nothing valid."""
    return [t.empty_like() for t in texts]


@torch.no_grad()
def sample(model, texts: list[TextInput], scheduler, steps: int, guidance_scale: float | Callable[[], float],
           generator: torch.Generator | None = None, shape: tuple[int, int, int] = (3, 32, 32),
           progress: bool | Callable = False, noise: torch.Tensor | None = None,
           uncond: list[TextInput] | None = None, callback: Callable | None = None) -> torch.Tensor:
    """The final denoised state (B, C, H, W), one per text row; guidance_scale 1 turns guidance off.

    The result is returned as the sampler left it, never clamped: for a pixel model these are images in about
    [-1, 1] (clamped when converted to pixels), for a latent model normalised latents whose values reach well
    beyond ±1 and that only the autoencoder's decoder may map to pixels.

    ``noise`` (B, C, H, W) fixes the starting point (per-image seeds independent of batching). ``uncond`` is the
    unconditional branch of guidance (default: the empty prompt; a negative prompt replaces it).
    ``progress``: a tqdm bar, or a callable ``progress(iterable)`` (a pipeline's ``progress_bar``).
    ``callback(i, t, x)`` runs after every step and may return new latents. ``guidance_scale`` may be a function
    read at every step (a pipeline's callback may change it); whether to guide at all is decided at the start.
    """
    from tqdm.auto import tqdm

    b = texts[0].features.shape[0]
    device = texts[0].features.device
    if noise is None:
        noise = torch.randn((b, *shape), generator=generator)
    x = noise.to(device) * getattr(scheduler, "init_noise_sigma", 1.0)
    scheduler.set_timesteps(steps, device=device)
    scale = guidance_scale if callable(guidance_scale) else (lambda: guidance_scale)
    guided = scale() != 1.0
    uncond = empty_like(texts) if uncond is None else uncond
    both = [TextInput.cat([c, u]) for c, u in zip(texts, uncond)] if guided else texts
    timesteps = scheduler.timesteps
    bar = progress(timesteps) if callable(progress) else tqdm(timesteps, desc="sampling", disable=not progress,
                                                                leave=False)
    for i, t in enumerate(bar):
        x_in = scheduler.scale_model_input(x, t) if hasattr(scheduler, "scale_model_input") else x
        x_in = torch.cat([x_in, x_in]) if guided else x_in
        dtype = texts[0].features.dtype  # the model's (the pipeline casts features to it)
        # the timestep stays float32: bfloat16 spaces values in [512, 1000) 4 apart (the embedders cast their features)
        out = model(x_in.to(dtype), t.float().expand(x_in.shape[0]), both).float()
        if guided:
            cond, uncond_out = out.chunk(2)
            out = uncond_out + scale() * (cond - uncond_out)
        x = scheduler.step(out, t, x).prev_sample
        if callback is not None:
            x = callback(i, t, x)
    return x


def to_uint8(images: torch.Tensor) -> list:
    """(B, C, H, W) in [-1, 1] -> list of (H, W, C) uint8 arrays."""
    arr = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return list(arr)
