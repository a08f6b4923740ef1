"""A user's whole run, stage by stage: experts, condensation, evaluation, before and after each lever.

    python benchmarks/bench_pipeline.py --datasets trec bbc --ipc 10 [--variants before after epochs1]
        [--num_eval 5] [--nproc 2] [--quick]

For each dataset and each variant, the real entry scripts run one after another in a fresh folder
(its own experts, so expert training is timed too): `pretrain_script_text.py` (experts),
`condense_script_text.py` (the set), `evaluate_script_text.py` (the set beside the random and
herding subsets of the same size, `--num_eval` classifiers each). Recorded per stage: wall
seconds, CPU seconds of all its processes (what other jobs on a shared machine do not inflate),
the load average at its end, and the peak resident memory of any process so far (the stages'
processes are this script's children, so it is their high-water mark). Then each variant's total
and stage times as ratios to the first variant's (wall and CPU), measured side by side in one run
on the same machine, and the accuracies, so "faster" is only read at equal accuracy.

Variants (`--variants`, the first is the reference):
- before: every batch padded to `max_length` (`dataset.pad_to_max_length=true`: the seed's way)
- after: the shipped defaults (dynamic padding: batches cut to their longest row)
- epochs1: the shipped defaults with 1-epoch experts (`pretrain.epochs=1`)
- grouped: the shipped defaults with length-grouped expert batches (`pretrain.group_by_length`)
- bf16: the shipped defaults with every stage under bfloat16 autocast (`pretrain.precision`,
  `condense.precision`, `evaluate.precision` = bf16: fast on CPUs with AMX/avx512_bf16 and
  CUDA GPUs, slower where bf16 is emulated; the machine's CPU flags are in the JSON)
- fp32: the shipped defaults with experts and evaluation classifiers in fp32 (the defaults until
  `precision: auto` shipped for them)

`--quick` runs the smoke config (tiny random BERT, one rank, a few iterations) in seconds: the
tested path. Writes benchmarks/results/perf/pipeline_<dataset>_ipc<ipc>[_quick].json.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a plain script from a checkout

from benchmarks.common import PERF, SMOKE, machine_info, offline_env, script_command  # noqa: E402
from utils.experts import MANIFEST  # noqa: E402

VARIANTS = {
    "before": ["--set", "dataset.pad_to_max_length=true"],
    "after": [],
    "epochs1": ["--set", "pretrain.epochs=1"],
    "grouped": ["--set", "pretrain.group_by_length=true"],
    "bf16": ["--set", "pretrain.precision=bf16", "--set", "condense.precision=bf16",
             "--set", "evaluate.precision=bf16"],
    "fp32": ["--set", "pretrain.precision=fp32", "--set", "evaluate.precision=fp32"],
}
BASELINES = ["random", "herding"]


def peak_rss_mb() -> float:
    """The high-water resident memory of the stages so far (MiB): this process's (one rank runs
    the stages here) or its finished child processes' (torchrun's ranks), whichever is larger."""
    most = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
               resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return round(most / 1024, 1)


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children so far."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed(script: str, nproc: int, args: List[str], log: Path) -> dict:
    """Run entry script `script`: its wall seconds, CPU seconds (all its processes: the figure
    that other jobs on a shared machine do not inflate) and the 1-minute load average at its end.
    One rank: its `main(argv)` in this process (no interpreter start-up in the figure); more:
    under torchrun, output to `log`. Raises when it fails."""
    cmd = script_command(script, nproc, args)
    print("+", " ".join(cmd[1:]), flush=True)
    start, cpu0 = time.time(), cpu_seconds()
    if nproc == 1:
        spec = importlib.util.spec_from_file_location(script.removesuffix(".py"), ROOT / "condense" / script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        code = module.main(args)
        if code not in (0, None):
            raise SystemExit(f"{script} failed (exit {code})")
    else:
        with log.open("w") as fh:
            proc = subprocess.run(cmd, env=offline_env(), stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
        if proc.returncode != 0:
            raise SystemExit(f"{script} failed (exit {proc.returncode}); its log: {log}")
    return {"wall": round(time.time() - start, 1), "cpu": round(cpu_seconds() - cpu0, 1),
            "load": round(os.getloadavg()[0], 2)}


def run_variant(config: str, variant: str, work: Path, nproc: int, num_eval: int,
                extra: List[str]) -> dict:
    """Experts, condensation and evaluation of one variant in `work`; times, memory, accuracies."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    common = ["--config_path", config, "--set", f"pretrain.expert_dir={work / 'experts'}",
              "--set", f"dataset.cache_dir={work / 'tokenized'}", *VARIANTS[variant], *extra]
    runs, peaks = {}, {}
    runs["experts"] = timed("pretrain_script_text.py", nproc, common, work / "experts.log")
    peaks["experts"] = peak_rss_mb()
    cdir = work / "condense"
    runs["condense"] = timed("condense_script_text.py", nproc,
                             [*common, "--output_dir", str(cdir)], work / "condense.log")
    peaks["condense"] = peak_rss_mb()
    summary = json.loads((cdir / "run_summary.json").read_text())
    edir = work / "evaluate"
    runs["evaluate"] = timed("evaluate_script_text.py", nproc,
                             [*common, "--load_path", summary["synthetic_set"],
                              "--baseline", ",".join(BASELINES), "--output_dir", str(edir),
                              "--set", f"evaluate.num_eval={num_eval}",
                              "--set", f"evaluate.results_table={edir / 'results.md'}"],
                             work / "evaluate.log")
    peaks["evaluate"] = peak_rss_mb()
    stages = {k: r["wall"] for k, r in runs.items()}
    cpu = {k: r["cpu"] for k, r in runs.items()}
    accuracy = {}
    for e in json.loads((edir / "eval" / "results.json").read_text()):
        name = e["method"] if e["method"] in BASELINES else "synthetic"
        accuracy[name] = {"mean": e["mean"], "std": e["std"], "runs": [r["accuracy"] for r in e["runs"]]}
    expert_acc = [json.loads(m.read_text())["history"][-1]["accuracy"]       # each expert's last epoch
                  for m in sorted((work / "experts").rglob(MANIFEST))]
    return {"overrides": VARIANTS[variant] + extra, "stage_seconds": stages,
            "total_seconds": round(sum(stages.values()), 1), "stage_cpu_seconds": cpu,
            "total_cpu_seconds": round(sum(cpu.values()), 1),
            "load_average_after_stage": {k: r["load"] for k, r in runs.items()},
            "peak_rss_mb_so_far": peaks,
            "condense_iterations": summary["final_iteration"],
            "mean_iteration_seconds": summary["mean_iteration_seconds"],
            "expert_test_accuracy": expert_acc, "accuracy": accuracy}


