"""CPU latency of a teacher and its distilled students, measured alone (nothing else running is
the caller's job): median forward time of one test batch, for 1 and 2 threads, float and int8.

    python benchmarks/bench_latency.py --config config/distill/bbc.yaml \
        --students results/bench/distill/bbc_real_kd/student [more student folders]

Writes benchmarks/results/perf/latency_<config>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a plain script

import torch  # noqa: E402

from distiller.report import latency_ms, quantize_int8, state_size_mb  # noqa: E402
from distiller.student import count_parameters, load_hf_classifier  # noqa: E402
from utils.config import load_config  # noqa: E402
from utils.experts import load_expert_weights  # noqa: E402
from utils.model import build_classifier, freeze  # noqa: E402
from utils.runtime import load_data  # noqa: E402
from utils.training import Examples  # noqa: E402


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="config/distill/bbc.yaml")
    p.add_argument("--students", nargs="+", required=True)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=20)
    a = p.parse_args()
    cfg = load_config(a.config)
    data = load_data(cfg)
    teacher = build_classifier(cfg.network, data.dataset.nclass, pretrained=False)
    teacher.load_state_dict(load_expert_weights(cfg, cfg.distill.teacher_expert, cfg.pretrain.epochs))
    models = {"teacher": (freeze(teacher), sum(p.numel() for p in teacher.parameters()))}
    for folder in a.students:
        student = freeze(load_hf_classifier(folder))
        models[folder] = (student, count_parameters(student))
        models[folder + " (int8)"] = (quantize_int8(student), count_parameters(student))
    batch = Examples.of(data.test).inputs(torch.arange(a.batch), torch.device("cpu"))
    rows = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for name, (model, params) in models.items():
            ms = latency_ms(model, batch, a.repeats)
            rows.append({"model": name, "threads": threads, "latency_ms": round(ms, 2),
                         "params": params, "size_mb": round(state_size_mb(model), 2)})
            print(rows[-1], flush=True)
    out = ROOT / "benchmarks" / "results" / "perf" / f"latency_{Path(a.config).stem}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "latency", "config": a.config, "batch": a.batch,
                               "max_length": cfg.dataset.max_length, "repeats": a.repeats,
                               "machine": platform.machine(), "cpus": os.cpu_count(),
                               "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
                               "rows": rows}, indent=2) + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    main()
