"""Evaluation tasks as YAML files (one task per file, like lm-evaluation-harness).

A task file in ``tasks/`` (or any folder given to :func:`load_tasks`) says
what is masked or generated, which metric is reported, which target variable
is decoded and with which decoder.  The runner (:mod:`nfm.evaluation.runner`)
reads these specs and nothing else, so a user adds a task by adding a file.

Common fields
-------------
``name`` (str, defaults to the file stem; must be unique), ``kind`` (one of
:data:`KINDS`), ``description`` (str), ``modality`` (``spikes``, ``calcium``
or ``any``: a dataset of another modality makes the task *not applicable*),
``primary`` (the metric shown in the summary table), ``metrics`` (list of
metric names, or ``{spikes: [...], calcium: [...]}``; each must be one the
kind knows, see :data:`METRICS`), ``baselines`` (list, see :data:`BASELINES`),
``column_map`` (``{name the task uses: the dataset's name}``: trial columns
and behaviours named differently in another rig, e.g. ``{stimulus_direction:
direction}``; on the command line ``recipes/evaluate.py --task_option
stimulus_direction.column_map.stimulus_direction=direction``).

Kinds and their own fields
--------------------------
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
``generation``
    ``prompt_s`` (true data given before generation starts, seconds),
    ``interval_s`` (counting interval of the fidelity metrics, seconds),
    ``temperature``, ``top_p``, ``top_k``, ``max_trials`` (per session, 0 = all),
    ``seed``, ``conditions`` (trial columns whose joint values are the conditions of
    ``psth_r_condition``; as in ``psth``).  Baselines ``psth`` (Poisson samples of
    the condition-mean training PSTH) and ``glm`` (closed-loop Poisson GLM on
    stimulus, behaviour and recent population counts, penalty by CV) are scored
    like the model.
``connectivity``
    ``methods``: list from ``attention``, ``perturbation``, ``gradient`` (the model's
    d log rate_i(t) / d input_j(t - l) summed over ``gradient.lags`` bins, averaged
    over ``gradient.n_targets`` target bins);
    ``perturbation``: ``{forward_s}``; ``ccg_max_lag_bins`` (int >= 1);
    ``max_trials`` (0 = all).

Every problem raises :class:`TaskError` naming the file, the field and the value.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from nfm import resources as _resources

KINDS = ("masking", "psth", "decoding", "finetune_decoding", "generation", "connectivity")
MODALITIES = ("spikes", "calcium", "any")
MASK_MODES = ("neuron", "forward", "intra_region", "inter_region")
#: Evaluation protocols of the masking tasks (field ``protocol``; the first is the default): ``nlb`` scores the
#: task's own plan (folds / regions / forward window); ``mtm_per_neuron`` hides and predicts every unit alone
#: (MtM ``eval_utils.co_smoothing_eval(mode='per_neuron')``; unit masks only).
MASK_PROTOCOLS = ("nlb", "mtm_per_neuron")
#: mask modes each protocol can be run with
PROTOCOL_MODES = {"nlb": MASK_MODES, "mtm_per_neuron": ("neuron", "intra_region")}
#: prefix of every result key of a protocol (after a baseline's prefix: ``null/mtm/bps``)
PROTOCOL_PREFIX = {"nlb": "", "mtm_per_neuron": "mtm/"}

#: Metric names each kind can report (per modality where it matters).
METRICS: dict[str, dict[str, tuple[str, ...]]] = {
    "masking": {
        "spikes": ("bps", "bps_neuron_mean", "bps_session_mean", "poisson_d2", "bps_bwb"),
        "calcium": ("r2", "r2_pooled", "gaussian_nll", "gaussian_nll_baseline", "delta_nll"),
    },
    "psth": {"spikes": ("psth_r2",), "calcium": ("psth_r2",)},
    "decoding": {
        "classification": ("accuracy", "balanced_accuracy", "chance"),
        "regression": ("r2",),
    },
    "finetune_decoding": {"any": ("accuracy", "balanced_accuracy", "r2")},
    "generation": {"spikes": ("pearson_r", "psth_r", "f1", "rate_wasserstein_hz", "isi_wasserstein_s", "isi_ks",
                              "trial_count_r", "psth_r_condition")},
    "connectivity": {"spikes": ("auroc", "auprc", "direction_accuracy")},
}

#: How a decoding task fits and scores its decoder (field ``decoder_protocol``; the first is the default):
#: ``train_to_eval`` fits on the train split and scores the evaluated split; ``cv_all_splits`` runs nested CV
#: over the trials of every split together (the scored trials include the model's training trials).
DECODER_PROTOCOLS = ("train_to_eval", "cv_all_splits")

#: Baselines each kind knows.
BASELINES: dict[str, tuple[str, ...]] = {
    "masking": ("null", "smoothing", "ridge", "psth", "baseline_model"),
    "psth": ("null", "smoothing", "baseline_model"),
    "decoding": ("spikes", "baseline_model"),
    "finetune_decoding": (),
    "generation": ("psth", "glm"),
    "connectivity": ("pearson", "ccg"),
}

#: the tasks shipped with nfm (``nfm/resources/tasks``, shown in the repository as ``tasks/``)
DEFAULT_TASK_DIR = _resources.path("tasks")
TASK_DIR_ENV = "NFM_TASK_DIR"


class TaskError(ValueError):
    """A bad task file. The message names the file, the field and the value."""

    def __init__(self, source: str, field: str, message: str):
        self.source, self.field = str(source), str(field)
        super().__init__(f"{source}: field '{field}': {message}")


@dataclass
class Task:
    """One validated task spec.  ``spec`` keeps every field of the file (with defaults filled in)."""

    name: str
    kind: str
    modality: str
    primary: str
    metrics: dict[str, list[str]]
    baselines: list[str]
    description: str = ""
    spec: dict[str, Any] = field(default_factory=dict)
    source: str = "<memory>"

    def get(self, key: str, default=None):
        return self.spec.get(key, default)

    def metrics_for(self, variant: str) -> list[str]:
        """Metric names to report for ``variant`` (a modality, or classification/regression for decoding)."""
        if variant in self.metrics:
            return self.metrics[variant]
        return self.metrics.get("any", [])

    def applies_to(self, modality: str) -> bool:
        return self.modality in ("any", modality)


# --------------------------------------------------------------------------- validation helpers
def _req(d: dict, key: str, src: str, where: str = ""):
    if key not in d:
        raise TaskError(src, f"{where}{key}", "required field is missing")
    return d[key]


def _typed(value, types, src: str, name: str, what: str):
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise TaskError(src, name, f"{value!r} must be {what}")
    if not isinstance(value, types):
        raise TaskError(src, name, f"{value!r} must be {what}")
    return value


def _number(d: dict, key: str, default, src: str, where: str, *, positive=True, integer=False, minimum=None):
    v = d.get(key, default)
    name = f"{where}{key}"
    if integer:
        _typed(v, int, src, name, "an integer")
    else:
        _typed(v, (int, float), src, name, "a number")
        v = float(v)
    if positive and not v > 0:
        raise TaskError(src, name, f"{v!r} must be > 0")
    if minimum is not None and v < minimum:
        raise TaskError(src, name, f"{v!r} must be >= {minimum}")
    d[key] = v
    return v


def _str_list(value, src: str, name: str, allowed: Iterable[str] | None = None) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list) and None in value:
        raise TaskError(src, name, f"{value!r}: YAML reads a bare null as None; write \"null\" in quotes")
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise TaskError(src, name, f"{value!r} must be a list of strings")
    if allowed is not None:
        allowed = tuple(allowed)
        for x in value:
            if x not in allowed:
                raise TaskError(src, name, f"unknown value {x!r}; known: {list(allowed)}")
    return list(value)


def _check_mask(spec: dict, src: str) -> None:
    mask = _req(spec, "mask", src)
    _typed(mask, dict, src, "mask", "a mapping")
    mode = _req(mask, "mode", src, "mask.")
    if mode not in MASK_MODES:
        raise TaskError(src, "mask.mode", f"{mode!r} is not one of {list(MASK_MODES)}")
    if mode in ("neuron", "intra_region"):
        _number(mask, "held_out_folds", 4, src, "mask.", integer=True, minimum=2)
    if mode == "forward":
        _number(mask, "forward_s", 0.2, src, "mask.")
    _number(mask, "seed", 0, src, "mask.", integer=True, positive=False)
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


#: smoothing-baseline grid: kernel widths [ms] and GLM penalties, chosen by CV on each session's training trials
#: (``max_features``: held-in units above which the GLM regresses on that many principal components; ``solver``:
#: ``newton`` (batched, torch) or ``lbfgs`` (scipy, the reference); see nfm.evaluation.baselines.SmoothingBaseline)
SMOOTHING_DEFAULTS = {"sigma_ms": [25.0, 50.0, 100.0], "alpha": [1e-3, 1e-2, 1e-1, 1.0], "cv_folds": 3,
                      "method": "poisson", "max_features": 64, "solver": "newton"}


def _check_smoothing(spec: dict, src: str) -> None:
    """``smoothing: {sigma_ms, alpha, cv_folds, method}``: a number or a list each for ``sigma_ms`` [ms] and
    ``alpha`` (several values: chosen by ``cv_folds``-fold CV over the training trials of each session)."""
    sm = spec.setdefault("smoothing", {})
    _typed(sm, dict, src, "smoothing", "a mapping")
    for key, default in SMOOTHING_DEFAULTS.items():
        sm.setdefault(key, copy.deepcopy(default))
    for key in ("sigma_ms", "alpha"):
        vals = sm[key] if isinstance(sm[key], list) else [sm[key]]
        if not vals or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in vals):
            raise TaskError(src, f"smoothing.{key}", f"{sm[key]!r} must be a number > 0 or a list of them")
        sm[key] = [float(v) for v in vals]
    _number(sm, "cv_folds", 3, src, "smoothing.", integer=True, minimum=2)
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


def _check_target(target, src: str, name: str) -> dict:
    _typed(target, dict, src, name, "a mapping with one of trial_label, behavior, behavior_prefix")
    keys = [k for k in ("trial_label", "behavior", "behavior_prefix") if k in target]
    if len(keys) != 1 or len(target) != 1:
        raise TaskError(src, name, f"{target!r} must have exactly one of trial_label, behavior, behavior_prefix")
    _typed(target[keys[0]], str, src, f"{name}.{keys[0]}", "a string")
    return target


def _check_decoding(spec: dict, src: str) -> str:
    target = _check_target(_req(spec, "target", src), src, "target")
    variant = "classification" if "trial_label" in target else "regression"
    dec = spec.setdefault("decoder", {})
    _typed(dec, dict, src, "decoder", "a mapping")
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
    _number(dec, "n_splits", 4, src, "decoder.", integer=True, minimum=2)
    _number(dec, "seed", 0, src, "decoder.", integer=True, positive=False)
    unknown = set(dec) - {"type", "Cs", "alphas", "n_splits", "seed"}
    if unknown:
        raise TaskError(src, f"decoder.{sorted(unknown)[0]}", "unknown decoder field")
    spec["features"] = _str_list(spec.get("features", ["latents", "rates"]), src, "features", ("latents", "rates"))
    if not spec["features"]:
        raise TaskError(src, "features", "needs at least one feature source")
    ex = spec.setdefault("exclude_values", [])
    if not isinstance(ex, list) or not all(isinstance(v, (int, float)) for v in ex):
        raise TaskError(src, "exclude_values", f"{ex!r} must be a list of numbers")
    _number(spec, "time_chunks", 10, src, "", integer=True, minimum=1)
    _number(spec, "smoothing_sigma_ms", 50.0, src, "")
    _check_decoder_protocol(spec, src)
    return variant


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


def _check_finetune(spec: dict, src: str) -> None:
    targets = _req(spec, "targets", src)
    if not isinstance(targets, list) or not targets:
        raise TaskError(src, "targets", f"{targets!r} must be a non-empty list of target mappings")
    for i, t in enumerate(targets):
        _check_target(t, src, f"targets[{i}]")
    ex = spec.setdefault("exclude_values", {})
    if not isinstance(ex, dict) or not all(isinstance(v, list) for v in ex.values()):
        raise TaskError(src, "exclude_values", f"{ex!r} must map label names to lists of values")
    tr = spec.setdefault("train", {})
    _typed(tr, dict, src, "train", "a mapping")
    _number(tr, "max_steps", 200, src, "train.", integer=True, minimum=1)
    _number(tr, "learning_rate", 1e-3, src, "train.")
    _number(tr, "batch_size", 16, src, "train.", integer=True, minimum=1)
    _number(tr, "seed", 0, src, "train.", integer=True, positive=False)
    _number(tr, "fraction", 1.0, src, "train.")
    if tr["fraction"] > 1:
        raise TaskError(src, "train.fraction", f"{tr['fraction']!r} must be in (0, 1] (share of the train trials)")
    fb = tr.setdefault("freeze_backbone", False)
    _typed(fb, bool, src, "train.freeze_backbone", "true or false")


def validate_task(raw: dict, source: str = "<memory>", default_name: str | None = None) -> Task:
    """Validate a task mapping (as read from YAML); fill in defaults; return a :class:`Task`."""
    src = str(source)
    if not isinstance(raw, dict):
        raise TaskError(src, "<root>", f"a task file must hold a mapping, got {type(raw).__name__}")
    spec = copy.deepcopy(raw)
    name = spec.setdefault("name", default_name)
    if not isinstance(name, str) or not name or not name.replace("_", "").replace("-", "").isalnum():
        raise TaskError(src, "name", f"{name!r} must be a non-empty name of letters, digits, '_' or '-'")
    kind = _req(spec, "kind", src)
    if kind not in KINDS:
        raise TaskError(src, "kind", f"{kind!r} is not one of {list(KINDS)}")
    modality = spec.setdefault("modality", "any")
    if modality not in MODALITIES:
        raise TaskError(src, "modality", f"{modality!r} is not one of {list(MODALITIES)}")
    description = spec.setdefault("description", "")
    _typed(description, str, src, "description", "a string")

    cmap = spec.setdefault("column_map", {})
    if not isinstance(cmap, dict) or not all(isinstance(k, str) and isinstance(v, str) and v
                                             for k, v in cmap.items()):
        raise TaskError(src, "column_map", f"{cmap!r} must map the task's names to the dataset's names (strings)")

    variants: tuple[str, ...]
    if kind in ("masking", "psth"):
        _check_mask(spec, src)
        variants = ("spikes", "calcium") if modality == "any" else (modality,)
        _check_protocol(spec, src, kind)
        if kind == "masking":
            conds = spec.setdefault("conditions", [["stimulus_direction"], ["choice"]])
            if not (isinstance(conds, list) and conds and all(isinstance(c, list) and c for c in conds)):
                raise TaskError(src, "conditions", f"{conds!r} must be a list of lists of trial columns")
            spec["conditions"] = [_str_list(c, src, f"conditions[{i}]") for i, c in enumerate(conds)]
            _check_smoothing(spec, src)
        else:
            if spec["mask"]["mode"] == "forward":
                raise TaskError(src, "mask.mode", "'forward': a PSTH needs predictions of every bin (a unit mask)")
            conds = _req(spec, "conditions", src)
            if isinstance(conds, list) and conds and all(isinstance(c, list) for c in conds):
                spec["conditions"] = [_str_list(c, src, f"conditions[{i}]") for i, c in enumerate(conds)]
                if not all(spec["conditions"]):
                    raise TaskError(src, "conditions", "an alternative has no trial column")
            else:
                spec["conditions"] = _str_list(conds, src, "conditions")
                if not spec["conditions"]:
                    raise TaskError(src, "conditions", "needs at least one trial column")
            _number(spec, "min_trials_per_condition", 2, src, "", integer=True, minimum=1)
            _check_smoothing(spec, src)
    elif kind == "decoding":
        variants = (_check_decoding(spec, src),)
    elif kind == "finetune_decoding":
        _check_finetune(spec, src)
        variants = ("any",)
    elif kind == "generation":
        if modality not in ("spikes", "any"):
            raise TaskError(src, "modality", f"{modality!r}: generation needs spike events")
        spec["modality"] = modality = "spikes"
        _number(spec, "prompt_s", 0.5, src, "", positive=False, minimum=0.0)
        _number(spec, "interval_s", 0.1, src, "")
        _number(spec, "temperature", 1.0, src, "")
        _number(spec, "top_p", 0.95, src, "")
        if spec["top_p"] > 1:
            raise TaskError(src, "top_p", f"{spec['top_p']!r} must be <= 1")
        _number(spec, "top_k", 0, src, "", integer=True, positive=False, minimum=0)
        _number(spec, "max_trials", 0, src, "", integer=True, positive=False, minimum=0)
        _number(spec, "seed", 0, src, "", integer=True, positive=False)
        conds = spec.setdefault("conditions", [])
        if conds and not (all(isinstance(c, str) for c in conds) or
                          all(isinstance(c, list) and all(isinstance(x, str) for x in c) for c in conds)):
            raise TaskError(src, "conditions", f"{conds!r} must be a list of trial columns or of such lists")
        variants = ("spikes",)
    else:  # connectivity
        if modality not in ("spikes", "any"):
            raise TaskError(src, "modality", f"{modality!r}: connectivity needs spike data")
        spec["modality"] = modality = "spikes"
        spec["methods"] = _str_list(spec.get("methods", ["attention", "perturbation"]), src, "methods",
                                    ("attention", "perturbation", "gradient"))
        grad = spec.setdefault("gradient", {})
        _typed(grad, dict, src, "gradient", "a mapping")
        _number(grad, "lags", 3, src, "gradient.", integer=True, minimum=1)
        _number(grad, "n_targets", 8, src, "gradient.", integer=True, minimum=1)
        pert = spec.setdefault("perturbation", {})
        _typed(pert, dict, src, "perturbation", "a mapping")
        _number(pert, "forward_s", 0.5, src, "perturbation.")
        _number(spec, "ccg_max_lag_bins", 3, src, "", integer=True, minimum=1)
        _number(spec, "max_trials", 0, src, "", integer=True, positive=False, minimum=0)
        variants = ("spikes",)

    known = METRICS[kind]
    raw_metrics = spec.get("metrics")
    metrics: dict[str, list[str]] = {}
    if raw_metrics is None:
        metrics = {v: list(known.get(v, known.get("any", ()))) for v in variants}
    elif isinstance(raw_metrics, dict):
        for key, value in raw_metrics.items():
            if key not in known:
                raise TaskError(src, f"metrics.{key}", f"unknown variant; known: {list(known)}")
            metrics[key] = _str_list(value, src, f"metrics.{key}", known[key])
    else:
        lst = _str_list(raw_metrics, src, "metrics")
        for v in variants:
            allowed = known.get(v, known.get("any", ()))
            for m in lst:
                if m not in allowed:
                    raise TaskError(src, "metrics", f"unknown metric {m!r} for a {kind} task ({v}); known: "
                                                    f"{list(allowed)}")
            metrics[v] = list(lst)
    if not any(metrics.values()):
        raise TaskError(src, "metrics", "no metric to report")
    baselines = _str_list(spec.get("baselines", []), src, "baselines", BASELINES[kind])
    for b in ("smoothing", "ridge"):
        if b in baselines and spec.get("mask", {}).get("mode") == "forward":
            raise TaskError(src, "baselines", f"the {b} baseline predicts held-out units; it has no forward "
                                              "prediction (mask.mode 'forward')")
    all_metrics = [m for ms in metrics.values() for m in ms]
    primary = spec.setdefault("primary", all_metrics[0])
    if primary not in all_metrics:
        raise TaskError(src, "primary", f"{primary!r} is not one of the task's metrics {all_metrics}")
    return Task(name=name, kind=kind, modality=modality, primary=primary, metrics=metrics, baselines=baselines,
                description=description, spec=spec, source=src)


def load_task_file(path: str | os.PathLike) -> Task:
    """Read and validate one task YAML file (``yaml.safe_load``: no Python objects are built)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise TaskError(str(path), "<yaml>", f"not valid YAML: {err}") from err
    return validate_task(raw, str(path), default_name=path.stem)


