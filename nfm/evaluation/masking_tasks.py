"""Masking and PSTH tasks: evaluation masks, bits/spike (NLB) and 2-photon scores, the smoothing baseline.

Masks at evaluation (every unit scored once per task; :func:`mask_plan`)
------------------------------------------------------------------------
* ``neuron`` (co-smoothing): a seeded partition of each session's units into ``held_out_folds`` folds; each
  fold is hidden and predicted in turn.
* ``forward``: the last ``forward_s`` seconds of each trial are hidden and predicted with the causal prompt and
  causal attention (:func:`nfm.models.masking.forward_prediction_mask`).
* ``intra_region``: for each region r, r's units are split into folds; a fold is predicted while it and every
  unit outside r are hidden.
* ``inter_region``: each region in turn is hidden and predicted from the rest.
Regions are the unit table's acronyms (``DatasetMeta.sessions[sid].regions``).  Every plan entry is a
:class:`~nfm.models.masking.MaskSample` template of shape (1, T, N) built by :mod:`nfm.models.masking`.

Protocols (task field ``protocol``, :data:`nfm.evaluation.tasks.MASK_PROTOCOLS`)
--------------------------------------------------------------------------------
* ``nlb`` (default): the plans above.
* ``mtm_per_neuron``: MtM's ``per_neuron`` evaluation (``src/utils/eval_utils.py::co_smoothing_eval``): every
  unit is a plan entry of its own, hidden and predicted alone with the task's prompt (``neuron``: all other
  units visible; ``intra_region``: the other units of its region visible, every unit outside it hidden), so a
  session of N units costs N model passes per batch (:class:`OneAtATimePlan`, built lazily: one (1, T, N)
  template at a time).  Unit masks only.  Result keys get the prefix ``mtm/`` after the baseline's
  (``mtm/bps_neuron_mean`` is MtM's number: the nanmean over units of each unit's own bits/spike).

Spike scores (:func:`score_spikes`): NLB bits/spike (pooled, per neuron, per session), IBL BrainWideBench's
Poisson D2 (:func:`nfm.evaluation.metrics.poisson_d2`) and BWB bits/spike (units with a null rate < 1e-9
dropped, :func:`nfm.evaluation.metrics.bits_per_spike_bwb`).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from nfm.evaluation import baselines as bl
from nfm.evaluation import metrics as mt
from nfm.evaluation.tasks import MASK_PROTOCOLS, PROTOCOL_MODES, PROTOCOL_PREFIX, Task
from nfm.models.masking import MaskSample, forward_prediction_mask, held_out_units_mask

from .context import EvalContext, SessionData, _stable_seed, mean_or_nan, require
from .predictor import NotApplicable, Predictor

def forward_bins(forward_s: float, bin_size: float, frame_clock: bool = False) -> int:
    """Bins of a forward-prediction window of ``forward_s`` [s]: exact for spike bins (else ``ValueError``); on a
    2-photon frame clock (``frame_clock``) the nearest whole number of bins (>= 1): frames cannot be split."""
    k = forward_s / bin_size
    if abs(k - round(k)) > 1e-6:
        if not frame_clock:
            raise ValueError(f"mask.forward_s={forward_s} s is not a whole number of {bin_size} s bins")
        return max(1, int(round(k)))
    return int(round(k))


class OneAtATimePlan(Sequence):
    """The ``mtm_per_neuron`` plan of a session: entry ``i`` hides and predicts unit ``i`` alone.

    ``mode`` ``"neuron"``: every other unit is visible; ``"intra_region"``: the other units of unit i's region are
    visible and every unit outside that region is hidden too (not scored).  Entries are
    :class:`~nfm.models.masking.MaskSample` templates (1, T, N), built when indexed, so the plan holds no
    (N, T, N) array; ``len(plan) == N`` (one model pass per unit and batch).  ``units``: (N,) the target unit of
    each entry.
    """

    def __init__(self, n_units: int, n_bins: int, mode: str, regions: np.ndarray | None = None):
        if mode not in PROTOCOL_MODES["mtm_per_neuron"]:
            raise ValueError(f"protocol 'mtm_per_neuron' needs a unit mask {list(PROTOCOL_MODES['mtm_per_neuron'])}"
                             f", got mask.mode {mode!r}")
        if mode == "intra_region" and (regions is None or len(regions) != n_units):
            raise ValueError(f"intra_region one-at-a-time plan needs (N={n_units},) regions, got "
                             f"{None if regions is None else len(regions)}")
        self.n_units, self.n_bins, self.mode = int(n_units), int(n_bins), mode
        self.regions = None if regions is None else np.asarray(regions)
        self.units = np.arange(self.n_units)

    def __len__(self) -> int:
        return self.n_units

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.n_units))]
        i = int(i)
        if not -self.n_units <= i < self.n_units:
            raise IndexError(f"plan entry {i} of a {self.n_units}-unit session")
        i %= self.n_units
        units = torch.ones(1, self.n_units, dtype=torch.bool)
        sel = torch.zeros(1, self.n_units, dtype=torch.bool)
        sel[0, i] = True
        also = None
        if self.mode == "intra_region":
            also = torch.from_numpy(self.regions != self.regions[i])[None]
        return held_out_units_mask(units, sel, self.n_bins, mode=self.mode, also_hidden=also)


def mask_plan(mask: dict, sd: SessionData, n_bins: int, bin_size: float, frame_clock: bool = False,
              protocol: str = "nlb") -> Sequence[MaskSample]:
    """The evaluation masks of a session as (1, T, N) templates (see the module docstring); every scored unit is
    a target once.  ``frame_clock``: 2-photon bins (forward windows rounded to whole bins, :func:`forward_bins`);
    ``protocol``: ``"nlb"`` (the folds / regions / forward window of ``mask``, a list) or ``"mtm_per_neuron"``
    (each unit alone: a :class:`OneAtATimePlan` of N entries; ``mask.held_out_folds`` and ``seed`` unused)."""
    T, N = n_bins, sd.n_units
    mode = mask["mode"]
    if protocol not in MASK_PROTOCOLS:
        raise ValueError(f"protocol {protocol!r} is not one of {list(MASK_PROTOCOLS)}")
    if protocol == "mtm_per_neuron":
        return OneAtATimePlan(N, T, mode, sd.regions if mode == "intra_region" else None)
    units = torch.ones(1, N, dtype=torch.bool)
    if mode == "forward":
        k = forward_bins(mask["forward_s"], bin_size, frame_clock)
        if not 0 < k < T:
            raise NotApplicable(f"forward_s={mask['forward_s']} s leaves no past in a {T * bin_size:g} s trial")
        return [forward_prediction_mask(units, T, k)]

    def held_out(idx, mode_, also=None):
        sel = torch.zeros(1, N, dtype=torch.bool)
        sel[0, torch.as_tensor(idx, dtype=torch.long)] = True
        return held_out_units_mask(units, sel, T, mode=mode_,
                                   also_hidden=None if also is None else torch.from_numpy(also)[None])

    rng = np.random.default_rng(_stable_seed(mask.get("seed", 0), sd.session_id))
    if mode == "neuron":
        return [held_out(f, "neuron")
                for f in np.array_split(rng.permutation(N), min(int(mask["held_out_folds"]), N))]
    regions = list(dict.fromkeys(sd.regions.tolist()))
    if mode == "inter_region":
        if len(regions) < 2:
            raise NotApplicable(f"session {sd.session_id} has a single region ({regions[0]}): nothing to predict "
                                "a whole region from")
        return [held_out(np.flatnonzero(sd.regions == r), "inter_region") for r in regions]
    if mode == "intra_region":
        out = []
        for r in regions:
            members = np.flatnonzero(sd.regions == r)
            outside = sd.regions != r
            for f in np.array_split(rng.permutation(members), min(int(mask["held_out_folds"]), len(members))):
                out.append(held_out(f, "intra_region", also=outside))
        return out
    raise ValueError(f"unknown mask mode {mode!r}")


def _plan_key(mask: dict, protocol: str = "nlb") -> str:
    """Cache key of a plan's predictions (the NLB key is the mask alone: a psth task shares its masking task's)."""
    if protocol == "nlb":
        return json.dumps(mask, sort_keys=True)
    return json.dumps({"mask": mask, "protocol": protocol}, sort_keys=True)


# --------------------------------------------------------------------------- scoring helpers
def _masked_mean(x: np.ndarray, m: np.ndarray) -> np.ndarray:
    axes = tuple(range(x.ndim - 1))
    s = np.where(m, x, 0.0).sum(axis=axes)
    c = m.sum(axis=axes)
    return np.divide(s, c, out=np.zeros_like(s, dtype=np.float64), where=c > 0)


def _null_like(counts: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Each unit's mean over its evaluated entries, broadcast to ``counts.shape`` (the NLB null)."""
    return np.broadcast_to(_masked_mean(counts, m), counts.shape).copy()


