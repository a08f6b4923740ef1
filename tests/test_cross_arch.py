"""benchmarks/bench_cross_arch.py on config/smoke.yaml: a set as embeddings and as text beside real
subsets, under the evaluation protocol, with the text set's verbatim-copy check."""
from __future__ import annotations

import json

from benchmarks import bench_cross_arch
from condense import condense_script_text
from tests.conftest import SMOKE


def test_cross_arch_rows_and_the_text_set(tmp_path, smoke_experts):
    experts = f"pretrain.expert_dir={smoke_experts}"
    # one step at a negligible rate: the set is still the real rows it started from
    assert condense_script_text.main(["--config_path", SMOKE, "--output_dir", str(tmp_path / "c"),
                                      "--set", experts, "--set", "condense.niter=1",
                                      "--set", "optimization.lr_img=1e-9"]) == 0
    out = tmp_path / "xa.json"
    syn = str(tmp_path / "c" / "distilled_data" / "syn_data_1.pth")
    assert bench_cross_arch.main(["--config", SMOKE, "--set_path", syn, "--set_path", f"again={syn}",
                                  "--models", "random", "--baselines", "random,kmeans",
                                  "--num_eval", "2", "--set", experts, "--set", "evaluate.steps=3",
                                  "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = {r["method"]: r for r in result["rows"]}
    assert list(rows) == ["synthetic", "synthetic as text", "again", "again as text", "random", "kmeans"]
    assert rows["again"]["mean"] == rows["synthetic"]["mean"]        # the same set, the same seeds
    assert [s["name"] for s in result["sets"]] == ["synthetic", "again"]
    assert (tmp_path / "xa_again_text.jsonl").read_text() == (tmp_path / "xa_text.jsonl").read_text()
    assert all(r["num_eval"] == 2 and 0.0 <= r["mean"] <= 1.0 for r in rows.values())
    assert rows["synthetic as text"]["n_train"] == rows["synthetic"]["n_train"] == 10
    assert sum(len(v) for v in rows["kmeans"]["selected"].values()) == 10
    lines = (tmp_path / "xa_text.jsonl").read_text().splitlines()
    assert len(lines) == 10 and {"text", "label", "class_name"} <= set(json.loads(lines[0]))
    # decoded from real rows: every row is a (truncated) copy of a training text, and says so
    assert result["text_meta"]["no_real_row_copied"] is False
    assert len(result["text_meta"]["copied_rows"]) == 10
