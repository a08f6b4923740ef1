"""What every entry script does first: parse, resolve config, set up ranks, logs and seeds."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from utils.config import PROJECT_ROOT, ConfigError, config_from_args, make_parser, save_config
from utils.config_schema import Config
from utils.distributed import DistEnv, init_distributed, ownership_table
from utils.errors import UserError
from utils.experts import dataset_tag
from utils.logging_utils import setup_logging
from utils.seeding import seed_everything

if TYPE_CHECKING:
    from utils.data import TextDataset, TokenizedSplit

logger = logging.getLogger(__name__)


@dataclass
class Run:
    cfg: Config
    env: DistEnv
    out_dir: Path
    args: argparse.Namespace
    stage: str = ""
    argv: Optional[list] = None

    def save_args(self) -> None:
        """Rank 0: the resolved config as args.log in the output folder."""
        if self.env.is_main:
            save_config(self.cfg, self.out_dir / "args.log",
                        {"stage": self.stage, "argv": self.argv, "world_size": self.env.world_size})


def default_output_dir(cfg: Config, stage: str) -> Path:
    return (PROJECT_ROOT / "results" / stage / dataset_tag(cfg) / f"ipc{cfg.condense.ipc}"
            / cfg.run.run_name)


def start_run(argv: Optional[Sequence[str]], description: str, stage: str,
              add_args: Optional[Callable[[argparse.ArgumentParser], None]] = None,
              output_dir: Optional[Callable[[Config], Path]] = None,
              adjust: Optional[Callable[[Config], None]] = None,
              defer_args_log: bool = False) -> Run:
    """Parse CLI + YAML, start the process group, configure logging, seed, write args.log.

    Config errors are reported before any process group or file is created. `output_dir` gives
    the stage's default output folder; `adjust` may derive config values before args.log is saved.
    With `defer_args_log` the stage writes args.log itself (`Run.save_args`) once it has accepted
    the output folder (a resumable stage refuses a folder of another run without touching it).
    """
    parser = make_parser(description)
    if add_args:
        add_args(parser)
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
    except ConfigError as exc:
        setup_logging(0)
        logger.error("configuration error: %s", exc)
        raise SystemExit(2) from None
    if adjust:
        adjust(cfg)
    out = Path(cfg.run.output_dir) if cfg.run.output_dir else (
        output_dir(cfg) if output_dir else default_output_dir(cfg, stage))
    if int(os.environ.get("RANK", "0")) == 0:
        _make_output_dir(out)              # before any process group: nothing to tear down
    env = init_distributed(cfg.run.gpu, cfg.run.tf32, cfg.run.collective_timeout_s)
    setup_logging(env.rank, cfg.run.log_level, str(out / "print.log"))
    seed_everything(cfg.run.seed + env.rank)
    run = Run(cfg, env, out, args, stage, list(argv if argv is not None else sys.argv[1:]))
    if not defer_args_log:
        run.save_args()
    logger.info("%s: world size %d (%s), device %s, output %s", stage, env.world_size,
                env.backend or "single process", env.device, out)
    return run


def _make_output_dir(out: Path) -> None:
    """Create the output folder, or stop (exit 2, before any work) saying why it cannot be used."""
    problem = None
    if out.exists() and not out.is_dir():
        problem = "it exists and is a file"
    else:
        try:
            out.mkdir(parents=True, exist_ok=True)
            probe = out / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            problem = f"it cannot be written ({exc.strerror or exc})"
    if problem:
        setup_logging(0)
        logger.error("output folder %s: %s; choose another --output_dir", out, problem)
        raise SystemExit(2)


def log_ownership(n_items: int, world_size: int, what: str) -> None:
    for rank, items in enumerate(ownership_table(n_items, world_size)):
        logger.info("rank %d owns %s %s", rank, what, items if items else "none")


@dataclass
class Data:
    dataset: "TextDataset"
    tokenizer: object
    train: "TokenizedSplit"
    test: "TokenizedSplit"


def load_data(cfg: Config) -> Data:
    """Read the dataset and tokenise both splits (cached on disk across runs)."""
    from utils.data import load_text_dataset, tokenize_dataset
    from utils.model import load_tokenizer

    ds = load_text_dataset(cfg.dataset)
    tokenizer = load_tokenizer(cfg.network)
    train, test = tokenize_dataset(ds, tokenizer, cfg.dataset.max_length, cfg.dataset.cache_dir)
    return Data(ds, tokenizer, train, test)


class guarded_stage:
    """`with guarded_stage() as stage: ...` then `return stage.exit_code`.

    A user error (`utils.errors.UserError`: bad config, data, model, experts, synthetic set) is
    logged as one clear message and gives exit code 2 instead of a traceback; anything else is a
    bug and propagates with its traceback. The
    process group is torn down either way."""

    exit_code = 0

    def __enter__(self) -> "guarded_stage":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        from utils.distributed import cleanup_distributed

        cleanup_distributed(together=exc is None)
        if exc is not None and isinstance(exc, UserError):
            logger.error("%s", exc)
            logger.debug("where it was raised (run.log_level=debug):", exc_info=exc)
            self.exit_code = 2
            return True
        return False
