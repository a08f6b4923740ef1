"""Evaluation of condensed sets and of real-data baselines under one training protocol.

The protocol (section `evaluate` of the config), the same for every method:

- `num_eval` fresh classifiers per method, run i seeded with `derive_seed(run.seed, "evaluate", i)`
  (the same seeds for every method, so methods are compared on paired runs); the runs are spread
  over ranks with `rotated_shard` and gathered with a collective, so the numbers do not depend on
  the world size; when `num_eval` does not divide by the world size, the rank that takes the
  spare run moves on by one with each method, so over several methods the ranks stay busy alike;
- each classifier is the PRE-TRAINED encoder (`network.model_path`, or `evaluate.eval_model_path`
  for a cross-architecture check) with a new head, never an expert;
- `steps` AdamW steps (`lr`, `weight_decay`, constant rate, gradient norm clipped to 1) on batches
  of `batch_size` drawn by cycling over seeded shuffles of the (tiny) training set; the 'full'
  baseline trains `full_epochs` epochs over all of it instead (or exactly `full_steps`): as long
  as the experts, so the gap to full is measured against a converged model;
- test accuracy (and macro-F1; micro-F1 too for multi-label) at the last step on the whole test
  split; with `eval_every`, also every N steps on `curve_rows` test rows (a fixed subsample): the
  accuracy-vs-step curve;
- model selection `select_by`: 'last' reports the last step; 'val' the evaluated step with the best
  accuracy on `val_fraction` of the TRAINING split (stratified, seeded), which is then left out of
  the baselines' selection pools and of 'full'. The test split never selects anything;
- labels `label_mode`: 'hard' (what the set carries) or 'expert_soft' (every method, synthetic and
  baselines alike, trains on the softened predictions of expert `feature_expert`): soft labels
  for all methods or for none, never for one side only;
- attention labels `attention_weight` > 0: every method also trains toward expert
  `feature_expert`'s attention maps on its own examples (`utils.training.attention_kl`), again for
  all methods or for none; the results' `labels` names the protocol ('hard+attn1').

Methods: 'synthetic' (a saved set: inputs_embeds + attention masks; 'multi' sets are decoded into
`factor` examples per sequence; float label vectors in a single-label task are soft labels, trained
with soft cross-entropy), and the baselines: the registered selectors 'random', 'herding',
'kcenter', 'kmeans' (`evaluation.selectors`, ipc = `condense.ipc` real training samples per class;
those that need features use the pooled last-layer features of expert `feature_expert`'s final
weights) and 'full' (all training data).

Each method gives one results entry (see `summarize`): per-run scores and curves, mean and std
(numpy, ddof=0) over runs, and DD-Ranking-style `gap_to_full` = full mean - method mean and
`gain_over_random` = method mean - random mean (test accuracy), taken from the same evaluation or,
failing that, from the latest matching row of the shared results table.
"""
from __future__ import annotations

import itertools
import logging
import math
import time
from typing import List, Optional, Sequence

import numpy as np
import torch

from evaluation.context import (  # noqa: F401  (re-exported: the protocol's public names)
    EvalContext,
    EvaluationError,
    encoder_hidden_size,
    eval_network,
    expert_attention_labels,
    expert_soft_labels,
    label_protocol,
    make_context,
    run_validation_indices,
    subset,
    validation_indices,
)
from evaluation.results import val_score  # noqa: F401  (the choice rule; re-exported)
from evaluation.selectors import SELECTORS, select_for
from utils.config_schema import Config
from utils.data import TokenizedSplit
from utils.distributed import DistEnv, all_gather_objects, rotated_shard
from utils.experts import dataset_tag
from utils.model import (
    TextClassifier,
    build_classifier,
)
from utils.precision import resolve_precision, uses_bf16
from utils.seeding import derive_seed
from utils.synset import check_fits, to_examples
from utils.training import (
    Examples,
    adamw,
    attention_label_loss_fn,
    endless_batches,
    evaluate_classifier,
    label_loss_fn,
    train_steps,
)

logger = logging.getLogger(__name__)

FULL = "full"                 # the baseline that trains on all training data
SYNTHETIC = "synthetic"


def baselines() -> List[str]:
    """Every baseline: the registered selectors (evaluation.selectors.SELECTORS) and 'full'."""
    return [*SELECTORS.names(), FULL]


BASELINES = tuple(baselines())   # the shipped ones (a selector registered later: baselines())


# ------------------------------------------------------------------------------ method names

