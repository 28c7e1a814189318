"""Task kinds ``decoding`` and ``finetune_decoding``: a behaviour or trial variable decoded from the model's
features (runners: :func:`nfm.evaluation.decoding_tasks.run_decoding` and
:func:`~nfm.evaluation.decoding_tasks.run_finetune_decoding`).

``decoding``
    ``target``: exactly one of ``{trial_label: NAME}`` (classification),
    ``{behavior: NAME}`` or ``{behavior_prefix: PREFIX}`` (per-bin ridge; all
    behaviour channels starting with PREFIX, e.g. ``hand_velocity_x/_y``);
    ``decoder``: ``{type: logistic | ridge, Cs | alphas: list, n_splits, seed}``;
    ``features``: list from ``latents``, ``rates``; ``exclude_values`` (label
    values left out, e.g. no-go choice 0); ``time_chunks`` (int: trial-level
    features are bin states averaged into this many chunks, then flattened);
    ``decoder_protocol`` (see :data:`DECODER_PROTOCOLS`): ``train_to_eval``
    (default: the decoder is fitted on the train split only, C / alpha by
    ``n_splits``-fold CV inside it, and scored on the evaluated split, trials
    it never saw; refused when the evaluated split is ``train``) or
    ``cv_all_splits`` (nested CV over the trials of every split pooled: ~70%
    of the scored trials are training trials of the model, so the report
    labels it); ``smoothing_sigma_ms`` (the ``spikes`` baseline).
``finetune_decoding``
    ``targets``: list of target blocks as in ``decoding``; ``exclude_values``:
    ``{label: [values]}``; ``train``: ``{max_steps, learning_rate,
    batch_size, freeze_backbone, seed, fraction}`` (``fraction``: share of each
    session's train trials used, seeded by ``seed``; few-shot decoding).  Trains :class:`NfmForBehaviorDecoding`
    on the train split, scores the evaluated split.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .base import NotApplicable, Task, TaskError, TaskKind, number, require, str_list, typed

if TYPE_CHECKING:
    from nfm.data.meta import DatasetMeta
    from nfm.evaluation.costs import Work

#: How a decoding task fits and scores its decoder (field ``decoder_protocol``; the first is the default):
#: ``train_to_eval`` fits on the train split and scores the evaluated split; ``cv_all_splits`` runs nested CV
#: over the trials of every split together (the scored trials include the model's training trials).
DECODER_PROTOCOLS = ("train_to_eval", "cv_all_splits")


# --------------------------------------------------------------------------- validation
def _check_target(target, src: str, name: str) -> dict:
    typed(target, dict, src, name, "a mapping with one of trial_label, behavior, behavior_prefix")
    keys = [k for k in ("trial_label", "behavior", "behavior_prefix") if k in target]
    if len(keys) != 1 or len(target) != 1:
        raise TaskError(src, name, f"{target!r} must have exactly one of trial_label, behavior, behavior_prefix")
    typed(target[keys[0]], str, src, f"{name}.{keys[0]}", "a string")
    return target


def validate_decoding(spec: dict, src: str) -> tuple[str, ...]:
    target = _check_target(require(spec, "target", src), src, "target")
    variant = "classification" if "trial_label" in target else "regression"
    dec = spec.setdefault("decoder", {})
    typed(dec, dict, src, "decoder", "a mapping")
    dtype = dec.setdefault("type", "logistic" if variant == "classification" else "ridge")
    want = "logistic" if variant == "classification" else "ridge"
    if dtype != want:
        raise TaskError(src, "decoder.type", f"{dtype!r}: a {variant} target needs the {want!r} decoder")
    grid = "Cs" if dtype == "logistic" else "alphas"
    if grid in dec:
        vals = dec[grid]
        if not isinstance(vals, list) or not vals or not all(isinstance(v, (int, float)) and v >= 0 for v in vals):
            raise TaskError(src, f"decoder.{grid}", f"{vals!r} must be a non-empty list of numbers >= 0")
        if dtype == "logistic" and any(v <= 0 for v in vals):
            raise TaskError(src, "decoder.Cs", f"{vals!r}: C must be > 0")
    number(dec, "n_splits", 4, src, "decoder.", integer=True, minimum=2)
    number(dec, "seed", 0, src, "decoder.", integer=True, positive=False)
    unknown = set(dec) - {"type", "Cs", "alphas", "n_splits", "seed"}
    if unknown:
        raise TaskError(src, f"decoder.{sorted(unknown)[0]}", "unknown decoder field")
    spec["features"] = str_list(spec.get("features", ["latents", "rates"]), src, "features", ("latents", "rates"))
    if not spec["features"]:
        raise TaskError(src, "features", "needs at least one feature source")
    ex = spec.setdefault("exclude_values", [])
    if not isinstance(ex, list) or not all(isinstance(v, (int, float)) for v in ex):
        raise TaskError(src, "exclude_values", f"{ex!r} must be a list of numbers")
    number(spec, "time_chunks", 10, src, "", integer=True, minimum=1)
    number(spec, "smoothing_sigma_ms", 50.0, src, "")
    _check_decoder_protocol(spec, src)
    return (variant,)


def _check_decoder_protocol(spec: dict, src: str) -> None:
    """``decoder_protocol``: one of :data:`DECODER_PROTOCOLS` (default ``train_to_eval``); the removed field
    ``decoder_splits`` is refused with the protocol that replaces its value."""
    if "decoder_splits" in spec:
        old = spec["decoder_splits"]
        hint = {"all": "'decoder_protocol: cv_all_splits' (the same nested CV over every split)",
                "eval": "'decoder_protocol: train_to_eval' (the evaluated split is now scored by a decoder "
                        "fitted on the train split)"}.get(old, f"decoder_protocol: one of {list(DECODER_PROTOCOLS)}")
        raise TaskError(src, "decoder_splits", f"{old!r}: the field was replaced by decoder_protocol; write {hint}")
    dp = spec.setdefault("decoder_protocol", DECODER_PROTOCOLS[0])
    if dp not in DECODER_PROTOCOLS:
        raise TaskError(src, "decoder_protocol", f"{dp!r} is not one of {list(DECODER_PROTOCOLS)}")


def validate_finetune(spec: dict, src: str) -> tuple[str, ...]:
    targets = require(spec, "targets", src)
    if not isinstance(targets, list) or not targets:
        raise TaskError(src, "targets", f"{targets!r} must be a non-empty list of target mappings")
    for i, t in enumerate(targets):
        _check_target(t, src, f"targets[{i}]")
    ex = spec.setdefault("exclude_values", {})
    if not isinstance(ex, dict) or not all(isinstance(v, list) for v in ex.values()):
        raise TaskError(src, "exclude_values", f"{ex!r} must map label names to lists of values")
    tr = spec.setdefault("train", {})
    typed(tr, dict, src, "train", "a mapping")
    number(tr, "max_steps", 200, src, "train.", integer=True, minimum=1)
    number(tr, "learning_rate", 1e-3, src, "train.")
    number(tr, "batch_size", 16, src, "train.", integer=True, minimum=1)
    number(tr, "seed", 0, src, "train.", integer=True, positive=False)
    number(tr, "fraction", 1.0, src, "train.")
    if tr["fraction"] > 1:
        raise TaskError(src, "train.fraction", f"{tr['fraction']!r} must be in (0, 1] (share of the train trials)")
    fb = tr.setdefault("freeze_backbone", False)
    typed(fb, bool, src, "train.freeze_backbone", "true or false")
    return ("any",)


def quick_decoding(task: Task) -> dict:
    """``--quick``: 2 CV folds (inside the train split; outer and inner with ``cv_all_splits``) and every other
    value of the regularisation grid."""
    dec = {"n_splits": 2}
    for grid in ("Cs", "alphas"):
        if grid in task.spec["decoder"]:
            dec[grid] = list(task.spec["decoder"][grid])[::2]
    return {"decoder": dec}


def quick_finetune(task: Task) -> dict:
    """``--quick``: at most 25 training steps."""
    return {"train": {"max_steps": min(25, task.spec["train"]["max_steps"])}}


# --------------------------------------------------------------------------- targets (validation of the data)
def resolve_target(target: dict, meta: DatasetMeta, column_map: dict | None = None) -> tuple[str, list[str]]:
    """(``label`` | ``behavior``, the dataset's names) or NotApplicable naming what the dataset has.
    ``column_map``: the task's name -> the dataset's name (rigs name trial columns differently)."""
    cmap = column_map or {}
    if "trial_label" in target:
        name = cmap.get(target["trial_label"], target["trial_label"])
        have = list(meta.trial_columns)
        if name not in have:
            raise NotApplicable(f"the dataset has no trial column {name!r} (trial columns: {have}; map another "
                                f"name with the task option column_map.{target['trial_label']}=<column>)")
        return "label", [name]
    have = list(meta.behavior_names)
    if "behavior" in target:
        name = cmap.get(target["behavior"], target["behavior"])
        if name not in have:
            raise NotApplicable(f"the dataset has no behaviour {name!r} (behaviours: {have}; map another name with "
                                f"the task option column_map.{target['behavior']}=<name>)")
        return "behavior", [name]
    names = [b for b in have if b.startswith(target["behavior_prefix"])]
    if not names:
        raise NotApplicable(f"the dataset has no behaviour starting with {target['behavior_prefix']!r} "
                            f"(behaviours: {have})")
    return "behavior", names


# --------------------------------------------------------------------------- cost
def decoder_trial_sets(ctx, spec: dict) -> list[tuple[tuple[str, ...], bool]]:
    """(splits, cap) of the trial sets a decoding task collates and runs through the model per session:
    ``train_to_eval``: the whole train split (fit) and the evaluated split (score, capped at ``max_trials``);
    ``cv_all_splits``: every split pooled."""
    if spec["decoder_protocol"] == "cv_all_splits":
        from nfm.data.meta import SPLITS  # numpy: only when counting

        return [(tuple(s for s in SPLITS if s in ctx.dd), True)]
    return [(("train",), False), ((ctx.split,), True)]


def decoder_fits(spec: dict, n_channels: int, models: int, spikes_baseline: bool) -> int:
    """Decoder fits per session: feature sources x channels x (CV folds x grid + 1 refit) under
    ``train_to_eval``, x outer folds of that under ``cv_all_splits`` (nested CV)."""
    dec = spec["decoder"]
    grid = len(dec.get("Cs") or dec.get("alphas") or [0] * 9)
    sources = len(spec["features"]) * models + int(spikes_baseline)
    per_fit_set = dec["n_splits"] * grid + 1
    outer = dec["n_splits"] if spec["decoder_protocol"] == "cv_all_splits" else 1
    return sources * n_channels * outer * per_fit_set


def decoding_cost(work: Work, task: Task) -> None:
    """Trial passes per feature source over the fit and scored trial sets, and the decoder fits (logistic:
    ``fits``, ridge: ``ridge``); not applicable (as the task runs) without the target or a separate train split."""
    ctx, spec, cost = work.ctx, task.spec, work.cost
    try:
        _, names = resolve_target(spec["target"], ctx.meta, spec.get("column_map"))  # as the task runs
    except NotApplicable:
        cost.notes.append("not applicable")
        return
    if spec["decoder_protocol"] == "train_to_eval" and (ctx.split == "train" or "train" not in ctx.dd):
        cost.notes.append("not applicable: train_to_eval needs a train split other than the evaluated one")
        return
    n_fits = decoder_fits(spec, len(names), work.models, "spikes" in task.baselines)
    for sid in ctx.sessions:
        for splits, cap in decoder_trial_sets(ctx, spec):
            work.collate(sid, splits, cap)
            cost.trial_passes += len(spec["features"]) * work.models * work.trials(sid, splits, cap)
        if "trial_label" in spec["target"]:
            cost.fits += n_fits
        else:
            cost.ridge += n_fits


def finetune_cost(work: Work, task: Task) -> None:
    """The optimiser steps, the train split collated once and a pass over the evaluated split."""
    ctx, cost = work.ctx, work.cost
    cost.steps = task.spec["train"]["max_steps"]
    for sid in ctx.sessions:
        work.collate(sid, ["train"], cap=False)
        work.collate(sid, [ctx.split])
        cost.trial_passes += work.trials(sid, [ctx.split])


DECODING = TaskKind(
    name="decoding",
    metrics={"classification": ("accuracy", "balanced_accuracy", "chance"), "regression": ("r2",)},
    baselines=("spikes", "baseline_model"),
    validate=validate_decoding,
    run="nfm.evaluation.decoding_tasks:run_decoding",
    cost=decoding_cost,
    quick=quick_decoding,
)

FINETUNE_DECODING = TaskKind(
    name="finetune_decoding",
    metrics={"any": ("accuracy", "balanced_accuracy", "r2")},
    baselines=(),
    validate=validate_finetune,
    run="nfm.evaluation.decoding_tasks:run_finetune_decoding",
    cost=finetune_cost,
    quick=quick_finetune,
)

__all__ = ["DECODING", "FINETUNE_DECODING", "DECODER_PROTOCOLS", "resolve_target", "decoder_fits",
           "decoder_trial_sets"]
