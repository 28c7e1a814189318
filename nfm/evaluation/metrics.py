"""Evaluation metrics with the Neural Latents Benchmark (NLB) definitions.

Conventions used throughout this module
---------------------------------------
* Argument order is always **prediction first, observation second**
  (``rates, counts``; ``pred, target``), like the NLB tools and unlike
  ``sklearn.metrics.r2_score``.
* Spike arrays are ``(trials, bins, neurons)`` or ``(samples, neurons)``: any
  number of leading axes, the **last axis is neurons** (or ROIs / outputs).
  ``counts`` are spike counts per bin (non-negative, finite); ``rates`` are
  the model's predicted **expected counts per bin** (not Hz), i.e. the
  Poisson mean of each entry.
* ``mask`` (optional) is a boolean array broadcastable to ``counts.shape``
  (e.g. ``(neurons,)`` to select held-out neurons, ``(trials, bins, 1)`` to
  select forward-prediction bins, or a full ``(trials, bins, neurons)`` mask).
  Only entries where ``mask`` is True are evaluated; entries outside the mask
  may hold anything (NaN included).  Entries inside the mask must be valid:
  NaN/inf/negative counts or rates raise ``ValueError``.

Bits per spike (NLB)
--------------------
``poisson_nll = sum(r - n log r + log n!)`` over evaluated entries, with the
predicted rates clipped from below at ``1e-9`` (NLB replaces zero rates by
1e-9; negative rates raise here).  ``bits_per_spike = (NLL_null - NLL_model)
/ (total spikes * ln 2)`` where the null model predicts, for each neuron, its
mean count per bin over the evaluated entries (with a mask: the mean over that
neuron's masked entries only; a neuron with no masked entry contributes
nothing).  A caller may pass ``null_rates`` instead (e.g. training-set means).

Behaviour decoding (MtM protocol)
---------------------------------
``decode_choice``: L2 logistic regression, C over ``logspace(-4, 4)``, with
**nested** stratified 4-fold cross-validation: the outer folds give the
reported held-out accuracy; C is chosen by an inner 4-fold grid search on each
outer training fold only, so the reported accuracy never saw its own test
trials during model selection.  ``decode_regression``: ridge regression with
alpha over ``[0, 1e-3 .. 1e4]`` chosen the same nested way, folds split by
**trial** (never by bin), R2 pooled over trials x bins of the out-of-fold
predictions.  These two score every trial they are given out of fold: given
the train split too, they score trials a model may have been trained on (task
protocol ``cv_all_splits``).

Behaviour decoding on unseen trials (task protocol ``train_to_eval``, default)
------------------------------------------------------------------------------
``decode_choice_split`` / ``decode_regression_split``: the decoder is fitted on
the train split only (C / alpha chosen by ``n_splits``-fold CV inside it:
stratified for labels, by trial for per-bin behaviour; then refit on the whole
train split) and scored on the evaluated split, which it never saw.
``chance`` there is the accuracy on the evaluated trials of always predicting
the majority class of the **train** labels; R2 is pooled over the evaluated
trials x bins with the evaluated targets' own mean as baseline.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.special import gammaln

LN2 = math.log(2.0)
RATE_FLOOR = 1e-9

__all__ = [
    "poisson_nll_terms",
    "poisson_nll",
    "bits_per_spike",
    "mean_over_neurons",
    "co_bps",
    "fp_bps",
    "psth_r2",
    "r2_score",
    "masked_r2",
    "gaussian_nll",
    "ridge_fit",
    "decode_choice",
    "decode_regression",
    "decode_choice_split",
    "decode_regression_split",
]


# --------------------------------------------------------------------------- helpers
def _leading_axes(ndim: int) -> tuple[int, ...]:
    return tuple(range(ndim - 1))


def _prepare(rates, counts, mask, name_rates: str = "rates", name_counts: str = "counts"):
    """Validate ``rates``/``counts``/``mask``; return float64 arrays and a full bool mask."""
    r = np.asarray(rates, dtype=np.float64)
    n = np.asarray(counts, dtype=np.float64)
    if r.shape != n.shape:
        raise ValueError(f"{name_rates} shape {r.shape} != {name_counts} shape {n.shape}")
    if n.ndim < 2:
        raise ValueError(
            f"{name_counts} must be (..., neurons) with at least 2 dims, got shape {n.shape}; "
            "use counts[:, None] for a single neuron"
        )
    if mask is None:
        m = np.ones(n.shape, dtype=bool)
    else:
        m = np.asarray(mask)
        if m.dtype != bool:
            raise ValueError(f"mask must be boolean, got dtype {m.dtype}")
        try:
            m = np.broadcast_to(m, n.shape)
        except ValueError as err:
            raise ValueError(f"mask shape {m.shape} does not broadcast to {n.shape}") from err
    n_in = n[m]
    bad = ~np.isfinite(n_in) | (n_in < 0)
    if bad.any():
        raise ValueError(
            f"{name_counts} must be finite and >= 0 on evaluated entries; found {n_in[bad][0]!r} "
            f"({int(bad.sum())} bad entries)"
        )
    r_in = r[m]
    bad = ~np.isfinite(r_in) | (r_in < 0)
    if bad.any():
        raise ValueError(
            f"{name_rates} must be finite and >= 0 on evaluated entries; found {r_in[bad][0]!r} "
            f"({int(bad.sum())} bad entries)"
        )
    return r, n, m


def _nll_per_neuron(r: np.ndarray, n: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Poisson NLL summed over leading axes, per neuron (last axis), masked entries only."""
    rr = np.where(m, np.maximum(r, RATE_FLOOR), 1.0)
    nn = np.where(m, n, 0.0)
    terms = rr - nn * np.log(rr) + gammaln(nn + 1.0)
    return np.where(m, terms, 0.0).sum(axis=_leading_axes(n.ndim))


