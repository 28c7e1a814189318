"""NLB-exact metrics, decoding and generation-fidelity metrics.

Expected numbers are computed here from the written formulas (math.lgamma,
explicit loops), never by calling the code under test.
"""
import math

import numpy as np
import pytest
import scipy.stats
import sklearn.linear_model
import sklearn.metrics

from nfm.evaluation import generation_metrics as gm
from nfm.evaluation.metrics import (
    bits_per_spike,
    co_bps,
    decode_choice,
    decode_choice_split,
    decode_regression,
    decode_regression_split,
    fp_bps,
    gaussian_nll,
    masked_r2,
    mean_over_neurons,
    poisson_nll,
    psth_r2,
    r2_score,
    ridge_fit,
)

LN2 = math.log(2.0)


def nlb_bits_per_spike(rates, spikes):
    """The nlb_tools formula, written independently: zero rates -> 1e-9, null = mean per neuron."""
    rates = np.array(rates, dtype=float)
    spikes = np.asarray(spikes, dtype=float)
    rates[rates == 0] = 1e-9

    def nll(r, n):
        total = 0.0
        for rv, nv in zip(r.ravel(), n.ravel()):
            total += rv - nv * math.log(rv) + math.lgamma(nv + 1.0)
        return total

    axes = tuple(range(spikes.ndim - 1))
    null = np.tile(np.mean(spikes, axis=axes, keepdims=True), spikes.shape[:-1] + (1,))
    null[null == 0] = 1e-9
    return (nll(null, spikes) - nll(rates, spikes)) / np.sum(spikes) / LN2


# ----------------------------------------------------------------------- Poisson / bps
def test_hand_computed_two_neurons_three_bins():
    counts = [[0, 2], [1, 0], [3, 1]]
    rates = [[0.5, 1.5], [1.0, 0.2], [2.0, 0.8]]
    nll_model = 0.0
    for row_r, row_n in zip(rates, counts):
        for r, n in zip(row_r, row_n):
            nll_model += r - n * math.log(r) + math.lgamma(n + 1)
    null = [4 / 3, 1.0]  # mean counts of neuron 0 and 1
    nll_null = 0.0
    for row_n in counts:
        for r, n in zip(null, row_n):
            nll_null += r - n * math.log(r) + math.lgamma(n + 1)
    assert poisson_nll(rates, counts) == pytest.approx(nll_model, rel=1e-12)
    assert bits_per_spike(rates, counts) == pytest.approx((nll_null - nll_model) / (7 * LN2), rel=1e-12)
    # per neuron: each neuron's own spikes (4 and 3) in the denominator
    per = bits_per_spike(rates, counts, pooled=False)
    for i, spikes_i in enumerate((4, 3)):
        d = 0.0
        for row_r, row_n in zip(rates, counts):
            r, n = row_r[i], row_n[i]
            d += (null[i] - n * math.log(null[i])) - (r - n * math.log(r))
        assert per[i] == pytest.approx(d / (spikes_i * LN2), rel=1e-12)


def test_matches_independent_nlb_formula_with_zero_rates():
    rng = np.random.default_rng(0)
    rates = rng.gamma(2.0, 0.4, size=(6, 10, 4))
    counts = rng.poisson(rates)
    rates[0, 0, 0] = 0.0
    counts[0, 0, 0] = 0  # zero rate where no spike: only the 1e-9 floor is paid
    counts[:, :, 3] = 0  # a silent neuron: null 0 -> 1e-9
    ours = bits_per_spike(rates, counts)
    assert ours == pytest.approx(nlb_bits_per_spike(rates, counts), rel=1e-10, abs=1e-12)


def test_null_prediction_scores_exactly_zero():
    rng = np.random.default_rng(1)
    counts = rng.poisson(0.7, size=(20, 15, 6))
    null = np.broadcast_to(counts.mean(axis=(0, 1)), counts.shape)
    assert abs(bits_per_spike(null, counts)) < 1e-9


