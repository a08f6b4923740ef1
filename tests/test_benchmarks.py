"""Every benchmark of `make bench` runs its --quick path on the smoke config and writes JSON with
its figures and the machine they were measured on (the figures themselves are never asserted
against a time: benchmarks measure, tests check that they can)."""
from __future__ import annotations

import json

import pytest

from benchmarks import (
    bench_condense,
    bench_eval,
    bench_ncfm,
    bench_pipeline,
    bench_precision,
    bench_time_to_accuracy,
    bench_unroll_memory,
)

MACHINE_KEYS = {"threads", "torch", "git_commit", "date", "cpus"}


def test_bench_ncfm_quick(tmp_path, smoke_experts):
    assert bench_ncfm.main(["--quick", "--out", str(tmp_path), "--threads", "1",
                            "--set", f"pretrain.expert_dir={smoke_experts}"]) == 0
    r = json.loads((tmp_path / "ncfm_bbc_ipc2_quick.json").read_text())
    assert MACHINE_KEYS <= set(r) and r["threads"] == 1
    prof = r["profile_ms"]
    assert prof["ncfm.real_features"] > 0 and prof["ncfm.synthetic_forward"] > 0
    assert prof["total"] >= sum(v for k, v in prof.items() if k not in ("total", "other")) - 1e-6
    f = r["flops"]
    assert f["per_iteration"] > 0 and f["fp32_ceiling_gflops"] > 0
    # the fraction is the achieved rate over the ceiling (both timed here: no bound on either)
    assert f["fraction_of_fp32_ceiling"] > 0
    assert f["fraction_of_fp32_ceiling"] == pytest.approx(
        f["achieved_gflops"] / f["fp32_ceiling_gflops"], rel=2e-2, abs=2e-4)
    assert set(r["levers"]) == {"fp32", "real_cache", "bf16", "fast"}
    assert all(v["s_per_iter"] > 0 for v in r["levers"].values())
    assert [row["value"] for row in r["scaling"]["ipc"]] == [1, 2]
    assert r["ncfm_vs_trajectory"]["time_ratio"] > 0
    assert (tmp_path / "ncfm_bbc_ipc2_quick_scaling.png").stat().st_size > 1000


def test_bench_condense_and_unroll_quick(tmp_path, smoke_experts):
    experts = ["--set", f"pretrain.expert_dir={smoke_experts}"]
    # two ranks only (one rank is every other test's path); each run is a fresh torchrun
    assert bench_condense.main(["--quick", "--out", str(tmp_path), "--nprocs", "2", "--method",
                                "ncfm", "trajectory", *experts]) == 0
    r = json.loads((tmp_path / "condense_bbc_ipc2_quick.json").read_text())
    assert MACHINE_KEYS <= set(r)
    assert [(x["method"], x["nproc"]) for x in r["runs"]] == [("ncfm", 2), ("trajectory", 2)]
    assert all(len(x["peak_rss_mb_per_rank"]) == x["nproc"] for x in r["runs"])
    assert set(r["trajectory_over_ncfm"]) == {"2"}
    assert all(v["time"] > 0 and v["memory"] > 0 for v in r["trajectory_over_ncfm"].values())
    assert bench_unroll_memory.main(["--quick", "--steps", "2", "--out", str(tmp_path), *experts]) == 0
    u = json.loads((tmp_path / "unroll_memory_bbc_ipc2_quick.json").read_text())
    assert [(x["unroll"], x["syn_steps"]) for x in u["runs"]] == [("full", 2), ("tesla", 2)]


def test_bench_time_to_accuracy_quick(tmp_path, smoke_experts):
    assert bench_time_to_accuracy.main(["--quick", "--out", str(tmp_path), "--work", str(tmp_path),
                                        "--set", f"pretrain.expert_dir={smoke_experts}"]) == 0
    r = json.loads((tmp_path / "tta_bbc_ipc2_quick.json").read_text())
    assert MACHINE_KEYS <= set(r) and set(r["runs"]) == {"ncfm", "trajectory"}
    for run in r["runs"].values():
        pts = run["points"]
        assert [p["iteration"] for p in pts] == [1, 2]
        # the seconds are the condensation's own, growing with the iterations
        assert 0 < pts[0]["condense_seconds"] < pts[1]["condense_seconds"]
        assert all(0.0 <= p["val_accuracy"] <= 1.0 and 0.0 <= p["test_accuracy"] <= 1.0 for p in pts)
    s = r["summary"]
    target = s["common_target"]["val_accuracy"]
    assert target == min(s["ncfm"]["best_val_accuracy"], s["trajectory"]["best_val_accuracy"])
    assert all(v is not None for v in s["common_target"]["seconds"].values())
    assert (tmp_path / "tta_bbc_ipc2_quick.png").stat().st_size > 1000


