"""Trial-aligned binned counts (nfm/data/sources/trials.py): nfm and Steinmetz layouts, end to end through
prepare -> Arrow dataset -> collator (exact counts at the source bin size and at 2x), trial variables, regions,
held-out animals, and refusal of bad files (the error names the file, the field and the value)."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nfm.data.collate import NfmCollator
from nfm.data.hf import load_dataset
from nfm.data.prepare import heldout_sessions, prepare
from nfm.data.schema import DataError
from nfm.data.sources.trials import derived_choice, load_npz

ROOT = Path(__file__).resolve().parents[1]
BS = 0.02  # s


def _counts(rng, n, N, T, lam=1.2):
    return rng.poisson(lam, (n, N, T)).astype(np.uint8)


def _bin_starts(rng, n, T, t0=5.0, gap=1.3, jitter=True):
    """(n, T) bin starts [s]: trial k starts at t0 + k * (T * BS + gap), bins of BS; rounded storage jitter."""
    starts = t0 + np.arange(n)[:, None] * (T * BS + gap) + BS * np.arange(T)[None, :]
    if jitter:  # 0.5% of a bin, as rounding of stored times does
        starts = starts + rng.choice([-1e-4, 0.0, 1e-4], starts.shape)
    return starts


def _write_nfm(path, *, n=10, N=4, T=8, seed=0, subject="mA", session=None, bin_size=True, **extra):
    rng = np.random.default_rng(seed)
    counts = _counts(rng, n, N, T)
    regions = np.array(["VISp", "CA1", "VISp", "MOs", "LGd", "root"][:N])
    arrays = dict(counts=counts, bin_starts=_bin_starts(rng, n, T), unit_regions=regions, subject=np.array(subject),
                  trial_contrastLeft=np.round(rng.choice([0, 0.25, 0.5, 1.0], n), 2),
                  trial_feedbackType=rng.choice([-1, 1], (n, 1)).astype(np.int8),  # (trials, 1) accepted
                  align_event=np.array("stimOn_times"))
    if session:
        arrays["session"] = np.array(session)
    if bin_size:
        arrays["bin_size"] = np.float64(BS)
    arrays.update(extra)
    np.savez(path, **arrays)
    return arrays


def _steinmetz_arrays(rng, *, n=5, N=3, T=6, mouse="Cori", date="2016-12-14"):
    return dict(
        spks=_counts(rng, n, N, T), time=_bin_starts(rng, n, T, t0=40.0),
        contrast_left=np.tile([[0.0], [0.5], [1.0], [0.25], [0.0]], (2, 1))[:n],  # (trials, 1) as some files store them
        contrast_right=np.tile([0.5, 0.0, 0.25, 0.25, 0.0], 2)[:n],
        feedback_type=np.tile(np.array([[1], [1], [-1], [1], [-1]], dtype=np.int8), (2, 1))[:n],
        brain_area=np.array(["VISp", "root", "CA3"][:N]), mouse_name=np.array(mouse), date_exp=np.array(date))


def _rows_by_trial(dd, sid):
    return {r["trial_id"]: r for split in dd for r in dd[split] if r["session_id"] == sid}


def test_prepare_round_trips_exact_counts_at_source_bins_and_2x(tmp_path):
    a = _write_nfm(tmp_path / "a.npz", n=10, N=4, seed=1, subject="mA", session="sA")
    b = _write_nfm(tmp_path / "b.npz", n=7, N=6, seed=2, subject="mB", bin_size=False)  # bin size read from starts
    summary = prepare("trials", tmp_path / "ds", inputs=[str(tmp_path / "a.npz"), str(tmp_path / "b.npz")],
                      progress=False)
    dd, meta = load_dataset(tmp_path / "ds")
    assert meta.bin_size == BS and meta.n_bins == 8 and tuple(meta.window) == (0.0, 8 * BS)
    assert meta.align_event == "start_time" and meta.split_mode == "random"
    assert sorted(meta.sessions) == ["b", "sA"] and summary["subjects"] == 2
    assert meta.sessions["sA"].subject_id == "mA" and meta.sessions["b"].subject_id == "mB"
    assert meta.sessions["sA"].extra["source_bin_size"] == BS
    assert meta.sessions["sA"].units["region"] == ["VISp", "CA1", "VISp", "MOs"]
    assert meta.sessions["b"].units["region"] == ["VISp", "CA1", "VISp", "MOs", "LGd", "root"]
    assert meta.regions == ["CA1", "LGd", "MOs", "VISp", "root"]
    assert summary["spikes_in_windows"] == int(a["counts"].sum()) + int(b["counts"].sum())
    assert sum(len(dd[s]) for s in dd) == 17
    for sid, arr in (("sA", a), ("b", b)):
        rows = _rows_by_trial(dd, sid)
        assert sorted(rows) == list(range(len(arr["counts"])))
        for k, r in rows.items():  # trial variables carried (float32 columns), (trials, 1) flattened
            assert r["trial_contrastLeft"] == np.float32(arr["trial_contrastLeft"][k])
            assert r["trial_feedbackType"] == float(arr["trial_feedbackType"][k, 0])
            assert r["trial_stimOn_times"] == np.float32(arr["bin_starts"][k, 0])
    for size, k in ((None, 1), (BS, 1), (2 * BS, 2), (4 * BS, 4)):
        coll = NfmCollator(meta, bin_size=size)
        rows = [r for split in dd for r in dd[split]]
        batch = coll(rows)
        assert batch["spikes"].shape == (17, 8 // k, 6)
        for i, r in enumerate(rows):
            c = (a if r["session_id"] == "sA" else b)["counts"][r["trial_id"]]  # (units, bins)
            expected = c.T.reshape(8 // k, k, -1).sum(1)  # (bins / k, units): sums of k neighbouring bins
            got = batch["spikes"][i].numpy()
            np.testing.assert_array_equal(got[:, :c.shape[0]], expected)
            assert not got[:, c.shape[0]:].any()  # padding units of the smaller session stay empty


def test_steinmetz_layout_trial_variables_choice_and_heldout_mouse(tmp_path):
    rng = np.random.default_rng(3)
    # 10 trials a session: an empty validation split (5 trials -> round(0.5) = 0) cannot be reloaded
    s1 = _steinmetz_arrays(rng, n=10, mouse="Cori", date="2016-12-14")
    s2 = _steinmetz_arrays(rng, n=10, mouse="Hench", date="2017-06-15")
    np.savez(tmp_path / "session1.npz", **s1)
    np.savez(tmp_path / "session8.npz", **s2)
    sess = load_npz(tmp_path / "session1.npz")  # layout auto-detected from `spks`
    assert (sess.session_id, sess.subject_id, sess.extra["layout"]) == ("Cori_2016-12-14", "Cori", "steinmetz")
    np.testing.assert_array_equal(sess.trials["contrastLeft"], [0, 0.5, 1.0, 0.25, 0] * 2)
    np.testing.assert_array_equal(sess.trials["feedbackType"], [1, 1, -1, 1, -1] * 2)
    np.testing.assert_array_equal(sess.trials["signed_contrast"], [0.5, -0.5, -0.75, 0, 0] * 2)  # right - left (IBL)
    # +1 = left, -1 = right: right higher & rewarded -> right; left higher & rewarded -> left;
    # left higher & error -> right; equal contrasts -> undefined
    np.testing.assert_array_equal(sess.trials["choice"], [-1, 1, -1, np.nan, np.nan] * 2)
    np.testing.assert_array_equal(sess.trials["stimOn_times"], s1["time"][:, 0])
    np.testing.assert_allclose(sess.trials["stop_time"] - sess.trials["start_time"], 6 * BS)

    summary = prepare("trials", tmp_path / "ds", inputs=[str(tmp_path / "session1.npz"), str(tmp_path / "session8.npz")],
                      progress=False, heldout_subjects=["Hench"])
    assert summary["heldout"] == {"Hench": ["Hench_2017-06-15"]}
    dd, meta = load_dataset(tmp_path / "ds")
    assert heldout_sessions(meta) == ["Hench_2017-06-15"]
    assert {"choice", "feedbackType", "contrastLeft", "contrastRight", "signed_contrast"} <= set(meta.trial_label_names)
    assert meta.sessions["Cori_2016-12-14"].units["region"] == ["VISp", "root", "CA3"]
    rows = _rows_by_trial(dd, "Cori_2016-12-14")
    assert sorted(rows) == list(range(10))
    choice = [rows[k]["trial_choice"] for k in range(10)]
    np.testing.assert_array_equal(choice, [-1, 1, -1, np.nan, np.nan] * 2)
    batch = NfmCollator(meta, bin_size=2 * BS)([rows[k] for k in range(10)])
    for k in range(10):
        np.testing.assert_array_equal(batch["spikes"][k].numpy(), s1["spks"][k].T.reshape(3, 2, 3).sum(1))
    with pytest.raises(ValueError, match="Forssmann.*subjects"):
        prepare("trials", tmp_path / "x", inputs=[str(tmp_path / "session1.npz")], progress=False,
                heldout_subjects=["Forssmann"])


def test_derived_choice_rule():
    cl = np.array([0.0, 1.0, 0.5, 0.0, 0.25, 1.0])
    cr = np.array([1.0, 0.0, 0.5, 0.0, 0.5, 0.25])
    fb = np.array([-1, -1, 1, 1, 1, 1])
    np.testing.assert_array_equal(derived_choice(cl, cr, fb), [1, -1, np.nan, np.nan, -1, 1])


def test_bin_size_and_window_must_stay_on_the_source_grid(tmp_path):
    _write_nfm(tmp_path / "a.npz", T=8)
    inp = [str(tmp_path / "a.npz")]
    with pytest.raises(ValueError, match="not a whole multiple of session a's source bins of 0.02 s"):
        prepare("trials", tmp_path / "d1", inputs=inp, bin_size=0.01, progress=False)
    with pytest.raises(ValueError, match="not a whole multiple"):
        prepare("trials", tmp_path / "d2", inputs=inp, bin_size=0.03, window=(0.0, 0.12), progress=False)
    with pytest.raises(ValueError, match=r"reaches outside session a's trials.*0.16 s"):
        prepare("trials", tmp_path / "d3", inputs=inp, window=(0.0, 0.2), progress=False)
    with pytest.raises(ValueError, match="not on session a's grid"):
        prepare("trials", tmp_path / "d4", inputs=inp, window=(0.01, 0.15), bin_size=0.02, progress=False)
    # a sub-window on the grid is fine and exact
    prepare("trials", tmp_path / "ok", inputs=inp, window=(0.04, 0.12), bin_size=0.04, progress=False)
    dd, meta = load_dataset(tmp_path / "ok")
    counts = np.load(tmp_path / "a.npz")["counts"]
    rows = [r for s in dd for r in dd[s]]
    batch = NfmCollator(meta)(rows)
    for i, r in enumerate(rows):
        np.testing.assert_array_equal(batch["spikes"][i].numpy(), counts[r["trial_id"]][:, 2:6].T.reshape(2, 2, 4).sum(1))


def _bad_cases():
    rng = np.random.default_rng(0)
    n, N, T = 4, 3, 5
    good = dict(counts=_counts(rng, n, N, T), bin_starts=_bin_starts(rng, n, T, jitter=False),
                unit_regions=np.array(["VISp", "CA1", "MOs"]))
    neg = good["counts"].astype(np.int16)
    neg[2, 1, 3] = -1
    frac = good["counts"].astype(np.float32)
    frac[1, 0, 2] = 1.5
    nan = good["counts"].astype(np.float64)
    nan[0, 2, 4] = np.nan
    unequal = good["bin_starts"].copy()
    unequal[3, 2:] += 0.005  # bin 1 of trial 3 is 25 ms wide
    decreasing = good["bin_starts"].copy()
    decreasing[1, 3] = decreasing[1, 1]
    overlap = good["bin_starts"].copy()
    overlap[2] = overlap[1] + 0.05
    return [
        ("ndim", {"counts": good["counts"][:, :, 0]}, r"field 'counts': shape \(4, 3\): expected 3 dims"),
        ("starts", {"bin_starts": good["bin_starts"][:, :4]}, r"field 'bin_starts': shape \(4, 4\) does not match counts \(4, 3, 5\)"),
        ("starts_trials", {"bin_starts": good["bin_starts"][:3]}, r"field 'bin_starts': shape \(3, 5\)"),
        ("regions", {"unit_regions": np.array(["VISp", "CA1"])}, r"field 'unit_regions': shape \(2,\) does not match 3 units"),
        ("negative", {"counts": neg}, r"field 'counts': negative count -1 at trial 2, unit 1, bin 3"),
        ("fraction", {"counts": frac}, r"field 'counts': non-integer count 1.5 at trial 1, unit 0, bin 2"),
        ("nonfinite", {"counts": nan}, r"field 'counts': non-finite count nan at trial 0, unit 2, bin 4"),
        ("unequal", {"bin_starts": unequal}, r"field 'bin_starts': bins of unequal width at trial 3, bin 1: 0.025"),
        ("decreasing", {"bin_starts": decreasing}, r"field 'bin_starts': not increasing at trial 1, bin 3: "),
        ("overlap", {"bin_starts": overlap}, r"field 'bin_starts': trial 2 starts at .* before trial 1 ends"),
        ("trialvar", {"trial_choice": np.ones((n, 2))}, r"field 'choice': shape \(4, 2\) is not \(4,\) or \(4, 1\)"),
        ("trialvar_len", {"trial_choice": np.ones(n + 1)}, r"field 'choice': shape \(5,\)"),
        ("unknown", {"spike_counts": np.ones(3)}, r"field 'spike_counts': unknown key"),
        ("binsize", {"bin_size": np.float64(-0.02)}, r"field 'bin_size': value -0.02 is not a positive"),
        ("missing", {"unit_regions": None}, r"field 'unit_regions': required array missing"),
    ], good


@pytest.mark.parametrize("case", [c[0] for c in _bad_cases()[0]])
def test_bad_nfm_files_are_refused_naming_file_field_value(tmp_path, case):
    cases, good = _bad_cases()
    _, change, pattern = next(c for c in cases if c[0] == case)
    arrays = {**good, **change}
    arrays = {k: v for k, v in arrays.items() if v is not None}
    path = tmp_path / f"bad_{case}.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=rf"bad_{case}\.npz: {pattern}"):
        load_npz(path)
    with pytest.raises(DataError, match=rf"bad_{case}\.npz"):  # the same through prepare
        prepare("trials", tmp_path / "ds", inputs=[str(path)], progress=False)
    assert not (tmp_path / "ds").exists()


def test_bad_steinmetz_files_are_refused(tmp_path):
    rng = np.random.default_rng(5)
    cases = [
        ({"feedback_type": np.array([1, 0, 1, 1, -1], dtype=np.int8)}, r"field 'feedback_type': value 0.0 at trial 1"),
        ({"contrast_left": np.array([0, 0, 2.0, 0, 0])}, r"field 'contrast_left': contrast 2.0 at trial 2 is not in \[0, 1\]"),
        ({"contrast_right": np.zeros((5, 2))}, r"field 'contrast_right': shape \(5, 2\) is not \(5,\) or \(5, 1\)"),
        ({"time": np.zeros((5, 7))}, r"field 'time': shape \(5, 7\) does not match counts \(5, 3, 6\)"),
        ({"brain_area": np.array(["VISp", "", "CA1"])}, r"field 'brain_area': empty string at unit 1"),
        ({"mouse_name": None}, r"field 'mouse_name': required array missing"),
    ]
    for i, (change, pattern) in enumerate(cases):
        arrays = {k: v for k, v in {**_steinmetz_arrays(rng), **change}.items() if v is not None}
        np.savez(tmp_path / f"s{i}.npz", **arrays)
        with pytest.raises(DataError, match=rf"s{i}\.npz: {pattern}"):
            load_npz(tmp_path / f"s{i}.npz")
    np.savez(tmp_path / "neither.npz", spikes=np.ones((2, 2)))
    with pytest.raises(DataError, match=r"neither\.npz: field 'counts': not a trial-count file"):
        load_npz(tmp_path / "neither.npz")
    np.savez(tmp_path / "obj.npz", **{**_steinmetz_arrays(rng), "spks": np.array([None, 1], dtype=object)})
    with pytest.raises(ValueError, match="allow_pickle"):  # object arrays are never unpickled
        load_npz(tmp_path / "obj.npz")
    s = _steinmetz_arrays(rng)
    np.savez(tmp_path / "a.npz", **s)
    np.savez(tmp_path / "b.npz", **s)
    with pytest.raises(DataError, match=r"b\.npz: field 'session': session id 'Cori_2016-12-14' is also the id of"):
        prepare("trials", tmp_path / "ds", inputs=[str(tmp_path / "a.npz"), str(tmp_path / "b.npz")], progress=False)


def test_events_sit_at_bin_centres_in_time_order(tmp_path):
    counts = np.zeros((2, 3, 4), dtype=np.uint8)
    counts[0, 2, 0], counts[0, 0, 0], counts[0, 1, 3], counts[1, 0, 1] = 2, 1, 3, 1
    starts = np.array([[10.0, 10.02, 10.04, 10.06], [11.0, 11.02, 11.04, 11.06]])
    np.savez(tmp_path / "c.npz", counts=counts, bin_starts=starts, unit_regions=np.array(["A", "B", "C"]))
    s = load_npz(tmp_path / "c.npz")
    np.testing.assert_allclose(s.spike_times, [10.01, 10.01, 10.01, 10.07, 10.07, 10.07, 11.03], atol=1e-12)
    np.testing.assert_array_equal(s.spike_units, [0, 2, 2, 1, 1, 1, 0])
    assert s.extra["source_bin_size"] == 0.02 and s.recording_end == pytest.approx(11.08)
    assert (s.session_id, s.subject_id) == ("c", "c")


@pytest.mark.slow
def test_prepare_data_cli_trials(tmp_path):
    rng = np.random.default_rng(7)
    for name, mouse in (("session1", "Cori"), ("session4", "Forssmann")):
        np.savez(tmp_path / f"{name}.npz", **_steinmetz_arrays(rng, n=10, mouse=mouse, date="2017-01-01"))
    cmd = [sys.executable, str(ROOT / "recipes/prepare_data.py"), "--source", "trials", "--input",
           str(tmp_path / "session1.npz"), str(tmp_path / "session4.npz"), "--heldout_subjects", "Forssmann",
           "--output_dir", str(tmp_path / "ds")]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "sessions 2  subjects 2  units 6" in res.stdout
    assert "bins     6 of 0.02 s" in res.stdout
    assert "held out Forssmann: Forssmann_2017-01-01" in res.stdout
    res = subprocess.run([*cmd[:-1], str(tmp_path / "ds2"), "--bin_size", "0.01"], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 2 and "whole multiple" in res.stderr and "Traceback" not in res.stderr
