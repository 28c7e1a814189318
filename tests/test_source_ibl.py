"""IBL source: ALF trees written here, read back through the real ONE (local mode)
and brainbox loaders.  No network: the histology region tree ships with iblatlas."""
from __future__ import annotations

import numpy as np
import pytest

from alf_fixtures import (ibl_trials, make_alf_session, make_one, random_probe, write_camera,
                          write_probe, write_trials, write_wheel)
from nfm.data.schema import DataError
from nfm.data.sources import ibl

# Allen CCF 2017 id -> Beryl acronym (anatomy facts, independent of the code under test)
BERYL = {593: "VISp", 821: "VISp", 382: "CA1", 463: "CA3", 1047: "SSp-bfd", 997: "root", 0: "void"}
FINE = {593: "VISp1", 821: "VISp2/3", 382: "CA1", 463: "CA3", 1047: "SSp-bfd4", 997: "root", 0: "void"}
WINDOW = (-0.5, 1.5)
N_TRIALS = 20


def _wheel_truth(t):
    """Known wheel trajectory (rad): still, +3 rad/s on [10, 30) s, -1.5 rad/s on [30, 50) s, still."""
    return np.interp(t, [0.0, 10.0, 30.0, 50.0, 100.0], [0.0, 0.0, 60.0, 30.0, 30.0])


def _perturbed_trials(rng):
    """Trials with one known defect per filter; returns (table, expected counts, kept rows)."""
    tr = ibl_trials(N_TRIALS, rng)
    tr["firstMovement_times"][1] = tr["stimOn_times"][1] + 0.05            # rt < 0.08
    tr["firstMovement_times"][2] = tr["stimOn_times"][2] + 2.5             # rt > 2
    tr["feedback_times"][2] = tr["firstMovement_times"][2] + 0.3
    tr["choice"][3] = 0.0                                                  # no choice
    tr["feedback_times"][4] = np.nan                                       # NaN key event
    tr["feedback_times"][5] = tr["goCue_times"][5] + 11.0                  # duration > 10 s
    tr["firstMovement_times"][6] = np.nan                                  # NaN key event (and rt)
    tr["choice"][7] = 0.0                                                  # no choice AND rt < 0.08:
    tr["firstMovement_times"][7] = tr["stimOn_times"][7] + 0.01            # counted once, as no_choice
    expected = {"n_raw": N_TRIALS, "nan_key_event": 2, "no_choice": 2, "rt_below_min": 1,
                "rt_above_max": 1, "duration_above_max": 1, "n_kept": N_TRIALS - 7}
    kept = np.setdiff1d(np.arange(N_TRIALS), [1, 2, 3, 4, 5, 6, 7])
    return tr, expected, kept


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """Two sessions: A (two probes, one in a revision folder; wheel; left camera),
    B (one probe; right camera only; no wheel)."""
    root = tmp_path_factory.mktemp("alf")
    rng = np.random.default_rng(7)
    ses_a = make_alf_session(root, "cortexlab", "KS001", "2024-01-02", 1)
    p0 = random_probe(rng, n_clusters=8, n_spikes=1500)
    p0["cluster_uuids"] = [f"c0-{i:02d}-uuid" for i in range(8)]
    write_probe(ses_a, "probe00", **p0)
    p1 = random_probe(rng, n_clusters=6, n_spikes=1000)
    write_probe(ses_a, "probe01", **p1, revision="2024-01-01")
    stale = random_probe(rng, n_clusters=3, n_spikes=200)  # older, unrevisioned sorting: must be ignored
    write_probe(ses_a, "probe01", **stale)
    trials, expected, kept = _perturbed_trials(rng)
    write_trials(ses_a, trials)
    wheel_t = np.sort(np.r_[0.0, rng.uniform(0, 100, 4000), 100.0])  # irregular, like encoder ticks
    write_wheel(ses_a, wheel_t, _wheel_truth(wheel_t))
    cam_t = np.arange(0, 100, 1 / 60)
    me_left = np.abs(np.sin(cam_t)) * 10
    write_camera(ses_a, "left", cam_t, me_left)

    ses_b = make_alf_session(root, "hoferlab", "KS002", "2024-02-03", 2)
    q0 = random_probe(rng, n_clusters=5, n_spikes=800, t_stop=60.0)
    write_probe(ses_b, "probe00", **q0)
    write_trials(ses_b, ibl_trials(12, rng, t0=1.0, spacing=4.0))
    me_right = rng.uniform(0, 5, len(cam_t))
    write_camera(ses_b, "right", cam_t, me_right)

    one = make_one(root)
    eid_a, eid_b = str(one.path2eid(ses_a)), str(one.path2eid(ses_b))
    return dict(root=root, one=one, eid_a=eid_a, eid_b=eid_b, probes_a={"probe00": p0, "probe01": p1},
                trials_a=trials, expected=expected, kept=kept, probe_b=q0, me_left=(cam_t, me_left),
                me_right=(cam_t, me_right), ses_a=ses_a)


