"""Does the set beat the best real selection? The README's verdict table, computed from the
committed evaluation JSON (`benchmarks/results/eval/*.json`, written by bench_eval.py), never
typed by hand.

For each dataset, ipc and label protocol (`hard`, `expert_soft`, `hard+attn1`, ...):
- the synthetic row comes from the first file of `SOURCES[(dataset, ipc)]` that holds a synthetic
  entry under that protocol (the run of the shipped config first, then earlier runs);
- each real baseline (random, herding, k-center, k-means) comes from the newest file of the same dataset
  and ipc that holds it under that protocol, with the same evaluation seeds, steps and
  `select_by` (a 'val' run's baselines are picked from a pool without the validation slice);
- verdict: `yes` when the synthetic mean beats the best baseline mean by more than the larger of
  the two stds (the issue's rule), `ahead, within std` when it leads by less, `no` otherwise;
- % of full: the synthetic mean over the newest converged `full` of the dataset under that
  protocol (trained at least as many epochs as the experts; `full` does not depend on ipc).

    python benchmarks/report_quality.py    # prints the table; writes results/quality/verdicts.{md,json}
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import EVAL, QUALITY  # noqa: E402

BASELINES = ("random", "herding", "kcenter", "kmeans")
DATASETS = ("bbc", "trec", "sst2", "sms_spam")   # sms_spam: never tuned on (the custom template)
IPCS = (1, 10, 50)
PROTOCOLS = ("hard", "expert_soft")
PROTOCOL_BATCH = 16           # evaluate.batch_size of every file measured before `epochs` was recorded
CONVERGED_EPOCHS = 2.0        # a 'full' counts as converged at the experts' epochs (pretrain.epochs)

# The synthetic row of each cell, in order of preference: the shipped config's run first.
SOURCES: Dict[Tuple[str, int], List[str]] = {
    ("bbc", 1): ["bbc_ncfm_ipc1_arch.json", "bbc_ncfm_ipc1.json",
                 "bbc_ncfm_ipc1_soft.json"],
    ("bbc", 10): ["bbc_ncfm_ipc10_herding_fast.json",
                  "bbc_ncfm_ipc10_herding_fast_soft.json"],
    ("bbc", 50): ["bbc_ncfm_ipc50.json"],
    ("trec", 1): ["trec_ncfm_ipc1.json", "trec_ncfm_ipc1_soft.json"],
    ("trec", 10): ["trec_ncfm_ipc10_herding_fast.json", "trec_ncfm_ipc10_herding.json",
                   "trec_ncfm_ipc10_herding_fast_attn.json"],
    ("trec", 50): ["trec_ncfm_ipc50_fast.json", "trec_ncfm_ipc50.json"],
    ("sst2", 1): ["sst2_ncfm_ipc1.json"],
    ("sst2", 10): ["sst2_ncfm_ipc10_herding_fast.json", "sst2_ncfm_ipc10_herding.json"],
    ("sst2", 50): ["sst2_ncfm_ipc50.json"],
    ("sms_spam", 1): ["sms_spam_ncfm_ipc1.json"],
    ("sms_spam", 10): ["sms_spam_ncfm_ipc10.json"],
    ("sms_spam", 50): ["sms_spam_ncfm_ipc50.json"],
}


def evaluation_files(results: Path, pattern: str = "*.json") -> List[Path]:
    """The bench_eval.py result files in `results` matching `pattern` (other JSON that may sit in
    the folder, e.g. another protocol's measurement, has no evaluation entries and is skipped)."""
    return [p for p in sorted(results.glob(pattern)) if _is_evaluation(p)]


@functools.lru_cache(maxsize=None)
def _is_evaluation(path: Path) -> bool:
    data = json.loads(path.read_text())
    return (isinstance(data, dict) and data.get("benchmark", "evaluate") == "evaluate"
            and ("evaluation_by_labels" in data or "evaluation" in data))


@functools.lru_cache(maxsize=None)
def file_entries(path: Path) -> List[dict]:
    """Every evaluation entry of one bench_eval JSON (all label protocols), each with its file
    (read once per path; callers do not modify the list)."""
    data = json.loads(path.read_text())
    by_labels = data.get("evaluation_by_labels") or {"hard": data.get("evaluation", [])}
    out = []
    for entries in by_labels.values():
        for e in entries:
            out.append({**e, "labels": e.get("labels") or "hard", "file": path.name,
                        "file_date": data.get("date", "")})
    return out


def seeds(entry: dict) -> List[int]:
    return [r["seed"] for r in entry.get("runs", [])]


def selection(entry: dict) -> str:
    """How the reported step was chosen; 'val' runs also hold a validation slice out of the
    selection pools, so their baselines differ from 'last' runs with the same seeds."""
    return entry.get("select_by") or "last"


def verdict(syn: dict, best: dict) -> str:
    lead = syn["mean"] - best["mean"]
    if lead > max(syn["std"], best["std"]):
        return "yes"
    return "ahead, within std" if lead > 0 else "no"


def cell(results: Path, dataset: str, ipc: int, protocol: str) -> Optional[dict]:
    """The verdict of one (dataset, ipc, protocol), or None when its synthetic row is missing."""
    syn = None
    for name in SOURCES.get((dataset, ipc), []):
        path = results / name
        if path.is_file():
            syn = next((e for e in file_entries(path)
                        if e["method"] == "synthetic" and e["labels"] == protocol), None)
            if syn is not None:
                break
    if syn is None:
        return None
    candidates = sorted((e for p in evaluation_files(results, f"{dataset}_*ipc{ipc}*.json")
                         for e in file_entries(p)
                         if e["method"] in BASELINES and e["labels"] == protocol
                         and e.get("ipc") == ipc and e["steps"] == syn["steps"]
                         and seeds(e) == seeds(syn) and selection(e) == selection(syn)),
                        key=lambda e: e["file_date"], reverse=True)
    baselines = {}
    for e in candidates:
        baselines.setdefault(e["method"], e)
    if not baselines:
        return {"dataset": dataset, "ipc": ipc, "labels": protocol, "synthetic": _row(syn),
                "baselines": {}, "best": None, "lead": None, "verdict": "no baselines measured"}
    best = max(baselines.values(), key=lambda e: e["mean"])
    full = converged_full(results, dataset, protocol, selection(syn))
    return {"dataset": dataset, "ipc": ipc, "labels": protocol, "synthetic": _row(syn),
            "baselines": {m: _row(e) for m, e in baselines.items()}, "best": best["method"],
            "lead": syn["mean"] - best["mean"], "verdict": verdict(syn, best),
            "full": None if full is None else {**_row(full), "epochs": full_epochs(full)},
            "of_full": None if full is None else syn["mean"] / full["mean"]}


def full_epochs(e: dict) -> float:
    """Epochs a 'full' entry trained: recorded since `epochs` was added, else its steps of the
    protocol's batch (16) over its rows."""
    return float(e.get("epochs") or round(e["steps"] * PROTOCOL_BATCH / max(1, e["n_train"]), 2))


def converged_full(results: Path, dataset: str, protocol: str, select_by: str) -> Optional[dict]:
    """The newest 'full' entry of `dataset` under `protocol` trained at least CONVERGED_EPOCHS
    epochs (as long as the experts); `full` does not depend on ipc, so any file of the dataset."""
    fulls = [e for p in evaluation_files(results, f"{dataset}_*.json") for e in file_entries(p)
             if e["method"] == "full" and e["labels"] == protocol and selection(e) == select_by
             and full_epochs(e) >= CONVERGED_EPOCHS - 0.01]
    return max(fulls, key=lambda e: e["file_date"], default=None)


def _row(e: dict) -> dict:
    return {"mean": e["mean"], "std": e["std"], "file": e["file"], "num_eval": e["num_eval"]}


def _pm(r: dict) -> str:
    return f"{100 * r['mean']:.2f} ± {100 * r['std']:.2f}%"


def markdown(cells: List[dict], protocols: List[str]) -> str:
    lines = ["| dataset | ipc | " + " | ".join(protocols) + " |",
             "|---|---|" + "---|" * len(protocols)]
    for dataset in DATASETS:
        for ipc in IPCS:
            row = []
            for protocol in protocols:
                c = next((c for c in cells if (c["dataset"], c["ipc"], c["labels"])
                          == (dataset, ipc, protocol)), None)
                if c is None:
                    row.append("not measured")
                elif c["best"] is None:
                    row.append(f"{_pm(c['synthetic'])}, {c['verdict']}")
                else:
                    mark = "**yes**" if c["verdict"] == "yes" else c["verdict"]
                    of_full = (f"; {100 * c['of_full']:.1f}% of full" if c.get("of_full")
                               else "")
                    row.append(f"{mark}: {_pm(c['synthetic'])} vs {c['best']} "
                               f"{_pm(c['baselines'][c['best']])} "
                               f"({100 * c['lead']:+.2f} pp{of_full}; `{c['synthetic']['file']}`)")
            lines.append(f"| {dataset} | {ipc} | " + " | ".join(row) + " |")
    fulls = {}
    for c in cells:
        if c.get("full"):
            fulls.setdefault((c["dataset"], c["labels"]), c["full"])
    if fulls:
        lines.append("")
        lines += [f"- full, {dataset} ({protocol} labels): {_pm(f)}, {f['epochs']:g} epochs "
                  f"(`{f['file']}`)" for (dataset, protocol), f in fulls.items()]
    return "\n".join(lines) + "\n"


def compute(results_dir: Path) -> Tuple[List[dict], List[str]]:
    """Every cell's verdict from the evaluation JSON in `results_dir`, and the label protocols."""
    file_entries.cache_clear()                        # files may have changed since a last call
    _is_evaluation.cache_clear()
    protocols = list(PROTOCOLS)
    for path in evaluation_files(results_dir):
        for e in file_entries(path):
            if e["method"] == "synthetic" and e["labels"] not in protocols:
                protocols.append(e["labels"])
    cells = [c for d in DATASETS for i in IPCS for pr in protocols
             if (c := cell(results_dir, d, i, pr)) is not None]
    return cells, protocols


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results_dir", type=Path, default=EVAL,
                   help="folder of bench_eval.py's JSON files (default: benchmarks/results/eval)")
    p.add_argument("--out", type=Path, default=None,
                   help="where to write verdicts.{md,json} (default: benchmarks/results/quality)")
    a = p.parse_args(argv)
    cells, protocols = compute(a.results_dir)
    table = markdown(cells, protocols)
    out = a.out or QUALITY
    out.mkdir(parents=True, exist_ok=True)
    (out / "verdicts.md").write_text(table)
    (out / "verdicts.json").write_text(json.dumps(cells, indent=1) + "\n")
    print(table)
    return 0

if __name__ == "__main__":
    sys.exit(main())
