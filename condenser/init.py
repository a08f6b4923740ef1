"""Initialisations of the synthetic set, by name (`condense.init`, its options
`condense.init_options`): one function per mode, `fn(ctx, c, ipc, factor) -> ClassData` for
class c, registered in `INITS` with its options dataclass (read as `ctx.options`) and its needs
as traits (`needs_features`: the expert features `ctx.features`, which random also reads with
correct_only; `loads_set`: the classes come from a saved set, `build_shard`'s `loaded`;
`starts_real`: every sequence starts as a whole real sample, which condense.update_fraction may
hold).

- random     the word embeddings of `ipc` real samples of the class (random, herding and kmeans
             take option `correct_only`: only samples the feature expert classifies correctly)
- noise      Gaussian noise with the per-dimension mean/std of the embedding table; real masks
- mix        each sequence packs `factor` real snippets (NCFM's image tiling, for text)
- mask_fill  real samples with a fraction of their tokens replaced (`condenser.init_text`)
- manifold   the real samples nearest to k-means centres in a PCA space (`condenser.init_text`)
- herding    the real samples herding picks on the features of expert `evaluate.feature_expert`
             (final weights) - the herding baseline's picks, so condensation starts where the
             best cheap selection ends and has to add to it
- kmeans     the real samples nearest to k-means centroids of the same features (the kmeans
             baseline's picks)
- generated  new texts from a small causal LM prompted with real examples of the class, the
             `ipc` nearest k-means centroids of their expert features (`condenser.init_generated`)
- best_real  the best of several real starts (option `candidates`, default random and herding),
             each real subset trained by the evaluation protocol and scored on the validation
             slice of the training split (evaluate.select_by 'val'); the condensation script makes
             the choice (trait `chooses_start`) and then starts from the winner
- load       a saved set (`condense.load_path`; taken by `condenser.synthetic.build_shard`)

Trait `after_init`: called once every class of the rank is initialised (e.g. to free a model).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import torch

from condenser.init_context import InitContext, correct_pool, from_indices, labels_for, real_ids
from condenser.init_generated import GeneratedOptions, init_generated, release_generators
from condenser.init_text import ManifoldOptions, MaskFillOptions, init_manifold, init_mask_fill
from utils.coreset import herding_select
from utils.kmeans_select import kmeans_select
from utils.registry import Registry, opt
from utils.seeding import derive_seed
from utils.synset import ClassData, segment_length

InitFn = Callable[[InitContext, int, int, int], ClassData]


@dataclass
class SelectOptions:
    correct_only: bool = opt(False, "Start only from training samples that expert "
                             "evaluate.feature_expert classifies correctly (DATM's "
                             "initialisation); a class with fewer than ipc of them adds the wrong "
                             "ones closest to correct.")


@dataclass
class BestRealOptions:
    candidates: List[str] = opt(["random", "herding"], "The starts tried: inits that start from "
                                "real samples and are evaluation baselines of the same name "
                                "(random, herding, kmeans).")
    runs: int = opt(2, "Classifiers trained on each candidate (the evaluation protocol) and scored "
                    "on the validation slice; the best mean validation accuracy wins, ties to the "
                    "first listed.")


def _class_pool(ctx: InitContext, c: int, ipc: int) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The samples class c may start from (all of them, or the correctly classified ones) and,
    when computed on the way, their expert features  # [n], [n, H] or None"""
    if ctx.options is not None and getattr(ctx.options, "correct_only", False):
        return correct_pool(ctx, c, ipc)
    return ctx.train.class_indices[c], None


def init_random(ctx: InitContext, c: int, ipc: int, factor: int = 1) -> ClassData:
    """Embeddings of `ipc` real samples of class c."""
    pool, _ = _class_pool(ctx, c, ipc)
    return from_indices(ctx, c, real_ids(ctx, c, ipc, ctx.class_seed(c), pool))


def init_noise(ctx: InitContext, c: int, ipc: int, factor: int = 1) -> ClassData:
    """Gaussian noise with the per-dimension mean/std of the embedding table; real masks."""
    idx = real_ids(ctx, c, ipc, ctx.class_seed(c))
    mask = ctx.train.attention_mask[idx].clone()            # [ipc, L]
    mean = ctx.word_embeddings.mean(0)                      # [H]
    std = ctx.word_embeddings.std(0)                        # [H]
    L, H = mask.shape[1], ctx.word_embeddings.shape[1]
    gen = torch.Generator().manual_seed(ctx.class_seed(c) + 1)
    embeds = mean + std * torch.randn(ipc, L, H, generator=gen)
    return ClassData(embeds, mask, labels_for(ctx, c, None, ipc))


