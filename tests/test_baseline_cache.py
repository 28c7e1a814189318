"""The smoothing baseline: the batched Newton fit equals the L-BFGS reference; the baseline cache (hit, miss on
changed data, corrupt file refused and refitted)."""
import numpy as np
import pytest

from nfm.evaluation import baselines as bl
from nfm.evaluation.baseline_cache import BaselineCache, array_fingerprint
from nfm.evaluation.runner import evaluate
from nfm.evaluation.tasks import SMOOTHING_DEFAULTS


def _glm_data(seed=0, n=3000, F=30, K=12):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, F))
    y = rng.poisson(np.exp(x @ (0.2 * rng.standard_normal((K, F))).T - 1.5)).astype(float)
    y[:, 0] = 0.0  # a silent output
    y[:5, 1], y[5:, 1] = 1.0, 0.0  # an almost silent one
    return x, y


def _loglik(x, y, coef, icpt):
    eta = x @ coef.T + icpt
    return (y * eta - np.exp(eta)).sum(axis=0)


def test_newton_path_equals_the_lbfgs_fit_in_log_likelihood():
    x, y = _glm_data()
    alphas = [1.0, 0.1, 0.01, 0.001]
    path = bl.poisson_glm_path(x, y[:, 1:], alphas)
    for a, (coef, icpt) in zip(alphas, path):
        ref_c, ref_b = bl.poisson_glm_fit(x, y[:, 1:], a, tol=1e-10)
        ll, ref = _loglik(x, y[:, 1:], coef, icpt), _loglik(x, y[:, 1:], ref_c, ref_b)
        np.testing.assert_allclose(ll / len(x), ref / len(x), atol=1e-6)
        obj = lambda c, b: (np.exp(x @ c.T + b) - y[:, 1:] * (x @ c.T + b)).mean(0) + 0.5 * a * (c ** 2).sum(1)  # noqa
        assert (obj(coef, icpt) <= obj(ref_c, ref_b) + 1e-9).all()  # Newton reaches the optimum at least as well


def test_hessian_blocks_and_row_subsets_give_the_same_fit(monkeypatch):
    x, y = _glm_data(1, n=2000)
    (c0, b0), = bl.poisson_glm_path(x, y[:, 2:], [0.01])
    monkeypatch.setattr(bl, "_HESSIAN_BLOCK_BYTES", 4096)  # Z rebuilt block by block
    monkeypatch.setattr(bl, "HESSIAN_ROWS", 500)  # sub-sampled Hessian: another path, the same optimum
    (c1, b1), = bl.poisson_glm_path(x, y[:, 2:], [0.01], max_iter=400)
    np.testing.assert_allclose(_loglik(x, y[:, 2:], c1, b1) / len(x), _loglik(x, y[:, 2:], c0, b0) / len(x),
                               atol=1e-6)


def test_pca_features_with_every_component_are_the_full_problem():
    rng = np.random.default_rng(2)
    hin = rng.poisson(0.3, size=(40, 30, 12)).astype(float)
    hout = rng.poisson(0.3, size=(40, 30, 4)).astype(float)
    full = bl.SmoothingBaseline(sigma_bins=2.0, alpha=0.05, max_features=None).fit(hin, hout)
    rot = bl.SmoothingBaseline(sigma_bins=2.0, alpha=0.05, max_features=12).fit(hin, hout)
    low = bl.SmoothingBaseline(sigma_bins=2.0, alpha=0.05, max_features=3).fit(hin, hout)
    assert full.basis_ is None and rot.basis_ is None and low.basis_.shape == (12, 3)
    assert np.allclose(low.basis_.T @ low.basis_, np.eye(3))
    test = rng.poisson(0.3, size=(10, 30, 12)).astype(float)
    assert low.predict(test).shape == (10, 30, 4)
    # an orthonormal rotation of all features leaves the L2 problem unchanged
    z = full._features(hin, fit=False)
    y = hout.reshape(-1, 4)
    q = bl.pca_basis(z, 12)
    (c_rot, b_rot), = bl.poisson_glm_path(z @ q, y, [0.05])
    np.testing.assert_allclose(c_rot @ q.T, full.coef_, atol=1e-5)
    np.testing.assert_allclose(b_rot, full.intercept_, atol=1e-6)
    with pytest.raises(ValueError, match="max_features"):
        bl.SmoothingBaseline(max_features=0)
    with pytest.raises(ValueError, match="solver"):
        bl.SmoothingBaseline(solver="adam")


def test_task_default_feature_cap_is_the_baselines_default():
    assert SMOOTHING_DEFAULTS["max_features"] == bl.DEFAULT_MAX_FEATURES


