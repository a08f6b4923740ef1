"""The synthetic set: per-class learnable `inputs_embeds`, fixed attention masks and labels.

Each rank holds only the classes it owns (`SyntheticShard`). A class's data is
`embeds [ipc, L, H]` (learnable word embeddings), `mask [ipc, L]` and `labels [ipc]` (class index)
or `[ipc, C]` (multi-label vector). With `factor > 1` and decode_type 'multi', each stored sequence
holds `factor` segments of length L // factor, each decoded into its own training example.

The saved file (`syn_data_<iter>.pth`, loadable with `torch.load(weights_only=True)`):
    inputs_embeds [N, L, H] float32, attention_mask [N, L] long, labels [N] long or [N, C] float,
    class_of [N] long (the class each sequence was condensed for), meta: plain dict
N = len(classes) * ipc, class-major order.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import torch

from utils.config_schema import CondenseConfig
from utils.data import TokenizedSplit
from utils.distributed import derive_seed
from utils.io import safe_torch_load

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1


class SyntheticDataError(ValueError):
    """A saved synthetic set does not fit the current configuration."""


@dataclass
class ClassData:
    embeds: torch.Tensor   # [ipc, L, H] leaf tensor, requires_grad
    mask: torch.Tensor     # [ipc, L] long
    labels: torch.Tensor   # [ipc] long, or [ipc, C] float


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
    options: Optional[CondenseConfig] = None   # mask_fill / manifold settings


def segment_length(max_length: int, factor: int) -> int:
    return max_length // factor


def _real_ids(ctx: InitContext, c: int, n: int, gen: torch.Generator) -> torch.Tensor:
    """n real sample indices of class c (with replacement only when the class is too small)."""
    pool = ctx.train.class_indices[c]
    if len(pool) == 0:
        raise SyntheticDataError(f"class {c} has no training samples to initialise from")
    if len(pool) >= n:
        return pool[torch.randperm(len(pool), generator=gen)[:n]]
    return pool[torch.randint(len(pool), (n,), generator=gen)]


def _labels_for(ctx: InitContext, c: int, idx: Optional[torch.Tensor], n: int) -> torch.Tensor:
    if not ctx.multilabel:
        return torch.full((n,), c, dtype=torch.long)
    if idx is not None:
        return ctx.train.labels[idx].clone().float()       # the real samples' label sets (contain c)
    out = torch.zeros(n, ctx.nclass)
    out[:, c] = 1.0
    return out


def init_random(ctx: InitContext, c: int, ipc: int) -> ClassData:
    """Embeddings of `ipc` real samples of class c."""
    gen = torch.Generator().manual_seed(derive_seed(ctx.seed, "init", c))
    idx = _real_ids(ctx, c, ipc, gen)
    ids = ctx.train.input_ids[idx]                          # [ipc, L]
    embeds = ctx.word_embeddings[ids].clone()               # [ipc, L, H]
    return ClassData(embeds, ctx.train.attention_mask[idx].clone(), _labels_for(ctx, c, idx, ipc))


def init_noise(ctx: InitContext, c: int, ipc: int) -> ClassData:
    """Gaussian noise with the per-dimension mean/std of the embedding table; real masks."""
    gen = torch.Generator().manual_seed(derive_seed(ctx.seed, "init", c))
    idx = _real_ids(ctx, c, ipc, gen)
    mask = ctx.train.attention_mask[idx].clone()            # [ipc, L]
    mean = ctx.word_embeddings.mean(0)                      # [H]
    std = ctx.word_embeddings.std(0)                        # [H]
    L, H = mask.shape[1], ctx.word_embeddings.shape[1]
    embeds = mean + std * torch.randn(ipc, L, H, generator=gen)
    return ClassData(embeds, mask, _labels_for(ctx, c, None, ipc))


def init_mix(ctx: InitContext, c: int, ipc: int, factor: int) -> ClassData:
    """Each sequence packs `factor` real snippets, each `[CLS] tokens.. [SEP]` in a segment of
    length L // factor (the text analogue of NCFM's factor x factor image tiling)."""
    gen = torch.Generator().manual_seed(derive_seed(ctx.seed, "init", c))
    idx = _real_ids(ctx, c, ipc * factor, gen).view(ipc, factor)
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
    embeds = ctx.word_embeddings[ids].clone()
    labels = _labels_for(ctx, c, idx[:, 0], ipc)
    return ClassData(embeds, mask, labels)


def init_class(mode: str, ctx: InitContext, c: int, ipc: int, factor: int) -> ClassData:
    if mode == "random":
        return init_random(ctx, c, ipc)
    if mode == "noise":
        return init_noise(ctx, c, ipc)
    if mode == "mix":
        return init_mix(ctx, c, ipc, factor)
    if mode in ("mask_fill", "manifold"):
        from condenser.init_text import init_manifold, init_mask_fill
        return (init_mask_fill if mode == "mask_fill" else init_manifold)(ctx, c, ipc)
    raise ValueError(f"unknown init mode {mode!r} (random, noise, mix, mask_fill, manifold, load)")


