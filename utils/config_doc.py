"""Print the configuration reference (docs/config.md) from the schema: `python -m utils.config_doc`."""
from __future__ import annotations

import dataclasses
import typing

from utils.config import FLAG_KEYS, _type_name
from utils.config_schema import Config


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
    return "\n".join(lines)


if __name__ == "__main__":
    print(render())
