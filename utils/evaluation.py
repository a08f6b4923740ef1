"""Evaluation of condensed sets and of real-data baselines under one training protocol.

The protocol (section `evaluate` of the config), the same for every method:

- `num_eval` fresh classifiers per method, run i seeded with `derive_seed(run.seed, "evaluate", i)`
  (the same seeds for every method, so methods are compared on paired runs); the runs are spread
  over ranks with `shard_range` and gathered with a collective, so the numbers do not depend on
  the world size;
- each classifier is the PRE-TRAINED encoder (`network.model_path`, or `evaluate.eval_model_path`
  for a cross-architecture check) with a new head, never an expert;
- `steps` AdamW steps (`lr`, `weight_decay`, constant rate, gradient norm clipped to 1) on batches
  of `batch_size` drawn by cycling over seeded shuffles of the (tiny) training set; the 'full'
  baseline trains `full_steps` steps instead, since it has far more data;
- test accuracy (and macro-F1; micro-F1 too for multi-label) every `eval_every` steps and at the
  last one: the accuracy-vs-step curve;
- model selection `select_by`: 'last' reports the last step; 'val' the evaluated step with the best
  accuracy on `val_fraction` of the TRAINING split (stratified, seeded), which is then left out of
  the baselines' selection pools and of 'full'. The test split never selects anything.

Methods: 'synthetic' (a saved set: inputs_embeds + attention masks; 'multi' sets are decoded into
`factor` examples per sequence; float label vectors in a single-label task are soft labels, trained
with soft cross-entropy), and the baselines 'random', 'herding', 'kcenter' (`utils.selection`, ipc
= `condense.ipc` real training samples per class; herding and k-center on the [CLS] features of the
last layer of expert `feature_expert`'s final weights) and 'full' (all training data).

Each method gives one results entry (see `summarize`): per-run scores and curves, mean and std
(numpy, ddof=0) over runs, and DD-Ranking-style `gap_to_full` = full mean - method mean and
`gain_over_random` = method mean - random mean (test accuracy), taken from the same evaluation or,
failing that, from the latest matching row of the shared results table.
"""
from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from condenser.synthetic import ClassData, SyntheticDataError, assemble, decode, split_by_class
from utils.config import PROJECT_ROOT
from utils.config_schema import Config, NetworkConfig
from utils.data import TokenizedSplit, class_indices, first_label, tokenize_dataset
from utils.distributed import (DistEnv, all_gather_objects, broadcast_object, derive_seed,
                               rng_state, seed_everything, set_rng_state, shard_range)
from utils.experts import dataset_tag, load_expert_weights, missing_experts, train_experts
from utils.io import atomic_write_json, atomic_write_text, read_json, safe_torch_load
from utils.logging_utils import progress
from utils.model import (ModelError, TextClassifier, load_bert_config, build_classifier,
                         load_tokenizer, model_tag, resolve_model_path)
from utils.selection import select_baseline
from utils.training import classification_loss, evaluate_classifier

logger = logging.getLogger(__name__)

BASELINES = ("random", "herding", "kcenter", "full")
SYNTHETIC = "synthetic"


class EvaluationError(ValueError):
    """The evaluation cannot run as asked; the message says what to change."""


# ------------------------------------------------------------------------------ method names

def parse_baselines(values: Optional[Sequence[str]]) -> List[str]:
    """`--baseline random,herding --baseline full` -> ['random', 'herding', 'full'] (deduplicated,
    in the given order); an unknown name is an error listing the allowed ones."""
    out: List[str] = []
    for value in values or []:
        for name in (v.strip().lower() for v in str(value).split(",")):
            if not name:
                continue
            if name not in BASELINES:
                raise EvaluationError(f"unknown baseline {name!r}; allowed: {', '.join(BASELINES)} "
                                      f"(several may be given comma-separated, e.g. "
                                      f"--baseline random,herding,kcenter,full)")
            if name not in out:
                out.append(name)
    return out


# ------------------------------------------------------------------------- encoder and splits

