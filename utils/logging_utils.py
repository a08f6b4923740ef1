"""Per-rank logging: rank 0 logs at the configured level to the console and to `print.log`;
other ranks log warnings and errors only (prefixed with their rank)."""
from __future__ import annotations

import logging
import os
import sys
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


def progress(iterable=None, *, enabled: bool, **kw):
    """A tqdm bar on rank 0 only (`enabled`), on an interactive terminal only: redirected output
    (log files, CI) gets the periodic log lines instead of carriage-return noise.
    TEXTCONDENSE_PROGRESS=1 forces bars on, =0 off."""
    force = os.environ.get("TEXTCONDENSE_PROGRESS")
    show = enabled and (sys.stderr.isatty() if force is None else force == "1")
    return tqdm(iterable, disable=not show, dynamic_ncols=True, leave=False, **kw)
