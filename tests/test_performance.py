"""The cheaper-iteration levers: the real-feature cache (lam grid), bf16 autocast, and the
profiler phases."""
from __future__ import annotations

import json
import random

import pytest
import torch

from condense import condense_script_text
from condenser.expert_pool import choose_expert
from condenser.objectives import RealFeatureCache
from tests.conftest import SMOKE
from utils.seeding import derive_seed


def test_lam_grid_draws_grid_values_and_keeps_the_continuous_draw():
    for it in range(50):
        cont = choose_expert(3, it, 4, [0.2, 0.8])
        rng = random.Random(derive_seed(3, "expert", it))
        assert cont.expert == rng.randrange(4) and cont.lam == pytest.approx(rng.uniform(0.2, 0.8))
        grid = choose_expert(3, it, 4, [0.2, 0.8], lam_grid=4)
        assert grid.expert == cont.expert
        assert grid.lam == pytest.approx(0.2 + 0.6 * grid.grid_index / 3)
    seen = {choose_expert(0, it, 1, [0.0, 1.0], lam_grid=3).grid_index for it in range(60)}
    assert seen == {0, 1, 2}


def test_real_feature_cache_computes_each_sample_once():
    pools = [torch.tensor([0, 2, 5, 7, 9]), torch.tensor([1, 3])]
    table = torch.randn(10, 2, 4)                       # the "features" of sample i: [K=2, H=4]
    asked = []

    def compute(idx):
        asked.append(idx.tolist())
        return table[idx].transpose(0, 1)               # [K, m, H]

    cache = RealFeatureCache(pools)
    got = cache.get((0, 1), 0, torch.tensor([5, 0, 5]), compute)
    assert torch.equal(got, table[[5, 0, 5]].transpose(0, 1)) and asked == [[0, 5]]
    got = cache.get((0, 1), 0, torch.tensor([9, 5]), compute)
    assert torch.equal(got, table[[9, 5]].transpose(0, 1)) and asked[-1] == [9]
    cache.get((1, 1), 0, torch.tensor([9]), compute)     # another expert: its own table
    assert asked[-1] == [9] and len(asked) == 3
    assert cache.hits == 2 and cache.misses == 4


def _condense(out, experts, *extra):
    return condense_script_text.main(["--config_path", SMOKE, "--output_dir", str(out), "--set",
                                      f"pretrain.expert_dir={experts}", "--set",
                                      "condense.niter=6", "--set", "condense.save_every=6", *extra])


def test_cached_and_bf16_condensation_match_the_plain_one(tmp_path, smoke_experts):
    base_out, cache_out, bf16_out = tmp_path / "base", tmp_path / "cache", tmp_path / "bf16"
    grid = ["--set", "condense.lam_grid=3"]
    assert _condense(base_out, smoke_experts, *grid) == 0
    assert _condense(cache_out, smoke_experts, *grid, "--set", "condense.objectives=[{name: "
                     "feature_match, options: {real_cache: true}}, {name: calibration}]") == 0
    assert _condense(bf16_out, smoke_experts, *grid, "--precision", "bf16") == 0
    base = json.loads((base_out / "loss_history.json").read_text())
    cached = json.loads((cache_out / "loss_history.json").read_text())
    # the cache serves features from earlier iterations: the hit rate climbs above 0
    assert cached[0]["cache_hit_rate"] == 0.0 and cached[-1]["cache_hit_rate"] > 0.0
    assert all(round(r["lam"] * 2, 4) in (0.0, 1.0, 2.0) for r in cached)
    # the same (grid) expert choices and losses as without the cache, to float precision
    base_grid = [choose_expert(0, i, 2, [0.0, 1.0], 3).lam for i in range(6)]
    assert [r["lam"] for r in cached] == [round(v, 4) for v in base_grid]
    assert len(base) == len(cached) == 6
    for a, b in zip(base, cached):
        assert b["match_loss"] == pytest.approx(a["match_loss"], rel=1e-4, abs=1e-6)
    # bf16 autocast: the same expert choices, and the first loss (same start, same expert) equal
    # to bf16 rounding; the set stays fp32 and finite
    bf16 = json.loads((bf16_out / "loss_history.json").read_text())
    assert len(bf16) == 6 and [r["lam"] for r in bf16] == [r["lam"] for r in base]
    assert bf16[0]["match_loss"] == pytest.approx(base[0]["match_loss"], rel=5e-2)
    assert all(r["match_loss"] > 0 for r in bf16)
    syn = torch.load(bf16_out / "distilled_data" / "syn_data_6.pth", weights_only=True)
    assert syn["inputs_embeds"].dtype == torch.float32 and torch.isfinite(syn["inputs_embeds"]).all()


