"""torchrun detection, process groups, class ownership and collectives.

`python script.py` runs as one process with no process group; under `torchrun` (RANK, WORLD_SIZE,
LOCAL_RANK in the environment) a process group is created: NCCL when CUDA is available, Gloo on
CPU. The device comes from LOCAL_RANK, so several nodes (`--nnodes`) work the same as one.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, List, Optional

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


@dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: Optional[str] = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 or self.backend is not None


def launched_by_torchrun() -> bool:
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def set_visible_gpus(gpu: Optional[str]) -> None:
    """`--gpu 0,1`: restrict CUDA devices (must run before CUDA is initialised; harmless on CPU)."""
    if gpu is not None and "CUDA_VISIBLE_DEVICES" not in os.environ:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)


def _restart_safe_store(world: int, timeout: timedelta):
    """Under torchrun's static rendezvous (the default launcher flags) every worker attempt talks
    to the same agent-hosted store, so a restarted worker would read the dead attempt's addresses
    (Gloo: 'connectFullMesh failed ... Connection refused'). Keys are prefixed per attempt
    (TORCHELASTIC_RESTART_COUNT), so `--max-restarts` works with the default flags too."""
    if (os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True"
            or int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0")) == 0):
        return None                      # no restarts possible: torch's own env:// store
    base = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                         is_master=False, timeout=timeout)
    return dist.PrefixStore(f"textcondense/attempt{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}",
                            base)


def init_distributed(gpu: Optional[str] = None, tf32: bool = True, timeout_s: float = 1800
                     ) -> DistEnv:
    """Set up the process group when launched by torchrun; pick the device from LOCAL_RANK.
    A collective that waits longer than `timeout_s` fails instead of hanging."""
    set_visible_gpus(gpu)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    if not launched_by_torchrun():
        return DistEnv(device=torch.device("cuda:0" if cuda else "cpu"))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    if cuda:
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        timeout = timedelta(seconds=timeout_s)
        store = _restart_safe_store(world, timeout)
        extra = {"store": store, "rank": rank, "world_size": world} if store is not None else {}
        dist.init_process_group(backend=backend, device_id=device if cuda else None,
                                timeout=timeout, **extra)
    return DistEnv(rank, world, local_rank, device, backend)


def cleanup_distributed(together: bool = True) -> None:
    """Tear the process group down. After a normal end (`together`) a barrier comes first, so no
    rank destroys the group while a peer's last collective is still in flight (seen as 'terminate
    called without an active exception' at exit under load); after an error, at once (a peer may
    never reach the barrier)."""
    if dist.is_available() and dist.is_initialized():
        if together:
            try:
                dist.barrier()
            except Exception:  # noqa: BLE001 - a peer already gone: tear down regardless
                pass
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    if _active():
        dist.barrier()


def shard_range(n_items: int, world_size: int, rank: int) -> range:
    """Balanced contiguous shard: sizes differ by at most one, every item owned exactly once.
    Ranks beyond n_items get an empty range."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"bad rank {rank} for world size {world_size}")
    start = rank * n_items // world_size
    stop = (rank + 1) * n_items // world_size
    return range(start, stop)


def rotated_shard(n_items: int, world_size: int, rank: int, turn: int) -> range:
    """`shard_range` with the ranks rotated by `turn`: call k of a sequence of shardings passes
    turn=k, so the ranks that take the spare items move on each time (plain `shard_range` gives
    every spare to the same ranks): over `world_size` calls of one size every rank gets the same
    total."""
    return shard_range(n_items, world_size, (rank + turn) % world_size)


def ownership_table(n_items: int, world_size: int) -> List[List[int]]:
    return [list(shard_range(n_items, world_size, r)) for r in range(world_size)]


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (in place); identity without a process group."""
    if _active():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_objects(obj: Any) -> List[Any]:
    """Every rank's object, in rank order (a collective; no files involved)."""
    if not _active():
        return [obj]
    out: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def gather_objects_to_main(obj: Any) -> Optional[List[Any]]:
    """Every rank's object on rank 0, in rank order (None on the other ranks); a collective."""
    if not _active():
        return [obj]
    out: Optional[List[Any]] = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


def main_then_broadcast(fn: Callable[[], Any]) -> Any:
    """Collective: run `fn` on rank 0 and give its result to every rank. A user error raised by
    `fn` is raised on every rank with the same message (so the other ranks exit cleanly with it
    instead of losing their peer)."""
    from utils.errors import UserError

    result, error = None, None
    if not _active() or dist.get_rank() == 0:
        try:
            result = fn()
        except UserError as exc:
            error = (type(exc).__name__, str(exc))
    error = broadcast_object(error)
    if error is not None:
        raise UserError(error[1])
    return broadcast_object(result)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def peak_memory_mb(device: torch.device) -> dict:
    """This process's peak resident memory (and peak CUDA allocation on GPU), in MiB."""
    import resource

    out = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if device.type == "cuda":
        out["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated(device) / 2 ** 20, 1)
    return out
