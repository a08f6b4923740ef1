"""Distribution-matching losses for dataset condensation.

The main metric is the Neural Characteristic Function discrepancy of NCFM
("Dataset Distillation with Neural Characteristic Function: A Minmax Perspective",
Wang et al., CVPR 2025). The characteristic function (CF) of a feature distribution
``phi(t) = E[exp(i <t, x>)]`` determines the distribution uniquely, so matching the
empirical CFs of real and synthetic features at a set of frequencies ``t`` matches the
two distributions. The discrepancy at one frequency is split into an amplitude part
(how concentrated the features are along ``t``) and a phase part (where they sit along
``t``), weighted by ``alpha`` and ``beta``.

A maximum mean discrepancy (MMD) metric is provided as a simpler alternative, and
both are reachable by name through :data:`METRICS` /
:func:`distribution_loss`.

Features are expected to be L2-normalised by the caller, but every function here
works for arbitrary real inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from utils.registry import Entry, Registry, opt

__all__ = [
    "DISTRIBUTION_METRICS",
    "METRICS",
    "MMDOptions",
    "NCFMOptions",
    "cf_loss",
    "distribution_loss",
    "empirical_cf",
    "get_metric",
    "mmd_loss",
    "register_metric",
    "sample_frequencies",
]

#: Kernels understood by :func:`mmd_loss`.
MMD_KERNELS: tuple[str, ...] = ("linear", "rbf")


def _check_features(feat_real: Tensor, feat_syn: Tensor) -> None:
    """Raise ``ValueError`` unless both feature sets are 2-D with the same feature dim."""
    if feat_real.dim() != 2 or feat_syn.dim() != 2:
        raise ValueError(
            f"features must be 2-D [num_samples, dim], got {tuple(feat_real.shape)} "
            f"and {tuple(feat_syn.shape)}"
        )
    if feat_real.shape[1] != feat_syn.shape[1]:
        raise ValueError(
            f"feature dims differ: real {feat_real.shape[1]} vs syn {feat_syn.shape[1]}"
        )


def sample_frequencies(
    num_freqs: int,
    dim: int,
    scale: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Draw Gaussian frequencies ``t ~ N(0, scale^2 I)``.

    Args:
        num_freqs: number of frequencies ``F``.
        dim: feature dimension ``D``.
        scale: standard deviation of every coordinate (default 1.0).
        generator: optional RNG; identically seeded generators give identical draws.
            The noise is drawn on the generator's device and then moved to ``device``.
        device: device of the result (default: the generator's device, else CPU).
        dtype: dtype of the result (default float32).

    Returns:
        Frequencies, shape ``[F, D]``.
    """
    draw_device = generator.device if generator is not None else device
    z = torch.randn(num_freqs, dim, generator=generator, device=draw_device, dtype=dtype)  # [F, D]
    if device is not None:
        z = z.to(device)
    return z * scale


