"""Real multi-process runs: `torchrun --nproc_per_node=2` (gloo on CPU) on config/smoke.yaml."""
from __future__ import annotations

import json

import pytest
import torch

from condense import condense_script_text
from tests.conftest import ROOT, SMOKE, torchrun
from utils.config import load_config
from utils.experts import expert_set_dir


def smoke_cfg(experts: str):
    return load_config(SMOKE, [("pretrain.expert_dir", experts)])


def test_expert_training_two_ranks(smoke_experts):
    cfg = smoke_cfg(smoke_experts)
    root = expert_set_dir(cfg)
    log = (root / "print.log").read_text()
    assert "rank 0 owns experts [0]" in log and "rank 1 owns experts [1]" in log
    for k in range(cfg.pretrain.num_premodel):
        manifest = json.loads((root / f"expert_{k}" / "manifest.json").read_text())
        assert manifest["complete"] and manifest["seed"] == cfg.pretrain.seed + k
        assert [h["epoch"] for h in manifest["history"]] == list(range(1, cfg.pretrain.epochs + 1))
        assert all(0.0 <= h["accuracy"] <= 1.0 for h in manifest["history"])
        for e in range(cfg.pretrain.epochs + 1):
            assert (root / f"expert_{k}" / f"epoch_{e}.safetensors").is_file()
    # the two experts were trained with different seeds, so their weights differ
    from safetensors.torch import load_file
    a = load_file(str(root / "expert_0" / "epoch_2.safetensors"))
    b = load_file(str(root / "expert_1" / "epoch_2.safetensors"))
    assert not torch.equal(a["classifier.weight"], b["classifier.weight"])
    # each manifest's final test accuracy is what its saved final weights score on the test split
    from utils.model import build_classifier
    from utils.runtime import load_data
    from utils.training import evaluate_classifier
    data = load_data(cfg)
    for k in range(cfg.pretrain.num_premodel):
        model = build_classifier(cfg.network, 5, pretrained=False,
                                 vocab_size=data.tokenizer.vocab_size)
        model.load_state_dict(load_file(str(root / f"expert_{k}" / "epoch_2.safetensors")))
        scores = evaluate_classifier(model, data.test, 64, torch.device("cpu"))
        manifest = json.loads((root / f"expert_{k}" / "manifest.json").read_text())
        assert manifest["history"][-1]["accuracy"] == pytest.approx(scores["accuracy"], abs=1e-5)
    # re-running skips complete experts: no weight file is rewritten
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*.safetensors")}
    torchrun("condense/pretrain_script_text.py",
             ["--config_path", SMOKE, "--set", f"pretrain.expert_dir={smoke_experts}"])
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*.safetensors")} == stamps


def test_a_half_trained_expert_resumes_after_its_last_epoch(tmp_path, smoke_experts, monkeypatch):
    """An expert interrupted after epoch 1 is finished from its saved optimiser, scheduler and RNG
    state: its epoch 2 is the uninterrupted run's (the torchrun-trained smoke experts). With that
    state damaged, or of another epoch than the manifest's, it is trained again from the start,
    with a warning, and ends the same."""
    from safetensors.torch import load_file

    import utils.experts
    from condense import pretrain_script_text
    ref_dir = expert_set_dir(smoke_cfg(smoke_experts)) / "expert_0"
    ref = load_file(str(ref_dir / "epoch_2.safetensors"))
    ref_acc = json.loads((ref_dir / "manifest.json").read_text())["history"][1]["accuracy"]
    write_manifest = utils.experts._write_manifest

    def stop_after_epoch_1(root, k, cfg, epochs_done, *rest):
        write_manifest(root, k, cfg, epochs_done, *rest)
        if k == 0 and epochs_done == 1:
            raise RuntimeError("interrupted after epoch 1")

    def pretrain(root) -> str:
        assert pretrain_script_text.main(["--config_path", SMOKE, "--set",
                                          f"pretrain.expert_dir={root}"]) == 0
        return (expert_set_dir(smoke_cfg(str(root))) / "print.log").read_text()

    for case in ("resume", "damaged", "stale"):
        root = tmp_path / case
        e0 = expert_set_dir(smoke_cfg(str(root))) / "expert_0"
        if case == "stale":              # complete, then the manifest rewound to epoch 1
            pretrain(root)
            manifest = json.loads((e0 / "manifest.json").read_text())
            manifest.update(complete=False, epochs_done=1, history=manifest["history"][:1])
            (e0 / "manifest.json").write_text(json.dumps(manifest))
            (e0 / "epoch_2.safetensors").unlink()
        else:
            with monkeypatch.context() as m:
                m.setattr(utils.experts, "_write_manifest", stop_after_epoch_1)
                with pytest.raises(RuntimeError, match="interrupted after epoch 1"):
                    pretrain_script_text.main(["--config_path", SMOKE, "--set",
                                               f"pretrain.expert_dir={root}"])
            assert not (e0 / "epoch_2.safetensors").exists()
        if case == "damaged":
            (e0 / "train_state.pt").write_bytes(b"not a torch file")
        stamp = (e0 / "epoch_1.safetensors").stat().st_mtime_ns
        log = pretrain(root)
        again = json.loads((e0 / "manifest.json").read_text())
        assert again["complete"] and [h["epoch"] for h in again["history"]] == [1, 2]
        got = load_file(str(e0 / "epoch_2.safetensors"))
        for k in ref:
            torch.testing.assert_close(got[k], ref[k], atol=1e-5, rtol=1e-4)
        assert again["history"][1]["accuracy"] == pytest.approx(ref_acc, abs=1e-6)
        if case == "resume":
            assert "expert 0: resuming after epoch 1" in log
            assert (e0 / "epoch_1.safetensors").stat().st_mtime_ns == stamp   # not retrained
        else:
            assert "expert 0 cannot resume after epoch 1" in log and "from the start" in log
            assert ("is of epoch 2, the manifest says 1" in log) == (case == "stale")
            assert (e0 / "epoch_1.safetensors").stat().st_mtime_ns != stamp


