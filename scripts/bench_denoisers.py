"""Training and sampling speed of the denoisers on this machine, against a peer DiT in the same process.

    python scripts/bench_denoisers.py [--seconds 20]

* LI-DiT presets (pixel and latent) vs diffusers' PixArtTransformer2DModel of the same width,
  heads and patch size on the same input (a peer DiT with cross-attention), once at the same depth
  and once at the same parameter count: train images/s and sampling latency (batch 16, 25 steps,
  classifier-free guidance).
* U-Net layouts (diffusers UNet2DConditionModel with SD-1.5 block types) at CPU widths.

Writes docs/benchmarks/denoisers.{md,json}. Timings swing with other load: compare ratios (ours and
the peer train in alternating steps, so load hits both alike).
"""

import argparse
import json
import time
from pathlib import Path

import torch

from llmdiff.encoders import TextInput
from llmdiff.denoisers.lidit import build_lidit
from llmdiff.denoisers.unet import build_unet
from llmdiff.diffusion import make_scheduler, sample, training_loss
from llmdiff.utils import atomic_write_text

TEXT_LEN, TEXT_DIM = 24, 576


def texts(b):
    return [TextInput(torch.randn(b, TEXT_LEN, TEXT_DIM), torch.ones(b, TEXT_LEN, dtype=torch.bool))]


def train_rates(models, shape, seconds, batch=64):
    """Training images/s of each model, steps interleaved so that other load on the machine hits all alike."""
    opts = [torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4) for m in models]
    x0, t = torch.randn(batch, *shape), texts(batch)
    spent, n = [0.0] * len(models), 0
    while n < 3 or sum(spent) < seconds * len(models):
        for i, (model, opt) in enumerate(zip(models, opts)):
            start = time.perf_counter()
            loss = training_loss(model, x0, t, "flow")
            opt.zero_grad()
            loss.backward()
            opt.step()
            if n >= 2:  # the first steps warm up
                spent[i] += time.perf_counter() - start
        n += 1
    return [(n - 2) * batch / s for s in spent]


def train_rate(model, shape, seconds, batch=64):
    return train_rates([model], shape, seconds, batch)[0]


def sample_latency(model, shape, batch=16, steps=25):
    t = texts(batch)
    sample(model, t, make_scheduler("flow"), 2, 2.0, torch.Generator().manual_seed(0), shape)  # warm-up
    start = time.perf_counter()
    sample(model, t, make_scheduler("flow"), steps, 2.0, torch.Generator().manual_seed(0), shape)
    return time.perf_counter() - start