def empirical_cf(feat: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Empirical characteristic function ``mean_n exp(i <t_f, x_n>)``.

    Args:
        feat: samples, shape ``[N, D]``.
        t: frequencies, shape ``[F, D]``.

    Returns:
        ``(real, imag)``, each of shape ``[F]``.
    """
    if feat.dim() != 2 or t.dim() != 2 or feat.shape[1] != t.shape[1]:
        raise ValueError(
            f"expected feat [N, D] and t [F, D], got {tuple(feat.shape)} and {tuple(t.shape)}"
        )
    proj = feat @ t.transpose(0, 1)  # [N, F]
    return torch.cos(proj).mean(dim=0), torch.sin(proj).mean(dim=0)  # [F], [F]


def cf_loss(
    feat_real: Tensor,
    feat_syn: Tensor,
    t: Tensor,
    alpha: float = 0.5,
    beta: float = 0.5,
    eps: float = 1e-12,
) -> Tensor:
    """NCFM characteristic-function discrepancy between two feature sets.

    With ``phi_r``, ``phi_s`` the empirical CFs and ``a = |phi_r|``, ``b = |phi_s|``:

    * amplitude term ``(a - b)^2``;
    * phase term ``2 (a b - Re(phi_r conj(phi_s))) = 2 a b (1 - cos(phase diff))``,
      evaluated as ``|phi_r - phi_s|^2 - (a - b)^2`` (exactly zero for identical sets,
      no cancellation between two large numbers) and clamped at 0 against rounding;
    * per-frequency loss ``sqrt(alpha * amp + beta * phase + eps)``;

    the result is the mean over frequencies. ``eps`` keeps both the amplitudes and the
    square root away from zero so the gradient stays finite when the sets coincide.
    The loss is symmetric in the two sets and invariant to sample order.

    Args:
        feat_real: real features, shape ``[N, D]``.
        feat_syn: synthetic features, shape ``[M, D]``.
        t: frequencies, shape ``[F, D]``.
        alpha: weight of the amplitude term (default 0.5).
        beta: weight of the phase term (default 0.5).
        eps: numerical floor inside the square roots (default 1e-12).

    Returns:
        Scalar loss.
    """
    _check_features(feat_real, feat_syn)
    re_r, im_r = empirical_cf(feat_real, t)  # [F], [F]
    re_s, im_s = empirical_cf(feat_syn, t)  # [F], [F]
    amp_r = torch.sqrt(re_r.square() + im_r.square() + eps)  # [F]
    amp_s = torch.sqrt(re_s.square() + im_s.square() + eps)  # [F]
    amp_term = (amp_r - amp_s).square()  # [F]
    diff_sq = (re_r - re_s).square() + (im_r - im_s).square()  # [F] |phi_r - phi_s|^2
    phase_term = (diff_sq - amp_term).clamp(min=0.0)  # [F]
    per_freq = torch.sqrt(alpha * amp_term + beta * phase_term + eps)  # [F]
    return per_freq.mean()


def _rbf_kernel(x: Tensor, y: Tensor, sigma: float) -> Tensor:
    """Gaussian kernel matrix ``exp(-|x - y|^2 / (2 sigma^2))``, shape ``[len(x), len(y)]``."""
    sq_dist = torch.cdist(x, y).square()  # [X, Y]
    return torch.exp(-sq_dist / (2.0 * sigma**2))


def mmd_loss(
    feat_real: Tensor,
    feat_syn: Tensor,
    kernel: str = "linear",
    sigma: float = 1.0,
) -> Tensor:
    """Maximum mean discrepancy between two feature sets.

    Args:
        feat_real: real features, shape ``[N, D]``.
        feat_syn: synthetic features, shape ``[M, D]``.
        kernel: ``"linear"`` (squared distance of the means) or ``"rbf"`` (biased
            MMD^2 with a Gaussian kernel).
        sigma: RBF bandwidth (default 1.0); ignored for the linear kernel.

    Returns:
        Scalar loss (non-negative).
    """
    _check_features(feat_real, feat_syn)
    if kernel == "linear":
        return (feat_real.mean(dim=0) - feat_syn.mean(dim=0)).square().sum()
    if kernel == "rbf":
        k_rr = _rbf_kernel(feat_real, feat_real, sigma).mean()
        k_ss = _rbf_kernel(feat_syn, feat_syn, sigma).mean()
        k_rs = _rbf_kernel(feat_real, feat_syn, sigma).mean()
        return (k_rr + k_ss - 2.0 * k_rs).clamp(min=0.0)
    raise ValueError(f"unknown MMD kernel {kernel!r}; allowed: {', '.join(MMD_KERNELS)}")


@dataclass
class NCFMOptions:
    """Options of the NCFM characteristic-function discrepancy (:func:`cf_loss`)."""

    alpha: float = opt(0.5, "Weight of the CF amplitude term.")
    beta: float = opt(0.5, "Weight of the CF phase term.")

    def check(self):
        for key in ("alpha", "beta"):
            if getattr(self, key) < 0:
                yield key, "must be >= 0"


@dataclass
class MMDOptions:
    """Options of the maximum mean discrepancy (:func:`mmd_loss`)."""

    kernel: Literal["linear", "rbf"] = opt("linear", "'linear': squared distance of the means; "
                                           "'rbf': biased MMD^2 with a Gaussian kernel.")
    sigma: float = opt(1.0, "Bandwidth of the 'rbf' kernel (ignored by 'linear').")

    def check(self):
        if self.sigma <= 0:
            yield "sigma", "must be > 0"


#: The distribution-metric registry: ``fn(feat_real, feat_syn, [t,] **options)``; an entry's
#: trait ``needs_frequencies`` says whether it takes frequencies ``t`` ``[F, D]`` third. Add one
#: with :func:`register_metric` (or ``METRICS.register``).
METRICS: Registry = Registry("distribution metric", publish=True)
DISTRIBUTION_METRICS = METRICS      # the older name


def register_metric(name: str, needs_frequencies: bool = False, options: type | None = None):
    """Decorator: make a metric selectable by ``name`` (case-insensitive) as feature matching's
    ``metric``, with its own options dataclass (set as ``metric_options``)."""
    return METRICS.register(name, options=options, needs_frequencies=needs_frequencies)


register_metric("ncfm", needs_frequencies=True, options=NCFMOptions)(cf_loss)
register_metric("mmd", options=MMDOptions)(mmd_loss)


def get_metric(name: str) -> Entry:
    """The registered metric `name` (a `utils.registry.Entry`); a UserError listing the names."""
    return METRICS.entry(name)


def distribution_loss(
    name: str,
    feat_real: Tensor,
    feat_syn: Tensor,
    t: Tensor | None = None,
    **kwargs,
) -> Tensor:
    """Evaluate the distribution metric called ``name`` (case-insensitive).

    Args:
        name: a key of :data:`DISTRIBUTION_METRICS` (``"NCFM"`` or ``"MMD"``).
        feat_real: real features, shape ``[N, D]``.
        feat_syn: synthetic features, shape ``[M, D]``.
        t: frequencies ``[F, D]``; required for ``"NCFM"``, ignored otherwise.
        **kwargs: extra keyword arguments for the metric (e.g. ``alpha``, ``kernel``).

    Returns:
        Scalar loss.

    Raises:
        UserError: unknown name; ValueError: ``"NCFM"`` without ``t``.
    """
    metric = get_metric(name)
    if metric.trait("needs_frequencies"):
        if t is None:
            raise ValueError(f"metric {name.upper()!r} needs frequencies t")
        return metric.obj(feat_real, feat_syn, t, **kwargs)
    return metric.obj(feat_real, feat_syn, **kwargs)
