"""docs/results.md, generated: every figure read from the committed JSON in benchmarks/results/,
so a number in the docs cannot drift from the measurement that produced it.

    python benchmarks/report_results.py            # writes docs/results.md and README.md's blocks
    python benchmarks/report_results.py --check    # exit 1 when either is stale (the test runs it)

The page is a list of sections (`benchmarks/results_sections.py`): each names its JSON files, the
command that wrote them and a few lines of qualitative notes (no figures: those are only ever
rendered here, from the files). README.md's marked blocks (`<!-- results:begin -->` ...
`<!-- results:end -->`, `<!-- privacy:begin -->` ... `<!-- privacy:end -->`) are rewritten with
the same figures. `make results` runs report_quality.py first (the verdict table), then this.

(Over 400 lines on purpose: one small renderer per kind of result file, each reading only its own
JSON; they share the table/format helpers at the top, and splitting them by kind would scatter the
one place that turns a measurement into a figure.)
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import report_quality  # noqa: E402
from benchmarks.common import RESULTS, ROOT  # noqa: E402

DOC = ROOT / "docs" / "results.md"
README = ROOT / "README.md"
NAMES = {"bbc": "BBC", "trec": "TREC", "sst2": "SST-2", "sms_spam": "SMS spam"}


# ---------------------------------------------------------------------------------- formatting
ABSOLUTE = re.compile(r"(?<![\w.~])(?:[A-Za-z]:[\\/]|/)(?:[^\s,;\[\]'\"`=\\/]+[\\/])+"
                      r"([^\s,;\[\]'\"`=\\/]+)")


def portable(text: str) -> str:
    """An override or command as the page shows it: every absolute path of the measuring machine
    (POSIX or Windows) cut to `.../<file name>`, what a reader's own path ends in
    # 'k=/a/b/c.csv' -> 'k=.../c.csv'; 'k=[C:\\x\\y.pth, /z/w]' -> 'k=[.../y.pth, .../w]'"""
    return ABSOLUTE.sub(lambda m: ".../" + m.group(1), text)


def pct(x: Optional[float]) -> str:
    return "–" if x is None else f"{100 * x:.2f}%"


def pm(mean: Optional[float], std: Optional[float]) -> str:
    return "–" if mean is None else f"{100 * mean:.2f} ± {100 * (std or 0.0):.2f}%"


def pp(x: Optional[float]) -> str:
    return "–" if x is None else f"{100 * x:+.2f} pp"


