"""Session -> trial-aligned records (one row per trial), as an Arrow table.

Rows keep spikes sparse (event times relative to the align event, and unit
indices) so that any bin size can be derived later; per-bin behaviour and
stimulus features are interpolated at bin centres; 2-photon activity is read
at its own clock: each bin is the mean of the imaging frames inside it (the
bin size must be at least the frame period), or, only when asked for
(``calcium_binning="interpolate"``), linearly interpolated at bin centres --
then neighbouring bins share frames and a temporally masked bin is nearly the
line between its neighbours (see :mod:`nfm.data.prepare`).
Everything is built column-wise with ``pyarrow`` list arrays from offsets:
no Python loop per trial, unit or spike.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from .binning import align_events, average_frames, bin_centres, frame_period, interpolate_at, n_bins_for
from .schema import Session

SPLITS = ("train", "validation", "test")
#: how 2-photon frames become bins: averaged per bin at their own clock, or interpolated (explicit opt-in)
CALCIUM_BINNING = ("frames", "interpolate")
#: relative tolerance of "bin_size >= frame period" (frame clocks jitter)
FRAME_TOLERANCE = 1e-3


def consecutive_windows(t_start: float, t_end: float, length: float = 2.0) -> dict[str, np.ndarray]:
    """Trials table for recordings without trials: back-to-back windows.

    Windows of ``length`` seconds start at ``t_start``; the last partial window
    (shorter than ``length``) is not a trial. Returns ``start_time``/``stop_time``
    columns (seconds); align on ``start_time`` with window ``(0, length)``.
    """
    if not length > 0:
        raise ValueError(f"window length {length!r} must be positive")
    n = int(np.floor((t_end - t_start) / length + 1e-9))
    if n <= 0:
        raise ValueError(f"recording from {t_start} s to {t_end} s is shorter than one {length} s window")
    start = t_start + length * np.arange(n, dtype=np.float64)
    return {"start_time": start, "stop_time": start + length}


def assign_splits(n_trials: int, fractions=(0.7, 0.1, 0.2), seed: int = 42, mode: str = "random") -> np.ndarray:
    """Split label (0 train, 1 validation, 2 test) of each trial.

    ``mode="random"`` shuffles trials with ``seed`` (MtM); ``mode="contiguous"``
    keeps time order (first trials train, then validation, last test), for
    continuous recordings cut into windows where neighbours are correlated.
    Counts: ``round(f * n)`` for train and validation, the rest to test.
    """
    if mode not in ("random", "contiguous"):
        raise ValueError(f"split mode {mode!r} must be 'random' or 'contiguous'")
    f = np.asarray(fractions, dtype=np.float64)
    if f.shape != (3,) or np.any(f < 0) or abs(f.sum() - 1) > 1e-6:
        raise ValueError(f"split fractions {fractions!r} must be three non-negative numbers summing to 1")
    n_train = int(round(f[0] * n_trials))
    n_val = min(int(round(f[1] * n_trials)), n_trials - n_train)
    labels = np.full(n_trials, 2, dtype=np.int8)
    perm = np.random.default_rng(seed).permutation(n_trials) if mode == "random" else np.arange(n_trials)
    labels[perm[:n_train]] = 0
    labels[perm[n_train:n_train + n_val]] = 1
    return labels


def frame_rate_error(bin_size: float, period: float) -> str:
    """The message of a bin finer than the imaging frame period (one place, so every path says the same)."""
    return (f"bin_size {bin_size:g} s is finer than the imaging frame period {period:.4g} s ({1 / period:.4g} Hz "
            f"frames): 2-photon activity is binned at its own clock, a whole number of frames per bin (default: "
            f"the frame period, or frames_per_bin=k frames); to interpolate between frames anyway pass "
            f"--calcium_interpolate (calcium_binning='interpolate'): temporally masked bins then leak their "
            f"neighbours' frames")


def _list_array(offsets: np.ndarray, values: np.ndarray, type_: pa.DataType) -> pa.ListArray:
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(values, type=type_))


def _fixed_lists(matrix: np.ndarray) -> pa.ListArray:
    """(rows, L) float32 -> list<float32> column of length-L lists."""
    rows, L = matrix.shape
    return _list_array(np.arange(rows + 1, dtype=np.int64) * L, matrix.reshape(-1).astype(np.float32), pa.float32())


def session_table(
    session: Session,
    *,
    align_event: str,
    window: tuple[float, float],
    bin_size: float,
    split: np.ndarray,
    calcium_binning: str = "frames",
) -> pa.Table:
    """Arrow table of one session's trials (see ``nfm.data.hf`` for the columns).

    ``calcium_binning`` (2-photon only): ``"frames"`` averages the frames inside each bin (``bin_size`` must be
    >= the session's frame period, else ``DataError`` naming the frame rate); ``"interpolate"`` interpolates
    linearly at bin centres (any bin size; neighbouring bins then share frames).
    """
    if align_event not in session.trials:
        raise session.error(f"trials.{align_event}",
                            f"align event column not found; trials columns are {sorted(session.trials)}")
    align = np.asarray(session.trials[align_event], dtype=np.float64)
    bad = ~np.isfinite(align)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise session.error(f"trials.{align_event}", f"value {align[i]!r} at trial {i} is not a finite time")
    T = n_bins_for(window, bin_size)
    n = len(align)
    cols: dict[str, pa.Array] = {
        "session_id": pa.array([session.session_id] * n, pa.string()),
        "subject_id": pa.array([session.subject_id] * n, pa.string()),
        "trial_id": pa.array(np.arange(n, dtype=np.int32)),
        "split": pa.array(np.asarray(SPLITS)[split].tolist(), pa.string()),
    }
    if session.modality == "spikes":
        if session.recording_end is not None and np.any(align + window[1] > session.recording_end + 1e-9):
            i = int(np.flatnonzero(align + window[1] > session.recording_end + 1e-9)[0])
            raise session.error(f"trials.{align_event}",
                                f"trial {i} window ends at {align[i] + window[1]!r} s, after the recording end {session.recording_end!r} s")
        offsets, rel, units = align_events(session.spike_times, session.spike_units, align, window)
        cols["spike_times"] = _list_array(offsets, rel.astype(np.float32), pa.float32())
        cols["spike_units"] = _list_array(offsets, units.astype(np.int32), pa.int32())
    else:
        ft = np.asarray(session.frame_times)
        if calcium_binning not in CALCIUM_BINNING:
            raise ValueError(f"calcium_binning {calcium_binning!r} is not one of {CALCIUM_BINNING}")
        if calcium_binning == "frames":
            period = frame_period(ft)
            if bin_size < period * (1 - FRAME_TOLERANCE):
                raise session.error("frame_times", frame_rate_error(bin_size, period))
            lo, hi = align + window[0], align + window[1]
            outside = (lo < ft[0] - 1e-9) | (hi > ft[-1] + period + 1e-9)
            if outside.any():
                i = int(np.flatnonzero(outside)[0])
                raise session.error(f"trials.{align_event}",
                                    f"trial {i} window ({lo[i]:.3f}, {hi[i]:.3f}) s lies outside the frames "
                                    f"({ft[0]:.3f}, {ft[-1] + period:.3f}) s")
            act, _ = average_frames(ft, session.activity, align, window, bin_size)  # (n, T, N)
        else:
            centres = bin_centres(align, window, bin_size)  # (n, T)
            outside = (centres[:, 0] < ft[0]) | (centres[:, -1] > ft[-1])
            if outside.any():
                i = int(np.flatnonzero(outside)[0])
                raise session.error(f"trials.{align_event}",
                                    f"trial {i} window ({align[i] + window[0]:.3f}, {align[i] + window[1]:.3f}) s lies outside the frames ({ft[0]:.3f}, {ft[-1]:.3f}) s")
            act = interpolate_at(ft, session.activity, centres)  # (n, T, N)
        N = act.shape[-1]
        inner = _list_array(np.arange(n * T + 1, dtype=np.int64) * N, act.reshape(-1), pa.float32())
        cols["activity"] = pa.ListArray.from_arrays(pa.array((np.arange(n + 1) * T).astype(np.int32)), inner)
    for name, values in session.trials.items():
        v = np.asarray(values)
        if v.dtype.kind not in "biuf":
            raise session.error(f"trials.{name}", f"non-numeric column of dtype {v.dtype} (first value {v[0]!r})")
        cols[f"trial_{name}"] = pa.array(v.astype(np.float32))
    for prefix, signals in (("behavior", session.behavior), ("stimulus", session.stimulus)):
        if not signals:
            continue
        centres = bin_centres(align, window, bin_size)
        for name, (t, v) in signals.items():
            cols[f"{prefix}_{name}"] = _fixed_lists(interpolate_at(t, v, centres))
    return pa.table(cols)
