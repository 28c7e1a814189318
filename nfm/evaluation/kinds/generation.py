"""Task kind ``generation``: closed-loop generation of held-out trials and its fidelity (runner:
:func:`nfm.evaluation.generation_tasks.run_generation`).

``generation``
    ``prompt_s`` (true data given before generation starts, seconds),
    ``interval_s`` (counting interval of the fidelity metrics, seconds),
    ``temperature``, ``top_p``, ``top_k``, ``max_trials`` (per session, 0 = all),
    ``seed``, ``conditions`` (trial columns whose joint values are the conditions of
    ``psth_r_condition``; as in ``psth``).  Baselines ``psth`` (Poisson samples of
    the condition-mean training PSTH) and ``glm`` (closed-loop Poisson GLM on
    stimulus, behaviour and recent population counts, penalty by CV) are scored
    like the model.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .base import Task, TaskError, TaskKind, number, spikes_only

if TYPE_CHECKING:
    from nfm.evaluation.costs import Work


def validate_generation(spec: dict, src: str) -> tuple[str, ...]:
    variants = spikes_only(spec, src, "generation needs spike events")
    number(spec, "prompt_s", 0.5, src, "", positive=False, minimum=0.0)
    number(spec, "interval_s", 0.1, src, "")
    number(spec, "temperature", 1.0, src, "")
    number(spec, "top_p", 0.95, src, "")
    if spec["top_p"] > 1:
        raise TaskError(src, "top_p", f"{spec['top_p']!r} must be <= 1")
    number(spec, "top_k", 0, src, "", integer=True, positive=False, minimum=0)
    number(spec, "max_trials", 0, src, "", integer=True, positive=False, minimum=0)
    number(spec, "seed", 0, src, "", integer=True, positive=False)
    conds = spec.setdefault("conditions", [])
    if conds and not (all(isinstance(c, str) for c in conds) or
                      all(isinstance(c, list) and all(isinstance(x, str) for x in c) for c in conds)):
        raise TaskError(src, "conditions", f"{conds!r} must be a list of trial columns or of such lists")
    return variants


def quick(task: Task) -> dict:
    """``--quick``: 4 trials per session."""
    return {"max_trials": min(4, task.spec["max_trials"] or 4)}


def generated_windows(ctx, prompt_s: float) -> int:
    """Windows generated per trial after a prompt of ``prompt_s`` seconds (0 for a model without a window)."""
    w = int(ctx.predictor.generation_window_bins)
    if w < 1:
        return 0
    k_total = ctx.n_bins // w
    start = int(math.ceil(prompt_s / (w * ctx.bin_size) - 1e-6))
    return max(0, k_total - start)


def generation_cost(work: Work, task: Task) -> None:
    """Generated windows x batches of trials; the simulation baselines' train split and GLM fits."""
    ctx, spec, cost = work.ctx, task.spec, work.cost
    for sid in ctx.sessions:
        work.collate(sid, [ctx.split])
        if task.baselines:  # simulation baselines fitted on the train split
            work.collate(sid, ["train"], cap=False)
        if "glm" in task.baselines:  # Poisson GLM simulator: 3-fold CV over 4 penalties, then a refit
            cost.glm += 3 * 4 + 1
        r = work.trials(sid, [ctx.split])
        if spec["max_trials"]:
            r = min(r, spec["max_trials"])
        cost.windows += math.ceil(r / ctx.batch_size) * generated_windows(ctx, spec["prompt_s"])


GENERATION = TaskKind(
    name="generation",
    metrics={"spikes": ("pearson_r", "psth_r", "f1", "rate_wasserstein_hz", "isi_wasserstein_s", "isi_ks",
                        "trial_count_r", "psth_r_condition")},
    baselines=("psth", "glm"),
    validate=validate_generation,
    run="nfm.evaluation.generation_tasks:run_generation",
    cost=generation_cost,
    quick=quick,
)

__all__ = ["GENERATION", "generated_windows"]