def _resolve_model_location(path: str) -> str:
    """A relative eval_model_path that exists (from the current directory, else the project root)
    becomes an absolute path; anything else (an alias, 'random', a hub name) stays as it is."""
    if path == "random" or os.path.isabs(path):
        return path
    for base in (Path.cwd(), PROJECT_ROOT):
        if (base / path).exists():
            return str(base / path)
    return path


def eval_network(cfg: Config) -> NetworkConfig:
    """The encoder the evaluation classifiers start from (network, or evaluate.eval_model_path)."""
    path = cfg.evaluate.eval_model_path
    if not path:
        return cfg.network
    return dataclasses.replace(cfg.network, model_path=_resolve_model_location(path))


def encoder_hidden_size(net: NetworkConfig) -> int:
    if net.model_path == "random":
        return net.random_hidden
    return int(load_bert_config(resolve_model_path(net.model_path)).hidden_size)


def _eval_tokenizer(net: NetworkConfig, fallback):
    """The eval encoder's own tokenizer; the run's tokenizer when its folder has none."""
    if net.model_path == "random":
        return load_tokenizer(net)
    try:
        return load_tokenizer(dataclasses.replace(net, tokenizer_path=None))
    except ModelError:
        if net.tokenizer_path:
            return load_tokenizer(net)
        logger.warning("%s has no tokenizer; using the run's tokenizer", net.model_path)
        return fallback


def subset(split: TokenizedSplit, idx: Sequence[int], nclass: int) -> TokenizedSplit:
    idx = torch.as_tensor(list(idx), dtype=torch.long)
    labels = split.labels[idx]
    return TokenizedSplit(split.input_ids[idx], split.attention_mask[idx], labels,
                          class_indices(labels, nclass))


def validation_indices(labels: torch.Tensor, fraction: float, seed: int) -> List[int]:
    """Stratified (first label for multi-label), seeded choice of `fraction` of each class of the
    TRAINING split; a class with a single sample keeps it for training."""
    by_class: Dict[int, List[int]] = {}
    for i, y in enumerate(labels.tolist()):
        stratum = first_label([c for c, v in enumerate(y) if v > 0]) if isinstance(y, list) else y
        by_class.setdefault(stratum, []).append(i)
    rng = random.Random(seed)
    out: List[int] = []
    for c in sorted(by_class):
        idx = by_class[c][:]
        rng.shuffle(idx)
        k = max(1, round(fraction * len(idx))) if len(idx) > 1 else 0
        out += idx[:k]
    return sorted(out)


@dataclass
class EvalContext:
    """What every evaluation run needs: config, ranks, encoder, and the tokenised splits (with the
    eval encoder's tokenizer; sample order as in `Data`, so training indices are shared)."""
    cfg: Config
    env: DistEnv
    net: NetworkConfig
    nclass: int
    multilabel: bool
    class_names: List[str]
    train: TokenizedSplit
    test: TokenizedSplit
    val: Optional[TokenizedSplit]
    val_idx: List[int]
    vocab_size: int
    hidden_size: int

    @property
    def model(self) -> str:
        return model_tag(self.net)

    def selectable(self) -> List[int]:
        """Training indices the methods may train on (the training split minus validation)."""
        held = set(self.val_idx)
        return [i for i in range(len(self.train)) if i not in held]


def make_context(cfg: Config, env: DistEnv, data) -> EvalContext:
    net = eval_network(cfg)
    train, test, tokenizer = data.train, data.test, data.tokenizer
    if net is not cfg.network:
        tok = _eval_tokenizer(net, data.tokenizer)
        if tok is not data.tokenizer and tok.get_vocab() != data.tokenizer.get_vocab():
            logger.info("re-tokenising the data with the tokenizer of %s", net.model_path)
            train, test = tokenize_dataset(data.dataset, tok, cfg.dataset.max_length,
                                           cfg.dataset.cache_dir)
            tokenizer = tok
    nclass = data.dataset.nclass
    val_idx: List[int] = []
    val = None
    if cfg.evaluate.select_by == "val":
        val_idx = validation_indices(data.train.labels, cfg.evaluate.val_fraction,
                                     derive_seed(cfg.run.seed, "validation"))
        val = subset(train, val_idx, nclass)
    return EvalContext(cfg, env, net, nclass, data.dataset.multilabel,
                       list(data.dataset.class_names), train, test, val, val_idx,
                       tokenizer.vocab_size, encoder_hidden_size(net))


