"""What every entry script does first: parse, resolve config, set up ranks, logs and seeds."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from utils import run_lock
from utils.checkpoint import check_target
from utils.cli_args import config_from_args, parse_args
from utils.config import PROJECT_ROOT, ConfigError, config_notes, save_config
from utils.config_schema import Config
from utils.distributed import DistEnv, init_distributed, ownership_table
from utils.errors import UserError
from utils.experts import dataset_tag
from utils.logging_utils import progress_seconds, setup_logging
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
    args = parse_args(argv, description, stage, add_args)
    try:
        cfg = config_from_args(args)
        check_environment(cfg)
    except (ConfigError, UserError) as exc:
        setup_logging(0)
        logger.error("configuration error: %s", exc)
        raise SystemExit(2) from None
    if adjust:
        adjust(cfg)
    out = Path(cfg.run.output_dir) if cfg.run.output_dir else (
        output_dir(cfg) if output_dir else default_output_dir(cfg, stage))
    stale = None
    if int(os.environ.get("RANK", "0")) == 0:
        _make_output_dir(out)              # before any process group: nothing to tear down
        stale = _claim_output_dir(out, cfg, stage)
    _CURRENT["out_dir"] = out
    env = init_distributed(cfg.run.gpu, cfg.run.tf32, cfg.run.collective_timeout_s)
    setup_logging(env.rank, cfg.run.log_level, str(out / "print.log"))
    if env.is_main and stale:
        logger.warning("%s", run_lock.taken_over_message(out, stale))
    for note in config_notes(cfg):          # e.g. which per-ipc settings layer was applied
        logger.info("config: %s", note)
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


def check_environment(cfg: Config) -> None:
    """Settings read outside the config schema, checked before any work (UserError)."""
    progress_seconds()                            # TEXTCONDENSE_LOG_SECONDS is a number
    timeout = cfg.run.collective_timeout_s
    if not timeout > 0:
        raise UserError(f"run.collective_timeout_s is {timeout}: it is how many seconds a rank "
                        f"waits for the others in a collective, so it must be > 0 (e.g. 1800)")


def _claim_output_dir(out: Path, cfg: Config, stage: str) -> Optional[dict]:
    """Rank 0, before any process group: take the folder's run lock (utils.run_lock) and apply
    the niter rule (utils.checkpoint.check_target); a refusal is one line and exit 2, and
    nothing in the folder is touched. Returns the dead holder of a lock taken over, if any."""
    try:
        stale = run_lock.acquire(out)
        if stage == "condense" and cfg.run.resume != "never":
            check_target(out, cfg.condense.niter)
        return stale
    except UserError as exc:
        run_lock.release_all()
        setup_logging(0)
        logger.error("%s", exc)
        _record_for_torchrun(exc)
        raise SystemExit(2) from None


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
    from utils.training import set_dynamic_padding

    set_dynamic_padding(not cfg.dataset.pad_to_max_length)
    ds = load_text_dataset(cfg.dataset)
    tokenizer = load_tokenizer(cfg.network)
    train, test = tokenize_dataset(ds, tokenizer, cfg.dataset.max_length, cfg.dataset.cache_dir)
    return Data(ds, tokenizer, train, test)


_CURRENT: dict = {}       # the output folder of the stage this process runs (for messages)


def interrupted_message(out_dir: Optional[Path]) -> str:
    """What Ctrl-C leaves behind and how to go on."""
    found = []
    if out_dir is not None and Path(out_dir).is_dir():
        from utils.checkpoint import complete_checkpoints
        for root in sorted({p.parent.parent for p in Path(out_dir).rglob("checkpoints/iter_*")}):
            found += list(complete_checkpoints(root))
    if found:
        it, d = max(found)
        kept = f"the newest checkpoint, {d} (iteration {it}), is kept"
    else:
        kept = "no checkpoint was written yet (finished experts and saved files are kept)"
    return (f"interrupted (Ctrl-C): {kept}; run the same command again to resume from where it "
            f"stopped")


def _record_for_torchrun(exc: BaseException) -> None:
    """Under torchrun, put the one-line cause in the worker's error file: torchrun then prints it
    in its failure summary instead of a pointer to tracebacks."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path or os.path.exists(path):
        return
    import json
    import time
    try:
        with open(path, "w", encoding="utf-8") as fh:
            json.dump({"message": {"message": f"{type(exc).__name__}: {exc}", "extraInfo": {
                "py_callstack": f"{exc} (a user error: exit code 2, no traceback)",
                "timestamp": str(int(time.time()))}}}, fh)
    except OSError:
        pass


class guarded_stage:
    """`with guarded_stage() as stage: ...` then `return stage.exit_code`.

    A user error (`utils.errors.UserError`: bad config, data, model, experts, synthetic set, a
    full disk) is logged as one clear message and gives exit code 2 instead of a traceback; Ctrl-C
    says what was kept and how to resume (exit 130); anything else is a bug and propagates with
    its traceback. The process group is torn down and the output folder's lock released either
    way."""

    exit_code = 0

    def __enter__(self) -> "guarded_stage":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        from utils.distributed import cleanup_distributed

        try:
            cleanup_distributed(together=exc is None)
        finally:
            run_lock.release_all()
        if exc is not None and isinstance(exc, UserError):
            logger.error("%s", exc)
            logger.debug("where it was raised (run.log_level=debug):", exc_info=exc)
            _record_for_torchrun(exc)
            self.exit_code = 2
            return True
        if isinstance(exc, KeyboardInterrupt):
            logger.error("%s", interrupted_message(_CURRENT.get("out_dir")))
            self.exit_code = 130
            return True
        return False
