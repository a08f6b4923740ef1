"""`textcondense`: the command-line tool, one subcommand per stage.

    textcondense experts  --config_path ipc10/bbc          # stage 1: expert classifiers
    textcondense condense --config_path demo               # stage 2: the synthetic set
    textcondense evaluate --config_path ipc10/bbc --load_path <set>.pth --baseline random,herding
    textcondense distill  --config_path distill/bbc        # stage 4: a smaller student
    torchrun --nproc_per_node=2 -m condense condense --config_path demo    # several processes

Each subcommand is the `main(argv)` of the stage's script under condense/ (the scripts stay:
`torchrun condense/condense_script_text.py --config_path=...` is the same run), so flags, logs,
outputs and exit codes are the same: 0 done, 2 a problem with the inputs (one line says what to
change). `textcondense <stage> --help` lists that stage's flags with their defaults (add
`--config_path FILE` to see that config's values); `--set section.key=value` sets any key.
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
from typing import Optional, Sequence

# subcommand -> the module whose `main(argv)` runs it
STAGES = {
    "experts": "condense.pretrain_script_text",
    "condense": "condense.condense_script_text",
    "evaluate": "condense.evaluate_script_text",
    "distill": "condense.distill_script_text",
}
PROG = "textcondense"


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version
    try:
        return dist_version("textcondense")
    except PackageNotFoundError:       # a checkout used through PYTHONPATH
        return "unknown (not installed)"


def _summary(module: str) -> str:
    """The first docstring line of a stage's script, read without importing it (no torch)."""
    spec = importlib.util.find_spec(module)
    try:
        with open(spec.origin, encoding="utf-8") as fh:
            doc = ast.get_docstring(ast.parse(fh.read())) or ""
    except (OSError, TypeError, SyntaxError):
        return ""
    return doc.splitlines()[0] if doc else ""


def usage() -> str:
    lines = [f"usage: {PROG} {{{','.join(STAGES)}}} [--config_path FILE_OR_NAME] [flags]",
             f"       {PROG} <stage> --help     the stage's flags and their defaults",
             f"       {PROG} --version", "",
             "Dataset condensation for BERT text classifiers: a few learnt sequences per class "
             "that train a classifier almost as well as the whole training split.", "", "stages:"]
    for name, module in STAGES.items():
        lines.append(f"  {name:<9} {_summary(module)}")
    lines += ["", "Several processes (CPU or GPU): torchrun --nproc_per_node=2 -m condense "
              "<stage> ...", "Configs: a YAML file, a run's args.log (replays the run), or a "
              "shipped config by name (demo, smoke, ipc1/bbc, ipc10/bbc, ipc50/trec, "
              "distill/bbc, ...)."]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)   # no stage: an error, exit 2
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"{PROG} {version()}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in STAGES:
        print(f"{PROG}: unknown stage {name!r}; choose one of {', '.join(STAGES)} "
              f"({PROG} --help)", file=sys.stderr)
        return 2
    prog, sys.argv[0] = sys.argv[0], f"{PROG} {name}"    # argparse's prog in --help and errors
    try:
        return importlib.import_module(STAGES[name]).main(rest)
    finally:
        sys.argv[0] = prog


if __name__ == "__main__":
    sys.exit(main())
