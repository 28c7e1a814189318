"""Task kinds ``masking`` and ``psth``: masked prediction of held-out units / bins, scored on the evaluated split
(runners: :func:`nfm.evaluation.masking_tasks.run_masking` and :func:`~nfm.evaluation.masking_tasks.run_psth`).

``masking``
    ``mask``: ``{mode: neuron | forward | intra_region | inter_region,
    held_out_folds: int >= 2 (neuron, intra_region), forward_s: float > 0
    (forward, seconds), seed: int}``; ``smoothing``: ``{sigma_ms, alpha,
    cv_folds, method: poisson | ridge}`` (NLB smoothing baseline; lists of widths [ms] and
    penalties are chosen by CV over each session's training trials).  2-photon
    baselines: ``ridge`` (each held-out ROI from the held-in ROIs in the same
    frame, fitted on the train split with CV over the penalty: the
    co-smoothing analogue; unit masks only) and ``psth`` (the mean over the
    training trials of the trial's condition, ``conditions`` as in ``psth``:
    default ``[[stimulus_direction], [choice]]``).  ``protocol`` (see
    :data:`MASK_PROTOCOLS`): ``nlb`` (default: the ``held_out_folds`` folds /
    regions above) or ``mtm_per_neuron`` (MtM's ``per_neuron`` evaluation:
    every unit is hidden and predicted alone, all others visible, one model
    pass per unit; unit masks ``neuron`` / ``intra_region`` only; every result
    key gets the prefix ``mtm/`` after the baseline's, e.g. ``mtm/bps``,
    ``null/mtm/bps``).  Spike metrics also include ``poisson_d2`` (Poisson
    deviance explained, IBL BrainWideBench) and ``bps_bwb`` (bits/spike over
    the units with a null rate >= 1e-9, per session, averaged).
``psth``
    the ``mask`` block of the masking task whose predictions are used;
    ``conditions``: list of trial columns (their joint values are the
    conditions); ``min_trials_per_condition`` (int, default 2).
"""
from __future__ import annotations

import copy
from collections import Counter
from typing import TYPE_CHECKING

from .base import Task, TaskError, TaskKind, number, require, str_list, typed, variants_of

if TYPE_CHECKING:
    from nfm.evaluation.costs import Work

MASK_MODES = ("neuron", "forward", "intra_region", "inter_region")
#: Evaluation protocols of the masking tasks (field ``protocol``; the first is the default): ``nlb`` scores the
#: task's own plan (folds / regions / forward window); ``mtm_per_neuron`` hides and predicts every unit alone
#: (MtM ``eval_utils.co_smoothing_eval(mode='per_neuron')``; unit masks only).
MASK_PROTOCOLS = ("nlb", "mtm_per_neuron")
#: mask modes each protocol can be run with
PROTOCOL_MODES = {"nlb": MASK_MODES, "mtm_per_neuron": ("neuron", "intra_region")}
#: prefix of every result key of a protocol (after a baseline's prefix: ``null/mtm/bps``)
PROTOCOL_PREFIX = {"nlb": "", "mtm_per_neuron": "mtm/"}

#: smoothing-baseline grid: kernel widths [ms] and GLM penalties, chosen by CV on each session's training trials
#: (``max_features``: held-in units above which the GLM regresses on that many principal components; ``solver``:
#: ``newton`` (batched, torch) or ``lbfgs`` (scipy, the reference); see nfm.evaluation.baselines.SmoothingBaseline)
SMOOTHING_DEFAULTS = {"sigma_ms": [25.0, 50.0, 100.0], "alpha": [1e-3, 1e-2, 1e-1, 1.0], "cv_folds": 3,
                      "method": "poisson", "max_features": 64, "solver": "newton"}


# --------------------------------------------------------------------------- validation
def _check_mask(spec: dict, src: str) -> None:
    mask = require(spec, "mask", src)
    typed(mask, dict, src, "mask", "a mapping")
    mode = require(mask, "mode", src, "mask.")
    if mode not in MASK_MODES:
        raise TaskError(src, "mask.mode", f"{mode!r} is not one of {list(MASK_MODES)}")
    if mode in ("neuron", "intra_region"):
        number(mask, "held_out_folds", 4, src, "mask.", integer=True, minimum=2)
    if mode == "forward":
        number(mask, "forward_s", 0.2, src, "mask.")
    number(mask, "seed", 0, src, "mask.", integer=True, positive=False)
    unknown = set(mask) - {"mode", "held_out_folds", "forward_s", "seed"}
    if unknown:
        raise TaskError(src, f"mask.{sorted(unknown)[0]}", "unknown mask field")


