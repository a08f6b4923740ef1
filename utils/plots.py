"""Figures: matplotlib's Agg backend, and atomic PNG writing.

Figures are drawn with matplotlib's Agg backend and written atomically (temporary file + rename).
"""
from __future__ import annotations

from pathlib import Path

from utils.io import atomic_write


def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path: Path) -> None:
    """Write a figure as PNG atomically (temp file + os.replace) and close it."""
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    finally:
        pyplot().close(fig)
