"""Seeds and RNG state: everything random in the project is seeded from here.

`derive_seed(run seed, purpose, ...)` gives a seed that is the same on every rank and for every
world size, so sampling never depends on how work is distributed; `seeded_sample` is the one
seeded draw of k items from a pool (a class's training indices, say).
"""
from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Python, numpy and torch RNG states as tensors/plain values (loadable with weights_only)."""
    py = random.getstate()
    np_state = np.random.get_state()
    return {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npst = state["numpy"]
    np.random.set_state((npst[0], npst[1].numpy().astype(np.uint32), npst[2], npst[3], npst[4]))
    torch.set_rng_state(state["torch"])


def derive_seed(*parts) -> int:
    """A 63-bit seed from a tuple (e.g. run seed, purpose, iteration, class); the same on every
    rank and for every world size, so sampling never depends on how classes are distributed."""
    import hashlib

    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2 ** 63 - 1)


def seeded_sample(pool: torch.Tensor, k: int, seed: int, replace_if_short: bool = False
                  ) -> torch.Tensor:
    """k items of `pool`  # [n] -> [min(k, n)], drawn without replacement in a seeded order; with
    `replace_if_short` a pool smaller than k is drawn from with replacement (k items)."""
    gen = torch.Generator().manual_seed(seed)
    if replace_if_short and 0 < len(pool) < k:
        return pool[torch.randint(len(pool), (k,), generator=gen)]
    return pool[torch.randperm(len(pool), generator=gen)[:k]]
