"""NWB source: real NWB files written with pynwb into tmp dirs, read back with nfm.data.sources.nwb."""
from __future__ import annotations

from datetime import datetime, timezone

import h5py
import numpy as np
import pytest
from pynwb import NWBHDF5IO, NWBFile, TimeSeries
from pynwb.behavior import BehavioralTimeSeries
from pynwb.file import Subject
from pynwb.misc import Units
from pynwb.ophys import DfOverF, Fluorescence, ImageSegmentation, OpticalChannel

from nfm.data.schema import DataError
from nfm.data.sources.nwb import load_session, load_sessions

T_END = 20.0  # s, recording length of the spike files
UNIT_IDS = [11, 12, 13, 14, 15]
# electrode rows per unit: unit 12 spans electrodes 1 and 2 (first one counts), unit 15 has none listed
UNIT_ELECTRODES = [[0], [1, 2], [2], [3], []]
EL_LOCATIONS = ["CA1", "VISp", " ", "VISp"]  # " " -> "unknown"
EL_REL_Y = [20.0, 40.0, 60.0, 80.0]
QUALITY = ["good", "mua", "Good", "noise", "good"]


def _nwbfile(identifier: str, subject_id: str | None = "mouse-A") -> NWBFile:
    subject = None if subject_id is None else Subject(subject_id=subject_id, species="Mus musculus")
    return NWBFile(session_description="test", identifier=identifier,
                   session_start_time=datetime(2024, 1, 2, tzinfo=timezone.utc), subject=subject)


def _write(nwb: NWBFile, path) -> None:
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)


def _unit_spikes(seed: int) -> list[np.ndarray]:
    """Per-unit spike times (s): unsorted within units, one exact tie across units."""
    rng = np.random.default_rng(seed)
    out = [rng.uniform(0.0, T_END, size=k) for k in (40, 25, 60, 3, 30)]
    out[1][0] = out[0][5]  # a time shared by unit rows 0 and 1
    return out


def write_spikes_file(path, *, seed=0, identifier="sess-spikes", subject_id="mouse-A", spikes=None,
                      obs_intervals=None):
    """Spikes NWB: electrodes with locations, units (quality), trials with extra columns, behaviour."""
    nwb = _nwbfile(identifier, subject_id)
    dev = nwb.create_device("probe0")
    group = nwb.create_electrode_group("shank0", description="shank", location="brain", device=dev)
    for loc, ry in zip(EL_LOCATIONS, EL_REL_Y):
        nwb.add_electrode(group=group, location=loc, rel_x=5.0, rel_y=ry, x=1.0, y=2.0, z=3.0)
    nwb.add_unit_column("quality", "sorting quality")
    spikes = _unit_spikes(seed) if spikes is None else spikes
    for i, uid in enumerate(UNIT_IDS):
        kw = {"obs_intervals": obs_intervals[i]} if obs_intervals is not None else {}
        nwb.add_unit(spike_times=spikes[i], electrodes=UNIT_ELECTRODES[i], quality=QUALITY[i], id=uid, **kw)
    nwb.add_trial_column("stimOn_times", "stimulus onset (s)")
    nwb.add_trial_column("contrast", "contrast")
    nwb.add_trial_column("choice", "choice")
    nwb.add_trial_column("side", "stimulus side")
    starts = 1.0 + 3.0 * np.arange(6)
    sides = ["left", "right", "right", "left", "left", "left"]
    for k, t0 in enumerate(starts):
        nwb.add_trial(start_time=t0, stop_time=t0 + 2.5, stimOn_times=t0 + 0.6, contrast=0.25 * (k % 4),
                      choice=(-1) ** k, side=sides[k])
    beh = nwb.create_processing_module("behavior", "behaviour")
    raw = np.arange(200, dtype=np.int16) % 17
    beh.add(TimeSeries(name="running_speed", data=raw, unit="cm/s", rate=10.0, starting_time=0.0, conversion=0.5))
    hand_t = np.linspace(0.0, T_END, 51)
    hand = np.stack([np.sin(hand_t), np.cos(hand_t)], axis=1)
    beh.add(BehavioralTimeSeries(time_series=[TimeSeries(name="hand_vel", data=hand, unit="m/s", timestamps=hand_t)],
                                 name="BehavioralTimeSeries"))
    _write(nwb, path)
    return {"spikes": spikes, "starts": starts, "sides": sides, "raw_speed": raw, "hand_t": hand_t, "hand": hand}


