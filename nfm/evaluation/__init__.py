"""Evaluation: NLB-exact metrics, baselines, connectivity and generation fidelity.

Submodules: :mod:`~nfm.evaluation.metrics`, :mod:`~nfm.evaluation.baselines`,
:mod:`~nfm.evaluation.connectivity`, :mod:`~nfm.evaluation.generation_metrics`.
"""
from nfm.evaluation.metrics import (
    bits_per_spike,
    co_bps,
    decode_choice,
    decode_regression,
    fp_bps,
    gaussian_nll,
    masked_r2,
    mean_over_neurons,
    poisson_nll,
    psth_r2,
    r2_score,
)

__all__ = [
    "bits_per_spike",
    "co_bps",
    "decode_choice",
    "decode_regression",
    "fp_bps",
    "gaussian_nll",
    "masked_r2",
    "mean_over_neurons",
    "poisson_nll",
    "psth_r2",
    "r2_score",
]