def _check_protocol(spec: dict, src: str, kind: str) -> None:
    """``protocol``: one of :data:`MASK_PROTOCOLS` (default ``nlb``); ``mtm_per_neuron`` only with the unit
    masks of :data:`PROTOCOL_MODES` and only on masking tasks (a ``psth`` task reads its mask's NLB plan)."""
    if kind != "masking":
        if spec.get("protocol", "nlb") != "nlb":
            raise TaskError(src, "protocol", f"{spec['protocol']!r}: only masking tasks take a protocol (a {kind} "
                                             "task scores the NLB plan of its mask)")
        return
    protocol = spec.setdefault("protocol", MASK_PROTOCOLS[0])
    if protocol not in MASK_PROTOCOLS:
        raise TaskError(src, "protocol", f"{protocol!r} is not one of {list(MASK_PROTOCOLS)}")
    mode = spec["mask"]["mode"]
    if mode not in PROTOCOL_MODES[protocol]:
        raise TaskError(src, "protocol", f"{protocol!r} predicts each unit alone and needs a unit mask "
                                         f"(mask.mode one of {list(PROTOCOL_MODES[protocol])}); mask.mode is "
                                         f"{mode!r}")


def _check_smoothing(spec: dict, src: str) -> None:
    """``smoothing: {sigma_ms, alpha, cv_folds, method}``: a number or a list each for ``sigma_ms`` [ms] and
    ``alpha`` (several values: chosen by ``cv_folds``-fold CV over the training trials of each session)."""
    sm = spec.setdefault("smoothing", {})
    typed(sm, dict, src, "smoothing", "a mapping")
    for key, default in SMOOTHING_DEFAULTS.items():
        sm.setdefault(key, copy.deepcopy(default))
    for key in ("sigma_ms", "alpha"):
        vals = sm[key] if isinstance(sm[key], list) else [sm[key]]
        if not vals or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in vals):
            raise TaskError(src, f"smoothing.{key}", f"{sm[key]!r} must be a number > 0 or a list of them")
        sm[key] = [float(v) for v in vals]
    number(sm, "cv_folds", 3, src, "smoothing.", integer=True, minimum=2)
    if sm["method"] not in ("poisson", "ridge"):
        raise TaskError(src, "smoothing.method", f"{sm['method']!r} must be 'poisson' or 'ridge'")
    mf = sm["max_features"]
    if mf is not None and (isinstance(mf, bool) or not isinstance(mf, int) or mf < 1):
        raise TaskError(src, "smoothing.max_features", f"{mf!r} must be an integer >= 1 or null (every held-in unit)")
    if sm["solver"] not in ("newton", "lbfgs"):
        raise TaskError(src, "smoothing.solver", f"{sm['solver']!r} must be 'newton' or 'lbfgs'")
    unknown = set(sm) - set(SMOOTHING_DEFAULTS)
    if unknown:
        raise TaskError(src, f"smoothing.{sorted(unknown)[0]}", "unknown smoothing field")


def validate_masking(spec: dict, src: str) -> tuple[str, ...]:
    _check_mask(spec, src)
    variants = variants_of(spec)
    _check_protocol(spec, src, "masking")
    conds = spec.setdefault("conditions", [["stimulus_direction"], ["choice"]])
    if not (isinstance(conds, list) and conds and all(isinstance(c, list) and c for c in conds)):
        raise TaskError(src, "conditions", f"{conds!r} must be a list of lists of trial columns")
    spec["conditions"] = [str_list(c, src, f"conditions[{i}]") for i, c in enumerate(conds)]
    _check_smoothing(spec, src)
    return variants


def validate_psth(spec: dict, src: str) -> tuple[str, ...]:
    _check_mask(spec, src)
    variants = variants_of(spec)
    _check_protocol(spec, src, "psth")
    if spec["mask"]["mode"] == "forward":
        raise TaskError(src, "mask.mode", "'forward': a PSTH needs predictions of every bin (a unit mask)")
    conds = require(spec, "conditions", src)
    if isinstance(conds, list) and conds and all(isinstance(c, list) for c in conds):
        spec["conditions"] = [str_list(c, src, f"conditions[{i}]") for i, c in enumerate(conds)]
        if not all(spec["conditions"]):
            raise TaskError(src, "conditions", "an alternative has no trial column")
    else:
        spec["conditions"] = str_list(conds, src, "conditions")
        if not spec["conditions"]:
            raise TaskError(src, "conditions", "needs at least one trial column")
    number(spec, "min_trials_per_condition", 2, src, "", integer=True, minimum=1)
    _check_smoothing(spec, src)
    return variants


def check_baselines(spec: dict, baselines: list, src: str) -> None:
    """The smoothing and ridge baselines predict held-out units: not with a forward mask."""
    for b in ("smoothing", "ridge"):
        if b in baselines and spec.get("mask", {}).get("mode") == "forward":
            raise TaskError(src, "baselines", f"the {b} baseline predicts held-out units; it has no forward "
                                              "prediction (mask.mode 'forward')")


def quick(task: Task) -> dict:
    """``--quick``: 2 held-out folds (neuron, intra-region masks)."""
    return {"mask": {"held_out_folds": 2}} if task.spec["mask"]["mode"] in ("neuron", "intra_region") else {}


