"""Every figure llmdiff draws: image grids, training curves, evaluation and experiment charts, probe plots.

matplotlib runs headless (the Agg backend), selected here and nowhere else.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np


def pyplot():
    """matplotlib.pyplot on the headless backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path | str, dpi: int = 120) -> Path:
    """Lay out, write (creating the folder) and close a figure. A PNG names llmdiff as its Software, which is how
    a later command tells its own figure (replaced) from a file of the user's (refused)."""
    from . import __version__

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi, metadata={"Software": f"llmdiff {__version__}"} if path.suffix == ".png" else None)
    pyplot().close(fig)
    return path


def image_grid(images: list[np.ndarray], captions: list[str] | None, path: Path | str, cols: int = 4,
               cell: float = 2.0, title: str | None = None, wrap: int = 28) -> Path:
    """Save images (H, W, 3 uint8) in a grid, each with its caption underneath."""
    plt = pyplot()
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
    return save_figure(fig, path, 110)


def loss_curve(steps: list[int], losses: list[float], path: Path | str, title: str = "training loss",
               smooth: int = 50) -> Path:
    """Raw loss (light) and its moving average (dark) against the step."""
    plt = pyplot()
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
    return save_figure(fig, path, 120)


def probe_plot(summaries: dict[str, dict], levels: list[str], path: Path | str) -> Path:
    """Text-sensitivity probe: per word kind, the prediction change and attention at each noise level, one
    line per model (left: change of the predicted clean image, right: attention on the word over uniform)."""
    plt = pyplot()
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
    return save_figure(fig, path, 110)


def task_bars(benchmarks: dict[str, dict], path: Path | str) -> Path:
    """Per-task accuracy bars of an evaluation summary, one panel per benchmark, with the overall as a line."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(benchmarks), figsize=(4.2 * len(benchmarks), 3.4), squeeze=False)
    for ax, (bench, s) in zip(axes[0], benchmarks.items()):
        tags = list(s["tasks"])
        ax.bar(range(len(tags)), [s["tasks"][t]["accuracy"] for t in tags], color="#4c72b0")
        ax.axhline(s["overall"], color="#c44e52", ls="--", lw=1, label=f"overall {s['overall']:.2f}")
        ax.set_xticks(range(len(tags)), tags, rotation=35, ha="right", fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_title(bench)
        ax.legend(fontsize=8, loc="lower right")
    axes[0][0].set_ylabel("accuracy")
    return save_figure(fig, path)


def metric_bars(means: dict[str, float], errors: dict[str, float], metric: str, path: Path | str,
                title: str, values: dict[str, list[float]] | None = None,
                intervals: dict[str, tuple[float, float]] | None = None, baseline: str | None = None) -> Path:
    """One bar per variant with an error bar (half the spread over seeds). With ``values`` (each seed's score),
    the seeds are dots and the baseline (``baseline``, else the first variant) is a band from its lowest to its
    highest seed across the plot, so a variant whose seeds all lie outside the band differs beyond the spread.
    ``intervals``: per variant, the paired 95 % interval of its difference from the baseline, drawn beside its bar
    from the baseline's mean (a red line that does not reach the baseline's mean: a difference beyond chance)."""
    plt = pyplot()
    names = list(means)
    base_name = baseline if baseline in means else names[0]
    fig, ax = plt.subplots(figsize=(max(4, 0.9 * len(names) + 1), 3.4))
    ax.bar(range(len(names)), [means[n] for n in names], yerr=[errors[n] for n in names], capsize=3, color="#4c72b0")
    if values and values.get(base_name):
        base = values[base_name]
        ax.axhspan(min(base), max(base), color="#dd8452", alpha=0.45, lw=0, zorder=3, label=f"{base_name}: seed range")
        for i, n in enumerate(names):
            ax.plot([i] * len(values.get(n, [])), values.get(n, []), "k.", ms=5, zorder=4)
    drawn = [(i, intervals[n]) for i, n in enumerate(names) if intervals and intervals.get(n)]
    if drawn:
        lows, highs = np.array([lo for _, (lo, _) in drawn]), np.array([hi for _, (_, hi) in drawn])
        ax.errorbar([i + 0.3 for i, _ in drawn], (lows + highs) / 2, yerr=(highs - lows) / 2, fmt="none",
                    ecolor="#c44e52", elinewidth=2, capsize=3, zorder=5,
                    label=f"paired 95% interval of the difference from {base_name}")
    if (values and values.get(base_name)) or drawn:
        ax.legend(fontsize=7, loc="upper right")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(metric)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def position_bias_plot(curves: dict[str, list[float | None]], path: Path | str) -> Path:
    """Pair accuracy in the five bins of the attribute-noun pair's relative position in the prompt (first to
    last), one line per name (a legend when a name is given); None marks a bin without pairs."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for name, acc in curves.items():
        ax.plot([b for b, a in enumerate(acc) if a is not None], [a for a in acc if a is not None], "o-", label=name)
    ax.set_xticks(range(5), ["first", "", "middle", "", "last"])
    ax.set_xlabel("relative position of the attribute-noun pair in the prompt")
    ax.set_ylabel("pair accuracy")
    ax.set_ylim(0, 1.05)
    if any(curves):
        ax.legend(fontsize=7)
    return save_figure(fig, path)
