"""One run per output folder: an advisory lock file, `<output_dir>/.textcondense.lock`.

The file holds the holder's pid, host, start time and command, and is locked with `flock` for as
long as the run lives; the kernel drops that lock when the process ends, however it ends. So:

- a second run into a folder whose lock is held is refused, naming the holder (pid, host, start);
- a lock file left behind by a run that died (kill -9, a crash, a lost node) is not held by
  anyone: the next run takes it over with a warning that names the dead holder;
- at the normal end of a run (and at interpreter exit) the lock file is removed.

Only rank 0 takes the lock (it is the one process that writes the folder).
"""
from __future__ import annotations

import atexit
import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Dict, Optional

from utils.errors import UserError

logger = logging.getLogger(__name__)

LOCK_NAME = ".textcondense.lock"

_HELD: Dict[str, int] = {}        # lock file path -> open descriptor holding the flock


class RunDirLocked(UserError):
    """Another live run writes the same output folder."""


def describe(holder: Optional[dict]) -> str:
    if not holder:
        return "a run that left no details"
    return (f"pid {holder.get('pid')} on host {holder.get('host')}, started "
            f"{holder.get('started', '?')}")


def _read(fd: int) -> Optional[dict]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 1 << 16).decode("utf-8", "replace")
        return json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None


def _alive_here(holder: Optional[dict]) -> bool:
    """Whether the holder is a live process on this host (used only where flock is unsupported)."""
    if not holder or holder.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(holder.get("pid", -1)), 0)
        return True
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError):
        return True


def acquire(out_dir: Path) -> Optional[dict]:
    """Take the output folder's lock for this process (idempotent); RunDirLocked when a live run
    holds it. Returns the record of a dead run whose lock was taken over (to be logged as a
    warning, see `taken_over_message`), else None."""
    path = Path(out_dir) / LOCK_NAME
    key = os.path.realpath(path)
    if key in _HELD:
        return None
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN) or _alive_here(holder):
                os.close(fd)
                raise RunDirLocked(f"output folder {out_dir} is in use by another run "
                                   f"({describe(holder)}; lock file {path}): wait for it to "
                                   f"end, or choose another --output_dir") from None
            # flock unsupported here (some network file systems): the pid check above decided
        try:                          # the file locked must still be the one at `path`
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    previous = _read(fd)
    if previous and previous.get("pid") == os.getpid():
        previous = None
    record = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": sys.argv}
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(record) + "\n").encode())
    _HELD[key] = fd
    return previous


def taken_over_message(out_dir: Path, previous: dict) -> str:
    return (f"output folder {out_dir}: taking over the lock of a run that is no longer running "
            f"({describe(previous)})")


def release_all() -> None:
    """Remove and unlock every lock this process holds (the file goes while still locked, so no
    other run can lock the old file meanwhile)."""
    for key, fd in list(_HELD.items()):
        try:
            if os.path.exists(key) and os.stat(key).st_ino == os.fstat(fd).st_ino:
                os.unlink(key)
        except OSError:
            pass
        try:
            os.close(fd)
        except OSError:
            pass
        _HELD.pop(key, None)


def holds(out_dir: Path) -> bool:
    return os.path.realpath(Path(out_dir) / LOCK_NAME) in _HELD


atexit.register(release_all)
