"""Peak memory and time per iteration of trajectory matching as `syn_steps` grows, `full` vs `tesla`.

    python benchmarks/bench_unroll_memory.py [--config config/ipc1/trec.yaml] [--steps 1 5 10 20] \
        [--unroll full tesla] [--niter 3] [--set condense.key=value ...]

Each (unroll, syn_steps) pair runs the real condense script as one process (2 torch threads) for
`--niter` iterations into a fresh folder and reads its peak RSS and per-iteration time (the first
iteration, a warm-up, is left out of the mean). `full` differentiates through every student step,
so its memory should grow with `syn_steps`; `tesla` should stay flat. Writes
benchmarks/results/perf/unroll_memory_<dataset>_ipc<ipc>.json and prints a markdown table.
Experts must exist already (make experts or the expert stage of the config).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a plain script from a checkout

from benchmarks.bench_condense import run_once  # noqa: E402
from benchmarks.common import PERF, SMOKE, machine_info  # noqa: E402
from utils.config import load_config  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "config" / "ipc1" / "trec.yaml"))
    p.add_argument("--steps", type=int, nargs="+", default=None,
                   help="trajectory syn_steps to measure (default 1 5 10 20; --quick: 1 2)")
    p.add_argument("--unroll", nargs="+", default=["full", "tesla"], choices=["full", "tesla"])
    p.add_argument("--niter", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="config/smoke.yaml, 2 iterations")
    p.add_argument("--out", default=str(PERF))
    p.add_argument("--set", dest="extra", action="append", default=[],
                   help="extra --set overrides passed to the condense script")
    a = p.parse_args(argv)
    if a.quick:
        a.config, a.niter = SMOKE, 2
    a.steps = a.steps or ([1, 2] if a.quick else [1, 5, 10, 20])
    cfg = load_config(a.config)
    rows = []
    for unroll in a.unroll:
        for steps in a.steps:
            sets = ["condense.method=trajectory", "condense.objectives=[{name: trajectory, options: "
                    f"{{unroll: {unroll}, syn_steps: {steps}}}}}, {{name: calibration}}]", *a.extra]
            r = run_once(a.config, 1, a.niter, [x for s in sets for x in ("--set", s)])
            rows.append({"unroll": unroll, "syn_steps": steps, **r})
            print(f"{unroll} syn_steps={steps}: {r['mean_iteration_seconds']:.2f} s/it, "
                  f"peak RSS {r['peak_rss_mb_per_rank'][0]:.0f} MiB", flush=True)
    result = {"benchmark": "unroll_memory", "config": os.path.relpath(a.config, ROOT),
              "dataset": cfg.dataset.name, "ipc": cfg.condense.ipc, "model": cfg.network.model_path,
              "max_length": cfg.dataset.max_length, **machine_info(), "overrides": a.extra,
              "runs": rows}
    tag = f"unroll_memory_{cfg.dataset.name}_ipc{cfg.condense.ipc}{'_quick' if a.quick else ''}"
    out = Path(a.out) / f"{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("| unroll | syn_steps | s / iteration | peak RSS (MiB) |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['unroll']} | {r['syn_steps']} | {r['mean_iteration_seconds']:.2f} | "
              f"{r['peak_rss_mb_per_rank'][0]:.0f} |")
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
