"""Tests for the NCFM distribution losses and the adversarial frequency sampler."""

from __future__ import annotations

import pytest
import torch

from NCFM import (
    DISTRIBUTION_METRICS,
    SamplingNet,
    cf_loss,
    distribution_loss,
    empirical_cf,
    mmd_loss,
    negate_grads,
    sample_frequencies,
)

NUM_REAL = 64
NUM_SYN = 16
DIM = 32
NUM_FREQS = 128


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _normalize(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


@pytest.fixture
def feat_real() -> torch.Tensor:
    return _normalize(torch.randn(NUM_REAL, DIM, generator=_gen(0)))  # [N, D]


@pytest.fixture
def freqs() -> torch.Tensor:
    return sample_frequencies(NUM_FREQS, DIM, generator=_gen(1))  # [F, D]


def _direction(seed: int) -> torch.Tensor:
    d = torch.randn(DIM, generator=_gen(seed))
    return d / d.norm()  # [D]


def test_empirical_cf_matches_complex_definition(feat_real, freqs):
    re, im = empirical_cf(feat_real, freqs)
    expected = torch.exp(1j * (feat_real.double() @ freqs.double().T)).mean(dim=0)  # [F]
    assert re.shape == im.shape == (NUM_FREQS,)
    torch.testing.assert_close(re.double(), expected.real, atol=1e-5, rtol=0)
    torch.testing.assert_close(im.double(), expected.imag, atol=1e-5, rtol=0)
    # the CF at t = 0 is exactly 1
    re0, im0 = empirical_cf(feat_real, torch.zeros(1, DIM))
    assert re0.item() == pytest.approx(1.0) and im0.item() == pytest.approx(0.0)


def test_sample_frequencies_reproducible_and_scaled():
    a = sample_frequencies(NUM_FREQS, DIM, scale=2.0, generator=_gen(5))
    b = sample_frequencies(NUM_FREQS, DIM, scale=2.0, generator=_gen(5))
    c = sample_frequencies(NUM_FREQS, DIM, scale=2.0, generator=_gen(6))
    assert a.shape == (NUM_FREQS, DIM) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert a.std().item() == pytest.approx(2.0, rel=0.1)
    assert sample_frequencies(4, DIM, dtype=torch.float64).dtype == torch.float64


def test_cf_loss_identical_sets_near_zero_with_finite_grad(feat_real, freqs):
    feat_syn = feat_real.clone().requires_grad_(True)
    loss = cf_loss(feat_real, feat_syn, freqs)
    assert loss.dim() == 0
    assert loss.item() < 1e-3
    loss.backward()
    assert feat_syn.grad is not None
    assert torch.isfinite(feat_syn.grad).all()


@pytest.mark.parametrize("renormalize", [False, True])
def test_cf_loss_grows_monotonically_with_shift(feat_real, freqs, renormalize):
    direction = _direction(2)
    losses = []
    for shift in [0.0, 0.1, 0.3, 1.0]:
        feat_syn = feat_real + shift * direction
        if renormalize:
            feat_syn = _normalize(feat_syn)
        losses.append(cf_loss(feat_real, feat_syn, freqs).item())
    assert all(a < b for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] > 10 * max(losses[0], 1e-3)


def test_cf_loss_permutation_invariant_and_symmetric(feat_real, freqs):
    feat_syn = torch.randn(NUM_SYN, DIM, generator=_gen(3))
    base = cf_loss(feat_real, feat_syn, freqs)
    perm_real = feat_real[torch.randperm(NUM_REAL, generator=_gen(4))]
    perm_syn = feat_syn[torch.randperm(NUM_SYN, generator=_gen(5))]
    torch.testing.assert_close(cf_loss(perm_real, perm_syn, freqs), base, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cf_loss(feat_syn, feat_real, freqs), base, atol=1e-5, rtol=1e-5)
    assert base.item() > 0.05


def test_amplitude_and_phase_terms(feat_real, freqs):
    feat_other = torch.randn(NUM_SYN, DIM, generator=_gen(6))
    for alpha, beta in [(1.0, 0.0), (0.0, 1.0)]:
        assert cf_loss(feat_real, feat_other, freqs, alpha=alpha, beta=beta).item() > 0.0
    # a translation multiplies the CF by exp(i <t, c>): amplitude unchanged, phase shifted
    translated = feat_real + 0.5 * _direction(7)
    amp_only = cf_loss(feat_real, translated, freqs, alpha=1.0, beta=0.0)
    phase_only = cf_loss(feat_real, translated, freqs, alpha=0.0, beta=1.0)
    assert amp_only.item() < 1e-3
    assert phase_only.item() > 0.05
    # a rescaling changes the amplitude
    assert cf_loss(feat_real, 3.0 * feat_real, freqs, alpha=1.0, beta=0.0).item() > 0.05


def test_gradient_descent_on_syn_reduces_cf_loss(feat_real, freqs):
    feat_syn = torch.randn(NUM_SYN, DIM, generator=_gen(8)).requires_grad_(True)
    optimizer = torch.optim.Adam([feat_syn], lr=0.05)
    initial = cf_loss(feat_real, feat_syn, freqs).item()
    for _ in range(200):
        optimizer.zero_grad()
        cf_loss(feat_real, feat_syn, freqs).backward()
        optimizer.step()
    final = cf_loss(feat_real, feat_syn, freqs).item()
    assert final < initial / 5, (initial, final)


def test_mmd_linear_and_rbf(feat_real):
    feat_syn = torch.randn(NUM_SYN, DIM, generator=_gen(9))
    expected = (feat_real.mean(0) - feat_syn.mean(0)).pow(2).sum()
    torch.testing.assert_close(mmd_loss(feat_real, feat_syn, kernel="linear"), expected)
    assert mmd_loss(feat_real, feat_real, kernel="rbf").item() < 1e-6
    assert mmd_loss(feat_real, feat_syn, kernel="rbf", sigma=1.0).item() > 1e-3
    with pytest.raises(ValueError, match="rbf"):
        mmd_loss(feat_real, feat_syn, kernel="cosine")


def test_distribution_loss_registry(feat_real, freqs):
    feat_syn = torch.randn(NUM_SYN, DIM, generator=_gen(10))
    assert {"ncfm", "mmd"} <= set(DISTRIBUTION_METRICS)   # (tests may register more)
    assert "NCFM" in DISTRIBUTION_METRICS and DISTRIBUTION_METRICS.entry("ncfm").trait("needs_frequencies")
    torch.testing.assert_close(
        distribution_loss("NCFM", feat_real, feat_syn, t=freqs, alpha=0.3, beta=0.7),
        cf_loss(feat_real, feat_syn, freqs, alpha=0.3, beta=0.7),
    )
    torch.testing.assert_close(
        distribution_loss("MMD", feat_real, feat_syn, kernel="rbf", sigma=2.0),
        mmd_loss(feat_real, feat_syn, kernel="rbf", sigma=2.0),
    )
    with pytest.raises(ValueError, match="needs frequencies"):
        distribution_loss("NCFM", feat_real, feat_syn)
    with pytest.raises(ValueError, match="unknown distribution metric 'wasserstein'; "
                                         "registered: .*mmd.*ncfm"):
        distribution_loss("wasserstein", feat_real, feat_syn)


def test_feature_dim_mismatch_raises(freqs):
    with pytest.raises(ValueError):
        cf_loss(torch.randn(4, DIM), torch.randn(4, DIM + 1), freqs)


def test_sampling_net_shape_determinism_and_init():
    net = SamplingNet(DIM, NUM_FREQS, hidden_dim=16, num_scales=4, init_scale=0.5)
    t_a = net(_gen(11))
    t_b = net(_gen(11))
    t_c = net(_gen(12))
    assert t_a.shape == (NUM_FREQS, DIM)
    assert torch.equal(t_a, t_b)
    assert not torch.allclose(t_a, t_c)
    noise = torch.randn(NUM_FREQS, DIM, generator=_gen(11))
    torch.testing.assert_close(t_a, 0.5 * noise)
    t_a.sum().backward()
    assert net.log_scale.grad is not None and net.log_scale.grad.abs().sum() > 0


def test_negate_grads_flips_sign_and_skips_missing():
    net = SamplingNet(DIM, 8, hidden_dim=4)
    net(_gen(0)).pow(2).sum().backward()
    before = {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}
    net.mlp[0].weight.grad = None
    negate_grads(net)
    assert net.mlp[0].weight.grad is None
    for name, p in net.named_parameters():
        if name in before and name != "mlp.0.weight":
            torch.testing.assert_close(p.grad, -before[name])


def test_minmax_step_directions(feat_real):
    """Ascent on the sampler increases the loss; descent on the data decreases it."""
    torch.manual_seed(13)
    net = SamplingNet(DIM, NUM_FREQS, hidden_dim=16)
    feat_syn = torch.randn(NUM_SYN, DIM, generator=_gen(14)).requires_grad_(True)
    net_opt = torch.optim.SGD(net.parameters(), lr=0.05)
    syn_opt = torch.optim.SGD([feat_syn], lr=0.05)

    t_before = net(_gen(15))  # [F, D]
    syn_before = feat_syn.detach().clone()  # [M, D]
    loss = cf_loss(feat_real, feat_syn, t_before)
    loss.backward()
    negate_grads(net)
    net_opt.step()
    syn_opt.step()

    with torch.no_grad():
        after_net_step = cf_loss(feat_real, syn_before, net(_gen(15)))
        after_syn_step = cf_loss(feat_real, feat_syn, t_before)
    assert after_net_step.item() > loss.item()
    assert after_syn_step.item() < loss.item()


def test_metric_options_are_validated_and_mmd_kernel_is_settable(feat_real):
    from NCFM import METRICS, MMDOptions
    from utils.errors import UserError

    opts = METRICS.options("mmd", {"kernel": "rbf", "sigma": 0.5})
    assert opts == MMDOptions("rbf", 0.5)
    feat_syn = torch.randn(NUM_SYN, DIM, generator=_gen(11))
    narrow = METRICS.get("mmd")(feat_real, feat_syn, kernel=opts.kernel, sigma=opts.sigma)
    wide = METRICS.get("mmd")(feat_real, feat_syn, kernel="rbf", sigma=5.0)
    assert narrow != wide                                    # the width changes the loss
    with pytest.raises(UserError, match=r"m.kernel: expected one of 'linear', 'rbf'"):
        METRICS.options("mmd", {"kernel": "cosine"}, where="m")
    with pytest.raises(UserError, match=r"m.sigma = 0.0: must be > 0"):
        METRICS.options("mmd", {"sigma": 0}, where="m")
    with pytest.raises(UserError, match=r"unknown key 'gamma'"):
        METRICS.options("ncfm", {"gamma": 1})
