"""Binned-count npz source, contiguous splits, and the prepare_data recipe end to end."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nfm.data.collate import NfmCollator
from nfm.data.hf import load_dataset
from nfm.data.meta import DatasetMeta
from nfm.data.prepare import prepare
from nfm.data.schema import DataError
from nfm.data.sources.binned import load_npz

ROOT = Path(__file__).resolve().parents[1]


def _write_npz(path, T=400, N=6, seed=0, jitter=True):
    rng = np.random.default_rng(seed)
    counts = rng.poisson(0.7, (T, N)).astype(np.uint8)
    t = 3.0 + 0.05 * np.arange(T)
    if jitter:
        t = np.round(t, 3) + rng.choice([-4e-4, 0, 4e-4], T)
    vel = rng.standard_normal((T, 2)).astype(np.float32)
    np.savez(path, spikes=counts, time=t, hand_vel=vel, bin_size=np.float64(0.05))
    return counts, vel, t


def test_binned_npz_round_trips_counts_and_splits_in_time(tmp_path):
    counts, vel, t = _write_npz(tmp_path / "rec.npz")
    summary = prepare("binned", tmp_path / "ds", inputs=[str(tmp_path / "rec.npz")], progress=False)
    dd, meta = load_dataset(tmp_path / "ds")
    assert meta.split_mode == "contiguous" and meta.bin_size == 0.05
    assert summary["trials"] == {"train": 7, "validation": 1, "test": 2}  # 400 bins -> 10 windows of 40
    assert max(dd["train"]["trial_id"]) < min(dd["validation"]["trial_id"]) < min(dd["test"]["trial_id"])
    coll = NfmCollator(meta)
    for split in dd:
        rows = list(dd[split])
        batch = coll(rows)
        for b, r in enumerate(rows):
            k = r["trial_id"]
            np.testing.assert_array_equal(batch["spikes"][b].numpy(), counts[40 * k:40 * (k + 1)])
            # behaviour: samples sit at their (jittered) bin centres, read at the window's regular bin centres
            centres = t[0] + 2.0 * k + 0.05 * (np.arange(40) + 0.5)
            expected = np.interp(centres, t + 0.025, vel[:, 0].astype(np.float64))
            np.testing.assert_allclose(batch["behavior"][b, :, meta.behavior_names.index("hand_velocity_x")].numpy(),
                                       expected, rtol=1e-5, atol=1e-5)


def test_binned_npz_bad_input(tmp_path):
    np.savez(tmp_path / "nospk.npz", time=np.arange(3.0), bin_size=np.float64(0.05))
    with pytest.raises(DataError, match="nospk.npz.*spikes"):
        load_npz(tmp_path / "nospk.npz")
    np.savez(tmp_path / "gap.npz", spikes=np.ones((4, 2), dtype=np.uint8), time=np.array([0, 0.05, 0.2, 0.25]),
             bin_size=np.float64(0.05))
    with pytest.raises(DataError, match="not contiguous at index 2"):
        load_npz(tmp_path / "gap.npz")
    np.savez(tmp_path / "obj.npz", spikes=np.array([None, 1], dtype=object), time=np.arange(2.0), bin_size=0.05)
    with pytest.raises(ValueError):  # object arrays are never unpickled
        load_npz(tmp_path / "obj.npz")


@pytest.mark.slow
def test_prepare_data_recipe_cli_synthetic(tmp_path):
    out = tmp_path / "synth"
    cmd = [sys.executable, str(ROOT / "recipes/prepare_data.py"), "--source", "synthetic", "--output_dir", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    # the default world is the demo's (recipes/configs/synthetic.yaml): 5 animals x 2 sessions, one held out
    assert "sessions 10  subjects 5" in res.stdout and "spikes" in res.stdout
    assert "held out synth-mouse-04: synth-04-00 synth-04-01" in res.stdout
    meta = DatasetMeta.load(out)
    assert meta.align_event == "stimOn_times" and meta.split_mode == "random"
    # refuses to overwrite; a wrong source input is a clear error
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "exists" in res.stderr and "Traceback" not in res.stderr
    res = subprocess.run([sys.executable, str(ROOT / "recipes/prepare_data.py"), "--source", "nwb", "--input",
                          str(tmp_path / "missing.nwb"), "--output_dir", str(tmp_path / "x")], capture_output=True, text=True)
    assert res.returncode == 2 and "missing.nwb" in res.stderr and "Traceback" not in res.stderr
