"""The configuration reference (docs/config.md): the schema's sections, then every registered
component's options (the registries published with `utils.registry.Registry(..., publish=True)`;
utils imports no component package, so `condense.config_doc` imports them and prints this:
`python -m condense.config_doc > docs/config.md`, i.e. `make docs`)."""
from __future__ import annotations

import dataclasses
import typing

from utils.config import FLAG_KEYS, _type_name
from utils.config_schema import Config
from utils.registry import PUBLISHED

# where each kind's options are written in a config
OPTIONS_KEY = {"objective": "condense.objectives[i].options",
               "distribution metric": "feature_match's options.metric_options",
               "init": "condense.init_options", "selector": "(no options)",
               "distillation loss": "distill.losses[i].options"}


def _default(f):
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def components() -> list:
    """Markdown lines: one table per registered component with options, per published kind."""
    lines = ["## Components", "",
             "Every registered component with its options (a component without a table has "
             "none). Unknown options and wrong types are errors naming the key and the file.", ""]
    for kind in sorted(PUBLISHED):
        reg = PUBLISHED[kind]
        lines += [f"### {kind} (`{OPTIONS_KEY.get(kind, 'options')}`)", ""]
        plain = [e for e in reg.entries() if not dataclasses.fields(e.options_cls)]
        if plain:
            lines += ["Without options: " + ", ".join(f"`{e.name}`" for e in plain) + ".", ""]
        for e in reg.entries():
            fields = dataclasses.fields(e.options_cls)
            if not fields:
                continue
            hints = typing.get_type_hints(e.options_cls)
            lines += [f"#### `{e.name}`" + (f": {e.doc}" if e.doc else ""), "",
                      "| option | type | default | meaning |", "|---|---|---|---|"]
            lines += [f"| `{f.name}` | {_type_name(hints[f.name])} | `{_default(f)!r}` | "
                      f"{f.metadata.get('help', '')} |" for f in fields]
            lines.append("")
    return lines


def render() -> str:
    flags = {v: k for k, v in FLAG_KEYS.items()}
    lines = ["# Configuration reference", "",
             "Generated from `utils/config_schema.py` by `make docs`; do not edit by hand.", "",
             "Precedence: command line (`--flag`, `--set section.key=value`) > YAML > defaults. "
             "A YAML file may extend others with `base: path` (relative to the file). Unknown "
             "keys, wrong types and impossible values are errors naming the key and the file. "
             "Relative paths in YAML resolve against the project root; on the command line, "
             "against the current directory. Every run saves the resolved config as `args.log`.",
             ""]
    for sec in dataclasses.fields(Config):
        cls = sec.default_factory
        hints = typing.get_type_hints(cls)
        lines += [f"## `{sec.name}`", "", "| key | type | default | flag | meaning |",
                  "|---|---|---|---|---|"]
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            flag = f"`--{flags[sec.name + '.' + f.name]}`" if f"{sec.name}.{f.name}" in flags else ""
            lines.append(f"| `{f.name}` | {_type_name(hints[f.name])} | `{default!r}` | {flag} | "
                         f"{f.metadata.get('help', '')} |")
        lines.append("")
    if PUBLISHED:
        lines += components()
    return "\n".join(lines)


if __name__ == "__main__":
    print(render())
