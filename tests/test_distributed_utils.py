"""Single-process pieces of utils.distributed: sharding, seeds, RNG state, torchrun detection."""
from __future__ import annotations

import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist

from utils.distributed import (
    DistEnv,
    all_gather_objects,
    all_reduce_sum,
    broadcast_object,
    init_distributed,
    launched_by_torchrun,
    ownership_table,
    rotated_shard,
    shard_range,
)
from utils.seeding import derive_seed, rng_state, set_rng_state

# ---------------------------------------------------------------------------------- sharding

@pytest.mark.parametrize("world", range(1, 9))
def test_shard_range_partitions(world):
    for n in range(14):
        shards = [shard_range(n, world, r) for r in range(world)]
        owned = [i for s in shards for i in s]
        assert sorted(owned) == list(range(n)), (n, world)          # every item exactly once
        assert owned == list(range(n))                              # contiguous, in rank order
        sizes = [len(s) for s in shards]
        assert max(sizes) - min(sizes) <= 1, (n, world, sizes)
        assert all(s.step == 1 for s in shards)
        for a, b in zip(shards, shards[1:]):
            assert a.stop == b.start
        assert ownership_table(n, world) == [list(s) for s in shards]


def test_shard_range_examples():
    assert ownership_table(5, 2) == [[0, 1], [2, 3, 4]]
    assert ownership_table(2, 4) == [[], [0], [], [1]]
    assert ownership_table(0, 3) == [[], [], []]
    assert shard_range(10, 1, 0) == range(10)


@pytest.mark.parametrize("world", range(1, 7))
def test_rotated_shard_balances_spares(world):
    for n in range(10):
        totals = [0] * world
        for turn in range(world):
            shards = [rotated_shard(n, world, r, turn) for r in range(world)]
            assert sorted(i for s in shards for i in s) == list(range(n))   # a partition
            for r, s in enumerate(shards):
                totals[r] += len(s)
        assert len(set(totals)) == 1, (n, world, totals)          # every rank did the same work
    # 3 runs on 2 ranks, three methods: plain shards give rank 1 six runs and rank 0 three
    per_rank = [sum(len(rotated_shard(3, 2, r, t)) for t in range(3)) for r in range(2)]
    assert per_rank == [4, 5]


@pytest.mark.parametrize("world, rank", [(2, 2), (2, -1), (1, 1), (0, 0), (3, 7)])
def test_shard_range_bad_rank(world, rank):
    with pytest.raises(ValueError, match=f"bad rank {rank} for world size {world}"):
        shard_range(10, world, rank)


# ------------------------------------------------------------------------------------- seeds

def test_derive_seed():
    assert derive_seed(0, "init", 3) == derive_seed(0, "init", 3)
    seeds = {derive_seed(s, purpose, it, c) for s in range(3) for purpose in ("init", "real")
             for it in range(5) for c in range(4)}
    assert len(seeds) == 3 * 2 * 5 * 4
    assert derive_seed(1, 2) != derive_seed(2, 1) != derive_seed(12)
    assert derive_seed("a", 1) != derive_seed("a", "1")
    for s in seeds:
        assert isinstance(s, int) and 0 <= s < 2 ** 63
    assert derive_seed(0) != derive_seed(0, 0)
    torch.manual_seed(derive_seed(7, "x"))                           # usable as a torch seed


def test_derive_seed_same_in_every_process():
    """Ranks are separate processes with their own hash seed: the derived seed must not depend
    on it (no use of hash())."""
    code = "from utils.seeding import derive_seed; print(derive_seed(5, 'real', 2, 'c'))"
    outs = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, check=True).stdout.strip()
        outs.add(int(out))
    assert outs == {derive_seed(5, "real", 2, "c")}


# --------------------------------------------------------------------------------- RNG state

def draws():
    return (random.random(), random.gauss(0, 1), np.random.rand(4).tolist(),
            np.random.randint(0, 1000, 3).tolist(), torch.rand(5), torch.randn(2))


def assert_same(a, b):
    assert a[:4] == b[:4]
    assert torch.equal(a[4], b[4]) and torch.equal(a[5], b[5])


@pytest.mark.parametrize("pending_gauss", [False, True])
def test_rng_round_trip(pending_gauss):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    if pending_gauss:   # python and numpy both cache the second Gaussian of a pair
        random.gauss(0, 1)
        np.random.randn(1)
    state = rng_state()
    first = draws()
    second = draws()
    assert first[0] != second[0]
    set_rng_state(state)
    assert_same(draws(), first)


def test_rng_state_survives_weights_only_load(tmp_path):
    random.seed(11)
    np.random.seed(12)
    torch.manual_seed(13)
    np.random.randn(1)
    torch.save(rng_state(), tmp_path / "rng.pt")
    expected = draws()
    draws()  # move every generator on
    loaded = torch.load(tmp_path / "rng.pt", weights_only=True)
    set_rng_state(loaded)
    assert_same(draws(), expected)


# ------------------------------------------------------------------------ no torchrun, no group

def test_init_distributed_without_torchrun(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert not launched_by_torchrun()
    env = init_distributed()
    assert isinstance(env, DistEnv)
    assert (env.world_size, env.rank, env.local_rank) == (1, 0, 0)
    assert env.is_main and not env.distributed and env.backend is None
    expected = torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")
    assert env.device == expected
    assert not dist.is_initialized()
    # the collectives are identities without a process group
    t = torch.tensor([1.0, 2.0])
    assert all_reduce_sum(t) is t and t.tolist() == [1.0, 2.0]
    assert all_gather_objects({"a": 1}) == [{"a": 1}]
    assert broadcast_object([3]) == [3]


def test_partial_torchrun_env_is_not_torchrun(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert not launched_by_torchrun()
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert launched_by_torchrun()
