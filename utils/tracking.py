"""Experiment tracking: scalars (losses, learning rates, accuracies) to the trackers of
`run.report_to` (Hugging Face's word; today 'tensorboard', through torch.utils.tensorboard).

    tracker = Tracker.for_run(cfg, run.out_dir, env)     # checks the package on every rank
    with tracker.activate():                             # the shared training loop logs to it
        ...
        tracker.log(step, {"condense/total_loss": 0.12}, lr=1e-3)   # names: "<group>/<what>"
        tracker.log_record("condense", it, rec)          # every number of a record dict
    tracker.close()

Only rank 0 writes (event files under <output_dir>/tensorboard/, `tensorboard --logdir` that
folder); on other ranks, and when `report_to` is empty, every call does nothing. The tracker is a
sink only: it never changes what a run computes, so a run with it equals one without.
`current()` is the tracker of the running stage (a no-op one outside `activate()`), which
`utils.training.train_steps` reports to when its caller names the series (`track=`).
"""
from __future__ import annotations

import contextlib
import importlib.util
import numbers
from pathlib import Path
from typing import Iterator, List, Optional

from utils.errors import UserError

TRACKERS = ("tensorboard",)


class TrackingError(UserError):
    """A tracker of run.report_to cannot be used (its package is missing)."""


class Tracker:
    """Writes scalars to every writer it holds; with none it is a no-op."""

    def __init__(self, writers: Optional[list] = None, log_dir: Optional[Path] = None):
        self._writers = list(writers or [])
        self.log_dir = log_dir

    @classmethod
    def for_run(cls, cfg, out_dir, env=None) -> "Tracker":
        """The trackers `cfg.run.report_to` asks for, writing under `out_dir` on rank 0. Every
        rank checks that the packages are there, so a missing one stops all ranks alike."""
        wanted = [name for name in cfg.run.report_to if name != "none"]
        if "tensorboard" in wanted and importlib.util.find_spec("tensorboard") is None:
            raise TrackingError("run.report_to: 'tensorboard' needs the tensorboard package: pip "
                                "install 'textcondense[tensorboard]' (or drop --report_to)")
        if not wanted or (env is not None and not env.is_main):
            return cls()
        from torch.utils.tensorboard import SummaryWriter

        log_dir = Path(out_dir) / "tensorboard"
        return cls([SummaryWriter(log_dir=str(log_dir))], log_dir)

    @property
    def enabled(self) -> bool:
        return bool(self._writers)

    def log(self, step: int, scalars: Optional[dict] = None, **more) -> None:
        """One point per scalar at `step`; non-numbers (and booleans) are skipped."""
        if not self._writers:
            return
        for name, value in {**(scalars or {}), **more}.items():
            if isinstance(value, numbers.Real) and not isinstance(value, bool):
                for w in self._writers:
                    w.add_scalar(name, float(value), int(step))

    def log_record(self, group: str, step: int, record: dict, skip: tuple = ("iteration", "step")
                   ) -> None:
        """Every number of a record (e.g. a condensation iteration's losses and lr) as
        `<group>/<key>`."""
        if self._writers:
            self.log(step, {f"{group}/{k}": v for k, v in record.items() if k not in skip})

    def flush(self) -> None:
        for w in self._writers:
            w.flush()

    def close(self) -> None:
        for w in self._writers:
            w.close()
        self._writers = []

    @classmethod
    @contextlib.contextmanager
    def session(cls, cfg, out_dir, env=None) -> Iterator["Tracker"]:
        """`for_run`, active for the block (what `current()` returns), closed when it ends: a
        stage's `tracker = stack.enter_context(Tracker.session(cfg, out_dir, env))`."""
        tracker = cls.for_run(cfg, out_dir, env)
        try:
            with tracker.activate():
                yield tracker
        finally:
            tracker.close()

    @contextlib.contextmanager
    def activate(self) -> Iterator["Tracker"]:
        """Make this the tracker `current()` returns (the shared training loop logs to it);
        flushed when the block ends."""
        _ACTIVE.append(self)
        try:
            yield self
        finally:
            _ACTIVE.remove(self)
            self.flush()


_ACTIVE: List[Tracker] = []
_OFF = Tracker()


def current() -> Tracker:
    """The innermost active tracker, or a no-op one."""
    return _ACTIVE[-1] if _ACTIVE else _OFF