# --------------------------------------------------------------------------- cost
def n_masks(mask: dict, meta_session, protocol: str = "nlb") -> int:
    """Number of masks of a session's evaluation plan (see ``mask_plan``): folds / regions / 1 forward window
    with ``protocol="nlb"``; the number of units with ``"mtm_per_neuron"`` (each unit predicted alone)."""
    n = int(meta_session.n_units)
    mode = mask["mode"]
    if protocol == "mtm_per_neuron":
        return n
    if mode == "forward":
        return 1
    if mode == "neuron":
        return min(int(mask["held_out_folds"]), n)
    counts = Counter(meta_session.regions)
    if mode == "inter_region":
        return len(counts) if len(counts) > 1 else 0
    return int(sum(min(int(mask["held_out_folds"]), int(c)) for c in counts.values()))


def cv_fits(sm: dict) -> float:
    """The smoothing baseline's CV in units of one full fit: per kernel width and CV fold one penalty path (the
    first penalty a full fit, the next ones warm-started, about half each) on (k-1)/k of the trials."""
    k = int(sm["cv_folds"])
    n_s, n_a = len(sm["sigma_ms"]), len(sm["alpha"])
    if n_s * n_a == 1:
        return 0.0
    return n_s * k * (1.0 + 0.5 * (n_a - 1)) * (k - 1) / k


def n_scored(ctx, task: Task, models: int) -> int:
    """Predictors a masking task scores per session: the model(s), the null model, and the baselines that run on
    this modality (smoothing on spikes with unit masks; ridge and PSTH on 2-photon)."""
    b = task.baselines
    n = models + int("null" in b)
    if ctx.modality == "spikes":
        n += int("smoothing" in b and task.spec["mask"]["mode"] != "forward")
    else:
        n += int("ridge" in b) + int("psth" in b)
    return n


def _mask_cost(work: Work, task: Task, scored: bool) -> None:
    """Trial passes of the task's mask plan (once per mask spec: a PSTH task shares its masking task's cached
    predictions), the smoothing baseline's fits and, for ``scored``, the entries scored per predictor."""
    ctx, spec, cost = work.ctx, task.spec, work.cost
    protocol = spec.get("protocol", "nlb")  # a psth task shares the NLB plan of its mask
    key = repr((sorted(spec["mask"].items()), protocol))
    n_plan = 0
    for sid in ctx.sessions:
        work.collate(sid, [ctx.split])
        m = n_masks(spec["mask"], ctx.meta.session(sid), protocol)
        n_plan += m
        if scored and m:  # every predictor scored once on the whole split
            cost.scored += n_scored(ctx, task, work.models) * work.trials(sid, [ctx.split]) * ctx.n_bins \
                * int(ctx.meta.session(sid).n_units)
        if key not in work.masks:
            cost.trial_passes += work.models * m * work.trials(sid, [ctx.split])
            if "smoothing" in task.baselines and ctx.modality == "spikes" and spec["mask"]["mode"] != "forward":
                from nfm.evaluation.masking_tasks import smoothing_cached  # torch: only when counting

                work.collate(sid, ["train"], cap=False)
                if smoothing_cached(ctx, sid, task):
                    cost.notes.append(f"smoothing baseline of {sid}: in the baseline cache (no fit)")
                else:
                    cost.glm += m + cv_fits(spec["smoothing"])
    work.masks.add(key)
    if protocol != "nlb":
        cost.notes.append(f"protocol {protocol}: one model pass per unit and batch ({n_plan} masks)")


def masking_cost(work: Work, task: Task) -> None:
    _mask_cost(work, task, scored=True)


def psth_cost(work: Work, task: Task) -> None:
    _mask_cost(work, task, scored=False)


MASKING = TaskKind(
    name="masking",
    metrics={"spikes": ("bps", "bps_neuron_mean", "bps_session_mean", "poisson_d2", "bps_bwb"),
             "calcium": ("r2", "r2_pooled", "gaussian_nll", "gaussian_nll_baseline", "delta_nll")},
    baselines=("null", "smoothing", "ridge", "psth", "baseline_model"),
    validate=validate_masking,
    run="nfm.evaluation.masking_tasks:run_masking",
    cost=masking_cost,
    quick=quick,
    check_baselines=check_baselines,
)

PSTH = TaskKind(
    name="psth",
    metrics={"spikes": ("psth_r2",), "calcium": ("psth_r2",)},
    baselines=("null", "smoothing", "baseline_model"),
    validate=validate_psth,
    run="nfm.evaluation.masking_tasks:run_psth",
    cost=psth_cost,
    quick=quick,
    check_baselines=check_baselines,
)

__all__ = ["MASKING", "PSTH", "MASK_MODES", "MASK_PROTOCOLS", "PROTOCOL_MODES", "PROTOCOL_PREFIX",
           "SMOOTHING_DEFAULTS", "n_masks", "cv_fits", "n_scored"]
