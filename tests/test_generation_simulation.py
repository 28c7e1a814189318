"""The closed-loop Poisson GLM simulator of ``generation_simulation``: the vectorised features equal the per-bin
ones, the fit restored from the baseline cache simulates exactly as the fit it came from, and ``--quick`` fits it
on fewer trials, folds and penalties (and says so)."""
import numpy as np
import pytest

from nfm.evaluation import generation_tasks as gt
from nfm.evaluation.baseline_cache import BaselineCache
from nfm.evaluation.context import SessionData
from nfm.evaluation.tasks import load_tasks


def _session(seed=0, R=12, T=30, N=5, n_stim=1, n_beh=2):
    rng = np.random.default_rng(seed)
    counts = rng.poisson(0.4, size=(R, T, N)).astype(np.float64)
    beh = rng.normal(size=(R, T, n_beh))
    beh[rng.random(beh.shape) < 0.1] = np.nan
    import torch

    stim = torch.from_numpy(rng.normal(size=(R, T, n_stim)))
    batches = [{"spikes": torch.from_numpy(counts[a:a + 8]), "stimulus": stim[a:a + 8]} for a in range(0, R, 8)]
    return SessionData("s0", ("train",), counts, None, beh, {}, np.arange(R), np.array(["A"] * N), batches,
                       (np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64)))


def test_vectorised_features_equal_the_per_bin_ones():
    sd = _session()
    stim = gt._stimulus(sd)
    x = gt._glm_features_all(sd.counts, stim, sd.behavior)
    ref = np.stack([gt._glm_features(sd.counts, stim, sd.behavior, t) for t in range(sd.counts.shape[1])], axis=1)
    assert x.shape == ref.shape
    np.testing.assert_array_equal(x, ref)


def _reference_fit(train, alphas=(1e-3, 1e-2, 1e-1, 1.0), seed=0):
    """The simulator's fit as it was before the features were vectorised (per-bin features, 3-fold CV)."""
    from nfm.evaluation.baselines import poisson_glm_fit

    counts, stim, beh = train.counts, gt._stimulus(train), train.behavior
    R, T, N = counts.shape
    x = np.stack([gt._glm_features(counts, stim, beh, t) for t in range(T)], axis=1)
    mean = x.reshape(-1, x.shape[-1]).mean(axis=0)
    sd = x.reshape(-1, x.shape[-1]).std(axis=0)
    scale = np.where(sd > 0, sd, 1.0)
    z = (x - mean) / scale
    folds = np.array_split(np.random.default_rng(seed).permutation(R), 3)
    scores = {}
    for a in sorted(alphas, reverse=True):
        total = 0.0
        for f in folds:
            tr = np.setdiff1d(np.arange(R), f)
            w, b = poisson_glm_fit(z[tr].reshape(-1, z.shape[-1]), counts[tr].reshape(-1, N), a)
            eta = np.clip(z[f].reshape(-1, z.shape[-1]) @ w.T + b, -30, 30)
            total += float((counts[f].reshape(-1, N) * eta - np.exp(eta)).sum())
        scores[a] = total
    alpha = max(scores, key=scores.get)
    coef, icpt = poisson_glm_fit(z.reshape(-1, z.shape[-1]), counts.reshape(-1, N), alpha)
    return mean, scale, alpha, coef, icpt


def test_fit_equals_the_per_bin_reference_and_the_cached_fit_simulates_the_same(tmp_path):
    train, test = _session(0), _session(1, R=6)
    sim = gt.GLMSimulator(train)
    mean, scale, alpha, coef, icpt = _reference_fit(train)
    assert sim.alpha == alpha
    np.testing.assert_array_equal(sim.mean, mean)
    np.testing.assert_array_equal(sim.scale, scale)
    np.testing.assert_array_equal(sim.coef, coef)
    np.testing.assert_array_equal(sim.intercept, icpt)
    again = gt.GLMSimulator.from_params(sim.params())
    a, b = sim.simulate(test, 10, seed=3), again.simulate(test, 10, seed=3)
    assert a.shape == (6, 20, 5) and a.sum() > 0
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, sim.simulate(test, 10, seed=4))  # the seed matters


class _Ctx:
    def __init__(self, cache):
        self.baseline_cache, self.notes = cache, {}

    def note(self, task, text):
        self.notes.setdefault(task, []).append(text)