def test_first_reaching_and_the_common_target():
    runs = {"a": {"points": [{"iteration": 1, "condense_seconds": 1.0, "val_accuracy": 0.5,
                              "test_accuracy": 0.4, "test_accuracy_std": 0.0},
                             {"iteration": 2, "condense_seconds": 2.0, "val_accuracy": 0.8,
                              "test_accuracy": 0.7, "test_accuracy_std": 0.0}]},
            "b": {"points": [{"iteration": 5, "condense_seconds": 10.0, "val_accuracy": 0.6,
                              "test_accuracy": 0.5, "test_accuracy_std": 0.0},
                             {"iteration": 9, "condense_seconds": 30.0, "val_accuracy": 0.7,
                              "test_accuracy": 0.6, "test_accuracy_std": 0.0}]}}
    s = bench_time_to_accuracy.summarize(runs)
    assert s["a"]["best_iteration"] == 2 and s["b"]["seconds_to_best"] == 30.0
    assert s["common_target"] == {"val_accuracy": 0.7, "seconds": {"a": 2.0, "b": 30.0}, "ratio": 15.0}


def _entry(method: str, accs, labels: str = "hard", seeds=(1, 2, 3), ipc: int = 10) -> dict:
    import numpy as np
    return {"method": method, "labels": labels, "ipc": ipc, "steps": 100, "num_eval": len(accs),
            "mean": float(np.mean(accs)), "std": float(np.std(accs)),
            "runs": [{"seed": s, "accuracy": a} for s, a in zip(seeds, accs)]}


def test_report_quality_verdicts_follow_the_rule(tmp_path):
    from benchmarks import report_quality

    def write(name, date, by_labels):
        (tmp_path / name).write_text(json.dumps({"benchmark": "evaluate", "date": date,
                                                 "evaluation_by_labels": by_labels}))

    # trec ipc 10: the shipped-config file has the synthetic row only; baselines come from an
    # older file with the same seeds; a newer baseline with other seeds must not be used
    write("trec_ncfm_ipc10_herding_fast.json", "2026-11-29", {
        "hard": [_entry("synthetic", [0.90, 0.91, 0.92])]})
    write("trec_ncfm_ipc10.json", "2026-11-20", {
        "hard": [_entry("random", [0.70, 0.72, 0.74]), _entry("herding", [0.86, 0.87, 0.88])]})
    # the soft protocol's synthetic row from the next file of the cell's sources
    write("trec_ncfm_ipc10_herding.json", "2026-11-25", {
        "expert_soft": [_entry("synthetic", [0.90, 0.91, 0.92], "expert_soft"),
                        _entry("random", [0.88, 0.90, 0.92], "expert_soft")]})
    write("trec_other_ipc10.json", "2026-11-30", {
        "hard": [_entry("herding", [0.99, 0.99, 0.99], seeds=(7, 8, 9))]})
    # ... nor a newer one with the same seeds chosen on validation (another selection pool)
    write("trec_ncfm_ipc10_val.json", "2026-11-30", {
        "hard": [{**_entry("herding", [0.98, 0.98, 0.98]), "select_by": "val"}]})
    # sst2 ipc 1: synthetic below the best baseline
    write("sst2_ncfm_ipc1.json", "2026-11-29", {
        "hard": [_entry("synthetic", [0.50, 0.52], seeds=(1, 2), ipc=1),
                 _entry("random", [0.55, 0.56], seeds=(1, 2), ipc=1)]})
    # sst2 ipc 10: k-means from a baselines-only file (bench_eval --no-set) is the best real
    # subset; % of full reads the converged full (2 epochs, recorded), not the newer 300-step one
    # of 0.7 epochs (300 x 16 / 6920)
    write("sst2_ncfm_ipc10_herding_fast.json", "2026-11-29", {
        "hard": [_entry("synthetic", [0.70, 0.70, 0.70]), _entry("herding", [0.60, 0.61, 0.62])]})
    write("sst2_baselines_ipc1.json", "2026-12-02", {
        "hard": [{**_entry("full", [0.80, 0.80, 0.80], seeds=(4, 5, 6), ipc=1), "n_train": 6920,
                  "steps": 865, "epochs": 2.0}]})
    write("sst2_baselines_ipc10.json", "2026-12-02", {
        "hard": [_entry("kmeans", [0.66, 0.67, 0.68])]})
    write("sst2_ncfm_ipc50.json", "2026-12-03", {
        "hard": [{**_entry("full", [0.90, 0.90, 0.90], ipc=50), "n_train": 6920, "steps": 300}]})
    # another benchmark's JSON in the same folder is not an evaluation and is skipped
    (tmp_path / "stock_hf_trec_ipc10.json").write_text(json.dumps({"benchmark": "stock_hf", "rows": []}))
    assert report_quality.main(["--results_dir", str(tmp_path), "--out", str(tmp_path)]) == 0
    cells = {(c["dataset"], c["ipc"], c["labels"]): c
             for c in json.loads((tmp_path / "verdicts.json").read_text())}
    hard = cells[("trec", 10, "hard")]
    assert hard["best"] == "herding" and hard["verdict"] == "yes"            # +4 pp > 0.82 std
    assert hard["baselines"]["herding"]["file"] == "trec_ncfm_ipc10.json"
    assert abs(hard["lead"] - 0.04) < 1e-9
    soft = cells[("trec", 10, "expert_soft")]
    assert soft["verdict"] == "ahead, within std"                          # +0.0 < 1.63 std
    assert cells[("sst2", 1, "hard")]["verdict"] == "no"
    sst10 = cells[("sst2", 10, "hard")]
    assert sst10["best"] == "kmeans" and sst10["verdict"] == "yes"         # +3 pp > 0.82 std
    assert sst10["full"]["file"] == "sst2_baselines_ipc1.json" and sst10["full"]["epochs"] == 2.0
    assert abs(sst10["of_full"] - 0.70 / 0.80) < 1e-9
    assert hard["full"] is None and hard["of_full"] is None                # trec: no full at all
    table = (tmp_path / "verdicts.md").read_text()
    assert "87.5% of full" in table and "- full, sst2 (hard labels): 80.00 ± 0.00%, 2 epochs" in table
    assert "| bbc | 50 | not measured | not measured |" in table