def test_perfect_rate_oracle_matches_analytic_expectation():
    """Oracle on Poisson data: E[bps] by direct summation over counts k of the Poisson pmf."""
    rng = np.random.default_rng(2)
    n_trials, n_bins, n_neurons = 300, 40, 5
    t = np.arange(n_bins)
    lam = 0.05 + 1.2 * (1 + np.sin(2 * np.pi * t[:, None] / n_bins + np.arange(n_neurons)[None, :])) / 2  # (bins, N)
    counts = rng.poisson(np.broadcast_to(lam, (n_trials, n_bins, n_neurons)))
    measured = bits_per_spike(np.broadcast_to(lam, counts.shape), counts)

    lam_bar = lam.mean(axis=0)  # true mean rate per neuron = large-sample null
    k = np.arange(60)[:, None, None]
    log_pmf = -lam[None] + k * np.log(lam[None]) - np.array([math.lgamma(v + 1) for v in k.ravel()])[:, None, None]
    pmf = np.exp(log_pmf)
    assert np.allclose(pmf.sum(axis=0), 1.0, atol=1e-12)  # truncation at k=60 is exact enough
    lg = np.array([math.lgamma(v + 1) for v in k.ravel()])[:, None, None]
    e_nll_model = (pmf * (lam[None] - k * np.log(lam[None]) + lg)).sum()
    e_nll_null = (pmf * (lam_bar[None, None] - k * np.log(lam_bar[None, None]) + lg)).sum()
    e_spikes = lam.sum()
    expected = (e_nll_null - e_nll_model) / (e_spikes * LN2)
    # the empirical-mean null fits its own data: it lowers NLL_null by ~1/2 nat per neuron
    expected -= 0.5 * n_neurons / (n_trials * e_spikes * LN2)
    # delta-method s.d. of the ratio: A = sum n c, S = sum n, c = log(lam/lam_bar)
    c = np.log(lam / lam_bar)
    ratio = (lam * c).sum() / lam.sum()
    sd = math.sqrt(n_trials * (lam * (c - ratio) ** 2).sum()) / (n_trials * e_spikes * LN2)
    assert 0.05 < expected < 1.0 and sd < 0.01
    assert abs(measured - expected) < 4 * sd
    # a mis-scaled model is clearly worse than the oracle
    assert bits_per_spike(1.5 * np.broadcast_to(lam, counts.shape), counts) < measured - 10 * sd


def test_pooled_is_spike_weighted_mean_of_per_neuron():
    rng = np.random.default_rng(3)
    rates = rng.gamma(2.0, 0.5, size=(10, 8, 5))
    counts = rng.poisson(rates)
    per = bits_per_spike(rates, counts, pooled=False)
    spikes = counts.sum(axis=(0, 1))
    assert (spikes > 0).all()
    assert bits_per_spike(rates, counts) == pytest.approx((per * spikes).sum() / spikes.sum(), rel=1e-10)
    assert mean_over_neurons(per) == pytest.approx(per.mean())
    counts[..., 2] = 0
    per = bits_per_spike(rates, counts, pooled=False)
    assert np.isnan(per[2]) and np.isfinite(per[[0, 1, 3, 4]]).all()
    assert mean_over_neurons(per) == pytest.approx(np.mean(per[[0, 1, 3, 4]]))


def test_mask_evaluates_only_masked_entries_with_masked_null():
    rng = np.random.default_rng(4)
    rates = rng.gamma(2.0, 0.5, size=(7, 9, 3))
    counts = rng.poisson(rates).astype(float)
    mask = rng.random(counts.shape) < 0.4
    garbage = counts.copy()
    garbage[~mask] = np.nan  # entries outside the mask are never read
    nll_model = nll_null = spikes = 0.0
    for i in range(3):
        n_i = counts[..., i][mask[..., i]]
        r_i = rates[..., i][mask[..., i]]
        null_i = n_i.mean()
        for r, n in zip(r_i, n_i):
            nll_model += r - n * math.log(r) + math.lgamma(n + 1)
            nll_null += null_i - n * math.log(null_i) + math.lgamma(n + 1)
        spikes += n_i.sum()
    expected = (nll_null - nll_model) / (spikes * LN2)
    assert bits_per_spike(rates, garbage, mask=mask) == pytest.approx(expected, rel=1e-10)
    # a mask over whole neurons equals slicing those neurons (co-bps)
    sel = np.array([True, False, True])
    assert bits_per_spike(rates, counts, mask=sel) == pytest.approx(
        nlb_bits_per_spike(rates[..., sel], counts[..., sel]), rel=1e-10
    )
    expected_co = nlb_bits_per_spike(rates[..., sel], counts[..., sel])
    assert co_bps(rates, counts, [0, 2]) == pytest.approx(expected_co, rel=1e-10)
    assert fp_bps(rates, counts, [6, 7, 8]) == pytest.approx(nlb_bits_per_spike(rates[:, 6:], counts[:, 6:]), rel=1e-10)


