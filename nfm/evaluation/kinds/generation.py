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
    like the model.  ``glm: {alphas, cv_folds, max_train_trials}``: the GLM's L2
    penalties (chosen by ``cv_folds``-fold CV over the training trials of each
    session; one penalty: no CV) and the training trials it is fitted on (the
    first ``max_train_trials``, 0 = all).  The fit does not depend on the model and
    is kept in the baseline cache.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .base import Task, TaskError, TaskKind, number, spikes_only, typed

if TYPE_CHECKING:
    from nfm.evaluation.costs import Work


#: the ``glm`` simulation baseline's protocol (a generation task's ``glm:`` field; see the module docstring)
GLM_SIM_DEFAULTS = {"alphas": [1.0, 0.1, 0.01, 0.001], "cv_folds": 3, "max_train_trials": 0}
#: ``--quick``: the GLM simulator fitted on the first 32 training trials, 2 CV folds over the two largest penalties
GLM_SIM_QUICK = {"max_train_trials": 32, "cv_folds": 2, "n_alphas": 2}


def validate_glm(spec: dict, src: str) -> dict:
    """Fill in and check ``glm: {alphas, cv_folds, max_train_trials}``; returns it."""
    g = spec.setdefault("glm", {})
    typed(g, dict, src, "glm", "a mapping")
    for key, default in GLM_SIM_DEFAULTS.items():
        g.setdefault(key, list(default) if isinstance(default, list) else default)
    vals = g["alphas"] if isinstance(g["alphas"], list) else [g["alphas"]]
    if not vals or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in vals):
        raise TaskError(src, "glm.alphas", f"{g['alphas']!r} must be a number > 0 or a list of them")
    g["alphas"] = [float(v) for v in vals]
    number(g, "cv_folds", 3, src, "glm.", integer=True, minimum=2)
    number(g, "max_train_trials", 0, src, "glm.", integer=True, positive=False, minimum=0)
    unknown = set(g) - set(GLM_SIM_DEFAULTS)
    if unknown:
        raise TaskError(src, f"glm.{sorted(unknown)[0]}", "unknown glm field")
    return g


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
    validate_glm(spec, src)
    return variants


def quick(task: Task) -> dict:
    """``--quick``: 4 trials per session; the ``glm`` baseline as :data:`GLM_SIM_QUICK` says."""
    out = {"max_trials": min(4, task.spec["max_trials"] or 4)}
    if "glm" in task.baselines:
        g, q = task.spec["glm"], GLM_SIM_QUICK
        out["glm"] = {"alphas": sorted(g["alphas"], reverse=True)[:q["n_alphas"]],
                      "cv_folds": min(q["cv_folds"], g["cv_folds"]),
                      "max_train_trials": min(q["max_train_trials"], g["max_train_trials"] or q["max_train_trials"])}
    return out


def generated_windows(ctx, prompt_s: float) -> int:
    """Windows generated per trial after a prompt of ``prompt_s`` seconds (0 for a model without a window)."""
    w = int(ctx.predictor.generation_window_bins)
    if w < 1:
        return 0
    k_total = ctx.n_bins // w
    start = int(math.ceil(prompt_s / (w * ctx.bin_size) - 1e-6))
    return max(0, k_total - start)


def generation_cost(work: Work, task: Task) -> None:
    """Generated windows x batches of trials (once per generation two tasks share); the simulation baselines'
    train split and the GLM simulator's work (``glm_sim``)."""
    ctx, spec, cost = work.ctx, task.spec, work.cost
    for sid in ctx.sessions:
        work.collate(sid, [ctx.split])
        if task.baselines:  # simulation baselines fitted on the train split
            work.collate(sid, ["train"], cap=False)
        if "glm" in task.baselines and ctx.modality == "spikes":  # the Poisson GLM simulator's fits, unless cached
            from nfm.evaluation.generation_tasks import glm_sim_cached, glm_sim_work

            if glm_sim_cached(ctx, task, sid):
                cost.notes.append(f"glm baseline of {sid}: in the baseline cache (no fit)")
            else:
                units, fits = glm_sim_work(ctx, task, sid)
                cost.glm_sim += units
                cost.sim_fits += fits
        r = work.trials(sid, [ctx.split])
        if spec["max_trials"]:
            r = min(r, spec["max_trials"])
        # the same generation (trials, prompt, sampling, seed) run by an earlier task is read, not rerun
        key = ("generation", sid, r, spec["prompt_s"], spec["temperature"], spec["top_p"], spec["top_k"] or 0,
               spec["seed"])
        if key not in work.masks:
            work.masks.add(key)
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