def task_dir(path: str | os.PathLike | None = None) -> Path:
    """The task folder: ``path``, else ``$NFM_TASK_DIR``, else the tasks shipped with nfm (``tasks/``)."""
    p = Path(path or os.environ.get(TASK_DIR_ENV) or DEFAULT_TASK_DIR)
    if not p.is_dir():
        raise FileNotFoundError(f"task folder {p} does not exist (set --task_dir or ${TASK_DIR_ENV})")
    return p


def available_tasks(path: str | os.PathLike | None = None) -> dict[str, Task]:
    """Every task of a folder (``*.yaml`` / ``*.yml``), validated, by name.  Duplicate names raise."""
    folder = task_dir(path)
    out: dict[str, Task] = {}
    for f in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        t = load_task_file(f)
        if t.name in out:
            raise TaskError(str(f), "name", f"{t.name!r} is also defined in {out[t.name].source}")
        out[t.name] = t
    return out


def load_tasks(names: str | Iterable[str] | None = "all", path: str | os.PathLike | None = None,
               overrides: dict[str, dict] | None = None, quick: bool = False) -> list[Task]:
    """Tasks by name (``"all"``, ``"a,b"``, a list; an entry ending in ``.yaml`` is read as a file).

    ``overrides``: ``{task name: {field: value}}`` merged (recursively for mappings) into the file's
    fields before validation, e.g. ``{"choice": {"decoder": {"Cs": [0.1, 1.0]}}}``; ``quick``: the
    :func:`quick_overrides` first (``overrides`` win over them).  An unknown name raises ``KeyError`` with the
    closest task name.
    """
    overrides = dict(overrides or {})
    if names is None or names == "all" or names == ["all"]:
        wanted = None
    else:
        wanted = [n.strip() for n in (names.replace(",", " ").split() if isinstance(names, str) else names)
                  if n.strip()]
        if not wanted:
            raise ValueError("no task names given")
    files = [n for n in (wanted or []) if n.endswith((".yaml", ".yml"))]
    by_name = available_tasks(path) if (wanted is None or len(files) < len(wanted)) else {}
    tasks: list[Task] = []
    if wanted is None:
        tasks = list(by_name.values())
    else:
        for n in wanted:
            if n.endswith((".yaml", ".yml")):
                tasks.append(load_task_file(n))
            elif n in by_name:
                tasks.append(by_name[n])
            else:
                from nfm.cli import did_you_mean

                raise KeyError(f"unknown task {n!r}; {did_you_mean(n, sorted(by_name), 'tasks')}")
    unknown = set(overrides) - {t.name for t in tasks}
    if unknown:
        raise KeyError(f"overrides for task(s) {sorted(unknown)} that are not selected")
    out = []
    for t in tasks:
        extra = _merge(quick_overrides(t), overrides.get(t.name, {})) if quick else overrides.get(t.name)
        if extra:
            what = " (with --quick)" if quick else ""
            what = f" (with{' --quick and' if quick else ''} overrides)" if t.name in overrides else what
            t = validate_task(_merge(_original(t), extra), t.source + what, default_name=t.name)
        out.append(t)
    return out


