"""Components own their options: condense.objectives [{name, weight, options}], options checked at
config load (naming the key and the file), old flat keys refused with their new place, several
feature-matching terms in one run, an objective with its own option registered from this file and
set from YAML, the kmeans picks, an evaluating run equal to a plain one, and the host syncs of an
iteration."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import condenser.objectives  # noqa: F401  (publishes the registries, as the scripts do)
from condense import condense_script_text
from condenser.condenser import Condenser
from condenser.expert_pool import ExpertPool
from condenser.objectives import Objective, register_objective
from evaluation.selectors import select_baseline
from NCFM import mmd_loss
from tests.conftest import ROOT, SMOKE
from utils.config import ConfigError, load_config
from utils.coreset import expert_features
from utils.distributed import DistEnv
from utils.errors import UserError
from utils.kmeans_select import kmeans_select
from utils.registry import opt
from utils.runtime import load_data

# ------------------------------------------- the README's "Extending" example, from a test file

@dataclass
class KernelOptions:
    sigma: float = opt(1.0, "RBF kernel width.")


@register_objective("embed_mmd", options=KernelOptions)
class EmbedMMD(Objective):
    """RBF-MMD between real and synthetic mean-pooled input embeddings, class by class."""
    metric_key = "embed_mmd_loss"

    def backward(self, it, shard):
        table, total = self.ctx.pool.embedding_table(), 0.0
        for c in self.ctx.my_classes:
            ids = self.ctx.train.input_ids[self.ctx.train.class_indices[c][:16]]
            real, syn = table[ids.to(table.device)].mean(1), shard.data[c].embeds.mean(1)
            loss = mmd_loss(real, syn, kernel="rbf", sigma=self.options.sigma)
            (self.weight * loss).backward()
            total = total + loss.detach()
        return total


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def condense(out: Path, experts: str, *extra: str, config: str = SMOKE) -> int:
    return condense_script_text.main(["--config_path", config, "--output_dir", str(out),
                                      "--set", f"pretrain.expert_dir={experts}", *extra])


def history(out: Path) -> list:
    return json.loads((out / "loss_history.json").read_text())


def test_objective_with_its_own_option_set_from_yaml_runs(tmp_path, smoke_experts):
    cfg = write(tmp_path / "mine.yaml", f"base: {SMOKE}\ncondense:\n  objectives:\n"
                "    - {name: embed_mmd, weight: 1.0, options: {sigma: 0.5}}\n")
    assert load_config(cfg).condense.objectives[0].options == KernelOptions(0.5)
    out = tmp_path / "run"
    assert condense(out, smoke_experts, config=cfg) == 0
    values = [h["embed_mmd_loss"] for h in history(out)]
    assert len(values) == 6 and all(v > 0 for v in values) and "match_loss" not in history(out)[0]
    assert "embed_mmd: {'sigma': 0.5}" in (out / "print.log").read_text()
    # the option reaches the term: another width, another value on the same start
    wide = tmp_path / "wide"
    assert condense(wide, smoke_experts, "--set", "condense.niter=1", "--set",
                    "condense.objectives=[{name: embed_mmd, options: {sigma: 4.0}}]") == 0
    assert history(wide)[0]["embed_mmd_loss"] != pytest.approx(values[0], rel=1e-3)
    # a wrong option is refused before any work, naming the key and the file
    bad = write(tmp_path / "bad.yaml", f"base: {SMOKE}\ncondense:\n  objectives:\n"
                "    - {name: embed_mmd, options: {width: 2}}\n")
    with pytest.raises(UserError, match=r"bad.yaml: condense.objectives\[0\].options: unknown "
                                        r"key 'width' \(allowed: sigma\)"):
        load_config(bad)
    with pytest.raises(SystemExit) as stop:                  # the script: one line, exit 2
        condense(tmp_path / "refused", smoke_experts, config=bad)
    assert stop.value.code == 2 and not (tmp_path / "refused").exists()


# ------------------------------------------------------------------- options at config load

def test_options_are_checked_at_load_naming_key_and_file(tmp_path):
    cases = {
        "{name: feature_match, options: {metric: mmd, metric_options: {kernel: cosine}}}":
            r"condense.objectives\[0\].options.metric_options.kernel: expected one of 'linear', 'rbf'",
        "{name: feature_match, options: {metric: wasserstein}}":
            r"unknown distribution metric 'wasserstein'; registered: .*mmd.*ncfm",
        "{name: calibration, options: {steps: 0}}":
            r"condense.objectives\[0\].options.steps = 0: must be >= 1",
        "{name: trajectory, options: {unroll: exact}}":
            r"condense.objectives\[0\].options.unroll: expected one of 'full', 'tesla'",
        "{name: ncfm}": r"'ncfm' is a distribution metric, not an objective: use \{name: "
                        r"feature_match, options: \{metric: ncfm\}\}",
        "{name: nope}": r"unknown objective 'nope'; registered: .*calibration.*feature_match",
    }
    for i, (spec, message) in enumerate(cases.items()):
        path = write(tmp_path / f"c{i}.yaml", f"condense:\n  objectives: [{spec}]\n")
        with pytest.raises(UserError, match=f"c{i}.yaml: .*{message}"):
            load_config(path)
    path = write(tmp_path / "init.yaml", "condense:\n  init: mask_fill\n  init_options: "
                                         "{mask_ratio: 2.0}\n")
    with pytest.raises(UserError, match=r"init.yaml: condense.init_options.mask_ratio = 2.0: "
                                        r"must be in \[0, 1\]"):
        load_config(path)
    ok = load_config(write(tmp_path / "ok.yaml", "condense:\n  objectives: [{name: feature_match, "
                                                 "options: {metric: mmd, metric_options: {kernel: "
                                                 "rbf, sigma: 0.25}, layers: [-2, -1]}}]\n"))
    fm = ok.condense.objectives[0].options
    assert (fm.metric, fm.metric_options.kernel, fm.metric_options.sigma, fm.layers) == \
        ("mmd", "rbf", 0.25, [-2, -1])
    assert fm.num_freqs == 512                                       # defaults fill in


def test_old_flat_keys_are_refused_with_their_new_place(tmp_path):
    moved = {
        "condense:\n  iter_calib: 2\n":
            r"condense.iter_calib moved: use condense.objectives: \[..., \{name: calibration, "
            r"options: \{steps: N\}\}\]",
        "condense:\n  calib_every: 4\n": r"condense.calib_every moved: .*calibration, options: \{every",
        "condense:\n  syn_steps: 20\n": r"condense.syn_steps moved: .*trajectory, options: \{syn_steps",
        "condense:\n  dis_metrics: MMD\n": r"condense.dis_metrics moved: .*feature_match, options: "
                                           r"\{metric: mmd",
        "condense:\n  real_cache: true\n": r"condense.real_cache moved: .*feature_match",
        "condense:\n  mask_ratio: 0.3\n": r"condense.mask_ratio moved: use condense.init_options",
        "network:\n  layer_index: [-1]\n": r"network.layer_index moved: .*feature_match, options: "
                                           r"\{layers",
        "optimization:\n  sampling_lr: 0.01\n": r"optimization.sampling_lr moved: .*sampling_net",
    }
    for i, (text, message) in enumerate(moved.items()):
        path = write(tmp_path / f"old{i}.yaml", text)
        with pytest.raises(ConfigError, match=f"old{i}.yaml: {message}"):
            load_config(path)
    with pytest.raises(ConfigError, match=r"command line: condense.trajectory_weight moved"):
        load_config(SMOKE, [("condense.trajectory_weight", 0.5)])


# ----------------------------------------------------------- two feature-matching terms, one run

def test_two_feature_matching_terms_with_other_metrics_and_layers(tmp_path, smoke_experts):
    two = (tmp_path / "two", "condense.objectives=[{name: feature_match}, {name: feature_match, "
           "options: {metric: mmd, metric_options: {kernel: rbf, sigma: 0.5}, layers: [-2]}}, "
           "{name: calibration}]")
    one = (tmp_path / "one", "condense.objectives=[{name: feature_match}, {name: calibration}]")
    for out, objectives in (two, one):
        assert condense(out, smoke_experts, "--set", "condense.niter=2", "--set", objectives) == 0
    rows, single = history(two[0]), history(one[0])
    assert all(r["match_loss"] > 0 and r["match_2_loss"] > 0 and "calib_loss" in r for r in rows)
    assert rows[0]["match_loss"] == single[0]["match_loss"]      # the same start, the same term
    assert rows[0]["match_2_loss"] != rows[0]["match_loss"]
    state = torch.load(two[0] / "checkpoints" / "iter_000002" / "state.pt", weights_only=True)
    assert set(state["terms"]) == {"match_loss", "match_2_loss", "calib_loss"}


# ---------------------------------------------------------------------------- the kmeans picks

def test_kmeans_selects_distinct_samples_nearest_the_centroids():
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    feats = torch.cat([c + 0.1 * torch.randn(20, 2, generator=gen) for c in centres])   # [60, 2]
    picks = kmeans_select(feats, 3, seed=1)
    assert len(set(picks.tolist())) == 3
    assert sorted(int(p) // 20 for p in picks) == [0, 1, 2]              # one per cluster
    # separated clusters: each centroid is its cluster's mean, the pick the sample nearest it
    for p in picks.tolist():
        block = feats[p // 20 * 20:(p // 20 + 1) * 20]                   # [20, 2]
        assert p % 20 == int((block - block.mean(0)).norm(dim=1).argmin())
    assert torch.equal(picks, kmeans_select(feats, 3, seed=1))           # seeded
    assert kmeans_select(feats[:2], 3, seed=1).tolist() == [0, 1]        # too few: all of them


def test_init_kmeans_starts_from_the_kmeans_baselines_picks(smoke_experts):
    cfg = load_config(SMOKE, [("pretrain.expert_dir", smoke_experts), ("condense.init", "kmeans")])
    data, env = load_data(cfg), DistEnv()
    pool = ExpertPool(cfg, 5, env.device)
    cond = Condenser(cfg, env, data.train, pool, list(range(5)))
    cond.initialize("kmeans", cond.init_context(data.tokenizer, 5, False))
    feats = expert_features(pool.load_final(0), data.train.attention_mask, 64, env.device,
                            input_ids=data.train.input_ids)
    picks = select_baseline("kmeans", data.train.labels, 5, cfg.condense.ipc, cfg.run.seed, feats)
    table = pool.embedding_table().detach().cpu()
    for c in range(5):
        assert len(set(picks[c].tolist())) == cfg.condense.ipc
        want = table[data.train.input_ids[picks[c]]]
        assert torch.equal(cond.shard.data[c].embeds.detach().cpu(), want)


def test_correct_only_starts_from_samples_the_head_gets_right(smoke_experts):
    """DATM's start: with init_options {correct_only: true} every starting sequence is a training
    sample the head classifies correctly, picked by the init among those only. (The smoke
    expert's own head predicts one class for every sample, so the head here is a linear probe
    fitted briefly on its features: right on some samples of each class, not all.)"""
    cfg = load_config(SMOKE, [("pretrain.expert_dir", smoke_experts)])
    data, env = load_data(cfg), DistEnv()
    pool = ExpertPool(cfg, 5, env.device)
    feats = expert_features(pool.load_final(0), data.train.attention_mask, 64, env.device,
                            input_ids=data.train.input_ids)                  # [N, H]
    mu, sd = feats.mean(0), feats.std(0).clamp_min(1e-6)       # the features barely vary

    def head(f: torch.Tensor) -> torch.Tensor:
        return probe((f - mu) / sd).detach()                                  # [n, C]
    torch.manual_seed(0)
    probe = torch.nn.Linear(feats.shape[1], 5)
    opt_ = torch.optim.Adam(probe.parameters(), lr=0.05)
    for _ in range(15):
        opt_.zero_grad()
        torch.nn.functional.cross_entropy(probe((feats - mu) / sd), data.train.labels).backward()
        opt_.step()
    right = head(feats).argmax(1) == data.train.labels                        # [N]
    n_right = [int(right[data.train.labels == c].sum()) for c in range(5)]
    assert min(n_right) >= cfg.condense.ipc and sum(n_right) < len(right)
    from utils.coreset import herding_select
    from utils.seeding import derive_seed, seeded_sample
    table = pool.embedding_table().detach().cpu()
    for init in ("random", "herding", "kmeans"):
        cfg = load_config(SMOKE, [("pretrain.expert_dir", smoke_experts), ("condense.init", init),
                                  ("condense.init_options", {"correct_only": True})])
        cond = Condenser(cfg, env, data.train, pool, list(range(5)))
        ctx = cond.init_context(data.tokenizer, 5, False)
        ctx.head = head
        cond.initialize(init, ctx)
        for c in range(5):   # the init's own pick, made on the correctly classified samples only
            ok = data.train.class_indices[c][right[data.train.class_indices[c]]]
            ipc = cfg.condense.ipc
            if init == "random":
                pick = seeded_sample(ok, ipc, ctx.class_seed(c), replace_if_short=True)
            elif init == "herding":
                pick = ok[herding_select(feats[ok], ipc)]
            else:
                pick = ok[kmeans_select(feats[ok], ipc, derive_seed(cfg.run.seed, "select",
                                                                    "kmeans", c))]
            assert bool(right[pick].all())
            assert torch.equal(cond.shard.data[c].embeds.detach().cpu(),
                               table[data.train.input_ids[pick]]), (init, c)


def test_correct_only_fills_a_short_class_with_the_samples_closest_to_correct():
    """A class with fewer correct samples than needed keeps every correct one and adds the wrong
    ones with the highest margin (c's logit minus the best other; multi-label: c's logit)."""
    from types import SimpleNamespace

    from condenser.init_context import correct_pool
    pool = torch.tensor([10, 11, 12, 13, 14])
    logits = torch.tensor([[0.0, 2.0, 0.0],    # wrong, margin -2
                           [3.0, 1.0, 0.0],    # right, +2
                           [0.0, 0.5, 0.0],    # wrong, -0.5 (the closest)
                           [1.0, 0.0, 0.5],    # right, +0.5
                           [0.0, 0.0, 4.0]])   # wrong, -4
    ctx = SimpleNamespace(train=SimpleNamespace(class_indices={0: pool}), multilabel=False,
                          features=lambda idx: (idx.float() - 10).unsqueeze(1),      # [n, 1]
                          head=lambda f: logits[f[:, 0].long()])                     # [n, 3]
    idx, feats = correct_pool(ctx, 0, 2)
    assert sorted(idx.tolist()) == [11, 13]
    idx, feats = correct_pool(ctx, 0, 3)
    assert idx.tolist() == [11, 13, 12] and feats[:, 0].tolist() == [1.0, 3.0, 2.0]
    ctx.train.class_indices[1] = pool      # class 1: margins +2, -2, +0.5, -1, -4
    idx, _ = correct_pool(ctx, 1, 3)
    assert idx.tolist() == [10, 12, 13]
    two = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [float("nan"), 0.0], [0.5, 0.0]])
    ctx.head = lambda f: two[f[:, 0].long()]          # a binary head: a tie and a NaN count wrong
    idx, _ = correct_pool(ctx, 0, 4)
    assert idx.tolist() == [10, 14, 12, 11]
    ctx.multilabel, ctx.head = True, lambda f: logits[f[:, 0].long()]
    idx, _ = correct_pool(ctx, 0, 4)       # c's own logit: 11 (3.0) and 13 (1.0) are right
    assert idx.tolist()[:2] == [11, 13] and sorted(idx.tolist()[2:]) == [10, 12]


def test_correct_only_through_the_script_uses_the_feature_experts_head(tmp_path, smoke_experts):
    """The real head: the smoke expert predicts one class for every sample, so the other classes
    have no correct sample and start from the ones closest to correct, saying so."""
    assert condense(tmp_path, smoke_experts, "--init", "herding", "--set", "condense.niter=1",
                    "--set", "condense.init_options={correct_only: true}") == 0
    log = (tmp_path / "print.log").read_text()
    assert log.count("correct_only adds the") == 4
    assert (tmp_path / "distilled_data" / "syn_data_1.pth").is_file()


# ------------------------------------------------------------ evaluating leaves the run alone

def test_a_run_with_eval_it_equals_one_without_bit_for_bit(tmp_path, smoke_experts, monkeypatch):
    import evaluation.protocol as protocol

    built = []
    real_make_context = protocol.make_context
    monkeypatch.setattr(protocol, "make_context", lambda *a: built.append(1) or real_make_context(*a))
    plain, evaluated = tmp_path / "plain", tmp_path / "evaluated"
    common = ["--set", "condense.niter=3", "--set", "condense.save_every=3"]
    assert condense(plain, smoke_experts, *common) == 0
    assert condense(evaluated, smoke_experts, *common, "--set", "condense.eval_it=[0, 1, 2]",
                    "--set", "evaluate.num_eval=1", "--set", "evaluate.steps=2") == 0
    a = torch.load(plain / "distilled_data" / "syn_data_3.pth", weights_only=True)
    b = torch.load(evaluated / "distilled_data" / "syn_data_3.pth", weights_only=True)
    assert torch.equal(a["inputs_embeds"], b["inputs_embeds"])
    assert [h["match_loss"] for h in history(plain)] == [h["match_loss"] for h in history(evaluated)]
    curve = json.loads((evaluated / "eval_curve.json").read_text())
    assert [p["iteration"] for p in curve] == [0, 1, 2]
    assert built == [1]                           # the evaluator was built once, for three evals


# ----------------------------------------------------------------------- host syncs per iteration

class SyncCounter:
    """Counts host reads of tensor values (.item(), .tolist(), bool(), float(), int()) made by
    the project's code (not by torch or transformers, e.g. the optimisers' step counters)."""
    METHODS = ("item", "tolist", "__bool__", "__float__", "__int__")

    def __init__(self, monkeypatch):
        import sys

        self.calls: list = []
        root = str(ROOT)
        for name in self.METHODS:
            real = getattr(torch.Tensor, name)

            def counted(t, *a, _real=real, _name=name, **kw):
                where = sys._getframe(1).f_code.co_filename
                if where.startswith(root) and "/tests/" not in where and "/.venv/" not in where:
                    self.calls.append((_name, where.rsplit("/", 1)[-1], sys._getframe(1).f_lineno))
                return _real(t, *a, **kw)
            monkeypatch.setattr(torch.Tensor, name, counted)


@pytest.mark.parametrize("objectives", [
    "[{name: feature_match}, {name: calibration}]",
    "[{name: feature_match, options: {sampling_net: true}}, {name: trajectory}, "
    "{name: calibration, options: {every: 2}}]",
])
def test_one_host_sync_per_iteration(smoke_experts, monkeypatch, objectives):
    import yaml

    cfg = load_config(SMOKE, [("pretrain.expert_dir", smoke_experts),
                              ("condense.objectives", yaml.safe_load(objectives))])
    data, env = load_data(cfg), DistEnv()
    pool = ExpertPool(cfg, 5, env.device)
    cond = Condenser(cfg, env, data.train, pool, list(range(5)))
    cond.initialize("random", cond.init_context(data.tokenizer, 5, False))
    counter = SyncCounter(monkeypatch)
    records = [cond.step() for _ in range(3)]
    monkeypatch.undo()
    assert len(counter.calls) == 3, counter.calls            # one per iteration: the values read
    assert all(name == "tolist" for name, *_ in counter.calls)
    assert all(isinstance(v, float) for r in records for k, v in r.items() if k.endswith("_loss"))


def test_method_preset_takes_listed_options_by_name(tmp_path):
    from condenser.objectives import objective_specs

    path = write(tmp_path / "both.yaml", "condense:\n  objectives: [{name: feature_match, options: "
                                         "{real_cache: true}}, {name: calibration, weight: 0.5, "
                                         "options: {every: 4}}]\n")
    listed = load_config(path)
    assert [s.name for s in objective_specs(listed)] == ["feature_match", "calibration"]
    traj = objective_specs(load_config(path, [("condense.method", "trajectory")]))
    assert [s.name for s in traj] == ["trajectory", "calibration"]
    assert traj[0].options.syn_steps == 5                          # default options
    assert (traj[1].weight, traj[1].options.every) == (0.5, 4)      # the listed calibration
    both = objective_specs(load_config(path, [("condense.method", "combined")]))
    assert [s.name for s in both] == ["feature_match", "trajectory", "calibration"]
    assert both[0].options.real_cache is True
    assert [s.name for s in objective_specs(load_config(None))] == ["feature_match", "calibration"]


def test_update_fraction_counts_halves_up_and_moves_at_least_one_sequence():
    from condenser.condenser import sequences_that_move
    assert [sequences_that_move(0.5, n) for n in (1, 2, 3, 5, 10, 50)] == [1, 1, 2, 3, 5, 25]
    assert sequences_that_move(0.25, 10) == 3 and sequences_that_move(0.1, 1) == 1
    assert sequences_that_move(0.29, 50) == 15          # 0.29 * 50 is 14.4999... in floats
    assert sequences_that_move(1.0, 10) == 10


def test_update_fraction_with_a_start_that_is_not_real_is_refused_before_any_work(tmp_path):
    """Held sequences of a noise start would stay noise: exit 2 with the way on, nothing trained
    (the expert folder does not exist, so any work would have started by training experts)."""
    assert condense(tmp_path / "out", str(tmp_path / "no_experts"), "--init", "noise",
                    "--update_fraction", "0.5") == 2
    log = (tmp_path / "out" / "print.log").read_text()
    assert "holds 1 of 2 sequences of each class at their start, and init 'noise' does not" in log
    assert "herding" in log and not (tmp_path / "no_experts").exists()
    from condense.condense_script_text import check_held_start
    for ipc, fraction in ((1, 0.5), (2, 0.8), (2, 1.0)):      # nothing held: nothing to refuse
        check_held_start(load_config(SMOKE, [("condense.init", "noise"), ("condense.ipc", ipc),
                                             ("condense.update_fraction", fraction)]))


def test_update_fraction_holds_the_first_sequences_of_each_class_at_their_start(tmp_path,
                                                                               smoke_experts):
    """SelMatch's partial update: with update_fraction 0.5 at ipc 2, each class's first sequence
    (herding's first pick) is exactly its start after training, the second has moved."""
    assert condense(tmp_path / "start", smoke_experts, "--init", "herding",
                    "--set", "condense.niter=0") == 0
    assert condense(tmp_path / "half", smoke_experts, "--init", "herding", "--set",
                    "condense.niter=2", "--update_fraction", "0.5") == 0
    start = torch.load(tmp_path / "start" / "distilled_data" / "syn_data_0.pth", weights_only=True)
    half = torch.load(tmp_path / "half" / "distilled_data" / "syn_data_2.pth", weights_only=True)
    a, b = start["inputs_embeds"], half["inputs_embeds"]                     # [10, L, H]
    first = torch.tensor([i % 2 == 0 for i in range(10)])                   # class c: rows 2c, 2c+1
    assert torch.equal(start["class_of"], half["class_of"]) and \
        start["class_of"].tolist() == [c for c in range(5) for _ in range(2)]
    assert torch.equal(a[first], b[first])
    assert all(not torch.equal(a[i], b[i]) for i in range(1, 10, 2))
    assert "update_fraction 0.50: the first 1 of 2 sequences" in \
        (tmp_path / "half" / "print.log").read_text()
