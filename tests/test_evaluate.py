"""Evaluation stage on config/smoke.yaml: every method, selectors, determinism, 2 ranks, errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from condense import condense_script_text, evaluate_script_text
from evaluation.protocol import BASELINES, make_context
from evaluation.results import read_results_table
from evaluation.selectors import load_feature_expert, select_baseline
from tests.conftest import SMOKE, torchrun
from utils.config import load_config
from utils.coreset import expert_features, herding_select, kcenter_select
from utils.distributed import DistEnv
from utils.runtime import load_data

SMALL = ["--set", "evaluate.num_eval=2", "--set", "evaluate.steps=4", "--set",
         "evaluate.eval_every=2", "--set", "evaluate.full_steps=6", "--set", "evaluate.lr=0.001"]
METHODS = ["synthetic", "random", "herding", "kcenter", "kmeans", "full"]


def evaluate(out: Path, experts: str, *extra: str) -> int:
    return evaluate_script_text.main(["--config_path", SMOKE, "--output_dir", str(out),
                                      "--set", f"pretrain.expert_dir={experts}",
                                      "--set", f"evaluate.results_table={out / 'results.md'}",
                                      *SMALL, *extra])


def results(out: Path) -> list:
    return json.loads((out / "eval" / "results.json").read_text())


@pytest.fixture(scope="module")
def single_thread():
    """1 vs 2 processes compare exactly when each process uses one thread (as under torchrun)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory, smoke_experts, single_thread) -> Path:
    """A short condensation run with the in-loop evaluation hook at iterations 1 and 2."""
    out = tmp_path_factory.mktemp("condense")
    assert condense_script_text.main(["--config_path", SMOKE, "--output_dir", str(out),
                                      "--set", f"pretrain.expert_dir={smoke_experts}",
                                      "--set", "condense.niter=2", "--set", "condense.save_every=2",
                                      "--set", "condense.eval_it=[1, 2]", *SMALL]) == 0
    curve = json.loads((out / "eval_curve.json").read_text())
    assert [c["iteration"] for c in curve] == [1, 2]
    assert all(0.0 <= c["accuracy_mean"] <= 1.0 and c["num_eval"] == 2 for c in curve)
    assert "eval iter 2: accuracy" in (out / "print.log").read_text()
    return out / "distilled_data" / "syn_data_2.pth"


@pytest.fixture(scope="module")
def all_methods(tmp_path_factory, smoke_experts, synthetic, single_thread) -> Path:
    out = tmp_path_factory.mktemp("evaluate")
    assert evaluate(out, smoke_experts, "--load_path", str(synthetic),
                    "--baseline", "random,herding", "--baseline", "kcenter,kmeans,full") == 0
    return out


def test_in_loop_evaluation_equals_the_evaluate_stage(all_methods, synthetic):
    """The condensation's eval_it point and stage 3 on the saved set are one protocol: the same
    classifiers (seeds, steps, test split), so the same scores."""
    curve = json.loads((synthetic.parent.parent / "eval_curve.json").read_text())
    stage = next(e for e in results(all_methods) if e["method"] == "synthetic")
    assert stage["iteration"] == curve[-1]["iteration"] == 2
    assert curve[-1]["accuracy_mean"] == pytest.approx(stage["mean"], abs=1e-9)
    assert curve[-1]["accuracy_std"] == pytest.approx(stage["std"], abs=1e-9)
    assert stage["mean"] == pytest.approx(sum(r["accuracy"] for r in stage["runs"]) / 2)


