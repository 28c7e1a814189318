"""IBL mesoscope ALF trees written to disk, read through the real ONE in local mode."""
from __future__ import annotations

import numpy as np
import pytest

from alf_fixtures import ibl_trials, make_alf_session, make_one, write_alf_object, write_trials, write_wheel
from nfm.data.hf import build_dataset
from nfm.data.schema import DataError
from nfm.data.sources import ibl_mesoscope as meso

PERIOD = 0.2  # s between frames of one FOV (5 Hz)
OFFSET = 0.07  # s: FOV_01 is scanned 0.07 s after FOV_00 in each frame period
N_FRAMES = 250  # FOV_00; FOV_01 has one frame fewer
# per FOV: Allen ids, ROI types (1 = cell), bad frames
FOV_SPEC = {
    "FOV_00": dict(ids=[593, 821, 382, 0, 593, 1047], types=[1, 0, 1, 1, 0, 1], bad=[10, 11, 120], t0=0.5),
    "FOV_01": dict(ids=[1047, -821, 382, 593, 997], types=[1, 1, 0, 1, 1], bad=[40], t0=0.5 + OFFSET),
}
BERYL = {593: "VISp", 821: "VISp", -821: "VISp", 382: "CA1", 0: "void", 1047: "SSp-bfd", 997: "root"}


def write_fov(ses, fov, *, n_frames, ids, types, bad, t0, rng, uuids=True, bad_len=None, drop=()):
    n = len(ids)
    bad_frames = np.zeros(n_frames if bad_len is None else bad_len, bool)
    bad_frames[bad] = True
    arrays = {
        "times": t0 + PERIOD * np.arange(n_frames),
        "ROIActivityDeconvolved": rng.gamma(1.0, 1.0, (n_frames, n)).astype(np.float32),
        "ROIActivityF": rng.normal(100.0, 5.0, (n_frames, n)).astype(np.float32),
        "badFrames": bad_frames,
    }
    write_alf_object(ses, f"alf/{fov}", "mpci", {k: v for k, v in arrays.items() if k not in drop})
    rois = {"mpciROITypes": np.asarray(types, np.int16),
            "brainLocationIds_ccf_2017_estimate": np.asarray(ids, np.int64),
            "mlapdv_estimate": rng.normal(0, 1000, (n, 3))}
    if uuids:
        rois["uuids.csv"] = {"uuids": [f"{fov}-uuid-{i}" for i in range(n)]}
    write_alf_object(ses, f"alf/{fov}", "mpciROIs", rois)
    return arrays, rois


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("meso")
    rng = np.random.default_rng(7)
    good = make_alf_session(root, "cortexlab", "SP001", "2024-03-01", 1)
    written = {}
    for k, (fov, spec) in enumerate(FOV_SPEC.items()):
        written[fov] = write_fov(good, fov, n_frames=N_FRAMES - k, rng=rng, **spec)
    trials = ibl_trials(10, rng, t0=2.0, spacing=4.0)
    # real mesoscope sessions keep task data in alf/task_00 (not alf)
    write_trials(good, trials, collection="alf/task_00")
    wt = np.arange(0.0, 52.0, 0.002)
    write_wheel(good, wt, np.sin(wt), collection="alf/task_00")
    # broken sessions, one fault each
    no_fov = make_alf_session(root, "cortexlab", "SP002", "2024-03-01", 1)
    write_trials(no_fov, trials)
    bad_len = make_alf_session(root, "cortexlab", "SP003", "2024-03-01", 1)
    write_fov(bad_len, "FOV_00", n_frames=50, rng=rng, bad_len=49, ids=[593, 382], types=[1, 1], bad=[10],
              t0=0.0)
    write_trials(bad_len, trials)
    bad_id = make_alf_session(root, "cortexlab", "SP004", "2024-03-01", 1)
    write_fov(bad_id, "FOV_00", n_frames=50, rng=rng, ids=[593, 12345678], types=[1, 1], bad=[], t0=0.0)
    write_trials(bad_id, trials)
    bad_types = make_alf_session(root, "cortexlab", "SP005", "2024-03-01", 1)
    write_fov(bad_types, "FOV_00", n_frames=50, rng=rng, ids=[593, 382], types=[1, 1, 1], bad=[], t0=0.0,
              uuids=False, drop=("ROIActivityF",))
    write_trials(bad_types, trials)
    no_uuids = make_alf_session(root, "cortexlab", "SP006", "2024-03-01", 1)
    write_fov(no_uuids, "FOV_03", n_frames=300, rng=rng, ids=[593, 382, 0], types=[0, 1, 1], bad=[], t0=0.0,
              uuids=False)
    write_trials(no_uuids, trials)
    one = make_one(root)
    eids = {name: str(one.path2eid(p)) for name, p in
            [("good", good), ("no_fov", no_fov), ("bad_len", bad_len), ("bad_id", bad_id), ("bad_types", bad_types),
             ("no_uuids", no_uuids)]}
    return {"root": root, "one": one, "eids": eids, "written": written, "trials": trials}


