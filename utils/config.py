"""Load, merge, validate and save configurations.

Precedence: command line (flags and `--set section.key=value`) > YAML > schema defaults.
A YAML file may extend others with a top-level `base:` key (a path, or a list of paths, relative to
that file); the extending file wins. Every error names the key and the file (or flag) it came from.
`--config_path` also takes a shipped config by name (`demo`, `ipc10/bbc`; see utils.config_files)
and a run's `args.log` (a run record: the resolved config it saved, so the run can be replayed).
The settings tuned per ipc (`config/ipc<N>/_shared.yaml`) are applied for `--ipc N` when the
chosen config has none (`load_config`). The command line itself is built in utils.cli_args.
"""
from __future__ import annotations

import dataclasses
import os
import typing
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import yaml

from utils.config_files import (
    display,
    find_config,
    ipc_layer,
    is_ipc_layer,
    project_root,
    shipped_ipcs,
    shipped_names,
)
from utils.config_schema import Config
from utils.errors import UserError
from utils.yaml_files import check_config_file, load_yaml_file

PROJECT_ROOT = project_root()   # the checkout; installed: the current directory (config_files)
DEFAULTS = "defaults"
CLI = "command line"


class ConfigError(UserError):
    """A configuration problem, with the key and the source that caused it."""


# ----------------------------------------------------------------------------------------- YAML

def _merge(base: dict, over: dict, prov: dict, source: Optional[str], prefix: str = "") -> dict:
    """Recursively merge `over` into a copy of `base`, recording the source of each key
    (nothing is recorded when `source` is None)."""
    out = dict(base)
    for key, value in over.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value, prov, source, dotted + ".")
        else:
            out[key] = value
            if source is None:
                continue
            if isinstance(value, dict):
                for sub in _leaves(value, dotted + "."):
                    prov[sub] = source
            prov[dotted] = source
    return out


def _leaves(d: dict, prefix: str) -> Iterable[str]:
    for key, value in d.items():
        yield f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")


# A run record (`args.log`, written by `save_config`) holds the resolved config under `config:`
# beside these keys; `--config_path <run>/args.log` loads the recorded config (a replay).
RECORD_KEYS = ("stage", "argv", "world_size", "version")


def _read_file(path: Path) -> tuple[dict, list, Optional[dict]]:
    """(sections, bases, the run record's metadata or None) of one YAML file."""
    try:
        data = load_yaml_file(path)      # refuses empty files and keys given twice
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(data).__name__}")
    if isinstance(data.get("config"), dict) and set(data) - {"config"} <= set(RECORD_KEYS):
        record = {k: v for k, v in data.items() if k != "config"}
        return data["config"], [], record                # a run record: the config it recorded
    bases = data.pop("base", None)
    return data, [bases] if isinstance(bases, str) else list(bases or []), None


def _read_levels(path: str | os.PathLike, prov: dict, _seen: tuple = (),
                 visited: Optional[list] = None) -> tuple[dict, dict, Optional[dict]]:
    """(the merged files `path` extends, its own sections, its run record metadata or None), with
    provenance of the bases' keys recorded; every file read is appended to `visited`."""
    check_config_file(path, _seen[-1] if _seen else None)   # a loop, FIFO, missing base
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"{path}: 'base' chain loops back to this file")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path} (pass --config_path pointing to a YAML "
                          f"file, e.g. config/ipc10/bbc.yaml)")
    if visited is not None:
        visited.append(path)
    data, bases, record = _read_file(path)
    merged: dict = {}
    for base in bases:
        # the recursive call records where the base's keys came from
        merged = _merge(merged, read_yaml_chain(path.parent / base, prov, _seen + (path,), visited),
                        prov, None)
    return merged, data, record


def read_yaml_chain(path: str | os.PathLike, prov: dict, _seen: tuple = (),
                    visited: Optional[list] = None) -> dict:
    """Read a YAML file and the files it extends (`base:`), merged, with per-key provenance."""
    merged, own, _ = _read_levels(path, prov, _seen, visited)
    return _merge(merged, own, prov, source=str(Path(path).resolve()))


# ----------------------------------------------------------------------------------- validation