def test_explicit_null_rates_and_bad_inputs():
    counts = np.array([[0.0, 2.0], [1.0, 0.0], [3.0, 1.0]])
    rates = np.array([[0.5, 1.5], [1.0, 0.2], [2.0, 0.8]])
    null = np.array([1.0, 0.5])
    nll = lambda r, n: sum(a - b * math.log(a) + math.lgamma(b + 1) for a, b in zip(r.ravel(), n.ravel()))  # noqa: E731
    expected = (nll(np.broadcast_to(null, counts.shape), counts) - nll(rates, counts)) / (7 * LN2)  # 7 spikes
    assert bits_per_spike(rates, counts, null_rates=null) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="rates"):
        bits_per_spike(-rates, counts)
    with pytest.raises(ValueError, match="counts"):
        bits_per_spike(rates, counts * np.nan)
    with pytest.raises(ValueError, match="no spikes"):
        bits_per_spike(rates, np.zeros_like(counts))
    with pytest.raises(ValueError, match="shape"):
        bits_per_spike(rates[:2], counts)


# ----------------------------------------------------------------------- R2 family
def test_psth_r2_against_hand_loop():
    rng = np.random.default_rng(5)
    cond = np.array([0, 1, 0, 1, 1, 0, 2, 2])
    counts = rng.poisson(1.0, size=(8, 6, 3)).astype(float)
    rates = rng.gamma(2.0, 0.5, size=(8, 6, 3))
    expected = []
    for i in range(3):
        true_psth, pred_psth = [], []
        for c in (0, 1, 2):
            true_psth.extend(counts[cond == c, :, i].mean(axis=0))
            pred_psth.extend(rates[cond == c, :, i].mean(axis=0))
        true_psth, pred_psth = np.array(true_psth), np.array(pred_psth)
        expected.append(1 - ((true_psth - pred_psth) ** 2).sum() / ((true_psth - true_psth.mean()) ** 2).sum())
    assert np.allclose(psth_r2(rates, counts, cond, per_neuron=True), expected, rtol=1e-12)
    assert psth_r2(rates, counts, cond) == pytest.approx(np.mean(expected))
    perfect = np.stack([counts[cond == c].mean(axis=0) for c in cond])
    assert psth_r2(perfect, counts, cond) == pytest.approx(1.0)


def test_r2_score_and_masked_r2_with_roi_baseline():
    rng = np.random.default_rng(6)
    target = rng.normal(size=(10, 12, 4))
    pred = target + rng.normal(scale=0.5, size=target.shape)
    skl = sklearn.metrics.r2_score(target.reshape(-1, 4), pred.reshape(-1, 4), multioutput="raw_values")
    assert np.allclose(r2_score(pred, target, reduce="none"), skl)
    assert r2_score(pred, target) == pytest.approx(skl.mean())
    mask = rng.random(target.shape) < 0.3
    roi_mean = np.array([target[..., i][mask[..., i]].mean() for i in range(4)])
    assert masked_r2(np.broadcast_to(roi_mean, target.shape), target, mask) == pytest.approx(0.0, abs=1e-12)
    ss_res = sum(((target[..., i] - pred[..., i])[mask[..., i]] ** 2).sum() for i in range(4))
    ss_tot = sum(((target[..., i] - roi_mean[i])[mask[..., i]] ** 2).sum() for i in range(4))
    assert masked_r2(pred, target, mask, reduce="pooled") == pytest.approx(1 - ss_res / ss_tot)


def test_gaussian_nll_matches_scipy():
    rng = np.random.default_rng(7)
    target = rng.normal(size=(5, 7, 3))
    mean = rng.normal(size=target.shape)
    var = np.array([0.5, 1.0, 2.0])
    expected = -scipy.stats.norm.logpdf(target, loc=mean, scale=np.sqrt(var)).sum()
    assert gaussian_nll(mean, target, var=var) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="var"):
        gaussian_nll(mean, target, var=0.0)


