"""Trajectory matching core on a tiny BERT: exact gradients, TESLA replay, subsets."""
from __future__ import annotations

import pytest
import torch

from condenser.trajectory import (
    SyntheticBatch,
    backward_full,
    backward_tesla,
    select_subset,
    student_endpoint,
    trajectory_distance,
    unroll_full,
)
from utils.config_schema import NetworkConfig
from utils.model import build_classifier


def setup(subset="top_k", ratio=0.5, seed=0):
    torch.manual_seed(seed)
    net = NetworkConfig(model_path="random", random_layers=2, random_hidden=16, random_heads=2,
                        random_intermediate=32, dropout=0.0)
    model = build_classifier(net, 3, vocab_size=50, eager_attention=True).double().eval()
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    names = select_subset(list(params), subset, ratio, num_layers=2)
    start = {n: params[n] for n in names}
    fixed = {n: t for n, t in params.items() if n not in start}
    target = {n: t + 0.02 * torch.randn_like(t) for n, t in start.items()}
    x = (0.5 * torch.randn(6, 8, 16, dtype=torch.float64)).requires_grad_(True)
    mask = torch.ones(6, 8, dtype=torch.long)
    mask[:, 6:] = 0
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    lr = torch.tensor(0.05, dtype=torch.float64, requires_grad=True)
    return model, fixed, start, target, x, mask, labels, lr


def batch_of(x, mask, labels):
    return SyntheticBatch(x, mask, labels, [x])


@pytest.mark.parametrize("steps", [1, 3])
def test_full_unroll_gradient_matches_finite_differences(steps):
    model, fixed, start, target, x, mask, labels, lr = setup()
    backward_full(model, fixed, start, target, batch_of(x, mask, labels), lr, steps, 6)
    gx, glr = x.grad.clone(), lr.grad.clone()
    assert gx.abs().sum() > 0 and glr.abs() > 0

    def f(xv, lrv):
        with torch.enable_grad():
            return unroll_full(model, fixed, start, target, batch_of(xv, mask, labels), lrv,
                               steps, 6).item()
    eps = 1e-6
    d = torch.randn_like(x)
    fd_x = (f(x.detach() + eps * d, lr.detach()) - f(x.detach() - eps * d, lr.detach())) / (2 * eps)
    assert fd_x == pytest.approx((gx * d).sum().item(), rel=1e-4, abs=1e-9)
    fd_lr = (f(x.detach(), lr.detach() + eps) - f(x.detach(), lr.detach() - eps)) / (2 * eps)
    assert fd_lr == pytest.approx(glr.item(), rel=1e-4, abs=1e-9)


def test_tesla_equals_full_for_one_step_and_is_close_for_more():
    grads = {}
    for mode, fn in (("full", backward_full), ("tesla", backward_tesla)):
        for steps in (1, 4):
            model, fixed, start, target, x, mask, labels, lr = setup()
            value = fn(model, fixed, start, target, batch_of(x, mask, labels), lr, steps, 6)
            assert value.dim() == 0 and not value.requires_grad      # a detached value, no sync
            grads[mode, steps] = (value.item(), x.grad.clone(), lr.grad.clone())
    (v_f, gx_f, glr_f), (v_t, gx_t, glr_t) = grads["full", 1], grads["tesla", 1]
    assert v_f == pytest.approx(v_t, rel=1e-10)
    assert torch.allclose(gx_f, gx_t, rtol=1e-8, atol=1e-14) and torch.allclose(glr_f, glr_t)
    (v_f, gx_f, _), (v_t, gx_t, _) = grads["full", 4], grads["tesla", 4]
    assert v_f == pytest.approx(v_t, rel=1e-10)             # same forward, same distance
    cos = torch.nn.functional.cosine_similarity(gx_f.flatten(), gx_t.flatten(), dim=0)
    assert cos > 0.9                                         # first-order: close, not equal


def test_distance_is_zero_when_student_reproduces_target():
    model, fixed, start, target, x, mask, labels, lr = setup()
    endpoint = student_endpoint(model, fixed, start, batch_of(x, mask, labels), lr, 3, 6,
                                create_graph=False)
    assert trajectory_distance(endpoint, start, endpoint).item() == 0.0
    assert trajectory_distance(start, start, target).item() == pytest.approx(1.0)
    moved = unroll_full(model, fixed, start, endpoint, batch_of(x, mask, labels), lr, 3, 6)
    assert moved.item() < 1e-20


def test_subset_matching_touches_only_the_chosen_parameters():
    model, fixed, start, target, x, mask, labels, lr = setup(subset="classifier")
    assert set(start) == {"classifier.weight", "classifier.bias"}
    before = {n: t.clone() for n, t in fixed.items()}
    endpoint = student_endpoint(model, fixed, start, batch_of(x, mask, labels), lr, 2, 6)
    assert set(endpoint) == set(start)                          # only the subset is learnt
    assert all(torch.equal(before[n], fixed[n]) for n in fixed)  # the rest is untouched
    assert all(not torch.equal(endpoint[n], start[n]) for n in start)


def test_select_subset_strategies():
    model = setup()[0]
    names = [n for n, _ in model.named_parameters()]
    head = {"classifier.weight", "classifier.bias"}
    assert select_subset(names, "all", 1.0, 2) == names
    top = select_subset(names, "top_k", 0.5, 2)
    assert head <= set(top) and all(".layer.1." in n or n in head for n in top)
    assert not any(".layer.0." in n for n in top)
    r1 = select_subset(names, "random", 0.3, 2, seed=1)
    assert r1 == select_subset(names, "random", 0.3, 2, seed=1) and head <= set(r1)
    assert r1 != select_subset(names, "random", 0.3, 2, seed=2)
    scores = {n: float(i) for i, n in enumerate(names)}
    imp = select_subset(names, "importance_grad", 0.2, 2, scores=scores)
    body = [n for n in names if n not in head]
    assert set(imp) - head == set(sorted(body, key=lambda n: -scores[n])[:round(0.2 * len(body))])
    with pytest.raises(ValueError, match="needs importance scores"):
        select_subset(names, "importance_act", 0.2, 2)
    with pytest.raises(ValueError, match="allowed"):
        select_subset(names, "bogus", 0.2, 2)
