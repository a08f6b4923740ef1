"""Print docs/config.md: the schema and every registered component's options
(`python -m condense.config_doc > docs/config.md`, `make docs`). Lives with the scripts because it
imports the packages that register components (utils may not)."""
from __future__ import annotations

import condenser.init  # noqa: F401  (each import publishes its registry)
import condenser.objectives  # noqa: F401
import evaluation.selectors  # noqa: F401
import NCFM  # noqa: F401
from utils.config_doc import render

try:                                   # the distillation losses, where the package registers them
    import distiller.losses  # noqa: F401
except ImportError:                    # pragma: no cover - distiller is part of every checkout
    pass

__all__ = ["render"]

if __name__ == "__main__":
    print(render())
