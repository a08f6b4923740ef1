"""Evaluation results: DD-Ranking-style gaps, the shared markdown table, the condensation-time
accuracy curve (`eval_curve.json`), and the one-line log summary of a method."""
from __future__ import annotations

import datetime
import logging
import os
from pathlib import Path
from typing import List, Optional, Sequence

from utils.io import atomic_write_json, atomic_write_text, read_json

logger = logging.getLogger(__name__)


def log_entry(e: dict) -> None:
    f1 = e["metrics"].get("macro_f1", {"mean": float("nan"), "std": float("nan")})
    micro = e["metrics"].get("micro_f1")                     # multi-label: accuracy is subset accuracy
    logger.info("%s: test %saccuracy %.4f ± %.4f, macro-F1 %.4f ± %.4f%s over %d runs (%d examples, "
                "%d steps, %.1fs/run)", e["method"], "subset " if micro else "", e["mean"], e["std"],
                f1["mean"], f1["std"],
                f", micro-F1 {micro['mean']:.4f} ± {micro['std']:.4f}" if micro else "",
                e["num_eval"], e["n_train"], e["steps"], e["train_seconds"])


# ----------------------------------------------------------------------- DD-Ranking gaps

def add_gaps(entries: List[dict], previous: Sequence[dict] = ()) -> None:
    """gap_to_full = full mean - method mean, gain_over_random = method mean - random mean
    (test accuracy). References come from `entries`, else from `previous` table rows (dicts with
    method/dataset/ipc/model/select_by/labels/accuracy) of the same label mode; full rows match
    any ipc. Under hard labels, gap_to_full is DD-Ranking's hard-label recovery (HLR, lower is
    better); gain_over_random is its improvement over random (IOR) under the row's own labels."""
    def ref(method: str) -> Optional[float]:
        for e in entries:
            if e["method"] == method:
                return e["mean"]
        if not entries:
            return None
        e0 = entries[0]
        for row in reversed(list(previous)):
            if (row.get("method") == method and row.get("dataset") == e0["dataset"]
                    and (row.get("labels") or "hard") == e0.get("labels", "hard")
                    and row.get("model") == e0["model"] and row.get("select_by") == e0["select_by"]
                    and (method == "full" or str(row.get("ipc")) == str(e0["ipc"]))
                    and row.get("accuracy") is not None):
                return row["accuracy"]
        return None

    full, rnd = ref("full"), ref("random")
    for e in entries:
        e["gap_to_full"] = None if full is None else full - e["mean"]
        e["gain_over_random"] = None if rnd is None else e["mean"] - rnd


# ---------------------------------------------------------------------- the results table

TABLE_COLUMNS = ("date", "dataset", "ipc", "method", "model", "select_by", "labels", "steps",
                 "runs", "accuracy (%)", "macro-F1 (%)", "gap to full (pp)",
                 "gain over random (pp)", "s/run", "source")
TABLE_TITLE = ("# Evaluation results\n\nOne row per evaluated method (condense/evaluate_script_text.py); "
               "accuracy and macro-F1 on the test split, mean ± std over runs; gaps in percentage "
               "points (DD-Ranking style: gap to full = full - method, the hard-label recovery HLR under "
               "hard labels; gain over random = method - random, the improvement over random IOR). "
               "`labels`: hard, or expert_soft (every method of the row's evaluation trained on "
               "the expert's soft labels).\n\n")


def _pm(stat: Optional[dict]) -> str:
    return "" if not stat else f"{100 * stat['mean']:.2f} ± {100 * stat['std']:.2f}"


def _pp(v: Optional[float]) -> str:
    return "" if v is None else f"{100 * v:+.2f}"


def table_row(e: dict, date: str) -> str:
    cells = [date, e["dataset"], str(e["ipc"]), e["method"], e["model"], e["select_by"],
             e.get("labels", "hard"), str(e["steps"]), str(e["num_eval"]), _pm(e["metrics"].get("accuracy")),
             _pm(e["metrics"].get("macro_f1")), _pp(e["gap_to_full"]), _pp(e["gain_over_random"]),
             f"{e['train_seconds']:.1f}", str(e.get("source", ""))]
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def table_header() -> str:
    return ("| " + " | ".join(TABLE_COLUMNS) + " |\n"
            + "|" + "|".join("---" for _ in TABLE_COLUMNS) + "|\n")


