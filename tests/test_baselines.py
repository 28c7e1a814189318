"""Null model and NLB smoothing baseline (co-smoothing)."""
import numpy as np
import pytest
from scipy.special import gammaln

from nfm.evaluation.baselines import (
    SmoothingBaseline,
    null_rates,
    predict_null,
    sigma_ms_to_bins,
    smooth_spikes,
    smoothing_co_bps,
)
from nfm.evaluation.metrics import bits_per_spike


def nlb_bps(rates, spikes, null=None):
    """NLB formula written independently (zero rates -> 1e-9, null = mean per neuron)."""
    rates = np.array(rates, dtype=float)
    rates[rates == 0] = 1e-9
    if null is None:
        null = spikes.reshape(-1, spikes.shape[-1]).mean(axis=0)
    null = np.where(null == 0, 1e-9, null) * np.ones_like(rates)
    nll = lambda r: np.sum(r - spikes * np.log(r) + gammaln(spikes + 1.0))  # noqa: E731
    return (nll(null) - nll(rates)) / spikes.sum() / np.log(2)


def latent_world(seed=0, n_trials=80, n_bins=50, n_in=20, n_out=5):
    """Poisson counts driven by 2 smooth per-trial latents shared by all neurons."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_bins) / n_bins
    phase = rng.uniform(0, 2 * np.pi, size=(n_trials, 1, 2))
    freq = rng.uniform(1.0, 3.0, size=(n_trials, 1, 2))
    z = np.sin(2 * np.pi * freq * t[None, :, None] + phase)  # (trials, bins, 2)
    n = n_in + n_out
    loadings = rng.normal(scale=0.8, size=(2, n))
    base = np.log(rng.uniform(0.1, 0.6, size=n))
    rates = np.exp(base + z @ loadings)
    counts = rng.poisson(rates).astype(float)
    return rates, counts


def test_null_model_scores_exactly_zero_on_its_training_data():
    _, counts = latent_world(1)
    null = null_rates(counts)
    assert np.allclose(null, [counts[..., i].mean() for i in range(counts.shape[-1])])
    pred = predict_null(null, counts)
    assert pred.shape == counts.shape
    assert abs(bits_per_spike(pred, counts)) < 1e-9
    assert abs(bits_per_spike(pred, counts, pooled=False)).max() < 1e-9


def test_null_model_fitted_on_train_scored_on_test():
    _, counts = latent_world(2)
    train, test = counts[:60], counts[60:]
    pred = predict_null(null_rates(train), test)
    score = bits_per_spike(pred, test)
    assert score == pytest.approx(nlb_bps(pred, test), rel=1e-10)
    assert -0.05 < score <= 0.0  # the test mean is the best constant on test data


def test_smoothing_kernel():
    assert sigma_ms_to_bins(50.0, 0.02) == pytest.approx(2.5)
    const = np.full((2, 30, 3), 0.7)
    assert np.allclose(smooth_spikes(const, 2.0), 0.7)
    impulse = np.zeros((1, 61, 1))
    impulse[0, 30, 0] = 1.0
    out = smooth_spikes(impulse, 3.0)[0, :, 0]
    lags = np.arange(61) - 30
    assert out.sum() == pytest.approx(1.0, abs=1e-6)
    assert (out * lags**2).sum() == pytest.approx(9.0, rel=1e-3)  # variance = sigma^2
    causal = smooth_spikes(impulse, 3.0, causal=True)[0, :, 0]
    assert np.all(causal[:30] == 0) and causal[30] > causal[31] > 0
    assert causal.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="trials, bins, neurons"):
        smooth_spikes(np.zeros((5, 3)), 1.0)


@pytest.mark.parametrize("method", ["poisson", "ridge"])
def test_smoothing_baseline_cosmoothing(method):
    rates, counts = latent_world(3)
    hi, ho = slice(0, 20), slice(20, 25)
    train, test = slice(0, 60), slice(60, 80)
    res = smoothing_co_bps(
        counts[train, :, hi], counts[train, :, ho], counts[test, :, hi], counts[test, :, ho],
        sigma_bins=2.0, method=method,
    )
    assert res["rates"].shape == (20, 50, 5)
    assert res["co_bps"] == pytest.approx(nlb_bps(res["rates"], counts[test, :, ho]), rel=1e-9)
    oracle = nlb_bps(rates[test, :, ho], counts[test, :, ho])
    assert 0.05 < res["co_bps"] < oracle
    # pairing each test trial's held-in activity with another trial's held-out spikes breaks it
    model = res["model"]
    mismatched = model.predict(np.roll(counts[test, :, hi], 1, axis=0))
    assert nlb_bps(mismatched, counts[test, :, ho]) < res["co_bps"] - 0.05


def test_smoothing_baseline_silent_neuron_and_errors():
    _, counts = latent_world(4, n_trials=30, n_out=2)
    out = counts[..., 20:].copy()
    out[..., 1] = 0.0
    model = SmoothingBaseline(sigma_bins=1.5).fit(counts[..., :20], out)
    pred = model.predict(counts[..., :20])
    assert model.silent_.tolist() == [False, True]
    assert np.all(pred[..., 1] == 0) and np.all(pred[..., 0] > 0)
    with pytest.raises(ValueError, match="held-in neurons"):
        model.predict(counts[..., :19])
    with pytest.raises(ValueError, match="differ"):
        SmoothingBaseline().fit(counts[:10, :, :20], out)
    with pytest.raises(ValueError, match="method"):
        SmoothingBaseline(method="lstm")


def test_joint_poisson_glm_matches_sklearn_per_neuron():
    from sklearn.linear_model import PoissonRegressor

    from nfm.evaluation.baselines import poisson_glm_fit

    rng = np.random.default_rng(3)
    x = rng.standard_normal((3000, 12))
    w = 0.3 * rng.standard_normal((4, 12))
    y = rng.poisson(np.exp(x @ w.T - 1.5))
    for alpha in (1e-3, 0.3):
        coef, icpt = poisson_glm_fit(x, y, alpha)
        for k in range(4):
            ref = PoissonRegressor(alpha=alpha, max_iter=1000, tol=1e-10).fit(x, y[:, k])
            np.testing.assert_allclose(coef[k], ref.coef_, atol=2e-5)
            assert icpt[k] == pytest.approx(ref.intercept_, abs=2e-5)


def test_cv_picks_hyperparameters_from_training_trials_only():
    from scipy.ndimage import gaussian_filter1d

    rng = np.random.default_rng(4)

    def draw(R):  # stationary smooth latents -> 30 held-in and 6 held-out Poisson neurons, 60 bins per trial
        latent = gaussian_filter1d(rng.standard_normal((R, 60, 2)), 4.0, axis=1) * 3.0
        return (rng.poisson(np.exp(latent @ w_in.T - 0.5)), rng.poisson(np.exp(latent @ w_out.T - 0.5)))

    w_in, w_out = 0.5 * rng.standard_normal((30, 2)), 0.5 * rng.standard_normal((6, 2))
    (hin, hout), (tin, tout) = draw(60), draw(60)
    sigmas, alphas = [0.5, 3.0], [1e-2, 1e3]
    m = SmoothingBaseline.fit_cv(hin, hout, sigmas, alphas, n_folds=3)
    assert set(m.cv_scores_) == {(s, a) for s in sigmas for a in alphas}
    assert (m.sigma_bins, m.alpha) == max(m.cv_scores_, key=m.cv_scores_.get)
    test = {(s, a): smoothing_co_bps(hin, hout, tin, tout, sigma_bins=s, alpha=a)["co_bps"]
            for s in sigmas for a in alphas}  # fresh trials: what the choice should be good at
    assert test[(m.sigma_bins, m.alpha)] >= max(test.values()) - 0.05
    assert min(test.values()) < max(test.values()) - 0.1  # the grid holds bad choices to avoid
    again = SmoothingBaseline.fit_cv(hin, hout, sigmas, alphas, n_folds=3)
    assert (again.sigma_bins, again.alpha) == (m.sigma_bins, m.alpha)