def score_spikes(rates: np.ndarray, counts: np.ndarray, m: np.ndarray) -> dict[str, Any]:
    """Scores of one session's predictions: ``rates`` (R, T, N) expected counts per bin, ``counts`` (R, T, N)
    observed counts, ``m`` (R, T, N) bool evaluated entries.

    Returns NLB bits/spike ``bps`` (pooled over units) and ``per_neuron`` (N,) (NaN: no evaluated spike), the
    parts that pool sessions (``nll_model``, ``nll_null`` [nats], ``spikes``), ``n_neurons``; Poisson D2
    ``d2_per_neuron`` (N,) (NaN: dropped unit, see :func:`~nfm.evaluation.metrics.poisson_d2`) and its mean
    over the kept units ``poisson_d2`` (NaN if none); ``bps_bwb`` (bits/spike over the units with a null rate
    >= 1e-9)."""
    n_spk = float(np.where(m, counts, 0.0).sum())
    if n_spk <= 0:
        raise NotApplicable("no spike in the evaluated entries")
    bps = mt.bits_per_spike(rates, counts, mask=m)
    per = mt.bits_per_spike(rates, counts, mask=m, pooled=False)
    evaluated = m.reshape(-1, m.shape[-1]).any(axis=0)
    per = np.where(evaluated, per, np.nan)
    nll_model = mt.poisson_nll(rates, counts, mask=m)
    nll_null = mt.poisson_nll(_null_like(counts, m), counts, mask=m)
    d2 = mt.poisson_d2(rates, counts, mask=m, reduce="none")
    return {"bps": bps, "per_neuron": per, "nll_model": nll_model, "nll_null": nll_null, "spikes": n_spk,
            "n_neurons": int(evaluated.sum()), "d2_per_neuron": d2,
            "poisson_d2": float(np.nanmean(d2)) if np.isfinite(d2).any() else float("nan"),
            "bps_bwb": mt.bits_per_spike_bwb(rates, counts, mask=m)}


