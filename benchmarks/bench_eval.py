"""What a condensed set is worth: the whole pipeline, then the evaluation table.

    python benchmarks/bench_eval.py --dataset bbc --ipc 1 10 [--niter 200] [--method ncfm] \
        [--num_eval 5] [--nproc 2] [--no-full] [--baselines random,herding,kcenter|none] \
        [--suffix _name] [--set condense.key=value ...] [--label_modes hard expert_soft] \
        [--eval_set evaluate.key=value ...] [--baseline_modes expert_soft] [--full_modes ...] \
        [--all_set network.pooling=mean ...] [--keep best] [--no-set] [--config my_data.yaml]

For each ipc: experts (skipped when complete), condensation with `--niter` iterations, then
evaluation of the synthetic set beside random / herding / k-center real subsets (and, for the
first ipc, the full data; `full` does not depend on ipc), every method with the same protocol and
`--num_eval` runs, once per `--label_modes` entry (hard labels; expert_soft: every method, the
synthetic set included, trains on the feature expert's soft labels). Each stage is the real
entry script (torchrun for more than one rank). Results:
benchmarks/results/eval/<dataset>_<method>_ipc<ipc>.json (the evaluations' results.json plus
the condensation's timing and, with `condense.eval_it`, its accuracy-vs-iteration curve, drawn to
eval/<...>.png) and the rows of benchmarks/results/eval/table.md. `--no-set` skips the
condensation and evaluates the baselines alone (benchmarks/results/eval/<dataset>_baselines_ipc<ipc>.json),
with the same seeds, so a baseline added later joins the verdicts of the sets measured before.
`--config` runs a dataset config of your own (a copy of config/datasets/custom.yaml, or the
template with `--all_set dataset.path=...`) as a user would: each ipc gets the shipped per-ipc
layer through `condense.ipc`, as `--ipc N` gives it on the command line; `--dataset` names the
results.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a plain script from a checkout

from benchmarks.common import EVAL, run_script  # noqa: E402
from evaluation.plots import plot_eval_curve  # noqa: E402
from evaluation.selectors import needs_features  # noqa: E402


def kept_set(cdir: Path, summary: dict, keep: str) -> dict:
    """The set to evaluate: the last one, or the iteration chosen on the validation slice."""
    if keep == "last":
        return {"iteration": summary["final_iteration"], "synthetic_set": summary["synthetic_set"],
                "chosen_by": "last iteration"}
    best = cdir / "best_iteration.json"
    if not best.is_file():
        raise SystemExit(f"--keep best: {best} is missing; the condensation names a best iteration "
                         "only with condense.eval_it and evaluate.select_by=val (pass both in --set)")
    return json.loads(best.read_text())


def eval_curve(cdir: Path, png: Path) -> list:
    """The condensation's accuracy-vs-iteration points (condense.eval_it), without the per-run
    detail, drawn to `png`; [] when the run evaluated no iteration."""
    path = cdir / "eval_curve.json"
    if not path.is_file():
        return []
    curve = [{k: v for k, v in c.items() if k != "metrics"} for c in json.loads(path.read_text())]
    plot_eval_curve(curve, png)
    return curve


def baseline_names(a) -> list:
    """The --baselines list ('none': none)."""
    return [] if a.baselines == "none" else a.baselines.split(",")


def needs_experts(a) -> bool:
    """Whether the run needs experts: a condensation, expert labels, or a selector on their
    features ('random' and 'full' under hard labels need none)."""
    return (a.with_set or a.label_modes != ["hard"]
            or any(n != "full" and needs_features(n) for n in baseline_names(a)))


def stage_config(a, ipc: int, shared: list) -> tuple:
    """The config path and every stage's overrides for one ipc: the shipped
    config/ipc<N>/<dataset>.yaml, or --config with condense.ipc=N (the per-ipc layer)."""
    if a.config is None:
        return str(ROOT / "config" / f"ipc{ipc}" / f"{a.dataset}.yaml"), shared
    return str(Path(a.config).resolve()), [*shared, "--set", f"condense.ipc={ipc}"]


VALIDATION_KEYS = ("evaluate.select_by", "evaluate.val_fraction")


def condense_overrides(a) -> list:
    """The --set overrides of the condensation: --set, led by the validation keys of --eval_set,
    so that the validation slice the evaluation selects on is held out of the condensation too
    and the set never sees a row the baselines may not pick (evaluation.protocol, select_by 'val')."""
    held = [s for s in a.eval_set if s.split("=")[0] in VALIDATION_KEYS]
    return [*held, *a.extra]


def condense_stage(a, config: str, tag: str, common: list) -> dict:
    """Condense with the config and overrides: the run's timing, the set kept and its curve."""
    cdir = ROOT / "results" / "bench" / "condense" / tag
    cargs = ["--config_path", config, "--output_dir", str(cdir),
             "--set", f"condense.method={a.method}"]
    if a.niter:
        cargs += ["--set", f"condense.niter={a.niter}"]
    overrides = condense_overrides(a)
    cargs += common + [x for s in overrides for x in ("--set", s)]
    start = time.time()
    run_script("condense_script_text.py", a.nproc, cargs)
    condense_seconds = time.time() - start
    summary = json.loads((cdir / "run_summary.json").read_text())
    history = json.loads((cdir / "loss_history.json").read_text())
    secs = [h["seconds"] for h in history]
    late = secs[len(secs) // 2:] or [0.0]                 # the cache is fuller by then
    return {"condense": {
                "iterations": summary["final_iteration"],
                "mean_iteration_seconds": summary["mean_iteration_seconds"],
                "second_half_iteration_seconds": round(sum(late) / len(late), 4),
                "iteration_seconds_total": round(sum(secs), 1),
                "cache_hit_rate": (history or [{}])[-1].get("cache_hit_rate"),
                "wall_seconds": round(condense_seconds, 1),
                "peak_rss_mb_per_rank": [r["peak_rss_mb"] for r in summary["ranks"]],
                "world_size": summary["world_size"],
                "overrides": [f"condense.method={a.method}", *overrides]},
            "kept": kept_set(cdir, summary, a.keep), "eval_curve": eval_curve(cdir, EVAL / f"{tag}.png"),
            **start_choice(cdir)}


def start_choice(cdir: Path) -> dict:
    """The start an init that chooses it (best_real) took, with every candidate's validation
    score, from the run's start_choice.json; nothing for a fixed start."""
    path = cdir / "start_choice.json"
    return {"start_choice": json.loads(path.read_text())} if path.is_file() else {}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="bbc",
                   help="a shipped dataset (config/ipc<N>/<dataset>.yaml), or with --config the "
                        "name of the results")
    p.add_argument("--config", default=None,
                   help="a dataset config of your own instead of config/ipc<N>/<dataset>.yaml; "
                        "each ipc applies the shipped per-ipc layer (condense.ipc=N)")
    p.add_argument("--ipc", type=int, nargs="+", default=[1, 10],
                   help="synthetic sequences per class; one whole run per value")
    p.add_argument("--niter", type=int, default=None, help="default: the config's condense.niter")
    p.add_argument("--method", default="ncfm", choices=["ncfm", "trajectory", "combined"],
                   help="condense.method of the condensation")
    p.add_argument("--num_eval", type=int, default=5,
                   help="classifiers trained per method (the same seeds for every method)")
    p.add_argument("--nproc", type=int, default=2, help="torchrun processes per stage")
    p.add_argument("--no-full", dest="full", action="store_false",
                   help="skip the full-data baseline (the slowest row)")
    p.add_argument("--no-set", dest="with_set", action="store_false",
                   help="no condensation: evaluate the --baselines (and full) alone, written to "
                        "<dataset>_baselines_ipc<ipc><suffix>.json (e.g. a baseline added after "
                        "the sets were measured, with the same seeds)")
    p.add_argument("--baselines", default="random,herding,kcenter",
                   help="real-subset baselines evaluated beside the synthetic set ('none' for none)")
    p.add_argument("--suffix", default="", help="appended to the result names (keeps earlier runs)")
    p.add_argument("--set", dest="extra", action="append", default=[],
                   help="extra overrides for condensation (section.key=value)")
    p.add_argument("--eval_set", action="append", default=[],
                   help="extra overrides for the evaluations (section.key=value); "
                        "evaluate.select_by / val_fraction also reach the condensation, which "
                        "then holds the validation slice out")
    p.add_argument("--all_set", action="append", default=[],
                   help="overrides for every stage, experts included (section.key=value; e.g. "
                        "network.pooling=mean, which retrains the experts and changes every "
                        "method's classifier)")
    p.add_argument("--label_modes", nargs="+", default=["hard"], choices=["hard", "expert_soft"],
                   help="evaluate under each label protocol (same set, same baselines)")
    p.add_argument("--full_modes", nargs="+", default=None,
                   help="label modes that also evaluate 'full' (default: all of --label_modes)")
    p.add_argument("--baseline_modes", nargs="+", default=None,
                   help="label modes that also evaluate the --baselines (default: all of "
                        "--label_modes; e.g. only expert_soft when the hard-label baselines of "
                        "the same seeds are already in a table)")
    p.add_argument("--keep", choices=["last", "best"], default="last",
                   help="which set is evaluated: the last iteration's, or (best) the one the "
                        "condensation chose on the validation slice (best_iteration.json; needs "
                        "condense.eval_it and evaluate.select_by=val in --set)")
    a = p.parse_args()
    EVAL.mkdir(parents=True, exist_ok=True)
    table = EVAL / "table.md"
    shared = [x for s in a.all_set for x in ("--set", s)]      # every stage, experts included
    for n, ipc in enumerate(a.ipc):
        config, common = stage_config(a, ipc, shared)
        if needs_experts(a):
            run_script("pretrain_script_text.py", a.nproc, ["--config_path", config, *common])
        record = {"benchmark": "evaluate", "dataset": a.dataset, "ipc": ipc,
                  **({"config": a.config} if a.config else {})}
        if a.with_set:
            tag = f"{a.dataset}_{a.method}_ipc{ipc}{a.suffix}"
            record.update(method=a.method, **condense_stage(a, config, tag, common))
            load = ["--load_path", record["kept"]["synthetic_set"]]
        else:                                        # --no-set: the real baselines alone
            tag, load = f"{a.dataset}_baselines_ipc{ipc}{a.suffix}", []
        evaluations = {}
        for mode in a.label_modes:
            baselines = baseline_names(a)
            if a.baseline_modes is not None and mode not in a.baseline_modes:
                baselines = []
            with_full = a.full and n == 0 and (a.full_modes is None or mode in a.full_modes)
            baselines += ["full"] if with_full else []
            if not load and not baselines:
                continue
            edir = ROOT / "results" / "bench" / "evaluate" / f"{tag}_{mode}"
            run_script("evaluate_script_text.py", a.nproc,
                       ["--config_path", config, *load,
                        *(["--baseline", ",".join(baselines)] if baselines else []),
                        "--output_dir", str(edir), "--label_mode", mode,
                        "--set", f"evaluate.num_eval={a.num_eval}",
                        "--set", f"evaluate.results_table={table}", *common,
                        *[x for s in a.eval_set for x in ("--set", s)]])
            evaluations[mode] = json.loads((edir / "eval" / "results.json").read_text())
        if not evaluations:
            raise SystemExit("--no-set with --baselines none and no full: nothing to evaluate")
        record.update(date=time.strftime("%Y-%m-%d"), evaluation=next(iter(evaluations.values())),
                      evaluation_by_labels=evaluations, eval_overrides=a.eval_set,
                      all_overrides=a.all_set)
        out = EVAL / f"{tag}.json"
        out.write_text(json.dumps(record, indent=2) + "\n")
        print(f"written {out}", flush=True)
    print(table.read_text())


if __name__ == "__main__":
    main()