def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return "a mapping {" + ", ".join(f.name for f in dataclasses.fields(tp)) + "}"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(_type_name(a) for a in args) + " or null"
    if origin in (list, typing.List):
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin in (dict, typing.Dict) or tp is dict:
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp, where: str):
    """Check `value` against the annotation `tp`; return it (ints are accepted for floats)."""
    origin = typing.get_origin(tp)
    bad = ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is typing.Union:
        if value is None and type(None) in typing.get_args(tp):
            return None
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return _coerce(value, inner, where)
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise bad
        return value
    if dataclasses.is_dataclass(tp):
        return _build_section(tp, value, where)
    if origin in (dict, typing.Dict) or tp is dict:    # e.g. a component's options (see resolve)
        if not isinstance(value, dict):
            raise bad
        return dict(value)
    if origin in (list, typing.List):
        (inner,) = typing.get_args(tp)
        if not isinstance(value, list):
            if inner in (int, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
                value = [value]  # a single layer index may be written as a scalar
            else:
                raise bad
        return [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, str):      # YAML 1.1 reads '1e-3' (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise bad from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            if isinstance(value, (int, float, bool)):    # YAML read it as a number or a bool
                key = where.rsplit(": ", 1)[-1]
                raise ConfigError(f"{where}: expected str, got {value!r}; quote it to keep it "
                                  f"text (YAML '{value}', or --set \"{key}='{value}'\")")
            raise bad
        return value
    raise TypeError(f"unsupported schema type {tp}")


def _refuse_moved(cls, key: str, where: str) -> None:
    """A key the schema class lists in its `MOVED` map (old spelling -> where it lives now) is
    refused with that new place."""
    new = getattr(cls, "MOVED", {}).get(key)
    if new:
        raise ConfigError(f"{where}.{key} moved: {new}")


def _build_section(cls, value: Any, where: str):
    """A nested mapping (e.g. one entry of condense.objectives) checked against its dataclass."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected {_type_name(cls)}, got {value!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    for key in value:
        if key not in fields:
            _refuse_moved(cls, key, where)
            raise ConfigError(f"{where}: unknown key '{key}' (allowed: {', '.join(sorted(fields))})")
    obj = cls(**{k: _coerce(v, hints[k], f"{where}.{k}") for k, v in value.items()})
    for key, message in (obj.check() if hasattr(obj, "check") else ()):
        raise ConfigError(f"{where}.{key} = {getattr(obj, key)!r}: {message}")
    if hasattr(obj, "resolve"):       # e.g. a spec validates its options against a registry
        obj.resolve(where)
    return obj


build_section = _build_section   # public: component options (utils.registry) use it too


# path keys that may also hold a model alias or hub name ('all-MiniLM-L6-v2', 'mpnet', 'org/name')
MODEL_KEYS = ("model_path", "tokenizer_path", "eval_model_path", "teacher_path", "student_path")


def _resolve_path(value: Optional[str], source: str) -> Optional[str]:
    """Relative paths from YAML/defaults resolve against the project root, CLI ones against cwd."""
    if value is None or os.path.isabs(value):
        return value
    base = Path.cwd() if source == CLI else PROJECT_ROOT
    candidate = base / value
    return str(candidate)


def build_config(data: dict, prov: dict) -> Config:
    """Turn a merged dict into a validated `Config`; errors name the key and its source."""
    sections = {f.name: f for f in dataclasses.fields(Config)}
    kwargs = {}
    for name, value in data.items():
        if name not in sections:
            src = prov.get(name, DEFAULTS)
            raise ConfigError(f"{src}: unknown section '{name}' (allowed: {', '.join(sections)})")
        if not isinstance(value, dict):
            raise ConfigError(f"{prov.get(name, DEFAULTS)}: section '{name}' must be a mapping")
    for name, sec_field in sections.items():
        cls = sec_field.default_factory
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values = {}
        for key, value in (data.get(name) or {}).items():
            dotted = f"{name}.{key}"
            src = prov.get(dotted, DEFAULTS)
            _refuse_moved(cls, key, f"{src}: {name}")
            if key not in fields:
                raise ConfigError(f"{src}: unknown key '{dotted}' (allowed in '{name}': "
                                  f"{', '.join(fields)})")
            values[key] = _coerce(value, hints[key], f"{src}: {dotted}")
        section = cls(**values)
        for key, f in fields.items():
            if f.metadata.get("path"):
                src = prov.get(f"{name}.{key}", DEFAULTS)
                resolved = _resolve_path(getattr(section, key), src)
                # model names may be hub names or aliases: keep them unless the path exists
                if key in MODEL_KEYS and resolved is not None and not Path(resolved).exists():
                    continue
                setattr(section, key, resolved)
        for key, message in (section.check() if hasattr(section, "check") else ()):
            # a key never given is not the user's doing: no "defaults:" blame (e.g. load_path
            # unset when --init load asks for it)
            src = prov.get(f"{name}.{key}")
            where = f"{src}: " if src else ""
            raise ConfigError(f"{where}{name}.{key} = {getattr(section, key)!r}: {message}")
        if hasattr(section, "resolve"):   # options checked against a registry (utils.registry)
            section.resolve(lambda key, n=name: f"{prov.get(f'{n}.{key}', DEFAULTS)}: {n}.{key}")
        kwargs[name] = section
    return Config(**kwargs)


def parse_set(item: str) -> tuple[str, Any]:
    """Parse one `section.key=value` override; the value is read as YAML (`5`, `true`, `[1, 2]`)."""
    if "=" not in item or "." not in item.split("=", 1)[0]:
        raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. --set condense.niter=5")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    section, _, key = dotted.partition(".")
    if "." in key:
        raise ConfigError(f"{CLI}: '{dotted}': keys are section.key (one level)")
    data.setdefault(section, {})
    if not isinstance(data[section], dict):
        raise ConfigError(f"{CLI}: section '{section}' is not a mapping")
    data[section][key] = value


def _cli_value(overrides: Sequence[tuple[str, Any]], dotted: str) -> Any:
    values = [v for k, v in overrides if k == dotted]
    return values[-1] if values else None


def load_config(config_path: Optional[str] = None, overrides: Sequence[tuple[str, Any]] = ()) -> Config:
    """Defaults < YAML bases < the per-ipc layer < the YAML file's own keys < overrides
    (`(section.key, value)` pairs from the CLI).

    `config_path` is a YAML file, a run record (`<run>/args.log`: the recorded config), or a
    shipped config by name (`demo`, `ipc10/bbc`). The per-ipc layer (`config/ipc<N>/_shared.yaml`,
    the settings tuned for N sequences per class) is applied when the ipc is chosen on the command
    line (`--ipc N`) or in the file itself and no file of the chain is such a layer already; the
    resulting notes (which layer, if any) are kept for the run's log: `config_notes(cfg)`."""
    prov: dict = {}
    notes: list = []
    bases: dict = {}
    own: dict = {}
    visited: list = []
    record = path = None
    if config_path:
        check_config_file(config_path)
        path = find_config(str(config_path))
        if path is None:
            raise ConfigError(f"config file not found: {config_path} (give a YAML file, a run's "
                              f"args.log, or a shipped config by name: "
                              f"{', '.join(shipped_names())})")
        bases, own, record = _read_levels(path, prov, visited=visited)
    if record is not None:
        notes.append(f"replaying the run recorded in {path} (stage {record.get('stage')}, world "
                     f"size {record.get('world_size')}): the same world size reproduces it exactly")
    else:
        bases = _apply_ipc_layer(bases, own, overrides, visited, prov, notes)
    data = _merge(bases, own, prov, source=str(Path(path).resolve())) if path else bases
    for dotted, value in overrides:
        _set_dotted(data, dotted, value)
        prov[dotted] = CLI
        prov.setdefault(dotted.split(".")[0], CLI)
    cfg = build_config(data, prov)
    cfg._notes = notes            # not a config key: what loading decided, for the run's log
    return cfg


def _apply_ipc_layer(bases: dict, own: dict, overrides, visited: list, prov: dict,
                     notes: list) -> dict:
    """`bases` with the shipped settings of the chosen ipc merged on top (see load_config)."""
    cli_ipc = _cli_value(overrides, "condense.ipc")
    own_ipc = (own.get("condense") or {}).get("ipc") if isinstance(own.get("condense"), dict) else None
    ipc = cli_ipc if cli_ipc is not None else own_ipc
    if not isinstance(ipc, int) or isinstance(ipc, bool):
        return bases
    why = "--ipc" if cli_ipc is not None else "condense.ipc in the config"
    chosen = [p for p in visited if is_ipc_layer(p)]
    if chosen:
        if cli_ipc is not None and f"ipc{ipc}" != chosen[0].parent.name:
            notes.append(f"the config already includes the per-ipc layer {display(chosen[0])}; "
                         f"--ipc {ipc} changes condense.ipc only (for the settings tuned for ipc "
                         f"{ipc}, use a config without an ipc layer or config/ipc{ipc}/...)")
        return bases
    layer = ipc_layer(ipc)
    if layer is None:
        notes.append(f"no shipped settings for ipc {ipc} (shipped: ipc "
                     f"{', '.join(map(str, shipped_ipcs()))}); the config's own settings apply")
        return bases
    notes.append(f"applied the per-ipc layer {display(layer)} for {why} {ipc} (above the config's "
                 f"bases, below its own keys and the command line)")
    return _merge(bases, read_yaml_chain(layer, prov), prov, None)


def config_notes(cfg: Config) -> list:
    """What `load_config` decided about the files (the per-ipc layer, a replay): log lines."""
    return list(getattr(cfg, "_notes", []))


def config_to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | os.PathLike, extra: Optional[dict] = None) -> None:
    """Write the resolved config as YAML (`args.log`), atomically: a run record that
    `--config_path <this file>` loads again (the recorded config; see RECORD_KEYS)."""
    from utils.io import atomic_write_text

    body = {"config": config_to_dict(cfg)}
    if extra:
        body.update(extra)
    stage = (extra or {}).get("stage", "<stage>")
    atomic_write_text(path, "# resolved configuration (CLI > YAML > defaults) of this run; replay it "
                      f"with\n#   textcondense {'experts' if stage == 'pretrain' else stage} "
                      f"--config_path {Path(path).name}\n# (under torchrun with the same world size "
                      "to get the same result)\n" + yaml.safe_dump(body, sort_keys=False))


# The command-line side (flags per stage, --help defaults) lives in utils.cli_args; these names
# stay importable from here.
_CLI_NAMES = ("STAGE_KEYS", "FLAG_KEYS", "schema_flags", "make_parser", "parse_args", "config_from_args")


def __getattr__(name: str):
    if name in _CLI_NAMES:
        from utils import cli_args
        return getattr(cli_args, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
