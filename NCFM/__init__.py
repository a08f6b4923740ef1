"""NCFM: neural characteristic-function distribution matching (min-max)."""

from NCFM.cf_loss import (
    DISTRIBUTION_METRICS,
    METRICS,
    MMDOptions,
    NCFMOptions,
    cf_loss,
    distribution_loss,
    empirical_cf,
    get_metric,
    mmd_loss,
    register_metric,
    sample_frequencies,
)
from NCFM.sampling_net import SamplingNet, negate_grads

__all__ = [
    "DISTRIBUTION_METRICS",
    "METRICS",
    "MMDOptions",
    "NCFMOptions",
    "SamplingNet",
    "cf_loss",
    "distribution_loss",
    "empirical_cf",
    "get_metric",
    "mmd_loss",
    "negate_grads",
    "register_metric",
    "sample_frequencies",
]
