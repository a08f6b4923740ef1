"""Stage 1 - experts: fine-tune `pretrain.num_premodel` BERT classifiers on the real data.

    torchrun --nproc_per_node=2 condense/pretrain_script_text.py --config_path=config/ipc10/bbc.yaml

Experts are spread over ranks (seed-parallel); each keeps its initial and per-epoch weights under
`pretrained_models/` (see utils/experts.py for the layout). Re-running skips complete experts and
resumes half-done ones. `--output_dir DIR` is the same as `--set pretrain.expert_dir=DIR`.
"""
from __future__ import annotations

import logging
import sys
from typing import Optional, Sequence

from utils.experts import expert_set_dir, expert_summary, train_experts
from utils.logging_utils import setup_logging
from utils.runtime import guarded_stage, load_data, log_ownership, start_run

logger = logging.getLogger("pretrain")


def _output_dir_is_expert_dir(cfg) -> None:
    if cfg.run.output_dir:
        cfg.pretrain.expert_dir = cfg.run.output_dir
        cfg.run.output_dir = None  # logs go beside the experts


def _explicit_expert_dir_conflict(argv: Sequence[str]) -> bool:
    """--output_dir together with an explicit --set pretrain.expert_dir: two answers to one
    question."""
    return "--output_dir" in argv and any(a.startswith("pretrain.expert_dir=") for a in argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if _explicit_expert_dir_conflict(argv):
        setup_logging(0)
        logger.error("--output_dir and --set pretrain.expert_dir both say where the experts go; "
                     "give one of them")
        return 2
    run = start_run(argv, __doc__.splitlines()[0], "pretrain", output_dir=expert_set_dir,
                    adjust=_output_dir_is_expert_dir)
    cfg, env = run.cfg, run.env
    with guarded_stage() as stage:
        data = load_data(cfg)
        logger.info("***** Training experts *****  %d experts x %d epochs, %d train / %d test "
                    "samples, batch %d, lr %g", cfg.pretrain.num_premodel, cfg.pretrain.epochs,
                    len(data.train), len(data.test), cfg.pretrain.batch_size, cfg.pretrain.lr)
        log_ownership(cfg.pretrain.num_premodel, env.world_size, "experts")
        train_experts(cfg, env, data.train, data.test, data.dataset.nclass)
        for row in expert_summary(cfg):
            logger.info("expert %(expert)d: complete=%(complete)s epochs=%(epochs_done)d "
                        "test accuracy=%(test_accuracy)s time=%(seconds)ss", row)
        logger.info("experts are in %s", expert_set_dir(cfg))
    return stage.exit_code


if __name__ == "__main__":
    sys.exit(main())
