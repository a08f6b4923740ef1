"""Stage 3 - evaluate: train fresh classifiers on a synthetic set and on real-data baselines.

    torchrun --nproc_per_node=2 condense/evaluate_script_text.py --config_path=config/ipc10/bbc.yaml \
        --load_path=results/condense/bbc/ipc10/<run>/distilled_data/syn_data_<iter>.pth \
        [--baseline random,herding,kcenter,kmeans,full] [--eval_model_path MODEL]

`--load_path` evaluates a saved synthetic set; `--baseline` (comma-separated, repeatable) adds
real-data baselines at the same ipc (condense.ipc) under exactly the same training protocol:
'random', 'herding', 'kcenter' and 'kmeans' (k-means centroids' nearest samples) pick ipc training
samples per class (all but 'random' on the features of expert `evaluate.feature_expert`, trained
first if missing), 'full' trains on all training data for `evaluate.full_epochs` epochs (or
exactly `evaluate.full_steps` steps). `--eval_model_path` (evaluate.eval_model_path) trains
another encoder of the same hidden size (cross-architecture check). The `evaluate.num_eval` runs
per method are spread over ranks; see evaluation/protocol.py for the protocol.

Outputs under --output_dir (default results/evaluate/<dataset>/ipc<ipc>/<run_name>/):
eval/results.json (one entry per method: per-run scores and curves, mean, std, gap_to_full,
gain_over_random), eval/accuracy_vs_step.png, eval/projection.png (expert features of the test
split and of the synthetic set, when one is evaluated), print.log, args.log; one row per method is
appended to the shared markdown table `evaluate.results_table` (default results/results.md).
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from evaluation.plots import plot_accuracy_vs_step, plot_projection
from evaluation.protocol import (
    SYNTHETIC,
    EvalContext,
    EvaluationError,
    baselines,
    evaluate_baseline,
    evaluate_synthetic,
    make_context,
    parse_baselines,
)
from evaluation.results import add_gaps, append_results_table, log_entry, read_results_table
from evaluation.selectors import SELECTORS, load_feature_expert, needs_features
from utils.checkpoint import set_aside
from utils.coreset import expert_features
from utils.errors import UserError
from utils.experts import ensure_experts, missing_experts
from utils.io import atomic_write_json
from utils.runtime import guarded_stage, load_data, start_run
from utils.synset import load_synset, to_examples
from utils.tracking import Tracker

logger = logging.getLogger("evaluate")


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--baseline", action="append", default=[], metavar="NAMES",
                   help=f"Real-data baselines, comma-separated and/or repeated: "
                        f"{', '.join(baselines())}.")


def _display_path(path: str) -> str:
    from utils.config import PROJECT_ROOT
    try:
        return str(Path(path).resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


def _projection_expert(cfg, ctx: EvalContext, data):
    """The feature expert for the projection plot, or None (with a warning) when it is missing:
    experts are not trained just for a figure."""
    try:
        if missing_experts(cfg):
            logger.warning("experts missing in %s: eval/projection.png is skipped",
                           cfg.pretrain.expert_dir)
            return None
        return load_feature_expert(cfg, ctx.nclass, ctx.env.device, data.tokenizer.vocab_size)
    except UserError as exc:
        logger.warning("no projection plot: %s", exc)
        return None


def write_outputs(ctx: EvalContext, entries: List[dict], out: Path, syn: Optional[dict],
                  expert, data) -> None:
    """Rank 0: results.json, the shared table, the plots."""
    cfg = ctx.cfg
    table = cfg.evaluate.results_table
    add_gaps(entries, read_results_table(table))
    atomic_write_json(out / "eval" / "results.json", entries)
    rows = append_results_table(table, entries)
    logger.info("results (appended to %s):\n%s", table, rows)
    logger.info("results written to %s", out / "eval" / "results.json")
    try:
        ev = cfg.evaluate
        note = ""
        if ev.eval_every and ev.curve_rows and ev.curve_rows < len(data.test):
            note = (f"points before the last step: {ev.curve_rows} of {len(data.test)} test rows; "
                    f"last step: all")
        plot_accuracy_vs_step(entries, out / "eval" / "accuracy_vs_step.png", note)
        if syn is not None and expert is not None:
            dev, bs = ctx.env.device, cfg.evaluate.eval_batch_size
            test = data.test                                  # the experts' tokenisation
            real = expert_features(expert, test.attention_mask, bs, dev, input_ids=test.input_ids)
            real_y = test.labels.argmax(1) if test.labels.dim() == 2 else test.labels
            ts = to_examples(syn)
            fake = expert_features(expert, ts.attention_mask, bs, dev, inputs_embeds=ts.inputs_embeds)
            plot_projection(real.numpy(), real_y.numpy(), fake.numpy(), ts.class_of.numpy(),
                            ctx.class_names, out / "eval" / "projection.png",
                            cfg.evaluate.projection, cfg.run.seed)
    except Exception as exc:  # noqa: BLE001 - the numbers are written; a figure is not worth a failure
        logger.warning("could not draw the evaluation plots: %s: %s", type(exc).__name__, exc)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    run = start_run(argv, __doc__.splitlines()[0], "evaluate", add_args=add_args,
                    defer_args_log=True)
    cfg, env = run.cfg, run.env
    with guarded_stage() as stage, contextlib.ExitStack() as stack:
        # every input is checked before anything is written: a refused run leaves the folder alone
        wanted = parse_baselines(run.args.baseline)
        syn_path = cfg.condense.load_path
        if not wanted and not syn_path:
            raise EvaluationError("nothing to evaluate: give a synthetic set (--load_path FILE) "
                                  f"and/or baselines (--baseline {','.join(baselines())})")
        syn = load_synset(syn_path) if syn_path else None
        data = load_data(cfg)
        if env.is_main and (run.out_dir / "eval" / "results.json").exists():
            set_aside(run.out_dir, ("eval", "args.log"), "an earlier evaluation is here")
        run.save_args()
        tracker = stack.enter_context(Tracker.session(cfg, run.out_dir, env))  # run.report_to
        ctx = make_context(cfg, env, data)
        ev = cfg.evaluate
        full = f"{ev.full_steps} steps" if ev.full_steps is not None else f"{ev.full_epochs:g} epochs"
        head = "" if ev.head_lr is None else f" (head {ev.head_lr:g})"
        logger.info("***** Evaluating *****  %s, %d runs x %d steps (full: %s), batch %d, lr %g%s, "
                    "select by %s, encoder %s", ", ".join(([SYNTHETIC] if syn else []) + wanted),
                    ev.num_eval, ev.steps, full, ev.batch_size, ev.lr, head, ev.select_by, ctx.model)
        entries = []
        if syn is not None:
            entries.append(evaluate_synthetic(cfg, env, data, syn, _display_path(syn_path), ctx))
            log_entry(entries[-1])
            tracker.log(0, {f"evaluate/{entries[-1]['method']}/accuracy": entries[-1]["mean"]})
        expert = features = None
        featured = {b for b in wanted if b in SELECTORS and needs_features(b)}
        if featured:
            ensure_experts(cfg, env, data)                   # collective: every rank, same errors
            expert = load_feature_expert(cfg, ctx.nclass, env.device, data.tokenizer.vocab_size)
        elif syn is not None and env.is_main:
            expert = _projection_expert(cfg, ctx, data)      # rank 0 only: never raises
        for method in wanted:
            if method in featured and features is None:
                features = expert_features(expert, data.train.attention_mask,
                                           ev.eval_batch_size, env.device,
                                           input_ids=data.train.input_ids)
            entries.append(evaluate_baseline(ctx, method, features))
            log_entry(entries[-1])
            tracker.log(0, {f"evaluate/{entries[-1]['method']}/accuracy": entries[-1]["mean"]})
        if env.is_main:
            if syn is not None and expert is not None and expert.hidden_size != syn[
                    "inputs_embeds"].shape[-1]:
                logger.warning("the synthetic set's hidden size differs from the experts': "
                               "eval/projection.png is skipped")
                expert = None
            write_outputs(ctx, entries, run.out_dir, syn, expert, data)
    return stage.exit_code


if __name__ == "__main__":
    sys.exit(main())
