"""Experiment tracking: run.report_to [tensorboard] writes event files that read back; off by
default, on rank 0 only."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from condense import pretrain_script_text
from tests.conftest import SMOKE
from utils.config import ConfigError, load_config
from utils.tracking import Tracker, current

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def read_scalars(folder) -> dict:
    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tracker_writes_scalars_that_read_back(tmp_path):
    cfg = load_config(None, [("run.report_to", ["tensorboard"])])
    tracker = Tracker.for_run(cfg, tmp_path, SimpleNamespace(is_main=True))
    assert tracker.enabled and current() is not tracker
    with tracker.activate():
        assert current() is tracker
        tracker.log(1, {"condense/match_loss": 2.5}, lr=0.1)
        tracker.log_record("condense", 2, {"iteration": 2, "match_loss": 1.5, "skipped": False,
                                           "expert": "0"})
    tracker.close()
    scalars = read_scalars(tmp_path / "tensorboard")
    assert scalars["condense/match_loss"] == [(1, 2.5), (2, 1.5)]
    assert scalars["lr"] == [(1, pytest.approx(0.1))]
    assert "condense/iteration" not in scalars and "condense/skipped" not in scalars


def test_tracking_is_off_by_default_and_on_other_ranks(tmp_path):
    assert load_config(None).run.report_to == []
    assert not Tracker.for_run(load_config(None), tmp_path).enabled
    on = load_config(None, [("run.report_to", ["tensorboard"])])
    assert not Tracker.for_run(on, tmp_path, SimpleNamespace(is_main=False)).enabled
    assert not (tmp_path / "tensorboard").exists()
    with pytest.raises(ConfigError, match="report_to"):
        load_config(None, [("run.report_to", ["wandb"])])
    with pytest.raises(ConfigError, match="'none' cannot be combined"):
        load_config(None, [("run.report_to", ["none", "tensorboard"])])


def test_experts_stage_logs_losses_lr_and_accuracy(tmp_path):
    small = ["--set", "pretrain.num_premodel=1", "--set", "pretrain.epochs=2",
             "--set", "dataset.max_train_per_class=8", "--set", "dataset.max_test_per_class=4"]
    assert pretrain_script_text.main(["--config_path", SMOKE, *small, "--output_dir", str(tmp_path),
                                      "--report_to", "tensorboard"]) == 0
    (events,) = list(tmp_path.rglob("tensorboard"))
    scalars = read_scalars(events)
    per_epoch = -(-40 // 16)                           # 5 classes x 8 rows, batch 16
    assert [s for s, _ in scalars["expert_0/loss"]] == list(range(1, 2 * per_epoch + 1))
    assert len(scalars["expert_0/lr"]) == 2 * per_epoch
    assert [s for s, _ in scalars["expert_0/test_accuracy"]] == [per_epoch, 2 * per_epoch]
    assert all(0.0 <= v <= 1.0 for _, v in scalars["expert_0/test_accuracy"])
    manifest = json.loads(next(tmp_path.rglob("manifest.json")).read_text())
    assert [round(v, 4) for _, v in scalars["expert_0/test_accuracy"]] == \
        [round(h["accuracy"], 4) for h in manifest["history"]]


def test_condense_stage_logs_losses_and_the_worth_table(tmp_path, smoke_experts):
    from condense import condense_script_text

    out = tmp_path / "condense"
    assert condense_script_text.main(["--config_path", SMOKE, "--output_dir", str(out),
                                      "--set", f"pretrain.expert_dir={smoke_experts}",
                                      "--niter", "2", "--set", "condense.worth_runs=1",
                                      "--set", "evaluate.steps=2", "--report_to", "tensorboard"]) == 0
    scalars = read_scalars(out / "tensorboard")
    history = json.loads((out / "loss_history.json").read_text())
    # tensorboard stores float32: equal to the history's float64 to float32 precision (rounding
    # both to 5 decimals fails when a value sits on a rounding boundary)
    assert [v for _, v in scalars["condense/match_loss"]] == \
        pytest.approx([h["match_loss"] for h in history], rel=1e-6)
    assert [s for s, _ in scalars["condense/lr"]] == [1, 2]
    worth = {e["method"]: e["mean"] for e in json.loads((out / "worth.json").read_text())}
    assert {k: v for k, v in scalars.items() if k.startswith("worth/")} == {
        f"worth/{m}_accuracy": [(2, pytest.approx(v))] for m, v in worth.items()}
    assert "stage timings: data and experts" in (out / "print.log").read_text()
    # every complete expert is also a Hugging Face folder after the condense stage
    assert list(Path(smoke_experts).rglob("hf/config.json"))
