"""Initialisations that diversify or spread the starting sequences (usable by every method).

- `mask_fill`: start from real samples of the class, mask a fraction `mask_ratio` of their content
  tokens and fill each masked position with another token. No masked-LM head is needed (the packaged
  model has none): the filler is one of the `fill_candidates` tokens whose embeddings are nearest to
  the masked token ('nearest'), or a token drawn from the class's own word distribution
  ('class_vocab'). Positions are chosen evenly spaced ('uniform'), at random ('random'), or among the
  tokens most specific to the class ('important': highest p(token | class) / p(token)).
- `manifold`: mean-pooled word embeddings of the class's real samples, reduced by PCA to
  `latent_dim` dimensions; k-means with `ipc` centres in that space; the real sample nearest to
  each centre starts one synthetic sequence, so the starts cover the class's modes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from condenser.init_context import InitContext, from_indices, labels_for, real_ids
from utils.kmeans_select import nearest_distinct
from utils.registry import opt
from utils.seeding import derive_seed
from utils.synset import ClassData


def _content_positions(ids: torch.Tensor, mask: torch.Tensor, special: set) -> torch.Tensor:
    """Positions of real (non-special, non-padding) tokens  # [K]"""
    keep = mask.bool() & torch.tensor([int(t) not in special for t in ids.tolist()])
    return torch.nonzero(keep).flatten()


def class_token_counts(ctx: InitContext, c: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token counts over the class's training samples and over all training samples  # [V], [V]"""
    vocab = ctx.word_embeddings.shape[0]
    ids, mask = ctx.train.input_ids, ctx.train.attention_mask.bool()
    all_counts = torch.bincount(ids[mask], minlength=vocab).float()
    sel = ctx.train.class_indices[c]
    cls_counts = torch.bincount(ids[sel][mask[sel]], minlength=vocab).float()
    for t in (ctx.cls_id, ctx.sep_id, ctx.pad_id):
        all_counts[t] = cls_counts[t] = 0.0
    return cls_counts, all_counts


def _choose_positions(content: torch.Tensor, ids: torch.Tensor, n_mask: int, strategy: str,
                      specificity: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    if strategy == "uniform":
        step = len(content) / n_mask
        return content[(torch.arange(n_mask) * step).long()]
    if strategy == "random":
        return content[torch.randperm(len(content), generator=gen)[:n_mask]]
    if strategy == "important":
        scores = specificity[ids[content]]
        return content[torch.argsort(scores, descending=True)[:n_mask]]
    raise ValueError(f"unknown mask_strategy {strategy!r} (uniform, random, important)")


def _fill(token: int, strategy: str, k: int, table_n: torch.Tensor, class_probs: torch.Tensor,
          gen: torch.Generator) -> int:
    if strategy == "nearest":
        sims = table_n @ table_n[token]                               # [V]
        sims[token] = -2.0                                            # never the token itself
        top = torch.topk(sims, k).indices
        return int(top[torch.randint(k, (1,), generator=gen)])
    if strategy == "class_vocab":
        top = torch.topk(class_probs, k)
        return int(top.indices[torch.multinomial(top.values, 1, generator=gen)])
    raise ValueError(f"unknown fill_strategy {strategy!r} (nearest, class_vocab)")


@dataclass
class MaskFillOptions:
    mask_ratio: float = opt(0.15, "Fraction of content tokens replaced.")
    mask_strategy: Literal["uniform", "random", "important"] = opt(
        "random", "Which positions: evenly spaced, random, or the tokens most specific to the "
        "class (p(token|class) / p(token)).")
    fill_strategy: Literal["nearest", "class_vocab"] = opt(
        "nearest", "Filler drawn from the tokens with the nearest embeddings, or from the class's "
        "own most frequent tokens.")
    fill_candidates: int = opt(10, "Number of candidate fillers per position.")

    def check(self):
        if not 0.0 <= self.mask_ratio <= 1.0:
            yield "mask_ratio", "must be in [0, 1]"
        if self.fill_candidates < 1:
            yield "fill_candidates", "must be >= 1"


@dataclass
class ManifoldOptions:
    latent_dim: int = opt(16, "PCA dimensions in which k-means picks the starts.")

    def check(self):
        if self.latent_dim < 1:
            yield "latent_dim", "must be >= 1"


def init_mask_fill(ctx: InitContext, c: int, ipc: int, factor: int = 1) -> ClassData:
    """Real samples of the class with a fraction of their content tokens replaced."""
    o = ctx.options
    gen = torch.Generator().manual_seed(ctx.class_seed(c))
    idx = real_ids(ctx, c, ipc, ctx.class_seed(c))
    ids = ctx.train.input_ids[idx].clone()                            # [ipc, L]
    mask = ctx.train.attention_mask[idx].clone()
    cls_counts, all_counts = class_token_counts(ctx, c)
    class_probs = cls_counts / cls_counts.sum().clamp_min(1.0)         # [V]
    specificity = (cls_counts + 1) / (all_counts + 1)                  # [V]
    table_n = torch.nn.functional.normalize(ctx.word_embeddings.float(), dim=-1)
    special = {ctx.cls_id, ctx.sep_id, ctx.pad_id}
    for i in range(ipc):
        content = _content_positions(ids[i], mask[i], special)
        n_mask = int(round(o.mask_ratio * len(content)))
        if n_mask == 0:
            continue
        for pos in _choose_positions(content, ids[i], n_mask, o.mask_strategy, specificity, gen):
            ids[i, pos] = _fill(int(ids[i, pos]), o.fill_strategy, o.fill_candidates, table_n,
                                class_probs, gen)
    return ClassData(ctx.word_embeddings[ids].clone(), mask, labels_for(ctx, c, idx, ipc))


def init_manifold(ctx: InitContext, c: int, ipc: int, factor: int = 1) -> ClassData:
    """The real samples nearest to k-means centres in a PCA space of mean-pooled embeddings."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    pool = ctx.train.class_indices[c]
    if len(pool) < ipc:                                               # too few samples to cluster
        return from_indices(ctx, c, real_ids(ctx, c, ipc, ctx.class_seed(c)))
    ids, mask = ctx.train.input_ids[pool], ctx.train.attention_mask[pool]
    emb = ctx.word_embeddings[ids]                                    # [N_c, L, H]
    m = mask.unsqueeze(-1).float()
    pooled = ((emb * m).sum(1) / m.sum(1).clamp_min(1.0)).numpy()     # [N_c, H]
    dim = max(1, min(ctx.options.latent_dim, pooled.shape[0], pooled.shape[1]))
    seed = derive_seed(ctx.seed, "manifold", c) % (2 ** 31)
    z = PCA(n_components=dim, random_state=seed).fit_transform(pooled)  # [N_c, dim]
    km = KMeans(n_clusters=ipc, n_init=4, random_state=seed).fit(z)
    chosen = nearest_distinct(z, km.cluster_centers_)                 # nearest distinct samples
    return from_indices(ctx, c, pool[torch.tensor(chosen)])

