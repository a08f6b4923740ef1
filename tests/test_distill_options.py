"""Distillation losses own their options and traits: the spellings the config accepts and refuses,
and losses registered from outside the package (here), with their own options set from YAML, in a
real tiny distillation. That run is a child process, so the losses registered for it do not join
this session's registry (docs/config.md is rendered from the registries in other tests)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from distiller.losses import KD_LOSSES, LayerMapOptions, register_kd_loss
from tests.conftest import ROOT, SMOKE
from utils.config import ConfigError, load_config
from utils.registry import opt


@dataclass
class ScaleOptions:
    scale: float = opt(1.0, "Multiplier of the logit MSE.")

    def check(self):
        if self.scale <= 0:
            yield "scale", "must be > 0"


def scaled_logit_mse(ctx, pairs, opts: ScaleOptions) -> torch.Tensor:
    return opts.scale * F.mse_loss(ctx.student.logits, ctx.teacher.logits)


@dataclass
class ClsOptions(LayerMapOptions):
    normalise: bool = opt(False, "Compare unit-length [CLS] vectors.")


def cls_mse(ctx, pairs, opts: ClsOptions) -> torch.Tensor:
    def cls(h):
        return F.normalize(h[:, 0], dim=-1) if opts.normalise else h[:, 0]       # [B, H]
    return torch.stack([F.mse_loss(cls(ctx.student.hidden_states[s]),
                                   cls(ctx.teacher.hidden_states[t])) for t, s in pairs]).mean()


def register_outside_losses() -> None:
    """What a user's module does: two losses with their options and traits."""
    register_kd_loss("scaled_logit_mse", options=ScaleOptions, needs_teacher_logits=True,
                     is_logit_loss=True)(scaled_logit_mse)
    register_kd_loss("cls_mse", options=ClsOptions, needs_hidden=True,
                     uses_layer_map=True)(cls_mse)


CHILD = """
import json, sys
from tests.test_distill_options import register_outside_losses
register_outside_losses()
from distiller.losses import KD_LOSSES
print("TRAITS " + json.dumps(KD_LOSSES.entry("cls_mse").traits))
from condense import distill_script_text
sys.exit(distill_script_text.main(sys.argv[1:]))
"""


def refused(losses=None, **distill) -> str:
    overrides = [(f"distill.{k}", v) for k, v in distill.items()]
    if losses is not None:
        overrides.append(("distill.losses", losses))
    with pytest.raises(ConfigError) as exc:
        load_config(SMOKE, overrides)
    return str(exc.value)


def test_options_are_checked_at_load_naming_the_key():
    cfg = load_config(SMOKE, [("distill.losses", [{"name": "label_ce"},
                                                  {"name": "logit_kd", "options": {"temperature": 4}}])])
    assert cfg.distill.losses[1].options == {"temperature": 4}
    assert KD_LOSSES.options("logit_kd", cfg.distill.losses[1].options).temperature == 4.0
    msg = refused([{"name": "label_ce"}, {"name": "logit_kd", "options": {"foo": 1}}])
    assert "command line: distill.losses[1].options: unknown key 'foo' (allowed: temperature)" in msg
    msg = refused([{"name": "label_ce"}, {"name": "logit_kd", "options": {"temperature": -1}}])
    assert "distill.losses[1].options.temperature = -1.0: must be > 0" in msg
    assert "distill.losses[0].options.layers: expected a list" in refused(
        [{"name": "hidden_mse", "options": {"layers": 3}}])
    assert "distill.losses[0]: unknown distillation loss 'nope'; registered: attn_kl" in refused(
        [{"name": "nope"}])
    assert "distill.losses[0].options: unknown key 'layers' (allowed: num_centroid)" in refused(
        [{"name": "cka_global", "options": {"layers": [[1, 1]]}}])