def read_results_table(path: str | os.PathLike) -> List[dict]:
    """Rows of a results table as dicts (accuracy as a fraction); [] when there is none."""
    path = Path(path)
    if not path.is_file():
        return []
    header, rows = None, []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if header is None:
            header = cells
            continue
        if set(line.replace("|", "").strip()) <= {"-", " ", ":"}:
            continue
        row = dict(zip(header, cells))
        acc = row.get("accuracy (%)", "")
        try:
            row["accuracy"] = float(acc.split("±")[0]) / 100 if acc else None
        except ValueError:
            row["accuracy"] = None
        rows.append(row)
    return rows


def append_results_table(path: str | os.PathLike, entries: Sequence[dict]) -> str:
    """Append one row per entry (creating the file with a header), atomically; returns the new
    rows with the header, for the log."""
    path = Path(path)
    date = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    rows = "".join(table_row(e, date) + "\n" for e in entries)
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    if old.strip() and table_header().splitlines()[0] not in old:
        old = _migrated(read_results_table(path))         # a table from an older textcondense
    if not old.strip():
        old = TABLE_TITLE + table_header()
    elif not old.endswith("\n"):
        old += "\n"
    atomic_write_text(path, old + rows)
    return table_header() + rows


def _migrated(rows: Sequence[dict]) -> str:
    """Old rows under today's columns (a column they lack is empty; labels were always hard)."""
    defaults = {"labels": "hard"}
    lines = ["| " + " | ".join(row.get(c, defaults.get(c, "")) for c in TABLE_COLUMNS) + " |\n"
             for row in rows]
    return TABLE_TITLE + table_header() + "".join(lines)


def record_eval_curve(path: Path, iteration: int, entry: dict, seconds: float,
                      condense_seconds: Optional[float] = None) -> List[dict]:
    """Add (or replace) the accuracy of the set at `iteration` in a run's eval_curve.json
    (`seconds`: the evaluation's; `condense_seconds`: the condensation's up to `iteration`)."""
    curve = read_json(path) if Path(path).is_file() else []
    curve = [c for c in curve if c.get("iteration") != iteration]
    curve.append({"iteration": iteration, "accuracy_mean": entry["mean"],
                  "accuracy_std": entry["std"], "metrics": entry["metrics"],
                  "num_eval": entry["num_eval"], "steps": entry["steps"],
                  "val_accuracy_mean": entry["metrics"].get("val_accuracy", {}).get("mean"),
                  "val_accuracy_std": entry["metrics"].get("val_accuracy", {}).get("std"),
                  "val_micro_f1_mean": entry["metrics"].get("val_micro_f1", {}).get("mean"),
                  "model": entry["model"], "seconds": round(seconds, 2),
                  "condense_seconds": None if condense_seconds is None else round(condense_seconds, 2)})
    curve = sorted(curve, key=lambda c: c["iteration"])
    atomic_write_json(path, curve)
    return curve


def val_score(point: dict, suffix: str = "") -> Optional[float]:
    """What select_by 'val' maximises: validation micro-F1 for multi-label (subset accuracy of a
    tiny set's classifier is near 0 on many-topic data and chooses nothing), else validation
    accuracy. `suffix`: '' for one classifier's evaluated step, '_mean' for an eval_curve point."""
    f1 = point.get(f"val_micro_f1{suffix}")
    return f1 if f1 is not None else point.get(f"val_accuracy{suffix}")


def best_by_validation(curve: List[dict]) -> Optional[dict]:
    """The eval_curve point with the best validation score (`val_score`; ties: the
    earliest), or None when the curve has no validation figures."""
    scored = [c for c in curve if val_score(c, "_mean") is not None]
    if not scored:
        return None
    return max(scored, key=lambda c: (val_score(c, "_mean"), -c["iteration"]))