def test_bench_eval_keeps_the_set_chosen_on_validation(tmp_path):
    summary = {"final_iteration": 500, "synthetic_set": str(tmp_path / "syn_data_500.pth")}
    assert bench_eval.kept_set(tmp_path, summary, "last")["iteration"] == 500
    with pytest.raises(SystemExit, match="condense.eval_it"):   # no choice was made: say why
        bench_eval.kept_set(tmp_path, summary, "best")
    best = {"iteration": 300, "synthetic_set": str(tmp_path / "syn_data_300.pth"),
            "val_accuracy_mean": 0.93, "chosen_by": "validation slice of the training split"}
    (tmp_path / "best_iteration.json").write_text(json.dumps(best))
    assert bench_eval.kept_set(tmp_path, summary, "best") == best


def test_results_page_is_generated_from_the_committed_json(tmp_path):
    """docs/results.md and README.md's generated blocks are what `make results` writes from
    benchmarks/results/ today: a figure cannot drift from its JSON (run `make results`)."""
    from benchmarks import report_results
    from benchmarks.common import ROOT

    readme = tmp_path / "README.md"
    readme.write_text((ROOT / "README.md").read_text())
    out = tmp_path / "results.md"
    assert report_results.main(["--out", str(out), "--readme", str(readme)]) == 0
    assert out.read_text() == (ROOT / "docs" / "results.md").read_text(), \
        "docs/results.md is stale: run `make results`"
    assert readme.read_text() == (ROOT / "README.md").read_text(), \
        "README.md's results blocks are stale: run `make results`"
    assert report_results.main(["--out", str(out), "--readme", str(readme), "--check"]) == 0
    from benchmarks import report_quality

    assert report_quality.main(["--out", str(tmp_path)]) == 0
    for name in ("verdicts.md", "verdicts.json"):
        assert (tmp_path / name).read_text() == (ROOT / "benchmarks" / "results" / "quality" / name
                                                 ).read_text(), f"quality/{name} is stale: run `make results`"