def _masked_mean_per_neuron(n: np.ndarray, m: np.ndarray) -> np.ndarray:
    axes = _leading_axes(n.ndim)
    total = np.where(m, n, 0.0).sum(axis=axes)
    support = m.sum(axis=axes)
    return np.divide(total, support, out=np.zeros_like(total), where=support > 0)


# --------------------------------------------------------------------------- Poisson
def poisson_nll_terms(rates, counts) -> np.ndarray:
    """Elementwise Poisson NLL ``r - n log r + log n!`` (rates clipped at 1e-9), same shape."""
    r, n, m = _prepare(rates, counts, None)
    rr = np.maximum(r, RATE_FLOOR)
    return rr - n * np.log(rr) + gammaln(n + 1.0)


def poisson_nll(rates, counts, *, mask=None) -> float:
    """Total Poisson negative log-likelihood (nats) over the evaluated entries.

    ``rates``: predicted expected counts per bin, ``counts``: observed counts,
    both ``(..., neurons)``; ``mask`` selects evaluated entries (module doc).
    """
    r, n, m = _prepare(rates, counts, mask)
    return float(_nll_per_neuron(r, n, m).sum())


def bits_per_spike(rates, counts, *, mask=None, null_rates=None, pooled: bool = True):
    """NLB bits per spike of ``rates`` against a per-neuron mean-rate null model.

    Parameters
    ----------
    rates, counts : array (..., neurons)
        Predicted expected counts per bin and observed counts per bin.
    mask : bool array broadcastable to ``counts.shape``, optional
        Evaluate only these entries.  The default null rate of neuron ``i``
        is then ``sum(counts[..., i][mask]) / mask[..., i].sum()``.
    null_rates : array broadcastable to ``counts.shape``, optional
        Use these null rates (expected counts per bin, e.g. ``(neurons,)``
        training means) instead of the evaluated-data means.
    pooled : bool
        True (NLB): one number, ``(NLL_null - NLL_model) / (S * ln 2)`` with
        sums and ``S`` (total evaluated spikes) over all neurons; raises
        ``ValueError`` when ``S == 0``.  False: an array ``(neurons,)`` with each
        neuron's own NLL difference over its own spike count; NaN for a neuron
        with no evaluated spike.  ``pooled == nansum(bps_i * S_i) / S`` when
        every neuron spikes (the pooled value is the spike-weighted mean).

    Returns
    -------
    float (pooled) or np.ndarray (neurons,) in bits per spike.
    """
    r, n, m = _prepare(rates, counts, mask)
    if null_rates is None:
        null = _masked_mean_per_neuron(n, m)
    else:
        null = np.asarray(null_rates, dtype=np.float64)
        try:
            null = np.broadcast_to(null, n.shape)
        except ValueError as err:
            raise ValueError(f"null_rates shape {null.shape} does not broadcast to {n.shape}") from err
        _prepare(null, n, m, name_rates="null_rates")
    null = np.broadcast_to(null, n.shape)
    nll_model = _nll_per_neuron(r, n, m)
    nll_null = _nll_per_neuron(null, n, m)
    spikes = np.where(m, n, 0.0).sum(axis=_leading_axes(n.ndim))
    if pooled:
        total = float(spikes.sum())
        if total <= 0:
            raise ValueError("bits_per_spike: no spikes in the evaluated entries (denominator is 0)")
        return float((nll_null.sum() - nll_model.sum()) / (total * LN2))
    out = np.full(spikes.shape, np.nan)
    has = spikes > 0
    out[has] = (nll_null[has] - nll_model[has]) / (spikes[has] * LN2)
    return out