def test_glm_simulator_is_cached_and_quick_fits_less(tmp_path, monkeypatch):
    train = _session(0, R=40)
    full, = load_tasks("generation_simulation")
    quick, = load_tasks("generation_simulation", quick=True)
    assert full.spec["glm"] == {"alphas": [1.0, 0.1, 0.01, 0.001], "cv_folds": 3, "max_train_trials": 0}
    assert quick.spec["glm"] == {"alphas": [1.0, 0.1], "cv_folds": 2, "max_train_trials": 32}
    fits = []
    real = gt.GLMSimulator.__init__

    def counting(self, train, *a, **k):
        if train is not None:  # a fit (from_params builds an empty one)
            fits.append(k)
        return real(self, train, *a, **k)

    monkeypatch.setattr(gt.GLMSimulator, "__init__", counting)
    ctx = _Ctx(BaselineCache(tmp_path))
    s1 = gt.glm_simulator(ctx, full, train)
    assert ctx.baseline_cache.last_status == "miss" and len(fits) == 1
    s2 = gt.glm_simulator(ctx, full, train)  # read back, not refitted
    assert ctx.baseline_cache.last_status == "hit" and len(fits) == 1
    np.testing.assert_array_equal(s1.params(), s2.params())
    q = gt.glm_simulator(ctx, quick, train)  # another protocol: its own fit
    assert len(fits) == 2 and fits[-1]["max_train_trials"] == 32 and fits[-1]["cv_folds"] == 2
    assert q.coef.shape == s1.coef.shape and not np.array_equal(q.params(), s1.params())
    assert any("first 32 training trials" in n for n in ctx.notes["generation_simulation"])
    changed = _session(0, R=40)
    changed.counts[0, 0, 0] += 1  # changed data: refitted
    gt.glm_simulator(ctx, full, changed)
    assert len(fits) == 3
    for p in tmp_path.glob("glm_sim-*.npz"):  # a corrupt entry is refused, refitted and noted
        p.write_bytes(b"not an npz")
    gt.glm_simulator(ctx, full, train)
    assert len(fits) == 4 and any("refused" in n for n in ctx.notes["generation_simulation"])


def test_glm_options_are_validated():
    from nfm.evaluation.tasks import TaskError

    with pytest.raises(TaskError, match="glm.cv_folds"):
        load_tasks("generation_simulation", overrides={"generation_simulation": {"glm": {"cv_folds": 1}}})
    with pytest.raises(TaskError, match="glm.bogus"):
        load_tasks("generation_simulation", overrides={"generation_simulation": {"glm": {"bogus": 1}}})


def test_a_generation_two_tasks_share_is_run_once(monkeypatch):
    calls = []

    def fake(predictor, sd, **kw):
        calls.append(kw)
        return {"seed": kw["seed"]}

    monkeypatch.setattr(gt, "generate_held_out", fake)

    class C:
        predictor, bin_size, _pred = object(), 0.02, {}

    sd = _session(0)
    fid, = load_tasks("generation_fidelity", quick=True)
    sim, = load_tasks("generation_simulation", quick=True)
    seen = []
    a = gt._generated(C, sd, fid, None)
    b = gt._generated(C, sd, sim, seen.append)  # the same settings: read, and the progress bar still advances
    assert len(calls) == 1 and a is b and seen == [sd.n_trials]
    other, = load_tasks("generation_simulation", overrides={"generation_simulation": {"seed": 1}})
    gt._generated(C, sd, other, None)
    assert len(calls) == 2
    gt._generated(C, sd.head(8), sim, None)  # other trials: generated
    assert len(calls) == 3


@pytest.fixture(scope="module")
def small_world():
    import torch

    from nfm.data.hf import build_dataset
    from nfm.data.sources.synthetic import make_ibl_like_world
    from nfm.models import NfmConfig, NfmForPretraining

    sessions = make_ibl_like_world(n_animals=1, n_trials=80, units_per_region=(4, 6), seed=3)
    dd, meta = build_dataset(sessions)
    torch.manual_seed(0)
    model = NfmForPretraining(NfmConfig.from_dataset_meta(
        meta, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        decoder_layers=1, gen_max_events=24)).eval()
    return dd, meta, model


def test_cost_estimate_of_the_glm_simulator_holds_and_a_cached_fit_costs_nothing(small_world, tmp_path):
    """The estimate of ``generation_simulation`` (full and --quick) within the stated factor of its measured time;
    --quick estimated (and measured) below the full protocol; a second run reads the fits from the cache and the
    estimate says so."""
    import time

    from nfm.evaluation.costs import STATED_FACTOR, calibrate, estimate_costs
    from nfm.evaluation.runner import RUNNERS, EvalContext, as_predictor

    dd, meta, model = small_world
    rows = []
    for quick in (False, True):
        task, = load_tasks("generation_simulation", quick=quick)
        ctx = EvalContext(dd, meta, as_predictor(model), "test", meta.session_ids, batch_size=16,
                          baseline_cache=BaselineCache(tmp_path / f"q{quick}"))
        timing = calibrate(ctx, [task])
        cost, = estimate_costs(ctx, [task], timing)
        assert cost.glm_sim > 0 and cost.sim_fits == (3 * 4 + 1 if not quick else 2 * 2 + 1)
        t0 = time.perf_counter()
        res = RUNNERS[task.kind](ctx, task)
        took = time.perf_counter() - t0
        assert "glm/psth_r_condition" in res or "glm/pearson_r" in res, res
        rows.append((quick, cost.seconds, took, cost.glm_sim * timing["glm_sim"]))
        again, = estimate_costs(ctx, [task], timing)  # the fit is cached now
        assert again.glm_sim == 0 and any("in the baseline cache" in n for n in again.notes)
    report = "; ".join(f"quick={q}: estimated {e:.2f} s (glm {g:.2f} s), took {t:.2f} s" for q, e, t, g in rows)
    for _, est, took, _ in rows:
        assert est / STATED_FACTOR - 0.05 <= took <= est * STATED_FACTOR + 0.05, report
    assert rows[1][1] < rows[0][1] and rows[1][2] < rows[0][2], report
