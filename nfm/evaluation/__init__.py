"""Evaluation: NLB-exact metrics, baselines, connectivity and generation fidelity.

Submodules: :mod:`~nfm.evaluation.metrics`, :mod:`~nfm.evaluation.baselines`,
:mod:`~nfm.evaluation.connectivity`, :mod:`~nfm.evaluation.generation_metrics`.  The metric functions below are
loaded on first use, so ``nfm.evaluation.tasks`` (task files, ``recipes/evaluate.py --list_tasks``) imports
neither scipy nor torch.
"""
from __future__ import annotations

_METRICS = ("bits_per_spike", "co_bps", "decode_choice", "decode_regression", "fp_bps", "gaussian_nll", "masked_r2",
            "mean_over_neurons", "poisson_nll", "psth_r2", "r2_score")


def __getattr__(name: str):
    if name in _METRICS:
        from nfm.evaluation import metrics

        return getattr(metrics, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_METRICS)
