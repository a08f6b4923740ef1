"""Where an NCFM iteration's time goes, how close it runs to the machine's matmul ceiling, how its
cost scales, and what each lever (real-feature cache, bf16) buys.

    python benchmarks/bench_ncfm.py [--config config/ipc10/bbc.yaml] [--iters 8] [--warmup 2] \
        [--threads 2] [--quick]

One process (`--threads` torch threads; on a CUDA machine the first GPU), the real condenser
built in-process from the config (experts must exist; `make experts` or any condense run trains
them), random init. Measured, each on the same process and threads:

- profile: `torch.profiler` time per phase of `--iters` iterations (real features, synthetic
  forward, synthetic backward, calibration, optimiser, collectives, the rest);
- FLOPs of one iteration (`torch.utils.flop_counter.FlopCounterMode`) and the achieved FLOP/s
  against the fp32 and bf16 matmul ceilings measured here (square GEMMs of the encoder's sizes);
- levers: s/iteration with fp32, `real_cache` (lam grid 8; the time falls as the cache fills, so
  its variants run `--cache_iters` iterations and the mean over the last half is reported too),
  `precision` bf16_real and bf16, the cache with bf16_real, `calib_every` 4, and `fast` (all of
  them: cache with lam grid 4, bf16, calib_every 4), each with the final match loss;
- scaling: s/iteration as ipc, max_length, batch_real and num_freqs change one at a time;
- NCFM vs trajectory matching (the config's syn_steps, tesla unroll): s/iteration and the ratio
  (peak memory per setting needs a process each: benchmarks/bench_condense.py).

`--quick` runs config/smoke.yaml (a tiny random BERT, seconds) with 2 iterations: the test suite
runs it. Writes benchmarks/results/perf/ncfm_<dataset>_ipc<ipc>[_quick].json (with machine, threads,
torch version, git commit, date) and a scaling plot beside it.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a plain script from a checkout

import torch  # noqa: E402

from benchmarks.common import PERF, SMOKE, machine_info  # noqa: E402
from condenser.condenser import Condenser  # noqa: E402
from condenser.expert_pool import ExpertPool  # noqa: E402
from utils.config import load_config, parse_set  # noqa: E402
from utils.distributed import DistEnv  # noqa: E402
from utils.experts import ensure_experts  # noqa: E402
from utils.runtime import load_data  # noqa: E402

PHASES = ("ncfm.real_features", "ncfm.synthetic_forward", "ncfm.synthetic_backward",
          "term.calib_loss", "optimizer", "collectives")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def matmul_ceiling(device: torch.device, dtype: torch.dtype, n: int, repeats: int) -> float:
    """Achieved FLOP/s of an n x n x n GEMM (best of `repeats`)."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    best = float("inf")
    for _ in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best


class Bench:
    """A condenser built from (config, overrides), stepped in-process. The experts are always
    those of the config without overrides: a timing does not depend on their weights, and a
    `dataset.max_length` override would otherwise train a new set (the length shapes experts)."""

    def __init__(self, config: str, overrides: List[tuple], env: DistEnv, base: List[tuple] = ()):
        self.cfg = load_config(config, overrides)
        self.env = env
        self.data = load_data(self.cfg)
        expert_cfg = load_config(config, list(base))
        same_data = expert_cfg.dataset == self.cfg.dataset      # else tokenised at its own length
        ensure_experts(expert_cfg, env, self.data if same_data else load_data(expert_cfg))
        nclass = self.data.dataset.nclass
        self.pool = ExpertPool(expert_cfg, nclass, env.device)
        self.condenser = Condenser(self.cfg, env, self.data.train, self.pool, list(range(nclass)))
        ctx = self.condenser.init_context(self.data.tokenizer, nclass, self.data.dataset.multilabel)
        self.condenser.initialize("random", ctx)

    def run(self, iters: int) -> List[dict]:
        return [self.condenser.step() for _ in range(iters)]


def seconds(records: List[dict]) -> float:
    return sum(r["seconds"] for r in records) / len(records)


def profile(b: Bench, iters: int) -> Dict[str, float]:
    """ms per iteration of each phase (profiler's CPU time of the labelled ranges)."""
    acts = [torch.profiler.ProfilerActivity.CPU]
    if b.env.device.type == "cuda":
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    start = time.perf_counter()
    with torch.profiler.profile(activities=acts) as prof:
        b.run(iters)
    wall = (time.perf_counter() - start) / iters * 1000
    totals = {e.key: e.cpu_time_total / 1000 / iters for e in prof.key_averages() if e.key in PHASES}
    out = {p: round(totals.get(p, 0.0), 2) for p in PHASES}
    out["other"] = round(max(0.0, wall - sum(out.values())), 2)
    out["total"] = round(wall, 2)
    return out


def count_flops(b: Bench) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        b.run(1)
    return int(counter.get_total_flops())


def terms(real_cache: bool = False, every: int = 1, **fm) -> tuple:
    """condense.objectives of a measurement: feature matching (real_cache and `fm` options) and
    calibration every `every` iterations."""
    return ("condense.objectives", [{"name": "feature_match", "options": {"real_cache": real_cache, **fm}},
                                    {"name": "calibration", "options": {"every": every}}])