@pytest.fixture(scope="module")
def spikes_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("nwb") / "spikes.nwb"
    info = write_spikes_file(path)
    return path, info


# ------------------------------------------------------------------ spikes
def test_spikes_units_regions_trials_behaviour(spikes_file):
    path, info = spikes_file
    s = load_session(path)
    assert s.modality == "spikes" and s.session_id == "sess-spikes" and s.subject_id == "mouse-A"
    assert s.source == str(path)
    assert s.units["unit_id"].tolist() == [str(u) for u in UNIT_IDS]
    first_el = [e[0] if e else None for e in UNIT_ELECTRODES]
    exp_region = [("unknown" if EL_LOCATIONS[e].strip() == "" else EL_LOCATIONS[e]) if e is not None else "unknown"
                  for e in first_el]
    assert s.units["region"].tolist() == exp_region == ["CA1", "VISp", "unknown", "VISp", "unknown"]
    np.testing.assert_array_equal(s.units["depth_um"], [EL_REL_Y[e] if e is not None else np.nan for e in first_el])
    assert s.units["probe"].tolist() == ["shank0"] * 4 + [""]
    assert s.units["quality"].tolist() == [1, 0, 1, 0, 1]
    assert s.units["quality_label"].tolist() == QUALITY

    # sorted by time, ties in unit-row order, every spike kept
    st, su = s.spike_times, s.spike_units
    assert len(st) == sum(len(x) for x in info["spikes"])
    assert np.all(np.diff(st) >= 0)
    tie = np.flatnonzero(st == info["spikes"][0][5])
    assert su[tie].tolist() == [0, 1]

    # spikes per unit per trial window vs an independent count
    tr = s.trials
    np.testing.assert_array_equal(tr["start_time"], info["starts"])
    for k in range(s.n_trials):
        a, b = tr["start_time"][k], tr["stop_time"][k]
        expected = [int(((x >= a) & (x < b)).sum()) for x in info["spikes"]]
        m = (st >= a) & (st < b)
        got = np.bincount(su[m], minlength=s.n_units).tolist()
        assert got == expected and sum(expected) > 0

    # trial columns: numbers kept, strings as codes with their labels in extra
    assert set(tr) == {"start_time", "stop_time", "stimOn_times", "contrast", "choice", "side"}
    np.testing.assert_allclose(tr["stimOn_times"], info["starts"] + 0.6)
    np.testing.assert_array_equal(tr["choice"], [(-1) ** k for k in range(6)])
    labels = s.extra["trial_categories"]["side"]
    assert labels == ["left", "right"]
    assert np.asarray(labels)[tr["side"]].tolist() == info["sides"]
    assert s.extra["trials_source"] == "trials_table"

    # behaviour: conversion applied, rate -> times, 2-D series split into x / y
    t, v = s.behavior["running_speed"]
    np.testing.assert_allclose(t, np.arange(200) / 10.0)
    np.testing.assert_allclose(v, info["raw_speed"] * 0.5)
    np.testing.assert_allclose(s.behavior["hand_vel_x"][1], info["hand"][:, 0])
    np.testing.assert_allclose(s.behavior["hand_vel_y"][1], info["hand"][:, 1])
    np.testing.assert_allclose(s.behavior["hand_vel_y"][0], info["hand_t"])
    assert s.behavior_units == {"running_speed": "cm/s", "hand_vel_x": "m/s", "hand_vel_y": "m/s"}