# --------------------------------------------------------------------------- training sets

@dataclass
class TrainSet:
    """The examples one method trains on: real token ids or synthetic input embeddings."""
    method: str
    attention_mask: torch.Tensor                 # [N, L]
    labels: torch.Tensor                         # [N] long, or [N, C] float
    class_of: torch.Tensor                       # [N] the class each example stands for
    input_ids: Optional[torch.Tensor] = None     # [N, L] real data
    inputs_embeds: Optional[torch.Tensor] = None  # [N, L, H] synthetic data

    def __len__(self) -> int:
        return self.attention_mask.shape[0]

    def inputs(self, idx: torch.Tensor, device: torch.device) -> dict:
        kw = {"attention_mask": self.attention_mask[idx].to(device)}
        if self.inputs_embeds is not None:
            kw["inputs_embeds"] = self.inputs_embeds[idx].to(device)
        else:
            kw["input_ids"] = self.input_ids[idx].to(device)
        return kw


def real_trainset(method: str, train: TokenizedSplit, idx: torch.Tensor,
                  class_of: Optional[torch.Tensor] = None) -> TrainSet:
    idx = torch.as_tensor(idx, dtype=torch.long)
    labels = train.labels[idx]
    if class_of is None:
        class_of = (labels.argmax(1) if labels.dim() == 2 else labels).clone()
    return TrainSet(method, train.attention_mask[idx], labels, class_of,
                    input_ids=train.input_ids[idx])


def load_synthetic_set(path: Optional[str]) -> dict:
    if not path:
        raise EvaluationError("no synthetic set given (--load_path FILE)")
    if not Path(path).is_file():
        raise EvaluationError(f"synthetic set not found: {path} (--load_path must point to a "
                              f"distilled_data/syn_data_<iter>.pth written by condense_script_text.py)")
    return safe_torch_load(path)


def check_synthetic(syn: dict, class_names: Sequence[str], hidden_size: int, model: str,
                    source: str = "synthetic set") -> None:
    """The set fits the dataset (class names) and the evaluation encoder (hidden size)."""
    required = ("inputs_embeds", "attention_mask", "labels", "class_of", "meta")
    if not isinstance(syn, dict) or any(k not in syn for k in required):
        raise SyntheticDataError(f"{source}: not a textcondense synthetic set (needs keys {required})")
    names = list(syn["meta"].get("class_names", []))
    if names != list(class_names):
        raise SyntheticDataError(f"{source}: its classes {names} differ from the dataset's "
                                 f"{list(class_names)}; evaluate it with the config it was "
                                 f"condensed with")
    hidden = int(syn["inputs_embeds"].shape[-1])
    if hidden != hidden_size:
        raise EvaluationError(f"{source} has hidden size {hidden} but the evaluation encoder "
                              f"{model} has hidden size {hidden_size}; evaluate it with an encoder "
                              f"of hidden size {hidden} (evaluate.eval_model_path / --eval_model_path)")
    if syn["class_of"].numel() == 0:
        raise SyntheticDataError(f"{source}: the set is empty")
    if int(syn["class_of"].max()) >= len(class_names):
        raise SyntheticDataError(f"{source}: class indices beyond the dataset's {len(class_names)}")


def synthetic_trainset(syn: dict) -> TrainSet:
    """The set's training examples, class by class; 'multi' sequences are cut into `factor`
    examples each (`condenser.synthetic.decode`)."""
    meta = syn.get("meta", {})
    factor, decode_type = int(meta.get("factor", 1)), str(meta.get("decode_type", "single"))
    embeds, masks, labels, class_of = [], [], [], []
    for c, d in split_by_class(syn).items():
        e, m, y = decode(ClassData(d["embeds"], d["mask"], d["labels"]), factor, decode_type)
        embeds.append(e.detach().float())
        masks.append(m.long())
        labels.append(y)
        class_of.append(torch.full((len(e),), c, dtype=torch.long))
    return TrainSet(SYNTHETIC, torch.cat(masks), torch.cat(labels), torch.cat(class_of),
                    inputs_embeds=torch.cat(embeds))