def table(header: List[str], rows: List[List[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def link(results: Path, rel: str) -> str:  # noqa: ARG001
    """A link from docs/ to a result file, by its path under benchmarks/results/."""
    return f"[`{rel}`](../benchmarks/results/{rel})"


class Ctx:
    """Where the JSON lives, and which files a section read (each section lists its sources)."""

    def __init__(self, results: Path):
        self.results = results
        self.read: List[str] = []

    def cells(self) -> List[dict]:
        """report_quality's verdicts, computed from the evaluation JSON now (not read from
        quality/verdicts.json, which `make results` rewrites beside this page)."""
        if not hasattr(self, "_cells"):
            self._cells, self.protocols = report_quality.compute(self.results / "eval")
        return self._cells

    def load(self, rel: str) -> Optional[dict]:
        path = self.results / rel
        if not path.is_file():
            return None
        self.read.append(rel)
        return json.loads(path.read_text())


# ---------------------------------------------------------------------------------- renderers
def _metric(e: dict, name: str) -> tuple:
    m = (e.get("metrics") or {}).get(name) or {}
    return m.get("mean"), m.get("std")


def eval_file(rel: str, methods: Optional[List[str]] = None) -> Callable[[Ctx], str]:
    """One bench_eval.py result: its condensation (iterations, seconds, overrides, the kept
    iteration) and, per label protocol, every method's test accuracy (subset accuracy for
    multi-label), macro-F1, micro-F1 for multi-label, validation accuracy (and micro-F1, what
    multi-label runs are chosen by) when measured, gap to full and gain over random."""

    def render(ctx: Ctx) -> str:
        d = ctx.load(rel)
        if d is None:
            return f"*{rel}: not measured yet.*\n"
        c = d.get("condense", {})
        bits = [f"{c.get('iterations')} iterations"]
        if c.get("mean_iteration_seconds") is not None:
            bits.append(f"{c['mean_iteration_seconds']:.2f} s / iteration")
        if c.get("second_half_iteration_seconds") is not None:
            bits.append(f"{c['second_half_iteration_seconds']:.2f} s in the second half")
        if c.get("cache_hit_rate") is not None:
            bits.append(f"cache hit rate {c['cache_hit_rate']:.2f} at the end")
        if c.get("wall_seconds") is not None:
            bits.append(f"{c['wall_seconds']:.0f} s wall")
        if c.get("world_size"):
            bits.append(f"{c['world_size']} ranks")
        if c.get("peak_rss_mb_per_rank"):
            bits.append("peak RSS " + " / ".join(f"{x:,.0f}" for x in c["peak_rss_mb_per_rank"])
                        + " MiB per rank")
        if c:
            lines = [f"{link(ctx.results, rel)} ({d.get('date', '')}): condensation "
                     + ", ".join(bits) + "."]
        else:
            lines = [f"{link(ctx.results, rel)} ({d.get('date', '')}): evaluation only."]
        if d.get("note"):
            lines.append(d["note"][0].upper() + d["note"][1:] + ".")
        if d.get("command"):
            lines.append(f"Command: `{portable(d['command'])}`.")
        overrides = [o for o in (c.get("overrides") or []) if o]
        if overrides:
            lines.append("Condensation overrides: " + ", ".join(f"`{portable(o)}`" for o in overrides)
                         + ".")
        if d.get("eval_overrides"):
            lines.append("Evaluation overrides: "
                         + ", ".join(f"`{portable(o)}`" for o in d["eval_overrides"]) + ".")
        if d.get("all_overrides"):
            lines.append("Every stage: " + ", ".join(f"`{portable(o)}`" for o in d["all_overrides"])
                         + ".")
        kept = d.get("kept") or {}
        if kept.get("iteration") is not None and kept.get("chosen_by") != "last iteration":
            lines.append(f"Set evaluated: iteration {kept['iteration']} "
                         f"(chosen by the {kept.get('chosen_by', 'validation slice')}).")
        choice = d.get("start_choice")
        if choice:
            scores = ", ".join(f"{r['candidate']} {pm(r['val_mean'], r['val_std'])}"
                               for r in choice["candidates"])
            lines.append(f"Start chosen on the {choice.get('chosen_by', 'validation slice')}: "
                         f"{choice['chosen']} (validation accuracy, {choice['candidates'][0]['runs']} "
                         f"classifiers each: {scores}).")
        out = " ".join(lines) + "\n\n"
        by_labels = d.get("evaluation_by_labels") or {"hard": d.get("evaluation", [])}
        for protocol, entries in by_labels.items():
            entries = [e for e in entries if methods is None or e["method"] in methods]
            if not entries:
                continue
            val = any(_metric(e, "val_accuracy")[0] is not None for e in entries)
            micro = any(_metric(e, "micro_f1")[0] is not None for e in entries)  # multi-label
            protocol = entries[0].get("labels") or protocol
            accuracy = "subset accuracy" if micro else "accuracy"
            header = ["method", "n_train", f"test {accuracy} ({protocol} labels)", "macro-F1"]
            header += ["micro-F1"] if micro else []
            header += (["validation subset accuracy", "validation micro-F1"] if micro else
                       ["validation accuracy"]) if val else []
            header += ["gap to full", "gain over random"]
            rows = []
            for e in entries:
                row = [e["method"], e.get("n_train", "–"), pm(e["mean"], e["std"]),
                       pm(*_metric(e, "macro_f1"))]
                row += [pm(*_metric(e, "micro_f1"))] if micro else []
                row += [pm(*_metric(e, "val_accuracy"))] if val else []
                row += [pm(*_metric(e, "val_micro_f1"))] if val and micro else []
                gap = e.get("gap_to_full") if e["method"] != "full" else None
                gain = e.get("gain_over_random") if e["method"] != "random" else None
                row += ["–" if gap is None else f"{100 * gap:.2f} pp", pp(gain)]
                rows.append(row)
            out += table(header, rows) + "\n"
        curve = d.get("eval_curve") or []
        if curve:
            rows = [[p["iteration"], pm(p.get("val_accuracy_mean"), p.get("val_accuracy_std")),
                     pm(p.get("accuracy_mean"), p.get("accuracy_std"))] for p in curve]
            out += "Accuracy of the set against the condensation iteration:\n\n"
            out += table(["iteration", "validation accuracy", "test accuracy"], rows) + "\n"
            png = rel[:-len(".json")] + ".png"
            if (ctx.results / png).is_file():
                out += f"![{rel} accuracy vs iteration](../benchmarks/results/{png})\n\n"
        return out

    return render


def verdicts(ctx: Ctx) -> str:
    """report_quality's table: does the set beat the best real selection?"""
    cells = ctx.cells()
    return report_quality.markdown(cells, ctx.protocols) + "\n"


def summary_lines(ctx: Ctx) -> List[str]:
    """One line per dataset x ipc (hard labels): the set against the best real subset."""
    lines = []
    for c in ctx.cells():
        if c["labels"] != "hard":
            continue
        name = f"{NAMES.get(c['dataset'], c['dataset'])} ipc {c['ipc']}"
        syn = c["synthetic"]
        of_full = "–" if not c.get("of_full") else f"{100 * c['of_full']:.1f}%"
        if c["best"] is None:
            lines.append(f"| {name} | {pm(syn['mean'], syn['std'])} | – | {c['verdict']} | {of_full} |")
            continue
        best = c["baselines"][c["best"]]
        mark = "**yes**" if c["verdict"] == "yes" else c["verdict"]
        lines.append(f"| {name} | {pm(syn['mean'], syn['std'])} | {c['best']} "
                     f"{pm(best['mean'], best['std'])} | {mark} ({pp(c['lead'])}) | {of_full} |")
    return lines


def experts(rel: str) -> Callable[[Ctx], str]:
    def render(ctx: Ctx) -> str:
        d = ctx.load(rel)
        if d is None:
            return f"*{rel}: not measured yet.*\n"
        epochs = max(len(x["history"]) for x in d["experts"])
        header = ["expert", "seed"] + [f"epoch {i + 1} test acc." for i in range(epochs)]
        header += ["train + test seconds"]
        rows = [[x["expert"], x["seed"], *[pct(h["accuracy"]) for h in x["history"]],
                 f"{x['train_seconds']:.0f}"] for x in d["experts"]]
        return (f"{link(ctx.results, rel)} ({d.get('date', '')}; `{d['config']}`, {d['model']}, "
                f"max_length {d['max_length']}, {d['world_size']} ranks):\n\n"
                + table(header, rows) + "\n")

    return render


def distill(rel: str) -> Callable[[Ctx], str]:
    def render(ctx: Ctx) -> str:
        d = ctx.load(rel)
        if d is None:
            return f"*{rel}: not measured yet.*\n"
        rows, teacher_done = [], False
        for run in d["runs"]:
            for r in run["rows"]:
                if r["model"] == "teacher":
                    if teacher_done:
                        continue
                    teacher_done = True
                    data, mix = "–", "–"
                else:
                    data, mix = run["data"], ("–" if r["model"] == "baseline" else run["mix"])
                model = {"baseline": "student (no teacher)"}.get(r["model"], r["model"])
                rows.append([data, mix, model, pct(r["accuracy"]), pct(r["macro_f1"]),
                             f"{r['params'] / 1e6:.1f}M", f"{r['size_mb']:.1f}",
                             f"{r['latency_ms']:.0f}", f"{r['accuracy_vs_teacher']:.1f}%",
                             f"{r['latency_vs_teacher']:.0f}%"])
        steps = sorted({run.get("steps") for run in d["runs"]})
        who = (f"teacher {d['teacher']}, student {d['student']}; " if d.get("student") and
               d.get("teacher") else "")
        if d.get("overrides"):
            who += "settings " + ", ".join(f"`{portable(o)}`" for o in d["overrides"]) + "; "
        return (f"{link(ctx.results, rel)} ({d.get('date', '')}; {who}{d.get('nproc')} ranks, "
                f"{', '.join(str(s) for s in steps)} steps per student):\n\n"
                + table(["data", "loss mix", "model", "test accuracy", "macro-F1", "params",
                         "size (MiB)", "latency (ms / batch)", "accuracy vs teacher",
                         "latency vs teacher"], rows) + "\n")

    return render


def latency(rel: str) -> Callable[[Ctx], str]:
    def render(ctx: Ctx) -> str:
        d = ctx.load(rel)
        if d is None:
            return f"*{rel}: not measured yet.*\n"
        rows = [[r["model"], r["threads"], f"{r['latency_ms']:.1f}", f"{r['params'] / 1e6:.1f}M",
                 f"{r['size_mb']:.1f}"] for r in d["rows"]]
        return (f"{link(ctx.results, rel)} ({d.get('date', '')}; median of {d['repeats']} forward "
                f"passes of a batch of {d['batch']} x {d['max_length']} tokens):\n\n"
                + table(["model", "threads", "latency (ms)", "params", "size (MiB)"], rows) + "\n")

    return render


def condense_runs(rel: str, key: str = "nproc") -> Callable[[Ctx], str]:
    """bench_condense.py / bench_unroll_memory.py: one row per run."""

    def render(ctx: Ctx) -> str:
        d = ctx.load(rel)
        if d is None:
            return f"*{rel}: not measured yet.*\n"
        cols = [k for k in ("method", "unroll", "syn_steps", "nproc") if any(k in r for r in d["runs"])]
        rows = [[*[r.get(k, "–") for k in cols], r["iterations"],
                 f"{r['mean_iteration_seconds']:.2f}",
                 " / ".join(f"{x:,.0f}" for x in r["peak_rss_mb_per_rank"])] for r in d["runs"]]
        return (f"{link(ctx.results, rel)} ({d.get('date', '')}; `{d['config']}`):\n\n"
                + table([*cols, "iterations", "s / iteration", "peak RSS per rank (MiB)"], rows)
                + "\n")

    return render


VAL_FLAGS = {"condense.method=ncfm", "evaluate.select_by=val", "evaluate.eval_every=100"}


def runs(rels: List[str], labels: str = "hard") -> Callable[[Ctx], str]:
    """Several bench_eval.py runs side by side: what each changed, its cost, and the synthetic
    set's validation (when measured) and test accuracy under `labels`."""

    def render(ctx: Ctx) -> str:
        rows, val = [], False
        for rel in rels:
            d = ctx.load(rel)
            if d is None:
                rows.append([f"`{rel}`", "not measured yet", "–", "–", "–", "–", "–"])
                continue
            c = d.get("condense", {})
            changed = [portable(o) for o in (c.get("overrides") or []) if o not in VAL_FLAGS]
            changed += [f"eval: {portable(o)}" for o in d.get("eval_overrides") or []
                        if o not in VAL_FLAGS]
            changed += [f"all: {portable(o)}" for o in d.get("all_overrides") or []]
            entries = (d.get("evaluation_by_labels") or {"hard": d.get("evaluation", [])})
            syn = next((e for es in entries.values() for e in es if e["method"] == "synthetic"
                        and (e.get("labels") or "hard").startswith(labels)), None)
            kept = (d.get("kept") or {}).get("iteration", c.get("iterations", "–"))
            v = _metric(syn, "val_accuracy") if syn else (None, None)
            val = val or v[0] is not None
            rows.append([link(ctx.results, rel), ", ".join(f"`{o}`" for o in changed) or "–",
                         c.get("iterations", "–"),
                         f"{c['mean_iteration_seconds']:.2f}" if c.get("mean_iteration_seconds") else "–",
                         kept, pm(*v), pm(syn["mean"], syn["std"]) if syn else "–"])
        header = ["run", "changed", "iterations", "s / iteration", "set kept",
                  "validation accuracy", f"test accuracy ({labels} labels)"]
        if not val:
            header.pop(5)
            rows = [r[:5] + r[6:] for r in rows]
        return table(header, rows) + "\n"

    return render


PHASES = {"ncfm.real_features": "real-batch features (no grad)",
          "ncfm.synthetic_forward": "synthetic forward", "ncfm.synthetic_backward": "synthetic backward",
          "term.calib_loss": "calibration (forward, backward, step)", "optimizer": "optimiser step",
          "collectives": "collectives", "other": "the rest (interpolation, frequencies, Python)"}


def ncfm_profile(rel: str) -> Callable[[Ctx], str]:
    def render(ctx: Ctx) -> str:
        d = ctx.load(rel)
        if d is None:
            return f"*{rel}: not measured yet.*\n"
        prof = d["profile_ms"]
        total = prof["total"]
        rows = [[PHASES.get(k, k), f"{v:.0f}", f"{100 * v / total:.0f}%"]
                for k, v in prof.items() if k != "total"]
        rows.append(["**total**", f"**{total:.0f}**", "100%"])
        f = d["flops"]
        out = (f"{link(ctx.results, rel)} ({d.get('date', '')}; `{d['config']}`, one process, "
               f"{d['threads']} threads, {d['iters']} profiled iterations, CPU flags "
               f"`{d.get('cpu_flags', '')}`, torch {d['torch']}):\n\n"
               + table(["phase", "ms / iteration", "share"], rows) + "\n")
        out += (f"An iteration is {f['per_iteration'] / 1e9:.0f} GFLOP, run at "
                f"{f['achieved_gflops']:.1f} GFLOP/s: {100 * f['fraction_of_fp32_ceiling']:.0f}% of "
                f"the fp32 GEMM ceiling measured in the same process ({f['fp32_ceiling_gflops']:.1f} "
                f"GFLOP/s on {f['gemm_n']}² GEMMs; bf16 ceiling {f['bf16_ceiling_gflops']:.1f}).\n\n")
        base = d["levers"]["fp32"]["s_per_iter_last_half"]
        rows = [[f"`{k}`", f"{v['s_per_iter_last_half']:.2f}", f"{base / v['s_per_iter_last_half']:.2f}x",
                 f"{v['match_loss_last']:.2f}" if v.get("match_loss_last") is not None else "–"]
                for k, v in d["levers"].items()]
        out += "Levers (mean over the last half of the timed iterations):\n\n"
        out += table(["lever", "s / iteration", "speed-up", "last matching loss"], rows) + "\n"
        rows = [[k, " / ".join(str(p["value"]) for p in v),
                 " / ".join(f"{p['s_per_iter']:.2f}" for p in v)] for k, v in d["scaling"].items()]
        out += "Scaling, one setting changed at a time:\n\n"
        out += table(["setting", "values", "s / iteration"], rows) + "\n"
        png = rel[:-len(".json")] + "_scaling.png"
        if (ctx.results / png).is_file():
            out += f"![NCFM scaling](../benchmarks/results/{png})\n\n"
        nt = d.get("ncfm_vs_trajectory")
        if nt:
            out += (f"NCFM against trajectory matching in the same process: "
                    f"{nt['ncfm']['s_per_iter']:.2f} against {nt['trajectory']['s_per_iter']:.2f} s "
                    f"per iteration, {nt['time_ratio']:.2f}x.\n\n")
        return out

    return render


def time_to_accuracy(rel: str) -> Callable[[Ctx], str]:
    def render(ctx: Ctx) -> str:
        d = ctx.load(rel)
        if d is None:
            return f"*{rel}: not measured yet.*\n"
        rows = []
        for name, run in d["runs"].items():
            for i, p in enumerate(run["points"]):
                rows.append([f"{name} ({run['s_per_iter']:.2f} s / iteration)" if i == 0 else "",
                             p["iteration"], f"{p['condense_seconds']:.0f}", pct(p["val_accuracy"]),
                             pm(p["test_accuracy"], p["test_accuracy_std"])])
        out = (f"{link(ctx.results, rel)} (`{d['config']}`, {d['nproc']} ranks, {d['num_eval']} "
               f"classifiers per point):\n\n"
               + table(["method", "iteration", "condensation seconds", "validation accuracy",
                        "test accuracy"], rows) + "\n")
        t = d["summary"]["common_target"]
        secs = ", ".join(f"{k} after {v:.0f} s" for k, v in t["seconds"].items())
        out += (f"Common target (the lower of the two best validation accuracies, "
                f"{pct(t['val_accuracy'])}): {secs}; ratio {t['ratio']:.2f}.\n\n")
        png = rel[:-len(".json")] + ".png"
        if (ctx.results / png).is_file():
            out += f"![time to accuracy](../benchmarks/results/{png})\n\n"
        return out

    return render


def eval_defaults(rel: str) -> Callable[[Ctx], str]:
    def render(ctx: Ctx) -> str:
        d = ctx.load(rel)
        if d is None:
            return f"*{rel}: not measured yet.*\n"
        rows = [[name, pm(s["accuracy_mean"], s["accuracy_std"]), f"{s['wall_seconds']:.0f}",
                 f"{s['train_seconds_per_run']:.1f}", f"{s['eval_seconds_per_run']:.1f}"]
                for name, s in d["settings"].items()]
        return (f"{link(ctx.results, rel)} (`{d['config']}`):\n\n"
                + table(["setting", "test accuracy", "wall seconds", "train s / classifier",
                         "evaluation s / classifier"], rows) + "\n")

    return render


def rows_file(rel: str) -> Callable[[Ctx], str]:
    """A result of another shape: its scalar fields, then any list of flat rows as a table
    (used for files whose writer owns their schema)."""

    def render(ctx: Ctx) -> str:
        d = ctx.load(rel)
        if d is None:
            return f"*{rel}: not measured yet.*\n"
        scal = {k: v for k, v in d.items() if isinstance(v, (str, int, float, bool)) and k != "benchmark"}
        out = f"{link(ctx.results, rel)}: " + ", ".join(f"{k} `{v}`" for k, v in scal.items()) + "\n\n"
        for k, v in d.items():
            if isinstance(v, list) and v and all(isinstance(r, dict) for r in v):
                cols = [c for c in v[0] if isinstance(v[0][c], (str, int, float, bool, type(None)))]
                fmt = [[(f"{r.get(c):.4g}" if isinstance(r.get(c), float) else r.get(c, "–"))
                        for c in cols] for r in v]
                out += f"{k}:\n\n" + table(cols, fmt) + "\n"
        return out

    return render


def _summary(s: Optional[dict]) -> str:
    return pm(s["mean"], s["std"]) if s else "–"


def stock_hf(pattern: str = "eval/stock_hf_*.json") -> Callable[[Ctx], str]:
    """bench_stock_hf.py: each method trained the stock HF way and by the project's protocol."""

    def render(ctx: Ctx) -> str:
        files = sorted(str(q.relative_to(ctx.results)) for q in ctx.results.glob(pattern))
        if not files:
            return f"*{pattern}: not measured yet.*\n"
        out = ""
        for rel in files:
            d = ctx.load(rel)
            methods = [m for m in ("synthetic", "random", "herding")
                       if m in d.get("stock", {}) or m in d.get("protocol", {})]
            rows = []
            for m in methods:
                s, pr = d.get("stock", {}).get(m), d.get("protocol", {}).get(m)
                diff = pp(s["mean"] - pr["mean"]) if s and pr else "–"
                rows.append([m, _summary(s), _summary(pr), diff])
            out += (f"{link(ctx.results, rel)} ({d.get('date', '')}; {NAMES.get(d['dataset'], d['dataset'])} "
                    f"ipc {d['ipc']}, set of iteration {d.get('set_iteration')}, encoder "
                    f"{d.get('encoder')}; {d.get('steps')} steps at lr {d.get('lr')}, batch "
                    f"{d.get('batch_size')}, {d.get('runs')} runs each; {d.get('test_rows')} test rows). "
                    f"Stock: {d.get('stock', {}).get('how', '')}. Protocol: "
                    f"{d.get('protocol', {}).get('how', '')}.")
            commands = d.get("commands") or ([d["command"]] if d.get("command") else [])
            if commands:
                out += " Command" + ("s" if len(commands) > 1 else "") + ": " + \
                    "; then ".join(f"`{portable(c)}`" for c in commands) + "."
            if d.get("note"):
                out += f" Note: {d['note']}"
            out += "\n\n" + table(["method", "stock HF (`Trainer`)", "project protocol",
                                    "stock − protocol"], rows) + "\n"
        return out

    return render


def multilabel_verdicts(pattern: str) -> Callable[[Ctx], str]:
    """Multi-label bench_eval.py results: per file and label protocol, the set against the best
    real subset by micro-F1 and by macro-F1 (the quality table's rule: `yes` when the lead
    exceeds the larger std)."""

    def render(ctx: Ctx) -> str:
        lines = []
        for rel in result_files(ctx, pattern, "_quick.json"):
            d = ctx.load(rel)
            for protocol, entries in (d.get("evaluation_by_labels") or {}).items():
                syn = next((e for e in entries if e["method"] == "synthetic"), None)
                real = [e for e in entries if e["method"] in report_quality.BASELINES]
                if syn is None or not real:
                    continue
                for metric, label in (("micro_f1", "micro-F1"), ("macro_f1", "macro-F1")):
                    score = {e["method"]: {"mean": _metric(e, metric)[0],
                                           "std": _metric(e, metric)[1] or 0.0}
                             for e in [syn, *real]}
                    if any(v["mean"] is None for v in score.values()):
                        continue
                    best = max((e["method"] for e in real), key=lambda m: score[m]["mean"])
                    s, b = score["synthetic"], score[best]
                    lines.append(f"- `{rel}`, {protocol} labels, {label}: the set {pm(s['mean'], s['std'])} "
                                 f"against *{best}* {pm(b['mean'], b['std'])}: "
                                 f"{pp(s['mean'] - b['mean'])}, "
                                 f"{report_quality.verdict(s, b)}.")
        return ("\n".join(lines) + "\n") if lines else ""     # eval_file says what is missing

    return render


def recipes(pattern: str = "eval/recipes_*.json") -> Callable[[Ctx], str]:
    """bench_recipes.py: one set and the real subsets under several training recipes."""

    def render(ctx: Ctx) -> str:
        files = result_files(ctx, pattern, "_quick.json")
        if not files:
            return f"*{pattern}: not measured yet.*\n"
        out = ""
        for rel in files:
            d = ctx.load(rel)
            methods = [e["method"] for e in d["rows"][0]["entries"]] if d.get("rows") else []
            rows = []
            for r in d.get("rows", []):
                by = {e["method"]: e for e in r["entries"]}
                rows.append([f"`{r['recipe']}`", str(r["steps"]), f"{r['lr']:g}",
                             *[pm(by[m]["mean"], by[m]["std"]) if m in by else "–" for m in methods],
                             f"{r['best_real']} {pp(r['lead'])}", r["verdict"]])
            robust = d.get("recipe_robust")
            state = ("incomplete" if not d.get("complete") else
                     "ahead of the best real subset under every recipe" if robust else
                     "**not** ahead under every recipe")
            out += (f"{link(ctx.results, rel)} ({NAMES.get(d['dataset'], d['dataset'])} ipc {d['ipc']}, "
                    f"set of iteration {d.get('set_iteration')}, {d.get('num_eval')} runs per row, "
                    f"{d.get('labels')} labels; {state}). Command: `{d.get('command')}`.\n\n")
            out += table(["recipe", "steps", "lr", *methods, "set's lead over the best real",
                          "verdict"], rows) + "\n"
        return out

    return render


def result_files(ctx: Ctx, pattern: str, skip_suffix: str) -> List[str]:
    """The result files matching `pattern` (relative to the results folder), sorted, without
    those whose name ends in `skip_suffix` (side files: quick runs, text-set metadata)."""
    return sorted(str(q.relative_to(ctx.results)) for q in ctx.results.glob(pattern)
                  if not q.name.endswith(skip_suffix))


def pipeline(pattern: str = "perf/pipeline_*.json") -> Callable[[Ctx], str]:
    """bench_pipeline.py: a whole run per variant, stage seconds, speed-up and accuracies."""

    def render(ctx: Ctx) -> str:
        files = result_files(ctx, pattern, "_quick.json")
        if not files:
            return f"*{pattern}: not measured yet.*\n"
        out = ""
        for rel in files:
            d = ctx.load(rel)
            ref, cmp = d["reference"], d.get("comparison", {})
            rows = []
            for name, v in d["variants"].items():
                st, c = v["stage_seconds"], cmp.get(name, {})
                speed, cpu_speed = c.get("speedup", {}).get("total"), c.get("cpu_speedup")
                acc = ", ".join(f"{m} {pm(x['mean'], x['std'])}" for m, x in v["accuracy"].items())
                equal = "reference" if name == ref else ("yes" if c.get("equal_accuracy") else "no")
                load = v.get("load_average_after_stage")
                rows.append([f"`{name}`", f"{st['experts']:.0f}", f"{st['condense']:.0f}",
                             f"{st['evaluate']:.0f}", f"{v['total_seconds']:.0f}",
                             f"{speed:.2f}x" if speed else "–",
                             f"{v['total_cpu_seconds']:.0f}" if "total_cpu_seconds" in v else "–",
                             f"{cpu_speed:.2f}x" if cpu_speed else "–",
                             " / ".join(f"{x:.1f}" for x in load.values()) if load else "–",
                             acc, equal, f"{max(v['peak_rss_mb_so_far'].values()):,.0f}"])
            out += (f"{link(ctx.results, rel)} ({d.get('date', '')}; {NAMES.get(d['dataset'], d['dataset'])} "
                    f"ipc {d['ipc']}, {d['nproc']} ranks, {d['num_eval']} classifiers per method; "
                    f"`{d.get('command', '')}`):\n\n"
                    + table(["variant", "experts s", "condense s", "evaluate s", "total s",
                             f"wall speed-up vs `{ref}`", "CPU s", "CPU speed-up",
                             "load after each stage", "test accuracy",
                             "equal accuracy (within 1 std)", "peak RSS MiB"], rows) + "\n")
            if d.get("note"):
                out += f"{d['note']}\n\n"
        return out

    return render


def cross_arch(pattern: str = "cross_arch/*.json") -> Callable[[Ctx], str]:
    """bench_cross_arch.py: one set (as embeddings and as text) and real subsets on several encoders."""

    def render(ctx: Ctx) -> str:
        files = result_files(ctx, pattern, ".meta.json")
        if not files:
            return f"*{pattern}: not measured yet.*\n"
        out = ""
        for rel in files:
            d = ctx.load(rel)
            rows = [[r.get("model"), r["method"], r.get("n_train", "–"), r.get("num_eval", "–"),
                     pm(r["mean"], r["std"]), pm(*_metric(r, "macro_f1"))] for r in d.get("rows", [])]
            sets = d.get("sets") or [{"name": "synthetic", "text_meta": d.get("text_meta") or {}}]
            out += (f"{link(ctx.results, rel)} (`{d.get('config')}`; condensed on "
                    f"{d.get('condensed_on')}; models {', '.join(d.get('models', []))})")
            for st in sets:
                copied = (st.get("text_meta") or {}).get("copied_rows")
                if copied is not None:
                    n = len(copied) if isinstance(copied, list) else copied
                    kind = " (token-level set: its text is its exact tokens)" if st.get("tokens") else ""
                    out += (f"; rows of *{st['name']} as text*{kind} that copy a real training "
                            f"text verbatim: {n}")
            out += (f". Command: `{portable(d['command'])}`.\n\n" if d.get("command") else ".\n\n")
            out += table(["model", "method", "n_train", "runs", "test accuracy", "macro-F1"],
                         rows) + "\n" + text_verdicts(d.get("rows", []))
        return out

    return render


REAL_SUBSETS = ("random", "herding", "kmeans", "kcenter")


def text_verdicts(rows: List[dict]) -> str:
    """Per model: the best text-level row (a set decoded to text, or a token-level set) against
    the best real subset of the same size, and whether it leads by more than the larger std."""
    out = []
    for model in dict.fromkeys(r.get("model") for r in rows):
        mine = [r for r in rows if r.get("model") == model]
        text = [r for r in mine if r["method"].endswith(" as text")]
        real = [r for r in mine if r["method"] in REAL_SUBSETS]
        if not text or not real:
            continue
        t, b = max(text, key=lambda r: r["mean"]), max(real, key=lambda r: r["mean"])
        lead, big = t["mean"] - b["mean"], max(t["std"], b["std"])
        verdict = "beats it by more than the larger std" if lead > big else (
            "leads within the larger std" if lead > 0 else "does not beat it")
        out.append(f"- {model}: the best text set, *{t['method']}* {pm(t['mean'], t['std'])}, "
                   f"against the best real subset, *{b['method']}* {pm(b['mean'], b['std'])}: "
                   f"{pp(lead)}, {verdict} ({100 * big:.2f}).")
    return ("\n".join(out) + "\n\n") if out else ""


def unlisted(ctx: Ctx) -> str:
    """Every JSON under benchmarks/results/ that no section above rendered (a new kind of
    measurement appears here until it gets a section of its own)."""
    seen = set(ctx.read)
    rels = sorted(str(q.relative_to(ctx.results)) for q in ctx.results.rglob("*.json")
                  if not q.name.endswith(".meta.json"))
    rels = [r for r in rels if r not in seen and not r.startswith("quality/")]
    if not rels:
        return "Every result file is shown above.\n"
    return "".join(rows_file(r)(ctx) for r in rels)


# ---------------------------------------------------------------------------------- privacy
# per ipc: the shipped config's run (the first file present), the same settings started from
# noise, and bench_privacy.py's measurement of the sets (named "shipped" and "noise" in it)
PRIVACY = {1: (["eval/bbc_ncfm_ipc1_arch.json"], "eval/bbc_ncfm_ipc1_noise.json", "privacy/bbc_ipc1.json"),
           10: (["eval/bbc_ncfm_ipc10_shipped_fp32.json", "eval/bbc_ncfm_ipc10_herding_fast.json"],
                "eval/bbc_ncfm_ipc10_noise.json",
                "privacy/bbc_ipc10.json")}
STARTS = {1: "real articles (`random`, shipped config, 150 iterations)",
          10: "herding's real articles (shipped config in fp32)"}


def _first(ctx: Ctx, rels: List[str]) -> Optional[str]:
    return next((r for r in rels if (ctx.results / r).is_file()), None)


def _synthetic(d: Optional[dict]) -> Optional[dict]:
    if d is None:
        return None
    return next((e for e in d.get("evaluation", []) if e["method"] == "synthetic"), None)


def privacy_rows(ctx: Ctx) -> List[List[str]]:
    cells = {(c["dataset"], c["ipc"], c["labels"]): c for c in ctx.cells()}
    rows = []
    for ipc, (shipped_rels, noise_rel, leak_rel) in PRIVACY.items():
        shipped_rel = _first(ctx, shipped_rels)
        shipped = _synthetic(ctx.load(shipped_rel)) if shipped_rel else None
        noise = _synthetic(ctx.load(noise_rel))
        leak = (ctx.load(leak_rel) or {}).get("sets", {})
        cell = cells.get(("bbc", ipc, "hard")) or {}
        best = (cell.get("baselines") or {}).get(cell.get("best")) if cell.get("best") else None
        best_txt = f"{cell['best']} {pm(best['mean'], best['std'])}" if best else "–"
        for name, start, e in (("shipped", STARTS[ipc], shipped), ("noise", "`init: noise`", noise)):
            m = leak.get(name)
            rows.append([f"BBC ipc {ipc}", start,
                         pm(e["mean"], e["std"]) if e else "not measured yet",
                         pp(e["mean"] - shipped["mean"]) if (name == "noise" and e and shipped) else "–",
                         best_txt,
                         (f"{pct(m['positional_match']['mean'])} (iteration {m.get('iteration')})"
                          if m else "not measured yet"),
                         f"{m['near_copies']} of {m['sequences']}" if m else "–"])
    return rows


PRIVACY_HEADER = ["set", "start", "test accuracy", "cost of noise", "best real subset",
                  "tokens as in the closest real text (mean)", "near copies (>= 90%)"]


def privacy(ctx: Ctx) -> str:
    rows = privacy_rows(ctx)
    files = [r for shipped, noise, leak in PRIVACY.values()
             for r in (_first(ctx, shipped), noise, leak) if r and (ctx.results / r).is_file()]
    srcs = ", ".join(link(ctx.results, r) for r in files)
    return table(PRIVACY_HEADER, rows) + f"\n(hard labels, 5 classifiers each, same seeds; {srcs})\n\n"


def privacy_pending(ctx: Ctx) -> str:
    """Which halves of the privacy pairs are not measured yet (nothing when all are)."""
    missing = [f"ipc {ipc}: {rel}" for ipc, (_, noise, leak) in PRIVACY.items()
               for rel in (noise, leak) if not (ctx.results / rel).is_file()]
    return ("**Not measured yet**: " + "; ".join(missing) + ". ") if missing else ""


def privacy_leak(rel: str) -> Callable[[Ctx], str]:
    """bench_privacy.py: how close each set's nearest-token reading is to real training texts."""

    def render(ctx: Ctx) -> str:
        d = ctx.load(rel)
        if d is None:
            return f"*{rel}: not measured yet.*\n"
        rows = []
        for name, s in d["sets"].items():
            pmx, ovl = s["positional_match"], s["token_overlap"]
            rows.append([name, f"`{s.get('init')}`", s.get("iteration"), s["sequences"],
                         f"{pct(pmx['mean'])} ({pct(pmx['min'])} – {pct(pmx['max'])})",
                         f"{pct(ovl['mean'])} ({pct(ovl['min'])} – {pct(ovl['max'])})",
                         s["near_copies"]])
        return (f"{link(ctx.results, rel)} (`{d['config']}`, max_length {d['max_length']}):\n\n"
                + table(["set", "init", "iteration", "sequences",
                         "same token at the same position as the closest real text: mean (min – max)",
                         "distinct tokens found in the closest real text: mean (min – max)",
                         f"near copies (>= {100 * d['near']:.0f}% positions)"], rows) + "\n")

    return render


# ---------------------------------------------------------------------------------- the page
def render_doc(results: Path) -> str:
    from benchmarks.results_sections import INTRO, SECTIONS

    ctx = Ctx(results)
    parts = [INTRO]
    toc = []
    body = []
    for s in SECTIONS:
        anchor = re.sub(r"[^a-z0-9 -]", "", s["title"].lower()).replace(" ", "-")
        toc.append(f"- [{s['title']}](#{anchor})")
        text = f"## {s['title']}\n\n"
        if s.get("note"):
            text += s["note"].strip() + "\n\n"
        for cmd in s.get("commands", []):
            text += f"    {cmd}\n"
        text += "\n" if s.get("commands") else ""
        for block in s.get("blocks", []):
            if isinstance(block, str):
                text += block.strip() + "\n\n"
            else:
                text += block(ctx)
        body.append(text.rstrip() + "\n")
    parts.append("\n".join(toc) + "\n")
    parts += body
    return "\n".join(parts)


def readme_blocks(results: Path) -> Dict[str, str]:
    ctx = Ctx(results)
    summary = ("| dataset, ipc | condensed set | best real subset of the same size | set wins? "
               "| % of full |\n|---|---|---|---|---|\n" + "\n".join(summary_lines(ctx)) + "\n")
    return {"results": summary, "privacy": table(PRIVACY_HEADER, privacy_rows(ctx))}


def rewrite_blocks(text: str, blocks: Dict[str, str]) -> str:
    for name, content in blocks.items():
        pat = re.compile(rf"(<!-- {name}:begin -->\n).*?(<!-- {name}:end -->)", re.S)
        text = pat.sub(lambda m, c=content: m.group(1) + c + m.group(2), text)
    return text


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results_dir", type=Path, default=RESULTS)
    p.add_argument("--out", type=Path, default=DOC, help="the page to write (default docs/results.md)")
    p.add_argument("--readme", type=Path, default=README,
                   help="the README whose marked blocks are rewritten ('' for none)")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 when --out or the README blocks are stale")
    a = p.parse_args(argv)
    doc = render_doc(a.results_dir)
    targets = [(a.out, doc)]
    if str(a.readme) and a.readme.is_file():
        readme = a.readme.read_text()
        targets.append((a.readme, rewrite_blocks(readme, readme_blocks(a.results_dir))))
    stale = [path for path, text in targets if not path.is_file() or path.read_text() != text]
    if a.check:
        for path in stale:
            print(f"{path} is stale: run `make results`", file=sys.stderr)
        return 1 if stale else 0
    for path, text in targets:
        if path in stale:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(text)
            tmp.replace(path)
            print(f"written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