@pytest.fixture(scope="module")
def session_a(tree):
    return ibl.load_session(tree["eid_a"], tree["one"])


def _written_counts(probes, unit_ids, align, window):
    """(n_trials, N) spike counts per trial window from the arrays written to disk,
    columns in the order of ``unit_ids`` (``"<probe>/<uuid or cluster index>"``)."""
    col = {}
    for pname, p in probes.items():
        names = p.get("cluster_uuids") or [str(i) for i in range(len(p["cluster_channels"]))]
        for c, name in enumerate(names):
            col[f"{pname}/{name}"] = (pname, c)
    counts = np.zeros((len(align), len(unit_ids)), dtype=np.int64)
    for pname, p in probes.items():
        t, c = p["spike_times"], p["spike_clusters"]
        cols = np.array([j for j, u in enumerate(unit_ids) if col[u][0] == pname])
        clusters = np.array([col[unit_ids[j]][1] for j in cols])
        for i, a in enumerate(align):  # one loop per trial (test reference, not library code)
            inside = (t >= a + window[0]) & (t < a + window[1])
            counts[i, cols] = np.bincount(c[inside], minlength=len(p["cluster_channels"]))[clusters]
    return counts


def _session_counts(session, align, window):
    counts = np.zeros((len(align), session.n_units), dtype=np.int64)
    for i, a in enumerate(align):
        lo, hi = np.searchsorted(session.spike_times, [a + window[0], a + window[1]], side="left")
        counts[i] = np.bincount(session.spike_units[lo:hi], minlength=session.n_units)
    return counts


def test_probes_merged_regions_and_revision(tree, session_a):
    s = session_a
    p0, p1 = tree["probes_a"]["probe00"], tree["probes_a"]["probe01"]
    assert s.session_id == tree["eid_a"] and s.subject_id == "KS001"
    assert s.n_units == 8 + 6
    assert s.n_spikes == len(p0["spike_times"]) + len(p1["spike_times"])  # stale copy (200) not loaded
    assert list(s.units["unit_id"][:8]) == [f"probe00/{u}" for u in p0["cluster_uuids"]]
    assert list(s.units["unit_id"][8:]) == [f"probe01/{i}" for i in range(6)]
    assert list(s.units["probe"]) == ["probe00"] * 8 + ["probe01"] * 6
    info = s.extra["probes"]["probe01"]
    assert info["revision"] == "2024-01-01" and info["folder"].endswith("alf/probe01/pykilosort/#2024-01-01#")
    assert s.extra["probes"]["probe00"]["revision"] == ""
    # the revision's spike times are the ones loaded
    probe01_spikes = np.sort(s.spike_times[s.spike_units >= 8])
    np.testing.assert_array_equal(probe01_spikes, np.sort(p1["spike_times"]))
    # regions: Beryl of each cluster's channel, depth from clusters.depths
    for pname, p, sl in (("probe00", p0, slice(0, 8)), ("probe01", p1, slice(8, 14))):
        ids = p["channel_atlas_ids"][p["cluster_channels"]]
        assert list(s.units["region"][sl]) == [BERYL[i] for i in ids]
        assert list(s.units["acronym"][sl]) == [FINE[i] for i in ids]
        np.testing.assert_array_equal(s.units["atlas_id"][sl], ids)
        np.testing.assert_allclose(s.units["depth_um"][sl], p["cluster_depths"])
        np.testing.assert_allclose(s.units["y_um"][sl], p["channel_local_coordinates"][p["cluster_channels"], 1])
        np.testing.assert_allclose(s.units["dv_um"][sl], p["channel_mlapdv"][p["cluster_channels"], 2])
        np.testing.assert_allclose(s.units["label"][sl], p["labels"])
    assert "VISp" in set(s.units["region"]) and "VISp1" not in set(s.units["region"])
    assert np.all(np.diff(s.spike_times) >= 0)


