"""What a student is worth: test accuracy and macro-F1 beside the teacher and the no-teacher
student, parameters, size, CPU latency and throughput, and the same after dynamic int8
quantisation. Every row is measured the same way in the same process (same threads, same batch).
"""
from __future__ import annotations

import datetime
import io
import logging
import statistics
import time
from pathlib import Path
from typing import List, Sequence

import torch
from torch import nn

from utils.io import atomic_write_text
from utils.training import Examples, evaluate_classifier

logger = logging.getLogger(__name__)


def state_size_mb(model: nn.Module) -> float:
    """Bytes of the model's serialised state dict (torch.save), in MiB: the same measure for
    float and int8 models."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes / 2 ** 20


@torch.no_grad()
def latency_ms(model: nn.Module, batch: dict, repeats: int) -> float:
    """Median wall time of one forward pass of `batch`, after two warm-up passes."""
    model.eval()
    for _ in range(2):
        model(**batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(**batch)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


class _CudaOnlyNoise(logging.Filter):
    """Drops the two lines importing torchao prints on a CPU-only torch and nothing else: its
    CUDA-only kernel libraries (_C_mxfp8, _C_cutlass_90a) cannot load there (the CPU int8 path does
    not use them), and torch's pytree note about torchao's own Enum registration."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not (msg.startswith("Failed to load") and "_C_" in msg
                    or "is an Enum subclass and is now natively supported" in msg)


def _torchao():
    """torchao's quantize_ and its dynamic int8 config, or None when torchao is not installed."""
    noise = _CudaOnlyNoise()
    loggers = [logging.getLogger("torchao"), logging.getLogger("torch.utils._pytree")]
    for lg in loggers:
        lg.addFilter(noise)
    try:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
    except ImportError:
        return None
    finally:
        for lg in loggers:
            lg.removeFilter(noise)
    return quantize_, Int8DynamicActivationInt8WeightConfig


def int8_backend() -> str:
    """What `quantize_int8` uses here: 'torchao <version>' or 'torch.ao'."""
    if _torchao() is None:
        return "torch.ao"
    from importlib.metadata import version
    return f"torchao {version('torchao')}"


def quantize_int8(model: nn.Module, backend: str = "auto") -> nn.Module:
    """Dynamic int8 quantisation of every Linear layer of a copy of `model` (int8 weights,
    activations quantised on the fly). backend 'auto': torchao's Int8DynamicActivationInt8Weight
    when torchao is installed (the `int8` extra), else torch.ao's quantize_dynamic, which torch 2.13
    deprecates in favour of torchao (benchmarks/results/perf/int8_torchao.json: both, same student)."""
    import copy

    model = copy.deepcopy(model).eval()
    ao = _torchao() if backend in ("auto", "torchao") else None
    if ao is not None:
        quantize_, config = ao
        quantize_(model, config())
        return model
    if backend == "torchao":
        raise ImportError("torchao is not installed: pip install 'textcondense[int8]'")
    from torch.ao.quantization import quantize_dynamic
    return quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)


def measure(name: str, model: nn.Module, test: Examples, batch: dict, params: int,
            eval_batch_size: int, repeats: int, device: torch.device) -> dict:
    scores = evaluate_classifier(model, test, eval_batch_size, device)
    ms = latency_ms(model, batch, repeats)
    n = batch["attention_mask"].shape[0]
    row = {"model": name, **scores, "params": params, "size_mb": round(state_size_mb(model), 2),
           "latency_ms": round(ms, 2), "throughput": round(1000 * n / ms, 1),
           "threads": torch.get_num_threads()}
    logger.info("%s: accuracy %.4f, macro-F1 %.4f, %.1fM parameters, %.1f MiB, %.1f ms per batch "
                "of %d (%.0f/s)", name, row["accuracy"], row["macro_f1"], params / 1e6,
                row["size_mb"], ms, n, row["throughput"])
    return row


def relative_to_teacher(rows: List[dict]) -> None:
    teacher = rows[0]
    for r in rows:
        r["accuracy_vs_teacher"] = round(100 * r["accuracy"] / max(teacher["accuracy"], 1e-12), 2)
        r["latency_vs_teacher"] = round(100 * r["latency_ms"] / teacher["latency_ms"], 2)


COLUMNS = ("date", "dataset", "data", "losses", "student", "steps", "model", "accuracy (%)",
           "macro-F1 (%)", "params (M)", "size (MiB)", "latency (ms/batch)", "acc. vs teacher (%)",
           "latency vs teacher (%)")


def append_table(path: Path, rows: Sequence[dict], context: dict) -> str:
    """Append one line per row to the markdown table at `path` (created with a header)."""
    path = Path(path)
    date = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    lines = []
    for r in rows:
        cells = [date, context["dataset"], context["data"], context["losses"], context["student"],
                 str(context["steps"]), r["model"], f"{100 * r['accuracy']:.2f}",
                 f"{100 * r['macro_f1']:.2f}", f"{r['params'] / 1e6:.1f}", f"{r['size_mb']:.1f}",
                 f"{r['latency_ms']:.1f}", f"{r['accuracy_vs_teacher']:.1f}",
                 f"{r['latency_vs_teacher']:.1f}"]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    header = ("# Distillation results\n\nOne block per run of condense/distill_script_text.py; "
              "test split; latency = median forward time of one batch on CPU.\n\n"
              "| " + " | ".join(COLUMNS) + " |\n|" + "|".join("---" for _ in COLUMNS) + "|\n")
    old = path.read_text(encoding="utf-8") if path.is_file() else header
    atomic_write_text(path, old.rstrip("\n") + "\n" + "\n".join(lines) + "\n")
    return "\n".join(lines)


def latency_batch(test: Examples, size: int, device: torch.device) -> dict:
    idx = torch.arange(min(size, len(test)))
    return test.inputs(idx, device)


def loss_names(specs) -> str:
    return "+".join(f"{s.name}×{s.weight:g}" for s in specs)