# --------------------------------------------------------------------------- the protocol

def run_seed(seed: int, i: int) -> int:
    return derive_seed(seed, "evaluate", i)


def eval_loss(logits: torch.Tensor, labels: torch.Tensor, multilabel: bool) -> torch.Tensor:
    """CE for class indices; soft CE for label vectors in a single-label task; BCE (multi-label)."""
    if labels.dim() == 2 and not multilabel:
        target = labels.float().clamp_min(0)
        target = target / target.sum(1, keepdim=True).clamp_min(1e-12)
        return -(target * F.log_softmax(logits, dim=1)).sum(1).mean()
    return classification_loss(logits, labels)


def batch_stream(n: int, batch_size: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless batches cycling over seeded shuffles of range(n)."""
    buf: List[int] = []
    while True:
        while len(buf) < batch_size:
            buf.extend(torch.randperm(n, generator=gen).tolist())
        yield torch.tensor(buf[:batch_size], dtype=torch.long)
        buf = buf[batch_size:]


def eval_steps(steps: int, every: int) -> List[int]:
    return sorted(set(range(every, steps + 1, every)) | {steps})


def train_classifier(ctx: EvalContext, ts: TrainSet, steps: int, seed: int, desc: str = "eval"
                     ) -> dict:
    """One evaluation run: a fresh classifier trained on `ts`; returns its scores and curve."""
    ev, dev = ctx.cfg.evaluate, ctx.env.device
    if len(ts) == 0:
        raise EvaluationError(f"{ts.method}: no training examples")
    seed_everything(seed)
    model: TextClassifier = build_classifier(ctx.net, ctx.nclass, pretrained=True,
                                             vocab_size=ctx.vocab_size).to(dev)
    optimizer = torch.optim.AdamW(model.parameters(), lr=ev.lr, weight_decay=ev.weight_decay)
    batches = batch_stream(len(ts), min(ev.batch_size, len(ts)),
                           torch.Generator().manual_seed(derive_seed(seed, "batches")))
    checkpoints = set(eval_steps(steps, ev.eval_every))
    points: List[dict] = []
    train_s = eval_s = 0.0
    loss_value = float("nan")
    bar = progress(range(1, steps + 1), enabled=ctx.env.is_main, desc=desc)
    for step in bar:
        start = time.perf_counter()
        model.train()
        idx = next(batches)
        logits = model(**ts.inputs(idx, dev)).logits
        loss = eval_loss(logits, ts.labels[idx].to(dev), ctx.multilabel)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        loss_value = loss.item()
        train_s += time.perf_counter() - start
        if step in checkpoints:
            start = time.perf_counter()
            point = {"step": step, **evaluate_classifier(model, ctx.test, ev.eval_batch_size, dev)}
            if ctx.val is not None:
                point["val_accuracy"] = evaluate_classifier(model, ctx.val, ev.eval_batch_size,
                                                            dev)["accuracy"]
            points.append(point)
            eval_s += time.perf_counter() - start
            bar.set_postfix(loss=f"{loss_value:.4f}", acc=f"{point['accuracy']:.4f}")
    if ev.select_by == "val":
        chosen = max(points, key=lambda p: (p["val_accuracy"], -p["step"]))  # ties: earliest
    else:
        chosen = points[-1]
    record = {"seed": seed, **{k: v for k, v in chosen.items() if k not in ("step",)},
              "selected_step": chosen["step"], "final_loss": loss_value,
              "train_seconds": round(train_s, 3), "eval_seconds": round(eval_s, 3),
              "curve": [[p["step"], p["accuracy"]] for p in points]}
    if ctx.val is not None:
        record["val_curve"] = [[p["step"], p["val_accuracy"]] for p in points]
    del model, optimizer
    return record


def evaluate_runs(ctx: EvalContext, ts: TrainSet, steps: int) -> List[dict]:
    """Collective: this rank's share of the `num_eval` runs, gathered; every rank gets all runs,
    in run order."""
    n = ctx.cfg.evaluate.num_eval
    local = []
    for i in shard_range(n, ctx.env.world_size, ctx.env.rank):
        rec = train_classifier(ctx, ts, steps, run_seed(ctx.cfg.run.seed, i),
                               desc=f"{ts.method} run {i + 1}/{n}")
        local.append({"run": i, "rank": ctx.env.rank, **rec})
        logger.info("%s run %d/%d: test accuracy %.4f (step %d, %.1fs)", ts.method, i + 1, n,
                    rec["accuracy"], rec["selected_step"], rec["train_seconds"])
    return sorted((r for part in all_gather_objects(local) for r in part), key=lambda r: r["run"])


METRICS = ("accuracy", "macro_f1", "micro_f1")


def summarize(ctx: EvalContext, method: str, runs: List[dict], ts: TrainSet, steps: int,
              ipc: int, **extra) -> dict:
    """One results entry: per-run records, mean/std over runs (ddof=0), timing, and gap fields
    (filled in by `add_gaps`)."""
    metrics = {}
    for m in METRICS:
        if runs and m in runs[0]:
            vals = np.array([r[m] for r in runs], dtype=np.float64)
            metrics[m] = {"mean": float(vals.mean()), "std": float(vals.std())}
    return {"method": method, "dataset": dataset_tag(ctx.cfg), "ipc": ipc, "model": ctx.model,
            "n_train": len(ts), "steps": steps, "num_eval": len(runs),
            "select_by": ctx.cfg.evaluate.select_by, "world_size": ctx.env.world_size,
            "mean": metrics["accuracy"]["mean"], "std": metrics["accuracy"]["std"],
            "metrics": metrics,
            "train_seconds": float(np.mean([r["train_seconds"] for r in runs])),
            "gap_to_full": None, "gain_over_random": None, **extra, "runs": runs}


def log_entry(e: dict) -> None:
    f1 = e["metrics"].get("macro_f1", {"mean": float("nan"), "std": float("nan")})
    logger.info("%s: test accuracy %.4f ± %.4f, macro-F1 %.4f ± %.4f over %d runs (%d examples, "
                "%d steps, %.1fs/run)", e["method"], e["mean"], e["std"], f1["mean"], f1["std"],
                e["num_eval"], e["n_train"], e["steps"], e["train_seconds"])


# ------------------------------------------------------------------------ experts, features

def ensure_experts(cfg: Config, env: DistEnv, data) -> None:
    """Collective: train the experts if any is missing (as condense_script_text does)."""
    missing = missing_experts(cfg)
    if missing:
        logger.warning("experts %s are missing or unfinished: training them first (stage 1)", missing)
        train_experts(cfg, env, data.train, data.test, data.dataset.nclass)


def load_feature_expert(cfg: Config, nclass: int, device: torch.device, vocab_size: int
                        ) -> TextClassifier:
    """Expert `evaluate.feature_expert` with its final weights, frozen, in eval mode."""
    k = cfg.evaluate.feature_expert
    if k >= cfg.pretrain.num_premodel:
        raise EvaluationError(f"evaluate.feature_expert = {k} but there are only "
                              f"{cfg.pretrain.num_premodel} experts (pretrain.num_premodel)")
    model = build_classifier(cfg.network, nclass, pretrained=False, vocab_size=vocab_size)
    model.load_state_dict(load_expert_weights(cfg, k, cfg.pretrain.epochs))
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@torch.no_grad()
def expert_features(model: TextClassifier, attention_mask: torch.Tensor, batch_size: int,
                    device: torch.device, input_ids: Optional[torch.Tensor] = None,
                    inputs_embeds: Optional[torch.Tensor] = None) -> torch.Tensor:
    """[CLS] features of the last layer  # [N, H] (CPU, float32)"""
    model.eval()
    out = []
    for s in range(0, attention_mask.shape[0], batch_size):
        sl = slice(s, s + batch_size)
        kw = ({"input_ids": input_ids[sl].to(device)} if input_ids is not None
              else {"inputs_embeds": inputs_embeds[sl].float().to(device)})
        feats = model(attention_mask=attention_mask[sl].to(device), layer_index=[-1], **kw).features
        out.append(feats[0].float().cpu())
    return torch.cat(out) if out else torch.zeros(0, model.hidden_size)


def select_for(ctx: EvalContext, method: str, features: Optional[torch.Tensor]
               ) -> Dict[int, torch.Tensor]:
    """Collective: the baseline's selection, computed by every rank and broadcast from rank 0 so
    that all ranks train on exactly the same samples."""
    sel = select_baseline(method, ctx.train.labels, ctx.nclass, ctx.cfg.condense.ipc,
                          ctx.cfg.run.seed, features, exclude=ctx.val_idx)
    return broadcast_object(sel)


# ----------------------------------------------------------------------- DD-Ranking gaps

def add_gaps(entries: List[dict], previous: Sequence[dict] = ()) -> None:
    """gap_to_full = full mean - method mean, gain_over_random = method mean - random mean
    (test accuracy). References come from `entries`, else from `previous` table rows (dicts with
    method/dataset/ipc/model/select_by/accuracy); full rows match any ipc."""
    def ref(method: str) -> Optional[float]:
        for e in entries:
            if e["method"] == method:
                return e["mean"]
        if not entries:
            return None
        e0 = entries[0]
        for row in reversed(list(previous)):
            if (row.get("method") == method and row.get("dataset") == e0["dataset"]
                    and row.get("model") == e0["model"] and row.get("select_by") == e0["select_by"]
                    and (method == "full" or str(row.get("ipc")) == str(e0["ipc"]))
                    and row.get("accuracy") is not None):
                return row["accuracy"]
        return None

    full, rnd = ref("full"), ref("random")
    for e in entries:
        e["gap_to_full"] = None if full is None else full - e["mean"]
        e["gain_over_random"] = None if rnd is None else e["mean"] - rnd


# ---------------------------------------------------------------------- the results table

TABLE_COLUMNS = ("date", "dataset", "ipc", "method", "model", "select_by", "steps", "runs",
                 "accuracy (%)", "macro-F1 (%)", "gap to full (pp)", "gain over random (pp)",
                 "s/run", "source")
TABLE_TITLE = ("# Evaluation results\n\nOne row per evaluated method (condense/evaluate_script_text.py); "
               "accuracy and macro-F1 on the test split, mean ± std over runs; gaps in percentage "
               "points (DD-Ranking style: gap to full = full - method, gain over random = method - "
               "random).\n\n")


def _pm(stat: Optional[dict]) -> str:
    return "" if not stat else f"{100 * stat['mean']:.2f} ± {100 * stat['std']:.2f}"


def _pp(v: Optional[float]) -> str:
    return "" if v is None else f"{100 * v:+.2f}"


def table_row(e: dict, date: str) -> str:
    cells = [date, e["dataset"], str(e["ipc"]), e["method"], e["model"], e["select_by"],
             str(e["steps"]), str(e["num_eval"]), _pm(e["metrics"].get("accuracy")),
             _pm(e["metrics"].get("macro_f1")), _pp(e["gap_to_full"]), _pp(e["gain_over_random"]),
             f"{e['train_seconds']:.1f}", str(e.get("source", ""))]
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def table_header() -> str:
    return ("| " + " | ".join(TABLE_COLUMNS) + " |\n"
            + "|" + "|".join("---" for _ in TABLE_COLUMNS) + "|\n")


def read_results_table(path: str | os.PathLike) -> List[dict]:
    """Rows of a results table as dicts (accuracy as a fraction); [] when there is none."""
    path = Path(path)
    if not path.is_file():
        return []
    header, rows = None, []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if header is None:
            header = cells
            continue
        if set(line.replace("|", "").strip()) <= {"-", " ", ":"}:
            continue
        row = dict(zip(header, cells))
        acc = row.get("accuracy (%)", "")
        try:
            row["accuracy"] = float(acc.split("±")[0]) / 100 if acc else None
        except ValueError:
            row["accuracy"] = None
        rows.append(row)
    return rows


def append_results_table(path: str | os.PathLike, entries: Sequence[dict]) -> str:
    """Append one row per entry (creating the file with a header), atomically; returns the new
    rows with the header, for the log."""
    path = Path(path)
    date = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    rows = "".join(table_row(e, date) + "\n" for e in entries)
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    if not old.strip():
        old = TABLE_TITLE + table_header()
    elif not old.endswith("\n"):
        old += "\n"
    atomic_write_text(path, old + rows)
    return table_header() + rows


# ---------------------------------------------------------------------- synthetic, end to end

def evaluate_synthetic(cfg: Config, env: DistEnv, data, syn: dict, source: str = "",
                       ctx: Optional[EvalContext] = None) -> dict:
    """Collective: the evaluation protocol on a synthetic set (the saved-file dict); returns its
    results entry on every rank."""
    ctx = ctx or make_context(cfg, env, data)
    check_synthetic(syn, ctx.class_names, ctx.hidden_size, ctx.model, source or "synthetic set")
    ts = synthetic_trainset(syn)
    meta = syn["meta"]
    if int(meta.get("ipc", cfg.condense.ipc)) != cfg.condense.ipc:
        logger.warning("the synthetic set has ipc %s but condense.ipc is %d: baselines of this "
                       "call use %d (pass --ipc %s to compare at the same ipc)", meta.get("ipc"),
                       cfg.condense.ipc, cfg.condense.ipc, meta.get("ipc"))
    runs = evaluate_runs(ctx, ts, cfg.evaluate.steps)
    return summarize(ctx, SYNTHETIC, runs, ts, cfg.evaluate.steps,
                     int(meta.get("ipc", cfg.condense.ipc)), source=source,
                     iteration=meta.get("iteration"), condense_method=meta.get("method"),
                     factor=int(meta.get("factor", 1)),
                     decode_type=str(meta.get("decode_type", "single")))


def condense_eval_hook(cfg: Config, env: DistEnv, data, condenser, out_dir: Path) -> dict:
    """Collective, for `condense.eval_it`: gather the current synthetic set to every rank,
    evaluate it, log the result and append it to <out_dir>/eval_curve.json (rank 0). The RNG
    state is restored afterwards, so condensation continues exactly as without the evaluation."""
    per_class: dict = {}
    for part in all_gather_objects(condenser.shard.export()):
        per_class.update(part)
    meta = {"dataset": cfg.dataset.name, "class_names": list(data.dataset.class_names),
            "nclass": data.dataset.nclass, "ipc": cfg.condense.ipc, "iteration": condenser.iteration,
            "factor": cfg.condense.factor, "decode_type": cfg.condense.decode_type,
            "multilabel": data.dataset.multilabel, "method": cfg.condense.method,
            "hidden_size": condenser.hidden}
    syn = assemble(per_class, condenser.classes, meta)
    saved = rng_state()
    start = time.time()
    try:
        entry = evaluate_synthetic(cfg, env, data, syn, source=f"iteration {condenser.iteration}")
    finally:
        set_rng_state(saved)
    logger.info("eval iter %d: accuracy %.4f ± %.4f (%d runs, %.1fs)", condenser.iteration,
                entry["mean"], entry["std"], entry["num_eval"], time.time() - start)
    if env.is_main:
        path = Path(out_dir) / "eval_curve.json"
        curve = read_json(path) if path.is_file() else []
        curve = [c for c in curve if c.get("iteration") != condenser.iteration]
        curve.append({"iteration": condenser.iteration, "accuracy_mean": entry["mean"],
                      "accuracy_std": entry["std"], "metrics": entry["metrics"],
                      "num_eval": entry["num_eval"], "steps": entry["steps"],
                      "model": entry["model"], "seconds": round(time.time() - start, 2)})
        atomic_write_json(path, sorted(curve, key=lambda c: c["iteration"]))
    return entry
