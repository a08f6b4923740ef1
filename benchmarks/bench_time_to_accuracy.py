"""Time to accuracy: what a synthetic set is worth against the condensation seconds spent on it,
NCFM vs trajectory matching, measured on a validation slice of the training split.

    python benchmarks/bench_time_to_accuracy.py [--config config/ipc1/trec.yaml] \
        [--ncfm_eval_it 25 50 100 200] [--trajectory_eval_it 10 20 40 60] \
        [--trajectory_set "condense.objectives=[{name: trajectory, options: {syn_steps: 20}}]" ...] \
        [--num_eval 5] [--nproc 2] [--quick]

Each method runs the real condense script (`--nproc` ranks) for max(eval_it) iterations with
`condense.eval_it` at the listed iterations and `evaluate.select_by: val`: condensation never sees
the validation slice, and each point trains `--num_eval` fresh classifiers on the set of that
iteration (the evaluate protocol, same seeds for both methods). A point records the condensation
seconds spent up to it (the sum of the iteration times, evaluation excluded), the validation
accuracy (what a user may look at) and the test accuracy of the validation-chosen step (reported,
never used to choose). The summary gives, per method, the seconds to its best validation
accuracy, and the seconds each method needs to first reach the lower of the two methods' best
validation accuracies (the common target) with their ratio.

Writes benchmarks/results/perf/tta_<dataset>_ipc<ipc>[_quick].json (machine, threads, torch, commit,
date) and a plot beside it. `--quick`: config/smoke.yaml, 1 rank, points at iterations 1 and 2,
1 classifier of 20 steps per point (the test suite runs it).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import List, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a plain script from a checkout

from benchmarks.common import PERF, SMOKE, machine_info, run_script  # noqa: E402
from utils.config import load_config, parse_set  # noqa: E402


def run_method(config: str, method: str, eval_it: List[int], num_eval: int, nproc: int,
               extra: List[str], out: Path) -> dict:
    """Condense with `method`, evaluating at `eval_it`; the points of its accuracy-vs-seconds curve."""
    shutil.rmtree(out, ignore_errors=True)         # a fresh run: the seconds must be this run's
    steps = load_config(config, [parse_set(x) for x in extra]).evaluate.steps
    sets = {"condense.method": method, "condense.niter": max(eval_it),
            "condense.eval_it": "[" + ",".join(map(str, sorted(eval_it))) + "]",
            "condense.save_every": max(eval_it), "evaluate.select_by": "val",
            "evaluate.eval_every": max(1, steps // 4), "evaluate.num_eval": num_eval}
    args = ["--config_path", config, "--output_dir", str(out)]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    args += [x for s in extra for x in ("--set", s)]
    run_script("condense_script_text.py", nproc, args)
    curve = json.loads((out / "eval_curve.json").read_text())
    history = json.loads((out / "loss_history.json").read_text())
    points = [{"iteration": c["iteration"], "condense_seconds": c["condense_seconds"],
               "val_accuracy": c["val_accuracy_mean"], "test_accuracy": c["accuracy_mean"],
               "test_accuracy_std": c["accuracy_std"], "eval_seconds": c["seconds"]} for c in curve]
    secs = [h["seconds"] for h in history][1:] or [history[0]["seconds"]]
    return {"method": method, "overrides": extra, "eval_it": sorted(eval_it),
            "s_per_iter": round(sum(secs) / len(secs), 3), "points": points}


def first_reaching(points: List[dict], target: float) -> Optional[float]:
    """Condensation seconds at the first point whose validation accuracy reaches `target`."""
    return next((p["condense_seconds"] for p in points if p["val_accuracy"] >= target - 1e-12), None)


def summarize(runs: dict) -> dict:
    """Per method: best validation point and its seconds; both methods: seconds to the common
    target (the lower of the two best validation accuracies) and their ratio."""
    out: dict = {}
    for name, run in runs.items():
        best = max(run["points"], key=lambda p: (p["val_accuracy"], -p["iteration"]))
        out[name] = {"best_val_accuracy": best["val_accuracy"], "best_iteration": best["iteration"],
                     "seconds_to_best": best["condense_seconds"],
                     "test_accuracy_at_best": best["test_accuracy"],
                     "test_accuracy_std_at_best": best["test_accuracy_std"]}
    if len(runs) == 2:
        target = min(v["best_val_accuracy"] for v in out.values())
        secs = {name: first_reaching(run["points"], target) for name, run in runs.items()}
        a, b = (secs[k] for k in runs)
        out["common_target"] = {"val_accuracy": target, "seconds": secs,
                                "ratio": round(b / a, 2) if a and b else None}
    return out


def plot(runs: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for name, run in runs.items():
        xs = [p["condense_seconds"] for p in run["points"]]
        axes[0].plot(xs, [100 * p["val_accuracy"] for p in run["points"]], marker="o", label=name)
        axes[1].errorbar(xs, [100 * p["test_accuracy"] for p in run["points"]],
                         yerr=[100 * p["test_accuracy_std"] for p in run["points"]], marker="o",
                         capsize=3, label=name)
    for ax, title in zip(axes, ("validation accuracy (%)", "test accuracy of the val-chosen step (%)")):
        ax.set_xlabel("condensation seconds")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "config" / "ipc1" / "trec.yaml"))
    p.add_argument("--ncfm_eval_it", type=int, nargs="+", default=[25, 50, 100, 200],
                   help="NCFM iterations at which the set is evaluated (the last ends the run)")
    p.add_argument("--trajectory_eval_it", type=int, nargs="+", default=[10, 20, 40, 60],
                   help="trajectory-matching iterations at which the set is evaluated")
    p.add_argument("--trajectory_set", action="append", default=None,
                   help="overrides of the trajectory run (default: 20 tesla student steps, the "
                        "best measured ipc-1 setting)")
    p.add_argument("--set", dest="extra", action="append", default=[],
                   help="overrides of both runs (section.key=value)")
    p.add_argument("--num_eval", type=int, default=5, help="classifiers per point")
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--quick", action="store_true",
                   help="config/smoke.yaml, 1 rank, points at iterations 1 and 2, 1 classifier "
                        "of 20 steps")
    p.add_argument("--out", default=str(PERF))
    p.add_argument("--work", default=str(ROOT / "results" / "bench"),
                   help="where the two condensation runs write their folders")
    a = p.parse_args(argv)
    traj_set = a.trajectory_set if a.trajectory_set is not None else [
        "condense.objectives=[{name: trajectory, options: {syn_steps: 20, unroll: tesla}}, "
        "{name: calibration}]"]
    if a.quick:
        a.config, a.nproc, a.num_eval = SMOKE, 1, 1
        a.extra = ["evaluate.steps=20", *a.extra]          # a point's classifier: 20 steps
        a.ncfm_eval_it = a.trajectory_eval_it = [1, 2]
        traj_set = ["condense.objectives=[{name: trajectory, options: {syn_steps: 2}}, "
                    "{name: calibration}]"]
    cfg = load_config(a.config)
    tag = f"tta_{cfg.dataset.name}_ipc{cfg.condense.ipc}{'_quick' if a.quick else ''}"
    work = Path(a.work) / tag
    runs = {"ncfm": run_method(a.config, "ncfm", a.ncfm_eval_it, a.num_eval, a.nproc, a.extra,
                               work / "ncfm"),
            "trajectory": run_method(a.config, "trajectory", a.trajectory_eval_it, a.num_eval,
                                     a.nproc, [*a.extra, *traj_set], work / "trajectory")}
    result = {"benchmark": "time_to_accuracy", "config": os.path.relpath(a.config, ROOT),
              "dataset": cfg.dataset.name, "ipc": cfg.condense.ipc, "nproc": a.nproc,
              "num_eval": a.num_eval, "runs": runs, "summary": summarize(runs),
              **machine_info()}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{tag}.json").write_text(json.dumps(result, indent=2) + "\n")
    with contextlib.suppress(Exception):   # a figure is not worth a failure
        plot(runs, out / f"{tag}.png")
    print(json.dumps(result["summary"], indent=1))
    print(f"written {out / (tag + '.json')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
