"""What a person looks at after a run: the loss curve and a text preview of the synthetic data."""
from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

import torch

from utils.io import atomic_write_text
from utils.plots import pyplot, save_figure
from utils.text_sets import nearest_tokens


def plot_loss_curve(history: List[dict], path: Path) -> None:
    """Each loss term's value per iteration (one panel each), written atomically."""
    plt = pyplot()

    if not history:
        return
    its = [h["iteration"] for h in history]
    titles = {"match_loss": "matching loss (sum over classes)",
              "calib_loss": "calibration loss (sum over classes)",
              "traj_loss": "trajectory loss (normalised distance)"}
    keys = list(dict.fromkeys(k for h in history for k in h if k.endswith("_loss")))
    panels = [(k, titles.get(k, k.replace("_", " "))) for k in keys]
    if not panels:                    # every iteration so far was skipped (non-finite)
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, (key, title) in zip(axes[0], panels):
        values = [h.get(key, float("nan")) for h in history]
        ax.plot(its, values, lw=0.8, alpha=0.45, label="per iteration")
        window = max(1, len(values) // 20)
        if window > 1:                 # the expert and lam change every step: show the trend too
            smooth = [sum(values[max(0, i - window + 1):i + 1]) / len(values[max(0, i - window + 1):i + 1])
                      for i in range(len(values))]
            ax.plot(its, smooth, lw=2, label=f"moving average ({window})")
            ax.legend(fontsize=8)
        ax.set_title(title)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def write_preview(saved: dict, tokenizer, table: torch.Tensor, class_names: Sequence[str],
                  path: Path) -> None:
    """One line per synthetic sequence: its class and the nearest tokens of its unmasked positions."""
    ids = nearest_tokens(saved["inputs_embeds"], table.cpu())
    lines = ["# nearest vocabulary tokens of each synthetic sequence (positions with mask = 1)"]
    for n in range(ids.shape[0]):
        keep = saved["attention_mask"][n].bool()
        text = tokenizer.decode(ids[n][keep].tolist(), skip_special_tokens=False)
        lines.append(f"[{class_names[int(saved['class_of'][n])]}] {text}")
    atomic_write_text(path, "\n".join(lines) + "\n")


def main(argv=None) -> None:
    """Redraw a run's loss curve: python -m condenser.report RUN_DIR [OUT.png]"""
    import argparse
    import json

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("run_dir", type=Path)
    p.add_argument("out", type=Path, nargs="?")
    a = p.parse_args(argv)
    history = json.loads((a.run_dir / "loss_history.json").read_text())
    plot_loss_curve(history, a.out or a.run_dir / "images" / "loss_curve.png")


if __name__ == "__main__":
    main()