def init_mix(ctx: InitContext, c: int, ipc: int, factor: int = 1) -> ClassData:
    """Each sequence packs `factor` real snippets, each `[CLS] tokens.. [SEP]` in a segment of
    length L // factor (the text analogue of NCFM's factor x factor image tiling)."""
    idx = real_ids(ctx, c, ipc * factor, ctx.class_seed(c)).view(ipc, factor)
    L = ctx.train.input_ids.shape[1]
    seg = segment_length(L, factor)
    ids = torch.full((ipc, L), ctx.pad_id, dtype=torch.long)
    mask = torch.zeros(ipc, L, dtype=torch.long)
    for i in range(ipc):
        for k in range(factor):
            real = ctx.train.input_ids[idx[i, k]]
            n_tok = int(ctx.train.attention_mask[idx[i, k]].sum())
            content = real[1:n_tok - 1][:seg - 2]           # drop the real [CLS]/[SEP]
            piece = torch.cat([torch.tensor([ctx.cls_id]), content, torch.tensor([ctx.sep_id])])
            ids[i, k * seg:k * seg + len(piece)] = piece
            mask[i, k * seg:k * seg + len(piece)] = 1
    return ClassData(ctx.word_embeddings[ids].clone(), mask, labels_for(ctx, c, idx[:, 0], ipc))


def _feature_picks(ctx: InitContext, c: int, ipc: int, factor: int, pick) -> ClassData:
    """The `ipc` training samples of class c that `pick(feats [N_c, H])` chooses on the expert
    features (all of them, repeated, when the class has no more)."""
    pool, feats = _class_pool(ctx, c, ipc)
    if len(pool) <= ipc:
        return from_indices(ctx, c, real_ids(ctx, c, ipc, ctx.class_seed(c), pool))
    if ctx.features is None:
        raise ValueError("this init needs InitContext.features (expert features)")
    return from_indices(ctx, c, pool[pick(feats if feats is not None else ctx.features(pool))])


def init_herding(ctx: InitContext, c: int, ipc: int, factor: int = 1) -> ClassData:
    """The samples herding picks on the expert features (the herding baseline's picks)."""
    return _feature_picks(ctx, c, ipc, factor, lambda feats: herding_select(feats, ipc))


def init_kmeans(ctx: InitContext, c: int, ipc: int, factor: int = 1) -> ClassData:
    """The samples nearest to k-means centroids of the expert features (the kmeans baseline's
    picks: same features, same seed)."""
    seed = derive_seed(ctx.seed, "select", "kmeans", c)
    return _feature_picks(ctx, c, ipc, factor, lambda feats: kmeans_select(feats, ipc, seed))


def init_best_real(ctx: InitContext, c: int, ipc: int, factor: int = 1) -> ClassData:
    """The best real start, chosen on the validation slice before initialisation."""
    raise ValueError("init 'best_real' is resolved to one of its candidates before initialisation "
                     "(the condensation script's choose_start)")


def init_load(ctx: InitContext, c: int, ipc: int, factor: int = 1) -> ClassData:
    """A saved synthetic set (condense.load_path)."""
    raise ValueError("init 'load' takes its classes from the saved set (build_shard's `loaded`)")


INITS: Registry = Registry("init", publish=True)
for _name, _fn, _traits in (("random", init_random, {"options": SelectOptions, "starts_real": True}),
                            ("noise", init_noise, {}),
                            ("mix", init_mix, {}),
                            ("mask_fill", init_mask_fill, {"options": MaskFillOptions}),
                            ("manifold", init_manifold, {"options": ManifoldOptions,
                                                         "starts_real": True}),
                            ("herding", init_herding, {"options": SelectOptions, "starts_real": True,
                                                       "needs_features": True}),
                            ("kmeans", init_kmeans, {"options": SelectOptions, "starts_real": True,
                                                     "needs_features": True}),
                            ("generated", init_generated, {"options": GeneratedOptions,
                                                           "needs_features": True,
                                                           "after_init": release_generators}),
                            ("best_real", init_best_real, {"options": BestRealOptions,
                                                           "starts_real": True,
                                                           "chooses_start": True}),
                            ("load", init_load, {"loads_set": True})):
    INITS.register(_name, _fn, **_traits)


def init_class(mode: str, ctx: InitContext, c: int, ipc: int, factor: int) -> ClassData:
    return INITS.get(mode, where="condense.init")(ctx, c, ipc, factor)