def mean_over_neurons(values) -> float:
    """Mean of a per-neuron metric ignoring NaN (neurons without spikes / constant PSTH).

    Raises ``ValueError`` when every value is NaN.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0 or np.isnan(v).all():
        raise ValueError("mean_over_neurons: every per-neuron value is NaN (or none given)")
    return float(np.nanmean(v))


def _select_index(size: int, selection, what: str) -> np.ndarray:
    """Integer indices from int indices or a boolean ``(size,)`` mask; ``what`` names the axis."""
    idx = np.asarray(selection)
    if idx.dtype == bool:
        if idx.shape != (size,):
            raise ValueError(f"boolean {what} selection has shape {idx.shape}, expected ({size},)")
        idx = np.flatnonzero(idx)
    idx = idx.astype(np.int64).ravel()
    if idx.size == 0:
        raise ValueError(f"empty {what} selection")
    if (idx < 0).any() or (idx >= size).any():
        raise ValueError(f"{what} index out of range [0, {size}): {idx[(idx < 0) | (idx >= size)][0]}")
    return idx


def co_bps(rates, counts, heldout, *, null_rates=None) -> float:
    """Co-smoothing bits/spike: pooled bps on the held-out neurons only.

    ``rates``, ``counts``: ``(trials, bins, neurons)``; ``heldout``: int indices
    or a boolean ``(neurons,)`` mask of held-out neurons.  Null = each held-out
    neuron's mean over the evaluated trials and bins (or ``null_rates`` for all
    neurons ``(neurons,)``, then sub-selected).
    """
    r = np.asarray(rates)
    idx = _select_index(r.shape[-1], heldout, "neuron")
    nr = None if null_rates is None else np.asarray(null_rates)[..., idx]
    return bits_per_spike(r[..., idx], np.asarray(counts)[..., idx], null_rates=nr)


def fp_bps(rates, counts, forward_bins, *, null_rates=None) -> float:
    """Forward-prediction bits/spike: pooled bps on the bins ``forward_bins`` (axis -2).

    ``rates``, ``counts``: ``(trials, bins, neurons)``; ``forward_bins``: int
    indices or a boolean ``(bins,)`` mask.  Null = each neuron's mean over the
    forward-prediction bins (NLB).
    """
    r = np.asarray(rates)
    n = np.asarray(counts)
    if r.ndim != 3:
        raise ValueError(f"fp_bps expects (trials, bins, neurons), got shape {r.shape}")
    idx = _select_index(r.shape[-2], forward_bins, "bin")
    return bits_per_spike(r[:, idx], n[:, idx], null_rates=null_rates)


# --------------------------------------------------------------------------- R2 family
def psth_r2(rates, counts, conditions, *, per_neuron: bool = False):
    """NLB-style PSTH R2: per-neuron R2 between predicted and true condition PSTHs.

    For each condition the true PSTH is the mean of ``counts`` over that
    condition's trials and the predicted PSTH the mean of ``rates``; the PSTHs
    of all conditions are concatenated in time, ``(conditions * bins, neurons)``,
    and R2 (``1 - SS_res / SS_tot``, SS_tot around each neuron's mean of the
    true concatenated PSTH) is computed per neuron.  Neurons whose true PSTH is
    constant get NaN.  (NLB additionally smooths the true PSTH; smooth
    ``counts`` first if you want that.)

    ``rates``, ``counts``: ``(trials, bins, neurons)``; ``conditions``:
    ``(trials,)`` labels (any comparable type, no NaN).  Returns the mean over
    neurons (ignoring NaN), or the ``(neurons,)`` array with ``per_neuron``.
    """
    r, n, _ = _prepare(rates, counts, None)
    if r.ndim != 3:
        raise ValueError(f"psth_r2 expects (trials, bins, neurons), got shape {r.shape}")
    cond = np.asarray(conditions)
    if cond.shape != (r.shape[0],):
        raise ValueError(f"conditions shape {cond.shape} != (trials,) = ({r.shape[0]},)")
    if cond.dtype.kind == "f" and np.isnan(cond).any():
        raise ValueError("conditions contain NaN")
    _, inverse = np.unique(cond, return_inverse=True)
    n_cond = int(inverse.max()) + 1
    onehot = np.zeros((n_cond, r.shape[0]))
    onehot[inverse, np.arange(r.shape[0])] = 1.0
    onehot /= onehot.sum(axis=1, keepdims=True)
    true_psth = np.einsum("ct,tbn->cbn", onehot, n).reshape(-1, n.shape[-1])
    pred_psth = np.einsum("ct,tbn->cbn", onehot, r).reshape(-1, n.shape[-1])
    ss_res = ((true_psth - pred_psth) ** 2).sum(axis=0)
    ss_tot = ((true_psth - true_psth.mean(axis=0)) ** 2).sum(axis=0)
    out = np.full(ss_tot.shape, np.nan)
    ok = ss_tot > 0
    out[ok] = 1.0 - ss_res[ok] / ss_tot[ok]
    return out if per_neuron else mean_over_neurons(out)


def r2_score(pred, target, *, mask=None, baseline=None, reduce: str = "mean"):
    """Coefficient of determination pooled over all leading axes (e.g. trials x bins).

    ``pred``, ``target``: ``(..., outputs)`` (the last axis is the output:
    neuron, ROI or behaviour variable; a 1-D array is one output).  For each
    output, ``R2 = 1 - SS_res / SS_base`` with sums over the evaluated
    (``mask``) entries and ``SS_base`` the squared deviation from ``baseline``:
    by default the output's own mean over the evaluated entries (classic R2);
    pass e.g. per-ROI training means ``(outputs,)`` to score against them.

    ``reduce``: ``"none"`` -> ``(outputs,)`` (NaN where SS_base == 0),
    ``"mean"`` -> mean of per-output R2 ignoring NaN, ``"pooled"`` ->
    ``1 - sum SS_res / sum SS_base`` over all outputs.
    """
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    if p.ndim == 1:
        p, t = p[:, None], t[:, None]
        if mask is not None:
            mask = np.asarray(mask)[:, None]
    p, t, m = _prepare_continuous(p, t, mask)
    axes = _leading_axes(t.ndim)
    support = m.sum(axis=axes)
    if (support == 0).any():
        raise ValueError(f"r2_score: output {int(np.flatnonzero(support == 0)[0])} has no evaluated entry")
    if baseline is None:
        base = np.where(m, t, 0.0).sum(axis=axes) / support
    else:
        base = np.asarray(baseline, dtype=np.float64)
        if base.ndim > 1 or (base.ndim == 1 and base.shape[0] not in (1, t.shape[-1])):
            raise ValueError(f"baseline must be a scalar or (outputs,) = ({t.shape[-1]},), got {base.shape}")
        if not np.isfinite(base).all():
            raise ValueError("baseline contains non-finite values")
    ss_res = np.where(m, (t - p) ** 2, 0.0).sum(axis=axes)
    ss_base = np.where(m, (t - base) ** 2, 0.0).sum(axis=axes)
    if reduce == "pooled":
        if ss_base.sum() <= 0:
            raise ValueError("r2_score: target equals the baseline everywhere (SS_base == 0)")
        return float(1.0 - ss_res.sum() / ss_base.sum())
    out = np.full(ss_base.shape, np.nan)
    ok = ss_base > 0
    out[ok] = 1.0 - ss_res[ok] / ss_base[ok]
    if reduce == "none":
        return out
    if reduce == "mean":
        return mean_over_neurons(out)
    raise ValueError(f"reduce must be 'none', 'mean' or 'pooled', got {reduce!r}")


def _prepare_continuous(p: np.ndarray, t: np.ndarray, mask):
    if p.shape != t.shape:
        raise ValueError(f"prediction shape {p.shape} != target shape {t.shape}")
    if mask is None:
        m = np.ones(t.shape, dtype=bool)
    else:
        m = np.asarray(mask)
        if m.dtype != bool:
            raise ValueError(f"mask must be boolean, got dtype {m.dtype}")
        try:
            m = np.broadcast_to(m, t.shape)
        except ValueError as err:
            raise ValueError(f"mask shape {m.shape} does not broadcast to {t.shape}") from err
    for name, arr in (("prediction", p), ("target", t)):
        bad = ~np.isfinite(arr[m])
        if bad.any():
            raise ValueError(f"{name} has {int(bad.sum())} non-finite evaluated entries")
    return p, t, m


def masked_r2(pred, target, mask, *, baseline=None, reduce: str = "mean"):
    """R2 of continuous (2-photon) activity on masked entries only, per-ROI mean baseline.

    Same as :func:`r2_score` with a required ``mask``; shapes
    ``(trials, bins, rois)``.  The default baseline is each ROI's mean over its
    masked entries; pass ``baseline=(rois,)`` training means to compare with
    a mean-activity model fitted elsewhere.
    """
    if mask is None:
        raise ValueError("masked_r2 needs a boolean mask")
    return r2_score(pred, target, mask=mask, baseline=baseline, reduce=reduce)


def gaussian_nll(mean, target, *, var=1.0, mask=None) -> float:
    """Total Gaussian NLL (nats) ``0.5 * (log(2 pi var) + (y - mu)^2 / var)`` over evaluated entries.

    ``mean``, ``target``: ``(..., rois)`` in the activity's unit (e.g. dF/F);
    ``var``: positive scalar or array broadcastable to the data (e.g. per-ROI
    ``(rois,)`` variances, same unit squared).
    """
    mu = np.asarray(mean, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    if mu.ndim == 1:
        mu, y = mu[:, None], y[:, None]
        if mask is not None:
            mask = np.asarray(mask)[:, None]
    mu, y, m = _prepare_continuous(mu, y, mask)
    v = np.asarray(var, dtype=np.float64)
    try:
        v = np.broadcast_to(v, y.shape)
    except ValueError as err:
        raise ValueError(f"var shape {v.shape} does not broadcast to {y.shape}") from err
    if not (np.isfinite(v[m]).all() and (v[m] > 0).all()):
        raise ValueError("var must be finite and > 0 on evaluated entries")
    terms = 0.5 * (np.log(2.0 * np.pi * v) + (y - mu) ** 2 / v)
    return float(np.where(m, terms, 0.0).sum())


# --------------------------------------------------------------------------- decoding
DEFAULT_CS = np.logspace(-4, 4, 9)
DEFAULT_ALPHAS = np.concatenate([[0.0], np.logspace(-3, 4, 8)])


def _check_features(features) -> np.ndarray:
    x = np.asarray(features, dtype=np.float64)
    if not np.isfinite(x).all():
        raise ValueError(f"features contain {int((~np.isfinite(x)).sum())} non-finite values")
    return x


def decode_choice(
    features,
    labels,
    *,
    Cs=DEFAULT_CS,
    n_splits: int = 4,
    seed: int = 0,
    max_iter: int = 2000,
) -> dict[str, Any]:
    """Cross-validated choice (or any class label) decoding, MtM protocol, nested CV.

    ``features``: ``(trials, F)`` (extra trailing axes, e.g. ``(trials, bins,
    neurons)``, are flattened into F); ``labels``: ``(trials,)`` class labels.
    Model: ``StandardScaler`` + L2 ``LogisticRegression``.  Outer loop:
    ``StratifiedKFold(n_splits, shuffle, seed)``; on each outer training fold a
    ``GridSearchCV`` over ``Cs`` with an inner stratified ``n_splits``-fold CV
    picks C, is refit on the whole outer training fold and predicts the outer
    test fold.  Scores are computed on the pooled out-of-fold predictions.

    Returns dict: ``accuracy``, ``balanced_accuracy`` (out-of-fold, all
    trials), ``fold_accuracy`` (list), ``best_C`` (list, one per outer fold),
    ``chance`` (majority-class fraction), ``n_trials``, ``predictions``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = _check_features(features)
    y = np.asarray(labels)
    if x.ndim < 2 or y.shape != (x.shape[0],):
        raise ValueError(f"features {x.shape} must be (trials, F...) and labels (trials,), got labels {y.shape}")
    if y.dtype.kind == "f" and np.isnan(y).any():
        raise ValueError(f"labels contain NaN at trials {np.flatnonzero(np.isnan(y))[:10].tolist()}")
    x = x.reshape(x.shape[0], -1)
    classes, class_counts = np.unique(y, return_counts=True)
    if classes.size < 2:
        raise ValueError(f"decode_choice needs at least 2 classes, got {classes.tolist()}")
    smallest = int(class_counts.min())
    # the smallest class must fill every outer test fold and, inside each outer
    # training fold, every inner fold
    if smallest < n_splits or smallest - math.ceil(smallest / n_splits) < n_splits:
        raise ValueError(
            f"decode_choice: class counts {dict(zip(classes.tolist(), class_counts.tolist()))} too small for "
            f"nested {n_splits}-fold stratified CV"
        )
    outer = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    pred = np.empty_like(y)
    fold_acc, best_c = [], []
    for train, test in outer.split(x, y):
        search = GridSearchCV(
            make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter)),
            {"logisticregression__C": list(np.asarray(Cs, dtype=float))},
            cv=StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed),
            scoring="accuracy",
        )
        search.fit(x[train], y[train])
        pred[test] = search.predict(x[test])
        fold_acc.append(float(np.mean(pred[test] == y[test])))
        best_c.append(float(search.best_params_["logisticregression__C"]))
    return {
        "accuracy": float(np.mean(pred == y)),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
        "fold_accuracy": fold_acc,
        "best_C": best_c,
        "chance": float(class_counts.max() / y.size),
        "n_trials": int(y.size),
        "predictions": pred,
    }