def test_every_method_results_table_and_plots(all_methods):
    entries = results(all_methods)
    assert [e["method"] for e in entries] == METHODS
    for e in entries:
        for key, typ in (("dataset", str), ("ipc", int), ("model", str), ("runs", list),
                         ("mean", float), ("std", float), ("train_seconds", float),
                         ("gap_to_full", float), ("gain_over_random", float)):
            assert isinstance(e[key], typ), (e["method"], key)
        assert e["dataset"] == "bbc" and e["ipc"] == 2 and e["model"] == "random-L2-H32"
        assert len(e["runs"]) == 2 and [r["run"] for r in e["runs"]] == [0, 1]
        accs = torch.tensor([r["accuracy"] for r in e["runs"]], dtype=torch.float64)
        assert e["mean"] == pytest.approx(accs.mean().item())
        assert e["std"] == pytest.approx(accs.std(unbiased=False).item())
        assert e["metrics"]["macro_f1"]["mean"] == pytest.approx(
            sum(r["macro_f1"] for r in e["runs"]) / 2)
        steps = 6 if e["method"] == "full" else 4
        assert e["steps"] == steps
        for r in e["runs"]:
            assert {"seed", "accuracy", "macro_f1", "train_seconds", "curve"} <= set(r)
            assert [s for s, _ in r["curve"]] == list(range(2, steps + 1, 2))
            assert r["selected_step"] == steps and r["accuracy"] == r["curve"][-1][1]
    by = {e["method"]: e for e in entries}
    assert by["synthetic"]["n_train"] == 10 and by["full"]["n_train"] == 120
    assert by["full"]["epochs"] == pytest.approx(6 * 16 / 120, abs=0.01)   # full_steps x batch / rows
    full, rnd = by["full"]["mean"], by["random"]["mean"]
    for e in entries:
        assert e["gap_to_full"] == pytest.approx(full - e["mean"])
        assert e["gain_over_random"] == pytest.approx(e["mean"] - rnd)
    # the same paired seeds for every method, different seeds across runs
    seeds = [[r["seed"] for r in e["runs"]] for e in entries]
    assert all(s == seeds[0] for s in seeds) and seeds[0][0] != seeds[0][1]
    rows = read_results_table(all_methods / "results.md")
    assert [r["method"] for r in rows] == METHODS
    assert rows[0]["accuracy"] == pytest.approx(by["synthetic"]["mean"], abs=1e-4)
    for name in ("accuracy_vs_step.png", "projection.png"):
        assert (all_methods / "eval" / name).stat().st_size > 1000
    log = (all_methods / "print.log").read_text()
    assert "results (appended to" in log and "| kcenter |" in log


def test_selectors_pick_ipc_training_samples(smoke_experts):
    cfg = load_config(SMOKE, [("pretrain.expert_dir", smoke_experts)])
    data = load_data(cfg)
    ctx = make_context(cfg, DistEnv(), data)
    expert = load_feature_expert(cfg, 5, torch.device("cpu"), data.tokenizer.vocab_size)
    feats = expert_features(expert, data.train.attention_mask, 64, torch.device("cpu"),
                            input_ids=data.train.input_ids)
    labels, ipc = ctx.train.labels, cfg.condense.ipc
    for method in ("random", "herding", "kcenter", "kmeans"):
        sel = select_baseline(method, labels, 5, ipc, seed=0, features=feats)
        assert sorted(sel) == list(range(5))
        for c, idx in sel.items():
            assert len(idx) == ipc == len(set(idx.tolist()))
            # indices into the training split (the selectors are never given the test split)
            assert (idx < len(data.train)).all() and (labels[idx] == c).all()
        again = select_baseline(method, labels, 5, ipc, seed=0, features=feats)
        assert all(torch.equal(sel[c], again[c]) for c in sel)
        # herding's first pick: the class sample nearest to the class mean
        if method == "herding":
            for c, idx in sel.items():
                pool = torch.nonzero(labels == c).flatten()
                f = feats[pool].double()
                assert idx[0] == pool[torch.argmin((f - f.mean(0)).norm(dim=1))]
    other = select_baseline("random", labels, 5, ipc, seed=1)
    first = select_baseline("random", labels, 5, ipc, seed=0)
    assert any(not torch.equal(first[c], other[c]) for c in first)
    # the selectors only see the training split
    with pytest.raises(AssertionError):
        select_baseline("herding", labels, 5, ipc, seed=0, features=feats[:-1])
    # validation samples are never selected
    held = list(range(0, len(labels), 2))
    for method in ("random", "herding", "kcenter", "kmeans"):
        sel = select_baseline(method, labels, 5, ipc, seed=0, features=feats, exclude=held)
        assert not set(torch.cat(list(sel.values())).tolist()) & set(held)


def test_herding_and_kcenter_properties():
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(40, 6, generator=gen, dtype=torch.float64)
    picks = herding_select(feats, 5).tolist()
    mu = feats.mean(0)
    assert picks[0] == int(torch.argmin((feats - mu).norm(dim=1)))
    for t in range(1, 5):                  # each pick brings the running mean closest to mu
        base = feats[picks[:t]].sum(0)
        rest = [i for i in range(40) if i not in picks[:t]]
        dist = {i: ((base + feats[i]) / (t + 1) - mu).norm().item() for i in rest}
        assert dist[picks[t]] == pytest.approx(min(dist.values()))
    centers = kcenter_select(feats, 6, seed=3).tolist()
    assert len(set(centers)) == 6 and centers == kcenter_select(feats, 6, seed=3).tolist()
    d = torch.cdist(feats, feats)
    for t in range(1, 6):                  # greedy: each new centre maximises the min distance
        mind = d[:, centers[:t]].min(dim=1).values
        assert mind[centers[t]] == pytest.approx(mind.max().item())
        assert mind[centers[t]] > 0


