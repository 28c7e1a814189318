"""Vectorised trial alignment and binning of spike events and frame data.

No Python loop runs per spike, per unit or per trial here: trials are cut out
of the sorted spike train with ``np.searchsorted`` and gathered with one
``np.repeat``; counts come from one ``np.bincount``.

Conventions: times in seconds; a trial window ``(start, stop)`` is relative
to the trial's align time and half-open ``[start, stop)``; bin ``b`` covers
``[start + b * bin_size, start + (b + 1) * bin_size)``.
"""
from __future__ import annotations

import numpy as np


def n_bins_for(window: tuple[float, float], bin_size: float) -> int:
    """Number of bins in ``window`` (seconds) at ``bin_size`` (seconds).

    Raises ``ValueError`` unless the window is a whole number of bins (to
    1e-6 relative), so that no partial bin is ever silently dropped.
    """
    start, stop = float(window[0]), float(window[1])
    if not stop > start:
        raise ValueError(f"window {window!r}: stop must be after start")
    if not bin_size > 0:
        raise ValueError(f"bin_size {bin_size!r} must be positive")
    n = (stop - start) / bin_size
    if abs(n - round(n)) > 1e-6 * max(1.0, n):
        raise ValueError(f"window {window!r} is not a whole number of {bin_size} s bins ({n:.6f})")
    return int(round(n))


