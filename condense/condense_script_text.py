"""Stage 2 - condense: learn `ipc` synthetic sequences per class against the experts.

    torchrun --nproc_per_node=2 --nnodes=1 condense/condense_script_text.py \
        --config_path=config/ipc10/bbc.yaml [--ipc 10] [--niter 200] [--init mix] [--debug]

Each rank owns a balanced block of classes. Missing experts are trained first (stage 1). Outputs
under --output_dir (default results/condense/<dataset>/ipc<ipc>/<run_name>/):
distilled_data/syn_data_<iter>.pth (+ _preview.txt), images/loss_curve.png, checkpoints/,
loss_history.json, print.log, args.log (+ start_choice.json with init best_real). Re-running the
same command resumes from the last complete checkpoint.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
import time
from typing import Optional, Sequence

from condenser.condenser import Condenser, sequences_that_move
from condenser.expert_pool import ExpertPool
from condenser.init import INITS
from condenser.objectives import OBJECTIVES
from condenser.report import plot_loss_curve, write_preview
from condenser.schedule import Schedule
from evaluation.plots import plot_eval_curve
from evaluation.protocol import Evaluator, run_validation_indices, subset
from evaluation.results import best_by_validation, record_eval_curve, val_score
from evaluation.selectors import SELECTORS
from evaluation.start_choice import choose_start
from evaluation.worth import worth_entries, worth_table
from utils.checkpoint import check_resumable, load_latest, save_checkpoint, set_aside, settings_view
from utils.config import config_to_dict
from utils.config_schema import Config
from utils.distributed import all_gather_objects, barrier, main_then_broadcast, peak_memory_mb
from utils.errors import UserError
from utils.experts import ensure_experts
from utils.hf_export import export_missing
from utils.io import atomic_write_json, read_json
from utils.logging_utils import progress
from utils.model import model_tag
from utils.precision import resolve_precision
from utils.runtime import Data, guarded_stage, load_data, start_run
from utils.synset import build_synset, check_fits, load_synset, make_meta, save_synset, split_by_class
from utils.tracking import Tracker, current

logger = logging.getLogger("condense")


def apply_debug(cfg: Config) -> None:
    """--debug: few classes (see main), few iterations, a log line every iteration."""
    if cfg.run.debug:
        cfg.condense.niter = cfg.condense.debug_niter
        cfg.condense.log_every = 1
        cfg.condense.save_every = min(cfg.condense.save_every, cfg.condense.niter)


# Settings a resumed run may change; every other key shapes the saved state and must match.
RESUMABLE_CHANGES = ("condense.niter", "condense.save_every", "condense.log_every", "condense.eval_it",
                     "condense.worth_runs", "condense.precision", "condense.load_path",
                     "condense.debug_niter", "dataset.cache_dir", "dataset.at_least_one_label",
                     "dataset.max_test_per_class", "pretrain.expert_dir", "pretrain.eval_batch_size",
                     "evaluate.*", "distill.*", "run.output_dir", "run.run_name", "run.log_level",
                     "run.gpu", "run.tf32", "run.resume", "run.report_to")


def _without_resumable_options(view: dict) -> dict:
    """`view` with each objective's options that a resumed run may change left out: the fields
    its options dataclass marks `resumable` (e.g. feature_match's real_cache: a cache, not a
    setting of the result)."""
    specs = view.get("condense.objectives")
    if not isinstance(specs, list):
        return view
    out = []
    for spec in specs:
        spec = dict(spec)
        try:
            cls = OBJECTIVES.entry(spec.get("name"), where="condense.objectives").options_cls
        except UserError:
            out.append(spec)
            continue
        free = {f.name for f in dataclasses.fields(cls) if f.metadata.get("resumable")}
        spec["options"] = {k: v for k, v in dict(spec.get("options") or {}).items() if k not in free}
        out.append(spec)
    return {**view, "condense.objectives": out}


def resume_settings(cfg: Config) -> dict:
    return _without_resumable_options(settings_view(config_to_dict(cfg), RESUMABLE_CHANGES))


# what a condensation run writes into its folder; run.resume=never moves an earlier run's aside
# (print.log stays: this run's log is already open on it, and appends)
RUN_OUTPUTS = ("checkpoints", "distilled_data", "images", "args.log", "loss_history.json",
               "eval_curve.json", "best_iteration.json", "worth.json", "run_summary.json",
               "start_choice.json")


def find_resumable(cfg: Config, run) -> Optional[tuple]:
    """Collective, before any work: the newest loadable checkpoint of the output folder as (path,
    state), refused when it was made with other settings; then args.log is written (a refused run
    leaves the folder's args.log alone). With run.resume=never the earlier run's outputs are moved
    aside first (the caller has checked the inputs of a fresh start by then)."""
    if cfg.run.resume == "never" and run.env.is_main:
        set_aside(run.out_dir, RUN_OUTPUTS)
    barrier()

    def latest():
        found = load_latest(run.out_dir)
        if found is not None:
            saved = {**found[1], "settings": _without_resumable_options(found[1].get("settings", {}))}
            check_resumable(saved, resume_settings(cfg), found[0])
            return str(found[0]), found[1]
        return None
    found = main_then_broadcast(latest)
    run.save_args()
    return found


def check_fresh_start(cfg: Config) -> None:
    """The inputs a run that starts (not resumes) needs: a loadable set for init `load`, a
    validation slice and real candidates for an init that chooses its start, and a start that
    update_fraction can hold."""
    init = INITS.entry(cfg.condense.init, where="condense.init")
    if init.trait("loads_set"):
        from utils.synset import preflight_load
        preflight_load(cfg.condense.load_path)
    if init.trait("chooses_start"):
        check_start_candidates(cfg)
    check_held_start(cfg)


def check_start_candidates(cfg: Config) -> None:
    """An init that chooses its start (best_real) scores its candidates on the validation slice:
    evaluate.select_by 'val', and each candidate a real-sample init that is also a baseline."""
    c = cfg.condense
    if cfg.evaluate.select_by != "val":
        raise UserError(f"condense.init {c.init!r} chooses its start on the validation slice of the "
                        f"training split: set evaluate.select_by=val (and evaluate.eval_every)")
    opts = INITS.options(c.init, c.init_options, where="condense.init_options")
    usable = [n for n in INITS.with_trait("starts_real")
              if n in SELECTORS.names() and not INITS.entry(n).trait("chooses_start")]
    bad = [n for n in opts.candidates if n not in usable]
    if bad or not opts.candidates:
        raise UserError(f"condense.init_options.candidates {opts.candidates}: "
                        f"{'unknown or unusable ' + ', '.join(map(repr, bad)) if bad else 'empty'}; "
                        f"each must be a real-sample start that is also a baseline: "
                        f"{', '.join(usable)}")
    if opts.runs < 1:
        raise UserError(f"condense.init_options.runs is {opts.runs}: at least 1 classifier per "
                        f"candidate")


def check_held_start(cfg: Config) -> None:
    """condense.update_fraction holds sequences at their start: refuse a start that is not real
    samples (noise, mix, mask_fill, generated), whose held sequences would stay as they were made."""
    c = cfg.condense
    init = INITS.entry(c.init, where="condense.init")
    held = c.ipc - sequences_that_move(c.update_fraction, c.ipc)
    if held > 0 and not (init.trait("loads_set") or init.trait("starts_real")):
        real = ", ".join(INITS.with_trait("starts_real") + INITS.with_trait("loads_set"))
        raise UserError(f"condense.update_fraction {c.update_fraction:g} holds {held} of {c.ipc} "
                        f"sequences of each class at their start, and init {c.init!r} does not start "
                        f"from real samples, so they would stay as they were made; use a real start "
                        f"({real}) or update_fraction 1")


def chosen_start(evaluator: "LazyEvaluator", cfg: Config, run, ctx):
    """Collective, init `best_real`: the candidate start with the best validation score (rank 0
    writes start_choice.json) and the init context with that start's own options."""
    c = cfg.condense
    opts = INITS.options(c.init, c.init_options, where="condense.init_options")
    logger.info("choosing the start on the validation slice: %s, %d classifiers each",
                ", ".join(opts.candidates), opts.runs)
    mode, records = choose_start(evaluator(), opts.candidates, opts.runs)
    logger.info("start chosen on validation: %s", mode)
    if run.env.is_main:
        atomic_write_json(run.out_dir / "start_choice.json",
                          {"init": c.init, "chosen": mode, "candidates": records,
                           "chosen_by": "validation slice of the training split"})
    return mode, dataclasses.replace(ctx, options=INITS.options(mode, {}, where="condense.init"))


def start_state(condenser: Condenser, cfg: Config, data: Data, ctx, found: Optional[tuple],
                evaluator: "LazyEvaluator", run) -> str:
    """Resume from `found` (see find_resumable), else initialise; returns the start used."""
    if found:
        logger.info("resuming from %s", found[0])
        condenser.load_state_dict(found[1], ctx)
        return "resumed"
    mode, loaded = cfg.condense.init, None
    if INITS.entry(mode, where="condense.init").trait("chooses_start"):
        mode, ctx = chosen_start(evaluator, cfg, run, ctx)
    if INITS.entry(mode, where="condense.init").trait("loads_set"):
        def read():
            path = cfg.condense.load_path
            syn = load_synset(path)
            check_fits(syn, path, class_names=data.dataset.class_names, ipc=cfg.condense.ipc,
                       max_length=cfg.dataset.max_length, hidden_size=condenser.hidden,
                       all_classes=True)
            return split_by_class(syn)
        loaded = main_then_broadcast(read)
        logger.info("initialised from %s", cfg.condense.load_path)
    condenser.initialize(mode, ctx, loaded)
    return mode


def synset_meta(cfg: Config, data: Data, condenser: Condenser) -> dict:
    return make_meta(dataset=cfg.dataset.name, class_names=data.dataset.class_names,
                     ipc=cfg.condense.ipc, iteration=condenser.iteration,
                     model=model_tag(cfg.network), model_path=cfg.network.model_path,
                     max_length=cfg.dataset.max_length, hidden_size=condenser.hidden,
                     factor=cfg.condense.factor, decode_type=cfg.condense.decode_type,
                     multilabel=data.dataset.multilabel, method=condenser.describe_terms(),
                     config=config_to_dict(cfg), tokens=cfg.condense.tokens)


def save(condenser: Condenser, cfg: Config, run, data: Data) -> None:
    """Collective gather to rank 0, which writes the synthetic set, preview, plot and checkpoint."""
    state = condenser.gather_state()
    if run.env.is_main:
        it = condenser.iteration
        syn = build_synset(condenser.output(state["data"]), condenser.classes,
                           synset_meta(cfg, data, condenser))
        path = run.out_dir / "distilled_data" / f"syn_data_{it}.pth"
        save_synset(syn, path)
        write_preview(syn, data.tokenizer, condenser.pool.embedding_table(),
                      data.dataset.class_names, path.with_name(f"syn_data_{it}_preview.txt"))
        plot_loss_curve(condenser.history, run.out_dir / "images" / "loss_curve.png")
        atomic_write_json(run.out_dir / "loss_history.json", condenser.history)
        save_checkpoint({**state, "settings": resume_settings(cfg)}, run.out_dir, it)
        logger.info("saved %s  %s", path, tuple(syn["inputs_embeds"].shape))
    barrier()


def condensation_split(cfg: Config, data: Data):
    """The real data condensation sees: the training split, without the evaluation's validation
    slice when the kept iteration is chosen on it (evaluate.select_by 'val')."""
    if cfg.evaluate.select_by != "val":
        return data.train
    held = set(run_validation_indices(cfg, data.train.labels))
    keep = [i for i in range(len(data.train)) if i not in held]
    logger.info("validation slice: %d training samples held out of condensation (select_by val)",
                len(held))
    return subset(data.train, keep, data.dataset.nclass)


def keep_best(run, cfg: Config) -> None:
    """Rank 0, select_by 'val': name the evaluated iteration with the best validation score
    (accuracy; micro-F1 for multi-label)."""
    curve_path = run.out_dir / "eval_curve.json"
    best = best_by_validation(read_json(curve_path)) if curve_path.is_file() else None
    if best is None:
        return
    path = run.out_dir / "distilled_data" / f"syn_data_{best['iteration']}.pth"
    atomic_write_json(run.out_dir / "best_iteration.json",
                      {"iteration": best["iteration"], "synthetic_set": str(path),
                       "val_accuracy_mean": best["val_accuracy_mean"],
                       "val_micro_f1_mean": best.get("val_micro_f1_mean"),
                       "chosen_by": "validation slice of the training split"})
    by = "micro-F1" if best.get("val_micro_f1_mean") is not None else "accuracy"
    logger.info("best iteration by validation %s: %d (%.4f); set %s", by, best["iteration"],
                val_score(best, "_mean"), path)


def current_set(condenser: Condenser, cfg: Config, data: Data) -> dict:
    """Collective: the current synthetic set (the saved-file dict) on every rank."""
    per_class: dict = {}
    for part in all_gather_objects(condenser.shard.state_dict()):
        per_class.update(part)
    return build_synset(condenser.output(per_class), condenser.classes, synset_meta(cfg, data, condenser))


def report_worth(evaluator: Evaluator, condenser: Condenser, cfg: Config, run, data: Data) -> None:
    """Collective, for `condense.worth_runs`: the final set vs a random real subset of the same
    size; rank 0 logs the table and writes worth.json."""
    syn = current_set(condenser, cfg, data)
    logger.info("what is the set worth? %d classifiers on it and %d on a random real subset "
                "(evaluation protocol: %d steps each)", cfg.condense.worth_runs,
                cfg.condense.worth_runs, cfg.evaluate.steps)
    entries = worth_entries(evaluator, syn, cfg.condense.worth_runs,
                            source=f"syn_data_{condenser.iteration}.pth")
    current().log(condenser.iteration, {f"worth/{e['method']}_accuracy": e["mean"] for e in entries})
    if run.env.is_main:
        atomic_write_json(run.out_dir / "worth.json", entries)
        logger.info("what the set is worth:\n%s", worth_table(entries))


def evaluate_now(evaluator: Evaluator, condenser: Condenser, cfg: Config, run, data: Data) -> dict:
    """Collective, for `condense.eval_it`: the current set (gathered to every rank) through the
    evaluation protocol (which leaves the RNG alone); rank 0 appends it to eval_curve.json."""
    syn = current_set(condenser, cfg, data)
    start = time.time()
    entry = evaluator.synthetic(syn, source=f"iteration {condenser.iteration}")
    current().log(condenser.iteration, {"condense/eval_accuracy": entry["mean"]})
    logger.info("eval iter %d: accuracy %.4f ± %.4f (%d runs, %.1fs)", condenser.iteration,
                entry["mean"], entry["std"], entry["num_eval"], time.time() - start)
    if run.env.is_main:
        curve = record_eval_curve(run.out_dir / "eval_curve.json", condenser.iteration, entry,
                                  time.time() - start, sum(h["seconds"] for h in condenser.history))
        plot_eval_curve(curve, run.out_dir / "images" / "eval_curve.png")
    return entry


def format_record(rec: dict) -> str:
    """One log line of an iteration: every term's value, the learning rate, the experts used."""
    text = "  ".join(f"{k[:-5]} {v:.5f}" for k, v in rec.items() if k.endswith("_loss"))
    text += f"  lr {rec['lr']:.2e}" + ("  SKIPPED (non-finite)" if rec.get("skipped") else "")
    if "lam" in rec:
        text += f"  expert {rec['expert']} lam {rec['lam']:.3f}"
    if "calib_expert" in rec and "lam" not in rec:
        text += f"  calibration expert {rec['calib_expert']}"
    if "traj_expert" in rec:
        text += f"  trajectory expert {rec['traj_expert']} epoch {rec['start_epoch']}"
        text += f"  syn_lr {rec['syn_lr']:.2e}"
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


class LazyEvaluator:
    """The run's one `Evaluator`, built the first time an evaluation is due (a run that never
    evaluates never builds it)."""

    def __init__(self, cfg: Config, env, data: Data):
        self.cfg, self.env, self.data, self._ev = cfg, env, data, None

    def __call__(self) -> Evaluator:
        if self._ev is None:
            self._ev = Evaluator(self.cfg, self.env, self.data)
        return self._ev


def main(argv: Optional[Sequence[str]] = None) -> int:
    run = start_run(argv, __doc__.splitlines()[0], "condense", adjust=apply_debug,
                    defer_args_log=True)
    cfg, env = run.cfg, run.env
    stage_seconds, t0 = {}, time.time()
    with guarded_stage() as stage, contextlib.ExitStack() as stack:
        # bad input is refused before the folder is touched (resume=never moves files aside) and
        # before anything is opened or trained
        data = load_data(cfg)
        fresh = cfg.run.resume == "never"
        if fresh:
            check_fresh_start(cfg)
        found = find_resumable(cfg, run)
        if not found and not fresh:
            check_fresh_start(cfg)
        tracker = stack.enter_context(Tracker.session(cfg, run.out_dir, env))  # run.report_to
        ensure_experts(cfg, env, data)
        if env.is_main:
            export_missing(cfg, data)                           # expert_<k>/hf for from_pretrained
        stage_seconds["data and experts"] = time.time() - t0
        nclass = data.dataset.nclass
        classes = list(range(nclass))[:cfg.condense.debug_classes] if cfg.run.debug else list(range(nclass))
        pool = ExpertPool(cfg, nclass, env.device)
        condenser = Condenser(cfg, env, condensation_split(cfg, data), pool, classes)
        for rank, owned in enumerate(all_gather_objects(condenser.my_classes)):
            logger.info("rank %d owns classes %s", rank, owned or "none")
        ctx = condenser.init_context(data.tokenizer, nclass, data.dataset.multilabel,
                                     list(data.dataset.class_names))
        evaluator, t_start = LazyEvaluator(cfg, env, data), time.time()
        started = start_state(condenser, cfg, data, ctx, found, evaluator, run)
        stage_seconds["start"] = time.time() - t_start
        c, schedule = cfg.condense, Schedule.of(cfg)
        init = c.init if started in (c.init, "resumed") else f"{c.init} ({started})"
        logger.info("***** Running condensation *****  objectives: %s; %d classes x ipc %d, init "
                    "%s, %d iterations (from %d), %d experts, precision %s%s",
                    condenser.describe_terms(), len(classes), c.ipc, init, c.niter,
                    condenser.iteration, pool.num, resolve_precision(c.precision, env.device),
                    " (auto)" if c.precision == "auto" else "")
        logger.info("objective options: %s", condenser.describe_options())
        saved_start = False
        if condenser.iteration == 0 and schedule.evaluate(0):  # the start (e.g. herding's picks)
            if schedule.save_evaluated:
                save(condenser, cfg, run, data)
                saved_start = True
            evaluate_now(evaluator(), condenser, cfg, run, data)
        if c.niter == 0 and not saved_start:          # a selection-only run: the start is the set
            save(condenser, cfg, run, data)
        start, first_it = time.time(), condenser.iteration
        bar = progress(range(condenser.iteration, c.niter), enabled=env.is_main, desc="condense")
        for _ in bar:
            rec = condenser.step()
            it = rec["iteration"]
            bar.set_postfix({k[:-5]: f"{v:.4f}" for k, v in rec.items() if k.endswith("_loss")})
            if schedule.log(it):
                logger.info("iter %d/%d  %s", it, c.niter, format_record(rec))
                tracker.log_record("condense", it, rec)
            if schedule.save(it):
                save(condenser, cfg, run, data)
            if schedule.evaluate(it):
                evaluate_now(evaluator(), condenser, cfg, run, data)
        stage_seconds["condensation"] = time.time() - start
        write_summary(condenser, run, time.time() - start, condenser.iteration - first_it)
        if env.is_main and cfg.evaluate.select_by == "val":
            keep_best(run, cfg)
        if c.worth_runs:
            start = time.time()
            report_worth(evaluator(), condenser, cfg, run, data)
            stage_seconds["worth table"] = time.time() - start
        logger.info("stage timings: %s; total %.0fs", ", ".join(
            f"{k} {v:.0f}s" for k, v in stage_seconds.items()), time.time() - t0)
    return stage.exit_code


if __name__ == "__main__":
    sys.exit(main())
