"""Connectivity scoring (W[i, j] = weight from source j to target i) and count-based baselines."""
import itertools

import numpy as np
import pytest

from nfm.evaluation.connectivity import (
    cross_correlogram_matrix,
    cross_correlograms,
    direction_accuracy,
    edge_auprc,
    edge_auroc,
    pearson_matrix,
    plot_connectivity,
)


def random_weights(rng, n=40, p=0.1):
    w = np.where(rng.random((n, n)) < p, rng.uniform(0.5, 1.5, (n, n)), 0.0)
    np.fill_diagonal(w, 0.0)
    return w


def test_auroc_auprc_hand_case():
    w = np.array([[0, 1, 0], [0, 0, 0], [2, 0, 0]], dtype=float)  # edges 1->0 and 0->2
    score = np.array([[9, 0.8, 0.1], [0.3, 9, 0.9], [-0.5, 0.2, 9]])  # diagonal ignored
    pos = [0.8, 0.5]  # |score| of the two edges
    neg = [0.1, 0.3, 0.9, 0.2]
    wins = sum((p > q) + 0.5 * (p == q) for p, q in itertools.product(pos, neg))
    assert edge_auroc(score, w) == pytest.approx(wins / 8)
    # average precision by hand: ranking 0.9(neg) 0.8(pos) 0.5(pos) ...: AP = (1/2 + 2/3) / 2
    assert edge_auprc(score, w) == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_auroc_perfect_and_random():
    rng = np.random.default_rng(0)
    w = random_weights(rng)
    assert edge_auroc(w, w) == 1.0 and edge_auprc(w, w) == pytest.approx(1.0)
    assert edge_auroc(-w, w) == 1.0  # magnitudes are scored
    aucs = [edge_auroc(rng.normal(size=w.shape), w) for _ in range(5)]
    assert abs(np.mean(aucs) - 0.5) < 0.05
    with pytest.raises(ValueError, match="both connected and unconnected"):
        edge_auroc(w, np.zeros_like(w))


def test_direction_accuracy():
    rng = np.random.default_rng(1)
    w = random_weights(rng)
    assert direction_accuracy(w, w) == 1.0
    assert direction_accuracy(w.T, w) == 0.0
    assert direction_accuracy(-w, w) == 1.0  # inhibitory-looking score, magnitude compared
    # hand case: 1->0 one-way, 0<->2 two-way (excluded), 1->2 one-way, ties count as wrong
    w = np.array([[0, 1, 1], [0, 0, 0], [1, 1, 0]], dtype=float)
    score = np.array([[0, 0.7, 0], [0.2, 0, 0.4], [5, 0.4, 0]])
    assert direction_accuracy(score, w) == pytest.approx(0.5)  # 1->0 right, 1->2 tie
    with pytest.raises(ValueError, match="one-way"):
        direction_accuracy(score, np.ones((3, 3)))


def test_cross_correlograms_against_explicit_shifts():
    rng = np.random.default_rng(2)
    counts = rng.poisson(1.0, size=(3, 40, 4)).astype(float)
    lags, ccg = cross_correlograms(counts, 3)
    flat = counts.reshape(-1, 4)
    z = (counts - flat.mean(axis=0)) / flat.std(axis=0)
    for k, lag in enumerate(lags):
        for i in range(4):
            for j in range(4):
                prods = []
                for tr in range(3):  # lags never cross a trial boundary
                    for t in range(40):
                        if 0 <= t + lag < 40:
                            prods.append(z[tr, t + lag, i] * z[tr, t, j])
                assert ccg[k, i, j] == pytest.approx(np.mean(prods), abs=1e-12)
    assert np.allclose(ccg[lags == 0][0], pearson_matrix(counts))
    assert np.allclose(pearson_matrix(counts), np.corrcoef(flat.T))


def lagged_pair(rng, n_bins=20000):
    """Unit 0 (slow rate fluctuations) drives unit 1 at lags 1-2 bins; unit 2 independent."""
    slow = np.convolve(rng.normal(size=n_bins), np.ones(20) / np.sqrt(20), mode="same")
    x0 = rng.poisson(0.3 * np.exp(slow))
    drive = np.concatenate([[0, 0], x0[1:-1] + x0[:-2]])
    x1 = rng.poisson(0.1 + 0.4 * drive)
    x2 = rng.poisson(0.3, size=n_bins)
    return np.stack([x0, x1, x2], axis=1).astype(float)


def test_baselines_on_lagged_drive_pick_the_right_direction():
    counts = lagged_pair(np.random.default_rng(3))
    p = pearson_matrix(counts)
    assert np.allclose(p, p.T)
    # zero-lag r finds the pair (the source's slow rate makes it visible at lag 0), not its direction
    assert p[1, 0] > 0.2 and abs(p[2, 0]) < 0.03 and abs(p[2, 1]) < 0.03
    s = cross_correlogram_matrix(counts, 4)
    # the slow source rate also correlates 1 with 0's future, but less than the drive: 0 -> 1 = W[1, 0]
    assert s[1, 0] > 0.4 and abs(s[0, 1]) < 0.75 * s[1, 0] and abs(s[2, 0]) < 0.03
    w = np.zeros((3, 3))
    w[1, 0] = 1.0
    assert direction_accuracy(s, w) == 1.0 and direction_accuracy(s.T, w) == 0.0
    a = cross_correlogram_matrix(counts, 4, mode="asymmetry")
    assert np.allclose(a, -a.T) and a[1, 0] > 0.1


def test_ccg_recovers_network_better_than_chance():
    rng = np.random.default_rng(4)
    n, n_bins = 25, 6000
    w = 0.5 * random_weights(rng, n, p=0.12)  # excitatory lag-1 couplings 0.25..0.75
    b = np.log(0.1)
    x = np.zeros((n_bins, n))
    for t in range(1, n_bins):  # sequential by nature: one vectorised step per bin
        x[t] = rng.poisson(np.exp(b + w @ np.minimum(x[t - 1], 3)))
    assert 0.05 < x.mean() < 0.5  # a stable, not runaway, network
    s = cross_correlogram_matrix(x, 2)
    assert edge_auroc(s, w) > 0.9
    assert direction_accuracy(s, w) > 0.9
    assert edge_auroc(pearson_matrix(x), w) < edge_auroc(s, w)


def test_plot_connectivity(tmp_path):
    rng = np.random.default_rng(5)
    w = random_weights(rng, 12)
    path = plot_connectivity({"ground truth": w, "random": rng.normal(size=w.shape)}, tmp_path / "c" / "conn.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    img = matplotlib.image.imread(path)
    assert img.shape[1] > img.shape[0]  # two panels side by side
    with pytest.raises(ValueError, match="square"):
        plot_connectivity({"bad": np.zeros((3, 4))}, tmp_path / "bad.png")
