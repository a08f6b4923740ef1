"""NCFM: neural characteristic-function distribution matching (min-max)."""

from NCFM.cf_loss import (
    DISTRIBUTION_METRICS,
    cf_loss,
    distribution_loss,
    empirical_cf,
    mmd_loss,
    sample_frequencies,
)
from NCFM.sampling_net import SamplingNet, negate_grads

__all__ = [
    "DISTRIBUTION_METRICS",
    "SamplingNet",
    "cf_loss",
    "distribution_loss",
    "empirical_cf",
    "mmd_loss",
    "negate_grads",
    "sample_frequencies",
]
