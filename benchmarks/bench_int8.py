"""Dynamic int8 of the distilled student two ways, on the same student and the same test batch:
torchao's Int8DynamicActivationInt8Weight (`distill.int8_backend: torchao`) beside torch.ao's
quantize_dynamic (`torch.ao`, the default, deprecated by torch 2.13). Latency is the median of
interleaved timed forwards (float, torch.ao, torchao in turn, so machine load hits all three
alike), per thread count; agreement is the int8 argmax vs the float one.

    python benchmarks/bench_int8.py [--config config/distill/bbc.yaml] [--batch 32] [--repeats 30] \
        [--agreement 256] [--threads 1 2]

The student is the config's (3 of the 6 MiniLM layers, init teacher_layers) built from the
pretrained encoder: latency and the int8-vs-float agreement do not need trained weights.
Writes benchmarks/results/perf/int8_torchao.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a plain script

import torch  # noqa: E402

from distiller.report import int8_backend, quantize_int8, state_size_mb  # noqa: E402
from distiller.student import build_student  # noqa: E402
from utils.config import load_config  # noqa: E402
from utils.model import build_classifier, freeze  # noqa: E402
from utils.runtime import load_data  # noqa: E402
from utils.training import Examples  # noqa: E402


@torch.no_grad()
def interleaved_ms(models: dict, batch: dict, repeats: int) -> dict:
    """name -> median ms of one forward of `batch`, the models timed in turn each repeat."""
    for m in models.values():
        m.eval()
        for _ in range(2):
            m(**batch)
    times = {name: [] for name in models}
    for _ in range(repeats):
        for name, m in models.items():
            start = time.perf_counter()
            m(**batch)
            times[name].append(1000 * (time.perf_counter() - start))
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="config/distill/bbc.yaml")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--agreement", type=int, default=256, help="test examples for the agreement")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    a = p.parse_args()
    cfg = load_config(a.config)
    data = load_data(cfg)
    teacher = freeze(build_classifier(cfg.network, data.dataset.nclass, pretrained=True))
    student = freeze(build_student(teacher, data.dataset.nclass, cfg.distill))
    models = {"float": student, "int8 torch.ao quantize_dynamic": quantize_int8(student, "torch.ao"),
              f"int8 {int8_backend('torchao')} Int8DynamicActivationInt8Weight":
                  quantize_int8(student, "torchao")}
    test = Examples.of(data.test)
    batch = test.inputs(torch.arange(a.batch), torch.device("cpu"))
    with torch.no_grad():
        idx = torch.arange(min(a.agreement, len(test)))
        big = test.inputs(idx, torch.device("cpu"))
        logits = {n: m(**big).logits for n, m in models.items()}
        ref = logits["float"]
        agree = {n: float((out.argmax(1) == ref.argmax(1)).float().mean()) for n, out in logits.items()}
        err = {n: float((out - ref).abs().max()) for n, out in logits.items()}
    rows = []
    for threads in a.threads:
        torch.set_num_threads(threads)
        ms = interleaved_ms(models, batch, a.repeats)
        for name in models:
            rows.append({"model": name, "threads": threads, "latency_ms": round(ms[name], 2),
                         "vs_float": round(ms[name] / ms["float"], 3),
                         "size_mb": round(state_size_mb(models[name]), 2),
                         "argmax_agreement_vs_float": round(agree[name], 4),
                         "max_abs_logit_diff_vs_float": round(err[name], 4)})
            print(rows[-1], flush=True)
    out = ROOT / "benchmarks" / "results" / "perf" / "int8_torchao.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "benchmark": "int8", "command": "python benchmarks/bench_int8.py " + " ".join(sys.argv[1:]),
        "config": a.config, "student": f"L{cfg.distill.student_layers} init {cfg.distill.init}",
        "batch": a.batch, "max_length": cfg.dataset.max_length, "repeats": a.repeats,
        "load_average_at_start": round(os.getloadavg()[0], 2),
        "agreement_examples": len(idx), "machine": platform.machine(), "cpus": os.cpu_count(),
        "torch": torch.__version__, "torchao": int8_backend("torchao"),
        "date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=2) + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    main()
