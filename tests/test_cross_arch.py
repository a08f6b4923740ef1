"""A set beside real subsets on config/smoke.yaml: benchmarks/bench_cross_arch.py (as embeddings
and as text, with the text set's verbatim-copy check) and benchmarks/bench_recipes.py (under
several training recipes, same seeds)."""
from __future__ import annotations

import json

import pytest

from benchmarks import bench_cross_arch, bench_recipes
from condense import condense_script_text
from tests.conftest import SMOKE


@pytest.fixture(scope="module")
def smoke_set(tmp_path_factory, smoke_experts) -> str:
    """One step at a negligible rate: the set is still the real rows it started from."""
    out = tmp_path_factory.mktemp("smoke_set")
    assert condense_script_text.main(["--config_path", SMOKE, "--output_dir", str(out),
                                      "--set", f"pretrain.expert_dir={smoke_experts}",
                                      "--set", "condense.niter=1",
                                      "--set", "optimization.lr_img=1e-9"]) == 0
    return str(out / "distilled_data" / "syn_data_1.pth")


def test_cross_arch_rows_and_the_text_set(tmp_path, smoke_experts, smoke_set):
    experts = f"pretrain.expert_dir={smoke_experts}"
    out = tmp_path / "xa.json"
    syn = smoke_set
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
    # --append: another encoder's rows (another vocabulary and width: text rows only) join the file
    assert bench_cross_arch.main(["--config", SMOKE, "--set_path", syn, "--set_path", f"again={syn}",
                                  "--models", "all-MiniLM-L6-v2", "--baselines", "random",
                                  "--num_eval", "1", "--set", experts, "--set", "evaluate.steps=3",
                                  "--out", str(out), "--append"]) == 0
    merged = json.loads(out.read_text())
    assert [(r["model"], r["method"], r["num_eval"]) for r in merged["rows"]][6:] == [
        ("all-MiniLM-L6-v2", m, 1) for m in ("synthetic as text", "again as text", "random")]
    assert merged["rows"][:6] == result["rows"] and len(merged["commands"]) == 2
    assert merged["models"] == ["random", "all-MiniLM-L6-v2"] and merged["complete"]
    with pytest.raises(SystemExit, match="--append"):          # other sets than the file's
        bench_cross_arch.main(["--config", SMOKE, "--set_path", f"other={syn}", "--models", "random",
                               "--set", experts, "--out", str(out), "--append"])


def test_recipes_same_sets_same_seeds_other_training(tmp_path, smoke_experts, smoke_set):
    out = tmp_path / "recipes.json"
    assert bench_recipes.main(["--config", SMOKE, "--set_path", smoke_set, "--baselines", "random,kmeans",
                               "--num_eval", "2", "--recipe", "short:steps=2",
                               "--recipe", "hot:steps=3,lr=1e-3", "--set",
                               f"pretrain.expert_dir={smoke_experts}", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert [row["recipe"] for row in r["rows"]] == ["short", "hot"] and r["complete"]
    short, hot = r["rows"]
    assert (short["steps"], hot["steps"], hot["lr"]) == (2, 3, 1e-3)
    assert short["lr"] == 1e-4                                   # the config's, not changed
    for row in r["rows"]:
        by = {e["method"]: e for e in row["entries"]}
        assert list(by) == ["synthetic", "random", "kmeans"]
        assert all(e["steps"] == row["steps"] and len(e["runs"]) == 2 for e in by.values())
        best = max(("random", "kmeans"), key=lambda m: by[m]["mean"])
        assert row["best_real"] == best
        assert abs(row["lead"] - (by["synthetic"]["mean"] - by[best]["mean"])) < 1e-12
    # the same seeds under every recipe; only the training changed
    assert [e["seeds"] for e in short["entries"]] == [e["seeds"] for e in hot["entries"]]
    assert r["recipe_robust"] == all(row["lead"] > 0 for row in r["rows"])
    with pytest.raises(SystemExit, match="key=value"):
        bench_recipes.parse_recipe("bad:epochs=3")
    assert bench_recipes.parse_recipe("protocol:") == ("protocol", {})
