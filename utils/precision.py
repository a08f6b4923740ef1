"""Which arithmetic a device runs fast: `condense.precision: auto` resolves here."""
from __future__ import annotations

import functools
from pathlib import Path

import torch

FAST_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.lru_cache(maxsize=None)
def cpu_flags() -> frozenset:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    info = Path("/proc/cpuinfo")
    if not info.is_file():
        return frozenset()
    for line in info.read_text().splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def bf16_is_fast(device: torch.device, flags=None) -> bool:
    """bfloat16 matmuls run natively: a CUDA GPU that supports them, or a CPU with avx512_bf16 or
    AMX (elsewhere torch emulates bf16 and autocast would be slower than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    flags = cpu_flags() if flags is None else flags
    return device.type == "cpu" and any(f in flags for f in FAST_BF16_CPU_FLAGS)


def resolve_precision(precision: str, device: torch.device, flags=None) -> str:
    """`auto`: 'bf16' where bf16 is fast on `device`, else 'fp32'; other values unchanged."""
    if precision != "auto":
        return precision
    return "bf16" if bf16_is_fast(device, flags) else "fp32"
