"""Load, merge, validate and save configurations.

Precedence: command line (flags and `--set section.key=value`) > YAML > schema defaults.
A YAML file may extend others with a top-level `base:` key (a path, or a list of paths, relative to
that file); the extending file wins. Every error names the key and the file (or flag) it came from.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import typing
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import yaml

from utils.config_schema import Config
from utils.errors import UserError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
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


def read_yaml_chain(path: str | os.PathLike, prov: dict, _seen: tuple = ()) -> dict:
    """Read a YAML file and the files it extends (`base:`), merged, with per-key provenance."""
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"{path}: 'base' chain loops back to this file")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path} (pass --config_path pointing to a YAML "
                          f"file, e.g. config/ipc10/bbc.yaml)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(data).__name__}")
    bases = data.pop("base", None)
    merged: dict = {}
    for base in [bases] if isinstance(bases, str) else (bases or []):
        # the recursive call records where the base's keys came from
        merged = _merge(merged, read_yaml_chain(path.parent / base, prov, _seen + (path,)), prov, None)
    return _merge(merged, data, prov, source=str(path))


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
            raise bad
        return value
    raise TypeError(f"unsupported schema type {tp}")


def _build_section(cls, value: Any, where: str):
    """A nested mapping (e.g. one entry of condense.objectives) checked against its dataclass."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected {_type_name(cls)}, got {value!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    for key in value:
        if key not in fields:
            raise ConfigError(f"{where}: unknown key '{key}' (allowed: {', '.join(sorted(fields))})")
    obj = cls(**{k: _coerce(v, hints[k], f"{where}.{k}") for k, v in value.items()})
    for key, message in (obj.check() if hasattr(obj, "check") else ()):
        raise ConfigError(f"{where}.{key} = {getattr(obj, key)!r}: {message}")
    return obj


build_section = _build_section   # public: component options (utils.registry) use it too


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
            if key not in fields:
                raise ConfigError(f"{src}: unknown key '{dotted}' (allowed in '{name}': "
                                  f"{', '.join(fields)})")
            values[key] = _coerce(value, hints[key], f"{src}: {dotted}")
        section = cls(**values)
        for key, f in fields.items():
            if f.metadata.get("path"):
                src = prov.get(f"{name}.{key}", DEFAULTS)
                resolved = _resolve_path(getattr(section, key), src)
                # model/dataset names may be hub names or aliases: keep them unless the path exists
                if key == "model_path" and resolved is not None and not Path(resolved).exists():
                    continue
                setattr(section, key, resolved)
        for key, message in (section.check() if hasattr(section, "check") else ()):
            src = prov.get(f"{name}.{key}", DEFAULTS)
            raise ConfigError(f"{src}: {name}.{key} = {getattr(section, key)!r}: {message}")
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


def load_config(config_path: Optional[str] = None, overrides: Sequence[tuple[str, Any]] = ()) -> Config:
    """Defaults < YAML (with its bases) < overrides (`(section.key, value)` pairs from the CLI)."""
    prov: dict = {}
    data = read_yaml_chain(config_path, prov) if config_path else {}
    for dotted, value in overrides:
        _set_dotted(data, dotted, value)
        prov[dotted] = CLI
        prov.setdefault(dotted.split(".")[0], CLI)
    return build_config(data, prov)


# -------------------------------------------------------------------------------------- the CLI

def schema_flags() -> dict:
    """flag -> (section.key, field, type) for every schema field declared with `flag=...`."""
    out = {}
    for sec in dataclasses.fields(Config):
        cls = sec.default_factory
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.metadata.get("flag"):
                out[f.metadata["flag"]] = (f"{sec.name}.{f.name}", f, hints[f.name])
    return out


# flag -> config key (generated from the schema)
FLAG_KEYS = {flag: dotted for flag, (dotted, _, _) in schema_flags().items()}


def _scalar(tp):
    """The argparse type of a flag's annotation (Optional[X] -> X)."""
    if typing.get_origin(tp) is typing.Union:
        (tp,) = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) is typing.Literal:
        return str, list(typing.get_args(tp))
    return tp, None


def make_parser(description: str) -> argparse.ArgumentParser:
    """The flags every entry script shares, generated from the schema (fields with `flag=`), plus
    --config_path and --set. Scripts may add their own (non-config) flags before parsing."""
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config_path", default=None,
                   help="YAML config (e.g. config/ipc10/bbc.yaml); without it, schema defaults.")
    for flag, (dotted, f, tp) in schema_flags().items():
        help_text = f"{f.metadata['help']} ({dotted})"
        kind, choices = _scalar(tp)
        if kind is bool:
            p.add_argument(f"--{flag}", action=argparse.BooleanOptionalAction, default=None,
                           help=help_text)
        else:
            p.add_argument(f"--{flag}", type=kind, choices=choices, default=None, help=help_text)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="Override any config key; repeatable, e.g. --set condense.niter=5.")
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    """Build the config from parsed args: explicit flags win over --set, which wins over YAML."""
    overrides = [parse_set(item) for item in args.overrides]
    for flag, dotted in FLAG_KEYS.items():
        value = getattr(args, flag, None)
        if value is not None:
            overrides.append((dotted, value))
    return load_config(args.config_path, overrides)


def config_to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | os.PathLike, extra: Optional[dict] = None) -> None:
    """Write the resolved config as YAML (`args.log`), atomically."""
    from utils.io import atomic_write_text

    body = {"config": config_to_dict(cfg)}
    if extra:
        body.update(extra)
    atomic_write_text(path, "# resolved configuration (CLI > YAML > defaults)\n"
                      + yaml.safe_dump(body, sort_keys=False))