# ----------------------------------------------------------------------- decoding
def test_decode_choice_separable_vs_random_labels():
    rng = np.random.default_rng(8)
    labels = np.repeat([-1, 1], 50)
    x_sep = rng.normal(size=(100, 6))
    x_sep[:, 0] += 3.0 * labels
    res = decode_choice(x_sep, labels)
    assert res["accuracy"] > 0.93 and res["balanced_accuracy"] > 0.93
    assert len(res["best_C"]) == 4 and all(1e-4 <= c <= 1e4 for c in res["best_C"])
    random_labels = rng.permutation(labels)
    res = decode_choice(rng.normal(size=(100, 6)), random_labels)
    assert abs(res["accuracy"] - 0.5) < 0.17 and abs(res["balanced_accuracy"] - 0.5) < 0.17
    with pytest.raises(ValueError, match="too small"):
        decode_choice(x_sep[:10], np.array([1] * 8 + [-1] * 2))


def test_ridge_fit_matches_sklearn():
    rng = np.random.default_rng(9)
    x = rng.normal(size=(50, 4))
    y = x @ np.array([1.0, -2.0, 0.5, 0.0]) + 3.0 + rng.normal(scale=0.1, size=50)
    coef, icpt = ridge_fit(x, y, [0.0, 10.0])
    ols = sklearn.linear_model.LinearRegression().fit(x, y)
    ridge = sklearn.linear_model.Ridge(alpha=10.0).fit(x, y)
    assert np.allclose(coef[0], ols.coef_) and icpt[0] == pytest.approx(ols.intercept_)
    assert np.allclose(coef[1], ridge.coef_) and icpt[1] == pytest.approx(ridge.intercept_)


def test_decode_regression_linear_vs_noise():
    rng = np.random.default_rng(10)
    x = rng.normal(size=(40, 20, 5))
    y = x @ np.array([0.5, -1.0, 2.0, 0.0, 0.3]) + rng.normal(scale=0.05, size=(40, 20))
    res = decode_regression(x, y)
    assert res["r2"] > 0.99 and res["predictions"].shape == (40, 20)
    noise = decode_regression(x, rng.normal(size=(40, 20)))
    assert noise["r2"] <= 0.02
    with pytest.raises(ValueError, match="non-finite"):
        decode_regression(x, np.where(np.arange(20) == 3, np.nan, y))


def test_decode_choice_split_scores_only_the_eval_trials():
    """Fitted on train, scored on eval: labels of the eval trials shuffled relative to their features score
    near chance, while the nested CV over train + eval pooled (cv_all_splits) scores well above it."""
    rng = np.random.default_rng(11)
    y_tr, y_ev = np.repeat([-1, 1], 70), np.repeat([-1, 1], 30)
    x_tr, x_ev = rng.normal(size=(140, 6)), rng.normal(size=(60, 6))
    x_tr[:, 0] += 2.5 * y_tr
    x_ev[:, 0] += 2.5 * y_ev
    good = decode_choice_split(x_tr, y_tr, x_ev, y_ev, Cs=[0.01, 1.0], n_splits=3)
    assert good["accuracy"] > 0.9 and good["balanced_accuracy"] > 0.9
    assert good["n_train"] == 140 and good["n_eval"] == 60 and good["best_C"] in (0.01, 1.0)
    assert set(np.unique(good["predictions"])) <= {-1, 1} and good["predictions"].shape == (60,)
    y_shuf = rng.permutation(y_ev)
    held = decode_choice_split(x_tr, y_tr, x_ev, y_shuf, Cs=[0.01, 1.0], n_splits=3)
    assert abs(held["accuracy"] - 0.5) < 0.15 and abs(held["balanced_accuracy"] - 0.5) < 0.15
    pooled = decode_choice(np.concatenate([x_tr, x_ev]), np.concatenate([y_tr, y_shuf]), Cs=[0.01, 1.0],
                           n_splits=3)
    assert pooled["accuracy"] > held["accuracy"] + 0.2  # the train trials (70%) carry the pooled score
    # predictions equal to an independent sklearn fit at the chosen C
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    ref = make_pipeline(StandardScaler(), LogisticRegression(C=held["best_C"], max_iter=2000)).fit(x_tr, y_tr)
    assert np.array_equal(ref.predict(x_ev), held["predictions"])