class PixArtPeer(torch.nn.Module):
    """diffusers' PixArtTransformer2DModel behind the same call signature (caption projection included)."""

    def __init__(self, size, channels, patch, width, depth, heads, qk_norm=False):
        super().__init__()
        from diffusers import PixArtTransformer2DModel
        from diffusers.models.normalization import RMSNorm

        self.net = PixArtTransformer2DModel(
            num_attention_heads=heads, attention_head_dim=width // heads, in_channels=channels, out_channels=channels,
            num_layers=depth, cross_attention_dim=width, sample_size=size, patch_size=patch, norm_type="ada_norm_single",
            caption_channels=TEXT_DIM, use_additional_conditions=False, interpolation_scale=1)
        if qk_norm:  # LI-DiT's QK-RMSNorm in every attention (diffusers' own RMSNorm, as its SD3/Flux blocks use)
            for block in self.net.transformer_blocks:
                for attn in (block.attn1, block.attn2):
                    attn.norm_q, attn.norm_k = RMSNorm(width // heads, eps=1e-6), RMSNorm(width // heads, eps=1e-6)

    def forward(self, x, timestep, texts):
        t = texts[0]
        return self.net(x, encoder_hidden_states=t.features, encoder_attention_mask=t.mask.long(), timestep=timestep).sample


def n_params(model) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


def lidit_row(label, r_ours, l_ours, peer, r_peer, l_peer):
    """One Markdown table row: ours (train img/s, sample s) against a peer, and the train-speed ratio."""
    return (f"| {label} | {r_ours:.0f} | {l_ours:.2f} | {peer}: {r_peer:.0f} img/s, {l_peer:.2f} s | "
            f"{r_ours / r_peer:.2f}x |")


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--out", default="docs/benchmarks")
    a = p.parse_args()
    rows, raw = [], {}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    # The presets carry a 2-block token refiner over the text and a pooled-text modulation that a PixArt
    # block does not have. Two fair peers for a full preset: the same width and depth (the peer does less
    # work), and the same parameter count (the deepest PixArt no larger than ours). The "DiT only" rows
    # drop refiner and pooled text, and also meet a PixArt with QK-RMSNorm: the same work, block for block.
    dit_only = {"refiner_depth": 0, "pooled_text": False}
    for name, size, ch, over in (("tiny", 32, 3, {}), ("tiny-latent", 8, 6, {}), ("tiny-latent", 8, 6, dit_only),
                                 ("small-latent", 8, 6, {}), ("small-latent", 8, 6, dit_only)):
        ours = build_lidit(name, over, sample_size=size, in_channels=ch, text_dims=(TEXT_DIM,))
        name = name + (", DiT only" if over else " + refiner")
        cfg = ours.config
        n_ours = n_params(ours)
        peers = {"PixArt": PixArtPeer(size, ch, cfg.patch_size, cfg.hidden_size, cfg.depth, cfg.heads)}
        if over:
            peers["PixArt + QK-RMSNorm"] = PixArtPeer(size, ch, cfg.patch_size, cfg.hidden_size, cfg.depth, cfg.heads,
                                                      qk_norm=True)
        else:
            depth, matched = cfg.depth, peers["PixArt"]
            while True:  # deepen until the next depth would have more parameters than ours
                deeper = PixArtPeer(size, ch, cfg.patch_size, cfg.hidden_size, depth + 1, cfg.heads)
                if n_params(deeper) > n_ours:
                    break
                depth, matched = depth + 1, deeper
            peers[f"PixArt depth {depth} (parameter-matched)"] = matched
        shape = (ch, size, size)
        l_ours = sample_latency(ours.eval(), shape)
        label = f"LI-DiT {name} ({size}x{size}x{ch}, patch {cfg.patch_size}) | {n_ours:.2f}M"
        for peer_name, peer in peers.items():
            r_ours, r_peer = train_rates([ours.train(), peer], shape, a.seconds)
            l_peer = sample_latency(peer.eval(), shape)
            n_peer = n_params(peer)
            raw[f"{name} vs {peer_name}"] = dict(ours_params_m=n_ours, peer_params_m=n_peer, ours_train=r_ours,
                                                peer_train=r_peer, ours_sample_s=l_ours, peer_sample_s=l_peer)
            rows.append(lidit_row(label, r_ours, l_ours, f"{peer_name} {n_peer:.2f}M", r_peer, l_peer))
            print(rows[-1], flush=True)
    unet_rows = []
    three_level = dict(down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                       up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"))
    for label, preset, over, size, ch in (
            ("(16, 32, 64, 64), attention at 8 and 4 px, pixel 32 (the shipped base)", "tiny", {}, 32, 3),
            ("(32, 64, 64), attention at 16 and 8 px, pixel 32", "tiny",
             {"block_out_channels": (32, 64, 64), **three_level}, 32, 3),
            ("(64, 128, 128), attention at 16 and 8 px, pixel 32", "tiny",
             {"block_out_channels": (64, 128, 128), **three_level}, 32, 3)):
        unet = build_unet(preset, over, sample_size=size, in_channels=ch, text_dims=(TEXT_DIM,))
        n = n_params(unet)
        r = train_rate(unet, (ch, size, size), a.seconds)
        raw[f"unet {label}"] = dict(params_m=n, train=r)
        unet_rows.append(f"| U-Net {label} | {n:.2f}M | {r:.0f} |")
        print(unet_rows[-1], flush=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    md = [f"# Denoisers on this machine (torch {torch.__version__}, {torch.get_num_threads()} threads, fp32)", "",
          "Train: images/s at batch 64 with a 24-token text of width 576. Sample: seconds for 16 images, 25 steps,",
          "classifier-free guidance (32 forward passes of 16 images per step). Reproduce: "
          "`python scripts/bench_denoisers.py`.", "",
          "| model | params | train img/s | sample s | peer (same width, heads, patch) | ours / peer train |",
          "|---|---:|---:|---:|---|---:|", *rows, "", "| U-Net | params | train img/s |", "|---|---:|---:|", *unet_rows]
    atomic_write_text(out / "denoisers.md", "\n".join(md) + "\n")
    atomic_write_text(out / "denoisers.json", json.dumps(raw, indent=2) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
