"""Per-rank logging: rank 0 logs at the configured level to the console and to `print.log`;
other ranks log warnings and errors only (prefixed with their rank)."""
from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Optional

from tqdm.auto import tqdm

FORMAT = "%(asctime)s %(levelname).1s [rank %(rank)s] %(name)s: %(message)s"


class _RankFilter(logging.Filter):
    def __init__(self, rank: int):
        super().__init__()
        self.rank = rank

    def filter(self, record: logging.LogRecord) -> bool:
        record.rank = self.rank
        return True


def setup_logging(rank: int = 0, level: str = "info", log_file: Optional[str] = None) -> None:
    """Configure the root logger once per process (re-calling replaces the handlers)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    lvl = getattr(logging, level.upper()) if rank == 0 else logging.WARNING
    root.setLevel(lvl)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file and rank == 0:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    for h in handlers:
        h.setFormatter(logging.Formatter(FORMAT, datefmt="%H:%M:%S"))
        h.addFilter(_RankFilter(rank))
        root.addHandler(h)
    for noisy in ("transformers", "urllib3", "filelock", "huggingface_hub", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:  # the transformers loading report and progress bars are noise here
        import transformers
        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except Exception:  # noqa: BLE001
        pass


class _LogProgress:
    """Progress for redirected output: a log line every `every` seconds (step, rate, ETA)."""

    def __init__(self, iterable, every: float, total: Optional[int] = None, desc: str = "", **_):
        self.iterable, self.every, self.desc = iterable, every, desc
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__")
                                                      else None)
        self.postfix: dict = {}

    def set_postfix(self, *args, **kw) -> None:
        self.postfix = {**(args[0] if args else {}), **kw}

    def __iter__(self):
        start = last = time.monotonic()
        for i, item in enumerate(self.iterable, 1):
            yield item
            now = time.monotonic()
            if now - last >= self.every:
                last = now
                rate = i / (now - start)
                eta = (f", ETA {_clock((self.total - i) / rate)}" if self.total and rate > 0
                       else "")
                extra = "".join(f" {k}={v}" for k, v in self.postfix.items())
                logging.getLogger("progress").info("%s: %d%s (%.2f/s%s)%s", self.desc or "progress",
                                                   i, f"/{self.total}" if self.total else "",
                                                   rate, eta, extra)


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def progress(iterable=None, *, enabled: bool, **kw):
    """Progress of a long loop on rank 0 only (`enabled`): a tqdm bar on an interactive terminal;
    redirected output (log files, CI) gets a log line every TEXTCONDENSE_LOG_SECONDS seconds
    (default 30: step, rate, ETA) instead of carriage-return noise. TEXTCONDENSE_PROGRESS=1 forces
    bars on, =0 off (and no periodic lines)."""
    force = os.environ.get("TEXTCONDENSE_PROGRESS")
    show = enabled and (sys.stderr.isatty() if force is None else force == "1")
    if enabled and not show and force is None:
        return _LogProgress(iterable, progress_seconds(), **kw)
    return tqdm(iterable, disable=not show, dynamic_ncols=True, leave=False, **kw)


def progress_seconds() -> float:
    """TEXTCONDENSE_LOG_SECONDS (default 30): seconds between progress lines; a value that is not
    a number >= 0 is a UserError naming the variable (checked when a run starts)."""
    from utils.errors import UserError

    raw = os.environ.get("TEXTCONDENSE_LOG_SECONDS", "30")
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise UserError(f"the environment variable TEXTCONDENSE_LOG_SECONDS is {raw!r}: it must "
                        f"be a number of seconds between progress lines (e.g. 30), or unset")
    return value
