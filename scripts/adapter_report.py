"""The LLMDiff adapter's own report: learned gates per U-Net layer, parameter counts, training speed.

    python scripts/adapter_report.py [--adapter models/shapes-unet-adapter] [--base models/shapes-unet-base]

* Gates: a1 exp(b1) (the frozen original cross-attention, reading phi(c)) and a2 exp(b2) (the new
  attention reading the LLM encoding) of every attn2 layer, as a bar plot (LLMDiff's Figure 5).
* Parameters: the base U-Net (all trained when it was made) vs the adapter's trainable part.
* Training speed: images/s of one optimiser step of the base (all weights) vs the adapter (frozen
  U-Net, gradients through it to the adapter), same batch, same thread count, same process.

Writes docs/adapter/{gates.png, report.md, report.json}. The quality comparison (same seeds, four
suites) is `llmdiff experiment configs/experiments/adapter.yaml` -> docs/results/adapter/.
"""

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_denoisers import train_rate  # noqa: E402

from llmdiff.encoders import TextInput  # noqa: E402
from llmdiff.model_folder import load_denoiser  # noqa: E402
from llmdiff.utils import atomic_write_text  # noqa: E402


def gate_plot(gates: dict[str, tuple[float, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n.replace(".transformer_blocks.0.attn2", "").replace("_blocks", "").replace("attentions.", "a")
             for n in gates]
    orig, new = [g[0] for g in gates.values()], [g[1] for g in gates.values()]
    x = torch.arange(len(names)).numpy()
    fig, ax = plt.subplots(figsize=(max(5, 0.7 * len(names) + 2), 3.4))
    ax.bar(x - 0.2, orig, 0.4, label="original attention  a1·exp(b1)", color="#8c8c8c")
    ax.bar(x + 0.2, new, 0.4, label="LLM attention  a2·exp(b2)", color="#dd8452")
    ax.axhline(1.0, color="k", lw=0.6, ls=":")
    ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("gate value")
    ax.set_title("LLMDiff adapter: learned gates per U-Net cross-attention (down → mid → up)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adapter", default="models/shapes-unet-adapter")
    ap.add_argument("--base", default="models/shapes-unet-base")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="docs/adapter")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)

    adapted, base = load_denoiser(Path(a.adapter)), load_denoiser(Path(a.base))
    # the U-Net's own order of the processors is down, up, mid; show the path of the signal instead
    stage = lambda n: ("down" in n, "mid" in n, "up" in n).index(True)  # noqa: E731
    gates = {n: p.gates for n, p in sorted(adapted.processors.items(), key=lambda kv: stage(kv[0]))}
    gate_plot(gates, out / "gates.png")

    base_params = sum(p.numel() for p in base.parameters())
    adapter_params = sum(p.numel() for p in adapted.parameters() if p.requires_grad)
    phi = sum(p.phi.weight.numel() + p.phi.bias.numel() for p in adapted.processors.values() if hasattr(p, "phi"))

    c = adapted.config
    shape = (c.in_channels, c.sample_size, c.sample_size)
    n_groups = c.text_outputs[0]
    length = 24
    llm = [TextInput(torch.randn(64, n_groups, length, c.text_dims[0]) if n_groups > 1
                     else torch.randn(64, length, c.text_dims[0]), torch.ones(64, length, dtype=torch.bool))]
    enc = [TextInput(torch.randn(64, length, base.config.text_dims[0]), torch.ones(64, length, dtype=torch.bool))]
    rates = {}
    for label, model, text in (("base U-Net (all weights train)", base, enc), ("LLMDiff adapter (U-Net frozen)", adapted, llm)):
        model.train()
        bench_texts = lambda b, t=text: t  # noqa: E731  (the bench helper asks for texts by batch size)
        rates[label] = train_rate_with(model, shape, a.seconds, bench_texts)
        print(f"{label}: {rates[label]:.1f} img/s", flush=True)

    report = {"gates": {n: {"original": g[0], "llm": g[1]} for n, g in gates.items()},
              "base_parameters": base_params, "adapter_trainable_parameters": adapter_params,
              "adapter_phi_parameters": phi, "train_images_per_s": rates, "threads": a.threads,
              "adapter": a.adapter, "base": a.base}
    atomic_write_text(out / "report.json", json.dumps(report, indent=2) + "\n")
    lines = ["# LLMDiff adapter on the Shapes base U-Net", "",
             f"Adapter: `{a.adapter}`; base: `{a.base}`. Measured by `python scripts/adapter_report.py` "
             f"({a.threads} thread(s), batch 64, {shape[1]}×{shape[2]}×{shape[0]} input).", "",
             "| | parameters | train img/s |", "|---|---:|---:|",
             f"| base U-Net (trained from scratch, all weights) | {base_params / 1e6:.2f}M | "
             f"{rates['base U-Net (all weights train)']:.0f} |",
             f"| LLMDiff adapter (trainable; U-Net frozen) | {adapter_params / 1e6:.2f}M | "
             f"{rates['LLMDiff adapter (U-Net frozen)']:.0f} |", "",
             "Learned gates (`a·exp(b)`; both start at 1.0, the LLM branch's output projection starts at zero):", "",
             "| layer | original | LLM |", "|---|---:|---:|"]
    lines += [f"| {n} | {g[0]:.3f} | {g[1]:.3f} |" for n, g in gates.items()]
    lines += ["", "![gates](gates.png)", "",
              "Quality, base vs adapter on the same seeds: [docs/results/adapter](../results/adapter/results.md)."]
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    print(f"wrote {out}/report.md")


def train_rate_with(model, shape, seconds, texts_fn):
    """bench_denoisers.train_rate with this model's own text inputs."""
    import bench_denoisers

    saved = bench_denoisers.texts
    bench_denoisers.texts = texts_fn
    try:
        return train_rate(model, shape, seconds)
    finally:
        bench_denoisers.texts = saved


if __name__ == "__main__":
    main()
