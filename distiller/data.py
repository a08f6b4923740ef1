"""What the student trains on (`distill.data`): the real training split, a synthetic set, or both,
and the batches each rank sees.

Both sources sit in one index space (`Sources`): real examples first, then synthetic ones. A batch
never mixes them (token ids and `inputs_embeds` need separate forward passes): with 'both', batches
alternate between the two sources. The global batch of step i is the same on every rank (seeded);
rank r trains on its `r::world_size` slice, so with gradient averaging the update equals the
single-process one when the batch size is a multiple of the world size.
"""
from __future__ import annotations

from typing import Iterator, List, Optional

import torch

from utils.seeding import derive_seed
from utils.training import Examples, endless_batches


class _LabelView:
    """`sources.labels[idx]` for a batch from one source."""

    def __init__(self, sources: "Sources"):
        self.sources = sources

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor:
        part, local = self.sources.locate(idx)
        return part.labels[local]


class Sources:
    """Real and/or synthetic `Examples` in one index space (real first)."""

    def __init__(self, parts: List[Examples], names: List[str]):
        self.parts, self.names = parts, names
        self.offsets = [0]
        for p in parts:
            self.offsets.append(self.offsets[-1] + len(p))
        self.labels = _LabelView(self)

    def __len__(self) -> int:
        return self.offsets[-1]

    def locate(self, idx: torch.Tensor):
        """(the source of a batch, its local indices); a batch comes from one source."""
        first = int(idx[0])
        for k, p in enumerate(self.parts):
            if self.offsets[k] <= first < self.offsets[k + 1]:
                local = idx - self.offsets[k]
                if bool(((local < 0) | (local >= len(p))).any()):
                    raise ValueError("a batch mixes sources")
                return p, local
        raise IndexError(f"index {first} beyond {len(self)} examples")

    def in_order(self, batch_size: int) -> Iterator[torch.Tensor]:
        """Every example once, in index order, in batches that never straddle two sources."""
        for k in range(len(self.parts)):
            for s in range(self.offsets[k], self.offsets[k + 1], batch_size):
                yield torch.arange(s, min(s + batch_size, self.offsets[k + 1]))

    def inputs(self, idx: torch.Tensor, device: torch.device) -> dict:
        part, local = self.locate(idx)
        return part.inputs(local, device)


def global_batches(sources: Sources, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    """Endless global batches (indices into `sources`), the same on every rank; sources take
    turns, one batch each."""
    streams = [endless_batches(len(p), min(batch_size, len(p)),
                               torch.Generator().manual_seed(derive_seed(seed, "distill", name)))
               for p, name in zip(sources.parts, sources.names)]
    k = 0
    while True:
        yield next(streams[k]) + sources.offsets[k]
        k = (k + 1) % len(streams)


def rank_slice(batches: Iterator[torch.Tensor], rank: int, world_size: int
               ) -> Iterator[torch.Tensor]:
    """This rank's share of each global batch."""
    for idx in batches:
        mine = idx[rank::world_size]
        yield mine if len(mine) else idx[:1]    # a tiny batch still gives every rank an example


def make_sources(data: str, real: Optional[Examples], synthetic: Optional[Examples]) -> Sources:
    parts, names = [], []
    if data in ("real", "both"):
        parts.append(real)
        names.append("real")
    if data in ("synthetic", "both"):
        parts.append(synthetic)
        names.append("synthetic")
    return Sources(parts, names)
