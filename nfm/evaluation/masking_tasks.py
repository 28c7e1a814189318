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
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch

from nfm.evaluation import baselines as bl
from nfm.evaluation import metrics as mt
from nfm.evaluation.tasks import Task
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


def mask_plan(mask: dict, sd: SessionData, n_bins: int, bin_size: float, frame_clock: bool = False) -> list[MaskSample]:
    """The evaluation masks of a session as (1, T, N) templates (see the module docstring); every scored unit is
    a target once.  ``frame_clock``: 2-photon bins (forward windows rounded to whole bins, :func:`forward_bins`)."""
    T, N = n_bins, sd.n_units
    mode = mask["mode"]
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


def _plan_key(mask: dict) -> str:
    return json.dumps(mask, sort_keys=True)


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
    """Bits/spike of one session: pooled value, per-neuron values and the parts needed to pool sessions."""
    n_spk = float(np.where(m, counts, 0.0).sum())
    if n_spk <= 0:
        raise NotApplicable("no spike in the evaluated entries")
    bps = mt.bits_per_spike(rates, counts, mask=m)
    per = mt.bits_per_spike(rates, counts, mask=m, pooled=False)
    evaluated = m.reshape(-1, m.shape[-1]).any(axis=0)
    per = np.where(evaluated, per, np.nan)
    nll_model = mt.poisson_nll(rates, counts, mask=m)
    nll_null = mt.poisson_nll(_null_like(counts, m), counts, mask=m)
    return {"bps": bps, "per_neuron": per, "nll_model": nll_model, "nll_null": nll_null, "spikes": n_spk,
            "n_neurons": int(evaluated.sum())}


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
    plan = mask_plan(task.spec["mask"], sd, ctx.n_bins, ctx.bin_size, frame_clock)
    if frame_clock and task.spec["mask"]["mode"] == "forward":
        k = forward_bins(task.spec["mask"]["forward_s"], ctx.bin_size, True)
        ctx.note(task.name, f"forward window: {k} bin(s) of {ctx.bin_size:.4g} s = {k * ctx.bin_size:.4g} s (whole "
                            f"imaging frames nearest to forward_s={task.spec['mask']['forward_s']} s)")
    rates, var, target = ctx.masked_predictions(predictor, sd, plan, _plan_key(task.spec["mask"]))
    return sd, plan, rates, var, target


def _smoothing_rates(ctx: EvalContext, sd: SessionData, plan: list[MaskSample], spec: dict) -> np.ndarray:
    """NLB smoothing baseline per mask pass: held-in (not hidden) units -> target units, fitted on train."""
    ck = ("smoothing", sd.session_id, sd.splits, json.dumps([p.target[0].any(0).tolist() for p in plan]),
          json.dumps(spec, sort_keys=True))
    if ck in ctx._pred:
        return ctx._pred[ck]
    train = ctx.session(sd.session_id, "train", cap=False)
    sigmas = [bl.sigma_ms_to_bins(s, ctx.bin_size) for s in np.atleast_1d(spec["sigma_ms"])]
    alphas = [float(a) for a in np.atleast_1d(spec["alpha"])]
    chosen = None  # (sigma_bins, alpha): chosen once per session by CV over its training trials
    out = np.full(sd.counts.shape, np.nan)
    for p in plan:  # one baseline fit per mask pass
        tgt = np.flatnonzero(p.target[0].any(0).numpy())
        hin = np.flatnonzero(~p.hidden[0].any(0).numpy())
        if hin.size == 0:  # nothing to smooth: the training mean rate
            out[..., tgt] = train.counts[..., tgt].mean(axis=(0, 1))
            continue
        if chosen is None:
            model = bl.SmoothingBaseline.fit_cv(train.counts[..., hin], train.counts[..., tgt], sigmas, alphas,
                                                n_folds=int(spec["cv_folds"]), seed=ctx.seed, method=spec["method"])
            chosen = (model.sigma_bins, model.alpha)
        else:
            model = bl.SmoothingBaseline(sigma_bins=chosen[0], alpha=chosen[1], method=spec["method"])
            model.fit(train.counts[..., hin], train.counts[..., tgt])
        out[..., tgt] = model.predict(sd.counts[..., hin])
    if chosen is not None and len(sigmas) * len(alphas) > 1:
        ctx.smoothing_choices[sd.session_id] = {"sigma_ms": chosen[0] * ctx.bin_size * 1000.0, "alpha": chosen[1]}
    ctx._pred[ck] = out
    return out


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
    if not parts:
        return {}
    num = sum(p["nll_null"] - p["nll_model"] for p in parts.values())
    den = sum(p["spikes"] for p in parts.values()) * mt.LN2
    per = np.concatenate([p["per_neuron"] for p in parts.values()])
    return {f"{prefix}bps": float(num / den),
            f"{prefix}bps_neuron_mean": float(np.nanmean(per)) if np.isfinite(per).any() else float("nan"),
            f"{prefix}bps_session_mean": float(np.mean([p["bps"] for p in parts.values()]))}


def _session_spike_metrics(p: dict, prefix: str = "") -> dict[str, float]:
    per = p["per_neuron"]
    return {f"{prefix}bps": float(p["bps"]),
            f"{prefix}bps_neuron_mean": float(np.nanmean(per)) if np.isfinite(per).any() else float("nan")}


def run_masking(ctx: EvalContext, task: Task) -> dict:
    require(ctx, task, "mtm")
    spikes = ctx.modality == "spikes"
    wanted = task.metrics_for(ctx.modality)
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
                    candidates.append(("smoothing/", _smoothing_rates(ctx, sd, plan, task.spec["smoothing"]), None))
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
                    entry.update(_session_spike_metrics(sc, prefix))
                    if prefix == "":
                        entry.update(n_neurons=sc["n_neurons"], n_spikes=sc["spikes"])
                else:
                    sc = score_calcium(r, v, sd.counts, target)
                    cal[prefix][sid] = sc
                    entry.update({f"{prefix}{k}": float(sc[k]) for k in
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
            agg = _aggregate_spikes(d, prefix)
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
                        out[f"{prefix}{k}"] = float((vals * w).sum() / w.sum())
                    else:
                        out[f"{prefix}{k}"] = mean_or_nan(c[k] for c in d.values())
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
            cands.append(("smoothing/", _smoothing_rates(ctx, sd, plan, task.spec["smoothing"])))
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
