"""Stage 1 - experts: fine-tune `pretrain.num_premodel` BERT classifiers on the real data.

    torchrun --nproc_per_node=2 condense/pretrain_script_text.py --config_path=config/ipc10/bbc.yaml

Experts are spread over ranks (seed-parallel); each keeps its initial and per-epoch weights under
`pretrained_models/` (see utils/experts.py for the layout) and its final weights also as a Hugging
Face model folder, `expert_<k>/hf/` (`AutoModelForSequenceClassification.from_pretrained(folder,
trust_remote_code=True)` gives the same logits; utils/hf_export.py). Re-running skips complete
experts and resumes half-done ones. `--output_dir DIR` is the same as `--set
pretrain.expert_dir=DIR`. `--report_to tensorboard`: per-step loss and learning rate and per-epoch
test accuracy of every expert trained on rank 0, under <expert set>/tensorboard/.
"""
from __future__ import annotations

import logging
import sys
from typing import Optional, Sequence

from utils.distributed import barrier
from utils.experts import expert_set_dir, expert_summary, read_manifest, train_experts
from utils.hf_export import export_missing
from utils.logging_utils import setup_logging
from utils.runtime import guarded_stage, load_data, log_ownership, start_run
from utils.tracking import Tracker

logger = logging.getLogger("pretrain")


def _output_dir_is_expert_dir(cfg) -> None:
    if cfg.run.output_dir:
        cfg.pretrain.expert_dir = cfg.run.output_dir
        cfg.run.output_dir = None  # logs go beside the experts


def _explicit_expert_dir_conflict(argv: Sequence[str]) -> bool:
    """--output_dir together with an explicit --set pretrain.expert_dir: two answers to one
    question."""
    out = any(a == "--output_dir" or a.startswith("--output_dir=") for a in argv)
    return out and any(a.startswith(("pretrain.expert_dir=", "--set=pretrain.expert_dir="))
                       for a in argv)


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
    with guarded_stage() as stage, Tracker.session(cfg, run.out_dir, env) as tracker:
        data = load_data(cfg)
        logger.info("***** Training experts *****  %d experts x %d epochs, %d train / %d test "
                    "samples, batch %d, lr %g", cfg.pretrain.num_premodel, cfg.pretrain.epochs,
                    len(data.train), len(data.test), cfg.pretrain.batch_size, cfg.pretrain.lr)
        log_ownership(cfg.pretrain.num_premodel, env.world_size, "experts")
        train_experts(cfg, env, data.train, data.test, data.dataset.nclass)
        if env.is_main:
            export_hf_folders(cfg, data)
            track_accuracies(cfg, tracker, len(data.train))
        barrier()
        for row in expert_summary(cfg):
            logger.info("expert %(expert)d: complete=%(complete)s epochs=%(epochs_done)d "
                        "test accuracy=%(test_accuracy)s time=%(seconds)ss", row)
        logger.info("experts are in %s (Hugging Face folders: expert_<k>/hf)", expert_set_dir(cfg))
    return stage.exit_code


def export_hf_folders(cfg, data) -> None:
    """Rank 0: each complete expert's final weights as a Hugging Face folder (once)."""
    for folder in export_missing(cfg, data):
        logger.info("exported as a Hugging Face model folder: %s", folder)


def track_accuracies(cfg, tracker: Tracker, n_train: int) -> None:
    """Every expert's per-epoch training loss and test scores (from the manifests, so experts
    trained on other ranks are included), at the step that ended the epoch."""
    if not tracker.enabled:
        return
    per_epoch = -(-n_train // cfg.pretrain.batch_size)
    for k in range(cfg.pretrain.num_premodel):
        for h in (read_manifest(expert_set_dir(cfg), k) or {}).get("history", []):
            tracker.log_record(f"expert_{k}", h["epoch"] * per_epoch,
                               {f"epoch_{key}" if key == "train_loss" else f"test_{key}": v
                                for key, v in h.items() if key != "epoch"})


if __name__ == "__main__":
    sys.exit(main())