def _balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    """Mean over the classes present in ``y`` of their recall (sklearn's definition, without its warning
    when a predicted class is absent from ``y``)."""
    classes, inv = np.unique(y, return_inverse=True)
    hit = (pred == y).astype(np.float64)
    return float((np.bincount(inv.ravel(), weights=hit, minlength=classes.size) / np.bincount(inv.ravel())).mean())


def _class_indices(train_y, eval_y) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(classes, train indices, eval indices): labels of any values (e.g. 0.2 / 0.8) as indices into the sorted
    train classes.  ValueError when train holds one class or eval holds a class train lacks (counts named)."""
    yt, ye = np.asarray(train_y), np.asarray(eval_y)
    for name, y in (("train", yt), ("eval", ye)):
        if y.ndim != 1:
            raise ValueError(f"{name} labels must be (trials,), got shape {y.shape}")
        if y.dtype.kind == "f" and np.isnan(y).any():
            raise ValueError(f"{name} labels contain NaN at trials {np.flatnonzero(np.isnan(y))[:10].tolist()}")
    classes, yt_idx = np.unique(yt, return_inverse=True)
    if classes.size < 2:
        raise ValueError(f"the train labels hold {classes.size} class(es) {classes.tolist()}; a decoder needs 2")
    pos = np.clip(np.searchsorted(classes, ye), 0, classes.size - 1)
    unseen = classes[pos] != ye
    if unseen.any():
        extra, n = np.unique(ye[unseen], return_counts=True)
        raise ValueError(f"eval labels {dict(zip(extra.tolist(), n.tolist()))} (value: trials) are absent from the "
                         f"train labels {classes.tolist()}")
    return classes, yt_idx.ravel(), pos


def decode_choice_split(
    train_x,
    train_y,
    eval_x,
    eval_y,
    *,
    Cs=DEFAULT_CS,
    n_splits: int = 4,
    seed: int = 0,
    max_iter: int = 2000,
) -> dict[str, Any]:
    """Class-label decoding fitted on the train split only, scored on the (unseen) eval trials.

    ``train_x``: ``(n_train, F...)``, ``eval_x``: ``(n_eval, F...)`` trial features (trailing axes are
    flattened into F, equal in both); ``train_y`` / ``eval_y``: ``(n_train,)`` / ``(n_eval,)`` labels of any
    values (e.g. -1/+1 choice, 0.2/0.8 block prior).  Model: ``StandardScaler`` + L2 ``LogisticRegression``;
    C from ``Cs`` by ``StratifiedKFold(n_splits, shuffle, seed)`` CV accuracy over the train trials only,
    refit on all of them, then applied to the eval trials.

    Returns dict: ``accuracy``, ``balanced_accuracy`` (mean recall over the classes present in eval) of the
    eval predictions; ``chance`` (eval accuracy of always predicting the majority class of the **train**
    labels); ``best_C``; ``cv_accuracy`` (inner CV accuracy at ``best_C``); ``n_train``, ``n_eval``;
    ``predictions`` ``(n_eval,)`` in the label values.  ValueError: one train class, an eval class absent
    from train, or a train class with fewer than ``n_splits`` trials (the counts are in the message).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    xt, xe = _check_features(train_x), _check_features(eval_x)
    if xt.ndim < 2 or xt.shape[1:] != xe.shape[1:] or xe.shape[0] == 0:
        raise ValueError(f"train features {xt.shape} and eval features {xe.shape} must be (trials, F...) with "
                         "the same F and at least one eval trial")
    classes, yt, ye = _class_indices(train_y, eval_y)
    if yt.size != xt.shape[0] or ye.size != xe.shape[0]:
        raise ValueError(f"labels ({yt.size} train, {ye.size} eval) and features ({xt.shape[0]}, {xe.shape[0]}) "
                         "disagree on the number of trials")
    counts = np.bincount(yt, minlength=classes.size)
    if counts.min() < n_splits:
        raise ValueError(f"decode_choice_split: train class counts {dict(zip(classes.tolist(), counts.tolist()))} "
                         f"too small for {n_splits}-fold stratified CV (each class needs >= {n_splits} trials)")
    search = GridSearchCV(
        make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter)),
        {"logisticregression__C": list(np.asarray(Cs, dtype=float))},
        cv=StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed),
        scoring="accuracy",
        refit=True,
    )
    search.fit(xt.reshape(xt.shape[0], -1), yt)
    pred = search.predict(xe.reshape(xe.shape[0], -1))
    return {
        "accuracy": float(np.mean(pred == ye)),
        "balanced_accuracy": _balanced_accuracy(ye, pred),
        "chance": float(np.mean(ye == int(np.argmax(counts)))),
        "best_C": float(search.best_params_["logisticregression__C"]),
        "cv_accuracy": float(search.best_score_),
        "n_train": int(yt.size),
        "n_eval": int(ye.size),
        "predictions": classes[pred],
    }


