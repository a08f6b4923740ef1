"""Time per iteration and peak memory per rank of NCFM condensation, for 1 and 2 ranks.

    python benchmarks/bench_condense.py [--config config/ipc10/bbc.yaml] [--niter 10] [--nprocs 1 2] \
        [--method ncfm trajectory] [--quick]

Each (method, world size) runs the real condense script (1 rank: plain python with 2 torch
threads; N ranks: torchrun, 1 thread each: the same cores split two ways) into a fresh folder,
reads its run_summary.json, and writes benchmarks/results/perf/condense_<dataset>_ipc<ipc>[_quick].json
(machine, threads, torch, git commit, date) plus a markdown table on stdout. With two methods it
adds the trajectory/NCFM time and memory ratios. Experts must exist already (make experts), so
expert training is not timed here. `--quick`: config/smoke.yaml, 3 iterations.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a plain script from a checkout

from benchmarks.common import PERF, SMOKE, machine_info, offline_env, script_command  # noqa: E402
from utils.config import load_config  # noqa: E402


def run_once(config: str, nproc: int, niter: int, extra: list[str],
             work: Optional[Path] = None) -> dict:
    """One condensation run, timed; its folder is kept under `work` (else a temporary folder,
    removed after its figures are read)."""
    if work is not None:
        work.mkdir(parents=True, exist_ok=True)
        return _run_in(Path(tempfile.mkdtemp(prefix=f"condense_{nproc}_", dir=work)), config,
                       nproc, niter, extra, keep=True)
    with tempfile.TemporaryDirectory(prefix=f"bench_condense_{nproc}_") as tmp:
        return _run_in(Path(tmp), config, nproc, niter, extra, keep=False)


def _run_in(out: Path, config: str, nproc: int, niter: int, extra: list[str], keep: bool) -> dict:
    args = ["--config_path", config, "--output_dir", str(out), "--set", f"condense.niter={niter}",
            "--set", f"condense.save_every={niter}", "--set", "condense.log_every=1", *extra]
    cmd = script_command("condense_script_text.py", nproc, args)
    env = offline_env()
    start = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"run failed:\n{proc.stderr[-3000:]}")
    summary = json.loads((out / "run_summary.json").read_text())
    history = json.loads((out / "loss_history.json").read_text())
    secs = [h["seconds"] for h in history]
    steady = secs[1:] if len(secs) > 1 else secs          # the first iteration warms up
    return {"nproc": nproc, "iterations": niter, "process_wall_seconds": round(time.time() - start, 1),
            "mean_iteration_seconds": round(sum(steady) / len(steady), 3),
            "first_iteration_seconds": secs[0],
            "peak_rss_mb_per_rank": [r["peak_rss_mb"] for r in summary["ranks"]],
            "classes_per_rank": [r["classes"] for r in summary["ranks"]],
            "match_loss_first_last": [history[0].get("match_loss"), history[-1].get("match_loss")],
            "output_dir": str(out) if keep else None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "config" / "ipc10" / "bbc.yaml"))
    p.add_argument("--niter", type=int, default=10)
    p.add_argument("--nprocs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--method", nargs="+", default=["ncfm"], choices=["ncfm", "trajectory"])
    p.add_argument("--quick", action="store_true", help="config/smoke.yaml, 3 iterations")
    p.add_argument("--work", type=Path, default=None,
                   help="Keep each run's folder under this directory (default: temporary folders, "
                        "removed once measured).")
    p.add_argument("--out", default=str(PERF))
    p.add_argument("--set", dest="extra", action="append", default=[],
                   help="extra --set overrides passed to the condense script")
    a = p.parse_args(argv)
    if a.quick:
        a.config, a.niter = SMOKE, 3
    cfg = load_config(a.config)
    rows = []
    for method in a.method:
        sets = [f"condense.method={method}", *a.extra]
        extra = [x for s in sets for x in ("--set", s)]
        rows += [{"method": method, **run_once(a.config, n, a.niter, extra, a.work)}
                 for n in a.nprocs]
    result = {"benchmark": "condense", "config": os.path.relpath(a.config, ROOT),
              "dataset": cfg.dataset.name, "ipc": cfg.condense.ipc, "model": cfg.network.model_path,
              "max_length": cfg.dataset.max_length, "batch_real": cfg.dataset.batch_real,
              **machine_info(), "overrides": a.extra, "runs": rows}
    if len(a.method) == 2:
        by = {(r["method"], r["nproc"]): r for r in rows}
        result["trajectory_over_ncfm"] = {
            n: {"time": round(by["trajectory", n]["mean_iteration_seconds"]
                              / by["ncfm", n]["mean_iteration_seconds"], 2),
                "memory": round(max(by["trajectory", n]["peak_rss_mb_per_rank"])
                                / max(by["ncfm", n]["peak_rss_mb_per_rank"]), 2)}
            for n in a.nprocs}
    tag = f"condense_{cfg.dataset.name}_ipc{cfg.condense.ipc}{'_quick' if a.quick else ''}"
    out = Path(a.out) / f"{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("| method | ranks | s / iteration | peak RSS per rank (MiB) | match loss first -> last |")
    print("|---|---|---|---|---|")
    for r in rows:
        first, last = r["match_loss_first_last"]
        print(f"| {r['method']} | {r['nproc']} | {r['mean_iteration_seconds']:.2f} | "
              f"{', '.join(f'{m:.0f}' for m in r['peak_rss_mb_per_rank'])} | "
              f"{first if first is None else round(first, 2)} -> "
              f"{last if last is None else round(last, 2)} |")
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
