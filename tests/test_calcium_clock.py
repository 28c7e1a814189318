"""2-photon data at its own clock: default bin = imaging frame period, finer bins refused unless interpolation is
asked for, several frame rates share a grid by averaging to the slowest, temporal masks over whole frames, and
the interpolation leak (a neighbour-average predictor) that the default protocol removes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nfm.data.collate import NfmCollator
from nfm.data.hf import build_dataset, load_dataset
from nfm.data.prepare import calcium_bin_size, prepare
from nfm.data.sources.synthetic import make_calcium_world
from nfm.models import NfmConfig
from nfm.models.masking import temporal_mask

FRAME_RATE = 16.0  # Hz (10 ms simulation steps: frames every 6 steps = 60 ms, a 16.7 Hz clock)


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    root = tmp_path_factory.mktemp("clock")
    opts = dict(n_animals=1, n_cells=16, n_trials=30, frame_rate=FRAME_RATE)
    prepare("synthetic", root / "frames", world="calcium", source_options=opts, progress=False)
    prepare("synthetic", root / "interp", world="calcium", source_options=opts, bin_size=0.02,
            calcium_interpolate=True, progress=False)
    return root


def test_default_bin_is_the_frame_period_and_finer_is_refused(worlds, tmp_path):
    _, meta = load_dataset(worlds / "frames")
    period = 0.06
    assert meta.frame_period == pytest.approx(period) and meta.calcium_binning == "frames"
    # 2 s window / 60 ms frames = 33.3: 33 bins of 60.6 ms (never shorter than a frame, so never empty)
    assert meta.n_bins == 33 and meta.bin_size == pytest.approx(2.0 / 33)
    dd, _ = load_dataset(worlds / "frames")
    act = np.asarray(dd["train"][0]["activity"])
    assert act.shape == (33, 16) and np.isfinite(act).all()
    with pytest.raises(Exception, match=r"bin_size 0.02 s is finer than the imaging frame period 0.06 s "
                                        r"\(16.67 Hz frames\).*--calcium_interpolate"):
        prepare("synthetic", tmp_path / "x", world="calcium", bin_size=0.02, progress=False,
                source_options=dict(n_animals=1, n_cells=4, n_trials=5, frame_rate=FRAME_RATE))
    assert not (tmp_path / "x").exists()
    with pytest.raises(ValueError, match="finer than the imaging frame period"):
        meta.grid(0.03)  # a model cannot read it finer either
    with pytest.raises(ValueError, match="not a whole number of"):
        meta.grid(2 * meta.bin_size)  # 33 bins do not pair up
    assert meta.grid(3 * meta.bin_size)[2] == 11  # 3 frames per bin
    with pytest.raises(ValueError, match="whole multiples"):
        meta.grid(1.5 * meta.bin_size)


def test_frames_per_bin_and_coarser_reading_average_frames(tmp_path):
    sessions = make_calcium_world(n_animals=1, n_cells=5, n_trials=12, frame_rate=10.0)
    assert calcium_bin_size(sessions, (-0.5, 1.5), frames_per_bin=2) == pytest.approx(0.2)
    dd, meta = build_dataset(sessions, window=(-0.5, 1.5), bin_size=0.1)
    coll = NfmCollator(meta, bin_size=0.2)  # a whole multiple: the mean of pairs of stored bins
    rows = dd["train"].select(range(3)).to_list()
    fine = np.asarray([r["activity"] for r in rows], dtype=np.float32)
    got = coll(rows)["spikes"].numpy()
    np.testing.assert_allclose(got, fine.reshape(3, 10, 2, 5).mean(2), rtol=1e-6)


def test_different_frame_rates_share_the_slowest_clock():
    fast = make_calcium_world(n_animals=1, n_cells=4, n_trials=10, frame_rate=20.0, seed=1)
    slow = make_calcium_world(n_animals=1, n_cells=4, n_trials=10, frame_rate=10.0, seed=2)
    slow[0].session_id, slow[0].subject_id = "slow", "slow-mouse"
    size = calcium_bin_size(fast + slow, (-0.5, 1.5))
    assert size == pytest.approx(0.1)
    dd, meta = build_dataset(fast + slow, window=(-0.5, 1.5), bin_size=size)
    assert meta.frame_period == pytest.approx(0.1)
    assert meta.sessions["synth-2p-00"].extra["frame_period_s"] == pytest.approx(0.05)
    row = next(r for r in dd["train"] if r["session_id"] == "synth-2p-00")
    ses = fast[0]
    t0 = ses.trials["stimOn_times"][row["trial_id"]] - 0.5
    inside = (ses.frame_times >= t0) & (ses.frame_times < t0 + 0.1 - 1e-9)
    assert inside.sum() == 2  # two fast frames averaged into one bin of the slow clock
    np.testing.assert_allclose(row["activity"][0], ses.activity[inside].mean(0), rtol=1e-5)
    with pytest.raises(Exception, match="finer than the imaging frame period 0.1 s"):
        build_dataset(fast + slow, window=(-0.5, 1.5), bin_size=0.05)  # the slow session refuses 50 ms


def _neighbour_r2(path, block: int, seed: int = 0) -> float:
    """R2 of the neighbour-average predictor on temporally masked bins (whole ``block``-bin blocks, ratio 0.3 as
    the MtM temporal mask): each masked bin is the linear interpolation between the nearest unmasked bins."""
    dd, meta = load_dataset(path)
    b = NfmCollator(meta)(dd["train"].to_list())
    x = b["spikes"].numpy().astype(np.float64)
    B, T, N = x.shape
    m = temporal_mask(b["unit_mask"], T, 0.3, torch.Generator().manual_seed(seed), block=block).target[..., 0].numpy()
    pred = np.empty_like(x)
    for i in range(B):  # one step per trial
        keep = np.flatnonzero(~m[i])
        for n in range(N):
            pred[i, :, n] = np.interp(np.arange(T), keep, x[i, keep, n])
    sel = m[:, :, None] & b["valid_mask"].numpy()
    mu = np.where(sel, x, 0).sum((0, 1)) / sel.sum((0, 1))
    return 1 - ((pred - x) ** 2)[sel].sum() / ((x - mu) ** 2)[sel].sum()


def test_interpolation_leak_and_the_default_protocol_removes_it(worlds):
    leak = _neighbour_r2(worlds / "interp", block=1)
    default = _neighbour_r2(worlds / "frames", block=1)
    # interpolated 20 ms bins between 60 ms frames: a masked bin is nearly the line between its neighbours
    assert leak > 0.8
    # at the frame clock the same predictor explains nothing (deconvolved events are not smooth across frames)
    assert default < 0.1 and leak - default > 0.7
    # interpolated data: the model's config masks whole frames (ceil(60 / 20) = 3 bins); this lowers the leak
    _, meta = load_dataset(worlds / "interp")
    cfg = NfmConfig.from_dataset_meta(meta)
    assert cfg.frame_bins_of(meta.session_ids[0]) == 3
    assert _neighbour_r2(worlds / "interp", block=3) < leak - 0.1


def test_temporal_block_mask_covers_whole_frames():
    um = torch.ones(4, 3, dtype=torch.bool)
    m = temporal_mask(um, 10, 0.5, torch.Generator().manual_seed(0), block=3).target[..., 0]
    for row in m:  # blocks [0..2], [3..5], [6..8], [9]: each all or nothing
        for lo, hi in ((0, 3), (3, 6), (6, 9), (9, 10)):
            assert row[lo:hi].all() or not row[lo:hi].any()
    assert (m.view(4, -1).sum(1) > 0).all()
    ref = temporal_mask(um, 10, 0.3, torch.Generator().manual_seed(1)).target
    same = temporal_mask(um, 10, 0.3, torch.Generator().manual_seed(1), block=1).target
    assert torch.equal(ref, same)  # block=1 is the old mask, draw for draw