def test_spikes_options(spikes_file):
    path, info = spikes_file
    s = load_session(path, behavior_names=["hand_vel_y", "running_speed"], session_id="custom",
                     subject_id="other", good_units_only=True, trial_columns=["contrast"],
                     region_map=lambda r: np.char.add("x-", r))
    assert sorted(s.behavior) == ["hand_vel_y", "running_speed"]
    assert s.session_id == "custom" and s.subject_id == "other" and s.extra["subject_id_in_file"] == "mouse-A"
    assert set(s.trials) == {"start_time", "stop_time", "contrast"}
    good = [i for i, q in enumerate(QUALITY) if q.lower() == "good"]
    assert s.units["unit_id"].tolist() == [str(UNIT_IDS[i]) for i in good]
    assert s.units["region"].tolist() == ["x-CA1", "x-unknown", "x-unknown"]
    assert s.extra["n_units_dropped"] == len(UNIT_IDS) - len(good)
    counts = np.bincount(s.spike_units, minlength=s.n_units)
    assert counts.tolist() == [len(info["spikes"][i]) for i in good]
    for row, i in enumerate(good):  # spike times of each kept unit are exactly its own
        np.testing.assert_array_equal(s.spike_times[s.spike_units == row], np.sort(info["spikes"][i]))
    with pytest.raises(DataError, match="hand_pos"):
        load_session(path, behavior_names=["hand_pos"])


def test_load_sessions_two_files(tmp_path):
    write_spikes_file(tmp_path / "a.nwb", seed=1, identifier="s-a", subject_id="m1")
    write_spikes_file(tmp_path / "b.nwb", seed=2, identifier="s-b", subject_id="m2")
    ss = load_sessions([tmp_path / "a.nwb", tmp_path / "b.nwb"])
    assert [s.session_id for s in ss] == ["s-a", "s-b"] and [s.subject_id for s in ss] == ["m1", "m2"]
    write_spikes_file(tmp_path / "c.nwb", seed=3, identifier="s-a")
    with pytest.raises(DataError, match="s-a"):
        load_sessions([tmp_path / "a.nwb", tmp_path / "c.nwb"])


# ------------------------------------------------------------------- ophys
def write_ophys_file(path, *, n_frames=100, identifier="sess-2p", nan_at=None, with_units=False):
    """2-photon NWB: 4 ROIs in VISp, dF/F with timestamps and raw F with a rate; no trials table."""
    nwb = _nwbfile(identifier, "mouse-B")
    if with_units:
        nwb.add_unit(spike_times=[1.0, 2.0], id=0)
    dev = nwb.create_device("scope")
    channel = OpticalChannel(name="ch", description="green", emission_lambda=525.0)
    plane = nwb.create_imaging_plane(
        name="plane0", optical_channel=channel, description="p", device=dev,
        excitation_lambda=920.0, imaging_rate=10.0, indicator="GCaMP6s", location="VISp")
    ophys = nwb.create_processing_module("ophys", "ophys")
    seg = ImageSegmentation()
    ophys.add(seg)
    ps = seg.create_plane_segmentation(name="rois", description="rois", imaging_plane=plane)
    for rid in (7, 8, 9, 10):
        mask = np.zeros((4, 4))
        mask[rid % 4, :] = 1.0
        ps.add_roi(image_mask=mask, id=rid)
    region = ps.create_roi_table_region(region=[0, 1, 2, 3], description="all")
    rng = np.random.default_rng(5)
    times = 0.5 + np.arange(n_frames) / 10.0 + rng.uniform(0, 0.01, n_frames)
    dff = rng.normal(size=(n_frames, 4)).astype(np.float32)
    if nan_at is not None:
        dff[nan_at] = np.nan
    fl = rng.uniform(100, 200, size=(n_frames, 4))
    dff_box, fl_box = DfOverF(), Fluorescence()
    ophys.add(dff_box)
    ophys.add(fl_box)
    dff_box.create_roi_response_series(name="dff", data=dff, rois=region, unit="n.a.", timestamps=times)
    fl_box.create_roi_response_series(name="raw_F", data=fl, rois=region, unit="a.u.", rate=10.0, starting_time=0.5)
    _write(nwb, path)
    return {"times": times, "dff": dff, "fl": fl}


