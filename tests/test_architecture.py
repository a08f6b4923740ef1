"""The seams: registries extended from outside the package, expert fingerprints, user errors vs
bugs, and CLI flags generated from the schema."""
from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path

import pytest
import torch

from condense import condense_script_text, pretrain_script_text
from condenser.objectives import OBJECTIVES, Objective, register_objective
from NCFM import DISTRIBUTION_METRICS, register_metric
from tests.conftest import SMOKE
from utils.config import FLAG_KEYS, load_config, make_parser
from utils.config_schema import Config
from utils.errors import UserError
from utils.experts import NOT_SHAPING, expert_set_dir, fingerprint_hash, missing_experts
from utils.runtime import guarded_stage

# --------------------------------------------------------------- registries, from a test file

@register_objective("toy_shrink")
class Shrink(Objective):
    """A toy term: pull every synthetic embedding towards 0 (its value: the mean square)."""
    metric_key = "shrink_loss"

    def backward(self, it, shard):
        total = 0.0
        for c in self.ctx.my_classes:
            loss = shard.data[c].embeds.pow(2).mean()
            (self.weight * loss).backward()
            total += loss.item()
        return total


TOY_MEAN_CALLS = []        # one entry per call: the loop really uses the registered metric

if "toy_mean" not in DISTRIBUTION_METRICS:
    @register_metric("toy_mean")
    def toy_mean(feat_real, feat_syn):
        """Squared distance of the feature means."""
        TOY_MEAN_CALLS.append(feat_syn.shape)
        return (feat_real.mean(0) - feat_syn.mean(0)).square().sum()


def condense(out: Path, experts: str, *extra: str) -> int:
    return condense_script_text.main(["--config_path", SMOKE, "--output_dir", str(out),
                                      "--set", f"pretrain.expert_dir={experts}", *extra])


def test_objective_registered_outside_the_package_runs(tmp_path, smoke_experts):
    assert "toy_shrink" in OBJECTIVES
    assert condense(tmp_path, smoke_experts, "--set",
                    "condense.objectives=[{name: toy_shrink, weight: 5.0}]") == 0
    history = json.loads((tmp_path / "loss_history.json").read_text())
    assert all(set(h) >= {"shrink_loss", "lr"} and "match_loss" not in h for h in history)
    values = [h["shrink_loss"] for h in history]
    assert values[-1] < values[0]                       # the term alone moved the data
    assert "objectives: toy_shrink x 5" in (tmp_path / "print.log").read_text()


def test_metric_registered_outside_the_package_is_a_feature_matching_metric(tmp_path, smoke_experts):
    TOY_MEAN_CALLS.clear()
    assert condense(tmp_path, smoke_experts, "--set",
                    "condense.objectives=[{name: feature_match, options: {metric: toy_mean}}, "
                    "{name: calibration, weight: 0.5}]") == 0
    history = json.loads((tmp_path / "loss_history.json").read_text())
    assert all(h["match_loss"] > 0 and "calib_loss" in h for h in history)
    assert len(TOY_MEAN_CALLS) >= len(history) > 0    # at least once per iteration
    assert "objective options: match: {'metric': 'toy_mean'" in (tmp_path / "print.log").read_text()


def test_unknown_objective_is_refused_with_the_registered_names(tmp_path, smoke_experts):
    # refused at config load, before any work: exit 2 and one line naming the registered terms
    with pytest.raises(SystemExit) as stop:
        condense(tmp_path, smoke_experts, "--set", "condense.objectives=[{name: nope}]")
    assert stop.value.code == 2 and not (tmp_path / "distilled_data").exists()
    with pytest.raises(UserError, match=r"command line: condense.objectives\[0\]: unknown objective "
                                        r"'nope'; registered: .*feature_match.*toy_shrink"):
        load_config(SMOKE, [("condense.objectives", [{"name": "nope"}])])


def test_method_shorthand_equals_its_objectives(tmp_path, smoke_experts):
    a, b = tmp_path / "method", tmp_path / "objectives"
    assert condense(a, smoke_experts, "--set", "condense.niter=3") == 0
    assert condense(b, smoke_experts, "--set", "condense.niter=3", "--set",
                    "condense.objectives=[{name: feature_match}, {name: calibration}]") == 0
    sa = torch.load(a / "distilled_data" / "syn_data_3.pth", weights_only=True)
    sb = torch.load(b / "distilled_data" / "syn_data_3.pth", weights_only=True)
    assert torch.equal(sa["inputs_embeds"], sb["inputs_embeds"])