def test_decode_choice_split_chance_labels_and_errors():
    rng = np.random.default_rng(12)
    y_tr = np.array([0.2] * 30 + [0.8] * 10)  # float labels (block prior); train majority 0.2
    y_ev = np.array([0.2] * 3 + [0.8] * 7)
    res = decode_choice_split(rng.normal(size=(40, 2, 3)), y_tr, rng.normal(size=(10, 2, 3)), y_ev, Cs=[1.0],
                              n_splits=2)
    assert res["chance"] == pytest.approx(0.3)  # the TRAIN majority class applied to eval
    assert set(np.unique(res["predictions"])) <= {0.2, 0.8}
    with pytest.raises(ValueError, match=r"eval labels \{0.5: 2\}.*absent from the train labels"):
        decode_choice_split(rng.normal(size=(40, 3)), y_tr, rng.normal(size=(2, 3)), np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match=r"train class counts \{0.2: 30, 0.8: 3\} too small for 4-fold"):
        decode_choice_split(rng.normal(size=(33, 3)), y_tr[:33], rng.normal(size=(2, 3)), y_ev[:2], n_splits=4)
    with pytest.raises(ValueError, match="1 class"):
        decode_choice_split(rng.normal(size=(30, 3)), y_tr[:30], rng.normal(size=(2, 3)), y_ev[:2])
    with pytest.raises(ValueError, match="same F"):
        decode_choice_split(rng.normal(size=(40, 3)), y_tr, rng.normal(size=(10, 4)), y_ev)


def test_decode_regression_split_fits_train_scores_eval():
    rng = np.random.default_rng(13)
    w = np.array([0.5, -1.0, 2.0, 0.0, 0.3])
    x_tr, x_ev = rng.normal(size=(30, 20, 5)), rng.normal(size=(10, 20, 5))
    y_tr = x_tr @ w + rng.normal(scale=0.05, size=(30, 20))
    y_ev = x_ev @ w + rng.normal(scale=0.05, size=(10, 20))
    res = decode_regression_split(x_tr, y_tr, x_ev, y_ev, alphas=[0.0, 1.0, 1e4], n_splits=3)
    assert res["r2"] > 0.99 and res["predictions"].shape == (10, 20) and res["best_alpha"] in (0.0, 1.0)
    assert res["cv_mse"].shape == (3,) and res["cv_mse"][2] > res["cv_mse"][0]
    coef, icpt = ridge_fit(x_tr.reshape(-1, 5), y_tr.ravel(), [res["best_alpha"]])
    assert np.allclose(res["predictions"], x_ev @ coef[0] + icpt[0])
    ss = ((y_ev - res["predictions"]) ** 2).sum() / ((y_ev - y_ev.mean()) ** 2).sum()
    assert res["r2"] == pytest.approx(1 - ss)  # pooled over eval trials x bins, eval mean as baseline
    # eval targets shuffled across trials: the train fit does not transfer (R2 <= 0), while the nested CV over
    # train + eval pooled still scores high on the train trials
    y_shuf = y_ev[rng.permutation(10)]
    held = decode_regression_split(x_tr, y_tr, x_ev, y_shuf, n_splits=3)
    pooled = decode_regression(np.concatenate([x_tr, x_ev]), np.concatenate([y_tr, y_shuf]), n_splits=3)
    assert held["r2"] < 0.0 and pooled["r2"] > held["r2"] + 0.5
    with pytest.raises(ValueError, match="at least 3 train trials"):
        decode_regression_split(x_tr[:2], y_tr[:2], x_ev, y_ev, n_splits=3)
    with pytest.raises(ValueError, match="eval target is constant"):
        decode_regression_split(x_tr, y_tr, x_ev, np.ones((10, 20)))
    with pytest.raises(ValueError, match="eval: target has non-finite"):
        decode_regression_split(x_tr, y_tr, x_ev, np.where(np.arange(20) == 3, np.nan, y_ev))


# ----------------------------------------------------------------------- generation
def _raster(rng, shape=(30, 25, 8)):
    rates = rng.gamma(1.5, 0.4, size=shape[-1]) * (1 + np.sin(np.arange(shape[1]) / 3.0))[:, None]
    return rng.poisson(np.broadcast_to(rates, shape)).astype(float)


