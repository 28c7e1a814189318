"""suite2p output folders -> :class:`~nfm.data.schema.Session` (modality ``"calcium"``).

A suite2p output folder is ``<recording>/suite2p/plane0, plane1, ...``; each
plane folder holds

* ``spks.npy`` -- (ROIs, frames) float32 deconvolved activity (a.u.);
* ``iscell.npy`` -- (ROIs, 2): column 0 the is-cell flag (0/1), column 1 the
  classifier probability;
* ``ops.npy`` -- a pickled dict of settings (``fs`` the per-plane frame rate in
  Hz, ``nplanes``, ...), and optionally ``Fall.mat`` (the same data as MATLAB).

The ``combined`` folder suite2p may also write repeats the planes' ROIs and is
not read. ``stat.npy`` (ROI pixel lists, hence x/y positions) is a pickle of
Python objects too and is **not read**: units carry no x/y position.

Where the frame rate comes from (no load path here unpickles arbitrary
objects):

1. ``ops.npy`` read with :class:`RestrictedUnpickler`, which rebuilds only
   numpy arrays, numpy scalars, dtypes and builtin containers and refuses every
   other global (a file that names any other callable raises
   :class:`~nfm.data.schema.DataError` naming the file, and nothing in it runs);
2. else ``Fall.mat`` through ``scipy.io.loadmat(variable_names=["ops"])``;
3. else the ``frame_rate`` argument.

When ``frame_rate`` is given *and* a file holds ``fs``, the two must agree
(relative 1e-6) or loading fails: a wrong rate would rescale every time.

Clock: frame ``k`` of plane ``p`` is at ``k / fs + p / (fs * nplanes)``
seconds. suite2p de-interleaves a multi-plane recording so that raw frame
``k * nplanes + p`` becomes frame ``k`` of plane ``p``; raw frames are
``1 / (fs * nplanes)`` apart (``fs`` is the per-plane rate), hence the offset
(``plane_offsets=False`` drops it; flyback frames make it approximate, always
within one volume period). All planes are then linearly resampled onto the
first plane's frame times (:func:`resample_frames`) and their ROIs
concatenated. Time 0 is the first frame of the first plane; a trials table
must use that clock.
"""
from __future__ import annotations

import csv
import io
import pickle
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..records import consecutive_windows
from ..schema import DataError, Session

__all__ = [
    "RestrictedUnpickler",
    "load_session",
    "load_sessions",
    "read_ops_npy",
    "read_frame_rate",
    "read_trials_table",
    "resample_frames",
    "find_plane_dirs",
]

_PLANE_RE = re.compile(r"^plane(\d+)$")
_EXPECTED = ("a suite2p output folder: <recording>/suite2p/plane0, plane1, ... "
             "each holding spks.npy (ROIs x frames), iscell.npy (ROIs x 2) and ops.npy or Fall.mat")


# --------------------------------------------------------------- safe unpickle
def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The only globals an ops.npy pickle may name: numpy array/scalar/dtype rebuilding."""
    import builtins
    from collections import OrderedDict

    import _codecs

    try:  # numpy >= 2
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray, numeric

    allowed: dict[tuple[str, str], Any] = {}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):  # numpy 1.x and 2.x pickles
        allowed[(mod, "_reconstruct")] = multiarray._reconstruct
        allowed[(mod, "scalar")] = multiarray.scalar
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[(mod, "_frombuffer")] = numeric._frombuffer
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    for name in ("set", "frozenset", "complex", "bytearray", "slice", "range"):
        allowed[("builtins", name)] = getattr(builtins, name)
    # bytes in protocol-2 pickles of numpy arrays (the same allowance torch's weights_only makes)
    allowed[("_codecs", "encode")] = _codecs.encode
    allowed[("collections", "OrderedDict")] = OrderedDict
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that rebuilds numpy arrays, numpy scalars, dtypes and builtin
    containers only. Any other global (``os.system``, ``builtins.eval``,
    ``pathlib.Path``, user classes, ...) raises :class:`pickle.UnpicklingError`
    before it is called; persistent ids are refused too."""

    _allowed = None

    def find_class(self, module: str, name: str):
        if RestrictedUnpickler._allowed is None:
            RestrictedUnpickler._allowed = _numpy_globals()
        try:
            return RestrictedUnpickler._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError(f"persistent id {pid!r} is not allowed")