def test_spike_counts_match_written_arrays(tree, session_a):
    s = session_a
    align = s.trials["stimOn_times"]
    expected = _written_counts(tree["probes_a"], list(s.units["unit_id"]), align, WINDOW)
    got = _session_counts(s, align, WINDOW)
    assert expected.sum() > 100  # windows are not empty
    np.testing.assert_array_equal(got, expected)


def test_trial_filters_counted(tree, session_a):
    s = session_a
    counts = s.extra["trial_filter"]
    for key, value in tree["expected"].items():
        assert counts[key] == value, key
    kept = tree["kept"]
    np.testing.assert_array_equal(counts["alf_trial_index"], kept)
    tr = tree["trials_a"]
    assert s.n_trials == len(kept)
    np.testing.assert_allclose(s.trials["stimOn_times"], tr["stimOn_times"][kept])
    np.testing.assert_allclose(s.trials["reaction_time"],
                               tr["firstMovement_times"][kept] - tr["stimOn_times"][kept])
    np.testing.assert_allclose(s.trials["start_time"], tr["intervals"][kept, 0])
    np.testing.assert_allclose(s.trials["stop_time"], tr["intervals"][kept, 1])
    left, right = np.nan_to_num(tr["contrastLeft"][kept]), np.nan_to_num(tr["contrastRight"][kept])
    np.testing.assert_allclose(s.trials["contrastLeft"], left)
    np.testing.assert_allclose(s.trials["signed_contrast"], right - left)
    assert not np.isnan(s.trials["contrastRight"]).any()
    # every filter is a parameter: switching them off keeps the rt/duration/no-choice trials
    loose = ibl.load_session(tree["eid_a"], tree["one"], min_rt=None, max_rt=None,
                             max_trial_duration=None, drop_no_choice=False)
    assert loose.extra["trial_filter"]["nan_key_event"] == 2
    assert loose.n_trials == N_TRIALS - 2
    assert set(loose.extra["trial_filter"]["order"]) == {"nan_key_event"}


def test_wheel_velocity_and_motion_energy(tree, session_a):
    s = session_a
    t, v = s.behavior["wheel_velocity"]
    ts, speed = s.behavior["wheel_speed"]
    assert s.behavior_units["wheel_velocity"] == "rad/s" and s.behavior_units["wheel_speed"] == "rad/s"
    np.testing.assert_array_equal(t, ts)
    np.testing.assert_allclose(speed, np.abs(v))
    assert np.median(np.diff(t)) == pytest.approx(0.01)  # wheel_out_hz = 100
    for lo, hi, truth in ((12, 28, 3.0), (32, 48, -1.5), (2, 8, 0.0), (55, 95, 0.0)):
        sel = (t > lo) & (t < hi)
        np.testing.assert_allclose(v[sel], truth, atol=0.05)
    cam_t, me = tree["me_left"]
    mt, mv = s.behavior["whisker_motion_energy"]
    np.testing.assert_allclose(mt, cam_t)
    np.testing.assert_allclose(mv, me)
    assert s.extra["whisker_camera"] == "left" and s.extra["missing_behavior"] == []