def score_calcium(means: np.ndarray, var: np.ndarray | None, act: np.ndarray, m: np.ndarray) -> dict[str, Any]:
    """R2 and Gaussian NLL (nats per evaluated entry) of 2-photon predictions against the per-ROI mean.

    Baseline = each ROI's mean and variance over its evaluated entries (a fitted per-ROI Gaussian, so its
    R2 is 0).  The model's NLL uses its predictive variance when it gives one, else each ROI's mean squared
    residual (its best constant variance).  Variances are floored at 1e-6 x the median positive ROI variance.
    """
    n_entries = int(m.sum())
    if n_entries == 0:
        raise NotApplicable("no evaluated entry")
    rois = m.reshape(-1, m.shape[-1]).any(axis=0)
    mu = _null_like(act, m)
    base_var = _masked_mean((act - mu) ** 2, m)
    pos = base_var[rois & (base_var > 0)]
    floor = 1e-6 * (float(np.median(pos)) if pos.size else 1.0)
    base_var = np.maximum(base_var, floor)
    per = mt.r2_score(means[..., rois], act[..., rois], mask=m[..., rois], reduce="none")
    pooled = mt.r2_score(means[..., rois], act[..., rois], mask=m[..., rois], reduce="pooled")
    if var is None:
        var = np.broadcast_to(np.maximum(_masked_mean((act - np.nan_to_num(means)) ** 2, m), floor), act.shape)
    v = np.where(m, np.maximum(np.nan_to_num(var, nan=1.0), floor), 1.0)
    nll_model = mt.gaussian_nll(np.where(m, means, 0.0), act, var=v, mask=m)
    nll_base = mt.gaussian_nll(mu, act, var=np.broadcast_to(base_var, act.shape), mask=m)
    return {"r2": float(np.nanmean(per)) if np.isfinite(per).any() else float("nan"), "r2_pooled": pooled,
            "per_neuron": _scatter(per, rois),
            "gaussian_nll": nll_model / n_entries, "gaussian_nll_baseline": nll_base / n_entries,
            "delta_nll": (nll_base - nll_model) / n_entries, "n_entries": n_entries, "n_neurons": int(rois.sum())}


def _scatter(values: np.ndarray, where: np.ndarray) -> np.ndarray:
    out = np.full(where.shape, np.nan)
    out[where] = values
    return out