def test_same_seed_same_numbers_and_val_selection(tmp_path, smoke_experts, synthetic,
                                                  all_methods, single_thread):
    assert evaluate(tmp_path / "again", smoke_experts, "--load_path", str(synthetic),
                    "--baseline", "random") == 0
    before = {e["method"]: e for e in results(all_methods)}
    for e in results(tmp_path / "again"):
        ref = before[e["method"]]
        keys = ("seed", "accuracy", "macro_f1", "final_loss", "curve")
        assert [{k: r[k] for k in keys} for r in e["runs"]] == \
               [{k: r[k] for k in keys} for r in ref["runs"]]
        assert e.get("selected") == ref.get("selected")
    # model selection on a validation part of the training split
    out = tmp_path / "val"
    assert evaluate(out, smoke_experts, "--baseline", "random,full", "--set",
                    "evaluate.select_by=val", "--set", "evaluate.val_fraction=0.25") == 0
    rnd, full = results(out)
    cfg = load_config(SMOKE, [("pretrain.expert_dir", smoke_experts), ("evaluate.eval_every", 2),
                              ("evaluate.select_by", "val"), ("evaluate.val_fraction", 0.25)])
    ctx = make_context(cfg, DistEnv(), load_data(cfg))
    assert len(ctx.val_idx) == 30
    picked = {i for idx in rnd["selected"].values() for i in idx}
    assert not picked & set(ctx.val_idx)
    assert full["n_train"] == 120 - 30
    for r in rnd["runs"]:
        best = max(v for _, v in r["val_curve"])
        assert dict(r["val_curve"])[r["selected_step"]] == best
        assert r["accuracy"] == dict(r["curve"])[r["selected_step"]]


def test_two_ranks_equal_one_process(tmp_path, smoke_experts, synthetic, all_methods):
    out = tmp_path / "two"
    torchrun("condense/evaluate_script_text.py",
             ["--config_path", SMOKE, "--output_dir", str(out), "--set",
              f"pretrain.expert_dir={smoke_experts}", "--set",
              f"evaluate.results_table={out / 'results.md'}", *SMALL,
              "--load_path", str(synthetic), "--baseline", "herding,full"])
    assert "world size 2 (gloo)" in (out / "print.log").read_text()
    ref = {e["method"]: e for e in results(all_methods)}
    two = results(out)
    assert [e["method"] for e in two] == ["synthetic", "herding", "full"]
    # one run on each rank; the rank of run 0 moves on with each method (rotated_shard)
    assert [[r["rank"] for r in e["runs"]] for e in two] == [[0, 1], [1, 0], [0, 1]]
    for e in two:
        assert e["world_size"] == 2
        r1 = ref[e["method"]]
        assert e.get("selected") == r1.get("selected")
        assert e["mean"] == pytest.approx(r1["mean"], abs=1e-6)
        for a, b in zip(e["runs"], r1["runs"]):
            assert a["seed"] == b["seed"] and a["accuracy"] == b["accuracy"]
            assert a["macro_f1"] == pytest.approx(b["macro_f1"], abs=1e-6)
            assert a["final_loss"] == pytest.approx(b["final_loss"], abs=1e-4)
    assert len(read_results_table(out / "results.md")) == 3      # rank 0 wrote the rows once


def test_errors_exit_2(tmp_path, smoke_experts, synthetic):
    out = tmp_path / "unknown"
    assert evaluate(out, smoke_experts, "--baseline", "random,coreset") == 2
    log = (out / "print.log").read_text()
    assert "coreset" in log and all(name in log for name in BASELINES)
    assert not (out / "eval").exists()

    out = tmp_path / "missing"
    assert evaluate(out, smoke_experts, "--load_path", str(tmp_path / "nope.pth")) == 2
    assert "synthetic set not found" in (out / "print.log").read_text()

    out = tmp_path / "nothing"
    assert evaluate(out, smoke_experts) == 2
    assert "nothing to evaluate" in (out / "print.log").read_text()

    syn = torch.load(synthetic, weights_only=True)
    syn["meta"]["class_names"] = ["a", "b", "c", "d", "e"]
    other = tmp_path / "other_classes.pth"
    torch.save(syn, other)
    out = tmp_path / "classes"
    assert evaluate(out, smoke_experts, "--load_path", str(other)) == 2
    assert "differ from the dataset" in (out / "print.log").read_text()

    # cross-architecture: an encoder of another hidden size is refused with a clear message
    out = tmp_path / "hidden"
    assert evaluate(out, smoke_experts, "--load_path", str(synthetic), "--eval_model_path",
                    "random", "--set", "network.random_hidden=64") == 2
    log = (out / "print.log").read_text()
    assert "hidden size 32" in log and "hidden size 64" in log