def align_events(
    spike_times: np.ndarray,
    spike_units: np.ndarray,
    align_times: np.ndarray,
    window: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut the spikes of every trial window out of a sorted spike train.

    Args:
        spike_times: (S,) seconds, sorted ascending.
        spike_units: (S,) unit index of each spike.
        align_times: (n_trials,) seconds; windows may overlap.
        window: (start, stop) seconds relative to each align time.

    Returns:
        offsets: (n_trials + 1,) int64; trial k owns events ``offsets[k]:offsets[k+1]``.
        rel_times: (E,) float64 seconds relative to the align time, in [start, stop).
        units: (E,) unit index. Within a trial, events are ordered by time then unit.
    """
    spike_times = np.asarray(spike_times)
    align_times = np.asarray(align_times, dtype=np.float64)
    lo = np.searchsorted(spike_times, align_times + window[0], side="left")
    hi = np.searchsorted(spike_times, align_times + window[1], side="left")
    lengths = hi - lo
    offsets = np.zeros(len(align_times) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])
    # index of every selected spike: lo[k] + (position within trial k)
    idx = np.arange(total, dtype=np.int64) + np.repeat(lo - offsets[:-1], lengths)
    trial_of = np.repeat(np.arange(len(align_times)), lengths)
    rel = spike_times[idx] - align_times[trial_of]
    units = np.asarray(spike_units)[idx]
    # ties in time: order by unit (spikes are already sorted by time and trial)
    if total > 1:
        same = rel[1:] == rel[:-1]
        if same.any():
            order = np.lexsort((units, rel, trial_of))
            rel, units = rel[order], units[order]
    return offsets, rel, units


#: Tolerance [s] of every time -> bin assignment.  Spike times are stored as float32 seconds (rounding of up to
#: ~1e-7 s at 2 s); a time within ``TIME_EPS`` below a bin edge belongs to the bin that starts at that edge, and a
#: time within ``TIME_EPS`` of the window end belongs to the last bin.  1 us is 30x finer than a 30 kHz sample.
TIME_EPS = 1e-6


def _bin_error(times, bad, start, bin_size, n_bins, what) -> ValueError:
    bad = np.asarray(bad)
    i = int(np.flatnonzero(bad.ravel())[0])
    t = float(np.asarray(times).ravel()[i])
    where = (f"{what} {i}" if bad.ndim <= 1 else
             f"{what} {int(np.unravel_index(i, bad.shape)[-1])} of trial {int(np.unravel_index(i, bad.shape)[0])}")
    return ValueError(f"{where}: time {t!r} s is outside the window [{start}, {start + n_bins * bin_size}) s "
                      f"of {n_bins} bins of {bin_size} s")


def bin_index(times: np.ndarray, bin_size: float, n_bins: int, start: float = 0.0, *,
              what: str = "event") -> np.ndarray:
    """Bin of each time: ``floor((t - start + TIME_EPS) / bin_size)`` (int64, same shape as ``times``).

    Args:
        times: seconds, on the same clock as ``start``.
        bin_size: [s]; n_bins: bins of the window; start: window start [s].
    Bin ``b`` covers ``[start + b * bin_size, start + (b + 1) * bin_size)`` (up to :data:`TIME_EPS`).  A time
    before ``start - TIME_EPS``, at or after ``start + n_bins * bin_size + TIME_EPS`` or not finite raises
    ``ValueError`` naming its index and value (``what`` names the thing counted); nothing is silently dropped.
    The torch twin is :func:`bin_index_torch` (same formula, same errors).
    """
    t = np.asarray(times, dtype=np.float64)
    b = np.floor((t - start + TIME_EPS) / bin_size)
    bad = ~np.isfinite(b) | (b < 0) | (t - start >= n_bins * bin_size + TIME_EPS)
    if bad.any():
        raise _bin_error(t, bad, start, bin_size, n_bins, what)
    return np.minimum(b, n_bins - 1).astype(np.int64)


def bin_index_torch(times, bin_size: float, n_bins: int, start: float = 0.0, *, valid=None, what: str = "event"):
    """:func:`bin_index` for a torch tensor (computed in float64; ``valid``: bool mask of the entries to check and
    count, others get bin 0).  Returns a long tensor of ``times.shape``."""
    import torch

    t = times.double()
    b = torch.floor((t - start + TIME_EPS) / bin_size)
    bad = ~torch.isfinite(b) | (b < 0) | (t - start >= n_bins * bin_size + TIME_EPS)
    if valid is not None:
        bad = bad & valid.bool()
    if bool(bad.any()):
        raise _bin_error(t.detach().cpu().numpy(), bad.detach().cpu().numpy(), start, bin_size, n_bins, what)
    b = b.clamp(0, n_bins - 1).long()
    return b if valid is None else torch.where(valid.bool(), b, torch.zeros_like(b))


def sum_bins(x: np.ndarray, k: int, axis: int = 1) -> np.ndarray:
    """Counts at ``k`` times coarser bins: sums of ``k`` consecutive bins along ``axis`` (a trailing partial group
    raises ``ValueError`` instead of being dropped)."""
    return _group_bins(x, k, axis).sum(axis=axis + 1)


def mean_bins(x: np.ndarray, k: int, axis: int = 1) -> np.ndarray:
    """Per-bin signals (behaviour, stimulus) at ``k`` times coarser bins: means of ``k`` consecutive bins."""
    return _group_bins(x, k, axis).mean(axis=axis + 1)


def _group_bins(x: np.ndarray, k: int, axis: int) -> np.ndarray:
    x = np.asarray(x)
    T = x.shape[axis]
    if k < 1 or T % k:
        raise ValueError(f"{T} bins cannot be grouped by {k}: the count must divide the number of bins")
    return x.reshape(x.shape[:axis] + (T // k, k) + x.shape[axis + 1:])


def bin_trials(
    spike_times: np.ndarray,
    spike_units: np.ndarray,
    n_units: int,
    align_times: np.ndarray,
    window: tuple[float, float],
    bin_size: float,
    dtype=np.int32,
) -> np.ndarray:
    """Spike counts of every trial: (n_trials, n_bins, n_units) ``dtype``."""
    T = n_bins_for(window, bin_size)
    offsets, rel, units = align_events(spike_times, spike_units, align_times, window)
    n_trials = len(offsets) - 1
    trial_of = np.repeat(np.arange(n_trials, dtype=np.int64), np.diff(offsets))
    flat = (trial_of * T + bin_index(rel, bin_size, T, window[0], what="spike")) * n_units + units
    counts = np.bincount(flat, minlength=n_trials * T * n_units)
    return counts.astype(dtype, copy=False).reshape(n_trials, T, n_units)


def bin_spikes(
    spike_times: np.ndarray,
    spike_units: np.ndarray,
    n_units: int,
    window: tuple[float, float],
    bin_size: float,
) -> np.ndarray:
    """Counts of one trial's events (times relative to its align time): (n_bins, n_units) int32."""
    order = np.argsort(spike_times, kind="stable")
    return bin_trials(np.asarray(spike_times)[order], np.asarray(spike_units)[order],
                      n_units, np.zeros(1), window, bin_size)[0]


def bin_centres(align_times: np.ndarray, window: tuple[float, float], bin_size: float) -> np.ndarray:
    """Absolute bin-centre times (seconds): (n_trials, n_bins)."""
    T = n_bins_for(window, bin_size)
    rel = window[0] + (np.arange(T) + 0.5) * bin_size
    return np.asarray(align_times, dtype=np.float64)[:, None] + rel[None, :]


def interpolate_at(times: np.ndarray, values: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Linear interpolation of a sampled signal at times ``at``, NaN outside its range.

    Args:
        times: (K,) sorted sample times (seconds).
        values: (K,) or (K, N) samples (N signals share the clock).
        at: any shape, query times (seconds).

    Returns: ``at.shape`` (+ ``(N,)``) float32; NaN where ``at`` lies outside
    ``[times[0], times[-1]]``; a NaN sample makes its neighbouring queries NaN.
    """
    times = np.asarray(times, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    q = np.asarray(at, dtype=np.float64).ravel()
    if len(times) == 0:
        out = np.full(q.shape + values.shape[1:], np.nan)
        return out.reshape(np.shape(at) + values.shape[1:]).astype(np.float32)
    i1 = np.clip(np.searchsorted(times, q, side="right"), 1, max(len(times) - 1, 1))
    i0 = i1 - 1
    if len(times) == 1:
        i0 = i1 = np.zeros_like(q, dtype=np.int64)
        w = np.zeros_like(q)
    else:
        dt = times[i1] - times[i0]
        w = np.where(dt > 0, (q - times[i0]) / np.where(dt > 0, dt, 1.0), 0.0)
    if values.ndim == 2:
        w = w[:, None]
    out = values[i0] * (1.0 - w) + values[i1] * w
    outside = (q < times[0]) | (q > times[-1])
    out[outside] = np.nan
    return out.reshape(np.shape(at) + values.shape[1:]).astype(np.float32)


# --------------------------------------------------------------------------- 2-photon frames
def frame_period(frame_times: np.ndarray) -> float:
    """Imaging frame period [s] of a frame clock (F,) sorted: the median interval between frames (robust to a
    few dropped frames).  Raises ``ValueError`` for fewer than 2 frames."""
    ft = np.asarray(frame_times, dtype=np.float64)
    if ft.size < 2:
        raise ValueError(f"a frame clock needs at least 2 frames to have a period, got {ft.size}")
    return float(np.median(np.diff(ft)))


def average_frames(frame_times: np.ndarray, values: np.ndarray, align_times: np.ndarray,
                   window: tuple[float, float], bin_size: float) -> tuple[np.ndarray, np.ndarray]:
    """2-photon activity at its own clock: each bin is the mean of the frames whose time lies in it.

    Bin ``b`` of trial ``i`` covers ``[align_i + window[0] + b * bin_size, ... + (b + 1) * bin_size)`` (the
    binning convention of this module).  No value is interpolated between frames, so a masked bin carries no
    information of its neighbours; a bin without a (finite) frame is NaN (missing, never scored).

    Args:
        frame_times: (F,) sorted frame times [s]; values: (F, N) activity (NaN = bad frame);
        align_times: (n,) trial align times [s]; window: (start, stop) [s]; bin_size [s].
    Returns: ``(activity (n, T, N) float32, frames_per_bin (n, T) int64)`` (finite frames averaged per bin,
    counted over all N: a bad frame is NaN for every ROI).
    Vectorised: two ``searchsorted`` over the bin edges and cumulative sums over frames (no loop per trial).
    """
    ft = np.asarray(frame_times, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 1:
        v = v[:, None]
    T = n_bins_for(window, bin_size)
    edges = np.asarray(align_times, dtype=np.float64)[:, None] + window[0] + np.arange(T + 1) * bin_size
    idx = np.searchsorted(ft, edges - 1e-9 * bin_size, side="left")  # (n, T + 1)
    ok = np.isfinite(v)
    zero = np.zeros((1, v.shape[1]))
    csum = np.concatenate([zero, np.cumsum(np.where(ok, v, 0.0), axis=0)])
    ccnt = np.concatenate([zero, np.cumsum(ok, axis=0, dtype=np.float64)])
    sums = csum[idx[:, 1:]] - csum[idx[:, :-1]]  # (n, T, N)
    cnts = ccnt[idx[:, 1:]] - ccnt[idx[:, :-1]]
    out = np.divide(sums, cnts, out=np.full(sums.shape, np.nan), where=cnts > 0)
    per_bin = np.diff(idx, axis=1).astype(np.int64)
    return out.astype(np.float32), per_bin
