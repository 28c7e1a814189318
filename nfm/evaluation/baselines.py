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
    "poisson_glm_path",
    "pca_basis",
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


# --------------------------------------------------------------------------- Poisson GLM, Newton path
#: memory of the (rows x D(D+1)/2) float32 feature-product block of :func:`poisson_glm_path` (kept when it fits)
_HESSIAN_BLOCK_BYTES = 256 * 2 ** 20
#: rows used for the Newton Hessians (a fixed random subset of them beyond this; the gradient uses every row)
HESSIAN_ROWS = 16384


class _Hessians:
    """Per-output Hessians ``(K, D, D)`` float64 of a Poisson GLM, ``(n / m) sum_{n in S} mu[n, k] xb[n] xb[n]^T``
    over a fixed random subset ``S`` of ``m = min(n, rows)`` rows (a sub-sampled Newton method: the step's
    direction is approximate, its fixed point is not, because the gradient uses every row), as one float32 GEMM
    ``mu[S]^T @ Z`` with ``Z[n] = `` the upper triangle of ``xb[n] xb[n]^T`` (``m x D(D+1)/2``), built once and
    kept when it fits :data:`_HESSIAN_BLOCK_BYTES`, else rebuilt per block of rows at each call."""

    def __init__(self, xb, rows: int = HESSIAN_ROWS, seed: int = 0):
        import torch

        n, self.D = xb.shape
        self.sel = None if n <= rows else torch.from_numpy(np.sort(np.random.default_rng(seed).permutation(n)[:rows]))
        self.xb = (xb if self.sel is None else xb[self.sel]).float()
        self.scale = n / self.xb.shape[0]
        self.iu, self.ju = torch.triu_indices(self.D, self.D)
        self.P = self.iu.numel()
        self.block = max(1, _HESSIAN_BLOCK_BYTES // (4 * self.P))
        m = self.xb.shape[0]
        self.z = self._rows(0, m) if self.block >= m else None
        self.torch = torch

    def _rows(self, a, b):
        x = self.xb[a:b]
        return x[:, self.iu] * x[:, self.ju]

    def __call__(self, mu):
        mu32 = (mu if self.sel is None else mu[self.sel]).float()
        if self.z is not None:
            flat = mu32.T @ self.z
        else:
            flat = self.torch.zeros(mu.shape[1], self.P)
            m = self.xb.shape[0]
            for a in range(0, m, self.block):  # one GEMM per block of rows
                flat += mu32[a:a + self.block].T @ self._rows(a, min(a + self.block, m))
        flat = flat.double() * self.scale
        h = self.torch.zeros(mu.shape[1], self.D, self.D, dtype=self.torch.float64)
        h[:, self.iu, self.ju] = flat
        h[:, self.ju, self.iu] = flat
        return h


def poisson_glm_path(x, y, alphas, *, tol: float = 1e-10, max_iter: int = 100, coef=None, intercept=None):
    """L2-penalised Poisson GLMs (log link) of every column of ``y`` on the same features, for each penalty of
    ``alphas`` in turn (each fit warm-started from the previous one): batched Newton steps in torch.

    Same objective as :func:`poisson_glm_fit` (sklearn ``PoissonRegressor(alpha)``): per output k,
    ``mean_n(exp(eta_nk) - y_nk eta_nk) + alpha / 2 ||w_k||^2``, ``eta = x w + b``, intercept not penalised.
    Every output's Newton system ``H_k d_k = g_k`` (``D = F + 1`` unknowns) is solved at once; the Hessians come
    from one float32 GEMM over the feature products (:class:`_Hessians`), gradients,
    objectives and the solve are float64; a backtracking (Armijo) line search per output keeps every step a
    descent.  An output stops when its Newton decrement ``g^T H^-1 g / 2`` is below ``tol``.  Cost per
    iteration ~ ``n K D^2`` flops, so project many features first (:class:`SmoothingBaseline` ``max_features``).

    Args:
        x: (n, F) features (standardised); y: (n, K) counts >= 0; alphas: penalties, fitted in the given order
            (largest first converges fastest); coef / intercept: (K, F) / (K,) warm start.
    Returns a list, one ``(coef (K, F), intercept (K,))`` float64 numpy pair per alpha.
    """
    import torch

    xt = torch.as_tensor(np.asarray(x, dtype=np.float64))
    yt = torch.as_tensor(np.asarray(y, dtype=np.float64))
    n, F = xt.shape
    K = yt.shape[1]
    xb = torch.cat([xt, torch.ones(n, 1, dtype=torch.float64)], dim=1)  # (n, D)
    D = F + 1
    w = torch.zeros(K, D, dtype=torch.float64)
    if coef is not None:
        w[:, :F] = torch.as_tensor(np.asarray(coef, dtype=np.float64))
        w[:, F] = torch.as_tensor(np.asarray(intercept, dtype=np.float64))
    else:
        w[:, F] = torch.log(torch.clamp(yt.mean(0), min=1e-8))
    hessians = _Hessians(xb)
    ymean = yt.mean(0)

    def objective(eta, y_, w_, pen):  # (n, k) linear predictors -> (k,) objectives
        eta = torch.clamp(eta, -30.0, 30.0)
        return (torch.exp(eta) - y_ * eta).mean(0) + 0.5 * (pen * w_ ** 2).sum(1)

    out = []
    for alpha in alphas:
        pen = torch.full((D,), float(alpha), dtype=torch.float64)
        pen[F] = 0.0
        active = torch.arange(K)
        for _ in range(max_iter):  # one Newton step of every unconverged output per iteration
            if active.numel() == 0:
                break
            wa = w[active]
            yt_k = yt[:, active]
            eta = xb @ wa.T
            mu = torch.exp(torch.clamp(eta, -30.0, 30.0))
            g = (mu - yt_k).T @ xb / n + pen * wa  # (k, D)
            h = hessians(mu) / n
            h += torch.diag(pen)
            h[:, F, F] += 1e-12 * (1.0 + ymean[active])  # an all-silent output keeps a solvable system
            d = torch.linalg.solve(h, g.unsqueeze(-1)).squeeze(-1)
            dec = (g * d).sum(1)  # Newton decrement^2
            f0 = objective(eta, yt_k, wa, pen)
            step = torch.ones(active.numel(), dtype=torch.float64)
            ok = torch.zeros(active.numel(), dtype=torch.bool)
            for _ls in range(40):  # backtracking: halve the step of the outputs whose objective did not drop
                trial = wa - step[:, None] * d
                f1 = objective(xb @ trial.T, yt_k, trial, pen)
                ok = f1 <= f0 - 0.25 * step * dec + 1e-15 * torch.abs(f0)
                if bool(ok.all()):
                    break
                step = torch.where(ok, step, 0.5 * step)
            w[active] = torch.where(ok[:, None], wa - step[:, None] * d, wa)
            done = (dec / 2 <= tol) | ~ok
            active = active[~done]
        if active.numel():
            import warnings

            warnings.warn(f"poisson_glm_path: {active.numel()} of {K} outputs not converged after {max_iter} Newton "
                          f"steps at alpha={alpha} (Newton decrement above tol={tol})", RuntimeWarning, stacklevel=2)
        out.append((w[:, :F].numpy().copy(), w[:, F].numpy().copy()))
    return out


def pca_basis(x, n_components: int) -> np.ndarray:
    """``(F, r)`` orthonormal basis of the top ``r = min(n_components, F)`` principal directions of ``x`` (n, F)
    (already centred, e.g. standardised): eigenvectors of ``x^T x`` by decreasing eigenvalue, each column's sign
    fixed so that its largest-magnitude entry is positive (a deterministic basis)."""
    x = np.asarray(x, dtype=np.float64)
    evals, evecs = np.linalg.eigh(x.T @ x)
    basis = evecs[:, ::-1][:, : min(int(n_components), x.shape[1])]
    flip = np.sign(basis[np.abs(basis).argmax(axis=0), np.arange(basis.shape[1])])
    return basis * np.where(flip == 0, 1.0, flip)


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


#: held-in neurons above which :class:`SmoothingBaseline` regresses on principal components (``max_features``)
DEFAULT_MAX_FEATURES = 64


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
    max_features : int or None
        With more held-in neurons than this, the standardised smoothed held-in
        activity is projected on its top ``max_features`` principal directions
        (fitted on the training trials, :func:`pca_basis`) before the GLM: the
        L2 problem restricted to that subspace (unwhitened scores, so the
        penalty means the same), as NLB's baseline regresses on smoothed
        held-in activity.  ``None``: every held-in neuron is a feature.
    solver : {"newton", "lbfgs"}
        ``"newton"``: :func:`poisson_glm_path` (batched Newton, torch; the
        default); ``"lbfgs"``: :func:`poisson_glm_fit` (scipy, the reference).

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
        max_features: int | None = DEFAULT_MAX_FEATURES,
        solver: str = "newton",
    ):
        if method not in ("poisson", "ridge"):
            raise ValueError(f"method must be 'poisson' or 'ridge', got {method!r}")
        if solver not in ("newton", "lbfgs"):
            raise ValueError(f"solver must be 'newton' or 'lbfgs', got {solver!r}")
        if max_features is not None and int(max_features) < 1:
            raise ValueError(f"max_features must be >= 1 or None, got {max_features!r}")
        self.max_features = None if max_features is None else int(max_features)
        self.solver = solver
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
            z = (x - self.x_mean_) / self.x_scale_
            big = self.max_features is not None and z.shape[1] > self.max_features
            self.basis_ = pca_basis(z, self.max_features) if big else None
        elif x.shape[1] != self.x_mean_.shape[0]:
            raise ValueError(f"held-in neurons {x.shape[1]} != {self.x_mean_.shape[0]} seen in fit")
        else:
            z = (x - self.x_mean_) / self.x_scale_
        return z if self.basis_ is None else z @ self.basis_

    def _glm(self, x, y, alphas, coef=None, intercept=None) -> list[tuple[np.ndarray, np.ndarray]]:
        """One ``(coef, intercept)`` per penalty (in the given order, warm-started) with the chosen solver."""
        if self.solver == "newton":
            return poisson_glm_path(x, y, alphas, coef=coef, intercept=intercept)
        out = []
        for a in alphas:
            coef, intercept = poisson_glm_fit(x, y, a, max_iter=self.max_iter, coef=coef, intercept=intercept)
            out.append((coef, intercept))
        return out

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
                c, b = self._glm(x, y[:, active], [self.alpha])[0]
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
               method: str = "poisson", **options) -> "SmoothingBaseline":
        """Choose the kernel width and penalty by ``n_folds``-fold cross-validation over the given (training)
        trials, then refit on all of them.

        The CV score is the held-out-fold Poisson log-likelihood summed over folds, trials, bins and neurons
        (the bits/spike numerator, up to a constant).  For each width and fold, the penalties are fitted from
        the largest down, each warm-started from the previous.  ``cv_scores_`` keeps ``{(sigma_bins, alpha):
        score}``; ``sigma_bins`` / ``alpha`` hold the choice.  ``options`` (``max_features``, ``solver``, ...) go
        to the baseline.  Never pass evaluation trials here.
        """
        hin = _counts3(heldin_counts, "heldin_counts")
        hout = _counts3(heldout_counts, "heldout_counts")
        n = hin.shape[0]
        sigmas = [float(x) for x in sigmas_bins]
        alphas = sorted((float(x) for x in alphas), reverse=True)
        if n < 2 * n_folds or len(sigmas) * len(alphas) == 1:  # nothing to choose, or too few trials to CV
            out = cls(sigma_bins=sigmas[0], alpha=alphas[-1], method=method, **options).fit(hin, hout)
            out.cv_scores_ = {}
            return out
        folds = np.array_split(np.random.default_rng(seed).permutation(n), n_folds)
        scores = {(sb, a): 0.0 for sb in sigmas for a in alphas}
        for sb in sigmas:
            for f in folds:  # fit on the other folds, score this one
                train = np.setdiff1d(np.arange(n), f)
                m = cls(sigma_bins=sb, method=method, **options)
                x = m._features(hin[train], fit=True)
                y = hout[train].reshape(-1, hout.shape[-1])
                xt = m._features(hin[f], fit=False)
                yt = hout[f].reshape(-1, hout.shape[-1])
                active = y.sum(axis=0) > 0
                path = m._glm(x, y[:, active], alphas) if method == "poisson" else None
                for i, a in enumerate(alphas):
                    if method == "poisson":
                        coef, icpt = path[i]
                        eta = xt @ coef.T + icpt
                    else:
                        m.alpha = a
                        m.fit(hin[train], hout[train])
                        eta = np.log(np.maximum(m.predict(hin[f]).reshape(-1, hout.shape[-1])[:, active], 1e-300))
                    r = np.exp(np.clip(eta, -30.0, 30.0))
                    r = np.maximum(r, 1e-9)
                    scores[(sb, a)] += float((yt[:, active] * np.log(r) - r).sum())  # silent ones: same for all
        best = max(scores, key=scores.get)
        out = cls(sigma_bins=best[0], alpha=best[1], method=method, **options).fit(hin, hout)
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