def parse_baselines(values: Optional[Sequence[str]]) -> List[str]:
    """`--baseline random,herding --baseline full` -> ['random', 'herding', 'full'] (deduplicated,
    in the given order); an unknown name is an error listing the allowed ones."""
    out: List[str] = []
    for value in values or []:
        for name in (v.strip().lower() for v in str(value).split(",")):
            if not name:
                continue
            if name not in baselines():
                raise EvaluationError(f"unknown baseline {name!r}; allowed: {', '.join(baselines())} "
                                      f"(several may be given comma-separated, e.g. "
                                      f"--baseline random,herding,kcenter,kmeans,full)")
            if name not in out:
                out.append(name)
    return out


# --------------------------------------------------------------------------- the protocol

def run_seed(seed: int, i: int) -> int:
    return derive_seed(seed, "evaluate", i)


def eval_steps(steps: int, every: Optional[int]) -> List[int]:
    """The evaluated steps: every `every` steps and the last one (only the last when None)."""
    return sorted(set(range(every, steps + 1, every) if every else ()) | {steps})


def curve_subset(test: TokenizedSplit, rows: Optional[int], seed: int) -> TokenizedSplit:
    """A fixed, seeded subsample of the test split for intermediate curve points."""
    if rows is None or rows >= len(test):
        return test
    idx = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))[:rows].sort().values
    return subset(test, idx.tolist(), len(test.class_indices))


def train_classifier(ctx: EvalContext, ts: Examples, steps: int, seed: int, desc: str = "eval",
                     attention_targets: Optional[torch.Tensor] = None) -> dict:
    """One evaluation run: a fresh classifier trained on `ts` (the one trainer,
    `utils.training.train_steps`), toward `attention_targets` too when given (attention labels,
    [N, K, heads, L, L]); returns its scores and accuracy-vs-step curve."""
    dev = ctx.env.device
    if len(ts) == 0:
        raise EvaluationError(f"{desc}: no training examples")
    # the classifier's initialisation and dropout draw from torch's global generator: seeded
    # here inside a fork of it, so the caller's RNG state is untouched (condensation goes on
    # exactly as without the evaluation); the batches have their own generator
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        return _train_classifier(ctx, ts, steps, seed, desc, attention_targets)


def param_groups(model: TextClassifier, ev) -> list:
    """The optimiser's groups: the encoder at `evaluate.lr`, the new head at `evaluate.head_lr`
    (one group at `lr` when it is null)."""
    if ev.head_lr is None:
        return [{"params": list(model.parameters())}]
    head = list(model.classifier.parameters())
    ids = {id(p) for p in head}
    return [{"params": [p for p in model.parameters() if id(p) not in ids]},
            {"params": head, "lr": ev.head_lr}]


def _train_classifier(ctx: EvalContext, ts: Examples, steps: int, seed: int, desc: str,
                      attention_targets: Optional[torch.Tensor]) -> dict:
    ev, dev = ctx.cfg.evaluate, ctx.env.device
    with_attention = attention_targets is not None
    model: TextClassifier = build_classifier(ctx.net, ctx.nclass, pretrained=True,
                                             vocab_size=ctx.vocab_size,
                                             eager_attention=with_attention).to(dev)
    loss_fn = (attention_label_loss_fn(ctx.multilabel, attention_targets, ev.attention_layers,
                                       ev.attention_weight)
               if with_attention else label_loss_fn(ctx.multilabel))
    optimizer = adamw(param_groups(model, ev), lr=ev.lr, weight_decay=ev.weight_decay)
    gen = torch.Generator().manual_seed(derive_seed(seed, "batches"))
    batches = endless_batches(len(ts), min(ev.batch_size, len(ts)), gen)
    checkpoints = set(eval_steps(steps, ev.eval_every))
    curve_test = curve_subset(ctx.test, ev.curve_rows, derive_seed(ctx.cfg.run.seed, "curve"))
    one = ctx.cfg.dataset.at_least_one_label
    bf16 = uses_bf16(ev.precision, dev)
    points: List[dict] = []
    timing = {"eval": 0.0, "loss": float("nan")}

    def on_step(step: int, loss: float) -> Optional[dict]:
        timing["loss"] = loss
        if step not in checkpoints:
            return None
        start = time.perf_counter()
        # the reported step is scored on the whole split: the last one, or any under select_by val
        split = ctx.test if step == steps or ev.select_by == "val" else curve_test
        point = {"step": step, **evaluate_classifier(model, split, ev.eval_batch_size, dev,
                                                     one, bf16)}
        if ctx.val is not None:
            val = evaluate_classifier(model, ctx.val, ev.eval_batch_size, dev, one, bf16)
            point["val_accuracy"] = val["accuracy"]
            if "micro_f1" in val:                      # multi-label: chosen by micro-F1
                point["val_micro_f1"] = val["micro_f1"]
        points.append(point)
        timing["eval"] += time.perf_counter() - start
        return {"acc": f"{point['accuracy']:.4f}"}

    start = time.perf_counter()
    train_steps(model, ts, itertools.islice(batches, steps), optimizer, dev,
                loss_fn, total=steps, show_progress=ctx.env.is_main,
                desc=desc, on_step=on_step, bf16=bf16)
    train_s = time.perf_counter() - start - timing["eval"]
    if ev.select_by == "val":
        chosen = max(points, key=lambda p: (val_score(p), -p["step"]))  # ties: earliest
    else:
        chosen = points[-1]
    record = {"seed": seed, **{k: v for k, v in chosen.items() if k not in ("step",)},
              "selected_step": chosen["step"], "final_loss": timing["loss"],
              "train_seconds": round(train_s, 3), "eval_seconds": round(timing["eval"], 3),
              "curve": [[p["step"], p["accuracy"]] for p in points]}
    if ctx.val is not None:
        record["val_curve"] = [[p["step"], p["val_accuracy"]] for p in points]
    return record


