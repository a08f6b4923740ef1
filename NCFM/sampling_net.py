"""Learnable frequency sampler for the NCFM min-max game.

NCFM optimises the synthetic data to *minimise* the characteristic-function
discrepancy (:func:`NCFM.cf_loss.cf_loss`) while a sampling network chooses the
frequencies ``t`` to *maximise* it. Both players can share one loss and one backward
pass: after ``loss.backward()`` call :func:`negate_grads` on the sampling network, and
its ordinary ``optimizer.step()`` then performs gradient ascent.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["SamplingNet", "negate_grads"]


class SamplingNet(nn.Module):
    """Maps base Gaussian noise to frequencies with learnable scales and a residual MLP.

    Design:

    * base noise ``z ~ N(0, I)``, shape ``[num_freqs, feature_dim]``, drawn from the
      caller's ``torch.Generator`` when one is given, so processes with identically
      seeded generators (e.g. distributed ranks) use the same frequencies;
    * the frequencies are split round-robin into ``num_scales`` groups (frequency ``f``
      belongs to group ``f % num_scales``); each group has its own learnable per-dimension
      log-scale, so the network can learn to probe several bandwidths at once;
    * a small residual MLP ``z -> hidden_dim -> feature_dim`` adds a learnable
      non-linear correction;
    * ``t = exp(log_scale[group]) * z + mlp(z)``.

    The log-scales start at ``log(init_scale)`` and the MLP's output layer starts at
    zero, so initially ``t == init_scale * z`` exactly. The output is deterministic given
    the generator state and the parameters, and differentiable w.r.t. the parameters.

    Args:
        feature_dim: feature dimension ``D``.
        num_freqs: number of frequencies ``F`` produced per call.
        hidden_dim: width of the residual MLP (default 128).
        num_scales: number of frequency groups with their own scales (default 4).
        init_scale: initial standard deviation of the frequencies (default 1.0, > 0).
    """

    def __init__(
        self,
        feature_dim: int,
        num_freqs: int,
        hidden_dim: int = 128,
        num_scales: int = 4,
        init_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if feature_dim < 1 or num_freqs < 1 or hidden_dim < 1 or num_scales < 1:
            raise ValueError("feature_dim, num_freqs, hidden_dim and num_scales must be >= 1")
        if init_scale <= 0:
            raise ValueError(f"init_scale must be > 0, got {init_scale}")
        self.feature_dim = feature_dim
        self.num_freqs = num_freqs
        self.num_scales = num_scales
        self.log_scale = nn.Parameter(
            torch.full((num_scales, feature_dim), math.log(init_scale))
        )  # [S, D]
        self.register_buffer(
            "group_index", torch.arange(num_freqs) % num_scales, persistent=False
        )  # [F]
        self.mlp = nn.Sequential(
            nn.Linear(feature_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, feature_dim),
        )
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def sample_noise(self, generator: torch.Generator | None = None) -> Tensor:
        """Draw base noise ``z``, shape ``[F, D]``, on the parameters' device and dtype.

        The noise is drawn on the generator's device (so a CPU generator gives the same
        numbers whatever device the network lives on) and then moved.
        """
        param = self.log_scale
        draw_device = generator.device if generator is not None else param.device
        z = torch.randn(
            self.num_freqs, self.feature_dim, generator=generator, device=draw_device, dtype=param.dtype
        )  # [F, D]
        return z.to(param.device)

    def frequencies_from_noise(self, z: Tensor) -> Tensor:
        """Map base noise ``z`` ``[F, D]`` to frequencies ``t`` ``[F, D]``."""
        scale = self.log_scale.exp()[self.group_index]  # [F, D]
        return scale * z + self.mlp(z)  # [F, D]

    def forward(self, generator: torch.Generator | None = None) -> Tensor:
        """Draw frequencies ``t``, shape ``[num_freqs, feature_dim]``."""
        return self.frequencies_from_noise(self.sample_noise(generator))


def negate_grads(module: nn.Module) -> None:
    """Flip the sign of every parameter's ``.grad`` in place (parameters without grad are skipped).

    Call between ``loss.backward()`` and ``optimizer.step()`` so that a normal
    (descent) optimizer performs gradient *ascent* on ``loss`` for ``module``.
    """
    for param in module.parameters():
        if param.grad is not None:
            param.grad.neg_()
