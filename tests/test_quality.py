"""The quality knobs: pooling modes, `init: herding`, the expert-soft-label and attention-label
protocols and the results table's label column."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from condense import condense_script_text, evaluate_script_text
from condenser.init import init_herding
from condenser.init_context import InitContext
from evaluation.protocol import expert_attention_labels, expert_soft_labels, make_context
from evaluation.results import add_gaps, append_results_table, read_results_table
from evaluation.selectors import load_feature_expert, select_baseline
from tests.conftest import SMOKE
from utils.config import load_config
from utils.config_schema import NetworkConfig
from utils.coreset import expert_features
from utils.distributed import DistEnv
from utils.experts import expert_set_dir
from utils.model import build_classifier, classifier_name, pool, resolve_pooling
from utils.runtime import load_data
from utils.training import Examples, attention_kl, attention_label_loss_fn, label_loss

SMALL = ["--set", "evaluate.num_eval=2", "--set", "evaluate.steps=4", "--set", "evaluate.lr=0.001"]


# ------------------------------------------------------------------------------------ pooling

def test_pool_cls_and_masked_mean():
    hidden = torch.arange(2 * 3 * 2, dtype=torch.float32).view(2, 3, 2)   # [B=2, L=3, H=2]
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert torch.equal(pool(hidden, mask, "cls"), hidden[:, 0])
    mean = pool(hidden, mask, "mean")
    assert torch.allclose(mean[0], hidden[0, :2].mean(0))                 # padding left out
    assert torch.allclose(mean[1], hidden[1].mean(0))


def test_pooling_modes_give_the_documented_features():
    torch.manual_seed(0)
    ids = torch.randint(1000, 2000, (3, 8))
    mask = torch.ones(3, 8, dtype=torch.long)
    mask[0, 5:] = 0
    for mode in ("cls", "mean"):
        net = NetworkConfig(model_path="random", pooling=mode)
        model = build_classifier(net, 4).eval()
        out = model(input_ids=ids, attention_mask=mask, layer_index=[-1, 1],
                    output_hidden_states=True)
        for k, layer in enumerate([-1, 1]):
            h = out.hidden_states[layer]                                   # [B, L, H]
            want = h[:, 0] if mode == "cls" else torch.stack(
                [h[i, mask[i].bool()].mean(0) for i in range(3)])
            assert torch.allclose(out.features[k], want, atol=1e-6)
        # the head reads the same pooled last layer
        assert torch.allclose(out.logits, model.classifier(out.features[0]), atol=1e-6)


def test_auto_pooling_reads_the_model_folder_and_keeps_old_expert_folders():
    assert resolve_pooling(NetworkConfig(pooling="auto")) == "mean"       # MiniLM: 1_Pooling says mean
    assert resolve_pooling(NetworkConfig(model_path="random", pooling="auto")) == "cls"
    cfg = load_config(SMOKE)
    mean = dataclasses.replace(cfg, network=dataclasses.replace(cfg.network, pooling="mean"))
    auto = dataclasses.replace(cfg, network=dataclasses.replace(cfg.network, pooling="auto"))
    assert expert_set_dir(mean) != expert_set_dir(cfg)                   # mean retrains
    assert expert_set_dir(auto) == expert_set_dir(cfg)                   # random + auto = cls


def test_a_pooling_has_its_own_rows_in_the_results_table(tmp_path):
    """A mean-pooled classifier is named as such, and never takes a [CLS] row as its reference."""
    cls_name = classifier_name(NetworkConfig())
    mean_name = classifier_name(NetworkConfig(pooling="mean"))
    assert cls_name == "all-MiniLM-L6-v2" and mean_name == "all-MiniLM-L6-v2 (mean pooling)"
    assert classifier_name(NetworkConfig(pooling="auto")) == mean_name     # MiniLM: auto = mean

    def entry(method, model, acc):
        return {"dataset": "bbc", "ipc": 10, "method": method, "model": model, "select_by": "last",
                "labels": "hard", "steps": 100, "num_eval": 5, "mean": acc, "std": 0.01,
                "metrics": {"accuracy": {"mean": acc, "std": 0.01}}, "gap_to_full": None,
                "gain_over_random": None, "train_seconds": 1.0, "source": "x"}
    table = tmp_path / "results.md"
    append_results_table(table, [entry("random", cls_name, 0.90)])
    rows = read_results_table(table)
    syn = [entry("synthetic", mean_name, 0.92)]
    add_gaps(syn, rows)
    assert syn[0]["gain_over_random"] is None                 # the cls random row is not its own
    append_results_table(table, [entry("random", mean_name, 0.88)])
    add_gaps(syn, read_results_table(table))
    assert syn[0]["gain_over_random"] == pytest.approx(0.04)


# ---------------------------------------------------------------------------- init: herding

def test_init_herding_starts_from_the_herding_baseline(smoke_experts):
    cfg = load_config(SMOKE, [("pretrain.expert_dir", smoke_experts)])
    data = load_data(cfg)
    expert = load_feature_expert(cfg, 5, torch.device("cpu"), data.tokenizer.vocab_size)
    feats = expert_features(expert, data.train.attention_mask, 64, torch.device("cpu"),
                            input_ids=data.train.input_ids)
    tok = data.tokenizer
    calls = []

    def features(idx):
        calls.append(idx)
        return feats[idx]

    ctx = InitContext(data.train, expert.embed(torch.arange(tok.vocab_size)).detach(),
                      tok.cls_token_id, tok.sep_token_id, tok.pad_token_id, 5, False, 0,
                      cfg.condense, features=features)
    sel = select_baseline("herding", data.train.labels, 5, 3, seed=0, features=feats)
    for c in range(5):
        d = init_herding(ctx, c, 3)
        # only the class's training samples are looked at, and the picks are herding's
        assert torch.equal(calls[-1], data.train.class_indices[c])
        want = data.train.input_ids[sel[c]]
        assert torch.equal(d.embeds, ctx.word_embeddings[want])
        assert torch.equal(d.mask, data.train.attention_mask[sel[c]])
        assert (d.labels == c).all()


def test_condense_with_init_herding_saves_the_herding_picks(tmp_path, smoke_experts):
    """End to end through the script: with no iterations the saved set is herding's real samples
    (their token embeddings and masks), class-major."""
    out = tmp_path / "run"
    assert condense_script_text.main(["--config_path", SMOKE, "--output_dir", str(out),
                                      "--set", f"pretrain.expert_dir={smoke_experts}",
                                      "--init", "herding", "--set", "condense.niter=0"]) == 0
    syn = torch.load(out / "distilled_data" / "syn_data_0.pth", weights_only=True)
    cfg = load_config(SMOKE, [("pretrain.expert_dir", smoke_experts)])
    data = load_data(cfg)
    expert = load_feature_expert(cfg, 5, torch.device("cpu"), data.tokenizer.vocab_size)
    feats = expert_features(expert, data.train.attention_mask, 64, torch.device("cpu"),
                            input_ids=data.train.input_ids)
    ipc = cfg.condense.ipc
    sel = select_baseline("herding", data.train.labels, 5, ipc, seed=0, features=feats)
    picks = torch.cat([torch.as_tensor(sel[c]) for c in range(5)])
    from condenser.expert_pool import ExpertPool
    table = ExpertPool(cfg, 5, torch.device("cpu")).embedding_table()   # the pretrained [V, H]
    assert syn["class_of"].tolist() == [c for c in range(5) for _ in range(ipc)]
    torch.testing.assert_close(syn["inputs_embeds"], table[data.train.input_ids[picks]])
    assert torch.equal(syn["attention_mask"], data.train.attention_mask[picks])
    assert "herding" in (out / "print.log").read_text()


VAL = ["--set", "evaluate.select_by=val", "--set", "evaluate.eval_every=2"]


def test_init_best_real_starts_from_the_candidate_best_on_validation(tmp_path, smoke_experts):
    """init best_real scores each candidate's real subset exactly as the evaluation's baselines
    are scored on the validation slice (same seeds, same protocol), starts from the best, and its
    set is the one that init alone makes."""
    experts = ["--set", f"pretrain.expert_dir={smoke_experts}"]
    learns = [*VAL, "--set", "evaluate.steps=30", "--set", "evaluate.lr=0.003",  # scores differ
              "--set", "evaluate.val_fraction=0.5"]
    out = tmp_path / "best"
    assert condense_script_text.main(["--config_path", SMOKE, "--output_dir", str(out), *experts,
                                      "--init", "best_real", "--set", "condense.niter=0",
                                      "--set", "condense.init_options={candidates: [random, herding], "
                                      "runs: 2}", *SMALL, *learns]) == 0
    choice = json.loads((out / "start_choice.json").read_text())
    scores = {r["candidate"]: r["val_mean"] for r in choice["candidates"]}
    assert list(scores) == ["random", "herding"] and len(set(scores.values())) == 2
    assert choice["chosen"] == max(scores, key=scores.get)
    # the scores are the evaluation's own validation scores of those baselines
    assert evaluate_script_text.main(["--config_path", SMOKE, "--output_dir", str(tmp_path / "eval"),
                                      *experts, "--set", f"evaluate.results_table={tmp_path / 't.md'}",
                                      "--baseline", "random,herding", *SMALL, *learns]) == 0
    entries = json.loads((tmp_path / "eval" / "eval" / "results.json").read_text())
    assert {e["method"]: e["metrics"]["val_accuracy"]["mean"] for e in entries} == scores
    # the set is what the chosen init makes on its own
    alone = tmp_path / "alone"
    assert condense_script_text.main(["--config_path", SMOKE, "--output_dir", str(alone), *experts,
                                      "--init", choice["chosen"], "--set", "condense.niter=0",
                                      *SMALL, *learns]) == 0
    a = torch.load(out / "distilled_data" / "syn_data_0.pth", weights_only=True)
    b = torch.load(alone / "distilled_data" / "syn_data_0.pth", weights_only=True)
    assert torch.equal(a["inputs_embeds"], b["inputs_embeds"])
    assert torch.equal(a["attention_mask"], b["attention_mask"])
    assert f"best_real ({choice['chosen']})" in (out / "print.log").read_text()


@pytest.mark.parametrize("extra,message", [
    ([], "set evaluate.select_by=val"),
    (VAL + ["--set", "condense.init_options={candidates: [noise]}"], "unknown or unusable 'noise'"),
    (VAL + ["--set", "condense.init_options={candidates: [best_real]}"], "unusable 'best_real'"),
])
def test_init_best_real_refuses_what_it_cannot_choose_on(tmp_path, smoke_experts, capsys, extra,
                                                         message):
    out = tmp_path / "run"
    assert condense_script_text.main(["--config_path", SMOKE, "--output_dir", str(out),
                                      "--set", f"pretrain.expert_dir={smoke_experts}",
                                      "--init", "best_real",
                                      "--set", "run.resume=never", *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (out / "start_choice.json").exists() and not (out / "distilled_data").exists()


# ------------------------------------------------------------------- expert soft labels

def test_expert_soft_labels_are_the_experts_predictions(smoke_experts):
    cfg = load_config(SMOKE, [("pretrain.expert_dir", smoke_experts),
                              ("evaluate.label_mode", "expert_soft"),
                              ("evaluate.label_temperature", 2.0)])
    data = load_data(cfg)
    ctx = make_context(cfg, DistEnv(), data)
    idx = torch.arange(12)
    ts = Examples.of(ctx.train, idx)
    soft = expert_soft_labels(ctx, ts)
    assert soft.labels.shape == (12, 5) and soft.labels.dtype == torch.float32
    assert torch.allclose(soft.labels.sum(1), torch.ones(12), atol=1e-5)
    with torch.no_grad():
        logits = ctx.label_expert(input_ids=ts.input_ids, attention_mask=ts.attention_mask).logits
    assert torch.allclose(soft.labels, (logits / 2.0).softmax(-1), atol=1e-6)
    assert torch.equal(soft.class_of, ts.class_of) and torch.equal(soft.input_ids, ts.input_ids)
    # the same for synthetic examples (inputs_embeds)
    emb = Examples(ts.attention_mask, ts.labels, inputs_embeds=ctx.label_expert.embed(ts.input_ids))
    assert torch.allclose(expert_soft_labels(ctx, emb).labels, soft.labels, atol=1e-5)


def _evaluate_baselines(out: Path, table: Path, experts: str, *args: str) -> list:
    """The evaluation script on the smoke config (small protocol); its results entries."""
    assert evaluate_script_text.main(["--config_path", SMOKE, "--output_dir", str(out),
                                      "--set", f"pretrain.expert_dir={experts}",
                                      "--set", f"evaluate.results_table={table}",
                                      *args, *SMALL]) == 0
    return json.loads((out / "eval" / "results.json").read_text())


def test_evaluate_label_mode_expert_soft_for_every_method(tmp_path, smoke_experts):
    table = tmp_path / "results.md"
    entries = _evaluate_baselines(tmp_path / "eval", table, smoke_experts,
                                  "--baseline", "random,herding", "--label_mode", "expert_soft")
    assert [e["labels"] for e in entries] == ["expert_soft", "expert_soft"]
    rows = read_results_table(table)
    assert [(r["method"], r["labels"]) for r in rows] == [("random", "expert_soft"),
                                                         ("herding", "expert_soft")]
    # the same seeds and subsets under hard labels train to other losses: the soft labels are used
    hard = _evaluate_baselines(tmp_path / "hard", table, smoke_experts, "--baseline", "random,herding")
    assert len(hard) == len(entries) == 2
    for h, soft in zip(hard, entries):
        assert [r["seed"] for r in h["runs"]] == [r["seed"] for r in soft["runs"]]
        assert len(h["runs"]) == len(soft["runs"]) > 0
        assert all(a["final_loss"] != b["final_loss"] for a, b in zip(h["runs"], soft["runs"]))


# ------------------------------------------------------------------------ attention labels

def test_attention_kl_is_zero_at_the_target_and_ignores_padded_queries():
    torch.manual_seed(0)
    a = torch.randn(2, 3, 4, 4).softmax(-1)                              # [B, h, L, L]
    b = torch.randn(2, 3, 4, 4).softmax(-1)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    assert attention_kl(a, a, mask).abs() < 1e-6
    kl = attention_kl(a, b, mask)
    rows = (a * (a.log() - b.log())).sum(-1).mean(1)                     # [B, L]
    assert torch.allclose(kl, (rows[0, :3].sum() + rows[1].sum()) / 7)
    c = b.clone()
    c[0, :, 3] = a[0, :, 3].flip(-1)                                     # a padded query row
    assert torch.allclose(attention_kl(a, c, mask), kl)
    # head counts that differ are compared head-averaged
    assert torch.allclose(attention_kl(a, b[:, :1], mask),
                          attention_kl(a.mean(1, keepdim=True), b[:, :1], mask))


def test_expert_attention_labels_and_their_loss(smoke_experts):
    cfg = load_config(SMOKE, [("pretrain.expert_dir", smoke_experts),
                              ("evaluate.attention_weight", 0.5),
                              ("evaluate.attention_layers", [0, -1])])
    data = load_data(cfg)
    ctx = make_context(cfg, DistEnv(), data)
    assert ctx.label_expert is None and ctx.attention_expert is not None   # hard labels
    ts = Examples.of(ctx.train, torch.arange(6))
    targets = expert_attention_labels(ctx, ts)
    L = ts.attention_mask.shape[1]
    heads = ctx.attention_expert.encoder.config.num_attention_heads
    assert targets.shape == (6, 2, heads, L, L) and targets.dtype == torch.float16
    with torch.no_grad():
        att = ctx.attention_expert(**ts.inputs(torch.arange(6), torch.device("cpu")),
                                   output_attentions=True).attentions
    assert torch.allclose(targets[:, 1].float(), att[-1], atol=1e-3)
    assert torch.allclose(targets[:, 0].float(), att[0], atol=1e-3)
    # a synthetic set (inputs_embeds) gets the expert's attention on its embeddings
    emb = Examples(ts.attention_mask, ts.labels,
                   inputs_embeds=ctx.attention_expert.embed(ts.input_ids))
    assert torch.allclose(expert_attention_labels(ctx, emb).float(), targets.float(), atol=2e-3)
    # the loss: label loss + weight x mean KL over the labelled layers; 0 KL for the expert itself
    expert = ctx.attention_expert
    idx = torch.arange(4)
    inputs = ts.inputs(idx, torch.device("cpu"))
    loss_fn = attention_label_loss_fn(False, targets, [0, -1], 0.5)
    with torch.no_grad():
        plain = label_loss(expert(**inputs).logits, ts.labels[idx], False)
        assert torch.allclose(loss_fn(expert, inputs, ts.labels[idx], idx), plain, atol=1e-3)
        peaked = torch.zeros_like(targets)
        peaked[..., 0] = 1.0                                            # every query on [CLS]
        kl = sum(-(att[layer][:4, :, :, 0].log()).mean() for layer in (0, -1)) / 2
        away = attention_label_loss_fn(False, peaked, [0, -1], 0.5)
        assert torch.allclose(away(expert, inputs, ts.labels[idx], idx), plain + 0.5 * kl,
                              atol=1e-3)


def test_attention_labels_train_every_method_and_name_the_protocol(tmp_path, smoke_experts):
    table = tmp_path / "results.md"
    entries = _evaluate_baselines(tmp_path / "eval", table, smoke_experts, "--baseline", "random",
                                  "--set", "evaluate.attention_weight=1")
    assert [e["labels"] for e in entries] == ["hard+attn1"]
    rows = read_results_table(table)
    assert [(r["method"], r["labels"]) for r in rows] == [("random", "hard+attn1")]
    # the same seeds without attention labels train to another loss
    base = _evaluate_baselines(tmp_path / "plain", table, smoke_experts, "--baseline", "random")
    assert [r["seed"] for r in base[0]["runs"]] == [r["seed"] for r in entries[0]["runs"]]
    assert len(base[0]["runs"]) == len(entries[0]["runs"]) > 0
    assert all(a["final_loss"] != b["final_loss"]
               for a, b in zip(base[0]["runs"], entries[0]["runs"]))


def test_an_old_results_table_gets_the_labels_column(tmp_path):
    old = tmp_path / "results.md"
    old.write_text("# Evaluation results\n\n| date | dataset | ipc | method | model | select_by | "
                   "steps | runs | accuracy (%) | macro-F1 (%) | gap to full (pp) | gain over "
                   "random (pp) | s/run | source |\n|---|---|---|---|---|---|---|---|---|---|---|"
                   "---|---|---|\n| 2026-11-24 17:58 | bbc | 1 | random | m | last | 100 | 5 | "
                   "52.54 ± 2.35 | 49.86 ± 2.02 | +42.96 | +0.00 | 106.1 | train split |\n")
    entry = {"dataset": "bbc", "ipc": 1, "method": "herding", "model": "m", "select_by": "last",
             "labels": "expert_soft", "steps": 100, "num_eval": 5,
             "metrics": {"accuracy": {"mean": 0.7, "std": 0.01}}, "gap_to_full": None,
             "gain_over_random": None, "train_seconds": 1.0, "source": "x"}
    append_results_table(old, [entry])
    rows = read_results_table(old)
    assert [(r["method"], r["labels"], r["accuracy"]) for r in rows] == [
        ("random", "hard", pytest.approx(0.5254)), ("herding", "expert_soft", pytest.approx(0.7))]
    assert Path(old).read_text().count("| date |") == 1


# ---------------------------------------------------------------------- what the set is worth

def test_condense_ends_with_what_the_set_is_worth(tmp_path, smoke_experts):
    out = tmp_path / "run"
    assert condense_script_text.main(["--config_path", SMOKE, "--output_dir", str(out),
                                      "--set", f"pretrain.expert_dir={smoke_experts}",
                                      "--set", "condense.niter=2", "--set",
                                      "condense.worth_runs=2", *SMALL]) == 0
    entries = json.loads((out / "worth.json").read_text())
    assert [e["method"] for e in entries] == ["synthetic", "random"]
    assert all(e["num_eval"] == 2 and e["n_train"] == 10 and e["steps"] == 4 for e in entries)
    # paired runs: the same seeds for both
    assert [r["seed"] for r in entries[0]["runs"]] == [r["seed"] for r in entries[1]["runs"]]
    log = (out / "print.log").read_text()
    gain = 100 * (entries[0]["mean"] - entries[1]["mean"])
    assert "what the set is worth" in log and f"worth: {gain:+.2f} points" in log


# ---------------------------------------------------------- the kept iteration, by validation

def test_best_by_validation_takes_the_best_score_earliest_and_micro_f1_for_multilabel():
    from evaluation.results import best_by_validation

    def point(it, acc, f1=None):
        return {"iteration": it, "val_accuracy_mean": acc, "val_micro_f1_mean": f1}

    assert best_by_validation([point(0, .5), point(1, .7), point(2, .7), point(3, .6)])[
        "iteration"] == 1                                          # ties: the earliest
    assert best_by_validation([{"iteration": 0, "val_accuracy_mean": None}]) is None
    # multi-label: subset accuracy is near 0 for a tiny set; micro-F1 chooses (select_by val's rule)
    curve = [point(0, .02, .30), point(100, .03, .25), point(200, .01, .41)]
    assert best_by_validation(curve)["iteration"] == 200


def test_condensation_keeps_the_iteration_with_the_best_validation_accuracy(tmp_path, smoke_experts):
    out = tmp_path / "run"
    assert condense_script_text.main([
        "--config_path", SMOKE, "--output_dir", str(out), "--set",
        f"pretrain.expert_dir={smoke_experts}", "--set", "condense.niter=3", "--set",
        "condense.save_every=10", "--set", "condense.eval_it=[0, 1, 2]", "--set",
        "evaluate.select_by=val", "--set", "evaluate.eval_every=2", "--set",
        "evaluate.val_fraction=0.25", *SMALL]) == 0
    curve = json.loads((out / "eval_curve.json").read_text())
    assert all(0.0 <= c["val_accuracy_mean"] <= 1.0 for c in curve)
    best = json.loads((out / "best_iteration.json").read_text())
    want = max(curve, key=lambda c: (c["val_accuracy_mean"], -c["iteration"]))
    assert best["iteration"] == want["iteration"]
    # every evaluated iteration was saved, so the chosen set exists
    assert Path(best["synthetic_set"]).is_file()
    assert (out / "distilled_data" / "syn_data_1.pth").is_file()
    # iteration 0 is the starting set, evaluated (and saved) before the first update
    assert [c["iteration"] for c in curve] == [0, 1, 2] and curve[0]["condense_seconds"] == 0
    assert (out / "distilled_data" / "syn_data_0.pth").is_file()
    assert (out / "images" / "eval_curve.png").stat().st_size > 1000     # the curve, drawn
    log = (out / "print.log").read_text()
    # 24 training samples per class, 6 held out: condensation never sees the validation slice
    assert "validation slice: 30 training samples held out of condensation" in log


# ----------------------------------------------------------------------- learnt soft labels

TRAJ = ["--set", "condense.objectives=[{name: trajectory, options: {syn_steps: 2, unroll: tesla}}, "
        "{name: calibration}]", "--learn_labels", "--set", "condense.label_lr=0.1"]


def _condense_traj(out, experts, niter, *extra):
    return condense_script_text.main(["--config_path", SMOKE, "--output_dir", str(out), "--set",
                                      f"pretrain.expert_dir={experts}", "--set",
                                      f"condense.niter={niter}", "--set", "condense.save_every=2",
                                      *TRAJ, *extra])


def test_learnt_labels_are_trained_saved_and_resumed(tmp_path, smoke_experts):
    from utils.synset import load_synset

    full = tmp_path / "full"
    assert _condense_traj(full, smoke_experts, 4) == 0
    syn = load_synset(str(full / "distilled_data" / "syn_data_4.pth"))   # weights_only load
    labels = syn["labels"]
    assert labels.shape == (10, 5) and labels.dtype == torch.float32
    assert torch.allclose(labels.sum(1), torch.ones(10), atol=1e-5)
    start = torch.full((10, 5), 0.02)
    start[torch.arange(10), syn["class_of"]] = 0.92                       # smoothed one-hot
    assert (labels - start).abs().max() > 1e-4                            # they moved
    assert (labels.argmax(1) == syn["class_of"]).float().mean() >= 0.5
    # an interrupted run (2 iterations, then resumed to 4) ends with the same labels and data
    part = tmp_path / "part"
    assert _condense_traj(part, smoke_experts, 2) == 0
    assert _condense_traj(part, smoke_experts, 4) == 0
    again = torch.load(part / "distilled_data" / "syn_data_4.pth", weights_only=True)
    assert torch.equal(again["labels"], labels)
    assert torch.equal(again["inputs_embeds"], syn["inputs_embeds"])


def test_learn_labels_needs_an_objective_that_trains_them(tmp_path, smoke_experts):
    out = tmp_path / "ncfm"
    assert condense_script_text.main(["--config_path", SMOKE, "--output_dir", str(out), "--set",
                                      f"pretrain.expert_dir={smoke_experts}",
                                      "--learn_labels"]) == 2
    assert "none of the objectives" in (out / "print.log").read_text()