def test_old_spellings_are_refused_with_their_new_place(tmp_path):
    msg = refused([{"name": "hidden_mse", "layers": [[1, 1]]}])
    assert "distill.losses[0].layers moved: the layer map is an option of the loss now: " \
           "{name: hidden_mse, options: {layers: [[6, 3]]}}" in msg
    assert "command line: distill.temperature moved: an option of logit_kd / trajectory_kd now" \
        in refused(temperature=3.0)
    assert "distill.trajectory_points moved: an option of trajectory_kd now" in \
        refused(trajectory_points=[1])
    old = tmp_path / "old.yaml"
    old.write_text(f"base: {SMOKE}\ndistill:\n  num_centroid: 4\n")
    with pytest.raises(ConfigError, match=rf"{old}: distill.num_centroid moved: an option of "
                                          r"cka_global now: distill.losses: \[\{name: cka_global, "
                                          r"options: \{num_centroid: 16\}\}"):
        load_config(str(old))


def test_register_kd_loss_refuses_unknown_traits_and_missing_options():
    with pytest.raises(TypeError, match="unknown traits \\['needs_hiden'\\]"):
        register_kd_loss("typo_loss", needs_hiden=True)
    with pytest.raises(TypeError, match="trait uses_layer_map needs a 'layers' option"):
        register_kd_loss("no_layers", options=ScaleOptions, uses_layer_map=True)
    assert "typo_loss" not in KD_LOSSES and "no_layers" not in KD_LOSSES
    entry = KD_LOSSES.entry("hidden_mse")
    assert entry.trait("needs_hidden") and entry.trait("uses_layer_map")
    assert entry.trait("projects_hidden") and not entry.trait("needs_attention")
    assert KD_LOSSES.entry("logit_kd").trait("is_logit_loss")


def run(tmp_path: Path, experts: str, name: str, scale: float) -> list:
    """A real tiny distillation with the outside losses, configured from a YAML file."""
    config = tmp_path / f"{name}.yaml"
    config.write_text(f"""base: {SMOKE}
pretrain:
  expert_dir: {experts}
distill:
  baseline: false
  quantize: false
  results_table: {tmp_path / 'distill.md'}
  losses:
    - {{name: scaled_logit_mse, weight: 1.0, options: {{scale: {scale}}}}}
    - {{name: label_ce, weight: 0.5}}
    - {{name: cls_mse, weight: 0.5, options: {{layers: [[2, 1]], normalise: true}}}}
    - {{name: hidden_mse, weight: 0.5, options: {{layers: [[1, 1]]}}}}
    - {{name: hidden_mse, weight: 0.5, options: {{layers: [[2, 1]]}}}}
""")
    out = tmp_path / name
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", CHILD, "--config_path", str(config),
                           "--output_dir", str(out)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    traits = json.loads(proc.stdout.split("TRAITS ", 1)[1].splitlines()[0])
    assert traits["needs_hidden"] and traits["uses_layer_map"] and not traits["needs_attention"]
    return json.loads((out / "distill" / "history.json").read_text())


def test_a_loss_registered_outside_the_package_runs_with_its_yaml_option(tmp_path, smoke_experts):
    one, three = run(tmp_path, smoke_experts, "one", 1.0), run(tmp_path, smoke_experts, "three", 3.0)
    assert len(three) == 6
    assert {"scaled_logit_mse", "cls_mse", "hidden_mse[3]", "hidden_mse[4]"} <= set(three[0])
    # step 1 sees the same student and batch: the option scales the loss, nothing else moves
    assert three[0]["scaled_logit_mse"] == pytest.approx(3 * one[0]["scaled_logit_mse"], rel=1e-5)
    assert three[0]["cls_mse"] == pytest.approx(one[0]["cls_mse"], rel=1e-6)
    assert 0 < three[0]["cls_mse"] < 4                     # unit vectors: at most 4 / H apart
    assert three[0]["hidden_mse[3]"] != pytest.approx(three[0]["hidden_mse[4]"])  # own layer maps
    assert all(h["scaled_logit_mse"] > 0 for h in three)
