"""Condensation end to end on config/smoke.yaml (tiny random BERT, a slice of BBC), one process."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from condense import condense_script_text, pretrain_script_text
from condenser.condenser import Condenser
from condenser.expert_pool import ExpertPool
from condenser.objectives import FeatureMatching
from tests.conftest import SMOKE
from utils.checkpoint import complete_checkpoints
from utils.config import load_config
from utils.distributed import DistEnv
from utils.runtime import load_data


def condense(out: Path, experts: str, *extra: str) -> int:
    return condense_script_text.main(["--config_path", SMOKE, "--output_dir", str(out),
                                      "--set", f"pretrain.expert_dir={experts}", *extra])


def load_final(out: Path, it: int) -> dict:
    return torch.load(out / "distilled_data" / f"syn_data_{it}.pth", weights_only=True)


def test_outputs_shapes_and_safe_loading(tmp_path, smoke_experts):
    assert condense(tmp_path, smoke_experts) == 0
    syn = load_final(tmp_path, 6)                      # weights_only=True: no pickle
    cfg = load_config(SMOKE)
    n, L, H = 5 * cfg.condense.ipc, cfg.dataset.max_length, cfg.network.random_hidden
    assert syn["inputs_embeds"].shape == (n, L, H)
    assert syn["attention_mask"].shape == (n, L) and syn["labels"].shape == (n,)
    assert syn["class_of"].tolist() == [c for c in range(5) for _ in range(cfg.condense.ipc)]
    assert torch.equal(syn["labels"], syn["class_of"])
    assert syn["meta"]["class_names"] == ["business", "entertainment", "politics", "sports", "tech"]
    assert syn["meta"]["iteration"] == 6 and syn["meta"]["ipc"] == cfg.condense.ipc
    assert (tmp_path / "distilled_data" / "syn_data_3.pth").is_file()     # save_every: 3
    assert (tmp_path / "images" / "loss_curve.png").stat().st_size > 1000
    assert (tmp_path / "args.log").is_file() and (tmp_path / "print.log").is_file()
    preview = (tmp_path / "distilled_data" / "syn_data_6_preview.txt").read_text().splitlines()
    assert len(preview) == n + 1 and preview[1].startswith("[business]")
    history = json.loads((tmp_path / "loss_history.json").read_text())
    assert [h["iteration"] for h in history] == list(range(1, 7))
    log = (tmp_path / "print.log").read_text()
    # each iteration's line names the expert and interpolation it used, as the history records
    logged = {int(it): (int(k), float(lam)) for it, k, lam in
              re.findall(r"iter (\d+)/6 .* expert (\d+) lam ([0-9.]+)", log)}
    assert sorted(logged) == list(range(1, 7))
    for h in history:
        assert logged[h["iteration"]] == (h["expert"], pytest.approx(h["lam"], abs=5e-4))
    # the embeddings moved away from their initialisation (gradients reached inputs_embeds)
    first = load_final(tmp_path, 3)["inputs_embeds"]
    assert not torch.allclose(first, syn["inputs_embeds"])


def test_debug_condenses_few_classes_for_few_iterations(tmp_path, smoke_experts):
    cfg = load_config(SMOKE)
    assert condense(tmp_path, smoke_experts, "--debug", "--set", "condense.debug_niter=2") == 0
    history = json.loads((tmp_path / "loss_history.json").read_text())
    assert [h["iteration"] for h in history] == [1, 2]
    syn = load_final(tmp_path, 2)
    classes = cfg.condense.debug_classes
    assert syn["class_of"].tolist() == [c for c in range(classes) for _ in range(cfg.condense.ipc)]
    assert not (tmp_path / "distilled_data" / "syn_data_6.pth").exists()


def test_resume_matches_uninterrupted_run(tmp_path, smoke_experts):
    full, parts = tmp_path / "full", tmp_path / "parts"
    # the combined objective exercises every resumable part: data, optimiser, scheduler,
    # sampling network and its optimiser, syn_lr and its optimiser; calibration every 2nd
    # iteration (the resumed run is stopped after one that skipped it)
    both = ["--set", "condense.objectives=[{name: feature_match, options: {sampling_net: true}}, "
                     "{name: trajectory}, {name: calibration, options: {every: 2}}]"]
    assert condense(full, smoke_experts, *both) == 0
    # an interrupted run: stopped after iteration 3 (its checkpoint), plus a half-written later
    # checkpoint without its COMPLETE marker, which must never be picked
    assert condense(parts, smoke_experts, *both, "--set", "condense.niter=3") == 0
    broken = parts / "checkpoints" / "iter_000005"
    broken.mkdir()
    (broken / "state.pt").write_bytes(b"partial")
    assert [it for it, _ in complete_checkpoints(parts)] == [3]
    assert condense(parts, smoke_experts, *both) == 0                      # same command resumes
    assert "resuming from" in (parts / "print.log").read_text()
    a, b = load_final(full, 6), load_final(parts, 6)
    assert torch.equal(a["inputs_embeds"], b["inputs_embeds"])
    ha = json.loads((full / "loss_history.json").read_text())
    hb = json.loads((parts / "loss_history.json").read_text())
    assert [h["match_loss"] for h in ha] == [h["match_loss"] for h in hb]
    sa = torch.load(full / "checkpoints" / "iter_000006" / "state.pt", weights_only=True)
    sb = torch.load(parts / "checkpoints" / "iter_000006" / "state.pt", weights_only=True)
    for k, v in sa["terms"]["match_loss"]["sampling_net"].items():
        assert torch.equal(v, sb["terms"]["match_loss"]["sampling_net"][k])
    assert torch.equal(sa["terms"]["traj_loss"]["syn_lr"], sb["terms"]["traj_loss"]["syn_lr"])
    assert [h["traj_loss"] for h in ha] == [h["traj_loss"] for h in hb]
    assert [h["calib_loss"] for h in ha] == [h["calib_loss"] for h in hb]


@pytest.mark.parametrize("method", ["ncfm", "trajectory"])
@pytest.mark.parametrize("init,extra", [
    ("noise", []),
    ("mask_fill", ["--set", "condense.init_options={mask_strategy: important}"]),
    ("manifold", []),
    ("mix", ["--set", "condense.factor=2", "--set", "condense.decode_type=multi"]),
    ("mix", ["--set", "condense.factor=2", "--set", "condense.decode_type=single"]),
])
def test_init_modes(tmp_path, smoke_experts, init, extra, method):
    assert condense(tmp_path, smoke_experts, "--init", init, "--set", "condense.niter=2",
                    "--set", f"condense.method={method}", *extra) == 0
    syn = load_final(tmp_path, 2)
    assert syn["inputs_embeds"].shape == (10, 16, 32) and torch.isfinite(syn["inputs_embeds"]).all()
    mask = syn["attention_mask"]
    assert mask[:, 0].eq(1).all()
    if init == "mix":                  # two snippets of length 8, each starting at its own [CLS]
        assert mask[:, 8].eq(1).all()


TERM = {"ncfm": "feature_match", "trajectory": "trajectory"}
OPTS = {"ncfm": "{}", "trajectory": "{lr_teacher: 0.05}"}


@pytest.mark.parametrize("method", ["ncfm", "trajectory"])
def test_init_load_continues_from_saved_set(tmp_path, smoke_experts, method):
    first = tmp_path / "first"
    assert condense(first, smoke_experts, "--set", "condense.niter=2") == 0
    saved = first / "distilled_data" / "syn_data_2.pth"
    second = tmp_path / "second"
    assert condense(second, smoke_experts, "--init", "load", "--load_path", str(saved),
                    "--set", "condense.niter=1", "--set",
                    f"condense.objectives=[{{name: {TERM[method]}, options: {OPTS[method]}}}, "
                    f"{{name: calibration}}]") == 0
    before, after = load_final(first, 2), load_final(second, 1)
    assert torch.equal(before["attention_mask"], after["attention_mask"])
    delta = (after["inputs_embeds"] - before["inputs_embeds"]).abs()
    assert 0 < delta.max() < 1.0        # one small step away from the loaded set, not a new init
    # a set with another ipc is refused with a clear message, and nothing is written
    third = tmp_path / "third"
    assert condense(third, smoke_experts, "--init", "load", "--load_path", str(saved),
                    "--ipc", "3") == 2
    assert "ipc" in (third / "print.log").read_text()
    assert not (third / "distilled_data").exists()


def sampling_net(cond: Condenser):
    return next(t for t in cond.terms if isinstance(t, FeatureMatching)).sampling_net


def test_sampling_net_moves_against_the_data(smoke_experts):
    cfg = load_config(SMOKE, [("pretrain.expert_dir", smoke_experts),
                              ("condense.objectives", [{"name": "feature_match", "options": {
                                  "sampling_net": True, "sampling_lr": 0.05}}])])
    data = load_data(cfg)
    env = DistEnv()
    pool = ExpertPool(cfg, 5, env.device)
    cond = Condenser(cfg, env, data.train, pool, list(range(5)))
    cond.initialize("random", cond.init_context(data.tokenizer, 5, False))
    x0 = {c: cond.shard.data[c].embeds.detach().clone() for c in range(5)}
    net0 = {k: v.clone() for k, v in sampling_net(cond).state_dict().items()}
    loss0 = cond.match_loss_at(0)
    cond.step()
    x1 = {c: cond.shard.data[c].embeds.detach().clone() for c in range(5)}
    net1 = {k: v.clone() for k, v in sampling_net(cond).state_dict().items()}

    def loss_with(x, net):
        for c in range(5):
            cond.shard.data[c].embeds.data.copy_(x[c])
        sampling_net(cond).load_state_dict(net)
        return cond.match_loss_at(0)

    assert loss_with(x1, net0) < loss0        # the data step lowers the loss
    assert loss_with(x0, net1) > loss0        # the sampling-network step raises it


def test_multilabel_end_to_end(tmp_path):
    # a small real multi-label set: BBC texts, each with its class and, for every third text,
    # the next class as a second label
    from utils.readers import read_bbc

    texts, labels, names = read_bbc()
    rows = []
    for i in range(0, len(texts), 15):
        ys = [names[labels[i]]] + ([names[(labels[i] + 1) % 5]] if i % 45 == 0 else [])
        rows.append({"text": texts[i], "label": ys})
    data_file = tmp_path / "multi.jsonl"
    data_file.write_text("\n".join(json.dumps(r) for r in rows))
    common = ["--config_path", SMOKE, "--set", f"dataset.name={data_file}",
              "--set", "dataset.is_multilabel=true", "--set", "dataset.max_train_per_class=null",
              "--set", f"pretrain.expert_dir={tmp_path / 'experts'}"]
    assert pretrain_script_text.main(common) == 0
    out = tmp_path / "run"
    assert condense_script_text.main(common + ["--output_dir", str(out),
                                               "--set", "condense.niter=2"]) == 0
    syn = load_final(out, 2)
    assert syn["labels"].shape == (10, 5) and syn["labels"].dtype == torch.float32
    for row, c in zip(syn["labels"], syn["class_of"]):
        assert row[c] == 1.0                              # each sequence carries its own class


def test_bad_dataset_name_fails_cleanly_and_keeps_outputs(tmp_path, smoke_experts):
    assert condense(tmp_path, smoke_experts, "--set", "condense.niter=3") == 0
    before = sorted(p.name for p in (tmp_path / "distilled_data").iterdir())
    code = condense(tmp_path, smoke_experts, "--set", "dataset.name=no_such_dataset_xyz",
                    "--set", "dataset.format=trec")
    assert code == 2
    assert "no_such_dataset_xyz" in (tmp_path / "print.log").read_text()
    assert sorted(p.name for p in (tmp_path / "distilled_data").iterdir()) == before
    assert [it for it, _ in complete_checkpoints(tmp_path)] == [3]


def test_log_line_shows_the_terms_of_the_method():
    base = {"calib_loss": 0.5, "lr": 1e-3, "calib_expert": 1, "seconds": 2.0}
    traj = condense_script_text.format_record({"traj_loss": 0.9, **base, "traj_expert": 1,
                                                "start_epoch": 0, "syn_lr": 0.01})
    assert "match" not in traj and "trajectory expert 1 epoch 0" in traj and "traj 0.90000" in traj
    assert "calibration expert 1" in traj
    ncfm = condense_script_text.format_record({"match_loss": 12.5, **base, "expert": 1, "lam": 0.25})
    assert "match 12.50000" in ncfm and "expert 1 lam 0.250" in ncfm and "traj" not in ncfm