# --------------------------------------------------------------------------- task: masking
def _masking_predictions(ctx: EvalContext, task: Task, predictor: Predictor, sid: str):
    sd = ctx.session(sid)
    frame_clock = ctx.modality == "calcium"
    protocol = task.spec.get("protocol", "nlb")
    plan = mask_plan(task.spec["mask"], sd, ctx.n_bins, ctx.bin_size, frame_clock, protocol=protocol)
    if protocol != "nlb":
        ctx.note(task.name, f"protocol {protocol}: each unit hidden and predicted alone (one model pass per unit "
                            f"and batch of trials); keys prefixed {PROTOCOL_PREFIX[protocol]}")
    if frame_clock and task.spec["mask"]["mode"] == "forward":
        k = forward_bins(task.spec["mask"]["forward_s"], ctx.bin_size, True)
        ctx.note(task.name, f"forward window: {k} bin(s) of {ctx.bin_size:.4g} s = {k * ctx.bin_size:.4g} s (whole "
                            f"imaging frames nearest to forward_s={task.spec['mask']['forward_s']} s)")
    rates, var, target = ctx.masked_predictions(predictor, sd, plan, _plan_key(task.spec["mask"], protocol))
    return sd, plan, rates, var, target


def _plan_fingerprint(plan: list[MaskSample]) -> str:
    """BLAKE2b of every pass's hidden and target units (the masks the baseline is fitted for)."""
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    for p in plan:
        h.update(np.packbits(p.hidden[0].any(0).numpy()).tobytes() + b"|")
        h.update(np.packbits(p.target[0].any(0).numpy()).tobytes() + b";")
    return h.hexdigest()


def _smoothing_spec(spec: dict) -> dict:
    """The smoothing spec with the fit's defaults filled in (``max_features``, ``solver``): the cache key."""
    return {"max_features": bl.DEFAULT_MAX_FEATURES, "solver": "newton", **spec}


def smoothing_cache_key(ctx: EvalContext, sd: SessionData, train: SessionData, plan_fp: str, spec: dict):
    """``(name, key)`` of a session's smoothing baseline in the baseline cache: the training and evaluated counts
    (content fingerprints), the masks (:func:`_plan_fingerprint`), the spec with defaults, the CV seed, the bin."""
    from nfm.evaluation.baseline_cache import array_fingerprint

    key = {"baseline": "smoothing", "spec": _smoothing_spec(spec), "seed": ctx.seed, "plan": plan_fp,
           "bin_size": ctx.bin_size, "train": array_fingerprint(train.counts), "evaluated": array_fingerprint(sd.counts)}
    return f"smoothing-{sd.session_id}-{'+'.join(sd.splits)}", key


def smoothing_cached(ctx: EvalContext, sid: str, task: Task) -> bool:
    """Whether the baseline cache already holds this task's smoothing baseline of session ``sid`` (the cost
    estimate counts no fit then)."""
    if ctx.baseline_cache is None:
        return False
    try:
        sd = ctx.session(sid)
        plan = mask_plan(task.spec["mask"], sd, ctx.n_bins, ctx.bin_size, ctx.modality == "calcium",
                         protocol=task.spec.get("protocol", "nlb"))
        train = ctx.session(sid, "train", cap=False)
    except (NotApplicable, ValueError):
        return False
    name, key = smoothing_cache_key(ctx, sd, train, _plan_fingerprint(plan), task.spec["smoothing"])
    return ctx.baseline_cache.path(name, key).is_file()


def _smoothing_rates(ctx: EvalContext, sd: SessionData, plan: list[MaskSample], spec: dict,
                     task_name: str = "smoothing") -> np.ndarray:
    """NLB smoothing baseline per mask pass: held-in (not hidden) units -> target units, fitted on train.

    Read from ``ctx.baseline_cache`` (:mod:`nfm.evaluation.baseline_cache`) when an entry for the same training
    and evaluated counts, masks, spec and CV seed exists; fitted and written there otherwise."""
    spec = _smoothing_spec(spec)
    plan_fp = _plan_fingerprint(plan)
    ck = ("smoothing", sd.session_id, sd.splits, plan_fp, json.dumps(spec, sort_keys=True))
    if ck in ctx._pred:
        return ctx._pred[ck]
    train = ctx.session(sd.session_id, "train", cap=False)
    cache = ctx.baseline_cache
    name, key = smoothing_cache_key(ctx, sd, train, plan_fp, spec)
    hit = cache.load(name, key, sd.counts.shape) if cache is not None else None
    if cache is not None and cache.last_status.startswith("corrupt"):
        ctx.note(task_name, f"smoothing baseline: cache entry refused and refitted ({cache.last_status[len('corrupt: '):]})")
    if hit is not None:
        out, info = hit
        chosen = info.get("chosen")
    else:
        out, chosen = _fit_smoothing(ctx, train, sd, plan, spec)
        if cache is not None:
            cache.save(name, key, out, {"chosen": chosen})
    if chosen is not None:
        ctx.smoothing_choices[sd.session_id] = {"sigma_ms": chosen[0] * ctx.bin_size * 1000.0, "alpha": chosen[1]}
    ctx._pred[ck] = out
    return out


