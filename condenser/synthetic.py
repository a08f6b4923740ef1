"""The synthetic data one rank optimises: the classes it owns, each a learnable `ClassData`
(the file format itself is `utils.synset`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import torch

from condenser.init import init_class
from condenser.init_context import InitContext
from utils.synset import ClassData


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

    def state_dict(self) -> Dict[int, dict]:
        """CPU copies of this shard ({class: {embeds, mask, labels}}), for gathering on rank 0."""
        return {c: {"embeds": self.data[c].embeds.detach().cpu(), "mask": self.data[c].mask.cpu(),
                    "labels": self.data[c].labels.cpu()} for c in self.classes}


def build_shard(classes: Sequence[int], mode: str, ctx: InitContext, ipc: int, factor: int,
                loaded: Optional[dict] = None) -> SyntheticShard:
    """This rank's classes, initialised by `mode`, or taken from `loaded` ({class: {embeds, mask,
    labels}}: a saved set or a checkpoint) when mode is 'load'."""
    shard = SyntheticShard(list(classes))
    for c in classes:
        if mode == "load":
            d = loaded[c]
            shard.data[c] = ClassData(d["embeds"].clone(), d["mask"].clone(), d["labels"].clone())
        else:
            shard.data[c] = init_class(mode, ctx, c, ipc, factor)
        shard.data[c].embeds.requires_grad_(True)
    return shard
