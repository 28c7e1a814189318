"""Alignment and binning against an independent per-trial np.histogram2d count."""
import numpy as np
import pytest

from nfm.data.binning import align_events, bin_spikes, bin_trials, interpolate_at, n_bins_for


def _reference_counts(times, units, n_units, align, window, bin_size):
    T = n_bins_for(window, bin_size)
    edges_t = window[0] + bin_size * np.arange(T + 1)
    out = np.zeros((len(align), T, n_units), dtype=np.int64)
    for k, a in enumerate(align):
        sel = (times >= a + window[0]) & (times < a + window[1])
        h, _, _ = np.histogram2d(times[sel] - a, units[sel], bins=[edges_t, np.arange(n_units + 1) - 0.5])
        out[k] = h
    return out


def test_bin_trials_matches_histogram_with_overlapping_windows():
    rng = np.random.default_rng(1)
    times = np.sort(rng.uniform(0, 60, 20000))
    units = rng.integers(0, 13, len(times))
    align = np.sort(rng.uniform(1, 58, 40))  # windows overlap
    got = bin_trials(times, units, 13, align, (-0.5, 1.5), 0.02)
    ref = _reference_counts(times, units, 13, align, (-0.5, 1.5), 0.02)
    assert got.shape == (40, 100, 13)
    # histogram2d closes the last edge; our window is half-open: compare interior exactly
    np.testing.assert_array_equal(got, ref)
    assert got.sum() == sum(((times >= a - 0.5) & (times < a + 1.5)).sum() for a in align)


def test_align_events_order_and_window_edges():
    times = np.array([0.0, 1.0, 1.0, 1.0, 2.0, 2.999, 3.0])
    units = np.array([0, 4, 1, 3, 2, 5, 6])
    offsets, rel, u = align_events(times, units, np.array([1.0]), (0.0, 2.0))
    assert offsets.tolist() == [0, 5]
    # ties at t=1.0 are ordered by unit; t=3.0 is outside [1, 3)
    assert u.tolist() == [1, 3, 4, 2, 5]
    np.testing.assert_allclose(rel, [0, 0, 0, 1.0, 1.999])


def test_bin_spikes_single_trial_and_bad_window():
    c = bin_spikes(np.array([0.01, 0.015, 0.5]), np.array([1, 1, 0]), 2, (0.0, 1.0), 0.1)
    assert c[0, 1] == 2 and c[5, 0] == 1 and c.sum() == 3
    with pytest.raises(ValueError, match="whole number"):
        n_bins_for((0.0, 1.0), 0.3)


def test_interpolate_nan_outside_range_and_multi_signal():
    t = np.array([0.0, 1.0, 2.0])
    v = np.array([[0.0, 10.0], [1.0, 20.0], [4.0, 40.0]])
    got = interpolate_at(t, v, np.array([0.5, 1.5, 2.5, -1.0]))
    np.testing.assert_allclose(got[:2], [[0.5, 15.0], [2.5, 30.0]])
    assert np.isnan(got[2:]).all()


def test_one_binning_rule_numpy_and_torch_agree_on_edges():
    import torch

    from nfm.data.binning import TIME_EPS, bin_index, bin_index_torch

    bin_size, T, start = 0.02, 100, -0.5
    edges = start + bin_size * np.arange(T)  # every bin edge, in float64 and as float32 (how rows store times)
    times = np.concatenate([edges, edges.astype(np.float32).astype(np.float64), edges + 0.5 * bin_size,
                            [start + T * bin_size - 1e-9, start + T * bin_size - TIME_EPS / 2, start - TIME_EPS / 2]])
    want = np.concatenate([np.arange(T), np.arange(T), np.arange(T), [T - 1, T - 1, 0]])
    got = bin_index(times, bin_size, T, start)
    np.testing.assert_array_equal(got, want)  # an edge time belongs to the bin it starts, float32 or not
    np.testing.assert_array_equal(bin_index_torch(torch.from_numpy(times), bin_size, T, start).numpy(), want)
    # the tokenizer's windows and dt classes and the collator's bins follow the same rule
    rel = torch.tensor([[0.04, 0.03999, 0.06, 0.0399999]])  # float32, as the collator stores them
    np.testing.assert_array_equal(bin_index_torch(rel, 0.02, 5).numpy(), [[2, 1, 3, 2]])  # 0.1 us below an edge: its bin
    for bad in ([start - 1e-3], [start + T * bin_size + 1e-3], [np.nan]):  # before, after the window, not a time
        with pytest.raises(ValueError, match="outside the window"):
            bin_index(np.array(bad), bin_size, T, start)
        with pytest.raises(ValueError, match="outside the window"):
            bin_index_torch(torch.tensor(bad, dtype=torch.float64), bin_size, T, start)
    masked = bin_index_torch(torch.tensor([[9.0, 0.01]]), 0.02, 5, valid=torch.tensor([[False, True]]))
    assert masked.tolist() == [[0, 0]]  # padding entries are not checked


def test_sum_and_mean_bins_refuse_partial_groups():
    from nfm.data.binning import mean_bins, sum_bins

    x = np.arange(24, dtype=float).reshape(2, 6, 2)
    np.testing.assert_array_equal(sum_bins(x, 3), x.reshape(2, 2, 3, 2).sum(2))
    np.testing.assert_array_equal(mean_bins(x, 2), x.reshape(2, 3, 2, 2).mean(2))
    with pytest.raises(ValueError, match="cannot be grouped by 4"):
        sum_bins(x, 4)