def ridge_fit(x, y, alphas) -> tuple[np.ndarray, np.ndarray]:
    """Ridge regression for several penalties at once (intercept not penalised).

    ``x``: ``(samples, F)``, ``y``: ``(samples,)`` or ``(samples, K)``;
    minimises ``||y - x w - b||^2 + alpha ||w||^2`` (sklearn ``Ridge``
    convention).  ``alpha == 0`` is ordinary least squares through the
    pseudo-inverse (minimum-norm solution when ``x`` is rank deficient).
    Returns ``coef`` ``(len(alphas), F[, K])`` and ``intercept``
    ``(len(alphas)[, K])``.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    a = np.asarray(alphas, dtype=np.float64).ravel()
    if (a < 0).any():
        raise ValueError(f"alphas must be >= 0, got {a[a < 0][0]}")
    x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - x_mean, y - y_mean
    evals, evecs = np.linalg.eigh(xc.T @ xc)
    evals = np.clip(evals, 0.0, None)
    tol = max(float(evals.max(initial=0.0)), 1.0) * x.shape[1] * np.finfo(np.float64).eps * 10
    proj = evecs.T @ (xc.T @ yc)  # (F,) or (F, K)
    denom = evals[None, :] + a[:, None]  # (A, F)
    inv = np.divide(1.0, denom, out=np.zeros_like(denom), where=denom > tol)
    if proj.ndim == 1:
        coef = (inv * proj[None, :]) @ evecs.T  # (A, F)
        intercept = y_mean - coef @ x_mean
    else:
        coef = np.einsum("fg,ag,gk->afk", evecs, inv, proj)
        intercept = y_mean[None, :] - np.einsum("afk,f->ak", coef, x_mean)
    return coef, intercept


def _trial_folds(n_trials: int, n_splits: int, rng: np.random.Generator) -> np.ndarray:
    fold = np.empty(n_trials, dtype=np.int64)
    for k, part in enumerate(np.array_split(rng.permutation(n_trials), n_splits)):
        fold[part] = k
    return fold


def _ridge_cv_sse(x: np.ndarray, y: np.ndarray, folds: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """(A,) held-out squared error of each alpha summed over the folds of a trial-wise CV (one
    :func:`ridge_fit` of every alpha per fold).  ``x``: ``(trials, bins, F)``, ``y``: ``(trials, bins)``,
    ``folds``: ``(trials,)`` fold index of each trial."""
    n_feat = x.shape[-1]
    sse = np.zeros(alphas.size)
    for j in np.unique(folds):  # one step per fold
        tr, va = folds != j, folds == j
        coef, icpt = ridge_fit(x[tr].reshape(-1, n_feat), y[tr].ravel(), alphas)
        val_pred = x[va].reshape(-1, n_feat) @ coef.T + icpt[None, :]  # (samples, A)
        sse += ((val_pred - y[va].reshape(-1, 1)) ** 2).sum(axis=0)
    return sse


def _check_per_bin(features, target, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Checked ``(trials, bins, F)`` features and ``(trials, bins)`` finite target of one split."""
    x = _check_features(features)
    y = np.asarray(target, dtype=np.float64)
    if x.ndim != 3 or y.shape != x.shape[:2]:
        raise ValueError(f"{name}: features must be (trials, bins, F) and target (trials, bins); got {x.shape}, "
                         f"{y.shape}")
    if not np.isfinite(y).all():
        bad = np.flatnonzero(~np.isfinite(y).all(axis=1))
        raise ValueError(f"{name}: target has non-finite values in trials {bad[:10].tolist()}")
    return x, y