def evaluate_runs(ctx: EvalContext, method: str, ts: Examples, steps: int,
                  num_eval: Optional[int] = None) -> List[dict]:
    """Collective: this rank's share of the `num_eval` runs (default evaluate.num_eval),
    gathered; every rank gets all runs, in run order."""
    n = num_eval or ctx.cfg.evaluate.num_eval
    if ctx.label_expert is not None:
        ts = expert_soft_labels(ctx, ts)
    targets = expert_attention_labels(ctx, ts) if ctx.attention_expert is not None else None
    local = []
    share = rotated_shard(n, ctx.env.world_size, ctx.env.rank, ctx.rounds)  # same on every rank
    ctx.rounds += 1
    for i in share:
        rec = train_classifier(ctx, ts, steps, run_seed(ctx.cfg.run.seed, i),
                               desc=f"{method} run {i + 1}/{n}", attention_targets=targets)
        local.append({"run": i, "rank": ctx.env.rank, **rec})
        logger.info("%s run %d/%d: test accuracy %.4f (step %d, %.1fs)", method, i + 1, n,
                    rec["accuracy"], rec["selected_step"], rec["train_seconds"])
    runs = sorted((r for part in all_gather_objects(local) for r in part), key=lambda r: r["run"])
    for r in runs:                        # the other ranks' runs, in rank 0's log
        if r["rank"] != ctx.env.rank:
            logger.info("%s run %d/%d (rank %d): test accuracy %.4f (step %d, %.1fs)", method,
                        r["run"] + 1, n, r["rank"], r["accuracy"], r["selected_step"],
                        r["train_seconds"])
    return runs


METRICS = ("accuracy", "macro_f1", "micro_f1")


def summarize(ctx: EvalContext, method: str, runs: List[dict], ts: Examples, steps: int,
              ipc: int, **extra) -> dict:
    """One results entry: per-run records, mean/std over runs (ddof=0), timing, and gap fields
    (filled in by `add_gaps`)."""
    metrics = {}
    for m in (*METRICS, "val_accuracy", "val_micro_f1"):
        if runs and m in runs[0]:
            vals = np.array([r[m] for r in runs], dtype=np.float64)
            metrics[m] = {"mean": float(vals.mean()), "std": float(vals.std())}
    return {"method": method, "dataset": dataset_tag(ctx.cfg), "ipc": ipc, "model": ctx.model,
            "n_train": len(ts), "steps": steps, "num_eval": len(runs),
            "select_by": ctx.cfg.evaluate.select_by, "labels": label_protocol(ctx.cfg.evaluate),
            "world_size": ctx.env.world_size,
            "precision": resolve_precision(ctx.cfg.evaluate.precision, ctx.env.device),
            "mean": metrics["accuracy"]["mean"], "std": metrics["accuracy"]["std"],
            "metrics": metrics,
            "train_seconds": float(np.mean([r["train_seconds"] for r in runs])),
            "gap_to_full": None, "gain_over_random": None, **extra, "runs": runs}


# ---------------------------------------------------------------------- synthetic, end to end