def expected_fov(world, fov, clock, key="ROIActivityDeconvolved", cells_only=True):
    """Independent reference: np.interp of each kept ROI with bad frames as NaN, NaN outside;
    a clock time within 1e-9 s of a source frame takes that frame's value (documented rule)."""
    arrays, rois = world["written"][fov]
    t, a = arrays["times"], arrays[key].astype(np.float64).copy()
    a[arrays["badFrames"]] = np.nan
    keep = np.flatnonzero(rois["mpciROITypes"] == 1) if cells_only else np.arange(a.shape[1])
    out = np.stack([np.interp(clock, t, a[:, i]) for i in keep], axis=1)
    nearest = np.clip(np.round((clock - t[0]) / PERIOD).astype(int), 0, len(t) - 1)
    hit = np.abs(t[nearest] - clock) <= 1e-9
    out[hit] = a[nearest[hit]][:, keep]
    out[(clock < t[0] - 1e-9) | (clock > t[-1] + 1e-9)] = np.nan
    return out, keep


def test_rois_regions_and_resampled_activity(world):
    one, eid = world["one"], world["eids"]["good"]
    ses = meso.load_session(eid, one)
    assert ses.modality == "calcium" and ses.activity_kind == "deconvolved"
    assert ses.session_id == eid and ses.subject_id == "SP001"
    n0, n1 = 4, 4  # cells per FOV
    assert ses.n_units == n0 + n1
    keep0 = np.flatnonzero(np.asarray(FOV_SPEC["FOV_00"]["types"]) == 1)
    keep1 = np.flatnonzero(np.asarray(FOV_SPEC["FOV_01"]["types"]) == 1)
    assert list(ses.units["unit_id"]) == ([f"FOV_00-uuid-{i}" for i in keep0] + [f"FOV_01-uuid-{i}" for i in keep1])
    ids = np.r_[np.asarray(FOV_SPEC["FOV_00"]["ids"])[keep0], np.asarray(FOV_SPEC["FOV_01"]["ids"])[keep1]]
    assert list(ses.units["region"]) == [BERYL[i] for i in ids]
    np.testing.assert_array_equal(ses.units["atlas_id"], ids)
    assert list(ses.units["fov"]) == ["FOV_00"] * n0 + ["FOV_01"] * n1
    np.testing.assert_allclose(ses.units["ml_um"][:n0], world["written"]["FOV_00"][1]["mlapdv_estimate"][keep0, 0])
    # clock = FOV_00 frame times; FOV_00 copied exactly with its bad frames as NaN
    t0 = world["written"]["FOV_00"][0]["times"]
    np.testing.assert_array_equal(ses.frame_times, t0)
    raw0 = world["written"]["FOV_00"][0]["ROIActivityDeconvolved"][:, keep0].copy()
    raw0[FOV_SPEC["FOV_00"]["bad"]] = np.nan
    np.testing.assert_array_equal(ses.activity[:, :n0], raw0)
    exp1, _ = expected_fov(world, "FOV_01", t0)
    np.testing.assert_allclose(ses.activity[:, n0:], exp1, rtol=1e-5, atol=1e-6, equal_nan=True)
    # FOV_01 starts 0.07 s later and ends one frame earlier: first and last clock frames are NaN;
    # its bad frame 40 spoils the two clock frames around it
    assert np.isnan(ses.activity[[0, -1], n0:]).all()
    assert np.isnan(ses.activity[[40, 41], n0:]).all() and np.isfinite(ses.activity[[39, 42], n0:]).all()
    fovs = ses.extra["fovs"]
    assert fovs["FOV_00"]["n_bad_frames"] == 3 and fovs["FOV_00"]["n_clock_frames_nan_from_bad"] == 3
    assert fovs["FOV_01"]["n_bad_frames"] == 1 and fovs["FOV_01"]["n_clock_frames_nan_from_bad"] == 2
    assert fovs["FOV_01"]["n_clock_frames_outside"] == 2 and fovs["FOV_00"]["n_clock_frames_outside"] == 0
    assert fovs["FOV_00"]["n_rois_not_cell"] == 2 and ses.extra["n_bad_frames"] == 4
    assert np.isnan(ses.activity).any(axis=1).sum() == 3 + 2 + 2  # nothing else is NaN
    # trials (all pass the MtM filters) and wheel speed from the Neuropixels source
    np.testing.assert_allclose(ses.trials["stimOn_times"], world["trials"]["stimOn_times"])
    assert ses.extra["trial_filter"]["n_kept"] == 10
    t_w, speed = ses.behavior["wheel_speed"]
    assert ses.behavior_units["wheel_speed"] == "rad/s"
    inside = (t_w > 5) & (t_w < 45)
    np.testing.assert_allclose(speed[inside], np.abs(np.cos(t_w[inside])), atol=0.02)