#: ``--quick``: trials per session kept in every task (unless ``max_trials`` is given)
QUICK_MAX_TRIALS = 32


def quick_overrides(task: Task) -> dict:
    """Field overrides of ``--quick`` (a first look: scores are noisier and not comparable to a full run).

    masking / psth: 2 held-out folds (neuron, intra-region masks); decoding: 2 CV folds (inside the train
    split; outer and inner with ``cv_all_splits``) and every other value of the regularisation grid;
    fine-tuned decoding: 25 training steps; generation: 4 trials per session; connectivity: 8 trials per
    session.  Evaluated trials are also capped at
    :data:`QUICK_MAX_TRIALS` per session (the runner's ``max_trials``).
    """
    spec = task.spec
    if task.kind in ("masking", "psth"):
        return {"mask": {"held_out_folds": 2}} if spec["mask"]["mode"] in ("neuron", "intra_region") else {}
    if task.kind == "decoding":
        dec = {"n_splits": 2}
        for grid in ("Cs", "alphas"):
            if grid in spec["decoder"]:
                dec[grid] = list(spec["decoder"][grid])[::2]
        return {"decoder": dec}
    if task.kind == "finetune_decoding":
        return {"train": {"max_steps": min(25, spec["train"]["max_steps"])}}
    if task.kind == "generation":
        return {"max_trials": min(4, spec["max_trials"] or 4)}
    if task.kind == "connectivity":
        return {"max_trials": min(8, spec["max_trials"] or 8)}
    return {}


def _original(t: Task) -> dict:
    return copy.deepcopy(t.spec)


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


__all__ = ["Task", "TaskError", "KINDS", "METRICS", "BASELINES", "DECODER_PROTOCOLS", "MASK_MODES", "MASK_PROTOCOLS",
           "validate_task", "load_task_file",
           "available_tasks", "load_tasks", "quick_overrides", "QUICK_MAX_TRIALS", "task_dir", "DEFAULT_TASK_DIR"]
