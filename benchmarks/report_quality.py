"""Does the set beat the best real selection? The README's verdict table, computed from the
committed evaluation JSON (`benchmarks/results/eval_*.json`, written by bench_eval.py), never
typed by hand.

For each dataset, ipc and label protocol (`hard`, `expert_soft`, `hard+attn1`, ...):
- the synthetic row comes from the first file of `SOURCES[(dataset, ipc)]` that holds a synthetic
  entry under that protocol (the run of the shipped config first, then earlier runs);
- each real baseline (random, herding, k-center) comes from the newest file of the same dataset
  and ipc that holds it under that protocol, with the same evaluation seeds, steps and
  `select_by` (a 'val' run's baselines are picked from a pool without the validation slice);
- verdict: `yes` when the synthetic mean beats the best baseline mean by more than the larger of
  the two stds (the issue's rule), `ahead, within std` when it leads by less, `no` otherwise.

    python benchmarks/report_quality.py    # prints the table; writes results/quality_verdicts.{md,json}
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

from benchmarks.common import RESULTS  # noqa: E402

BASELINES = ("random", "herding", "kcenter")
DATASETS = ("bbc", "trec", "sst2")
IPCS = (1, 10, 50)
PROTOCOLS = ("hard", "expert_soft")

# The synthetic row of each cell, in order of preference: the shipped config's run first.
SOURCES: Dict[Tuple[str, int], List[str]] = {
    ("bbc", 1): ["eval_bbc_ncfm_ipc1_arch.json", "eval_bbc_ncfm_ipc1.json",
                 "eval_bbc_ncfm_ipc1_soft.json"],
    ("bbc", 10): ["eval_bbc_ncfm_ipc10_herding_fast.json",
                  "eval_bbc_ncfm_ipc10_herding_fast_soft.json"],
    ("bbc", 50): ["eval_bbc_ncfm_ipc50.json"],
    ("trec", 1): ["eval_trec_ncfm_ipc1.json", "eval_trec_ncfm_ipc1_soft.json"],
    ("trec", 10): ["eval_trec_ncfm_ipc10_herding_fast.json", "eval_trec_ncfm_ipc10_herding.json",
                   "eval_trec_ncfm_ipc10_herding_fast_attn.json"],
    ("trec", 50): ["eval_trec_ncfm_ipc50_fast.json", "eval_trec_ncfm_ipc50.json"],
    ("sst2", 1): ["eval_sst2_ncfm_ipc1.json"],
    ("sst2", 10): ["eval_sst2_ncfm_ipc10_herding_fast.json", "eval_sst2_ncfm_ipc10_herding.json"],
    ("sst2", 50): ["eval_sst2_ncfm_ipc50.json"],
}


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
    candidates = sorted((e for p in results.glob(f"eval_{dataset}_*ipc{ipc}*.json")
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
    return {"dataset": dataset, "ipc": ipc, "labels": protocol, "synthetic": _row(syn),
            "baselines": {m: _row(e) for m, e in baselines.items()}, "best": best["method"],
            "lead": syn["mean"] - best["mean"], "verdict": verdict(syn, best)}


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
                    row.append(f"{mark}: {_pm(c['synthetic'])} vs {c['best']} "
                               f"{_pm(c['baselines'][c['best']])} "
                               f"({100 * c['lead']:+.2f} pp; `{c['synthetic']['file']}`)")
            lines.append(f"| {dataset} | {ipc} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results_dir", type=Path, default=RESULTS,
                   help="folder of the eval_*.json files (default: benchmarks/results)")
    p.add_argument("--out", type=Path, default=None,
                   help="where to write quality_verdicts.{md,json} (default: --results_dir)")
    a = p.parse_args(argv)
    file_entries.cache_clear()                        # files may have changed since a last call
    protocols = list(PROTOCOLS)
    for path in sorted(a.results_dir.glob("eval_*.json")):
        for e in file_entries(path):
            if e["method"] == "synthetic" and e["labels"] not in protocols:
                protocols.append(e["labels"])
    cells = [c for d in DATASETS for i in IPCS for pr in protocols
             if (c := cell(a.results_dir, d, i, pr)) is not None]
    table = markdown(cells, protocols)
    out = a.out or a.results_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality_verdicts.md").write_text(table)
    (out / "quality_verdicts.json").write_text(json.dumps(cells, indent=1))
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
