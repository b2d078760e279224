"""Figures: image grids with captions and training curves (matplotlib, headless)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def image_grid(images: list[np.ndarray], captions: list[str] | None, path: Path | str, cols: int = 4,
               cell: float = 2.0, title: str | None = None, wrap: int = 28) -> Path:
    """Save images (H, W, 3 uint8) in a grid, each with its caption underneath."""
    plt = _plt()
    n = len(images)
    cols = max(1, min(cols, n))
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * cell, rows * (cell + 0.55)), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for k, img in enumerate(images):
        ax = axes[k // cols][k % cols]
        ax.imshow(img, interpolation="nearest")
        if captions:
            ax.set_title("\n".join(textwrap.wrap(captions[k], wrap)[:4]), fontsize=6.5)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def loss_curve(steps: list[int], losses: list[float], path: Path | str, title: str = "training loss",
               smooth: int = 50) -> Path:
    """Raw loss (light) and its moving average (dark) against the step."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(steps, losses, color="#9ecae1", lw=0.6, label="loss")
    if len(losses) >= smooth:
        k = np.ones(smooth) / smooth
        ax.plot(steps[smooth - 1:], np.convolve(losses, k, mode="valid"), color="#08519c", lw=1.4,
                label=f"moving average ({smooth})")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
