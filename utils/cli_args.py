"""The command line of every stage: flags generated from the schema, per stage, with their true
defaults in --help; then the config they select (`config_from_args`).

A schema field declared with `flag="ipc"` becomes `--ipc` in the stages that read its section
(`STAGE_KEYS`), so flags, keys and help text cannot drift apart; `--set section.key=value` reaches
every key in every stage.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from typing import Optional, Sequence

from utils.config import load_config, parse_set
from utils.config_schema import Config
from utils.errors import UserError

# What each stage reads: whole sections, or single keys of another section. A stage's --help
# offers only the flags (schema fields with `flag=`) of what it reads; `--set` reaches every key.
STAGE_KEYS = {
    "pretrain": ("dataset", "network", "pretrain", "run"),
    "condense": ("dataset", "network", "pretrain", "optimization", "condense", "evaluate", "run"),
    "evaluate": ("dataset", "network", "pretrain", "evaluate", "run", "condense.ipc",
                 "condense.load_path"),
    "distill": ("dataset", "network", "pretrain", "distill", "run", "condense.load_path"),
}


def schema_flags(stage: Optional[str] = None) -> dict:
    """flag -> (section.key, field, type) for every schema field declared with `flag=...` (of
    what `stage` reads, see STAGE_KEYS; every stage's when None)."""
    wanted = STAGE_KEYS.get(stage) if stage else None
    out = {}
    for sec in dataclasses.fields(Config):
        cls = sec.default_factory
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            dotted = f"{sec.name}.{f.name}"
            only = f.metadata.get("flag_stages")
            if stage and only and stage not in only:
                continue
            if f.metadata.get("flag") and (wanted is None or sec.name in wanted or dotted in wanted):
                out[f.metadata["flag"]] = (dotted, f, hints[f.name])
    return out


# flag -> config key (generated from the schema)
FLAG_KEYS = {flag: dotted for flag, (dotted, _, _) in schema_flags().items()}


def _scalar(tp):
    """The argparse type, choices and nargs of a flag's annotation (Optional[X] -> X; a list
    takes one or more values)."""
    nargs = None
    if typing.get_origin(tp) is typing.Union:
        (tp,) = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (list, typing.List):
        (tp,), nargs = typing.get_args(tp), "+"
    if typing.get_origin(tp) is typing.Literal:
        return str, list(typing.get_args(tp)), nargs
    return tp, None, nargs


def _default(f: dataclasses.Field):
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _shown(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return " ".join(map(str, value)) or "none"
    return "none" if value is None else str(value)


class _Parser(argparse.ArgumentParser):
    """A bad flag is one line that says what was wrong and where the flags are (argparse's
    default prints the whole usage block before it); exit 2 as argparse does."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} ({self.prog} --help lists the flags)\n")


def make_parser(description: str, stage: Optional[str] = None, defaults: Optional[Config] = None,
                epilog: Optional[str] = None) -> argparse.ArgumentParser:
    """The flags of `stage` (all stages' when None), generated from the schema (fields with
    `flag=`), plus --config_path and --set. Each flag's help names its key and its default: the
    schema's, or the value of `defaults` (the config --config_path gives) where that differs.
    Scripts may add their own (non-config) flags before parsing."""
    p = _Parser(description=description, epilog=epilog,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config_path", default=None, metavar="FILE_OR_NAME",
                   help="YAML config: a file, a run's args.log (replays it), or a shipped config "
                        "by name (e.g. demo, ipc10/bbc). Without it, the schema defaults.")
    for flag, (dotted, f, tp) in schema_flags(stage).items():
        default = _shown(_default(f))
        if defaults is not None:
            section, key = dotted.split(".")
            value = _shown(getattr(getattr(defaults, section), key))
            default = value if value == default else f"{value} in this config; schema {default}"
        help_text = f"{f.metadata['help']} [{dotted}; default: {default}]".replace("%", "%%")
        kind, choices, nargs = _scalar(tp)
        if kind is bool:
            p.add_argument(f"--{flag}", action=argparse.BooleanOptionalAction, default=None,
                           help=help_text)
        else:
            p.add_argument(f"--{flag}", type=kind, choices=choices, nargs=nargs, default=None,
                           help=help_text)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="Override any config key; repeatable, e.g. --set condense.niter=5 "
                        "(keys: docs/config.md).")
    return p


def parse_args(argv: Optional[Sequence[str]], description: str, stage: Optional[str] = None,
               add_args=None, epilog: Optional[str] = None) -> argparse.Namespace:
    """Parse a stage's command line; `--help` with `--config_path` shows that config's values
    as the defaults."""
    argv = list(sys.argv[1:] if argv is None else argv)
    defaults = None
    if "-h" in argv or "--help" in argv:
        pre = argparse.ArgumentParser(add_help=False)
        pre.add_argument("--config_path", default=None)
        known, _ = pre.parse_known_args(argv)
        if known.config_path:
            try:
                defaults = load_config(known.config_path)
            except UserError:                    # any bad config file: the run itself reports it
                defaults = None
    parser = make_parser(description, stage, defaults, epilog)
    if add_args:
        add_args(parser)
    return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> Config:
    """Build the config from parsed args: explicit flags win over --set, which wins over YAML."""
    overrides = [parse_set(item) for item in args.overrides]
    for flag, dotted in FLAG_KEYS.items():
        value = getattr(args, flag, None)
        if value is not None:
            overrides.append((dotted, value))
    return load_config(args.config_path, overrides)