def decode(data: ClassData, factor: int, decode_type: str
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training examples of one class: 'single' -> the sequences as they are;
    'multi' -> each sequence cut into `factor` segments [ipc * factor, L // factor, H]."""
    if decode_type == "single" or factor == 1:
        return data.embeds, data.mask, data.labels
    ipc, L, H = data.embeds.shape
    seg = segment_length(L, factor)
    embeds = data.embeds[:, :seg * factor].reshape(ipc * factor, seg, H)
    mask = data.mask[:, :seg * factor].reshape(ipc * factor, seg)
    labels = data.labels.repeat_interleave(factor, dim=0)
    return embeds, mask, labels


@dataclass
class SyntheticShard:
    """The classes one rank owns, with their data."""
    classes: List[int]
    data: Dict[int, ClassData] = field(default_factory=dict)

    def parameters(self) -> List[torch.Tensor]:
        return [self.data[c].embeds for c in self.classes]

    def to(self, device: torch.device) -> "SyntheticShard":
        for c in self.classes:
            d = self.data[c]
            d.embeds = d.embeds.detach().to(device).requires_grad_(True)
            d.mask, d.labels = d.mask.to(device), d.labels.to(device)
        return self

    def export(self) -> Dict[int, dict]:
        """CPU copies of this shard, for gathering on rank 0."""
        return {c: {"embeds": self.data[c].embeds.detach().cpu(), "mask": self.data[c].mask.cpu(),
                    "labels": self.data[c].labels.cpu()} for c in self.classes}


def build_shard(classes: Sequence[int], mode: str, ctx: InitContext, ipc: int, factor: int,
                loaded: Optional[dict] = None) -> SyntheticShard:
    shard = SyntheticShard(list(classes))
    for c in classes:
        if mode == "load":
            assert loaded is not None
            d = loaded[c]
            shard.data[c] = ClassData(d["embeds"].clone(), d["mask"].clone(), d["labels"].clone())
        else:
            shard.data[c] = init_class(mode, ctx, c, ipc, factor)
        shard.data[c].embeds.requires_grad_(True)
    return shard


def assemble(per_class: Dict[int, dict], classes: Sequence[int], meta: dict) -> dict:
    """The saved-file dict from gathered per-class data, class-major."""
    embeds = torch.cat([per_class[c]["embeds"] for c in classes])
    return {"inputs_embeds": embeds.float(),
            "attention_mask": torch.cat([per_class[c]["mask"] for c in classes]).long(),
            "labels": torch.cat([per_class[c]["labels"] for c in classes]),
            "class_of": torch.cat([torch.full((len(per_class[c]["embeds"]),), c, dtype=torch.long)
                                   for c in classes]),
            "meta": {**meta, "format_version": FORMAT_VERSION, "classes": list(classes)}}


def split_by_class(saved: dict) -> Dict[int, dict]:
    out = {}
    for c in sorted(set(saved["class_of"].tolist())):
        sel = saved["class_of"] == c
        out[c] = {"embeds": saved["inputs_embeds"][sel], "mask": saved["attention_mask"][sel],
                  "labels": saved["labels"][sel]}
    return out


def load_synthetic(path: str, class_names: Sequence[str], ipc: int, max_length: int,
                   hidden_size: int) -> Dict[int, dict]:
    """Read a saved set for `--init load`, checking it fits the current run."""
    saved = safe_torch_load(path)
    required = ("inputs_embeds", "attention_mask", "labels", "class_of", "meta")
    if not isinstance(saved, dict) or any(k not in saved for k in required):
        raise SyntheticDataError(f"{path}: not a textcondense synthetic set (needs keys {required})")
    meta = saved["meta"]
    problems = []
    if list(meta.get("class_names", [])) != list(class_names):
        problems.append(f"classes {meta.get('class_names')} vs dataset {list(class_names)}")
    N, L, H = saved["inputs_embeds"].shape
    if L != max_length:
        problems.append(f"max_length {L} vs config {max_length}")
    if H != hidden_size:
        problems.append(f"hidden size {H} vs model {hidden_size}")
    per_class = split_by_class(saved)
    if any(len(d["embeds"]) != ipc for d in per_class.values()):
        problems.append(f"ipc {meta.get('ipc')} vs config {ipc}")
    if problems:
        raise SyntheticDataError(f"{path} does not fit this run: " + "; ".join(problems)
                                 + ". Use a set saved with the same dataset, model, ipc and max_length.")
    return per_class