def test_results_page_renders_a_new_measurement(tmp_path):
    """A changed JSON figure changes the page, and --check reports the stale page."""
    import shutil

    from benchmarks import report_results
    from benchmarks.common import RESULTS

    results = tmp_path / "results"
    shutil.copytree(RESULTS, results)
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:begin -->\nold\n<!-- results:end -->\n"
                      "<!-- privacy:begin -->\n<!-- privacy:end -->\nend\n")
    out = tmp_path / "results.md"
    args = ["--results_dir", str(results), "--out", str(out), "--readme", str(readme)]
    assert report_results.main(args) == 0
    page = out.read_text()
    path = results / "eval" / "bbc_ncfm_ipc1_arch.json"
    data = json.loads(path.read_text())
    row = data["evaluation"][0]                      # the set's row, as committed
    shown = f"{100 * row['mean']:.2f} ± {100 * row['std']:.2f}%"
    assert shown in page and "eval/bbc_ncfm_ipc1_arch.json" in page
    # a path of the measuring machine is shown as what a reader's own path ends in
    assert "`dataset.path=.../sms-spam.csv`" in page and "site-packages" not in page
    assert report_results.portable("k=[C:\\x\\y.pth, /z/w], a=rel/b.csv, lr=1e-4") == \
        "k=[.../y.pth, .../w], a=rel/b.csv, lr=1e-4"
    text = readme.read_text()
    assert "old" not in text and f"| BBC ipc 1 | {shown} |" in text
    assert text.startswith("intro\n") and text.endswith("end\n")
    data["evaluation"][0]["mean"] = 0.5
    path.write_text(json.dumps(data))
    assert report_results.main([*args, "--check"]) == 1            # the page no longer matches
    assert report_results.main(args) == 0
    assert f"50.00 ± {100 * row['std']:.2f}%" in out.read_text()
    # a stock-HF measurement gets its table; a file of a kind no section knows is still shown
    summary = {"mean": 0.9, "std": 0.01}
    (results / "eval" / "stock_hf_bbc_ipc1.json").write_text(json.dumps({
        "benchmark": "stock_hf", "dataset": "bbc", "ipc": 1, "steps": 100, "lr": 1e-4,
        "stock": {"how": "Trainer", "synthetic": summary, "random": {"mean": 0.6, "std": 0.1}},
        "protocol": {"how": "evaluate", "synthetic": {"mean": 0.89, "std": 0.02},
                     "random": {"mean": 0.5, "std": 0.02}}}))
    (results / "perf" / "new_kind.json").write_text(json.dumps({"benchmark": "new", "seconds": 1.5}))
    assert report_results.main(args) == 0
    page = out.read_text()
    assert "| synthetic | 90.00 ± 1.00% | 89.00 ± 2.00% | +1.00 pp |" in page
    assert "| random | 60.00 ± 10.00% | 50.00 ± 2.00% | +10.00 pp |" in page
    assert "perf/new_kind.json" in page and "seconds `1.5`" in page


def test_multilabel_results_render_micro_f1_and_their_verdicts(tmp_path):
    """A multi-label bench_eval file gets subset accuracy, macro- and micro-F1 columns, and the
    verdict lines compare the set with the best real subset on each F1 by the quality rule."""
    from benchmarks import report_results

    def entry(method, acc, micro, macro):
        return {"method": method, "n_train": 90, "mean": acc, "std": 0.01, "labels": "hard",
                "metrics": {"accuracy": {"mean": acc, "std": 0.01},
                            "micro_f1": {"mean": micro[0], "std": micro[1]},
                            "macro_f1": {"mean": macro[0], "std": macro[1]}}}
    entries = [entry("synthetic", 0.30, (0.50, 0.02), (0.10, 0.01)),
               entry("random", 0.20, (0.40, 0.03), (0.12, 0.05)),
               entry("kmeans", 0.25, (0.45, 0.01), (0.08, 0.01))]
    results = tmp_path / "results"
    (results / "eval").mkdir(parents=True)
    (results / "eval" / "reuters_ncfm_ipc1.json").write_text(json.dumps({
        "dataset": "reuters", "ipc": 1, "condense": {"iterations": 100}, "date": "2026-12-02",
        "evaluation": entries, "evaluation_by_labels": {"hard": entries}}))
    ctx = report_results.Ctx(results)
    page = report_results.eval_file("eval/reuters_ncfm_ipc1.json")(ctx)
    assert "test subset accuracy (hard labels) | macro-F1 | micro-F1 |" in page
    assert "| synthetic | 90 | 30.00 ± 1.00% | 10.00 ± 1.00% | 50.00 ± 2.00% |" in page
    lines = report_results.multilabel_verdicts("eval/reuters_*.json")(ctx)
    assert "micro-F1: the set 50.00 ± 2.00% against *kmeans* 45.00 ± 1.00%: +5.00 pp, yes." in lines
    assert "macro-F1: the set 10.00 ± 1.00% against *random* 12.00 ± 5.00%: -2.00 pp, no." in lines
    assert report_results.multilabel_verdicts("eval/none_*.json")(ctx) == ""
    # a baselines-only run chosen on validation shows the validation micro-F1 it was chosen by
    chosen = {**entries[1], "metrics": {**entries[1]["metrics"],
                                        "val_accuracy": {"mean": 0.15, "std": 0.01},
                                        "val_micro_f1": {"mean": 0.27, "std": 0.01}}}
    (results / "eval" / "reuters_baselines_ipc1.json").write_text(json.dumps({
        "dataset": "reuters", "ipc": 1, "date": "2026-12-02", "evaluation": [chosen],
        "evaluation_by_labels": {"hard": [chosen]}}))
    page = report_results.eval_file("eval/reuters_baselines_ipc1.json")(ctx)
    assert "evaluation only" in page and "validation micro-F1 |" in page
    assert ("| random | 90 | 20.00 ± 1.00% | 12.00 ± 5.00% | 40.00 ± 3.00% | 15.00 ± 1.00% "
            "| 27.00 ± 1.00% |") in page
    assert report_results.multilabel_verdicts("eval/reuters_*.json")(ctx) == lines   # no set: no verdict