def decode_regression(
    features,
    target,
    *,
    alphas=DEFAULT_ALPHAS,
    n_splits: int = 4,
    seed: int = 0,
) -> dict[str, Any]:
    """Cross-validated ridge decoding of a per-bin behaviour, split by trial, nested CV.

    ``features``: ``(trials, bins, F)`` per-bin predictors (e.g. predicted
    rates); ``target``: ``(trials, bins)`` per-bin behaviour (e.g. whisker
    motion energy, wheel speed), no NaN.  A single linear map from the F
    features of a bin to the target of that bin (plus intercept) is fitted.
    Trials are shuffled (``seed``) into ``n_splits`` outer folds; on each outer
    training set alpha is chosen from ``alphas`` by an inner ``n_splits``-fold
    CV over its trials (minimum held-out squared error), refit on the outer
    training set and applied to the outer test trials.

    Returns dict: ``r2`` (pooled over trials x bins of the out-of-fold
    predictions, baseline = mean of all targets), ``fold_r2`` (list),
    ``best_alpha`` (list), ``predictions`` ``(trials, bins)``.
    """
    x = _check_features(features)
    y = np.asarray(target, dtype=np.float64)
    if x.ndim != 3 or y.shape != x.shape[:2]:
        raise ValueError(f"features must be (trials, bins, F) and target (trials, bins); got {x.shape}, {y.shape}")
    if not np.isfinite(y).all():
        bad_trials = np.flatnonzero(~np.isfinite(y).all(axis=1))
        raise ValueError(f"target has non-finite values in trials {bad_trials[:10].tolist()}")
    n_trials, n_bins, n_feat = x.shape
    if n_trials < 2 * n_splits:
        raise ValueError(
            f"decode_regression needs at least {2 * n_splits} trials for nested {n_splits}-fold CV, got {n_trials}"
        )
    alphas = np.asarray(alphas, dtype=np.float64).ravel()
    rng = np.random.default_rng(seed)
    outer = _trial_folds(n_trials, n_splits, rng)
    pred = np.empty_like(y)
    fold_r2, best_alpha = [], []
    for k in range(n_splits):
        train = np.flatnonzero(outer != k)
        test = np.flatnonzero(outer == k)
        sse = _ridge_cv_sse(x[train], y[train], _trial_folds(train.size, n_splits, rng), alphas)
        a_best = alphas[int(np.argmin(sse))]
        coef, icpt = ridge_fit(x[train].reshape(-1, n_feat), y[train].ravel(), [a_best])
        pred[test] = (x[test] @ coef[0] + icpt[0])
        yt = y[test]
        ss_tot = ((yt - yt.mean()) ** 2).sum()
        fold_r2.append(float(1.0 - ((yt - pred[test]) ** 2).sum() / ss_tot) if ss_tot > 0 else float("nan"))
        best_alpha.append(float(a_best))
    ss_tot = ((y - y.mean()) ** 2).sum()
    if ss_tot <= 0:
        raise ValueError("decode_regression: target is constant, R2 undefined")
    return {
        "r2": float(1.0 - ((y - pred) ** 2).sum() / ss_tot),
        "fold_r2": fold_r2,
        "best_alpha": best_alpha,
        "predictions": pred,
    }