def compare(variants: dict, reference: str) -> dict:
    """Each variant against the reference: time ratios (reference / variant: >1 is faster) and
    whether every method's mean accuracy is within one std (the larger of the two) of the
    reference's."""
    ref = variants[reference]
    out = {}
    for name, v in variants.items():
        if name == reference:
            continue
        speed = {s: round(ref["stage_seconds"][s] / max(v["stage_seconds"][s], 1e-9), 3)
                 for s in ref["stage_seconds"]}
        speed["total"] = round(ref["total_seconds"] / max(v["total_seconds"], 1e-9), 3)
        cpu_speed = None
        if "total_cpu_seconds" in ref and "total_cpu_seconds" in v:
            cpu_speed = round(ref["total_cpu_seconds"] / max(v["total_cpu_seconds"], 1e-9), 3)
        equal = {}
        for m, acc in ref["accuracy"].items():
            mine = v["accuracy"].get(m)
            if mine is not None:
                equal[m] = abs(mine["mean"] - acc["mean"]) <= max(mine["std"], acc["std"])
        out[name] = {"speedup": speed, "cpu_speedup": cpu_speed, "accuracy_delta_pp": {
            m: round(100 * (v["accuracy"][m]["mean"] - a["mean"]), 2)
            for m, a in ref["accuracy"].items() if m in v["accuracy"]},
            "within_one_std": equal, "equal_accuracy": all(equal.values())}
    return out


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["trec", "bbc"],
                   help="shipped dataset configs (config/ipc<ipc>/<name>.yaml), one run each")
    p.add_argument("--ipc", type=int, default=10, help="synthetic sequences per class")
    p.add_argument("--variants", nargs="+", default=["before", "after"], choices=list(VARIANTS),
                   help="the runs to compare, side by side; the first is the reference of the "
                        "ratios (see the list above)")
    p.add_argument("--num_eval", type=int, default=5,
                   help="classifiers trained per method (the set, random, herding)")
    p.add_argument("--nproc", type=int, default=2, help="torchrun processes per stage")
    p.add_argument("--set", dest="extra", action="append", default=[],
                   help="key=value for every stage of every variant")
    p.add_argument("--quick", action="store_true", help="the smoke config, one rank, seconds")
    p.add_argument("--work", type=Path, default=ROOT / "results" / "bench" / "pipeline",
                   help="where the runs go (each variant's folder is made afresh)")
    p.add_argument("--out", type=Path, default=PERF, help="folder of the JSON")
    a = p.parse_args(argv)
    extra = [x for s in a.extra for x in ("--set", s)]
    if a.quick:
        a.datasets, a.nproc, a.num_eval = ["bbc"], 1, 1
        extra += ["--set", "condense.niter=2", "--set", "evaluate.steps=4", "--set", "pretrain.epochs=1"]
    a.out.mkdir(parents=True, exist_ok=True)
    for dataset in a.datasets:
        config = SMOKE if a.quick else str(ROOT / "config" / f"ipc{a.ipc}" / f"{dataset}.yaml")
        ipc = 2 if a.quick else a.ipc
        name = f"pipeline_{dataset}_ipc{ipc}{'_quick' if a.quick else ''}.json"
        result = {"benchmark": "pipeline", "dataset": dataset, "ipc": ipc, "config": config,
                  "nproc": a.nproc, "num_eval": a.num_eval, "baselines": BASELINES,
                  "reference": a.variants[0], "variants": {},
                  "command": "python benchmarks/bench_pipeline.py " + " ".join(argv or sys.argv[1:]),
                  **machine_info()}
        for variant in a.variants:
            print(f"== {dataset} ipc {ipc}: {variant}", flush=True)
            result["variants"][variant] = run_variant(config, variant, a.work / f"{dataset}_{variant}",
                                                      a.nproc, a.num_eval, extra)
            result["comparison"] = compare(result["variants"], a.variants[0])
            (a.out / name).write_text(json.dumps(result, indent=2) + "\n")   # after every variant
            v = result["variants"][variant]
            print(f"   {variant}: {v['stage_seconds']} total {v['total_seconds']} s; accuracy "
                  + ", ".join(f"{m} {100 * x['mean']:.2f}" for m, x in v["accuracy"].items()), flush=True)
        print(f"written {a.out / name}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
