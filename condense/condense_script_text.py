"""Stage 2 - condense: learn `ipc` synthetic sequences per class against the experts (NCFM).

    torchrun --nproc_per_node=2 --nnodes=1 condense/condense_script_text.py \
        --config_path=config/ipc10/bbc.yaml [--ipc 10] [--init mix] [--sampling_net] [--debug]

Each rank owns a balanced block of classes. Missing experts are trained first (stage 1). Outputs
under --output_dir (default results/condense/<dataset>/ipc<ipc>/<run_name>/):
distilled_data/syn_data_<iter>.pth (+ _preview.txt), images/loss_curve.png, checkpoints/,
loss_history.json, print.log, args.log. Re-running the same command resumes from the last complete
checkpoint.
"""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from condenser.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from condenser.condenser import Condenser
from condenser.expert_pool import ExpertPool
from condenser.report import plot_loss_curve, write_preview
from condenser.synthetic import assemble, load_synthetic
from utils.config import config_to_dict
from utils.config_schema import Config
from utils.distributed import all_gather_objects, barrier, broadcast_object, peak_memory_mb
from utils.evaluation import condense_eval_hook
from utils.experts import missing_experts, train_experts
from utils.io import atomic_torch_save, atomic_write_json
from utils.logging_utils import progress
from utils.model import model_tag
from utils.runtime import guarded_stage, Data, load_data, start_run

logger = logging.getLogger("condense")


def apply_debug(cfg: Config) -> None:
    """--debug: few classes (see main), few iterations, a log line every iteration."""
    if cfg.run.debug:
        cfg.condense.niter = cfg.condense.debug_niter
        cfg.condense.log_every = 1
        cfg.condense.save_every = min(cfg.condense.save_every, cfg.condense.niter)


def ensure_experts(cfg: Config, run, data: Data) -> None:
    missing = missing_experts(cfg)
    if missing:
        logger.warning("experts %s are missing or unfinished: training them first (stage 1)", missing)
        train_experts(cfg, run.env, data.train, data.test, data.dataset.nclass)


def start_state(condenser: Condenser, cfg: Config, run, data: Data, ctx) -> None:
    """Resume from the newest complete checkpoint in the output folder, else initialise."""
    ckpt = latest_checkpoint(run.out_dir) if run.env.is_main else None
    ckpt = broadcast_object(str(ckpt) if ckpt else None)
    if ckpt:
        logger.info("resuming from %s", ckpt)
        state = broadcast_object(load_checkpoint(Path(ckpt)) if run.env.is_main else None)
        condenser.load_state_dict(state, ctx)
        return
    loaded = None
    if cfg.condense.init == "load":
        def read():
            return load_synthetic(cfg.condense.load_path, data.dataset.class_names, cfg.condense.ipc,
                                  cfg.dataset.max_length, condenser.hidden)
        loaded = broadcast_object(read() if run.env.is_main else None)
        logger.info("initialised from %s", cfg.condense.load_path)
    condenser.initialize(cfg.condense.init, ctx, loaded)


def save(condenser: Condenser, cfg: Config, run, data: Data) -> None:
    """Collective gather; rank 0 writes the synthetic set, preview, plot and checkpoint."""
    state = condenser.gather()
    if run.env.is_main:
        it = condenser.iteration
        meta = {"dataset": cfg.dataset.name, "class_names": data.dataset.class_names,
                "nclass": data.dataset.nclass, "ipc": cfg.condense.ipc, "iteration": it,
                "model": model_tag(cfg.network), "model_path": cfg.network.model_path,
                "max_length": cfg.dataset.max_length, "hidden_size": condenser.hidden,
                "factor": cfg.condense.factor, "decode_type": cfg.condense.decode_type,
                "multilabel": data.dataset.multilabel, "method": cfg.condense.method,
                "config": config_to_dict(cfg)}
        syn = assemble(state["data"], condenser.classes, meta)
        path = run.out_dir / "distilled_data" / f"syn_data_{it}.pth"
        atomic_torch_save(syn, path)
        write_preview(syn, data.tokenizer, condenser.pool.embedding_table(),
                      data.dataset.class_names, path.with_name(f"syn_data_{it}_preview.txt"))
        plot_loss_curve(condenser.history, run.out_dir / "images" / "loss_curve.png")
        atomic_write_json(run.out_dir / "loss_history.json", condenser.history)
        save_checkpoint(state, run.out_dir, it)
        logger.info("saved %s  %s", path, tuple(syn["inputs_embeds"].shape))
    barrier()