def test_condense_two_ranks_equals_one_process(tmp_path, smoke_experts):
    two, one = tmp_path / "two", tmp_path / "one"
    common = ["--config_path", SMOKE, "--set", f"pretrain.expert_dir={smoke_experts}",
              "--set", "condense.objectives=[{name: feature_match, options: {sampling_net: true}}, "
              "{name: calibration}]"]
    # run from inside condense/ with ../config paths, as the research code was used
    torchrun("condense/condense_script_text.py",
             ["--config_path", "../config/smoke.yaml", *common[2:], "--output_dir", str(two)],
             cwd=ROOT / "condense")
    log = (two / "print.log").read_text()
    assert "world size 2 (gloo)" in log
    assert "rank 0 owns classes [0, 1]" in log and "rank 1 owns classes [2, 3, 4]" in log
    assert condense_script_text.main(common + ["--output_dir", str(one)]) == 0
    a = torch.load(two / "distilled_data" / "syn_data_6.pth", weights_only=True)
    b = torch.load(one / "distilled_data" / "syn_data_6.pth", weights_only=True)
    assert a["inputs_embeds"].shape == (10, 16, 32)
    assert a["class_of"].tolist() == b["class_of"].tolist()
    assert torch.allclose(a["inputs_embeds"], b["inputs_embeds"], atol=1e-4)
    ha = json.loads((two / "loss_history.json").read_text())
    hb = json.loads((one / "loss_history.json").read_text())
    assert len(ha) == len(hb) == 6
    for x, y in zip(ha, hb):
        assert abs(x["match_loss"] - y["match_loss"]) <= 1e-3 * max(1.0, abs(y["match_loss"]))
        assert x["expert"] == y["expert"]


def test_resume_under_torchrun_with_other_world_size(tmp_path, smoke_experts):
    """A run checkpointed by 2 ranks resumes in 3 ranks (one rank owns 1 class, ranks rebalance);
    calibration every 2nd iteration, so the first resumed iteration logs the last summed value."""
    out = tmp_path / "run"
    common = ["--config_path", SMOKE, "--set", f"pretrain.expert_dir={smoke_experts}",
              "--set", "condense.objectives=[{name: feature_match}, {name: calibration, options: "
              "{every: 2}}]", "--output_dir", str(out)]
    torchrun("condense/condense_script_text.py", common + ["--set", "condense.niter=3"])
    torchrun("condense/condense_script_text.py", common, nproc=3)
    log = (out / "print.log").read_text()
    assert "resuming from" in log and "rank 2 owns classes [3, 4]" in log
    ref = tmp_path / "ref"
    assert condense_script_text.main(common[:-1] + [str(ref)]) == 0
    a = torch.load(out / "distilled_data" / "syn_data_6.pth", weights_only=True)
    b = torch.load(ref / "distilled_data" / "syn_data_6.pth", weights_only=True)
    assert torch.allclose(a["inputs_embeds"], b["inputs_embeds"], atol=1e-4)
    ha = json.loads((out / "loss_history.json").read_text())
    hb = json.loads((ref / "loss_history.json").read_text())
    assert [h["calib_loss"] for h in ha] == pytest.approx([h["calib_loss"] for h in hb], rel=1e-4)
    assert ha[3]["calib_loss"] == ha[2]["calib_loss"]          # iteration 4 took no calibration


@pytest.mark.parametrize("unroll", ["tesla", "full"])
def test_trajectory_two_ranks_equals_one_process(tmp_path, smoke_experts, unroll):
    """Trajectory matching couples all classes in one student: the differentiable all-reduce
    makes the 2-rank result equal the 1-process one, for the first-order (tesla) and the exact
    (full, second order through the all-reduce) unroll."""
    common = ["--config_path", SMOKE, "--set", f"pretrain.expert_dir={smoke_experts}",
              "--set", "condense.niter=3", "--set", "condense.objectives=[{name: trajectory, "
              f"options: {{unroll: {unroll}, syn_steps: 2, lr_teacher: 0.05, subset_strategy: all}}}}, "
              "{name: calibration}]"]
    two, one = tmp_path / "two", tmp_path / "one"
    torchrun("condense/condense_script_text.py", common + ["--output_dir", str(two)])
    assert condense_script_text.main(common + ["--output_dir", str(one)]) == 0
    a = torch.load(two / "distilled_data" / "syn_data_3.pth", weights_only=True)
    b = torch.load(one / "distilled_data" / "syn_data_3.pth", weights_only=True)
    assert torch.allclose(a["inputs_embeds"], b["inputs_embeds"], atol=1e-4)
    ha = json.loads((two / "loss_history.json").read_text())
    hb = json.loads((one / "loss_history.json").read_text())
    assert len(ha) == len(hb) == 3
    for x, y in zip(ha, hb):                          # summation order differs across ranks
        assert x["traj_loss"] == pytest.approx(y["traj_loss"], rel=1e-4)
    assert abs(ha[-1]["syn_lr"] - hb[-1]["syn_lr"]) < 1e-7
    assert ha[-1]["syn_lr"] != 0.05                  # syn_lr is learnt