def test_right_camera_fallback_and_missing_wheel(tree):
    s = ibl.load_session(tree["eid_b"], tree["one"])
    assert s.subject_id == "KS002" and s.n_units == 5 and s.n_trials == 12
    assert s.extra["whisker_camera"] == "right"
    np.testing.assert_allclose(s.behavior["whisker_motion_energy"][1], tree["me_right"][1])
    assert "wheel_speed" not in s.behavior and "wheel_velocity" not in s.behavior
    assert set(s.extra["missing_behavior"]) == {"wheel_speed", "wheel_velocity"}
    assert s.extra["probes"]["probe00"]["revision"] == ""


def test_good_units_only(tree, session_a):
    s = ibl.load_session(tree["eid_a"], tree["one"], good_units_only=True)
    p0, p1 = tree["probes_a"]["probe00"], tree["probes_a"]["probe01"]
    good = np.r_[p0["labels"], p1["labels"]] == 1
    assert 0 < good.sum() < len(good)
    np.testing.assert_array_equal(s.units["unit_id"], session_a.units["unit_id"][good])
    assert np.all(s.units["quality"] == 1)
    # spikes: exactly those of good clusters, still attributed to the right unit
    all_ids = session_a.units["unit_id"][session_a.spike_units]
    keep = good[session_a.spike_units]
    np.testing.assert_array_equal(s.spike_times, session_a.spike_times[keep])
    np.testing.assert_array_equal(s.units["unit_id"][s.spike_units], all_ids[keep])
    g = s.extra["good_units"]
    assert g["kept_units"] == good.sum() and g["dropped_units"] == (~good).sum()
    assert g["kept_spikes"] + g["dropped_spikes"] == session_a.n_spikes == s.extra["n_spikes_all"]


def test_load_sessions_and_hf_round_trip(tree, session_a, tmp_path):
    from nfm.data import hf

    sessions = ibl.load_sessions([tree["eid_a"], tree["eid_b"]], one_cache_dir=tree["root"], progress=False)
    assert [s.session_id for s in sessions] == [tree["eid_a"], tree["eid_b"]]
    np.testing.assert_array_equal(sessions[0].spike_times, session_a.spike_times)
    dd, meta = hf.build_dataset(sessions, align_event="stimOn_times", window=WINDOW, bin_size=0.02)
    hf.save_dataset(dd, meta, tmp_path / "ibl_ds")
    dd2, meta2 = hf.load_dataset(tmp_path / "ibl_ds")
    assert meta2.sessions[tree["eid_a"]].extra["trial_filter"]["n_kept"] == tree["expected"]["n_kept"]
    assert meta2.sessions[tree["eid_a"]].units["region"] == list(session_a.units["region"])
    assert "wheel_speed" in meta2.behavior_names and "whisker_motion_energy" in meta2.behavior_names
    s = session_a
    expected = _written_counts(tree["probes_a"], list(s.units["unit_id"]), s.trials["stimOn_times"], WINDOW)
    rows = 0
    for split in dd2:
        for row in dd2[split]:
            if row["session_id"] != tree["eid_a"]:
                continue
            got = np.bincount(np.asarray(row["spike_units"], dtype=np.int64), minlength=s.n_units)
            np.testing.assert_array_equal(got, expected[row["trial_id"]])
            rows += 1
    assert rows == s.n_trials


# ------------------------------------------------------------------------------ bad inputs
def _bad_tree(tmp_path, **probe_changes):
    rng = np.random.default_rng(3)
    ses = make_alf_session(tmp_path, "lab", "BAD01", "2024-03-04", 1)
    p = random_probe(rng, n_clusters=5, n_spikes=300, t_stop=40.0)
    p.update(probe_changes.pop("arrays", {}))
    folder = write_probe(ses, "probe00", **p, **probe_changes)
    write_trials(ses, ibl_trials(6, rng))
    one = make_one(tmp_path)
    return one, str(one.path2eid(ses)), ses, folder