def test_cache_entries_hit_miss_and_refuse_corrupt_files(tmp_path):
    cache = BaselineCache(tmp_path)
    rates = np.random.default_rng(0).random((3, 4, 5))
    key = {"train": array_fingerprint(rates), "spec": {"alpha": [1.0]}}
    assert cache.load("s", key, rates.shape) is None and cache.last_status == "miss"
    path = cache.save("s", key, rates, {"chosen": [2.0, 0.1]})
    got, info = cache.load("s", key, rates.shape)
    assert cache.last_status == "hit" and np.array_equal(got, rates) and info == {"chosen": [2.0, 0.1]}
    other = {**key, "train": array_fingerprint(rates + 1)}  # changed data: another entry
    assert cache.load("s", other, rates.shape) is None and cache.last_status == "miss"
    assert cache.load("s", key, (3, 4, 6)) is None and "shape" in cache.last_status
    with np.load(path, allow_pickle=False) as z:  # tampered rates: the checksum no longer matches
        parts = {k: z[k] for k in z.files}
    parts["rates"] = parts["rates"] * 2
    np.savez(path, **parts)
    assert cache.load("s", key, rates.shape) is None and "checksum" in cache.last_status
    path.write_bytes(b"not an npz")
    assert cache.load("s", key, rates.shape) is None and cache.last_status.startswith("corrupt")
    assert not list(tmp_path.glob("*.tmp.npz"))  # atomic writes leave no temporary file


def test_evaluate_reads_the_smoothing_baseline_from_the_cache(tmp_path, monkeypatch):
    from test_runner import RateOracle, oracle_world

    dd, meta, counts, expected = oracle_world()
    fits = []
    real = bl.SmoothingBaseline.fit_cv.__func__

    def counting(cls, *a, **k):
        fits.append(1)
        return real(cls, *a, **k)

    monkeypatch.setattr(bl.SmoothingBaseline, "fit_cv", classmethod(counting))
    over = {"co_smoothing": {"baselines": ["smoothing"], "smoothing": {"sigma_ms": [20, 40], "alpha": [0.1, 1.0]}}}
    cache = tmp_path / "cache"
    first = evaluate(RateOracle(expected, meta), (dd, meta), tasks="co_smoothing", task_overrides=over,
                     baseline_cache=cache)
    assert len(fits) == 1 and len(list(cache.glob("*.npz"))) == 1
    again = evaluate(RateOracle(expected, meta), (dd, meta), tasks="co_smoothing", task_overrides=over,
                     baseline_cache=cache)
    assert len(fits) == 1  # a second model on the same data pays nothing for the baseline
    from nfm.evaluation.context import EvalContext
    from nfm.evaluation.costs import estimate_costs
    from nfm.evaluation.tasks import load_tasks

    tasks = load_tasks("co_smoothing", overrides=over)
    for root, cached in ((cache, True), (tmp_path / "empty", False)):
        ctx = EvalContext(dd, meta, RateOracle(expected, meta), "test", ["oracle-0"], baseline_cache=BaselineCache(root))
        cost = estimate_costs(ctx, tasks)[0]
        assert (cost.glm == 0) == cached and any("baseline cache" in n for n in cost.notes) == cached
    assert again["co_smoothing"]["smoothing/bps"] == first["co_smoothing"]["smoothing/bps"]
    assert again["co_smoothing"]["per_session"]["oracle-0"]["smoothing/alpha"] == \
        first["co_smoothing"]["per_session"]["oracle-0"]["smoothing/alpha"]
    # the validation split is other data: a miss, fitted again
    evaluate(RateOracle(expected, meta), (dd, meta), tasks="co_smoothing", split="validation", task_overrides=over,
             baseline_cache=cache)
    assert len(fits) == 2
    # a corrupt entry is refused, refitted and rewritten
    for f in cache.glob("*.npz"):
        f.write_bytes(b"garbage")
    res = evaluate(RateOracle(expected, meta), (dd, meta), tasks="co_smoothing", task_overrides=over,
                   baseline_cache=cache, output=tmp_path / "out" / "results.json")
    assert len(fits) == 3 and res["co_smoothing"]["smoothing/bps"] == first["co_smoothing"]["smoothing/bps"]
    assert "cache entry refused" in (tmp_path / "out" / "results.md").read_text()
    evaluate(RateOracle(expected, meta), (dd, meta), tasks="co_smoothing", task_overrides=over, baseline_cache=False)
    assert len(fits) == 4  # no cache: refitted