def test_generation_metrics_identical_data():
    rng = np.random.default_rng(11)
    counts = _raster(rng)
    counts[..., 7] = 0  # silent neuron: r undefined
    r = gm.per_neuron_pearson(counts, counts)
    assert np.allclose(r[:7], 1.0) and np.isnan(r[7])
    assert np.allclose(gm.psth_correlation(counts, counts)[:7], 1.0)
    assert gm.firing_set_f1(counts, counts) == pytest.approx(1.0)
    assert gm.firing_rate_distance(counts, counts, 0.02) == 0.0
    times = rng.uniform(0, 1, 200)
    units = rng.integers(0, 5, 200)
    assert gm.isi_distance((times, units), (times, units)) == 0.0
    assert gm.isi_distance((times, units), (times, units), method="ks") == 0.0


def test_generation_metrics_hand_values_and_shuffle():
    true = np.array([[1, 2, 0, 0], [0, 0, 0, 0], [0, 0, 3, 0]], dtype=float)
    gen = np.array([[0, 1, 1, 0], [0, 0, 0, 0], [0, 0, 1, 1]], dtype=float)
    # interval 0: A={0,1}, B={1,2}: F1 = 2*1/4; interval 1: empty (skipped); interval 2: A={2}, B={2,3}: 2/3
    assert np.allclose(gm.firing_set_f1(true, gen, per_interval=True), [0.5, np.nan, 2 / 3], equal_nan=True)
    assert gm.firing_set_f1(true, gen) == pytest.approx((0.5 + 2 / 3) / 2)
    # per-neuron r against np.corrcoef, one neuron at a time
    rng = np.random.default_rng(12)
    a, b = _raster(rng), _raster(rng)
    r = gm.per_neuron_pearson(a, b)
    for i in range(8):
        assert r[i] == pytest.approx(np.corrcoef(a[..., i].ravel(), b[..., i].ravel())[0, 1])
    # shuffling intervals destroys timing but keeps every rate
    flat = a.reshape(-1, 8)
    shuffled = flat[rng.permutation(flat.shape[0])]
    assert abs(np.nanmean(gm.per_neuron_pearson(flat, shuffled))) < 0.1
    assert gm.firing_set_f1(flat, shuffled) < 0.9 * gm.firing_set_f1(flat, flat)
    assert gm.firing_rate_distance(flat, shuffled, 0.02) == pytest.approx(0.0, abs=1e-9)
    # doubling every count doubles every rate: W1({r}, {2r}) = mean(r)
    rates_hz = flat.mean(axis=0) / 0.02
    assert gm.firing_rate_distance(flat, 2 * flat, 0.02) == pytest.approx(rates_hz.mean())
    # ISIs: regular 10 ms trains vs 20 ms trains differ by 10 ms everywhere
    t10 = np.tile(np.arange(0, 1, 0.01), 3)
    u10 = np.repeat(np.arange(3), 100)
    t20 = np.tile(np.arange(0, 1, 0.02), 3)
    u20 = np.repeat(np.arange(3), 50)
    assert gm.isi_distance((t10, u10), (t20, u20)) == pytest.approx(0.01)
    # trial ids stop ISIs from spanning two trials
    isi = gm.interspike_intervals((np.array([0.1, 0.3, 0.2, 0.9]), np.zeros(4), np.array([0, 0, 1, 1])))
    assert np.allclose(np.sort(isi), [0.2, 0.7])


