"""Evaluation cost: the default protocol (test split scored once per classifier) against the
earlier default (every 25 steps on the whole test split), on the same synthetic set, same seeds.

    python benchmarks/bench_eval_defaults.py --config config/ipc1/bbc.yaml --load_path SET.pth

Writes benchmarks/results/perf/eval_defaults_<config>.json: wall seconds of each evaluation, the mean
train and eval seconds per run, and the accuracies (which must be equal: evaluation draws no random
numbers).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a plain script

from benchmarks.bench_eval import ROOT, torchrun  # noqa: E402

SETTINGS = {"once_at_the_end": [],
            "every_25_steps": ["--set", "evaluate.eval_every=25", "--set", "evaluate.curve_rows=null"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="config/ipc1/bbc.yaml")
    p.add_argument("--load_path", required=True)
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    a = p.parse_args()
    tag = Path(a.config).parent.name + "-" + Path(a.config).stem
    out = {"benchmark": "eval_defaults", "config": a.config, "synthetic_set": a.load_path,
           "date": time.strftime("%Y-%m-%d"), "settings": {}}
    for name in a.settings:
        extra = SETTINGS[name]
        odir = ROOT / "results" / "bench" / "eval_defaults" / f"{tag}_{name}"
        start = time.time()
        torchrun(a.nproc, "evaluate_script_text.py",
                 ["--config_path", a.config, "--load_path", a.load_path, "--output_dir", str(odir),
                  "--set", f"evaluate.results_table={odir / 'results.md'}", *extra])
        wall = time.time() - start
        entry = json.loads((odir / "eval" / "results.json").read_text())[0]
        runs = entry["runs"]
        out["settings"][name] = {
            "overrides": extra, "wall_seconds": round(wall, 1),
            "train_seconds_per_run": round(sum(r["train_seconds"] for r in runs) / len(runs), 2),
            "eval_seconds_per_run": round(sum(r["eval_seconds"] for r in runs) / len(runs), 2),
            "accuracy_mean": entry["mean"], "accuracy_std": entry["std"],
            "accuracies": [r["accuracy"] for r in runs]}
        print(name, out["settings"][name], flush=True)
    path = ROOT / "benchmarks" / "results" / "perf" / f"eval_defaults_{tag}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"written {path}")


if __name__ == "__main__":
    main()