# --------------------------------------------------------------------------- expert fingerprint

def _changed(value, tp):
    """Another valid-looking value of a field's type."""
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        (tp,) = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return {int: 7, str: "elsewhere", float: 0.5}[tp]
        return _changed(value, tp)
    if origin is typing.Literal:
        others = [a for a in typing.get_args(tp) if a != value]
        return others[0] if others else None          # a one-value Literal cannot change
    if tp is bool:
        return not value
    if tp in (int, float):
        return value + 1
    if tp is str:
        return value + "-other"
    if origin is list:
        return value + value
    raise AssertionError(f"no change rule for {tp}")


def test_every_expert_shaping_key_changes_the_expert_folder():
    cfg = load_config(SMOKE)
    base_dir, base_hash = expert_set_dir(cfg), fingerprint_hash(cfg)
    checked = 0
    for section in NOT_SHAPING:
        sec = getattr(cfg, section)
        hints = typing.get_type_hints(type(sec))
        for f in dataclasses.fields(sec):
            new = _changed(getattr(sec, f.name), hints[f.name])
            if new is None:
                continue
            other = dataclasses.replace(cfg, **{section: dataclasses.replace(sec, **{f.name: new})})
            if f.name in NOT_SHAPING[section]:
                assert fingerprint_hash(other) == base_hash, f"{section}.{f.name} must not retrain"
            else:
                assert expert_set_dir(other) != base_dir, f"{section}.{f.name} must retrain"
                checked += 1
    assert checked >= 25      # every key of the three sections except the few listed


def test_changed_setting_trains_new_experts(tmp_path, smoke_experts):
    cfg = load_config(SMOKE, [("pretrain.expert_dir", smoke_experts)])
    assert missing_experts(cfg) == []
    changed = load_config(SMOKE, [("pretrain.expert_dir", smoke_experts), ("network.dropout", 0.2)])
    assert missing_experts(changed) == [0, 1]           # stale experts are never reused
    assert pretrain_script_text.main(["--config_path", SMOKE, "--set",
                                      f"pretrain.expert_dir={smoke_experts}",
                                      "--set", "network.dropout=0.2"]) == 0
    assert missing_experts(changed) == [] and missing_experts(cfg) == []
    assert expert_set_dir(changed) != expert_set_dir(cfg)


# ----------------------------------------------------------------------------- errors and CLI

def test_user_errors_exit_2_but_bugs_keep_their_traceback():
    with guarded_stage() as stage:
        raise UserError("bad input")
    assert stage.exit_code == 2
    with pytest.raises(ValueError, match="a bug"):
        with guarded_stage():
            raise ValueError("a bug")


def test_flags_come_from_the_schema():
    parser = make_parser("x")
    options = {a.dest for a in parser._actions}
    schema = {f.metadata["flag"] for sec in dataclasses.fields(Config)
              for f in dataclasses.fields(sec.default_factory) if f.metadata.get("flag")}
    assert schema == set(FLAG_KEYS) and schema <= options
    assert {"ipc", "init", "load_path", "eval_model_path", "output_dir"} <= schema
    with pytest.raises(UserError, match=r"unknown init 'not-a-mode'; registered: .*herding.*kmeans"):
        load_config(SMOKE, [("condense.init", "not-a-mode")])


def test_a_term_without_a_metric_key_logs_under_its_name():
    """An objective registered without `metric_key` is recorded as '<name>_loss' (not hidden)."""
    from condenser.objectives.build import build_objectives
    from utils.config_schema import ObjectiveSpec

    if "toy_unnamed" not in OBJECTIVES:
        @register_objective("toy_unnamed")
        class Unnamed(Objective):
            def backward(self, it, shard):
                return torch.zeros(())
    terms = build_objectives(None, [ObjectiveSpec(name="toy_unnamed"), ObjectiveSpec(name="toy_unnamed")])
    assert [t.metric_key for t in terms] == ["toy_unnamed_loss", "toy_unnamed_2_loss"]
