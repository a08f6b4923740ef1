"""Reading one config file: what kind of path it is, and YAML without silent surprises.

- a path that is a symlink loop, a FIFO, a device or a folder is named as such (not "does not
  exist"); a `base:` entry that is missing names the file whose `base:` line to fix;
- an empty file (or one of comments only) is refused: it would otherwise start the full default
  job without a word;
- a key given twice in one mapping is refused with both line numbers (YAML's default, the last
  one wins silently).
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Optional

import yaml

from utils.errors import UserError


class ConfigFileError(UserError):
    """A config file that cannot be used as it is; the message names it and the fix."""


def check_config_file(path: str | os.PathLike, base_of: Optional[Path] = None) -> None:
    """Refuse a config path that is not a readable regular file, saying what it is instead.
    `base_of`: the file whose `base:` entry named `path` (the line to fix)."""
    path = Path(path)
    where = f" (named by the base: entry of {base_of}; fix that line)" if base_of else ""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ConfigFileError(f"config file {path} is a symlink loop{where}; point it at a "
                                  f"YAML file") from None
        if exc.errno == errno.ENOENT and os.path.lexists(path):
            raise ConfigFileError(f"config file {path} is a broken symlink{where}") from None
        if exc.errno == errno.ENOENT and base_of is not None:
            raise ConfigFileError(f"{base_of}: its base {path} does not exist; fix the base: "
                                  f"line of {base_of.name}") from None
        if exc.errno == errno.ENOENT:
            return                     # not there: the caller's "not found" advice applies
        raise ConfigFileError(f"config file {path}: cannot be read ({exc.strerror}){where}"
                              ) from None
    if stat.S_ISDIR(mode):
        raise ConfigFileError(f"config file {path} is a folder{where}; give a YAML file in it")
    if not stat.S_ISREG(mode):
        kind = "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "not a regular file"
        raise ConfigFileError(f"config file {path} is {kind}{where}; give a YAML file")


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key repeated within one mapping."""


def _construct_mapping(loader, node, deep=False):
    seen: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:
            continue
        if key in seen:
            raise ConfigFileError(f"{loader.name}: the key {key!r} is given twice in one mapping "
                                  f"(lines {seen[key]} and {key_node.start_mark.line + 1}); "
                                  f"keep one")
        seen[key] = key_node.start_mark.line + 1
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                                 _construct_mapping)


def load_yaml_file(path: str | os.PathLike) -> dict:
    """The YAML mapping of a config file; refused (ConfigFileError) when empty, not valid YAML,
    or holding a key twice."""
    path = Path(path)
    check_config_file(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigFileError(f"{path}: not valid UTF-8 at byte {exc.start}") from None
    loader = _UniqueKeyLoader(text)
    loader.name = str(path)
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as exc:
        raise ConfigFileError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    finally:
        loader.dispose()
    if data is None:
        raise ConfigFileError(f"{path} holds no settings (empty, or comments only); give a "
                              f"config with the sections to set, e.g. config/demo.yaml (or "
                              f"base: base.yaml for every default)")
    return data