def decode_regression_split(
    train_x,
    train_y,
    eval_x,
    eval_y,
    *,
    alphas=DEFAULT_ALPHAS,
    n_splits: int = 4,
    seed: int = 0,
) -> dict[str, Any]:
    """Per-bin ridge decoding fitted on the train split only, scored on the (unseen) eval trials.

    ``train_x``: ``(n_train, bins, F)``, ``eval_x``: ``(n_eval, bins', F)`` per-bin predictors;
    ``train_y`` / ``eval_y``: ``(n_train, bins)`` / ``(n_eval, bins')`` per-bin behaviour (its own units,
    e.g. wheel speed), no NaN.  One linear map from a bin's F features to its target (plus intercept).  alpha
    from ``alphas`` by ``n_splits``-fold CV over the train **trials** (trials shuffled by ``seed``, minimum
    held-out squared error), refit on every train trial, applied to the eval trials.

    Returns dict: ``r2`` (pooled over eval trials x bins, baseline = the mean of the eval targets),
    ``best_alpha``, ``cv_mse`` ``(len(alphas),)`` (held-out mean squared error of each alpha in the train CV),
    ``n_train``, ``n_eval``, ``predictions`` ``(n_eval, bins')``.  ValueError: fewer than ``n_splits`` train
    trials, no eval trial, a constant eval target.
    """
    xt, yt = _check_per_bin(train_x, train_y, "train")
    xe, ye = _check_per_bin(eval_x, eval_y, "eval")
    if xt.shape[2] != xe.shape[2]:
        raise ValueError(f"train features have {xt.shape[2]} columns but eval features {xe.shape[2]}")
    if xt.shape[0] < n_splits:
        raise ValueError(f"decode_regression_split needs at least {n_splits} train trials for {n_splits}-fold CV, "
                         f"got {xt.shape[0]}")
    if xe.shape[0] == 0:
        raise ValueError("decode_regression_split: no eval trial to score")
    ss_tot = ((ye - ye.mean()) ** 2).sum()
    if ss_tot <= 0:
        raise ValueError("decode_regression_split: the eval target is constant, R2 undefined")
    alphas = np.asarray(alphas, dtype=np.float64).ravel()
    folds = _trial_folds(xt.shape[0], n_splits, np.random.default_rng(seed))
    sse = _ridge_cv_sse(xt, yt, folds, alphas)
    a_best = alphas[int(np.argmin(sse))]
    coef, icpt = ridge_fit(xt.reshape(-1, xt.shape[2]), yt.ravel(), [a_best])
    pred = xe @ coef[0] + icpt[0]
    return {
        "r2": float(1.0 - ((ye - pred) ** 2).sum() / ss_tot),
        "best_alpha": float(a_best),
        "cv_mse": sse / yt.size,
        "n_train": int(xt.shape[0]),
        "n_eval": int(xe.shape[0]),
        "predictions": pred,
    }


