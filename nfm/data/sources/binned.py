"""Recordings distributed as binned spike counts (e.g. public count matrices).

Counts are turned into spike events placed at their bin's centre, so that
re-binning at the original bin size (or any whole multiple of it) gives the
original counts exactly; finer bins are meaningless for such data and
``load_npz`` records the source bin size in ``session.extra["source_bin_size"]``.

:func:`load_npz` reads the layout of the macaque M1 recording in
``shared/data/m1_stevenson_2011`` (keys ``spikes`` (T, N) counts, ``time`` (T,)
bin starts in s, ``bin_size``, and behaviour arrays such as ``hand_vel``
(T, 2), stored as ``hand_velocity_x``/``_y``); there are no trials, so windows are back-to-back (align on
``start_time``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..records import consecutive_windows
from ..schema import DataError, Session


#: npz key -> nfm behaviour name (the evaluation tasks look for these names)
BEHAVIOR_NAMES = {"hand_vel": "hand_velocity", "hand_pos": "hand_position"}


def session_from_counts(
    counts: np.ndarray,
    bin_starts: np.ndarray,
    bin_size: float,
    *,
    session_id: str,
    subject_id: str,
    region: str = "unknown",
    behavior: dict[str, np.ndarray] | None = None,
    behavior_units: dict[str, str] | None = None,
    window_length: float = 2.0,
    source: str = "<memory>",
) -> Session:
    """Session from a (T, N) count matrix on contiguous bins starting at ``bin_starts`` (s).

    Behaviour arrays are (T,) or (T, k) samples at the same bins (k > 1 ->
    ``name_x``, ``name_y``, ... for k = 2, else ``name_0``...).
    """
    counts = np.asarray(counts)
    t = np.asarray(bin_starts, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[0] != len(t):
        raise DataError(source, "spikes", f"shape {counts.shape} does not match {len(t)} bin times")
    if counts.dtype.kind not in "iu" and not np.all(counts == np.round(counts)):
        raise DataError(source, "spikes", f"non-integer counts (dtype {counts.dtype})")
    if np.any(counts < 0):
        b, n = np.argwhere(counts < 0)[0]
        raise DataError(source, "spikes", f"negative count {counts[b, n]} at bin {b}, unit {n}")
    gaps = np.diff(t)
    # bin starts stored with rounding (e.g. to 1 ms) jitter a little; events sit at
    # bin centres, so a jitter below 2% of a bin cannot move an event across bins
    tol = 0.02 * bin_size
    if np.any(np.abs(gaps - bin_size) > tol):
        i = int(np.flatnonzero(np.abs(gaps - bin_size) > tol)[0])
        raise DataError(source, "time", f"bins are not contiguous at index {i + 1}: gap {gaps[i]!r} s != bin size {bin_size} s")
    bins, units = np.nonzero(counts)  # row-major: ordered by bin, then unit
    reps = counts[bins, units].astype(np.int64)
    spike_times = np.repeat(t[bins] + bin_size / 2, reps)
    spike_units = np.repeat(units.astype(np.int64), reps)
    N = counts.shape[1]
    centres = t + bin_size / 2
    beh, beh_units = {}, {}
    for name, values in (behavior or {}).items():
        v = np.asarray(values, dtype=np.float64)
        if v.shape[0] != len(t):
            raise DataError(source, name, f"{v.shape[0]} samples != {len(t)} bins")
        cols = [v] if v.ndim == 1 else [v[:, k] for k in range(v.shape[1])]
        suffixes = [""] if v.ndim == 1 else (["_x", "_y"] if v.shape[1] == 2 else [f"_{k}" for k in range(v.shape[1])])
        for suffix, col in zip(suffixes, cols):
            beh[name + suffix] = (centres, col)
            beh_units[name + suffix] = (behavior_units or {}).get(name, "a.u.")
    end = float(t[-1] + bin_size)
    return Session(
        session_id=session_id, subject_id=subject_id,
        units={"unit_id": np.array([f"unit{i:03d}" for i in range(N)]), "region": np.array([region] * N)},
        trials=consecutive_windows(float(t[0]), end, window_length), modality="spikes",
        spike_times=spike_times, spike_units=spike_units, behavior=beh, behavior_units=beh_units,
        recording_end=end, source=source, extra={"source_bin_size": float(bin_size)},
    )


def load_npz(path: str | Path, *, session_id: str | None = None, subject_id: str | None = None,
             region: str = "unknown", behavior_keys: tuple[str, ...] = ("hand_vel", "hand_pos"),
             window_length: float = 2.0) -> Session:
    """Session from an npz of binned counts (``spikes``, ``time``, ``bin_size`` + behaviour keys)."""
    path = Path(path)
    with np.load(path, allow_pickle=False) as f:
        for key in ("spikes", "time", "bin_size"):
            if key not in f.files:
                raise DataError(str(path), key, f"required array missing (file has {sorted(f.files)})")
        beh = {BEHAVIOR_NAMES.get(k, k): f[k] for k in behavior_keys if k in f.files}
        counts, t, bs = f["spikes"], f["time"], float(f["bin_size"])
    return session_from_counts(counts, t, bs, session_id=session_id or path.stem, subject_id=subject_id or path.stem,
                               region=region, behavior=beh, window_length=window_length, source=str(path),
                               behavior_units={"hand_velocity": "a.u./s", "hand_position": "a.u."})
