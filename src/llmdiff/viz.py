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


def _save(fig, path: Path | str, dpi: int) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    _plt().close(fig)
    return path


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
    return _save(fig, path, 110)


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
    return _save(fig, path, 120)


def probe_plot(summaries: dict[str, dict], levels: list[str], path: Path | str) -> Path:
    """Text-sensitivity probe: per word kind, the prediction change and attention at each noise level, one
    line per model (left: change of the predicted clean image, right: attention on the word over uniform)."""
    plt = _plt()
    kinds = sorted({k for s in summaries.values() for k in s})
    fig, axes = plt.subplots(2, len(kinds), figsize=(2.6 * len(kinds), 4.6), squeeze=False, sharex=True)
    for j, kind in enumerate(kinds):
        for name, summ in summaries.items():
            if kind not in summ:
                continue
            axes[0][j].plot(levels, [summ[kind][lv]["change"] for lv in levels], marker="o", label=name)
            axes[1][j].plot(levels, [summ[kind][lv]["attention_x_uniform"] for lv in levels], marker="o", label=name)
        axes[0][j].set_title(kind, fontsize=9)
        axes[1][j].axhline(1.0, color="grey", lw=0.6, ls="--")
    axes[0][0].set_ylabel("change of predicted image")
    axes[1][0].set_ylabel("attention on word / uniform")
    for ax in axes[1]:
        ax.set_xlabel("noise level")
    axes[0][0].legend(fontsize=7)
    return _save(fig, path, 110)
