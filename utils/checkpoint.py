"""Resumable checkpoints (condensation, distillation): a folder per step, complete only with its marker.

    <output_dir>/checkpoints/iter_<NNNNNN>/state.pt      everything needed to continue
    <output_dir>/checkpoints/iter_<NNNNNN>/COMPLETE      metadata, written last: the marker

A folder without COMPLETE (a run killed while saving) is never picked; the marker holds the state
file's SHA-256, so a torn or altered file is detected and the next older checkpoint is used
(`load_latest`). Only rank 0 reads or writes these files; other ranks receive the state through a
broadcast.
"""
from __future__ import annotations

import hashlib
import logging
import re
import shutil
from pathlib import Path
from typing import Iterable, List, Optional, Tuple

from utils.config_schema import ADDED_LATER
from utils.errors import UserError
from utils.io import ArtifactError, atomic_torch_save, atomic_write_json, read_json, safe_torch_load

logger = logging.getLogger(__name__)

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


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_checkpoint(state: dict, out_dir: Path, iteration: int, keep: int = 2) -> Path:
    """Write state, then the marker holding the state's checksum; keep the newest `keep` complete
    checkpoints."""
    d = checkpoint_dir(out_dir, iteration)
    d.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(state, d / STATE)
    atomic_write_json(d / MARKER, {"iteration": iteration, "state": STATE,
                                   "sha256": _sha256(d / STATE)})
    for _, old in complete_checkpoints(out_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return d


def load_checkpoint(path: Path) -> dict:
    """A checkpoint's state; refused (ArtifactError) when its file does not match the marker's
    checksum (a torn or altered file) or cannot be loaded safely."""
    path = Path(path)
    marker = read_json(path / MARKER)
    want = marker.get("sha256") if isinstance(marker, dict) else None
    if want and _sha256(path / STATE) != want:
        raise ArtifactError(f"{path / STATE} does not match the checksum in its {MARKER} marker "
                            f"(a torn or altered file)")
    return safe_torch_load(path / STATE)


def load_latest(out_dir: Path) -> Optional[Tuple[Path, dict]]:
    """The newest complete checkpoint that loads, with its state; a newer one that does not load
    is skipped with a warning naming it and why. None when there is none."""
    for _, path in reversed(complete_checkpoints(out_dir)):
        try:
            return path, load_checkpoint(path)
        except (ArtifactError, ValueError, OSError) as exc:
            logger.warning("skipping checkpoint %s: %s", path, exc)
    return None


# Not a config key: the SHA-256 of the training data as read (`utils.data.content_hash`), so a
# data file edited in place is never resumed into a checkpoint of the old data.
DATA_KEY = "dataset.content_sha256"


def settings_view(cfg_dict: dict, allowed: Iterable[str]) -> dict:
    """The config as {"section.key": value}, without the keys (or "section.*") a resumed run may
    change, plus the content hash of the training data (DATA_KEY; reading the data when this
    process has not yet); everything else shapes the saved state and must match to resume."""
    allowed = set(allowed)
    out = {}
    for section, values in cfg_dict.items():
        if f"{section}.*" in allowed:
            continue
        for key, value in values.items():
            if f"{section}.{key}" not in allowed:
                out[f"{section}.{key}"] = value
    if isinstance(cfg_dict.get("dataset"), dict) and "dataset.*" not in allowed:
        from utils.config_schema import DatasetConfig
        from utils.data import training_data_hash
        from utils.readers import DataError
        try:
            out[DATA_KEY] = training_data_hash(DatasetConfig(**cfg_dict["dataset"]))
        except (DataError, TypeError):
            pass                                  # unreadable: loading the data reports it
    return out


_MISSING = object()


def settings_diff(saved: dict, current: dict) -> List[str]:
    """'key: saved -> now' for every setting that differs (the data hash only when the
    checkpoint recorded one, and utils.config_schema.ADDED_LATER keys at their old value:
    checkpoints of older versions resume as before)."""
    out = []
    for k in sorted(set(saved) | set(current)):
        if saved.get(k) == current.get(k) or (k == DATA_KEY and k not in saved):
            continue
        if k not in saved and current.get(k) == ADDED_LATER.get(k, _MISSING):
            continue
        if k == DATA_KEY:
            out.append(f"the training data changed (content sha256 {str(saved.get(k))[:12]} -> "
                       f"{str(current.get(k))[:12]})")
        else:
            out.append(f"{k}: {saved.get(k, '(unset)')!r} -> {current.get(k, '(unset)')!r}")
    return out


def check_target(out_dir: Path, target: int, key: str = "condense.niter") -> None:
    """The niter rule: a run whose target (`key`, e.g. condense.niter = 10) is LOWER than the
    newest complete checkpoint of its folder (iteration 30) is refused: that folder's set is of
    iteration 30, and iteration 10's state is gone. Raises TargetBehindError naming both numbers
    and the ways on."""
    found = complete_checkpoints(out_dir)
    if found and found[-1][0] > target:
        newest, path = found[-1]
        older = Path(out_dir) / "distilled_data" / f"syn_data_{target}.pth"
        keep = (f" (the set of iteration {target} is still there: {older})" if older.is_file()
                else "")
        raise TargetBehindError(
            f"{key} is {target} but {out_dir} already holds a checkpoint of iteration {newest} "
            f"({path}); a run never goes back, so this is refused{keep}. Set --set {key}={newest} "
            f"(or more) to continue it, or choose another --output_dir (or --set "
            f"run.resume=never to move the earlier run aside) to start afresh at {target}")


class TargetBehindError(UserError):
    """The configured number of iterations is lower than the newest checkpoint's."""


def check_resumable(state: dict, current: dict, path: Path) -> None:
    """Refuse to resume a checkpoint made with other settings (ResumeError lists them)."""
    diff = settings_diff(state.get("settings", {}), current)
    if diff:
        raise ResumeError(f"{path} was made with other settings ({'; '.join(diff)}). Resuming it "
                          f"would mix two runs: use another --output_dir, or --set "
                          f"run.resume=never to start afresh here (the earlier run's outputs are "
                          f"moved to <name>.old-<time>).")


def set_aside(out_dir: Path, names: Iterable[str] = ("checkpoints", "distilled_data"),
              reason: str = "run.resume=never") -> List[Path]:
    """Move an earlier run's outputs (folders or files: checkpoints, saved sets, its args.log and
    histories) out of the way to <name>.old-<time>, logging `reason`; nothing is deleted
    (`run.resume=never`, and an evaluation into a folder that holds one)."""
    import time
    stamp = time.strftime("%Y%m%d-%H%M%S")
    moved = []
    for name in names:
        root = Path(out_dir) / name
        if root.exists():
            dest = root.with_name(f"{name}.old-{stamp}")
            root.rename(dest)
            moved.append(dest)
            logger.warning("%s: the earlier %s moved to %s", reason, name, dest)
    return moved


class ResumeError(UserError):
    """The output folder holds a checkpoint of another run."""
