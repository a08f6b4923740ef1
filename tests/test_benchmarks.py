"""Every benchmark of `make bench` runs its --quick path on the smoke config and writes JSON with
its figures and the machine they were measured on (the figures themselves are never asserted
against a time: benchmarks measure, tests check that they can)."""
from __future__ import annotations

import json

from benchmarks import bench_condense, bench_ncfm, bench_time_to_accuracy, bench_unroll_memory

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
    assert 0 < f["fraction_of_fp32_ceiling"] < 1
    assert set(r["levers"]) == {"fp32", "real_cache", "bf16", "fast"}
    assert all(v["s_per_iter"] > 0 for v in r["levers"].values())
    assert [row["value"] for row in r["scaling"]["ipc"]] == [1, 2]
    assert r["ncfm_vs_trajectory"]["time_ratio"] > 0
    assert (tmp_path / "ncfm_bbc_ipc2_quick_scaling.png").stat().st_size > 1000


def test_bench_condense_and_unroll_quick(tmp_path, smoke_experts):
    experts = ["--set", f"pretrain.expert_dir={smoke_experts}"]
    assert bench_condense.main(["--quick", "--out", str(tmp_path), "--method", "ncfm",
                                "trajectory", *experts]) == 0
    r = json.loads((tmp_path / "condense_bbc_ipc2_quick.json").read_text())
    assert MACHINE_KEYS <= set(r)
    assert [(x["method"], x["nproc"]) for x in r["runs"]] == [
        ("ncfm", 1), ("ncfm", 2), ("trajectory", 1), ("trajectory", 2)]
    assert all(len(x["peak_rss_mb_per_rank"]) == x["nproc"] for x in r["runs"])
    assert set(r["trajectory_over_ncfm"]) == {"1", "2"} or set(r["trajectory_over_ncfm"]) == {1, 2}
    assert bench_unroll_memory.main(["--quick", "--out", str(tmp_path), *experts]) == 0
    u = json.loads((tmp_path / "unroll_memory_bbc_ipc2_quick.json").read_text())
    assert [(x["unroll"], x["syn_steps"]) for x in u["runs"]] == [
        ("full", 1), ("full", 2), ("tesla", 1), ("tesla", 2)]


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
