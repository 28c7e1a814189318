"""Reference baselines for spike-count prediction (no neural-network model).

Shapes: ``(trials, bins, neurons)`` spike counts per bin; predicted rates are
expected counts per bin (not Hz), as in :mod:`nfm.evaluation.metrics`.

* **Null model**: each neuron's mean count per bin over the training trials
  and bins.  Scored on the very data it was fitted on it gives exactly 0
  bits/spike (it *is* the NLB null).
* **NLB smoothing baseline** (co-smoothing): Gaussian-smooth the held-in
  neurons' spikes along time, then map the smoothed held-in activity of a bin
  to each held-out neuron's count in that bin with a Poisson GLM (log link,
  L2 ``alpha`` on standardised features, the objective of
  ``sklearn.linear_model.PoissonRegressor``; the default) or with ridge
  regression on log smoothed held-out rates (``method="ridge"``).  Fitted on
  training trials, applied to test trials.  The GLM of every held-out neuron
  is fitted at once (:func:`poisson_glm_fit`, batched Newton steps).
  :meth:`SmoothingBaseline.fit_cv` chooses the kernel width and ``alpha`` by
  K-fold cross-validation over the training trials only.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.signal import lfilter

from nfm.evaluation.metrics import co_bps, ridge_fit

__all__ = [
    "poisson_glm_fit",
    "null_rates",
    "predict_null",
    "sigma_ms_to_bins",
    "smooth_spikes",
    "SmoothingBaseline",
    "smoothing_co_bps",
    "SameFrameRidge",
    "ConditionPSTH",
    "RIDGE_ALPHAS",
]


def _counts3(counts, name: str) -> np.ndarray:
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 3:
        raise ValueError(f"{name} must be (trials, bins, neurons), got shape {c.shape}")
    bad = ~np.isfinite(c) | (c < 0)
    if bad.any():
        raise ValueError(f"{name} must be finite and >= 0; found {c[bad][0]!r} ({int(bad.sum())} entries)")
    return c


# --------------------------------------------------------------------------- null
def null_rates(train_counts) -> np.ndarray:
    """Null model fit: each neuron's mean count per bin over all training trials and bins.

    ``train_counts``: ``(trials, bins, neurons)`` or ``(samples, neurons)``.
    Returns ``(neurons,)`` expected counts per bin.
    """
    c = np.asarray(train_counts, dtype=np.float64)
    if c.ndim < 2:
        raise ValueError(f"train_counts must be (..., neurons), got shape {c.shape}")
    if not np.isfinite(c).all() or (c < 0).any():
        raise ValueError("train_counts must be finite and >= 0")
    return c.reshape(-1, c.shape[-1]).mean(axis=0)


def predict_null(rates, like) -> np.ndarray:
    """Broadcast null ``rates`` ``(neurons,)`` to the shape of ``like`` ``(..., neurons)``."""
    r = np.asarray(rates, dtype=np.float64)
    shape = np.shape(like)
    if r.ndim != 1 or r.shape[0] != shape[-1]:
        raise ValueError(f"null rates shape {r.shape} does not match neurons axis of {shape}")
    return np.broadcast_to(r, shape).copy()


# --------------------------------------------------------------------------- Poisson GLM
def poisson_glm_fit(x, y, alpha: float, max_iter: int = 1000, tol: float = 1e-7, coef=None, intercept=None):
    """L2-penalised Poisson GLMs (log link) of every column of ``y`` on the same features, fitted together.

    Minimises, per output k, ``mean_n(exp(eta_nk) - y_nk eta_nk) + alpha / 2 ||w_k||^2`` with
    ``eta = x w + b`` (the intercept is not penalised): sklearn ``PoissonRegressor(alpha)``'s objective.  The
    outputs are independent problems; their sum is minimised in one L-BFGS run (cost per iteration: two
    (n, F) x (F, K) products, so it scales to hundreds of features).

    Args:
        x: (n, F) features (standardise them first); y: (n, K) counts >= 0.
        alpha: L2 penalty; tol: gradient tolerance; coef / intercept: (K, F) / (K,) warm start.
    Returns ``coef`` (K, F) and ``intercept`` (K,).
    """
    from scipy.optimize import minimize

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n, F = x.shape
    K = y.shape[1]
    xb = np.concatenate([x, np.ones((n, 1))], axis=1)  # (n, F + 1)
    w0 = np.zeros((K, F + 1))
    if coef is not None:
        w0[:, :F], w0[:, F] = coef, intercept
    else:
        w0[:, F] = np.log(np.maximum(y.mean(axis=0), 1e-8))
    pen = np.full(F + 1, float(alpha))
    pen[F] = 0.0

    def objective(flat):
        w = flat.reshape(K, F + 1)
        eta = np.clip(xb @ w.T, -30.0, 30.0)
        mu = np.exp(eta)
        f = (mu - y * eta).mean(axis=0).sum() + 0.5 * (pen * w ** 2).sum()
        return f, (((mu - y).T @ xb) / n + pen * w).ravel()

    res = minimize(objective, w0.ravel(), jac=True, method="L-BFGS-B",
                   options=dict(maxiter=max_iter, gtol=tol, ftol=1e-12))
    w = res.x.reshape(K, F + 1)
    return w[:, :F], w[:, F]


# --------------------------------------------------------------------------- smoothing
def sigma_ms_to_bins(sigma_ms: float, bin_size_s: float) -> float:
    """Convert a Gaussian kernel width in milliseconds to bins of ``bin_size_s`` seconds."""
    if sigma_ms <= 0 or bin_size_s <= 0:
        raise ValueError(f"sigma_ms ({sigma_ms}) and bin_size_s ({bin_size_s}) must be > 0")
    return float(sigma_ms) / (1000.0 * float(bin_size_s))


def smooth_spikes(counts, sigma_bins: float, *, causal: bool = False, truncate: float = 4.0) -> np.ndarray:
    """Gaussian-smooth spike counts along the bins axis, within each trial.

    ``counts``: ``(trials, bins, neurons)``; ``sigma_bins``: kernel s.d. in
    bins (see :func:`sigma_ms_to_bins`).  Acausal (default): a unit-sum
    Gaussian, trial edges reflected (``scipy.ndimage.gaussian_filter1d``,
    ``mode="reflect"``), so a constant input stays constant.  ``causal``: a
    half Gaussian over the current and past ``truncate * sigma`` bins,
    normalised to unit sum, zero before the trial start.  Returns float64,
    same shape, counts per bin.
    """
    c = _counts3(counts, "counts")
    if not sigma_bins > 0:
        raise ValueError(f"sigma_bins must be > 0, got {sigma_bins}")
    if not causal:
        return gaussian_filter1d(c, sigma=float(sigma_bins), axis=1, mode="reflect", truncate=truncate)
    lags = np.arange(int(np.ceil(truncate * sigma_bins)) + 1)
    kernel = np.exp(-0.5 * (lags / sigma_bins) ** 2)
    kernel /= kernel.sum()
    return lfilter(kernel, [1.0], c, axis=1)


class SmoothingBaseline:
    """NLB smoothing baseline for co-smoothing (held-in -> held-out neurons).

    Parameters
    ----------
    sigma_bins : float
        Gaussian kernel s.d. in bins (NLB uses 50 ms; ``sigma_ms_to_bins``).
    alpha : float
        L2 penalty of the GLM (``PoissonRegressor(alpha=...)``, features are
        standardised on the training set) or of the ridge regression.
    method : {"poisson", "ridge"}
        ``"poisson"``: a Poisson GLM per held-out neuron, log link (:func:`poisson_glm_fit`).
        ``"ridge"``: one vectorised ridge fit of ``log(smoothed held-out +
        log_floor)`` on the standardised smoothed held-in activity, rates =
        exp(prediction), each intercept then shifted so that the mean
        predicted rate equals the neuron's mean training count.
    causal : bool
        Use a causal half-Gaussian kernel (see :func:`smooth_spikes`).
    log_floor : float
        Counts per bin added before the log in the ridge method (0.05 worked
        best of 1e-3..0.5 on simulated 0.1-0.6 counts/bin data).

    A held-out neuron without a single training spike gets rate 0 (the null
    model's prediction too), which the metrics clip to 1e-9.
    """

    def __init__(
        self,
        sigma_bins: float = 2.0,
        alpha: float = 1e-3,
        method: str = "poisson",
        causal: bool = False,
        max_iter: int = 1000,
        log_floor: float = 0.05,
    ):
        if method not in ("poisson", "ridge"):
            raise ValueError(f"method must be 'poisson' or 'ridge', got {method!r}")
        self.sigma_bins = float(sigma_bins)
        self.alpha = float(alpha)
        self.method = method
        self.causal = bool(causal)
        self.max_iter = int(max_iter)
        self.log_floor = float(log_floor)
        self.coef_: np.ndarray | None = None  # (N_out, N_in) on standardised features
        self.intercept_: np.ndarray | None = None  # (N_out,)
        self.silent_: np.ndarray | None = None  # (N_out,) bool, no training spike

    def _features(self, heldin, fit: bool) -> np.ndarray:
        x = smooth_spikes(heldin, self.sigma_bins, causal=self.causal)
        x = x.reshape(-1, x.shape[-1])
        if fit:
            self.x_mean_ = x.mean(axis=0)
            std = x.std(axis=0)
            self.x_scale_ = np.where(std > 0, std, 1.0)
        elif x.shape[1] != self.x_mean_.shape[0]:
            raise ValueError(f"held-in neurons {x.shape[1]} != {self.x_mean_.shape[0]} seen in fit")
        return (x - self.x_mean_) / self.x_scale_

    def fit(self, heldin_counts, heldout_counts) -> "SmoothingBaseline":
        """Fit on training trials.

        ``heldin_counts``: ``(trials, bins, N_in)``; ``heldout_counts``:
        ``(trials, bins, N_out)``, spike counts per bin of the same trials.
        """
        hin = _counts3(heldin_counts, "heldin_counts")
        hout = _counts3(heldout_counts, "heldout_counts")
        if hin.shape[:2] != hout.shape[:2]:
            raise ValueError(f"held-in {hin.shape} and held-out {hout.shape} differ in (trials, bins)")
        x = self._features(hin, fit=True)
        y = hout.reshape(-1, hout.shape[-1])
        n_out = y.shape[1]
        self.silent_ = y.sum(axis=0) == 0
        coef = np.zeros((n_out, x.shape[1]))
        intercept = np.full(n_out, -np.inf)
        active = np.flatnonzero(~self.silent_)
        if self.method == "poisson":
            if active.size:
                c, b = poisson_glm_fit(x, y[:, active], self.alpha, max_iter=self.max_iter)
                coef[active], intercept[active] = c, b
        elif active.size:
            target = np.log(
                smooth_spikes(hout[..., active], self.sigma_bins, causal=self.causal).reshape(-1, active.size)
                + self.log_floor
            )
            c, b = ridge_fit(x, target, [self.alpha])  # (1, F, K), (1, K)
            coef[active] = c[0].T
            # exp(E[log y]) underestimates E[y]: re-fit each intercept so that the mean
            # predicted rate equals the mean training count (the Poisson-MLE intercept
            # equation for the fixed coefficients), vectorised over neurons
            pred_mean = np.exp(x @ c[0] + b[0][None, :]).mean(axis=0)
            intercept[active] = b[0] + np.log(y[:, active].mean(axis=0) / pred_mean)
        self.coef_, self.intercept_ = coef, intercept
        return self

    @classmethod
    def fit_cv(cls, heldin_counts, heldout_counts, sigmas_bins, alphas, n_folds: int = 3, seed: int = 0,
               method: str = "poisson") -> "SmoothingBaseline":
        """Choose the kernel width and penalty by ``n_folds``-fold cross-validation over the given (training)
        trials, then refit on all of them.

        The CV score is the held-out-fold Poisson log-likelihood summed over folds, trials, bins and neurons
        (the bits/spike numerator, up to a constant).  For each width and fold, the penalties are fitted from
        the largest down, each warm-started from the previous.  ``cv_scores_`` keeps ``{(sigma_bins, alpha):
        score}``; ``sigma_bins`` / ``alpha`` hold the choice.  Never pass evaluation trials here.
        """
        hin = _counts3(heldin_counts, "heldin_counts")
        hout = _counts3(heldout_counts, "heldout_counts")
        n = hin.shape[0]
        sigmas = [float(x) for x in sigmas_bins]
        alphas = sorted((float(x) for x in alphas), reverse=True)
        if n < 2 * n_folds or len(sigmas) * len(alphas) == 1:  # nothing to choose, or too few trials to CV
            out = cls(sigma_bins=sigmas[0], alpha=alphas[-1], method=method).fit(hin, hout)
            out.cv_scores_ = {}
            return out
        folds = np.array_split(np.random.default_rng(seed).permutation(n), n_folds)
        scores = {(sb, a): 0.0 for sb in sigmas for a in alphas}
        for sb in sigmas:
            for f in folds:  # fit on the other folds, score this one
                train = np.setdiff1d(np.arange(n), f)
                m = cls(sigma_bins=sb, method=method)
                x = m._features(hin[train], fit=True)
                y = hout[train].reshape(-1, hout.shape[-1])
                xt = m._features(hin[f], fit=False)
                yt = hout[f].reshape(-1, hout.shape[-1])
                active = y.sum(axis=0) > 0
                coef = icpt = None
                for a in alphas:
                    if method == "poisson":
                        coef, icpt = poisson_glm_fit(x, y[:, active], a, coef=coef, intercept=icpt)
                        eta = xt @ coef.T + icpt
                    else:
                        m.alpha = a
                        m.fit(hin[train], hout[train])
                        eta = np.log(np.maximum(m.predict(hin[f]).reshape(-1, hout.shape[-1])[:, active], 1e-300))
                    r = np.exp(np.clip(eta, -30.0, 30.0))
                    r = np.maximum(r, 1e-9)
                    scores[(sb, a)] += float((yt[:, active] * np.log(r) - r).sum())  # silent ones: same for all
        best = max(scores, key=scores.get)
        out = cls(sigma_bins=best[0], alpha=best[1], method=method).fit(hin, hout)
        out.cv_scores_ = scores
        return out

    def predict(self, heldin_counts) -> np.ndarray:
        """Predicted held-out rates (expected counts per bin), ``(trials, bins, N_out)``."""
        if self.coef_ is None:
            raise RuntimeError("SmoothingBaseline.predict called before fit")
        hin = _counts3(heldin_counts, "heldin_counts")
        x = self._features(hin, fit=False)
        with np.errstate(over="ignore"):
            rates = np.exp(x @ self.coef_.T + self.intercept_[None, :])
        return rates.reshape(hin.shape[0], hin.shape[1], -1)


def smoothing_co_bps(
    train_heldin, train_heldout, test_heldin, test_heldout, **kwargs
) -> dict:
    """Fit :class:`SmoothingBaseline` on train trials and score co-bps on test trials.

    All inputs ``(trials, bins, neurons)``; ``kwargs`` go to the baseline.
    The null model is the held-out neurons' mean over the test trials (NLB).
    Returns ``{"co_bps": float, "rates": (test trials, bins, N_out), "model": baseline}``.
    """
    model = SmoothingBaseline(**kwargs).fit(train_heldin, train_heldout)
    rates = model.predict(test_heldin)
    out = np.asarray(test_heldout, dtype=np.float64)
    score = co_bps(rates, out, np.arange(out.shape[-1]))
    return {"co_bps": score, "rates": rates, "model": model}


# --------------------------------------------------------------------------- 2-photon baselines
#: ridge penalties searched by :class:`SameFrameRidge` (CV on the training trials only)
RIDGE_ALPHAS = (1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3, 1e4)


def _fill_invalid(x: np.ndarray, valid: np.ndarray | None, fill: np.ndarray) -> np.ndarray:
    return x if valid is None else np.where(valid, x, fill)


class SameFrameRidge:
    """2-photon co-smoothing analogue: each held-out ROI's activity in a bin predicted by ridge regression from
    the held-in ROIs in the *same* bin (frame), fitted on the training trials.

    The penalty is chosen by ``n_splits``-fold CV over training *trials* (pooled squared error), then refitted
    on all of them; missing entries (bad frames) are filled with the ROI's training mean before fitting and
    never scored.  The predictive variance of each target ROI is its training residual variance.
    Arrays: ``x`` (R, T, F) held-in activity, ``y`` (R, T, K) held-out activity.
    """

    def __init__(self, alphas=RIDGE_ALPHAS, n_splits: int = 4, seed: int = 0):
        self.alphas, self.n_splits, self.seed = tuple(alphas), int(n_splits), int(seed)

    def fit(self, x, y, x_valid=None, y_valid=None) -> "SameFrameRidge":
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        self.x_mean = _masked_mean(x, x_valid)
        self.y_mean = _masked_mean(y, y_valid)
        x = _fill_invalid(x, x_valid, self.x_mean)
        y = _fill_invalid(y, y_valid, self.y_mean)
        R = x.shape[0]
        folds = np.random.default_rng(self.seed).permutation(R) % min(self.n_splits, max(R, 2))
        err = np.zeros(len(self.alphas))
        for f in np.unique(folds):  # one fit of every penalty per fold
            tr, te = folds != f, folds == f
            if tr.sum() == 0 or te.sum() == 0:
                continue
            coef, icpt = ridge_fit(x[tr].reshape(-1, x.shape[2]), y[tr].reshape(-1, y.shape[2]), self.alphas)
            xt, yt = x[te].reshape(-1, x.shape[2]), y[te].reshape(-1, y.shape[2])
            pred = np.einsum("nf,afk->ank", xt, coef) + icpt[:, None, :]
            err += ((pred - yt[None]) ** 2).sum(axis=(1, 2))
        self.alpha = float(self.alphas[int(np.argmin(err))])
        coef, icpt = ridge_fit(x.reshape(-1, x.shape[2]), y.reshape(-1, y.shape[2]), [self.alpha])
        self.coef, self.intercept = coef[0], icpt[0]
        resid = y - self.predict(x)
        self.var = _masked_mean(resid ** 2, y_valid)
        return self

    def predict(self, x, x_valid=None) -> np.ndarray:
        x = _fill_invalid(np.asarray(x, np.float64), x_valid, self.x_mean)
        return np.einsum("rtf,fk->rtk", x, self.coef) + self.intercept


class ConditionPSTH:
    """PSTH-by-condition predictor: a trial's activity predicted by the mean over the training trials of its
    condition (per bin and ROI); trials of a condition unseen in training (or without a label) get the training
    mean over all trials.  Predictive variance per ROI: the training residual variance around the PSTHs.
    ``fit(act (R, T, N), labels (R,) float, valid (R, T, N) | None)``; ``predict(labels (R',)) -> (R', T, N)``.
    """

    def fit(self, act, labels, valid=None) -> "ConditionPSTH":
        act = np.asarray(act, np.float64)
        labels = np.asarray(labels, np.float64)
        ok = np.ones_like(act, bool) if valid is None else np.asarray(valid, bool)
        self.grand = _masked_mean(act, ok, axis=0)  # (T, N)
        self.means: dict[float, np.ndarray] = {}
        for c in np.unique(labels[np.isfinite(labels)]):  # one step per condition
            rows = labels == c
            self.means[float(c)] = np.where(ok[rows].any(0), _masked_mean(act[rows], ok[rows], axis=0), self.grand)
        resid = act - self.predict(labels)
        self.var = _masked_mean(resid ** 2, ok)
        return self

    def predict(self, labels) -> np.ndarray:
        labels = np.asarray(labels, np.float64)
        return np.stack([self.means.get(float(c), self.grand) if np.isfinite(c) else self.grand for c in labels])


def _masked_mean(x: np.ndarray, valid: np.ndarray | None, axis=None) -> np.ndarray:
    """Mean over every axis but the last (``axis=None``) or over ``axis``, of the ``valid`` entries (0 if none)."""
    axes = tuple(range(x.ndim - 1)) if axis is None else axis
    if valid is None:
        return x.mean(axis=axes)
    s = np.where(valid, x, 0.0).sum(axis=axes)
    n = valid.sum(axis=axes)
    return np.divide(s, n, out=np.zeros_like(s, dtype=np.float64), where=n > 0)
