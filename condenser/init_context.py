"""What every initialisation of the synthetic set reads: the real training split and the
embedding table, and the helpers they share (which real samples, which labels)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Tuple

import torch

from utils.data import TokenizedSplit
from utils.seeding import derive_seed, seeded_sample
from utils.synset import ClassData, SyntheticDataError

logger = logging.getLogger(__name__)


@dataclass
class InitContext:
    """What initialisation needs: the real training split and the embedding table."""
    train: TokenizedSplit
    word_embeddings: torch.Tensor   # [V, H]
    cls_id: int
    sep_id: int
    pad_id: int
    nclass: int
    multilabel: bool
    seed: int
    options: Any = None       # the init's options dataclass (condense.init_options, validated)
    # training indices [n] -> an expert's pooled last-layer features [n, H] (init 'herding')
    features: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
    # (input_ids [n, L], attention_mask [n, L]) of any text -> the same features [n, H]
    text_features: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None
    # that expert's classification head: features [n, H] -> logits [n, C] (option correct_only)
    head: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
    tokenizer: Any = None              # the condensation model's (init 'generated')
    device: torch.device = torch.device("cpu")   # where a generator runs (init 'generated')
    class_names: Optional[List[str]] = None

    def class_seed(self, c: int) -> int:
        """The seed of class c's initialisation (the same on every rank)."""
        return derive_seed(self.seed, "init", c)


def real_ids(ctx: InitContext, c: int, n: int, seed: int,
             pool: Optional[torch.Tensor] = None) -> torch.Tensor:
    """n real sample indices of class c, or of `pool` (with replacement only when it is too small)."""
    pool = ctx.train.class_indices[c] if pool is None else pool
    if len(pool) == 0:
        raise SyntheticDataError(f"class {c} has no training samples to initialise from")
    if len(pool) < n:
        logger.warning("class %d has %d training samples for %d synthetic sequences: %d of them "
                       "start as copies of the same real samples and differ only as optimisation "
                       "moves them (init 'noise' or a smaller ipc avoids it)", c, len(pool), n,
                       n - len(pool))
    return seeded_sample(pool, n, seed, replace_if_short=True)


def class_margin(logits: torch.Tensor, c: int, multilabel: bool) -> torch.Tensor:
    """How far the head is from getting class c right on each sample  # [n, C] -> [n]
    (strictly > 0 when it is right: single-label, c's logit minus the best other logit, so a tie
    counts as wrong; multi-label, c's own logit, the plain threshold at sigmoid 0.5 on purpose).
    NaN logits give -inf: never right, last to fill up."""
    if multilabel:
        return torch.nan_to_num(logits[:, c], nan=float("-inf"))
    others = logits.clone()
    others[:, c] = float("-inf")
    return torch.nan_to_num(logits[:, c] - others.max(1).values, nan=float("-inf"))


def correct_pool(ctx: InitContext, c: int, need: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Class c's training samples that expert `evaluate.feature_expert` classifies correctly
    (DATM's start), with their features  # [n] indices, [n, H]. A class with fewer than `need`
    correct samples keeps all of them and fills up with the wrong ones the head comes closest to
    getting right (highest margin), so no correct sample is dropped and `need` is met."""
    pool = ctx.train.class_indices[c]
    if ctx.features is None or ctx.head is None:
        raise ValueError("correct_only needs InitContext.features and .head (the feature expert)")
    feats = ctx.features(pool)                                            # [n, H]
    margin = class_margin(ctx.head(feats), c, ctx.multilabel)             # [n]
    right = margin > 0                                                    # [n]
    n_right = int(right.sum())
    if n_right >= need:
        return pool[right], feats[right]
    keep = torch.argsort(margin, descending=True, stable=True)[:need]     # the correct ones first
    logger.warning("class %d: %d of %d training samples are classified correctly, fewer than the "
                   "%d needed; correct_only adds the %d closest to correct", c, n_right, len(pool),
                   need, min(need, len(pool)) - n_right)
    return pool[keep], feats[keep]


def labels_for(ctx: InitContext, c: int, idx: Optional[torch.Tensor], n: int) -> torch.Tensor:
    """Labels of n sequences of class c: the class index, or (multi-label) the label sets of the
    real samples `idx` they start from (one-hot of c without them)."""
    if not ctx.multilabel:
        return torch.full((n,), c, dtype=torch.long)
    if idx is not None:
        return ctx.train.labels[idx].clone().float()       # the real samples' label sets (contain c)
    out = torch.zeros(n, ctx.nclass)
    out[:, c] = 1.0
    return out


def from_indices(ctx: InitContext, c: int, idx: torch.Tensor) -> ClassData:
    """Sequences that start as the real samples `idx` of class c (their word embeddings)."""
    ids = ctx.train.input_ids[idx]                          # [n, L]
    return ClassData(ctx.word_embeddings[ids].clone(), ctx.train.attention_mask[idx].clone(),
                     labels_for(ctx, c, idx, len(idx)))