def test_missing_spikes_raises(tmp_path):
    one, eid, ses, _ = _bad_tree(tmp_path, write_spikes=False)
    with pytest.raises(DataError) as err:
        ibl.load_session(eid, one)
    assert str(ses) in str(err.value) and "spikes" in str(err.value)


def test_no_probe_at_all_raises(tmp_path):
    rng = np.random.default_rng(0)
    ses = make_alf_session(tmp_path, "lab", "BAD02", "2024-03-04", 1)
    write_trials(ses, ibl_trials(4, rng))
    one = make_one(tmp_path)
    with pytest.raises(DataError, match="spikes.times") as err:
        ibl.load_session(str(one.path2eid(ses)), one)
    assert str(ses) in str(err.value)


def test_missing_trials_raises(tmp_path):
    rng = np.random.default_rng(0)
    ses = make_alf_session(tmp_path, "lab", "BAD03", "2024-03-04", 1)
    write_probe(ses, "probe00", **random_probe(rng, 4, 100))
    one = make_one(tmp_path)
    with pytest.raises(DataError, match="_ibl_trials") as err:
        ibl.load_session(str(one.path2eid(ses)), one)
    assert str(ses) in str(err.value)


def test_cluster_out_of_range_raises(tmp_path):
    clusters = np.random.default_rng(1).integers(0, 5, 300)
    clusters[123] = 99
    one, eid, ses, folder = _bad_tree(tmp_path, arrays={"spike_clusters": clusters})
    with pytest.raises(DataError) as err:
        ibl.load_session(eid, one)
    msg = str(err.value)
    assert err.value.field == "spikes.clusters"
    assert str(folder / "spikes.clusters.npy") in msg and "99" in msg and "123" in msg


def test_nan_spike_time_raises(tmp_path):
    times = np.sort(np.random.default_rng(1).uniform(0, 40, 300))
    times[200] = np.nan
    one, eid, ses, folder = _bad_tree(tmp_path, arrays={"spike_times": times})
    with pytest.raises(DataError) as err:
        ibl.load_session(eid, one)
    msg = str(err.value)
    assert err.value.field == "spikes.times"
    assert str(folder / "spikes.times.npy") in msg and "nan" in msg and "200" in msg


def test_unknown_allen_id_raises(tmp_path):
    ids = np.resize(np.array([593, 382]), 16)
    ids[9] = 123456789
    one, eid, ses, folder = _bad_tree(tmp_path, arrays={"channel_atlas_ids": ids})
    with pytest.raises(DataError) as err:
        ibl.load_session(eid, one)
    assert "channels.brainLocationIds_ccf_2017" in str(err.value) and "123456789" in str(err.value)


def test_probe_without_histology_is_unknown_region(tmp_path):
    one, eid, ses, folder = _bad_tree(tmp_path, arrays={"channel_atlas_ids": None})
    s = ibl.load_session(eid, one)
    assert list(s.units["region"]) == ["unknown"] * 5 and np.all(s.units["atlas_id"] == -1)
    assert s.extra["probes"]["probe00"]["histology"] == "none"
    local = random_probe(np.random.default_rng(3), n_clusters=5, n_spikes=300, t_stop=40.0)
    np.testing.assert_allclose(s.units["y_um"], local["channel_local_coordinates"][local["cluster_channels"], 1])


def test_wheel_length_mismatch_raises(tmp_path):
    _, _, ses, folder = _bad_tree(tmp_path)
    t = np.linspace(0, 40, 400)
    write_wheel(ses, t, np.zeros(399))
    one = make_one(tmp_path)
    with pytest.raises(DataError) as err:
        ibl.load_session(str(one.path2eid(ses)), one)
    assert "_ibl_wheel.position.npy" in str(err.value) and "399" in str(err.value)


def test_unknown_eid_raises(tree):
    with pytest.raises(DataError, match="not found"):
        ibl.load_session("3f2b1c4e-9a0d-4e5f-8b7a-6c5d4e3f2a1b", tree["one"])
    with pytest.raises(DataError, match="not-an-eid"):
        ibl.load_session("not-an-eid", tree["one"])
