"""Task kind ``connectivity``: recovery of ground-truth synaptic weights (simulated sessions) from the model
(runner: :func:`nfm.evaluation.connectivity_tasks.run_connectivity`).

``connectivity``
    ``methods``: list from ``attention``, ``perturbation``, ``gradient`` (the model's
    d log rate_i(t) / d input_j(t - l) summed over ``gradient.lags`` bins, averaged
    over ``gradient.n_targets`` target bins);
    ``perturbation``: ``{forward_s}``; ``ccg_max_lag_bins`` (int >= 1);
    ``max_trials`` (0 = all).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Task, TaskKind, number, spikes_only, str_list, typed

if TYPE_CHECKING:
    from nfm.evaluation.costs import Work


def validate_connectivity(spec: dict, src: str) -> tuple[str, ...]:
    variants = spikes_only(spec, src, "connectivity needs spike data")
    spec["methods"] = str_list(spec.get("methods", ["attention", "perturbation"]), src, "methods",
                               ("attention", "perturbation", "gradient"))
    grad = spec.setdefault("gradient", {})
    typed(grad, dict, src, "gradient", "a mapping")
    number(grad, "lags", 3, src, "gradient.", integer=True, minimum=1)
    number(grad, "n_targets", 8, src, "gradient.", integer=True, minimum=1)
    pert = spec.setdefault("perturbation", {})
    typed(pert, dict, src, "perturbation", "a mapping")
    number(pert, "forward_s", 0.5, src, "perturbation.")
    number(spec, "ccg_max_lag_bins", 3, src, "", integer=True, minimum=1)
    number(spec, "max_trials", 0, src, "", integer=True, positive=False, minimum=0)
    return variants


def quick(task: Task) -> dict:
    """``--quick``: 8 trials per session."""
    return {"max_trials": min(8, task.spec["max_trials"] or 8)}


def connectivity_cost(work: Work, task: Task) -> None:
    """Trial passes of the attention read-out and of the perturbation (one silenced copy per unit), on the
    sessions with ground-truth weights."""
    ctx, spec, cost = work.ctx, task.spec, work.cost
    with_w = [s for s in ctx.sessions if "true_weights" in ctx.meta.session(s).extra]
    if not with_w:
        cost.notes.append("no ground-truth weights: not applicable")
    for sid in with_w:
        work.collate(sid, [ctx.split])
        r = work.trials(sid, [ctx.split])
        if spec["max_trials"]:
            r = min(r, spec["max_trials"])
        n = int(ctx.meta.session(sid).n_units)
        if "attention" in spec["methods"]:
            cost.trial_passes += 2 * r  # teacher-forced decoder pass ~ two backbone passes
        if "perturbation" in spec["methods"]:
            cost.trial_passes += r * (1 + n)


CONNECTIVITY = TaskKind(
    name="connectivity",
    metrics={"spikes": ("auroc", "auprc", "direction_accuracy")},
    baselines=("pearson", "ccg"),
    validate=validate_connectivity,
    run="nfm.evaluation.connectivity_tasks:run_connectivity",
    cost=connectivity_cost,
    quick=quick,
)

__all__ = ["CONNECTIVITY"]
