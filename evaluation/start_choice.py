"""Which real subset to start condensation from, chosen on the validation slice (init
`best_real`): each candidate selection trained by the evaluation protocol, scored on held-out
training samples, never on test. Which of random and herding is the better start differs by
dataset (herding is ahead at TREC and BBC ipc 10, behind at SST-2 and SMS spam), so a fixed start
does not transfer; this makes the choice per run instead. Measured, it did not beat the fixed
starts (docs/results.md, "A start chosen on validation"), so no shipped config uses it."""
from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from evaluation.protocol import Evaluator
from evaluation.selectors import load_feature_expert, needs_features
from utils.coreset import expert_features

logger = logging.getLogger(__name__)


def train_features(evaluator: Evaluator) -> torch.Tensor:
    """The pooled features of every training sample under expert `evaluate.feature_expert`
    (what the herding / k-means selections read)  # [N, H]"""
    ctx, data = evaluator.ctx, evaluator.data
    expert = load_feature_expert(ctx.cfg, ctx.nclass, ctx.env.device, data.tokenizer.vocab_size)
    return expert_features(expert, data.train.attention_mask, ctx.cfg.evaluate.eval_batch_size,
                           ctx.env.device, input_ids=data.train.input_ids)


def choose_start(evaluator: Evaluator, candidates: Sequence[str], runs: int
                 ) -> Tuple[str, List[Dict]]:
    """Collective: each candidate's real subset (the baseline of that name) through the protocol,
    `runs` classifiers each; returns the name with the best mean validation score (ties: the
    first listed) and one record per candidate (validation mean and std, test left out)."""
    if evaluator.ctx.val is None:
        raise ValueError("choose_start needs the validation slice (evaluate.select_by 'val')")
    features: Optional[torch.Tensor] = None
    records = []
    for name in candidates:
        if needs_features(name) and features is None:
            features = train_features(evaluator)
        entry = evaluator.baseline(name, features, num_eval=runs)
        score = entry["metrics"].get("val_micro_f1", entry["metrics"]["val_accuracy"])
        records.append({"candidate": name, "val_mean": score["mean"], "val_std": score["std"],
                        "runs": entry["num_eval"], "n_train": entry["n_train"],
                        "steps": entry["steps"]})
        logger.info("start candidate %s: validation %.4f ± %.4f (%d classifiers)", name,
                    score["mean"], score["std"], entry["num_eval"])
    best = max(range(len(records)), key=lambda i: (records[i]["val_mean"], -i))
    return records[best]["candidate"], records