def test_privacy_matches_find_a_copied_text_and_not_noise():
    """bench_privacy's measure: a sequence that reads back as a real text matches it fully, a
    shifted copy keeps its tokens but not their positions, and unrelated tokens match neither."""
    import torch

    from benchmarks.bench_privacy import best_matches

    special = {0, 101, 102}                                    # [PAD], [CLS], [SEP]
    real = torch.tensor([[101, 5, 6, 7, 8, 102, 0, 0], [101, 9, 10, 11, 12, 13, 14, 102]])
    real_mask = (real != 0).long()
    copy = real[1].clone()
    assert best_matches(copy, real_mask[1], real, real_mask, special) == (1.0, 1.0)
    shifted = torch.tensor([101, 101, 9, 10, 11, 12, 13, 14])
    pos, ovl = best_matches(shifted, torch.ones(8, dtype=torch.long), real, real_mask, special)
    assert pos == 0.0 and ovl == 1.0
    other = torch.tensor([101, 20, 21, 22, 23, 102, 0, 0])
    assert best_matches(other, (other != 0).long(), real, real_mask, special) == (0.0, 0.0)
    half = torch.tensor([101, 5, 6, 30, 31, 102, 0, 0])        # two of four tokens in place
    assert best_matches(half, (half != 0).long(), real, real_mask, special) == (0.5, 0.5)


def test_bench_pipeline_quick(tmp_path):
    """The whole pipeline twice (seed padding, then the shipped dynamic padding), stage by stage."""
    assert bench_pipeline.main(["--quick", "--work", str(tmp_path / "work"),
                                "--out", str(tmp_path)]) == 0
    r = json.loads((tmp_path / "pipeline_bbc_ipc2_quick.json").read_text())
    assert r["reference"] == "before" and set(r["variants"]) == {"before", "after"}
    before, after = r["variants"]["before"], r["variants"]["after"]
    assert "dataset.pad_to_max_length=true" in before["overrides"]
    assert "dataset.pad_to_max_length=true" not in after["overrides"]
    for v in (before, after):
        assert set(v["stage_seconds"]) == {"experts", "condense", "evaluate"}
        assert all(t > 0 for t in v["stage_seconds"].values())
        assert v["total_seconds"] == pytest.approx(sum(v["stage_seconds"].values()), abs=0.2)
        assert set(v["accuracy"]) == {"synthetic", "random", "herding"}
        assert all(len(x["runs"]) == 1 and 0 <= x["mean"] <= 1 for x in v["accuracy"].values())
        assert len(v["expert_test_accuracy"]) == 2 and v["condense_iterations"] == 2
        assert v["peak_rss_mb_so_far"]["evaluate"] >= v["peak_rss_mb_so_far"]["experts"] > 0
        assert set(v["stage_cpu_seconds"]) == set(v["stage_seconds"])
        assert all(t > 0 for t in v["stage_cpu_seconds"].values())
        assert set(v["load_average_after_stage"]) == set(v["stage_seconds"])
    cmp = r["comparison"]["after"]
    assert set(cmp["speedup"]) == {"experts", "condense", "evaluate", "total"}
    assert cmp["speedup"]["total"] == pytest.approx(before["total_seconds"] / after["total_seconds"],
                                                    rel=1e-2)
    assert set(cmp["within_one_std"]) == {"synthetic", "random", "herding"}
    assert cmp["cpu_speedup"] == pytest.approx(before["total_cpu_seconds"] / after["total_cpu_seconds"],
                                               rel=1e-2)

    # and the results page renders it (a full run's file; the quick one is left off the page)
    from benchmarks import report_results
    results = tmp_path / "results"
    (results / "perf").mkdir(parents=True)
    (results / "perf" / "pipeline_bbc_ipc2.json").write_text(json.dumps(r))
    page = report_results.pipeline()(report_results.Ctx(results))
    assert "| `before` |" in page and "| `after` |" in page and "reference" in page
    assert f"{cmp['speedup']['total']:.2f}x" in page
    (results / "perf" / "pipeline_bbc_ipc2.json").rename(results / "perf" / "pipeline_bbc_ipc2_quick.json")
    assert "not measured yet" in report_results.pipeline()(report_results.Ctx(results))