def evaluate_synthetic(cfg: Config, env: DistEnv, data, syn: dict, source: str = "",
                       ctx: Optional[EvalContext] = None, num_eval: Optional[int] = None) -> dict:
    """Collective: the evaluation protocol on a synthetic set (the saved-file dict); returns its
    results entry on every rank."""
    ctx = ctx or make_context(cfg, env, data)
    hint = (f" (evaluate it with an encoder of hidden size {syn['inputs_embeds'].shape[-1]}: "
            f"evaluate.eval_model_path / --eval_model_path)")
    check_fits(syn, source or "synthetic set", class_names=ctx.class_names,
               hidden_size=ctx.hidden_size, hidden_hint=hint)
    ts = to_examples(syn)
    meta = syn["meta"]
    if int(meta.get("ipc", cfg.condense.ipc)) != cfg.condense.ipc:
        logger.warning("the synthetic set has ipc %s but condense.ipc is %d: baselines of this "
                       "call use %d (pass --ipc %s to compare at the same ipc)", meta.get("ipc"),
                       cfg.condense.ipc, cfg.condense.ipc, meta.get("ipc"))
    runs = evaluate_runs(ctx, SYNTHETIC, ts, cfg.evaluate.steps, num_eval)
    return summarize(ctx, SYNTHETIC, runs, ts, cfg.evaluate.steps,
                     int(meta.get("ipc", cfg.condense.ipc)), source=source,
                     iteration=meta.get("iteration"), condense_method=meta.get("method"),
                     factor=int(meta.get("factor", 1)),
                     decode_type=str(meta.get("decode_type", "single")))


# ------------------------------------------------------------------------- real baselines

def full_steps(ev, rows: int) -> int:
    """Steps of the 'full' baseline: `full_steps` when set, else `full_epochs` over `rows`."""
    if ev.full_steps is not None:
        return ev.full_steps
    return max(1, math.ceil(ev.full_epochs * rows / ev.batch_size))


def evaluate_baseline(ctx: EvalContext, method: str, features: Optional[torch.Tensor],
                      num_eval: Optional[int] = None) -> dict:
    """Collective: select (or take all) training samples and run the protocol on them."""
    cfg = ctx.cfg
    if method == FULL:
        idx = torch.tensor(ctx.selectable(), dtype=torch.long)
        steps = full_steps(cfg.evaluate, len(idx))
        extra = {"source": "all training data",
                 "epochs": round(steps * cfg.evaluate.batch_size / max(1, len(idx)), 2)}
        how = ("evaluate.full_steps" if cfg.evaluate.full_steps is not None
               else f"{cfg.evaluate.full_epochs:g} epochs of batch {cfg.evaluate.batch_size}")
        logger.info("full: %d training samples, %d steps (%s)", len(idx), steps, how)
    else:
        sel = select_for(method, ctx.train.labels, ctx.nclass, cfg.condense.ipc, cfg.run.seed,
                         features, ctx.val_idx)
        idx = torch.cat([sel[c] for c in sorted(sel)])
        steps = cfg.evaluate.steps
        extra = {"source": f"train split, seed {cfg.run.seed}",
                 "selected": {ctx.class_names[c]: sel[c].tolist() for c in sorted(sel)}}
        short = sum(1 for c in sel if len(sel[c]) < cfg.condense.ipc)
        logger.info("%s: %d training samples selected (%s per class%s)", method, len(idx),
                    cfg.condense.ipc, f"; {short} classes have fewer and give all theirs"
                    if short else "")
    ts = Examples.of(ctx.train, idx)
    runs = evaluate_runs(ctx, method, ts, steps, num_eval)
    return summarize(ctx, method, runs, ts, steps, cfg.condense.ipc, **extra)


class Evaluator:
    """The evaluation protocol of one run, built once (the encoder, the tokenised splits, the
    label/attention expert: `make_context`, so experts are ensured once): condensation's
    `eval_it` points and its worth table call it repeatedly. Collective, like the functions it
    wraps; it leaves the global RNG untouched (see `train_classifier`)."""

    def __init__(self, cfg: Config, env: DistEnv, data):
        self.cfg, self.env, self.data = cfg, env, data
        self.ctx = make_context(cfg, env, data)

    def synthetic(self, syn: dict, source: str = "", num_eval: Optional[int] = None) -> dict:
        return evaluate_synthetic(self.cfg, self.env, self.data, syn, source, ctx=self.ctx,
                                  num_eval=num_eval)

    def baseline(self, method: str, features: Optional[torch.Tensor] = None,
                 num_eval: Optional[int] = None) -> dict:
        return evaluate_baseline(self.ctx, method, features, num_eval)
