"""Session -> Arrow DatasetDict -> disk -> back, checked against independent numpy counts."""
import os

import numpy as np
import pytest

from nfm.data.binning import bin_trials
from nfm.data.hf import build_dataset, load_dataset, save_dataset
from nfm.data.records import assign_splits, consecutive_windows
from nfm.data.schema import DataError, Session


def _session(sid="s1", subject="m1", n_units=5, seed=0, **kw):
    rng = np.random.default_rng(seed)
    times = np.sort(rng.uniform(0, 50, 4000))
    units = rng.integers(0, n_units, len(times))
    trials = {"stimOn_times": np.arange(2.0, 48.0, 2.5), "choice": np.resize([1.0, -1.0], 19)}
    return Session(sid, subject, units={"unit_id": np.array([f"u{i}" for i in range(n_units)]),
                                        "region": np.array(["VISp", "CA1", "CA1", "LP", "LP"][:n_units])},
                   trials=trials, spike_times=times, spike_units=units,
                   behavior={"wheel_speed": (np.linspace(0, 50, 501), np.linspace(0, 5, 501))},
                   behavior_units={"wheel_speed": "rad/s"}, source=f"mem:{sid}", **kw)


def test_rows_hold_the_right_spikes_and_survive_save_load(tmp_path):
    s1, s2 = _session(), _session("s2", "m2", seed=1)
    del s2.behavior["wheel_speed"]
    dd, meta = build_dataset([s1, s2])
    out = save_dataset(dd, meta, tmp_path / "ds")
    dd2, meta2 = load_dataset(out)
    assert meta2.to_dict() == meta.to_dict()
    ref = {s.session_id: bin_trials(s.spike_times, s.spike_units, s.n_units, s.trials["stimOn_times"], (-0.5, 1.5), 0.02)
           for s in (s1, s2)}
    n_rows = 0
    for split in ("train", "validation", "test"):
        for row in dd2[split]:
            n_rows += 1
            r = ref[row["session_id"]][row["trial_id"]]
            counts = bin_trials(np.asarray(row["spike_times"], dtype=np.float64), np.asarray(row["spike_units"]),
                                r.shape[1], np.zeros(1), (-0.5, 1.5), 0.02)[0]
            np.testing.assert_array_equal(counts, r)
            assert row["split"] == split
            wheel = np.asarray(row["behavior_wheel_speed"])
            if row["session_id"] == "s1":
                centre = s1.trials["stimOn_times"][row["trial_id"]] - 0.5 + 0.01
                assert wheel[0] == pytest.approx(centre / 10, rel=1e-5)
            else:
                assert np.isnan(wheel).all()  # absent signal is NaN, not zero
    assert n_rows == 38
    assert meta.sessions["s1"].units["region"][0] == "VISp"
    assert "choice" in meta.trial_label_names and "stimOn_times" not in meta.trial_label_names
    assert (out / "README.md").read_text().count("| s") >= 2


def test_splits_are_deterministic_and_proportional():
    a, b = assign_splits(100, seed=42), assign_splits(100, seed=42)
    np.testing.assert_array_equal(a, b)
    assert np.bincount(a).tolist() == [70, 10, 20]
    assert not np.array_equal(a, assign_splits(100, seed=1))


def test_save_is_atomic_and_refuses_overwrite(tmp_path, monkeypatch):
    dd, meta = build_dataset([_session()])
    save_dataset(dd, meta, tmp_path / "ds")
    with pytest.raises(FileExistsError):
        save_dataset(dd, meta, tmp_path / "ds")
    # a crash while writing leaves neither a half-written folder nor temp debris
    import nfm.data.hf as hf

    def boom(*a, **k):
        raise RuntimeError("disk full")
    monkeypatch.setattr(hf, "render_card", boom)
    with pytest.raises(RuntimeError):
        save_dataset(dd, meta, tmp_path / "ds2")
    assert sorted(os.listdir(tmp_path)) == ["ds"]


@pytest.mark.parametrize("mutate, field, value", [
    (lambda s: s.spike_times.__setitem__(5, np.nan), "spike_times", "nan"),
    (lambda s: s.spike_times.__setitem__(0, -1.0), "spike_times", "-1.0"),
    (lambda s: s.spike_units.__setitem__(3, 99), "spike_units", "99"),
    (lambda s: s.spike_times.__setitem__(slice(10, 12), [40.0, 1.0]), "spike_times", "not sorted"),
    (lambda s: s.trials.__setitem__("stimOn_times", s.trials["stimOn_times"][:-1]), "trials.choice", "length 19 != 18"),
])
def test_bad_input_names_file_field_and_value(mutate, field, value):
    s = _session()
    mutate(s)
    with pytest.raises(DataError) as e:
        build_dataset([s])
    msg = str(e.value)
    assert "mem:s1" in msg and field in msg and value in msg


def test_window_past_recording_end_and_nan_align_are_errors():
    s = _session(recording_end=30.0)
    with pytest.raises(DataError, match="after the recording end"):
        build_dataset([s])
    s = _session()
    s.trials["stimOn_times"][4] = np.nan
    with pytest.raises(DataError, match="trial 4"):
        build_dataset([s])


def test_consecutive_windows():
    w = consecutive_windows(10.0, 17.5, 2.0)
    np.testing.assert_allclose(w["start_time"], [10, 12, 14])
    np.testing.assert_allclose(w["stop_time"], [12, 14, 16])
    with pytest.raises(ValueError):
        consecutive_windows(0.0, 1.0, 2.0)
