"""Spike events <-> (unit, dt) tokens: order, dt classes, specials, round trip, binning, errors."""
import numpy as np
import pytest
import torch

from nfm.models.tokenization import NO_UNIT, bin_events, special_ids, tokenize_events, tokens_to_events

W, DT, K = 0.05, 0.01, 4  # 5 dt classes per window, 4 windows (0.2 s trial)


def _reference(times, units, mask):
    """Pure-python tokenisation of one batch (the vectorised code must agree)."""
    out = []
    for b in range(times.shape[0]):
        wins = [[] for _ in range(K)]
        for t, u, m in zip(times[b].tolist(), units[b].tolist(), mask[b].tolist()):
            if m:
                k = int(np.floor(t / W + 1e-9))
                dt = min(int(np.floor((t - k * W) / DT + 1e-9)), 4)
                wins[k].append((dt, u))
        out.append([sorted(w) for w in wins])
    return out


def test_order_dt_classes_and_specials():
    # time order is unit 5 then unit 3 inside one 10 ms class: tokens must put unit 3 first
    times = torch.tensor([[0.001, 0.004, 0.012, 0.051, 0.199, 0.0]])
    units = torch.tensor([[5, 3, 5, 0, 2, 0]])
    mask = torch.tensor([[True, True, True, True, True, False]])
    tok = tokenize_events(times, units, mask, window_s=W, n_windows=K, dt_resolution=DT)
    EOS, SOS, PAD = special_ids(5)
    assert tok.n_events.tolist() == [[3, 1, 0, 1]]
    assert tok.units[0, 0].tolist() == [NO_UNIT, 3, 5, 5, NO_UNIT]
    assert tok.dts[0, 0].tolist() == [SOS, 0, 0, 1, EOS]
    assert tok.dts[0, 2].tolist() == [SOS, EOS, PAD, PAD, PAD]
    assert tok.units[0, 3, :3].tolist() == [NO_UNIT, 2, NO_UNIT] and tok.dts[0, 3, 1] == 4
    assert tok.mask[0, 1].tolist() == [True, True, True, False, False]
    assert tok.events.sum() == 5


def test_random_batch_matches_reference_and_round_trips():
    rng = np.random.default_rng(0)
    B, E = 3, 60
    times = torch.from_numpy(np.sort(rng.uniform(0, K * W, (B, E)), axis=1).astype(np.float32))
    units = torch.from_numpy(rng.integers(0, 7, (B, E)))
    mask = torch.from_numpy(rng.random((B, E)) < 0.8)
    tok = tokenize_events(times, units, mask, window_s=W, n_windows=K, dt_resolution=DT)
    ref = _reference(times, units, mask)
    for b in range(B):
        for k in range(K):
            n = int(tok.n_events[b, k])
            got = list(zip(tok.dts[b, k, 1:n + 1].tolist(), tok.units[b, k, 1:n + 1].tolist()))
            assert got == ref[b][k]
    ev_t, ev_u, ev_m = tokens_to_events(tok.units, tok.dts, 0, window_s=W, dt_resolution=DT)
    assert ev_m.sum(1).tolist() == mask.sum(1).tolist()
    for b in range(B):
        t0, u0 = times[b][mask[b]].numpy(), units[b][mask[b]].numpy()
        t1, u1 = ev_t[b][ev_m[b]].numpy(), ev_u[b][ev_m[b]].numpy()
        # same multiset of (dt-class, unit); decoded times are dt-class centres
        key0 = sorted(zip(np.floor(t0 / DT + 1e-6).astype(int).tolist(), u0.tolist()))
        key1 = sorted(zip(np.floor(t1 / DT).astype(int).tolist(), u1.tolist()))
        assert key0 == key1
        assert np.all(np.diff(t1) >= 0)  # sorted by time ...
        same = np.diff(t1) == 0
        assert np.all(np.diff(u1)[same] >= 0)  # ... then unit
        assert np.allclose((t1 / DT) % 1, 0.5, atol=1e-3)


def test_bin_events_matches_numpy():
    rng = np.random.default_rng(1)
    times = torch.from_numpy(rng.uniform(0, 0.2, (2, 30)).astype(np.float32))
    units = torch.from_numpy(rng.integers(0, 5, (2, 30)))
    mask = torch.ones(2, 30, dtype=torch.bool)
    mask[1, 20:] = False
    counts = bin_events(times, units, mask, n_bins=10, n_units=5, bin_size=0.02)
    ref = np.zeros((2, 10, 5))
    for b in range(2):
        m = mask[b].numpy()
        np.add.at(ref[b], (np.floor(times[b].numpy()[m] / 0.02).astype(int), units[b].numpy()[m]), 1)
    assert np.array_equal(counts.numpy(), ref)


def test_bad_events_raise():
    ok = torch.tensor([[True]])
    with pytest.raises(ValueError, match=r"event 0 of trial 0: time 0.25 s is outside the window"):
        tokenize_events(torch.tensor([[0.25]]), torch.tensor([[1]]), ok, window_s=W, n_windows=K, dt_resolution=DT)
    with pytest.raises(ValueError, match="negative unit"):
        tokenize_events(torch.tensor([[0.1]]), torch.tensor([[-2]]), ok, window_s=W, n_windows=K, dt_resolution=DT)
    with pytest.raises(ValueError, match="unit 7 is outside 0..4"):
        bin_events(torch.tensor([[0.1]]), torch.tensor([[7]]), ok, n_bins=10, n_units=5, bin_size=0.02)
    # padding entries may hold anything
    tok = tokenize_events(torch.tensor([[9.0]]), torch.tensor([[-5]]), ~ok, window_s=W, n_windows=K, dt_resolution=DT)
    assert tok.n_events.sum() == 0 and tok.units.shape == (1, K, 2)


def test_tokens_to_events_with_no_tokens():
    empty = torch.zeros(3, 1, 0, dtype=torch.long)
    t, u, m = tokens_to_events(empty, empty, 5, window_s=0.04, dt_resolution=0.01, n_dt=4)
    assert t.shape == u.shape == m.shape == (3, 0)