# --------------------------------------------------------------------------- IBL BrainWideBench (BWB) metrics
#: BWB drops units whose null rate (mean count per bin over the scored entries) is below this
BWB_MIN_NULL_RATE = 1e-9


def poisson_d2(rates, counts, *, mask=None, reduce: str = "mean"):
    """Poisson deviance explained (pseudo-R2, "D2") per unit, as IBL BrainWideBench defines it.

    For unit ``i`` over its evaluated entries::

        D2_i = 1 - (N_pred - N_sat) / (N_null - N_sat)

    where ``N_*`` are Poisson negative log-likelihoods (nats) of the model's ``rates``, of the saturated model
    (rate = the observed counts) and of the null model (the unit's mean count per bin over its evaluated
    entries).  ``N - N_sat`` is computed as the Poisson deviance / 2, ``sum(r - n + n log(n / r))`` (0 log 0 = 0),
    so the ``log n!`` terms, which cancel, are never formed.  Predicted rates are floored at 1e-9 (as in
    :func:`bits_per_spike`).  1 = perfect prediction, 0 = no better than the unit's mean rate, < 0 worse.

    Units are **dropped** (NaN with ``reduce="none"``, left out of the mean) when their null rate is below
    :data:`BWB_MIN_NULL_RATE` (no spike: BWB drops them, NLB's bits/spike keeps and penalises them), when they
    have no evaluated entry, or when the null deviance ``N_null - N_sat`` is below 1e-9 nats (every evaluated
    count equal: D2 undefined; BWB drops these too).

    Parameters
    ----------
    rates, counts : array (..., neurons)
        Predicted expected counts per bin (not log-rates, not Hz) and observed spike counts per bin.
    mask : bool array broadcastable to ``counts.shape``, optional
        Evaluate only these entries (module doc); the null rate of unit ``i`` is its mean over them.
    reduce : ``"mean"`` | ``"none"``
        ``"mean"``: the mean over the kept units (float; ``ValueError`` when no unit is kept);
        ``"none"``: the per-unit values, array ``(neurons,)``, NaN for dropped units.
    """
    if reduce not in ("mean", "none"):
        raise ValueError(f"poisson_d2: reduce={reduce!r} must be 'mean' or 'none'")
    from scipy.special import xlogy

    r, n, m = _prepare(rates, counts, mask)
    axes = _leading_axes(n.ndim)
    nn = np.where(m, n, 0.0)
    support = m.sum(axis=axes)
    null = _masked_mean_per_neuron(n, m)  # (neurons,) mean count per bin over the evaluated entries
    rr = np.where(m, np.maximum(r, RATE_FLOOR), 1.0)
    mu = np.where(m, np.maximum(np.broadcast_to(null, n.shape), RATE_FLOOR), 1.0)
    dev_pred = np.where(m, rr - nn + xlogy(nn, nn / rr), 0.0).sum(axis=axes)  # N_pred - N_sat
    dev_null = np.where(m, mu - nn + xlogy(nn, nn / mu), 0.0).sum(axis=axes)  # N_null - N_sat
    keep = (support > 0) & (null >= BWB_MIN_NULL_RATE) & (dev_null >= 1e-9)
    out = np.full(null.shape, np.nan)
    out[keep] = 1.0 - dev_pred[keep] / dev_null[keep]
    if reduce == "none":
        return out
    if not keep.any():
        raise ValueError("poisson_d2: no unit to score (every unit is silent, constant or has no evaluated entry)")
    return float(out[keep].mean())


def bits_per_spike_bwb(rates, counts, *, mask=None) -> float:
    """Bits per spike pooled over units as IBL BrainWideBench scores a recording: :func:`bits_per_spike` (NLB
    formula, null = each unit's mean count per bin over the evaluated entries) over the units whose null rate is
    at least :data:`BWB_MIN_NULL_RATE` only (units without a spike are dropped; NLB keeps them, and a model
    that gives them any rate is penalised there).  ``rates``, ``counts``: (..., neurons) expected counts per bin
    and observed counts; ``mask`` as in :func:`bits_per_spike`.  Returns bits/spike; ``ValueError`` when no unit
    is kept."""
    r, n, m = _prepare(rates, counts, mask)
    support = m.sum(axis=_leading_axes(n.ndim))
    keep = (support > 0) & (_masked_mean_per_neuron(n, m) >= BWB_MIN_NULL_RATE)
    if not keep.any():
        raise ValueError("bits_per_spike_bwb: no unit with a null rate >= 1e-9 in the evaluated entries")
    return bits_per_spike(r, n, mask=m & keep)


__all__ += ["poisson_d2", "bits_per_spike_bwb", "BWB_MIN_NULL_RATE"]
