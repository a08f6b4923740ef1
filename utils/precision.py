"""Which arithmetic a device runs fast: every `precision: auto` key (condensation, experts,
evaluation classifiers) resolves here; `autocast` is the one bf16 context they all use."""
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


def autocast(device: torch.device, enabled: bool):
    """bfloat16 autocast on the device's type (a no-op context when not enabled): matmuls and
    linear layers run in bf16, weights, gradients and optimiser state stay fp32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def uses_bf16(precision: str, device: torch.device) -> bool:
    """Whether a training loop with this precision key ('fp32', 'bf16', 'auto') runs under bf16
    autocast on `device`."""
    return resolve_precision(precision, device) != "fp32"


def this_machine() -> torch.device:
    """The kind of device this process trains on (CUDA when present, else CPU), for resolving
    'auto' where no device is at hand (the expert fingerprint)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    """`t` in fp32 when it is in a half type (bf16 under autocast); fp32 and fp64 unchanged (a
    float64 check, such as a finite-difference test, keeps its precision)."""
    return t.float() if t.is_floating_point() and t.element_size() < 4 else t