def test_calib_every_takes_the_calibration_steps_on_every_nth_iteration(tmp_path, smoke_experts,
                                                                       monkeypatch):
    from condenser.objectives import Calibration

    calls = []
    real_backward = Calibration.backward

    def counting(self, it, shard):
        calls.append(it)
        return real_backward(self, it, shard)

    monkeypatch.setattr(Calibration, "backward", counting)
    out = tmp_path / "every3"
    assert _condense(out, smoke_experts, "--set", "condense.objectives=[{name: feature_match}, "
                     "{name: calibration, options: {every: 3}}]") == 0
    assert calls == [0, 3]                               # iterations 1 and 4 of 6
    rows = json.loads((out / "loss_history.json").read_text())
    values = [r["calib_loss"] for r in rows]
    assert values[0] > 0 and values[1] == values[2] == values[0]   # skipped: the last value
    assert values[3] != values[0] and values[4] == values[5] == values[3]


def test_precision_auto_is_bf16_only_where_the_device_runs_it_natively():
    from utils.precision import resolve_precision

    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu, flags={"avx2", "avx512_bf16"}) == "bf16"
    assert resolve_precision("auto", cpu, flags={"avx2", "amx_bf16"}) == "bf16"
    assert resolve_precision("auto", cpu, flags={"avx2", "avx512f"}) == "fp32"   # emulated: slower
    for explicit in ("fp32", "bf16_real", "bf16"):
        assert resolve_precision(explicit, cpu, flags=set()) == explicit


def test_a_run_with_precision_auto_logs_what_it_resolved_to(tmp_path, smoke_experts):
    from utils.precision import resolve_precision

    out = tmp_path / "auto"
    assert _condense(out, smoke_experts, "--precision", "auto") == 0
    want = resolve_precision("auto", torch.device("cpu"))
    assert f"precision {want} (auto)" in (out / "print.log").read_text()


def test_multi_layer_matching_sums_the_per_layer_losses_with_the_cache(tmp_path, smoke_experts):
    """feature_match's `layers` with several layers matches each layer's features and adds the losses;
    the real-feature cache keeps all the layers ([K, B, H])."""
    first = {}
    for layers in ("[-2]", "[-1]", "[-2, -1]"):
        out = tmp_path / layers.strip("[]").replace(", ", "_")
        assert _condense(out, smoke_experts, "--set", "condense.niter=2", "--set",
                         "condense.lam_grid=3", "--set", "condense.objectives=[{name: feature_match, "
                         f"options: {{real_cache: true, layers: {layers}}}}}]") == 0
        first[layers] = json.loads((out / "loss_history.json").read_text())[0]["match_loss"]
    assert first["[-2, -1]"] == pytest.approx(first["[-2]"] + first["[-1]"], rel=1e-5)
    assert first["[-2]"] != pytest.approx(first["[-1]"])


def _toy_task(n: int, seed: int):
    """Token-id rows whose class is whether the first token is in the upper half of the
    vocabulary (a task a tiny BERT learns in a few dozen steps)."""
    from utils.training import Examples
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 45, (n, 8), generator=g)                               # [N, L]
    labels = (ids[:, 0] >= 25).long()                                              # [N]
    return Examples(torch.ones_like(ids), labels, input_ids=ids)


@pytest.mark.parametrize("bf16", [False, True])
def test_training_under_bf16_autocast_learns_with_fp32_weights(bf16):
    """pretrain/evaluate.precision bf16: the linear layers of the training steps and of scoring
    run in bfloat16 (seen by a hook), weights and gradients stay fp32, and the classifier
    learns the task as in fp32 (accuracy on held-out rows)."""
    from utils.config_schema import NetworkConfig
    from utils.model import build_classifier
    from utils.training import endless_batches, evaluate_classifier, label_loss_fn, train_steps

    torch.manual_seed(0)
    net = NetworkConfig(model_path="random", random_layers=1, random_hidden=32, random_heads=2,
                        dropout=0.0)
    model = build_classifier(net, 2, vocab_size=50)
    seen = []
    linear = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    linear.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    train, test = _toy_task(512, 0), _toy_task(256, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batches = endless_batches(len(train), 32, torch.Generator().manual_seed(0))
    cpu = torch.device("cpu")
    import itertools
    loss = train_steps(model, train, itertools.islice(batches, 80), opt, cpu,
                       label_loss_fn(False), bf16=bf16)
    want = torch.bfloat16 if bf16 else torch.float32
    assert set(seen) == {want} and len(seen) == 80
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32
               for p in model.parameters() if p.grad is not None)
    seen.clear()
    scores = evaluate_classifier(model, test, 64, cpu, bf16=bf16)
    assert set(seen) == {want}
    assert scores["accuracy"] > 0.9 and loss < 0.6, (scores, loss)