def test_ophys_dff_consecutive_windows(tmp_path):
    path = tmp_path / "ophys.nwb"
    info = write_ophys_file(path)
    s = load_session(path, window_length=2.0)
    assert s.modality == "calcium" and s.activity_kind == "dff" and s.subject_id == "mouse-B"
    assert s.extra["roi_response"] == "ophys/DfOverF/dff"
    assert s.units["unit_id"].tolist() == ["7", "8", "9", "10"]
    assert s.units["region"].tolist() == ["VISp"] * 4
    np.testing.assert_array_equal(s.frame_times, info["times"])
    np.testing.assert_array_equal(s.activity, info["dff"])
    assert s.activity.dtype == np.float32 and s.activity.shape == (100, 4)
    # no trials table: back-to-back 2 s windows from the first to the last frame
    ft = info["times"]
    n = int(np.floor((ft[-1] - ft[0]) / 2.0))
    assert n == 4
    np.testing.assert_allclose(s.trials["start_time"], ft[0] + 2.0 * np.arange(n))
    np.testing.assert_allclose(s.trials["stop_time"] - s.trials["start_time"], 2.0)
    assert s.extra["trials_source"] == "consecutive_windows" and s.extra["align_event"] == "start_time"
    assert s.behavior == {}
    with h5py.File(path, "r+"):  # the loader closed the file (HDF5 refuses r+ on a file still open for reading)
        pass

    f = load_session(path, roi_response="raw_F")
    assert f.activity_kind == "fluorescence"
    np.testing.assert_allclose(f.activity, info["fl"].astype(np.float32))
    np.testing.assert_allclose(f.frame_times, 0.5 + np.arange(100) / 10.0)
    with pytest.raises(DataError, match="roi_response"):
        load_session(path, roi_response="nope")
    write_ophys_file(tmp_path / "nan.nwb", nan_at=(3, 2))
    with pytest.raises(DataError, match="non-finite value nan at frame 3, ROI row 2"):
        load_session(tmp_path / "nan.nwb")

    write_ophys_file(tmp_path / "both.nwb", with_units=True)
    with pytest.raises(DataError, match="both a units table and RoiResponseSeries"):
        load_session(tmp_path / "both.nwb")
    both = load_session(tmp_path / "both.nwb", modality="calcium")
    np.testing.assert_array_equal(both.activity, info["dff"])


# ------------------------------------------------------- build_dataset (hf)
def test_build_dataset_from_nwb_sessions(tmp_path, spikes_file):
    from nfm.data.hf import build_dataset

    path, info = spikes_file
    s = load_session(path)
    window, bin_size = (-0.5, 1.5), 0.02
    dd, meta = build_dataset([s], align_event="stimOn_times", window=window, bin_size=bin_size)
    assert sum(dd[k].num_rows for k in dd) == 6
    assert meta.sessions["sess-spikes"].units["region"] == s.units["region"].tolist()
    assert meta.behavior_units["running_speed"] == "cm/s"
    rows = sorted((r for k in dd for r in dd[k]), key=lambda r: r["trial_id"])
    for r in rows:
        k = r["trial_id"]
        t0 = info["starts"][k] + 0.6
        expected = [int(((x >= t0 + window[0]) & (x < t0 + window[1])).sum()) for x in info["spikes"]]
        assert np.bincount(np.asarray(r["spike_units"], dtype=int), minlength=5).tolist() == expected
        assert r["trial_side"] == float(s.trials["side"][k])
        assert len(r["behavior_hand_vel_x"]) == 100

    write_ophys_file(tmp_path / "o.nwb")
    o = load_session(tmp_path / "o.nwb")
    dd2, meta2 = build_dataset([o], align_event="start_time", window=(0.0, 2.0), bin_size=0.1)
    assert sum(dd2[k].num_rows for k in dd2) == o.n_trials == 4
    r = dd2["train"][0]
    assert np.asarray(r["activity"]).shape == (20, 4)
    assert meta2.modality == "calcium"