def read_ops_npy(path: str | Path) -> dict:
    """Read a suite2p ``ops.npy`` (``np.save`` of a dict) without running foreign code.

    The ``.npy`` header is parsed with numpy; an object-dtype payload is read
    with :class:`RestrictedUnpickler`. A structured (non-object) array is read
    with ``allow_pickle=False`` and turned into a dict of its fields.

    Raises :class:`DataError` naming the file when the file is not a valid
    ``.npy``, names a forbidden global, or does not hold a dict.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                shape, _, dtype = np.lib.format._read_array_header(f, version)
            if dtype.hasobject:
                payload = RestrictedUnpickler(io.BytesIO(f.read())).load()
            else:
                payload = None
    except pickle.UnpicklingError as e:
        raise DataError(path, "ops", f"refused to unpickle: {e} (only numpy arrays, scalars, dtypes "
                                     "and builtin containers are read from ops.npy)") from None
    except (ValueError, EOFError, OSError, TypeError, AttributeError, IndexError) as e:
        raise DataError(path, "ops", f"not a readable .npy file: {type(e).__name__}: {e}") from None
    if payload is None:
        arr = _np_load(path, "ops")
        if arr.dtype.names is None:
            raise DataError(path, "ops", f"expected a pickled dict or a structured array, got dtype {arr.dtype} shape {arr.shape}")
        rec = arr.reshape(-1)[0]
        return {k: rec[k] for k in arr.dtype.names}
    obj = payload
    if isinstance(obj, np.ndarray) and obj.dtype.hasobject and obj.shape == ():
        obj = obj.item()
    if not isinstance(obj, dict):
        raise DataError(path, "ops", f"expected a dict, got {type(obj).__name__}")
    return obj


def _np_load(path: Path, field: str) -> np.ndarray:
    """``np.load(path, allow_pickle=False)``; any failure becomes a DataError naming the file."""
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" in str(e) or "Object arrays" in str(e):
            raise DataError(path, field, "holds an object (pickled) array where numbers are expected; "
                                         "object arrays are never unpickled") from None
        raise DataError(path, field, f"not a readable .npy file: {e}") from None
    except (OSError, EOFError) as e:
        raise DataError(path, field, f"cannot read: {e}") from None


def _fs_from_value(value: Any, path: Path, field: str) -> float:
    arr = np.asarray(value)
    if arr.size != 1 or arr.dtype.kind not in "biuf":
        raise DataError(path, field, f"frame rate must be one number (Hz), got {value!r}")
    fs = float(arr.reshape(-1)[0])
    if not np.isfinite(fs) or fs <= 0:
        raise DataError(path, field, f"frame rate {fs!r} Hz is not a positive finite number")
    return fs


def read_frame_rate(plane_dir: str | Path) -> tuple[float | None, int | None, str | None]:
    """Per-plane frame rate ``fs`` (Hz) and ``nplanes`` from ``ops.npy``, else ``Fall.mat``.

    Returns ``(fs, nplanes, source_file)``; ``(None, None, None)`` when the plane
    holds neither file. A file that exists but cannot be read safely, or whose
    ``fs`` is missing, NaN or not positive, raises :class:`DataError`.
    """
    plane_dir = Path(plane_dir)
    ops_path, mat_path = plane_dir / "ops.npy", plane_dir / "Fall.mat"
    if ops_path.exists():
        ops, src = read_ops_npy(ops_path), ops_path
    elif mat_path.exists():
        import scipy.io

        try:
            mat = scipy.io.loadmat(mat_path, variable_names=["ops"], squeeze_me=True, simplify_cells=True)
        except Exception as e:  # scipy raises several types (NotImplementedError for v7.3, ValueError, ...)
            raise DataError(mat_path, "ops", f"cannot read with scipy.io.loadmat: {type(e).__name__}: {e}") from None
        if "ops" not in mat or not isinstance(mat["ops"], dict):
            raise DataError(mat_path, "ops", "no 'ops' struct in the file")
        ops, src = mat["ops"], mat_path
    else:
        return None, None, None
    if "fs" not in ops:
        raise DataError(src, "ops.fs", f"no frame rate 'fs' among the keys {sorted(map(str, ops))[:20]}")
    fs = _fs_from_value(ops["fs"], src, "ops.fs")
    nplanes = None
    if "nplanes" in ops:
        n = np.asarray(ops["nplanes"])
        if n.size != 1 or n.dtype.kind not in "biuf" or not float(n.reshape(-1)[0]) >= 1:
            raise DataError(src, "ops.nplanes", f"expected a positive integer, got {ops['nplanes']!r}")
        nplanes = int(n.reshape(-1)[0])
    return fs, nplanes, str(src)


# ------------------------------------------------------------------ resampling
def resample_frames(
    times: np.ndarray,
    values: np.ndarray,
    clock: np.ndarray,
    bad: np.ndarray | None = None,
    *,
    source: str = "<memory>",
    tol: float = 1e-9,
) -> tuple[np.ndarray, dict[str, int]]:
    """Linearly resample frame data onto another frame clock (vectorised).

    Args:
        times: (F,) strictly increasing frame times of the source (seconds).
        values: (F, N) activity of N ROIs at those frames.
        clock: (C,) target frame times (seconds).
        bad: optional (F,) bool, frames to treat as missing.
        source, tol: file named in errors; a clock time within ``tol`` seconds
            of a source frame takes that frame's value exactly.

    Returns:
        out: (C, N) float32. Clock time ``c`` between source frames ``i`` and
        ``i + 1`` gets ``(1 - w) v[i] + w v[i + 1]``, ``w = (c - t[i]) / (t[i+1] - t[i])``.
        It is NaN when a source frame with non-zero weight is bad or non-finite,
        or when ``c`` lies outside ``[times[0], times[-1]]`` (no extrapolation).
        counts: ``{"outside": clock frames outside the source range,
        "from_bad": further clock frames made NaN by bad source frames,
        "nonfinite_values": non-finite source values}``.
    """
    t = np.asarray(times, dtype=np.float64)
    c = np.asarray(clock, dtype=np.float64)
    v = np.asarray(values)
    if t.ndim != 1 or v.ndim != 2 or v.shape[0] != len(t):
        raise DataError(source, "times", f"times shape {t.shape} does not match activity shape {v.shape} (frames, ROIs)")
    if len(t) == 0:
        raise DataError(source, "times", "no frames")
    if not np.all(np.isfinite(t)):
        i = int(np.flatnonzero(~np.isfinite(t))[0])
        raise DataError(source, "times", f"non-finite frame time {t[i]!r} at frame {i}")
    if len(t) > 1 and np.any(np.diff(t) <= 0):
        i = int(np.flatnonzero(np.diff(t) <= 0)[0])
        raise DataError(source, "times", f"not strictly increasing at frame {i + 1}: {t[i + 1]!r} <= {t[i]!r}")
    badf = np.zeros(len(t), bool) if bad is None else np.asarray(bad, dtype=bool)
    if badf.shape != t.shape:
        raise DataError(source, "badFrames", f"shape {badf.shape} does not match {len(t)} frames")
    finite = np.isfinite(v)
    all_finite = bool(finite.all())
    n_nonfinite = int(v.size - np.count_nonzero(finite))
    if len(t) == 1:
        i0 = i1 = np.zeros(len(c), np.int64)
        w = np.zeros(len(c))
    else:
        i0 = np.clip(np.searchsorted(t, c, side="right") - 1, 0, len(t) - 2)
        i1 = i0 + 1
        w = (c - t[i0]) / (t[i1] - t[i0])
        w[np.abs(c - t[i0]) <= tol] = 0.0
        w[np.abs(t[i1] - c) <= tol] = 1.0
    outside = (c < t[0] - tol) | (c > t[-1] + tol)
    w = np.clip(w, 0.0, 1.0)
    wf = w.astype(np.float32)[:, None]
    if all_finite:
        src = v.astype(np.float32, copy=False)
        out = src[i0] * (1 - wf) + src[i1] * wf
        frame_nan = (badf[i0] & (w < 1)) | (badf[i1] & (w > 0))
        out[frame_nan | outside] = np.nan
        n_from_bad = int(np.count_nonzero(frame_nan & ~outside))
    else:
        src_bad = ~finite | badf[:, None]
        src = np.where(src_bad, 0, v).astype(np.float32)
        out = src[i0] * (1 - wf) + src[i1] * wf
        mask = (src_bad[i0] & (w < 1)[:, None]) | (src_bad[i1] & (w > 0)[:, None])
        frame_nan = (badf[i0] & (w < 1)) | (badf[i1] & (w > 0))
        mask[outside] = True
        out[mask] = np.nan
        n_from_bad = int(np.count_nonzero(frame_nan & ~outside))
    return out, {"outside": int(np.count_nonzero(outside)), "from_bad": n_from_bad, "nonfinite_values": n_nonfinite}


# ---------------------------------------------------------------------- trials
def read_trials_table(trials: Mapping[str, Any] | str | Path, *, source: str = "trials") -> dict[str, np.ndarray]:
    """A trials table from a dict of columns or a CSV/TSV file (header row, one row per trial).

    Every column must be numeric (event times in seconds on the recording
    clock, or numeric labels); empty cells and ``nan`` become NaN. Returns
    ``{column: (n_trials,) float64}``.
    """
    if isinstance(trials, (str, Path)):
        path = Path(trials)
        if not path.is_file():
            raise DataError(path, "trials", "trials file does not exist")
        delim = {".csv": ",", ".tsv": "\t"}.get(path.suffix.lower())
        if delim is None:
            raise DataError(path, "trials", f"expected a .csv or .tsv file, got suffix {path.suffix!r}")
        with open(path, newline="") as f:
            rows = list(csv.reader(f, delimiter=delim))
        if len(rows) < 2:
            raise DataError(path, "trials", "expected a header row and at least one trial row")
        header = [h.strip() for h in rows[0]]
        widths = {len(r) for r in rows[1:]}
        if widths != {len(header)}:
            bad = next(i for i, r in enumerate(rows[1:], start=2) if len(r) != len(header))
            raise DataError(path, "trials", f"line {bad} has {len(rows[bad - 1])} cells, header has {len(header)}")
        cells = np.asarray(rows[1:], dtype=object)
        table = {name: cells[:, j] for j, name in enumerate(header)}
        source = str(path)
    else:
        table = dict(trials)
    if not table:
        raise DataError(source, "trials", "trials table has no columns")
    out: dict[str, np.ndarray] = {}
    n = None
    for name, col in table.items():
        arr = np.asarray(col)
        if arr.dtype.kind in "OUS":
            s = np.char.strip(arr.astype(str))
            s = np.where(s == "", "nan", s)
            try:
                arr = s.astype(np.float64)
            except ValueError:
                vals = s.tolist()
                ok = np.array([_is_float(x) for x in vals])  # only reached on error: names the bad cell
                i = int(np.flatnonzero(~ok)[0])
                raise DataError(source, f"trials.{name}", f"non-numeric value {vals[i]!r} at trial {i}") from None
        elif arr.dtype.kind not in "biuf":
            raise DataError(source, f"trials.{name}", f"non-numeric column of dtype {arr.dtype}")
        arr = arr.astype(np.float64)
        if arr.ndim != 1:
            raise DataError(source, f"trials.{name}", f"expected one value per trial, got shape {arr.shape}")
        if n is not None and len(arr) != n:
            raise DataError(source, f"trials.{name}", f"length {len(arr)} != {n} (length of the other columns)")
        n = len(arr)
        out[str(name)] = arr
    return out


def _is_float(x: str) -> bool:
    try:
        float(x)
        return True
    except ValueError:
        return False


# ---------------------------------------------------------------------- folders
def find_plane_dirs(path: str | Path) -> tuple[Path, list[tuple[int, Path]]]:
    """The suite2p folder and its ``(plane index, plane folder)`` pairs, sorted by index.

    ``path`` may be the ``suite2p`` folder itself or the recording folder that
    contains it. Raises :class:`DataError` saying what was expected otherwise.
    """
    path = Path(path)
    if not path.is_dir():
        raise DataError(path, "path", f"not a folder; expected {_EXPECTED}")
    root = path
    if not any(_PLANE_RE.match(p.name) for p in root.iterdir() if p.is_dir()) and (path / "suite2p").is_dir():
        root = path / "suite2p"
    planes = sorted((int(m.group(1)), p) for p in root.iterdir()
                    if p.is_dir() and (m := _PLANE_RE.match(p.name)))
    if not planes:
        raise DataError(path, "plane*", f"no plane folders found; expected {_EXPECTED}")
    return root, planes


def _read_plane(plane_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """spks (N, F) float32 and iscell (N, 2) float of one plane, checked."""
    spks_path, iscell_path = plane_dir / "spks.npy", plane_dir / "iscell.npy"
    for p, what in ((spks_path, "spks"), (iscell_path, "iscell")):
        if not p.is_file():
            raise DataError(p, what, f"file is missing; expected {_EXPECTED}")
    spks = _np_load(spks_path, "spks")
    iscell = _np_load(iscell_path, "iscell")
    if spks.dtype.kind not in "biuf":
        raise DataError(spks_path, "spks", f"dtype {spks.dtype} is not numeric")
    if iscell.dtype.kind not in "biuf":
        raise DataError(iscell_path, "iscell", f"dtype {iscell.dtype} is not numeric")
    if spks.ndim != 2:
        raise DataError(spks_path, "spks", f"expected (ROIs, frames), got shape {spks.shape}")
    if iscell.ndim == 1 and spks.shape[0] == iscell.shape[0]:
        iscell = np.stack([iscell, iscell], axis=1).astype(np.float64)  # flag only; probability = flag
    if iscell.ndim != 2 or iscell.shape[1] < 1 or iscell.shape[0] != spks.shape[0]:
        raise DataError(iscell_path, "iscell", f"shape {iscell.shape} does not match spks.npy shape {spks.shape} "
                                               "(expected (ROIs, 2) with ROIs = spks rows)")
    flag = iscell[:, 0]
    if not np.all((flag == 0) | (flag == 1)):
        i = int(np.flatnonzero(~((flag == 0) | (flag == 1)))[0])
        raise DataError(iscell_path, "iscell[:, 0]", f"is-cell flag {flag[i]!r} at ROI {i} is not 0 or 1")
    return spks, iscell


# ------------------------------------------------------------------------ load
def load_session(
    path: str | Path,
    *,
    frame_rate: float | None = None,
    trials: Mapping[str, Any] | str | Path | None = None,
    window_length: float = 2.0,
    session_id: str | None = None,
    subject_id: str | None = None,
    cells_only: bool = True,
    region: str = "unknown",
    behavior: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    behavior_units: Mapping[str, str] | None = None,
    plane_offsets: bool = True,
    on_length_mismatch: str = "truncate",
) -> Session:
    """Load one suite2p output folder as a calcium :class:`Session`.

    Args:
        path: the ``suite2p`` folder or the recording folder that contains it.
        frame_rate: per-plane frame rate (Hz); required when no plane has
            ``ops.npy``/``Fall.mat``; must agree with the files otherwise.
        trials: dict of columns or a ``.csv``/``.tsv`` path (times in seconds
            from the first frame); ``None`` -> back-to-back ``window_length``
            second windows (``start_time``, ``stop_time``; align on
            ``start_time``) from :func:`nfm.data.records.consecutive_windows`.
        session_id: default: the resolved recording folder path.
        subject_id: default: the session id (pass the animal's id so sessions
            of one animal share it).
        cells_only: keep ROIs with ``iscell[:, 0] == 1`` only (the others are
            counted in ``extra["n_rois_not_cell"]``).
        region: region label of every ROI (suite2p has no anatomy).
        behavior: optional ``name -> (times (K,) s, values (K,))`` signals on the
            same clock, e.g. running speed (suite2p stores none);
            ``behavior_units`` names their units.
        plane_offsets: add ``p / (fs * nplanes)`` s to plane ``p`` (see module doc).
        on_length_mismatch: planes whose frame counts differ by one (scan
            stopped mid-volume): ``"truncate"`` to the shortest plane, counted
            in ``extra["n_frames_truncated"]``, or ``"error"``. A difference of
            more than one frame is always an error.

    Returns: ``Session`` with ``frame_times`` (F,) s, ``activity`` (F, N)
    float32 deconvolved a.u. (NaN at clock frames outside another plane's
    range), units ``unit_id = "plane{p}_roi{i}"`` (``i`` the ROI's row in that
    plane's files), ``region``, ``plane``, ``roi_index``, ``cell_probability``.
    """
    if on_length_mismatch not in ("truncate", "error"):
        raise ValueError(f"on_length_mismatch must be 'truncate' or 'error', got {on_length_mismatch!r}")
    root, planes = find_plane_dirs(path)
    recording = root.parent if root.name == "suite2p" else root
    # ---- frame rate
    rates = []
    nplanes_file = None
    for _, pdir in planes:
        fs, nplanes, src = read_frame_rate(pdir)
        if fs is not None:
            rates.append((fs, src))
            nplanes_file = nplanes if nplanes is not None else nplanes_file
    if frame_rate is not None:
        frame_rate = _fs_from_value(frame_rate, Path(root), "frame_rate")
    for fs, src in rates:
        ref, ref_src = (frame_rate, "the frame_rate argument") if frame_rate is not None else rates[0]
        if abs(fs - ref) > 1e-6 * ref:
            raise DataError(src, "ops.fs", f"frame rate {fs!r} Hz disagrees with {ref!r} Hz from {ref_src}")
    if frame_rate is not None:
        fs, fs_source = frame_rate, "argument"
    elif rates:
        fs, fs_source = rates[0]
    else:
        raise DataError(root, "ops.fs", "no plane has ops.npy or Fall.mat, so the frame rate is unknown: "
                                        "pass frame_rate=<Hz per plane>")
    nplanes = nplanes_file if nplanes_file is not None else len(planes)
    if planes[-1][0] >= nplanes:
        raise DataError(planes[-1][1], "ops.nplanes", f"plane index {planes[-1][0]} >= nplanes {nplanes}")
    # ---- planes
    data = [(p, pdir, *_read_plane(pdir)) for p, pdir in planes]
    n_frames = {p: spks.shape[1] for p, _, spks, _ in data}
    f_min, f_max = min(n_frames.values()), max(n_frames.values())
    if f_max != f_min:
        longest = max(n_frames, key=n_frames.get)
        shortest = min(n_frames, key=n_frames.get)
        if on_length_mismatch == "error" or f_max - f_min > 1:
            raise DataError(root / f"plane{longest}" / "spks.npy", "spks",
                            f"{f_max} frames but plane{shortest} has {f_min}; planes of one recording differ by at most one frame")
    if f_min == 0:
        raise DataError(root, "spks", "a plane has no frames")
    truncated = {f"plane{p}": n - f_min for p, n in n_frames.items() if n > f_min}
    times_of = {p: np.arange(f_min) / fs + (p / (fs * nplanes) if plane_offsets else 0.0) for p, *_ in data}
    clock = times_of[planes[0][0]]
    blocks, cols = [], {k: [] for k in ("unit_id", "plane", "roi_index", "cell_probability")}
    counts = {"n_rois_total": 0, "n_rois_not_cell": 0, "n_clock_frames_outside_plane": {}}
    for p, pdir, spks, iscell in data:
        keep = iscell[:, 0] == 1 if cells_only else np.ones(len(iscell), bool)
        counts["n_rois_total"] += len(iscell)
        counts["n_rois_not_cell"] += int(np.count_nonzero(iscell[:, 0] != 1))
        idx = np.flatnonzero(keep)
        if len(idx) == 0:
            continue
        act = spks[idx, :f_min].T
        res, c = resample_frames(times_of[p], act, clock, source=str(pdir / "spks.npy"))
        counts["n_clock_frames_outside_plane"][f"plane{p}"] = c["outside"]
        blocks.append(res)
        cols["unit_id"].append(np.char.add(f"plane{p}_roi", idx.astype(str)))
        cols["plane"].append(np.full(len(idx), p, np.int64))
        cols["roi_index"].append(idx.astype(np.int64))
        cols["cell_probability"].append(iscell[idx, -1].astype(np.float64))
    if not blocks:
        raise DataError(root, "iscell", f"no ROI is kept ({counts['n_rois_total']} ROIs, none flagged as a cell"
                                        f"{'; pass cells_only=False to keep them' if cells_only else ''})")
    activity = np.concatenate(blocks, axis=1)
    units = {k: np.concatenate(v) for k, v in cols.items()}
    units["unit_id"] = units["unit_id"].astype(str)
    units["region"] = np.full(len(units["unit_id"]), str(region))
    recording_end = float(clock[-1] + 1.0 / fs)
    if trials is None:
        trials_table = consecutive_windows(float(clock[0]), recording_end, length=window_length)
        trials_source = f"consecutive {window_length} s windows"
    else:
        trials_table = read_trials_table(trials, source=str(root))
        trials_source = str(trials) if isinstance(trials, (str, Path)) else "dict"
    sid = session_id if session_id is not None else str(recording.resolve())
    session = Session(
        session_id=str(sid),
        subject_id=str(subject_id if subject_id is not None else sid),
        units=units,
        trials=trials_table,
        modality="calcium",
        frame_times=clock,
        activity=activity,
        activity_kind="deconvolved",
        behavior={k: (np.asarray(t, np.float64), np.asarray(v, np.float64)) for k, (t, v) in (behavior or {}).items()},
        behavior_units=dict(behavior_units or {}),
        recording_end=recording_end,
        source=str(root),
        extra={
            "frame_rate_hz": fs,
            "frame_rate_source": fs_source,
            "nplanes": nplanes,
            "planes": [p for p, _ in planes],
            "plane_offsets": bool(plane_offsets),
            "n_frames_per_plane": {f"plane{p}": n for p, n in n_frames.items()},
            "n_frames_truncated": truncated,
            "cells_only": bool(cells_only),
            "trials_source": trials_source,
            **counts,
        },
    )
    missing_units = [k for k in session.behavior if k not in session.behavior_units]
    if missing_units:
        raise DataError(root, f"behavior_units.{missing_units[0]}", "unit of this behaviour signal is not given")
    return session.validate()


_PER_SESSION = ("frame_rate", "trials", "session_id", "subject_id", "region", "behavior", "behavior_units")


def load_sessions(paths: Sequence[str | Path], **kw) -> list[Session]:
    """:func:`load_session` for each path. Keyword arguments apply to every session;
    those in ``frame_rate, trials, session_id, subject_id, region, behavior,
    behavior_units`` may instead be a list/tuple with one value per path."""
    paths = list(paths)
    out = []
    for i, path in enumerate(paths):
        args = {}
        for k, v in kw.items():
            if k in _PER_SESSION and isinstance(v, (list, tuple)):
                if len(v) != len(paths):
                    raise ValueError(f"{k}: {len(v)} values for {len(paths)} paths")
                v = v[i]
            args[k] = v
        out.append(load_session(path, **args))
    return out