def test_default_scores_once_and_matches_the_curve_run(tmp_path, smoke_experts, synthetic):
    """Without eval_every the test split is scored once, at the last step, with the same accuracy
    as a run that also drew a curve (on a subsample of test rows)."""
    syn = str(synthetic)
    once, curve = tmp_path / "once", tmp_path / "curve"
    args = ["--config_path", SMOKE, "--load_path", syn, "--set", f"pretrain.expert_dir={smoke_experts}",
            "--set", "evaluate.num_eval=2", "--set", "evaluate.steps=4", "--set", "evaluate.lr=0.001"]
    assert evaluate_script_text.main([*args, "--output_dir", str(once),
                                      "--set", f"evaluate.results_table={once / 'r.md'}"]) == 0
    assert evaluate_script_text.main([*args, "--output_dir", str(curve), "--set",
                                      "evaluate.eval_every=2", "--set", "evaluate.curve_rows=10",
                                      "--set", f"evaluate.results_table={curve / 'r.md'}"]) == 0
    a, b = results(once)[0]["runs"], results(curve)[0]["runs"]
    assert [r["curve"] for r in a] == [[[4, r["accuracy"]]] for r in a]
    assert [len(r["curve"]) for r in b] == [2, 2]
    assert [r["accuracy"] for r in a] == [r["accuracy"] for r in b]


def test_full_baseline_trains_epochs_unless_steps_are_given(tmp_path):
    """`full` trains full_epochs over all its rows (as long as the experts) or exactly full_steps."""
    from evaluation.protocol import full_steps
    from utils.config import ConfigError
    ev = load_config(SMOKE).evaluate
    assert (ev.full_epochs, ev.full_steps, ev.batch_size) == (2.0, None, 16)
    assert full_steps(ev, 1000) == 125 and full_steps(ev, 1001) == 126
    ev6 = load_config(SMOKE, [("evaluate.full_steps", 6)]).evaluate
    assert full_steps(ev6, 1000) == 6
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"base: {SMOKE}\nevaluate:\n  full_epochs: 0\n")
    with pytest.raises(ConfigError, match="full_epochs"):
        load_config(str(bad))


def test_head_lr_moves_the_new_head_at_its_own_rate_and_multilabel_val_picks_by_micro_f1():
    """evaluate.head_lr: one AdamW step moves the head's weights by about head_lr and the
    encoder's by about lr (Adam's first step is lr x sign); null keeps one group at lr.
    select_by 'val' scores a multi-label point by validation micro-F1, not subset accuracy."""
    from evaluation.protocol import param_groups, val_score
    from utils.config_schema import NetworkConfig
    from utils.model import build_classifier

    cfg = load_config(SMOKE, [("evaluate.lr", 1e-4), ("evaluate.head_lr", 1e-2)])
    torch.manual_seed(0)
    model = build_classifier(NetworkConfig(model_path="random", random_layers=1), 3, vocab_size=50)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW(param_groups(model, cfg.evaluate), lr=cfg.evaluate.lr, weight_decay=0.0)
    ids = torch.randint(0, 50, (4, 6))
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids))
    torch.nn.functional.cross_entropy(out.logits, torch.tensor([0, 1, 2, 0])).backward()
    opt.step()
    moved = {n: (p.detach() - before[n]).abs().max().item() for n, p in model.named_parameters()}
    assert moved["classifier.weight"] == pytest.approx(1e-2, rel=0.05)
    encoder = [v for n, v in moved.items() if not n.startswith("classifier.")]
    assert max(encoder) == pytest.approx(1e-4, rel=0.05)
    one = param_groups(model, load_config(SMOKE).evaluate)
    assert len(one) == 1 and len(one[0]["params"]) == len(list(model.parameters()))
    assert val_score({"val_accuracy": 0.0, "val_micro_f1": 0.4}) == 0.4
    assert val_score({"val_accuracy": 0.7}) == 0.7
