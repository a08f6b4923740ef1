"""`python -m condense <stage> ...` (and `torchrun --nproc_per_node=2 -m condense <stage> ...`):
the `textcondense` command (condense/cli.py)."""
import sys

from condense.cli import main

if __name__ == "__main__":
    sys.exit(main())
