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

from utils.errors import UserError
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


def _torchao():
    """torchao's quantize_ and its dynamic int8 config, or None when torchao is not installed.

    (On a CPU-only torch, importing torchao logs that its CUDA-only kernel libraries, _C_mxfp8
    and _C_cutlass_90a, cannot load, and torch's pytree logs a deprecation note about torchao's
    Enum registration. The CPU int8 path uses neither; transformers imports torchao whenever it is
    installed, so those lines come with any model import, and nothing here hides them.)"""
    try:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
    except ImportError:
        return None
    return quantize_, Int8DynamicActivationInt8WeightConfig


def int8_backend(backend: str) -> str:
    """The int8 path `backend` names, with torchao's version: 'torchao 0.18.0' or 'torch.ao'."""
    if backend != "torchao":
        return "torch.ao"
    from importlib.metadata import version
    return f"torchao {version('torchao')}"


def quantize_int8(model: nn.Module, backend: str = "torch.ao") -> nn.Module:
    """Dynamic int8 quantisation of every Linear layer of a copy of `model` (int8 weights,
    activations quantised on the fly), by `distill.int8_backend`:

    - 'torch.ao': torch.ao.quantization.quantize_dynamic, deprecated by torch 2.13 but kept as the
      default: on these x86 CPUs it is the only eager int8 path faster than float.
    - 'torchao': torchao's Int8DynamicActivationInt8Weight (quantize_), the successor. It runs
      on this CPU torch build (torchao 0.18.0), but in eager mode its int8 matmuls fall back to
      slow kernels: about 30x slower than torch.ao on the same student
      (benchmarks/results/perf/int8_torchao.json, made by benchmarks/bench_int8.py).
    """
    import copy

    model = copy.deepcopy(model).eval()
    if backend == "torchao":
        ao = _torchao()
        if ao is None:
            raise UserError("distill.int8_backend = 'torchao' but torchao is not installed: "
                            "pip install 'textcondense[int8]' (or use 'torch.ao')")
        quantize_, config = ao
        quantize_(model, config())
        return model
    import warnings

    from torch.ao.quantization import quantize_dynamic
    with warnings.catch_warnings():   # torch 2.13 deprecates the quantised tensor constructors
        warnings.simplefilter("ignore", UserWarning)
        return quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)


def measure(name: str, model: nn.Module, test: Examples, batch: dict, params: int,
            eval_batch_size: int, repeats: int, device: torch.device,
            at_least_one: bool = False) -> dict:
    scores = evaluate_classifier(model, test, eval_batch_size, device, at_least_one)
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
    return test.inputs(idx, device, trim=False)       # full max_length: comparable across runs


def loss_names(specs) -> str:
    return "+".join(f"{s.name}×{s.weight:g}" for s in specs)
