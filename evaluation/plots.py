"""Evaluation figures: test accuracy vs training step, the synthetic set's accuracy vs
condensation iteration, and a 2-D projection of expert features.

Both are drawn with matplotlib's Agg backend and written atomically (`utils.plots`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from evaluation.results import best_by_validation, val_score
from utils.plots import pyplot, save_figure


def mean_curve(runs: Sequence[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps, mean and std of the test accuracy over runs (steps every run evaluated)."""
    curves = [dict((int(s), float(a)) for s, a in r["curve"]) for r in runs if r.get("curve")]
    if not curves:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    values = np.array([[c[s] for s in steps] for c in curves])       # [runs, steps]
    return np.array(steps), values.mean(0), values.std(0)


def plot_accuracy_vs_step(entries: Sequence[dict], path: Path, note: str = "") -> None:
    """One line per method: mean test accuracy over runs (band: ± std) against training step;
    `note` says which test rows the points before the last step used."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for e in entries:
        steps, mean, std = mean_curve(e["runs"])
        if len(steps) == 0:
            continue
        line, = ax.plot(steps, mean, marker="o", ms=3, lw=1.2, label=e["method"])
        ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.15)
    ax.set_xlabel("training step")
    ax.set_ylabel("test accuracy")
    ax.set_title("test accuracy vs step (mean ± std over runs)" + (f"\n{note}" if note else ""),
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def plot_eval_curve(curve: Sequence[dict], path: Path) -> None:
    """The synthetic set's accuracy against condensation iteration (eval_curve.json points):
    test (band: ± std over runs) and, where scored, the validation slice, with the iteration it
    chooses (`best_by_validation`) marked."""
    best = best_by_validation(list(curve))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    its = np.array([c["iteration"] for c in curve])
    test = np.array([c["accuracy_mean"] for c in curve])
    std = np.array([c["accuracy_std"] for c in curve])
    line, = ax.plot(its, test, marker="o", ms=4, lw=1.2, label="test split")
    ax.fill_between(its, test - std, test + std, color=line.get_color(), alpha=0.15)
    scored = [c for c in curve if val_score(c, "_mean") is not None]
    if scored:
        v_its = np.array([c["iteration"] for c in scored])
        val = np.array([val_score(c, "_mean") for c in scored])
        f1 = any(c.get("val_micro_f1_mean") is not None for c in scored)
        line, = ax.plot(v_its, val, marker="s", ms=4, lw=1.2,
                        label="validation micro-F1 (chooses)" if f1 else "validation slice (chooses)")
        if not f1 and all(c.get("val_accuracy_std") is not None for c in scored):
            v_std = np.array([c["val_accuracy_std"] for c in scored])
            ax.fill_between(v_its, val - v_std, val + v_std, color=line.get_color(), alpha=0.15)
    if best is not None:
        ax.axvline(best["iteration"], color="grey", ls="--", lw=1,
                   label=f"kept: iteration {best['iteration']}")
    ax.set_xlabel("condensation iteration")
    ax.set_ylabel("accuracy")
    runs = curve[0]["num_eval"] if curve else 0
    ax.set_title(f"synthetic set accuracy vs iteration (mean over {runs} classifiers)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def project_2d(feats: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """[n, H] -> [n, 2] by PCA or t-SNE (scikit-learn)."""
    feats = np.asarray(feats, dtype=np.float64)
    n = len(feats)
    if n < 3:
        return np.pad(feats[:, :2], ((0, 0), (0, max(0, 2 - feats.shape[1]))))
    if method == "tsne":
        from sklearn.manifold import TSNE
        perplexity = float(min(30.0, max(2.0, (n - 1) / 3)))
        return TSNE(n_components=2, perplexity=perplexity, init="pca",
                    random_state=seed % (2 ** 32)).fit_transform(feats)
    from sklearn.decomposition import PCA
    return PCA(n_components=2, random_state=seed % (2 ** 32)).fit_transform(feats)


def plot_projection(real_feats: np.ndarray, real_labels: np.ndarray, syn_feats: np.ndarray,
                    syn_labels: np.ndarray, class_names: Sequence[str], path: Path,
                    method: str = "pca", seed: int = 0, title: Optional[str] = None) -> None:
    """Real test samples (small dots) and synthetic samples (large outlined markers), coloured by
    class, projected together to 2-D.

    real_feats [n, H], real_labels [n] (class index; first class for multi-label), likewise syn.
    """
    plt = pyplot()
    both = project_2d(np.concatenate([real_feats, syn_feats]), method, seed)
    real2, syn2 = both[:len(real_feats)], both[len(real_feats):]
    cmap = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    for c, name in enumerate(class_names):
        color = cmap(c % cmap.N)
        r = real_labels == c
        s = syn_labels == c
        if r.any():
            ax.scatter(real2[r, 0], real2[r, 1], s=8, color=color, alpha=0.45, label=f"{name}")
        if s.any():
            ax.scatter(syn2[s, 0], syn2[s, 1], s=140, color=color, marker="*",
                       edgecolors="black", linewidths=0.8)
    ax.scatter([], [], s=140, marker="*", color="white", edgecolors="black", label="synthetic")
    ax.set_title(title or f"expert features ({method.upper()}): test dots, synthetic stars")
    ax.legend(fontsize=7, markerscale=1.0, loc="best")
    ax.grid(alpha=0.2)
    fig.tight_layout()
    save_figure(fig, path)