def test_expert_precision_shapes_the_fingerprint_and_is_recorded(tmp_path, smoke_experts):
    """Experts trained under bf16 are another artifact than fp32 ones: another folder (fp32
    keeps the folder experts had before the key existed; 'auto' is filed under what it resolves
    to). Stage 1 logs the arithmetic; stage 3 records it with every results entry."""
    from condense import evaluate_script_text, pretrain_script_text
    from utils.config import load_config
    from utils.experts import expert_set_dir, fingerprint
    from utils.precision import resolve_precision

    def folder(value):
        return expert_set_dir(load_config(SMOKE, [("pretrain.precision", value)]))
    assert folder("fp32") == expert_set_dir(load_config(SMOKE))
    assert "precision" not in fingerprint(load_config(SMOKE))["pretrain"]
    assert folder("bf16") != folder("fp32")
    assert folder("auto") == folder(resolve_precision("auto", torch.device("cpu")))

    root = tmp_path / "experts"
    assert pretrain_script_text.main(["--config_path", SMOKE, "--expert_precision", "bf16",
                                      "--set", f"pretrain.expert_dir={root}",
                                      "--set", "pretrain.num_premodel=1",
                                      "--set", "pretrain.epochs=1"]) == 0
    manifest = json.loads(next(root.rglob("expert_0/manifest.json")).read_text())
    assert manifest["fingerprint"]["pretrain"]["precision"] == "bf16" and manifest["complete"]
    out = tmp_path / "eval"
    assert evaluate_script_text.main(["--config_path", SMOKE, "--output_dir", str(out),
                                      "--set", f"pretrain.expert_dir={smoke_experts}",
                                      "--set", f"evaluate.results_table={out / 'results.md'}",
                                      "--baseline", "random", "--set", "evaluate.num_eval=1",
                                      "--set", "evaluate.steps=2", "--eval_precision", "bf16",
                                      "--set", "condense.ipc=2"]) == 0
    entries = json.loads((out / "eval" / "results.json").read_text())
    assert entries and {e["precision"] for e in entries} == {"bf16"}


def test_the_classifiers_adamw_is_torchs_fused_kernel_with_the_same_updates():
    """utils.training.adamw: fused on CPU (one kernel, not a loop over tensors), and ten steps of
    it move the weights as ten steps of the default AdamW do (param groups kept)."""
    from utils.config_schema import NetworkConfig
    from utils.model import build_classifier
    from utils.training import adamw

    def trained(make):
        torch.manual_seed(0)
        model = build_classifier(NetworkConfig(model_path="random", random_layers=1,
                                               random_hidden=16, random_heads=2), 3, vocab_size=40)
        head = [p for n, p in model.named_parameters() if "classifier" in n]
        rest = [p for n, p in model.named_parameters() if "classifier" not in n]
        opt = make([{"params": rest}, {"params": head, "lr": 1e-2}])
        start = {n: p.detach().clone() for n, p in model.named_parameters()}
        gen = torch.Generator().manual_seed(1)
        for _ in range(10):
            ids = torch.randint(1, 40, (4, 6), generator=gen)
            loss = torch.nn.functional.cross_entropy(
                model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits,
                torch.tensor([0, 1, 2, 0]))
            opt.zero_grad()
            loss.backward()
            opt.step()
        moved = max(float((p.detach() - start[n]).abs().max()) for n, p in model.named_parameters())
        assert moved > 1e-3                       # the steps did move the weights
        return opt, {n: p.detach().clone() for n, p in model.named_parameters()}

    fused, a = trained(lambda groups: adamw(groups, lr=1e-3, weight_decay=0.01))
    plain, b = trained(lambda groups: torch.optim.AdamW(groups, lr=1e-3, weight_decay=0.01))
    assert all(g["fused"] for g in fused.param_groups) and not plain.param_groups[0]["fused"]
    assert fused.param_groups[1]["lr"] == 1e-2
    for n in a:
        torch.testing.assert_close(a[n], b[n], atol=1e-5, rtol=1e-4)
