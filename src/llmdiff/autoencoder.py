"""A small image autoencoder for latent diffusion on the Shapes world (diffusers ``AutoencoderKL``).

No VAE ships in any package here, so we train one: 32x32x3 images <-> 8x8x6 latents (a factor
of 4 per side, as Stable Diffusion's factor 8 at 512 px), on Shapes renders drawn on the fly
(never a held-out composition), with an L1 + L2 reconstruction loss and a small KL term so the
latent space stays smooth enough to sample. The denoiser then works on 64 latent tokens with
patch 1 — the same token count as pixel space with patch 4, but the decoder draws the edges.

An "RGB anchor" pulls the first three latent channels towards the 4x average-pooled image, so
colour stays a near-linear function of the latent: without it, a denoiser trained on a free
4-channel latent drew shapes but collapsed most colours to one (a pilot run, 2000 steps).

    llmdiff autoencoder --out models/shapes-ae --steps 1500 --latent-channels 6 --rgb-anchor 1.0
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import LLMDiffError
from .integrity import check_replaceable
from .utils import atomic_write_text, read_json


def build_autoencoder(widths=(32, 64, 64), latent_channels: int = 4, resolution: int = 32):
    from diffusers import AutoencoderKL

    n = len(widths)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=latent_channels, block_out_channels=tuple(widths),
                         layers_per_block=1, down_block_types=("DownEncoderBlock2D",) * n,
                         up_block_types=("UpDecoderBlock2D",) * n, norm_num_groups=8, sample_size=resolution)


def downsample_factor(ae) -> int:
    return 2 ** (len(ae.config.block_out_channels) - 1)


def _batch(rng: np.random.Generator, n: int, resolution: int) -> torch.Tensor:
    from .shapes.suites import HELDOUT_COMPOSITIONS
    from .shapes.training_set import sample_spec
    from .shapes.world import render

    imgs = np.stack([render(sample_spec(rng), rng, resolution, forbidden=HELDOUT_COMPOSITIONS).image for _ in range(n)])
    return torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1


AUTOENCODER_FILES = ("config.json", "diffusion_pytorch_model.safetensors", "training.json")


def is_autoencoder_folder(path: Path) -> bool:
    """A folder `train_autoencoder` wrote: an AutoencoderKL config beside its training record."""
    try:
        config, training = read_json(path / "config.json"), read_json(path / "training.json")
    except (OSError, LLMDiffError):
        return False
    return (isinstance(config, dict) and config.get("_class_name") == "AutoencoderKL"
            and isinstance(training, dict) and "final_reconstruction" in training)


def train_autoencoder(out: Path | str, steps: int = 1500, batch_size: int = 32, lr: float = 1e-3,
                      kl_weight: float = 1e-6, resolution: int = 32, seed: int = 0, progress: bool = True,
                      latent_channels: int = 6, rgb_anchor: float = 1.0, overwrite: bool = False) -> Path:
    """Train, set the latent scaling factor (1 / std of latents, as SD does), save with save_pretrained.

    ``rgb_anchor`` > 0 pulls the first three latent channels towards the image average-pooled to the
    latent grid, so that colour lives linearly in the latent (as it does in pixel space) and the
    other channels carry the shape detail the decoder needs. Files of the folder's names that are not an
    earlier autoencoder's are refused before training, unless ``overwrite``.
    """
    from tqdm.auto import tqdm

    out = Path(out)
    ours = out.is_dir() and is_autoencoder_folder(out)
    for name in AUTOENCODER_FILES:
        check_replaceable(out / name, "--out", ours, overwrite)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    ae = build_autoencoder(resolution=resolution, latent_channels=latent_channels)
    factor = downsample_factor(ae)
    opt = torch.optim.AdamW(ae.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    bar = tqdm(range(steps), desc="training autoencoder", unit="step", disable=not progress)
    log = []
    t0 = time.perf_counter()
    for step in bar:
        x = _batch(rng, batch_size, resolution)
        post = ae.encode(x).latent_dist
        y = ae.decode(post.sample()).sample
        rec = F.l1_loss(y, x) + F.mse_loss(y, x)
        loss = rec + kl_weight * post.kl().mean()
        if rgb_anchor:
            loss = loss + rgb_anchor * F.mse_loss(post.mean[:, :3], F.avg_pool2d(x, factor))
        if not torch.isfinite(loss):
            raise LLMDiffError(f"autoencoder loss became {loss.item()} at step {step}; lower --lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ae.parameters(), 1.0)
        opt.step()
        sched.step()
        log.append({"step": step, "reconstruction": rec.item()})
        if step % 25 == 0:
            bar.set_postfix(rec=f"{rec.item():.4f}")
    ae.eval()
    with torch.no_grad():
        z = ae.encode(_batch(rng, 256, resolution)).latent_dist.mean
        register_latent_stats(ae, z)
    ae.save_pretrained(out)
    atomic_write_text(out / "training.json", json.dumps({"steps": steps, "batch_size": batch_size, "lr": lr,
                                                         "kl_weight": kl_weight, "rgb_anchor": rgb_anchor, "minutes": (time.perf_counter() - t0) / 60,
                                                         "final_reconstruction": float(np.mean([r["reconstruction"] for r in log[-50:]]))}, indent=2) + "\n")
    return out


def register_latent_stats(ae, z: torch.Tensor) -> None:
    """Record the latents' global and per-channel statistics in the autoencoder's config.

    Channels of an RGB-anchored latent differ in spread several-fold; normalising each one (diffusers'
    ``latents_mean``/``latents_std``, as SDXL-style VAEs record them) gives every channel the same
    signal-to-noise ratio along the diffusion schedule.
    """
    ae.register_to_config(scaling_factor=float(1.0 / z.std()), shift_factor=float(z.mean()),
                          latents_mean=z.mean(dim=(0, 2, 3)).tolist(), latents_std=z.std(dim=(0, 2, 3)).tolist())


class LatentCodec:
    """Images in [-1, 1] <-> normalised latents, with a frozen autoencoder.

    Per channel ``(z - latents_mean) / latents_std`` when the config records them, else
    ``(z - shift_factor) * scaling_factor``.
    """

    def __init__(self, source, device="cpu"):
        """`source`: an autoencoder folder, or an ``AutoencoderKL`` (a pipeline's ``vae``)."""
        if isinstance(source, (str, Path)):
            from diffusers import AutoencoderKL

            path = Path(source)
            if not (path / "config.json").is_file():
                raise LLMDiffError(f"no autoencoder at {path}; train one with `llmdiff autoencoder --out {path}`")
            source = AutoencoderKL.from_pretrained(path)
        self.ae = source.eval().requires_grad_(False).to(device)
        config = self.ae.config
        if config.get("latents_mean") and config.get("latents_std"):
            self.shift = torch.tensor(config.latents_mean, device=device).view(1, -1, 1, 1)
            self.scale = 1.0 / torch.tensor(config.latents_std, device=device).view(1, -1, 1, 1)
        else:
            self.scale = float(config.scaling_factor)
            self.shift = float(config.shift_factor or 0.0)

    @property
    def factor(self) -> int:
        return downsample_factor(self.ae)

    @property
    def channels(self) -> int:
        return int(self.ae.config.latent_channels)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return (self.ae.encode(images).latent_dist.mean - self.shift) * self.scale

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1], in float32; the latents are unnormalised in float32 and decoded in the autoencoder's
        dtype (a bfloat16 decoder reads bfloat16, whatever the latents' dtype)."""
        z = latents.float() / self.scale + self.shift
        return self.ae.decode(z.to(self.ae.dtype)).sample.float().clamp(-1, 1)