def test_plot_rasters_writes_png(tmp_path):
    rng = np.random.default_rng(13)
    ev = (rng.uniform(0, 2, 300), rng.integers(0, 10, 300))
    gen = (rng.uniform(0, 2, 250), rng.integers(0, 10, 250))
    path = gm.plot_rasters(ev, gen, tmp_path / "sub" / "raster.png", title="test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    img = matplotlib.image.imread(path)
    assert img.shape[0] == 600 and img.shape[1] == 800


# --------------------------------------------------------------------------- Poisson D2 (IBL BrainWideBench)
def d2_loop(rates, counts, mask):
    """D2 per unit written out: 1 - (N_pred - N_sat) / (N_null - N_sat) with full Poisson NLLs (math.lgamma),
    null = the unit's mean over its masked entries; NaN where BWB drops the unit (null rate < 1e-9 or a
    null deviance < 1e-9)."""
    rates, counts = np.asarray(rates, float), np.asarray(counts, float)
    mask = np.broadcast_to(mask, counts.shape)
    out = []
    for i in range(counts.shape[-1]):
        r, n = rates[..., i][mask[..., i]], counts[..., i][mask[..., i]]
        if n.size == 0 or n.mean() < 1e-9:
            out.append(np.nan)
            continue

        def nll(lam):
            total = 0.0
            for lam_k, n_k in zip(np.broadcast_to(lam, n.shape), n):
                lam_k = max(lam_k, 1e-9)
                total += lam_k - n_k * math.log(lam_k) + math.lgamma(n_k + 1)
            return total

        sat = sum((n_k - n_k * math.log(n_k) if n_k > 0 else 0.0) + math.lgamma(n_k + 1) for n_k in n)
        den = nll(n.mean()) - sat
        out.append(np.nan if den < 1e-9 else 1.0 - (nll(r) - sat) / den)
    return np.array(out)


def test_poisson_d2_matches_a_direct_per_unit_loop():
    from nfm.evaluation.metrics import poisson_d2

    rng = np.random.default_rng(5)
    counts = rng.poisson(rng.uniform(0.2, 3.0, 6), (8, 12, 6)).astype(float)
    counts[..., 4] = 0.0  # silent unit: dropped (BWB), unlike NLB
    counts[..., 5] = 2.0  # constant counts: null == saturated, D2 undefined -> dropped
    rates = rng.uniform(0.05, 4.0, counts.shape)
    rates[0, 0, 0] = 0.0  # floored at 1e-9
    mask = rng.uniform(size=counts.shape) < 0.7
    mask[..., 3] = False
    mask[:, :6, 3] = True  # one unit with only part of the bins evaluated
    rates_nan = np.where(mask, rates, np.nan)  # entries outside the mask are never read
    want = d2_loop(rates, counts, mask)
    got = poisson_d2(rates_nan, counts, mask=mask, reduce="none")
    assert got.shape == (6,)
    assert np.isnan(got[4]) and np.isnan(got[5]) and np.isfinite(got[:4]).all()
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    assert poisson_d2(rates_nan, counts, mask=mask) == pytest.approx(np.nanmean(want), rel=1e-9)
    # no mask: every entry of every unit
    np.testing.assert_allclose(poisson_d2(rates, counts, reduce="none"), d2_loop(rates, counts, True),
                               rtol=1e-9, atol=1e-12)


def test_poisson_d2_hand_values():
    from nfm.evaluation.metrics import poisson_d2

    # one unit, counts (0, 2), rates (0.5, 1.5): deviance/2 of the model 2 log(4/3), of the null (1, 1) 2 log 2
    assert poisson_d2([[0.5], [1.5]], [[0.0], [2.0]]) == pytest.approx(1 - math.log(4 / 3) / math.log(2), rel=1e-12)
    rng = np.random.default_rng(0)
    counts = rng.poisson(2.0, (10, 20, 5)).astype(float)
    assert poisson_d2(counts, counts) == pytest.approx(1.0, abs=1e-8)  # perfect prediction (0-count rates floored)
    null = np.broadcast_to(counts.mean(axis=(0, 1)), counts.shape)
    assert poisson_d2(null, counts) == pytest.approx(0.0, abs=1e-12)  # the null model
    assert poisson_d2(null * 3.0, counts) < 0  # worse than the null
    with pytest.raises(ValueError, match="reduce='pooled'"):
        poisson_d2(counts, counts, reduce="pooled")
    with pytest.raises(ValueError, match="no unit to score"):
        poisson_d2(np.ones((4, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="rates must be finite"):
        poisson_d2(-np.ones((4, 2)), np.ones((4, 2)))


def test_bits_per_spike_bwb_drops_silent_units_that_nlb_penalises():
    from nfm.evaluation.metrics import bits_per_spike_bwb

    rng = np.random.default_rng(1)
    counts = rng.poisson(1.5, (6, 10, 4)).astype(float)
    counts[..., 2] = 0.0
    rates = rng.uniform(0.5, 2.5, counts.shape)
    keep = [0, 1, 3]
    want = nlb_bits_per_spike(rates[..., keep], counts[..., keep])
    assert bits_per_spike_bwb(rates, counts) == pytest.approx(want, rel=1e-12)
    # NLB keeps the silent unit: the rates given to it cost NLL, so NLB's value is lower
    assert bits_per_spike(rates, counts) < want - 1e-3
    with pytest.raises(ValueError, match="null rate"):
        bits_per_spike_bwb(rates, np.zeros_like(counts))
