"""Resumable checkpoints (condensation, distillation): a folder per step, complete only with its marker.

    <output_dir>/checkpoints/iter_<NNNNNN>/state.pt      everything needed to continue
    <output_dir>/checkpoints/iter_<NNNNNN>/COMPLETE      metadata, written last: the marker

A folder without COMPLETE (a run killed while saving) is never picked. Only rank 0 reads or writes
these files; other ranks receive the state through a broadcast.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Optional

from utils.io import atomic_torch_save, atomic_write_json, safe_torch_load

MARKER = "COMPLETE"
STATE = "state.pt"


def checkpoint_dir(out_dir: Path, iteration: int) -> Path:
    return Path(out_dir) / "checkpoints" / f"iter_{iteration:06d}"


def complete_checkpoints(out_dir: Path) -> list[tuple[int, Path]]:
    root = Path(out_dir) / "checkpoints"
    found = []
    for d in root.glob("iter_*") if root.is_dir() else []:
        m = re.fullmatch(r"iter_(\d+)", d.name)
        if m and (d / MARKER).is_file() and (d / STATE).is_file():
            found.append((int(m.group(1)), d))
    return sorted(found)


def latest_checkpoint(out_dir: Path) -> Optional[Path]:
    found = complete_checkpoints(out_dir)
    return found[-1][1] if found else None


def save_checkpoint(state: dict, out_dir: Path, iteration: int, keep: int = 2) -> Path:
    """Write state then marker; keep the newest `keep` complete checkpoints."""
    d = checkpoint_dir(out_dir, iteration)
    d.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(state, d / STATE)
    atomic_write_json(d / MARKER, {"iteration": iteration, "state": STATE})
    for _, old in complete_checkpoints(out_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return d


def load_checkpoint(path: Path) -> dict:
    return safe_torch_load(Path(path) / STATE)
