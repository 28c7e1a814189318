"""suite2p folders written with np.save (as suite2p does) -> Session."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from nfm.data.schema import DataError
from nfm.data.sources import suite2p as s2p

FS = 10.0  # Hz per plane


def write_suite2p(root: Path, *, n_frames=(60, 59), n_rois=(5, 4), fs=FS, seed=0, ops=True) -> dict:
    """A 2-plane suite2p output under root/suite2p; returns the arrays written."""
    rng = np.random.default_rng(seed)
    out = {}
    for p, (F, N) in enumerate(zip(n_frames, n_rois)):
        d = root / "suite2p" / f"plane{p}"
        d.mkdir(parents=True)
        spks = rng.gamma(1.0, 1.0, size=(N, F)).astype(np.float32)
        flag = (np.arange(N) % 3 != 1).astype(np.float64)  # ROIs 1, 4, ... are not cells
        iscell = np.stack([flag, rng.uniform(0, 1, N)], axis=1)
        np.save(d / "spks.npy", spks)
        np.save(d / "iscell.npy", iscell)
        if ops:  # a pickled dict, as suite2p writes it, with numpy values inside
            np.save(d / "ops.npy", {"fs": np.float64(fs), "nplanes": len(n_frames), "badframes": np.zeros(F, bool),
                                    "meanImg": rng.normal(size=(4, 4)), "save_path": str(d), "tau": 1.5,
                                    "nframes": np.int64(F), "filelist": ["a.tif", "b.tif"]})
        out[p] = (spks, iscell)
    return out


def test_two_planes_counts_values_and_clock(tmp_path):
    data = write_suite2p(tmp_path)
    ses = s2p.load_session(tmp_path, session_id="rec1", subject_id="m1")
    spks0, isc0 = data[0]
    spks1, isc1 = data[1]
    cells0, cells1 = np.flatnonzero(isc0[:, 0] == 1), np.flatnonzero(isc1[:, 0] == 1)
    assert ses.modality == "calcium" and ses.activity_kind == "deconvolved"
    assert ses.n_units == len(cells0) + len(cells1) == 3 + 3
    assert list(ses.units["unit_id"]) == [f"plane0_roi{i}" for i in cells0] + [f"plane1_roi{i}" for i in cells1]
    assert set(ses.units["region"]) == {"unknown"}
    np.testing.assert_array_equal(ses.units["plane"], [0] * 3 + [1] * 3)
    np.testing.assert_allclose(ses.units["cell_probability"], np.r_[isc0[cells0, 1], isc1[cells1, 1]])
    # clock: plane 0 frames, truncated to the shortest plane (59), recorded
    F = 59
    np.testing.assert_allclose(ses.frame_times, np.arange(F) / FS)
    assert ses.extra["n_frames_truncated"] == {"plane0": 1}
    assert ses.extra["frame_rate_hz"] == FS and ses.extra["nplanes"] == 2
    assert ses.extra["n_rois_not_cell"] == 3
    # plane 0 is copied exactly; plane 1 (offset half a frame) is interpolated independently
    np.testing.assert_array_equal(ses.activity[:, :3], spks0[cells0, :F].T)
    t1 = np.arange(F) / FS + 1 / (2 * FS)
    expect = np.stack([np.interp(ses.frame_times, t1, spks1[i, :F]) for i in cells1], axis=1)
    expect[ses.frame_times < t1[0]] = np.nan  # no extrapolation before plane 1's first frame
    np.testing.assert_allclose(ses.activity[:, 3:], expect, rtol=1e-5, equal_nan=True)
    assert np.isnan(ses.activity[0, 3:]).all() and np.isfinite(ses.activity[1:]).all()
    assert ses.extra["n_clock_frames_outside_plane"] == {"plane0": 0, "plane1": 1}
    # no trials given: consecutive 2 s windows over the recording (5.9 s -> 2 windows)
    np.testing.assert_allclose(ses.trials["start_time"], [0.0, 2.0])
    np.testing.assert_allclose(ses.trials["stop_time"], [2.0, 4.0])


def test_no_offsets_all_cells_and_suite2p_folder_path(tmp_path):
    data = write_suite2p(tmp_path, n_frames=(40, 40))
    ses = s2p.load_session(tmp_path / "suite2p", cells_only=False, plane_offsets=False, region="VISp")
    assert ses.n_units == 9 and ses.extra["n_frames_truncated"] == {}
    np.testing.assert_array_equal(ses.activity, np.concatenate([data[0][0], data[1][0]]).T)
    assert set(ses.units["region"]) == {"VISp"}
    assert ses.session_id == str(tmp_path.resolve()) == ses.subject_id


def test_frame_rate_argument_must_agree(tmp_path):
    write_suite2p(tmp_path)
    assert s2p.load_session(tmp_path, frame_rate=FS).extra["frame_rate_source"] == "argument"
    with pytest.raises(DataError, match=r"ops\.npy.*ops\.fs.*disagrees"):
        s2p.load_session(tmp_path, frame_rate=2 * FS)


def test_frame_rate_from_fall_mat_or_argument(tmp_path):
    write_suite2p(tmp_path, ops=False)
    with pytest.raises(DataError, match="frame rate is unknown"):
        s2p.load_session(tmp_path)
    ses = s2p.load_session(tmp_path, frame_rate=7.5)
    np.testing.assert_allclose(ses.frame_times[:3], np.arange(3) / 7.5)
    for p in (0, 1):
        scipy.io.savemat(tmp_path / "suite2p" / f"plane{p}" / "Fall.mat", {"ops": {"fs": 12.5, "nplanes": 2}})
    ses = s2p.load_session(tmp_path)
    assert ses.extra["frame_rate_hz"] == 12.5 and ses.extra["frame_rate_source"].endswith("Fall.mat")


def test_nan_frame_rate_is_refused(tmp_path):
    write_suite2p(tmp_path)
    np.save(tmp_path / "suite2p" / "plane1" / "ops.npy", {"fs": np.nan, "nplanes": 2})
    with pytest.raises(DataError, match=r"plane1/ops\.npy.*ops\.fs.*nan"):
        s2p.load_session(tmp_path)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_ops_is_refused_without_running(tmp_path):
    write_suite2p(tmp_path)
    marker = tmp_path / "pwned"
    ops_path = tmp_path / "suite2p" / "plane0" / "ops.npy"
    np.save(ops_path, {"fs": FS, "x": _Evil(marker)}, allow_pickle=True)
    assert b"system" in ops_path.read_bytes()  # the payload really is in the file
    with pytest.raises(DataError, match=r"plane0/ops\.npy.*refused.*system"):
        s2p.load_session(tmp_path)
    with pytest.raises(DataError, match="refused"):  # even when the rate is given
        s2p.load_session(tmp_path, frame_rate=FS)
    assert not marker.exists()
    # a plain pickle of a user class (not an ndarray) is refused as well
    with open(ops_path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False, "shape": ()})
        pickle.dump(_Evil(marker), f)
    with pytest.raises(DataError, match="refused"):
        s2p.read_ops_npy(ops_path)
    assert not marker.exists()


def test_restricted_unpickler_reads_numpy_content(tmp_path):
    ops = {"fs": np.float32(30.0), "arr": np.arange(6.0).reshape(2, 3), "set": {1, 2}, "c": 1 + 2j, "dt": np.dtype("i2")}
    np.save(tmp_path / "ops.npy", ops)
    back = s2p.read_ops_npy(tmp_path / "ops.npy")
    assert back["fs"] == np.float32(30.0) and back["set"] == {1, 2} and back["c"] == 1 + 2j
    np.testing.assert_array_equal(back["arr"], ops["arr"])
    assert back["dt"] == np.dtype("i2")


def test_bad_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"plane\*.*expected .*suite2p/plane0, plane1.*spks\.npy"):
        s2p.load_session(tmp_path / "empty", frame_rate=FS)
    with pytest.raises(DataError, match="not a folder"):
        s2p.load_session(tmp_path / "nowhere", frame_rate=FS)
    write_suite2p(tmp_path / "rec")
    (tmp_path / "rec" / "suite2p" / "plane1" / "spks.npy").unlink()
    with pytest.raises(DataError, match=r"plane1/spks\.npy.*'spks'.*missing; expected"):
        s2p.load_session(tmp_path / "rec")


def test_shape_mismatch_and_object_arrays(tmp_path):
    write_suite2p(tmp_path)
    plane0 = tmp_path / "suite2p" / "plane0"
    np.save(plane0 / "iscell.npy", np.ones((4, 2)))  # 5 ROIs in spks
    with pytest.raises(DataError, match=r"iscell\.npy.*shape \(4, 2\) does not match spks\.npy shape \(5, 60\)"):
        s2p.load_session(tmp_path)
    np.save(plane0 / "iscell.npy", np.ones((5, 2)))
    np.save(plane0 / "spks.npy", np.array([[1.0, "a"]] * 5, dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"plane0/spks\.npy.*object"):
        s2p.load_session(tmp_path)


def test_frame_counts_too_different_or_error_mode(tmp_path):
    write_suite2p(tmp_path / "a", n_frames=(60, 50))
    with pytest.raises(DataError, match="60 frames but plane1 has 50"):
        s2p.load_session(tmp_path / "a")
    write_suite2p(tmp_path / "b", n_frames=(60, 59))
    with pytest.raises(DataError, match="60 frames but plane1 has 59"):
        s2p.load_session(tmp_path / "b", on_length_mismatch="error")


def test_trials_csv_dict_and_behaviour(tmp_path):
    write_suite2p(tmp_path)
    csv = tmp_path / "trials.csv"
    csv.write_text("start_time,stimOn_times,contrast\n0.5,1.0,0.25\n2.5,3.0,\n4.0,4.5,1\n")
    beh_t = np.arange(0, 6, 0.01)
    ses = s2p.load_session(tmp_path, trials=csv, behavior={"running_speed": (beh_t, np.sin(beh_t))},
                           behavior_units={"running_speed": "cm/s"})
    np.testing.assert_allclose(ses.trials["stimOn_times"], [1.0, 3.0, 4.5])
    np.testing.assert_allclose(ses.trials["contrast"], [0.25, np.nan, 1.0])
    assert ses.behavior_units == {"running_speed": "cm/s"}
    d = s2p.load_session(tmp_path, trials={"start_time": [1.0, 2.0]})
    np.testing.assert_allclose(d.trials["start_time"], [1.0, 2.0])
    csv.write_text("start_time,stimOn_times\n0.5,1.0\n2.5,late\n")
    with pytest.raises(DataError, match=r"trials\.csv.*trials\.stimOn_times.*'late' at trial 1"):
        s2p.load_session(tmp_path, trials=csv)
    with pytest.raises(DataError, match="behavior_units.running_speed"):
        s2p.load_session(tmp_path, behavior={"running_speed": (beh_t, np.sin(beh_t))})


def test_load_sessions_per_session_arguments(tmp_path):
    write_suite2p(tmp_path / "r1", seed=1)
    write_suite2p(tmp_path / "r2", seed=2)
    sessions = s2p.load_sessions([tmp_path / "r1", tmp_path / "r2"], session_id=["s1", "s2"], subject_id="m")
    assert [s.session_id for s in sessions] == ["s1", "s2"] and {s.subject_id for s in sessions} == {"m"}
    assert not np.array_equal(sessions[0].activity[:, 0], sessions[1].activity[:, 0])


def test_build_dataset_on_consecutive_windows(tmp_path):
    from nfm.data.hf import build_dataset

    write_suite2p(tmp_path)
    ses = s2p.load_session(tmp_path, session_id="rec", subject_id="m")
    dd, meta = build_dataset([ses], align_event="start_time", window=(0.0, 2.0), bin_size=0.1,
                             calcium_binning="interpolate")
    assert meta.modality == "calcium" and meta.n_bins == 20 and meta.calcium_binning == "interpolate"
    rows = sorted((r for split in dd.values() for r in split), key=lambda r: r["trial_id"])
    assert [r["trial_id"] for r in rows] == [0, 1]
    for r in rows:
        centres = ses.trials["start_time"][r["trial_id"]] + (np.arange(20) + 0.5) * 0.1
        expect = np.stack([np.interp(centres, ses.frame_times, ses.activity[:, i].astype(np.float64))
                           for i in range(ses.n_units)], axis=1)
        np.testing.assert_allclose(np.asarray(r["activity"], np.float64), expect, rtol=1e-5, equal_nan=True)
    # plane 1's missing first frame (NaN) reaches the first bin of the first window only
    first = np.asarray(rows[0]["activity"])
    assert np.isnan(first[0, 3:]).all() and np.isfinite(first[1:]).all() and np.isfinite(first[0, :3]).all()


def test_build_dataset_frames_at_their_own_clock(tmp_path):
    """Default 2-photon binning: each bin is the mean of the frames whose time lies in it (brute force)."""
    from nfm.data.binning import frame_period
    from nfm.data.hf import build_dataset

    write_suite2p(tmp_path)
    ses = s2p.load_session(tmp_path, session_id="rec", subject_id="m")
    period = frame_period(ses.frame_times)
    dd, meta = build_dataset([ses], align_event="start_time", window=(0.0, 2.0), bin_size=0.2)
    assert meta.calcium_binning == "frames" and meta.frame_period == pytest.approx(period)
    for r in (r for split in dd.values() for r in split):
        t0 = ses.trials["start_time"][r["trial_id"]]
        got = np.asarray(r["activity"], np.float64)
        for b in range(meta.n_bins):
            inside = (ses.frame_times >= t0 + 0.2 * b - 1e-12) & (ses.frame_times < t0 + 0.2 * (b + 1) - 1e-12)
            frames = ses.activity[inside].astype(np.float64)
            ok = np.isfinite(frames)
            want = np.where(ok.any(0), np.where(ok, frames, 0).sum(0) / np.maximum(ok.sum(0), 1), np.nan)
            np.testing.assert_allclose(got[b], want, rtol=1e-5, equal_nan=True)
    with pytest.raises(Exception, match=r"finer than the imaging frame period .* Hz frames.*calcium_interpolate"):
        build_dataset([ses], align_event="start_time", window=(0.0, 2.0), bin_size=period / 2)
