"""Where configuration files and outputs live, in a checkout and in an installed package.

In a source checkout the project root is the checkout (the folder holding `pyproject.toml` and
`config/`): shipped configs are `config/...`, and relative paths in YAML (caches, experts, results)
resolve against it. Installed from a wheel (`pip install textcondense`), the shipped configs are
package data (`textcondense/config/` in site-packages) and the project root is the current
directory, so results and caches land where the user runs the command, never in site-packages.
`TEXTCONDENSE_HOME` overrides the project root in both cases.

A shipped config can be named instead of given as a path: `demo`, `smoke`, `ipc10/bbc`,
`config/ipc10/bbc.yaml` all resolve (a path that exists always wins).

Per-ipc layers: `config/ipc<N>/_shared.yaml` holds the settings tuned for N synthetic sequences per
class (`ipc_layer`); `utils.config` applies it for `--ipc N` when the chosen config has none.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import List, Optional

_PACKAGE_PARENT = Path(__file__).resolve().parents[1]      # the checkout, or site-packages


def in_checkout() -> bool:
    """True when this code runs from a source checkout (editable install or PYTHONPATH)."""
    return ((_PACKAGE_PARENT / "pyproject.toml").is_file()
            and (_PACKAGE_PARENT / "config" / "base.yaml").is_file())


def project_root() -> Path:
    """The folder relative YAML paths and default outputs resolve against (see the module doc)."""
    home = os.environ.get("TEXTCONDENSE_HOME")
    if home:
        return Path(home).expanduser().resolve()
    return _PACKAGE_PARENT if in_checkout() else Path.cwd().resolve()


def shipped_config_dir() -> Path:
    """The shipped configs: `config/` of the checkout, else the installed package data."""
    if in_checkout():
        return _PACKAGE_PARENT / "config"
    return _PACKAGE_PARENT / "textcondense" / "config"


def shipped_names() -> List[str]:
    """Every shipped config by name (`demo`, `ipc10/bbc`, ...), layers (`_shared`) left out."""
    root = shipped_config_dir()
    if not root.is_dir():
        return []
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.yaml")
                  if not p.name.startswith("_"))


def find_config(name: str) -> Optional[Path]:
    """The file `--config_path name` means: an existing path as given, else a shipped config by
    name (with or without `config/` and `.yaml`); None when neither exists."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    root = shipped_config_dir()
    rel = Path(name).as_posix()
    rel = rel[len("config/"):] if rel.startswith("config/") else rel
    for candidate in (root / rel, root / f"{rel}.yaml"):
        if candidate.is_file():
            return candidate
    return None


_IPC_DIR = re.compile(r"^ipc(\d+)$")


def is_ipc_layer(path: Path) -> bool:
    """A per-ipc settings file (`ipc<N>/_shared.yaml`, shipped or a copy)."""
    return path.name == "_shared.yaml" and bool(_IPC_DIR.match(path.parent.name))


def ipc_layer(ipc: int) -> Optional[Path]:
    """The shipped settings for `ipc` sequences per class, or None when none is shipped."""
    path = shipped_config_dir() / f"ipc{ipc}" / "_shared.yaml"
    return path if path.is_file() else None


def shipped_ipcs() -> List[int]:
    root = shipped_config_dir()
    return sorted(int(m.group(1)) for p in root.glob("ipc*") if (m := _IPC_DIR.match(p.name))
                  and (p / "_shared.yaml").is_file())


def display(path: Path) -> str:
    """A shipped file as `config/...`, any other file as given."""
    try:
        return "config/" + Path(path).resolve().relative_to(shipped_config_dir().resolve()).as_posix()
    except ValueError:
        return str(path)
