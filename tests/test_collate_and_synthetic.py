"""Collator batches and the synthetic worlds (determinism, ground truth, signal)."""
import numpy as np
import pytest
import torch

from nfm.data.binning import bin_trials
from nfm.data.collate import NfmCollator
from nfm.data.hf import build_dataset
from nfm.data.sources import synthetic


@pytest.fixture(scope="module")
def world():
    return synthetic.make_ibl_like_world(n_animals=3, n_trials=30, seed=3)


def test_ibl_like_world_is_deterministic_and_valid(world):
    again = synthetic.make_ibl_like_world(n_animals=3, n_trials=30, seed=3)
    other = synthetic.make_ibl_like_world(n_animals=3, n_trials=30, seed=4)
    for a, b in zip(world, again):
        a.validate()
        np.testing.assert_array_equal(a.spike_times, b.spike_times)
        np.testing.assert_array_equal(a.spike_units, b.spike_units)
    assert not np.array_equal(world[0].spike_times[:100], other[0].spike_times[:100])
    assert len({s.subject_id for s in world}) == 3
    assert all(len(set(s.units["region"])) >= 3 for s in world)


def test_ibl_like_world_carries_task_signal(world):
    s = world[0]
    counts = bin_trials(s.spike_times, s.spike_units, s.n_units, s.trials["firstMovement_times"], (0.0, 0.3), 0.3)[:, 0]
    mos = s.units["region"] == "MOs"
    wheel_t, wheel = s.behavior["wheel_speed"]
    # wheel speed after movement onset follows the choice sign
    idx = np.searchsorted(wheel_t, s.trials["firstMovement_times"] + 0.15)
    corr = np.corrcoef(wheel[idx], s.trials["choice"])[0, 1]
    assert corr > 0.5
    assert counts.sum() > 0 and (mos.any() or "MOs" not in s.extra["recorded_regions"])


def test_hub_network_ground_truth():
    s, W = synthetic.make_hub_network(n_neurons=20, duration=40.0, seed=1)
    s.validate()
    assert W.shape == (20, 20) and np.all(np.diag(W) == 0)
    hubs = s.extra["hubs"]
    out_degree = (W != 0).sum(axis=0)
    assert out_degree[hubs].min() > np.median(out_degree)
    np.testing.assert_array_equal(np.asarray(s.extra["true_weights"]), W)
    s2, W2 = synthetic.make_hub_network(n_neurons=20, duration=40.0, seed=1)
    np.testing.assert_array_equal(s.spike_times, s2.spike_times)
    # a strong excitatory edge raises the target's rate just after source spikes
    i, j = np.unravel_index(np.argmax(W), W.shape)
    src = s.spike_times[s.spike_units == j]
    tgt = s.spike_times[s.spike_units == i]
    after = np.searchsorted(tgt, src + 0.01) - np.searchsorted(tgt, src)
    before = np.searchsorted(tgt, src) - np.searchsorted(tgt, src - 0.01)
    assert after.mean() > 1.2 * before.mean()


def test_drift_world_is_continuous_and_drifts(tmp_path):
    from nfm.data.prepare import prepare

    sessions = synthetic.make_drift_world(n_animals=2, duration=240.0, seed=5)
    assert [s.session_id for s in sessions] == ["drift-00-00", "drift-01-00"]
    for s in sessions:
        s.validate()
        start, stop = s.trials["start_time"], s.trials["stop_time"]
        np.testing.assert_allclose(stop[:-1], start[1:])  # back-to-back 2 s windows over the recording
        assert start[0] == 0.0 and stop[-1] == pytest.approx(240.0) and np.allclose(stop - start, 2.0)
        # the population rate drifts: 40 s blocks differ far more than Poisson noise of their counts allows
        counts = np.histogram(s.spike_times, bins=np.arange(0.0, 240.1, 40.0))[0]
        assert (counts.max() - counts.min()) > 10 * np.sqrt(counts.mean())
    again = synthetic.make_drift_world(n_animals=2, duration=240.0, seed=5)
    np.testing.assert_array_equal(sessions[1].spike_times, again[1].spike_times)
    # prepared as a dataset, the windows are split contiguously in time (test = the end of the recording)
    prepare("synthetic", tmp_path / "drift", world="drift", source_options={"n_animals": 1, "duration": 60.0},
            progress=False)
    from nfm.data.hf import load_dataset

    dd, meta = load_dataset(tmp_path / "drift")
    t = {k: np.asarray(dd[k]["trial_start_time"]) for k in ("train", "test")}
    assert t["train"].max() < t["test"].min()


def test_calcium_world_shapes_and_tuning():
    ss = synthetic.make_calcium_world(n_animals=1, n_cells=10, n_trials=40, seed=2)
    s = ss[0].validate()
    assert s.modality == "calcium" and s.activity.shape == (len(s.frame_times), 10)
    assert np.all(s.activity >= 0)
    assert np.median(np.diff(s.frame_times)) == pytest.approx(0.1)


def test_collator_counts_equal_independent_binning(world):
    dd, meta = build_dataset(world)
    rows = [dd["train"][i] for i in range(0, 40, 5)]  # mixes sessions with different unit counts
    batch = NfmCollator(meta)(rows)
    B, T, N = batch["spikes"].shape
    assert T == 100 and N == max(meta.sessions[r["session_id"]].n_units for r in rows)
    by_id = {s.session_id: s for s in world}
    for b, r in enumerate(rows):
        s = by_id[r["session_id"]]
        ref = bin_trials(s.spike_times, s.spike_units, s.n_units, s.trials["stimOn_times"][[r["trial_id"]]], (-0.5, 1.5), 0.02)[0]
        np.testing.assert_array_equal(batch["spikes"][b, :, : s.n_units].numpy(), ref)
        assert batch["spikes"][b, :, s.n_units:].sum() == 0
        assert batch["unit_mask"][b].sum() == s.n_units
        n_ev = int(batch["event_mask"][b].sum())
        assert n_ev == ref.sum()
        ev_t = batch["event_times"][b, :n_ev].numpy()
        assert np.all(np.diff(ev_t) >= 0) and ev_t.min() >= 0 and ev_t.max() < 2.0
        assert batch["trial_labels"][b, meta.trial_label_names.index("choice")] == s.trials["choice"][r["trial_id"]]
    assert batch["behavior"].shape == (B, T, 2) and torch.isfinite(batch["behavior"]).all()
    assert batch["unit_region"].max() < len(["unknown"] + meta.regions)


def test_collator_rebins_and_refuses_unknown_session(world):
    dd, meta = build_dataset(world[:1])
    rows = [dd["train"][i] for i in range(4)]
    b20 = NfmCollator(meta)(rows)["spikes"]
    b100 = NfmCollator(meta, bin_size=0.1)(rows)["spikes"]
    assert b100.shape[1] == 20
    torch.testing.assert_close(b100, b20.reshape(4, 20, 5, -1).sum(2))
    rows[0] = dict(rows[0], session_id="nope")
    with pytest.raises(KeyError, match="nope"):
        NfmCollator(meta)(rows)