def _fit_smoothing(ctx: EvalContext, train: SessionData, sd: SessionData, plan: list[MaskSample], spec: dict):
    """``(rates (R, T, N), (sigma_bins, alpha) or None)``: the kernel width and penalty chosen once per session by
    CV over its training trials (on the first pass), then one fit per mask pass."""
    sigmas = [bl.sigma_ms_to_bins(s, ctx.bin_size) for s in np.atleast_1d(spec["sigma_ms"])]
    alphas = [float(a) for a in np.atleast_1d(spec["alpha"])]
    options = {"method": spec["method"], "max_features": spec["max_features"], "solver": spec["solver"]}
    chosen = None
    out = np.full(sd.counts.shape, np.nan)
    for p in ctx.track(plan, "smoothing baseline", unit="fold"):  # one baseline fit per mask pass
        tgt = np.flatnonzero(p.target[0].any(0).numpy())
        hin = np.flatnonzero(~p.hidden[0].any(0).numpy())
        if hin.size == 0:  # nothing to smooth: the training mean rate
            out[..., tgt] = train.counts[..., tgt].mean(axis=(0, 1))
            continue
        if chosen is None:
            model = bl.SmoothingBaseline.fit_cv(train.counts[..., hin], train.counts[..., tgt], sigmas, alphas,
                                                n_folds=int(spec["cv_folds"]), seed=ctx.seed, **options)
            chosen = (model.sigma_bins, model.alpha)
        else:
            model = bl.SmoothingBaseline(sigma_bins=chosen[0], alpha=chosen[1], **options)
            model.fit(train.counts[..., hin], train.counts[..., tgt])
        out[..., tgt] = model.predict(sd.counts[..., hin])
    if len(sigmas) * len(alphas) == 1:
        chosen = None  # nothing was chosen
    return out, chosen


def _ridge_baseline(ctx: EvalContext, task: Task, sd: SessionData, plan: list[MaskSample]):
    """2-photon co-smoothing analogue per mask pass: held-out ROIs from the held-in ROIs in the same frame
    (:class:`~nfm.evaluation.baselines.SameFrameRidge`, fitted with CV on the train split only)."""
    if task.spec["mask"]["mode"] == "forward":
        raise NotApplicable("the ridge baseline predicts held-out ROIs from the others in the same frame; a forward "
                            "mask hides every ROI")
    ck = ("ridge", sd.session_id, sd.splits, json.dumps([p.target[0].any(0).tolist() for p in plan]))
    if ck in ctx._pred:
        return ctx._pred[ck]
    train = ctx.session(sd.session_id, "train", cap=False)
    tv = train.valid if train.valid is not None else np.ones(train.counts.shape, bool)
    ev = sd.valid if sd.valid is not None else np.ones(sd.counts.shape, bool)
    pred = np.full(sd.counts.shape, np.nan)
    var = np.full(sd.counts.shape, np.nan)
    for p in plan:  # one fit per mask pass (fold / region)
        tgt = np.flatnonzero(p.target[0].any(0).numpy())
        hin = np.flatnonzero(~p.hidden[0].any(0).numpy())
        if hin.size == 0:  # nothing to regress on: the training mean
            m = bl.ConditionPSTH().fit(train.counts[..., tgt], np.zeros(train.n_trials), tv[..., tgt])
            pred[..., tgt] = m.predict(np.zeros(sd.n_trials)).mean(1, keepdims=True)
            var[..., tgt] = m.var
            continue
        model = bl.SameFrameRidge(seed=int(task.spec["mask"].get("seed", 0))).fit(
            train.counts[..., hin], train.counts[..., tgt], tv[..., hin], tv[..., tgt])
        pred[..., tgt] = model.predict(sd.counts[..., hin], ev[..., hin])
        var[..., tgt] = model.var
    ctx._pred[ck] = (pred, var)
    return ctx._pred[ck]