def test_all_rois_fluorescence_and_regular_clock(world):
    one, eid = world["one"], world["eids"]["good"]
    ses = meso.load_session(eid, one, activity="F", cells_only=False, clock="regular")
    assert ses.activity_kind == "F" and ses.n_units == 6 + 5
    t0 = world["written"]["FOV_00"][0]["times"]
    t1 = world["written"]["FOV_01"][0]["times"]
    assert ses.frame_times[0] == pytest.approx(t1[0]) and ses.frame_times[-1] <= t1[-1] + 1e-9
    np.testing.assert_allclose(np.diff(ses.frame_times), PERIOD, rtol=1e-3)
    for fov, cols in (("FOV_00", slice(0, 6)), ("FOV_01", slice(6, 11))):
        exp, _ = expected_fov(world, fov, ses.frame_times, key="ROIActivityF", cells_only=False)
        np.testing.assert_allclose(ses.activity[:, cols], exp, rtol=1e-5, equal_nan=True)
    assert ses.frame_times[0] > t0[0]  # regular grid lies inside every FOV's range


def test_build_dataset_activity_matches_numpy(world):
    ses = meso.load_session(world["eids"]["good"], world["one"])
    window, bin_size = (-0.5, 1.5), 0.1
    dd, meta = build_dataset([ses], align_event="stimOn_times", window=window, bin_size=bin_size,
                             calcium_binning="interpolate")  # 0.1 s bins between 5 Hz frames: explicit opt-in
    assert meta.modality == "calcium" and meta.n_bins == 20
    assert set(meta.sessions[ses.session_id].units["region"]) == {"VISp", "CA1", "void", "SSp-bfd", "root"}
    rows = [r for split in dd.values() for r in split]
    assert sorted(r["trial_id"] for r in rows) == list(range(10))
    centres_rel = window[0] + (np.arange(20) + 0.5) * bin_size
    for r in rows:
        centres = ses.trials["stimOn_times"][r["trial_id"]] + centres_rel
        expect = np.stack([np.interp(centres, ses.frame_times, ses.activity[:, i].astype(np.float64))
                           for i in range(ses.n_units)], axis=1)
        got = np.asarray(r["activity"], dtype=np.float64)
        assert got.shape == (20, ses.n_units)
        np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-6, equal_nan=True)
        speed = np.interp(centres, *ses.behavior["wheel_speed"])
        np.testing.assert_allclose(r["behavior_wheel_speed"], speed, rtol=1e-4, atol=1e-5)


def test_roi_ids_without_uuids_and_no_wheel(world):
    ses = meso.load_session(world["eids"]["no_uuids"], world["one"])
    assert list(ses.units["unit_id"]) == ["FOV_03/roi1", "FOV_03/roi2"]
    assert ses.extra["fovs"]["FOV_03"]["unit_id_source"].startswith("FOV and ROI index")
    assert list(ses.units["region"]) == ["CA1", "void"]
    assert "wheel_speed" not in ses.behavior and "wheel_speed" in ses.extra["missing_behavior"]


def test_load_sessions_from_cache_dir(world):
    sessions = meso.load_sessions([world["eids"]["good"]], one_cache_dir=world["root"], progress=False)
    assert len(sessions) == 1 and sessions[0].n_units == 8


def test_broken_sessions_raise_named_errors(world):
    one, eids = world["one"], world["eids"]
    with pytest.raises(DataError, match=r"SP002.*FOV_\*.*expected collections alf/FOV_00"):
        meso.load_session(eids["no_fov"], one)
    with pytest.raises(DataError, match=r"FOV_00/mpci\.badFrames\.npy.*shape \(49,\) != \(50,\)"):
        meso.load_session(eids["bad_len"], one)
    with pytest.raises(DataError, match=r"brainLocationIds_ccf_2017_estimate\.npy.*12345678"):
        meso.load_session(eids["bad_id"], one)
    with pytest.raises(DataError, match=r"mpciROITypes\.npy.*expected \(2,\).*shape \(3,\)"):
        meso.load_session(eids["bad_types"], one)
    with pytest.raises(DataError, match=r"SP005.*FOV_00/mpci\.ROIActivityF\.\*.*dataset missing"):
        meso.load_session(eids["bad_types"], one, activity="F")
