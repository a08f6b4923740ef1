"""Every benchmark of `make bench` runs its --quick path on the smoke config and writes JSON with
its figures and the machine they were measured on (the figures themselves are never asserted
against a time: benchmarks measure, tests check that they can)."""
from __future__ import annotations

import json

from benchmarks import bench_condense, bench_ncfm, bench_unroll_memory

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