def _joint_codes(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Condition codes (float, NaN = no label) of two label arrays (R, k) on one shared coding."""
    both = np.concatenate([a, b])
    ok = np.isfinite(both).all(1)
    codes = np.full(len(both), np.nan)
    if ok.any():
        codes[ok] = np.unique(both[ok], axis=0, return_inverse=True)[1].ravel()
    return codes[: len(a)], codes[len(a):]


def _psth_baseline(ctx: EvalContext, task: Task, sd: SessionData):
    """2-photon PSTH-by-condition baseline: each trial predicted by the training-trial mean of its condition
    (:class:`~nfm.evaluation.baselines.ConditionPSTH`; ``conditions`` of the task, through ``column_map``)."""
    ck = ("psth", sd.session_id, sd.splits, json.dumps(task.spec["conditions"]), json.dumps(task.spec["column_map"]))
    if ck in ctx._pred:
        return ctx._pred[ck]
    train = ctx.session(sd.session_id, "train", cap=False)
    lab_ev, cols = _condition_labels(task, sd)
    lab_tr, _ = _condition_labels(task, train)
    c_tr, c_ev = _joint_codes(lab_tr, lab_ev)
    model = bl.ConditionPSTH().fit(train.counts, c_tr, train.valid)
    out = (model.predict(c_ev), np.broadcast_to(model.var, sd.counts.shape))
    ctx.note(task.name, f"psth baseline: training-trial mean per condition of {cols}")
    ctx._pred[ck] = out
    return out


def _aggregate_spikes(parts: dict[str, dict], prefix: str = "") -> dict[str, float]:
    """Sessions' :func:`score_spikes` pooled: ``bps`` (NLB, over every unit of every session), ``bps_neuron_mean``
    (nanmean over units), ``bps_session_mean`` (mean of the sessions' pooled bps), ``poisson_d2`` and
    ``bps_bwb`` (BWB: each session's value, averaged over the sessions that have one).  ``prefix``: the
    baseline's and the protocol's, e.g. ``null/mtm/``."""
    if not parts:
        return {}
    num = sum(p["nll_null"] - p["nll_model"] for p in parts.values())
    den = sum(p["spikes"] for p in parts.values()) * mt.LN2
    per = np.concatenate([p["per_neuron"] for p in parts.values()])
    return {f"{prefix}bps": float(num / den),
            f"{prefix}bps_neuron_mean": float(np.nanmean(per)) if np.isfinite(per).any() else float("nan"),
            f"{prefix}bps_session_mean": float(np.mean([p["bps"] for p in parts.values()])),
            f"{prefix}poisson_d2": mean_or_nan(p["poisson_d2"] for p in parts.values()),
            f"{prefix}bps_bwb": mean_or_nan(p["bps_bwb"] for p in parts.values())}


def _session_spike_metrics(p: dict, prefix: str = "", wanted=()) -> dict[str, float]:
    """A session's entry: ``bps`` and ``bps_neuron_mean`` always, ``poisson_d2`` / ``bps_bwb`` when wanted."""
    per = p["per_neuron"]
    out = {f"{prefix}bps": float(p["bps"]),
           f"{prefix}bps_neuron_mean": float(np.nanmean(per)) if np.isfinite(per).any() else float("nan")}
    out.update({f"{prefix}{k}": float(p[k]) for k in ("poisson_d2", "bps_bwb") if k in wanted})
    return out


def run_masking(ctx: EvalContext, task: Task) -> dict:
    require(ctx, task, "mtm")
    spikes = ctx.modality == "spikes"
    wanted = task.metrics_for(ctx.modality)
    pp = PROTOCOL_PREFIX[task.spec.get("protocol", "nlb")]  # after the baseline's prefix: null/mtm/bps
    per_session: dict[str, dict] = {}
    parts: dict[str, dict[str, dict]] = {"": {}, "null/": {}, "smoothing/": {}, "baseline_model/": {}}
    cal: dict[str, dict[str, dict]] = {"": {}, "null/": {}, "ridge/": {}, "psth/": {}, "baseline_model/": {}}
    per_neuron_fig: dict[str, list] = {}
    for sid in ctx.track(ctx.sessions, task.name):
        try:
            sd, plan, rates, var, target = _masking_predictions(ctx, task, ctx.predictor, sid)
        except NotApplicable as err:
            per_session[sid] = {"not_applicable": str(err)}
            continue
        entry: dict[str, Any] = {"n_trials": sd.n_trials}
        candidates: list[tuple[str, np.ndarray, np.ndarray | None]] = [("", rates, var)]
        if "null" in task.baselines:
            candidates.append(("null/", _null_like(sd.counts, target), None))
        if "smoothing" in task.baselines:
            if not spikes:
                ctx.note(task.name, "smoothing baseline: defined for spike counts only (not 2-photon)")
            elif task.spec["mask"]["mode"] == "forward":
                ctx.note(task.name, "smoothing baseline: defined for unit masks, not forward prediction")
            else:
                try:
                    rates_s = _smoothing_rates(ctx, sd, plan, task.spec["smoothing"], task.name)
                    candidates.append(("smoothing/", rates_s, None))
                    for k, v in ctx.smoothing_choices.get(sid, {}).items():  # the CV choice, for the report
                        entry[f"smoothing/{k}"] = v
                except NotApplicable as err:
                    ctx.note(task.name, f"smoothing baseline not run for {sid}: {err}")
        for name, fn in (("ridge", lambda: _ridge_baseline(ctx, task, sd, plan)),
                         ("psth", lambda: _psth_baseline(ctx, task, sd))):
            if name not in task.baselines:
                continue
            if spikes:
                ctx.note(task.name, f"{name} baseline: a 2-photon baseline (not run on spike counts)")
                continue
            try:
                candidates.append((f"{name}/", *fn()))
            except NotApplicable as err:
                ctx.note(task.name, f"{name} baseline not run for {sid}: {err}")
        if "baseline_model" in task.baselines and ctx.baseline is not None:
            if ctx.baseline.can("mtm") is None:
                _, _, r_b, v_b, _ = _masking_predictions(ctx, task, ctx.baseline, sid)
                candidates.append(("baseline_model/", r_b, v_b))
            else:
                ctx.note(task.name, f"baseline model: {ctx.baseline.can('mtm')}")
        try:
            for prefix, r, v in candidates:
                if spikes:
                    sc = score_spikes(r, sd.counts, target)
                    parts[prefix][sid] = sc
                    entry.update(_session_spike_metrics(sc, prefix + pp, wanted))
                    if prefix == "":
                        entry.update(n_neurons=sc["n_neurons"], n_spikes=sc["spikes"])
                else:
                    sc = score_calcium(r, v, sd.counts, target)
                    cal[prefix][sid] = sc
                    entry.update({f"{prefix}{pp}{k}": float(sc[k]) for k in
                                  ("r2", "r2_pooled", "gaussian_nll", "gaussian_nll_baseline", "delta_nll")})
                    if prefix == "":
                        entry.update(n_neurons=sc["n_neurons"], n_entries=sc["n_entries"])
                per_neuron_fig.setdefault(prefix.rstrip("/") or "model", []).append(sc["per_neuron"])
        except NotApplicable as err:
            for store in (parts, cal):
                for d in store.values():
                    d.pop(sid, None)
            per_session[sid] = {"not_applicable": str(err)}
            continue
        per_session[sid] = entry
    scored = [s for s, e in per_session.items() if "not_applicable" not in e]
    if not scored:
        reasons = {e["not_applicable"] for e in per_session.values()}
        raise NotApplicable("; ".join(sorted(reasons)) or "no session")
    out: dict[str, Any] = {}
    if spikes:
        for prefix, d in parts.items():
            agg = _aggregate_spikes(d, prefix + pp)
            out.update({k: v for k, v in agg.items() if k.split("/")[-1] in wanted})
    else:
        for prefix, d in cal.items():
            if not d:
                continue
            for k in ("r2", "r2_pooled", "gaussian_nll", "gaussian_nll_baseline", "delta_nll"):
                if k in wanted:
                    if k in ("gaussian_nll", "gaussian_nll_baseline", "delta_nll"):
                        w = np.array([c["n_entries"] for c in d.values()], dtype=float)
                        vals = np.array([c[k] for c in d.values()], dtype=float)
                        out[f"{prefix}{pp}{k}"] = float((vals * w).sum() / w.sum())
                    else:
                        out[f"{prefix}{pp}{k}"] = mean_or_nan(c[k] for c in d.values())
    out["n_sessions"] = len(scored)
    out["per_session"] = per_session
    if ctx.figure_dir is not None:
        from nfm.evaluation import plots

        label = "bits/spike per neuron" if spikes else "R2 per ROI"
        data = {k: np.concatenate(v) for k, v in per_neuron_fig.items()}
        path = plots.plot_per_neuron_hist(data, ctx.figure_dir / f"{task.name}_per_neuron.png",
                                          xlabel=label, title=task.name)
        ctx.figure(task.name, path)
    return out


# --------------------------------------------------------------------------- task: psth
def _condition_labels(task: Task, sd: SessionData) -> tuple[np.ndarray, list[str]]:
    sets = task.spec["conditions"]
    options = [sets] if all(isinstance(c, str) for c in sets) else sets
    cmap = task.spec.get("column_map") or {}
    for cols in options:
        names = [cmap.get(c, c) for c in cols]  # the dataset's names for the task's columns
        if all(c in sd.trial_columns for c in names):
            vals = np.stack([sd.trial_columns[c] for c in names], axis=1)
            return vals, list(names)
    raise NotApplicable(f"the dataset has none of the condition columns {options} (trial columns: "
                        f"{sorted(sd.trial_columns)})")


def _psth_r2_any(rates: np.ndarray, data: np.ndarray, cond: np.ndarray, spikes: bool) -> np.ndarray:
    """Per-unit PSTH R2 (NaN for flat PSTHs); counts go through metrics.psth_r2, 2-photon through r2_score."""
    if spikes:
        return mt.psth_r2(rates, data, cond, per_neuron=True)
    _, inv = np.unique(cond, return_inverse=True)
    onehot = np.zeros((inv.max() + 1, len(inv)))
    onehot[inv, np.arange(len(inv))] = 1.0
    onehot /= onehot.sum(axis=1, keepdims=True)
    t = np.einsum("ct,tbn->cbn", onehot, data).reshape(-1, data.shape[-1])
    p = np.einsum("ct,tbn->cbn", onehot, rates).reshape(-1, data.shape[-1])
    return mt.r2_score(p, t, reduce="none")


def run_psth(ctx: EvalContext, task: Task) -> dict:
    require(ctx, task, "mtm")
    spikes = ctx.modality == "spikes"
    per_session: dict[str, dict] = {}
    per_unit: dict[str, list[np.ndarray]] = {}
    example = None
    for sid in ctx.track(ctx.sessions, task.name):
        try:
            sd = ctx.session(sid)
            labels, cols = _condition_labels(task, sd)
            ok = np.isfinite(labels).all(axis=1)
            uniq, inv, counts = np.unique(labels[ok], axis=0, return_inverse=True, return_counts=True)
            inv = np.asarray(inv).ravel()
            keep_cond = counts >= task.spec["min_trials_per_condition"]
            rows = np.flatnonzero(ok)[keep_cond[inv]]
            if keep_cond.sum() < 2:
                raise NotApplicable(f"fewer than 2 conditions of {cols} with >= "
                                    f"{task.spec['min_trials_per_condition']} trials in session {sid}")
            cond = inv[keep_cond[inv]]
            _, plan, rates, var, target = _masking_predictions(ctx, task, ctx.predictor, sid)
            if not target[rows].all() and sd.valid is None:
                raise NotApplicable("the mask does not cover every bin and unit (psth needs unit masks)")
        except NotApplicable as err:
            per_session[sid] = {"not_applicable": str(err)}
            continue
        data = np.where(target, sd.counts, np.nan)[rows] if sd.valid is not None else sd.counts[rows]
        data = np.nan_to_num(data)
        cands = [("", rates)]
        if "null" in task.baselines:
            cands.append(("null/", _null_like(sd.counts, target)))
        if "smoothing" in task.baselines and spikes:
            cands.append(("smoothing/", _smoothing_rates(ctx, sd, plan, task.spec["smoothing"], task.name)))
        if "baseline_model" in task.baselines and ctx.baseline is not None and ctx.baseline.can("mtm") is None:
            cands.append(("baseline_model/", _masking_predictions(ctx, task, ctx.baseline, sid)[2]))
        entry: dict[str, Any] = {"n_trials": int(len(rows)), "n_conditions": int(keep_cond.sum()),
                                 "n_trials_excluded": int(sd.n_trials - len(rows))}
        for prefix, r in cands:
            per = _psth_r2_any(np.nan_to_num(r[rows]), data, cond, spikes)
            per_unit.setdefault(prefix, []).append(per)
            entry[f"{prefix}psth_r2"] = float(np.nanmean(per)) if np.isfinite(per).any() else float("nan")
        per_session[sid] = entry
        if example is None:
            names = [", ".join(f"{c}={v:g}" for c, v in zip(cols, u)) for u in uniq]
            example = (sid, rates[rows], data, cond, names)
    scored = [s for s, e in per_session.items() if "not_applicable" not in e]
    if not scored:
        raise NotApplicable("; ".join(sorted({e["not_applicable"] for e in per_session.values()})))
    out: dict[str, Any] = {}
    for prefix, lst in per_unit.items():
        allv = np.concatenate(lst)
        out[f"{prefix}psth_r2"] = float(np.nanmean(allv)) if np.isfinite(allv).any() else float("nan")
    out["n_sessions"] = len(scored)
    out["per_session"] = per_session
    if ctx.figure_dir is not None and example is not None:
        from nfm.evaluation import plots

        sid, r, d, c, names = example
        path = plots.plot_psth_examples(np.nan_to_num(r), d, c, ctx.figure_dir / f"{task.name}_examples.png",
                                        bin_size=ctx.bin_size, title=f"{task.name}: {sid}", condition_labels=names)
        ctx.figure(task.name, path)
    return out
