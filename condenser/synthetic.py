"""The synthetic data one rank optimises: the classes it owns, each a learnable `ClassData`
(the file format itself is `utils.synset`), and, with `condense.learn_labels`, learnable label
logits per sequence (the labels are their softmax: soft labels the set then carries)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import torch

from condenser.init import INITS, init_class
from condenser.init_context import InitContext
from utils.synset import ClassData


@dataclass
class SyntheticShard:
    """The classes one rank owns, with their data."""
    classes: List[int]
    data: Dict[int, ClassData] = field(default_factory=dict)
    label_logits: Dict[int, torch.Tensor] = field(default_factory=dict)   # learnt: [ipc, C]
    # condense.tokens: what the objectives see of the embeddings (condenser.tokens.TokenProjection)
    project: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None

    @property
    def learns_labels(self) -> bool:
        return bool(self.label_logits)

    def parameters(self) -> List[torch.Tensor]:
        """The synthetic embeddings, one tensor per class (the condenser's optimiser)."""
        return [self.data[c].embeds for c in self.classes]

    def label_parameters(self) -> List[torch.Tensor]:
        """The learnt label logits, one tensor per class (empty without learn_labels)."""
        return [self.label_logits[c] for c in self.classes] if self.learns_labels else []

    def labels(self, c: int) -> torch.Tensor:
        """Class c's labels: softmax of the learnt logits (differentiable), or the fixed ones."""
        if self.learns_labels:
            return self.label_logits[c].softmax(-1)                     # [ipc, C]
        return self.data[c].labels

    def class_data(self, c: int) -> ClassData:
        """Class c's sequences as the objectives see them (projected to tokens with `project`)."""
        d = self.data[c]
        embeds = d.embeds if self.project is None else self.project(d.embeds, d.mask)
        return ClassData(embeds, d.mask, self.labels(c))

    def to(self, device: torch.device) -> "SyntheticShard":
        for c in self.classes:
            d = self.data[c]
            d.embeds = d.embeds.detach().to(device).requires_grad_(True)
            d.mask, d.labels = d.mask.to(device), d.labels.to(device)
            if c in self.label_logits:
                self.label_logits[c] = self.label_logits[c].detach().to(device).requires_grad_(True)
        return self

    def state_dict(self) -> Dict[int, dict]:
        """CPU copies of this shard ({class: {embeds, mask, labels[, label_logits]}}), for
        gathering on rank 0; learnt labels are saved as their softmax."""
        out = {}
        for c in self.classes:
            out[c] = {"embeds": self.data[c].embeds.detach().cpu(), "mask": self.data[c].mask.cpu(),
                      "labels": self.labels(c).detach().cpu()}
            if self.learns_labels:
                out[c]["label_logits"] = self.label_logits[c].detach().cpu()
        return out


LABEL_SMOOTHING = 0.1   # learnt labels 'onehot' start: (1 - eps) one-hot + eps / C


def onehot_logits(labels: torch.Tensor, nclass: int) -> torch.Tensor:
    """Logits whose softmax is the smoothed one-hot of class-index labels  # [n, C]"""
    p = torch.full((len(labels), nclass), LABEL_SMOOTHING / nclass)
    p[torch.arange(len(labels)), labels] += 1.0 - LABEL_SMOOTHING
    return p.log()


def logits_of(probs: torch.Tensor) -> torch.Tensor:
    """Logits whose softmax is `probs` (a saved set's soft labels)  # [n, C]"""
    return probs.float().clamp_min(math.exp(-20)).log()


def build_shard(classes: Sequence[int], mode: str, ctx: InitContext, ipc: int, factor: int,
                loaded: Optional[dict] = None, learn_labels: bool = False,
                expert_logits: Optional[Callable[[ClassData], torch.Tensor]] = None
                ) -> SyntheticShard:
    """This rank's classes, initialised by `mode`, or taken from `loaded` ({class: {embeds, mask,
    labels[, label_logits]}}: a saved set or a checkpoint) when mode loads a set ('load'). With
    `learn_labels`, label logits start from the loaded ones, a loaded set's soft labels, the
    expert's logits on the initial sequences (`expert_logits`), or a smoothed one-hot."""
    shard = SyntheticShard(list(classes))
    from_saved = INITS.entry(mode, where="condense.init").trait("loads_set")
    for c in classes:
        d = loaded[c] if from_saved else None
        if d is not None:
            shard.data[c] = ClassData(d["embeds"].clone(), d["mask"].clone(), d["labels"].clone())
        else:
            shard.data[c] = init_class(mode, ctx, c, ipc, factor)
        shard.data[c].embeds.requires_grad_(True)
        if not learn_labels:
            continue
        labels = shard.data[c].labels
        if d is not None and "label_logits" in d:
            logits = d["label_logits"].clone()
        elif labels.dim() == 2:
            logits = logits_of(labels)
        elif expert_logits is not None:
            logits = expert_logits(shard.data[c]).detach().float().cpu()
        else:
            logits = onehot_logits(labels, ctx.nclass)
        shard.label_logits[c] = logits.requires_grad_(True)
    after = INITS.entry(mode, where="condense.init").trait("after_init")
    if after is not None and not from_saved:
        after()
    return shard