# the plain iteration every lever is measured against (the shipped ipc-10 configs turn levers on)
PLAIN = [terms(), ("condense.lam_grid", 0), ("condense.precision", "fp32")]
# every lever at once (docs/results.md: its accuracy is measured by a whole run)
FAST = [terms(real_cache=True, every=4), ("condense.lam_grid", 4), ("condense.precision", "bf16")]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "config" / "ipc10" / "bbc.yaml"))
    p.add_argument("--iters", type=int, default=8, help="timed iterations per measurement")
    p.add_argument("--warmup", type=int, default=2, help="untimed iterations before each")
    p.add_argument("--cache_iters", type=int, default=40,
                   help="timed iterations of the real_cache levers (the cache fills over a run)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="config/smoke.yaml, 2 iterations")
    p.add_argument("--out", default=str(PERF))
    p.add_argument("--set", dest="extra", action="append", default=[],
                   help="overrides for every measurement (section.key=value)")
    a = p.parse_args(argv)
    if a.quick:
        a.config, a.iters, a.warmup = SMOKE, 2, 1
    torch.set_num_threads(a.threads)
    env = DistEnv(device=torch.device("cuda:0" if torch.cuda.is_available() else "cpu"))
    base = PLAIN + [parse_set(s) for s in a.extra]
    cfg = load_config(a.config, base)
    result: dict = {"benchmark": "ncfm", "config": os.path.relpath(a.config, ROOT),
                    "dataset": cfg.dataset.name, "ipc": cfg.condense.ipc, "iters": a.iters,
                    "warmup": a.warmup, "device": str(env.device), **machine_info(a.threads)}

    def measure(overrides: List[tuple], iters: int = a.iters) -> dict:
        b = Bench(a.config, base + overrides, env, base)
        b.run(a.warmup)
        recs = b.run(iters)
        half = recs[len(recs) // 2:]
        return {"s_per_iter": round(seconds(recs), 4), "s_per_iter_last_half": round(seconds(half), 4),
                "match_loss_last": recs[-1].get("match_loss")}

    # profile and FLOPs of the plain iteration
    b = Bench(a.config, base, env, base)
    b.run(a.warmup)
    result["profile_ms"] = profile(b, a.iters)
    flops = count_flops(b)
    mean_s = result["profile_ms"]["total"] / 1000
    n = 256 if a.quick else 1536
    ceil32 = matmul_ceiling(env.device, torch.float32, n, 3)
    ceil16 = matmul_ceiling(env.device, torch.bfloat16, n, 3)
    result["flops"] = {"per_iteration": flops, "achieved_gflops": round(flops / mean_s / 1e9, 2),
                       "fp32_ceiling_gflops": round(ceil32 / 1e9, 2),
                       "bf16_ceiling_gflops": round(ceil16 / 1e9, 2), "gemm_n": n,
                       "fraction_of_fp32_ceiling": round(flops / mean_s / ceil32, 4)}
    del b
    print(json.dumps({"profile_ms": result["profile_ms"], "flops": result["flops"]}, indent=1),
          flush=True)

    levers = {"fp32": [],
              "real_cache": [terms(real_cache=True), ("condense.lam_grid", 8)],
              "lam_grid_only": [("condense.lam_grid", 8)],
              "bf16_real": [("condense.precision", "bf16_real")],
              "bf16": [("condense.precision", "bf16")],
              "real_cache+bf16_real": [terms(real_cache=True), ("condense.lam_grid", 8),
                                       ("condense.precision", "bf16_real")],
              "calib_every_4": [terms(every=4)],
              "fast": FAST}
    if a.quick:
        levers = {k: levers[k] for k in ("fp32", "real_cache", "bf16", "fast")}
    result["levers"] = {}
    for name, ov in levers.items():
        # the cache pays off as it fills: its variants run `--cache_iters` iterations
        long = ("real_cache" in name or name == "fast") and not a.quick
        result["levers"][name] = measure(ov, a.cache_iters if long else a.iters)
        print(name, result["levers"][name], flush=True)

    scaling = {"ipc": [1, 10, 50], "dataset.max_length": [32, 64, 128],
               "dataset.batch_real": [32, 64, 128], "condense.num_freqs": [128, 512, 2048]}
    if a.quick:
        scaling = {"ipc": [1, 2], "condense.num_freqs": [32, 64]}
    result["scaling"] = {}
    for key, values in scaling.items():
        rows = []
        for v in values:
            k = "condense.ipc" if key == "ipc" else key
            ov = [terms(num_freqs=v)] if k == "condense.num_freqs" else [(k, v)]   # an FM option
            rows.append({"value": v, **measure(ov, max(2, a.iters // 2))})
            print(key, rows[-1], flush=True)
        result["scaling"][key] = rows

    traj = measure([("condense.method", "trajectory")],                  # unroll tesla: the default
                   max(2, a.iters // 2))
    ncfm = result["levers"]["fp32"]
    result["ncfm_vs_trajectory"] = {"ncfm": ncfm, "trajectory": traj,
                                    "time_ratio": round(traj["s_per_iter"] / ncfm["s_per_iter"], 2)}
    result["peak_rss_mb_process"] = round(peak_rss_mb())
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = f"ncfm_{result['dataset']}_ipc{result['ipc']}{'_quick' if a.quick else ''}"
    (out / f"{tag}.json").write_text(json.dumps(result, indent=2) + "\n")
    with contextlib.suppress(Exception):   # a figure is not worth a failure
        plot_scaling(result["scaling"], out / f"{tag}_scaling.png")
    print(f"written {out / (tag + '.json')}", flush=True)
    return 0


def plot_scaling(scaling: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(scaling), figsize=(3.2 * len(scaling), 3))
    for ax, (key, rows) in zip(list(getattr(axes, "flat", [axes])), scaling.items()):
        ax.plot([r["value"] for r in rows], [r["s_per_iter"] for r in rows], marker="o")
        ax.set_xlabel(key.split(".")[-1])
        ax.set_ylabel("s / iteration")
        ax.set_xscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