# -------------------------------------------------------------- bad inputs
def test_bad_inputs(tmp_path):
    spikes = _unit_spikes(0)
    bad = [x.copy() for x in spikes]
    bad[2][7] = np.nan
    write_spikes_file(tmp_path / "nan.nwb", spikes=bad)
    with pytest.raises(DataError, match=r"units\.spike_times.*nan.*unit id 13"):
        load_session(tmp_path / "nan.nwb")
    with h5py.File(tmp_path / "nan.nwb", "r+"):  # closed on the error path too
        pass

    neg = [x.copy() for x in spikes]
    neg[3][1] = -0.25
    write_spikes_file(tmp_path / "neg.nwb", spikes=neg)
    with pytest.raises(DataError, match=r"negative spike time -0\.25.*unit id 14"):
        load_session(tmp_path / "neg.nwb")

    obs = [[[0.0, T_END]] for _ in UNIT_IDS]
    obs[4] = [[0.0, 5.0], [6.0, 8.0]]  # unit 15 spikes after 8 s are out of range
    write_spikes_file(tmp_path / "obs.nwb", obs_intervals=obs)
    with pytest.raises(DataError, match=r"spike time 5\.4\d* s of unit id 15 is outside the unit.s obs_intervals"):
        load_session(tmp_path / "obs.nwb")
    ok = [[[0.0, T_END]] for _ in UNIT_IDS]
    write_spikes_file(tmp_path / "obs_ok.nwb", obs_intervals=ok)
    assert load_session(tmp_path / "obs_ok.nwb").n_units == 5

    text = tmp_path / "not_nwb.nwb"
    text.write_text("session,spikes\n1,2\n")
    with pytest.raises(DataError, match=r"not_nwb\.nwb.*'file'.*not an HDF5/NWB"):
        load_session(text)
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(DataError, match=r"plain\.h5.*cannot"):
        load_session(tmp_path / "plain.h5")
    with pytest.raises(DataError, match="does not exist"):
        load_session(tmp_path / "missing.nwb")

    write_spikes_file(tmp_path / "nosubj.nwb", subject_id=None)
    with pytest.raises(DataError, match=r"subject\.subject_id"):
        load_session(tmp_path / "nosubj.nwb")
    assert load_session(tmp_path / "nosubj.nwb", subject_id="given").subject_id == "given"

    empty = _nwbfile("empty")
    empty.units = Units(name="units", description="no units sorted")
    _write(empty, tmp_path / "empty_units.nwb")
    with pytest.raises(DataError, match="units table is empty"):
        load_session(tmp_path / "empty_units.nwb")

    nothing = _nwbfile("nothing")
    nothing.add_acquisition(TimeSeries(name="speed", data=np.ones(5), unit="m/s", rate=1.0))
    _write(nothing, tmp_path / "nothing.nwb")
    with pytest.raises(DataError, match="not an NWB file of spikes or 2-photon"):
        load_session(tmp_path / "nothing.nwb")


def test_ragged_trial_column_raises_unless_left_out(tmp_path):
    nwb = _nwbfile("ragged")
    nwb.add_unit(spike_times=[0.5, 1.5, 2.5], id=1)
    nwb.add_trial_column("licks", "lick times", index=True)
    nwb.add_trial(start_time=0.0, stop_time=2.0, licks=[0.1, 0.2])
    nwb.add_trial(start_time=2.0, stop_time=4.0, licks=[2.5])
    _write(nwb, tmp_path / "ragged.nwb")
    with pytest.raises(DataError, match=r"trials\.licks.*ragged"):
        load_session(tmp_path / "ragged.nwb")
    s = load_session(tmp_path / "ragged.nwb", trial_columns=[])
    assert set(s.trials) == {"start_time", "stop_time"}
    assert s.units["region"].tolist() == ["unknown"] and "quality" not in s.units