def format_record(rec: dict) -> str:
    """One log line of an iteration's metrics, naming the experts that were used."""
    feature_terms = "traj_loss" not in rec or rec["match_loss"] or rec["calib_loss"]
    text = f"match {rec['match_loss']:.5f}  calib {rec['calib_loss']:.5f}  " if feature_terms else ""
    text += f"lr {rec['lr']:.2e}"
    if rec["lam"] is not None:
        text += f"  expert {rec['expert']} lam {rec['lam']:.3f}"
    elif rec["calib_loss"]:
        text += f"  calibration expert {rec['expert']}"
    if "traj_loss" in rec:
        text += (f"  traj {rec['traj_loss']:.5f} (expert {rec['traj_expert']}, epoch "
                 f"{rec['start_epoch']})  syn_lr {rec['syn_lr']:.2e}")
    return text + f"  {rec['seconds']:.2f}s"


def write_summary(condenser: Condenser, run, seconds: float, iterations: int) -> None:
    """Collective: per-rank peak memory and timing, written by rank 0 to run_summary.json."""
    per_rank = all_gather_objects({"rank": run.env.rank, "classes": condenser.my_classes,
                                   **peak_memory_mb(run.env.device)})
    times = [h["seconds"] for h in condenser.history[-iterations:]] if iterations else []
    summary = {"world_size": run.env.world_size, "device": str(run.env.device),
               "iterations_run": iterations, "wall_seconds": round(seconds, 2),
               "mean_iteration_seconds": round(sum(times) / len(times), 4) if times else None,
               "final_iteration": condenser.iteration, "ranks": per_rank,
               "synthetic_set": str(run.out_dir / "distilled_data" /
                                    f"syn_data_{condenser.iteration}.pth")}
    if run.env.is_main:
        atomic_write_json(run.out_dir / "run_summary.json", summary)
        for r in per_rank:
            logger.info("rank %d: classes %s, peak memory %.0f MiB", r["rank"], r["classes"],
                        r["peak_rss_mb"])
        logger.info("done: %d iterations in %.1fs; synthetic set: %s", iterations, seconds,
                    summary["synthetic_set"])


def main(argv: Optional[Sequence[str]] = None) -> int:
    run = start_run(argv, __doc__.splitlines()[0], "condense", adjust=apply_debug)
    cfg, env = run.cfg, run.env
    with guarded_stage() as stage:
        data = load_data(cfg)
        ensure_experts(cfg, run, data)
        nclass = data.dataset.nclass
        classes = list(range(nclass))[:cfg.condense.debug_classes] if cfg.run.debug else list(range(nclass))
        pool = ExpertPool(cfg, nclass, env.device)
        condenser = Condenser(cfg, env, data.train, pool, classes)
        for rank, owned in enumerate(all_gather_objects(condenser.my_classes)):
            logger.info("rank %d owns classes %s", rank, owned or "none")
        ctx = condenser.init_context(data.tokenizer, nclass, data.dataset.multilabel)
        start_state(condenser, cfg, run, data, ctx)
        c = cfg.condense
        logger.info("***** Running condensation *****  method %s, %d classes x ipc %d, init %s, "
                    "%d iterations (from %d), metric %s, sampling net %s, calibration %d x %g, "
                    "%d experts", c.method, len(classes), c.ipc, c.init, c.niter, condenser.iteration,
                    c.dis_metrics, c.sampling_net, c.iter_calib, c.calib_weight, pool.num)
        start, first_it = time.time(), condenser.iteration
        bar = progress(range(condenser.iteration, c.niter), enabled=env.is_main, desc="condense")
        for _ in bar:
            rec = condenser.step()
            it = rec["iteration"]
            bar.set_postfix(match=f"{rec['match_loss']:.4f}", calib=f"{rec['calib_loss']:.4f}")
            if it % c.log_every == 0 or it == c.niter:
                logger.info("iter %d/%d  %s", it, c.niter, format_record(rec))
            if it % c.save_every == 0 or it == c.niter:
                save(condenser, cfg, run, data)
            if it in c.eval_it:  # evaluate the current set (collective; RNG state kept)
                condense_eval_hook(cfg, env, data, condenser, run.out_dir)
        write_summary(condenser, run, time.time() - start, condenser.iteration - first_it)
    return stage.exit_code


if __name__ == "__main__":
    sys.exit(main())
