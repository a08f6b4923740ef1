"""Coreset baselines: `ipc` real training samples per class, chosen at random, by herding or by
greedy k-center on expert features.

Every selector works on one class's pool of TRAINING indices and returns indices into the training
split; `select_baseline` asserts this (the test split is never passed in). All randomness comes
from seeds derived from (seed, method, class), so a selection is identical on every rank and for
every world size.

- random   `ipc` samples drawn without replacement (seeded).
- herding  Welling's herding / iCaRL exemplars: repeatedly pick the sample that brings the mean of
           the picked features closest to the class mean (the first pick is the sample nearest to
           the class mean).
- kcenter  greedy k-center (Sener & Savarese): a seeded random first centre, then repeatedly the
           sample farthest from its nearest chosen centre.
- kmeans   k-means (sklearn, seeded) with `ipc` centroids, then the sample nearest each centroid,
           all distinct (DiLM's "K-centers"); the condenser's `init: kmeans` starts from the same
           picks.

Each selector is registered in `SELECTORS` (`fn(pool, features, ipc, seed) -> indices`) with its
needs as traits (`needs_features`); add one with `SELECTORS.register(name, fn, needs_features=...)`.
"""
from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence

import torch

from utils.config_schema import Config
from utils.coreset import herding_select, kcenter_select
from utils.distributed import broadcast_object
from utils.errors import UserError
from utils.experts import load_expert_weights
from utils.kmeans_select import kmeans_select
from utils.model import TextClassifier, build_classifier, freeze
from utils.registry import Registry
from utils.seeding import derive_seed, seeded_sample

logger = logging.getLogger(__name__)

SELECTORS: Registry = Registry("selector", publish=True)


def class_pools(labels: torch.Tensor, nclass: int, exclude: Optional[Sequence[int]] = None
                ) -> List[torch.Tensor]:
    """Training indices of each class (a multi-label sample belongs to all its classes), without
    the `exclude`d ones (e.g. the validation part).  labels  # [N] long or [N, C]"""
    keep = torch.ones(labels.shape[0], dtype=torch.bool)
    if exclude is not None and len(exclude):
        keep[torch.as_tensor(list(exclude), dtype=torch.long)] = False
    pools = []
    for c in range(nclass):
        member = labels[:, c] > 0 if labels.dim() == 2 else labels == c
        pools.append(torch.nonzero(member & keep, as_tuple=False).flatten())
    return pools


def random_select(pool: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """k indices of `pool` drawn without replacement."""
    return seeded_sample(pool, k, seed)


# fn(pool [n] training indices, features [n, H] of the pool or None, ipc, seed) -> indices of pool
SELECTORS.register("random", lambda pool, feats, ipc, seed: random_select(pool, ipc, seed))
SELECTORS.register("herding", lambda pool, feats, ipc, seed: pool[herding_select(feats, ipc)],
                   needs_features=True)
SELECTORS.register("kcenter", lambda pool, feats, ipc, seed: pool[kcenter_select(feats, ipc, seed)],
                   needs_features=True)
SELECTORS.register("kmeans", lambda pool, feats, ipc, seed: pool[kmeans_select(feats, ipc, seed)],
                   needs_features=True)


def needs_features(method: str) -> bool:
    return bool(SELECTORS.entry(method, where="selection").trait("needs_features"))


def select_baseline(method: str, labels: torch.Tensor, nclass: int, ipc: int, seed: int,
                    features: Optional[torch.Tensor] = None,
                    exclude: Optional[Sequence[int]] = None) -> Dict[int, torch.Tensor]:
    """Per class, `ipc` indices into the training split whose labels are `labels` [N_train].

    `features` [N_train, H] are the expert features of the training split (the selectors that
    need features: herding, kcenter, kmeans).
    A class with fewer than `ipc` samples contributes all of them (with a warning).
    """
    select = SELECTORS.get(method, where="selection")
    n_train = labels.shape[0]
    if needs_features(method):
        if features is None:
            raise UserError(f"selection {method!r} needs the expert features of the training split")
        assert features.shape[0] == n_train, (
            f"features cover {features.shape[0]} samples, the training split has {n_train}: "
            f"selectors only see the training split")
    out: Dict[int, torch.Tensor] = {}
    for c, pool in enumerate(class_pools(labels, nclass, exclude)):
        if len(pool) < ipc:
            logger.warning("class %d has only %d selectable training samples (< ipc %d): all are "
                           "used", c, len(pool), ipc)
        s = derive_seed(seed, "select", method, c)
        idx = select(pool, features[pool] if features is not None else None, ipc, s)
        assert bool((idx < n_train).all()) and set(idx.tolist()) <= set(pool.tolist())
        out[c] = idx
    return out


def load_feature_expert(cfg: Config, nclass: int, device: torch.device, vocab_size: int,
                        eager_attention: bool = False) -> TextClassifier:
    """Expert `evaluate.feature_expert` with its final weights, frozen, in eval mode
    (`eager_attention`: built so that it returns attention maps)."""
    k = cfg.evaluate.feature_expert
    if k >= cfg.pretrain.num_premodel:
        raise UserError(f"evaluate.feature_expert = {k} but there are only "
                              f"{cfg.pretrain.num_premodel} experts (pretrain.num_premodel)")
    model = build_classifier(cfg.network, nclass, pretrained=False, vocab_size=vocab_size,
                             eager_attention=eager_attention)
    model.load_state_dict(load_expert_weights(cfg, k, cfg.pretrain.epochs))
    return freeze(model.to(device))


def select_for(method: str, labels: torch.Tensor, nclass: int, ipc: int, seed: int,
               features: Optional[torch.Tensor], exclude: Sequence[int]) -> Dict[int, torch.Tensor]:
    """Collective: the baseline's selection, computed by every rank and broadcast from rank 0 so
    that all ranks train on exactly the same samples."""
    return broadcast_object(select_baseline(method, labels, nclass, ipc, seed, features,
                                            exclude=exclude))