def test_bench_precision_quick(tmp_path):
    out = tmp_path / "p.json"
    assert bench_precision.main(["--quick", "--steps", "2", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert MACHINE_KEYS <= set(r)
    assert [(row["precision"], row["optimizer"], row["fused"]) for row in r["rows"]] == [
        ("fp32", "fused", True), ("bf16", "fused", True), ("fp32", "loop", False),
        ("bf16", "loop", False)]
    assert all(len(row["step_seconds"]) == 2 and row["median_step_seconds"] > 0 for row in r["rows"])
    assert r["auto_resolves_to"] == ("bf16" if r["bf16_native"] else "fp32")
    med = [row["median_step_seconds"] for row in r["rows"]]
    assert r["bf16_vs_fp32_step_time"] == pytest.approx(med[1] / med[0], abs=0.01)
    assert r["fused_vs_loop_step_time"] == pytest.approx(
        {"fp32": med[0] / med[2], "bf16": med[1] / med[3]}, abs=0.01)


def test_bench_eval_holds_the_validation_slice_out_of_the_condensation():
    """--eval_set evaluate.select_by=val (and val_fraction) reach the condensation, whose
    condensation_split then leaves the validation rows out; other evaluation keys do not."""
    from types import SimpleNamespace as A
    a = A(eval_set=["evaluate.select_by=val", "evaluate.eval_every=100",
                    "evaluate.val_fraction=0.2"], extra=["condense.niter=5"])
    assert bench_eval.condense_overrides(a) == ["evaluate.select_by=val",
                                                "evaluate.val_fraction=0.2", "condense.niter=5"]
    assert bench_eval.condense_overrides(A(eval_set=["evaluate.steps=3"], extra=[])) == []


def test_bench_eval_baselines_alone_train_experts_only_when_something_needs_them():
    """--no-set with random (and full) under hard labels needs no expert; a feature selector,
    expert labels or a condensation do."""
    from types import SimpleNamespace as A
    assert not bench_eval.needs_experts(A(baselines="random", with_set=False, label_modes=["hard"]))
    assert bench_eval.needs_experts(A(baselines="random,kmeans", with_set=False, label_modes=["hard"]))
    assert bench_eval.needs_experts(A(baselines="random", with_set=False, label_modes=["expert_soft"]))
    assert bench_eval.needs_experts(A(baselines="none", with_set=True, label_modes=["hard"]))


def test_bench_eval_own_config_gets_the_shipped_layer_of_each_ipc():
    """--config: a dataset config of the user's own (the custom template) runs each ipc with the
    shipped per-ipc layer, as `--ipc N` gives a user; without it, the shipped config of the ipc."""
    from types import SimpleNamespace as A

    from utils.config import load_config, parse_set
    shared = ["--set", "dataset.name=mine"]
    for ipc, init, lr_img in ((1, "random", 0.1), (10, "herding", 0.01)):
        path, common = bench_eval.stage_config(A(config="config/datasets/custom.yaml"), ipc, shared)
        cfg = load_config(path, [parse_set(v) for v in common[1::2]])
        assert (cfg.dataset.name, cfg.condense.ipc, cfg.condense.init, cfg.optimization.lr_img) == (
            "mine", ipc, init, lr_img)
    path, common = bench_eval.stage_config(A(config=None, dataset="bbc"), 10, shared)
    assert path.endswith("config/ipc10/bbc.yaml") and common == shared
