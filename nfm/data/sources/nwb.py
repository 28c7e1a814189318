"""NWB source: one NWB file (read with pynwb) -> one :class:`~nfm.data.schema.Session`.

What is read
------------
* **Spikes** (``modality="spikes"``): the ``units`` table.  Spike times come
  out vectorised from the flat ``spike_times`` VectorData and the cumulative
  end indices of ``spike_times_index`` (unit row of every spike =
  ``np.repeat(arange(N), diff(ends))``), then a *stable* argsort by time, so
  equal times stay in unit-row order.  ``unit_id`` is the table's ``id``
  column (as str).  Quality: the first of ``quality``, ``label``, ``KSLabel``
  present (or ``quality_column=``) -> ``quality`` (int, 1 = good: the string
  ``"good"``, case-insensitive, or the number 1), the raw column kept as
  ``quality_label`` (strings) or ``quality_raw`` (numbers).
  Region: a ``location`` column of the units table if there is one, else the
  ``location`` of the unit's **first** electrode (``electrodes`` column ->
  electrodes table), else ``"unknown"``.  Locations are kept as written in the
  file (stripped; empty / ``none`` / ``nan`` / ``unknown`` -> ``"unknown"``);
  pass ``region_map`` to map them (e.g. to Beryl acronyms).  From the same
  electrode: ``depth_um`` = ``rel_y`` (µm along the electrode group, NWB
  convention) or, without ``rel_y``, the brain ``y`` coordinate (µm, +y is
  inferior); ``x_um`` = ``rel_x``; ``probe`` = ``group_name``.
  ``extra["depth_source"]`` says which column gave the depth.
* **2-photon** (``modality="calcium"``): a ``RoiResponseSeries`` found in a
  ``DfOverF`` or ``Fluorescence`` container of any processing module.  With
  ``roi_response="auto"`` the candidates are ranked

  1. series inside ``DfOverF`` (``activity_kind="dff"``),
  2. series whose name contains ``deconv`` (``"deconvolved"``),
  3. series inside ``Fluorescence`` whose name does not contain ``neuropil``
     (``"fluorescence"``),

  and the first rank holding exactly one series wins; a rank with several
  series raises a :class:`DataError` listing them.  ``roi_response=<name>``
  picks a series by its name (or ``module/container/name``).  Frame times:
  the series' ``timestamps``, else ``starting_time + arange(F) / rate``.
  Values are ``data * conversion + offset`` (float32, shape (F, N)).  Units are
  the PlaneSegmentation rows the series refers to (``unit_id`` = ROI id,
  ``plane`` = PlaneSegmentation name, ``region`` = the imaging plane's
  ``location``).
* **Trials**: the ``trials`` table, every column (or ``trial_columns``).
  Numeric columns -> float64 (a 2-D column ``c`` of width k -> ``c_0`` ..
  ``c_{k-1}``).  String columns are categorical: sorted unique labels ->
  integer codes (int64) and ``extra["trial_categories"][column]`` is the
  label list (code i = ``labels[i]``).  Ragged (list-per-trial) columns and
  reference columns (rows of another table, time-series references) have no
  per-trial number: they raise a :class:`DataError` unless left out with
  ``trial_columns``.  Without a trials table the recording is cut into
  consecutive windows of ``window_length`` seconds from the first to the last
  spike (or frame; a last partial window is not a trial) via :func:`nfm.data.records.consecutive_windows`; then
  ``extra["trials_source"] == "consecutive_windows"`` and
  ``extra["align_event"] == "start_time"``.
* **Behaviour**: every ``TimeSeries`` (also inside containers such as
  ``BehavioralTimeSeries`` or ``Position``) of the ``behavior`` processing
  module and of ``acquisition`` (raw electrical, image and patch-clamp series
  are never behaviour).  Values are ``data * conversion + offset`` (float64);
  a 2-D series ``hand_vel`` of width 2 becomes ``hand_vel_x``, ``hand_vel_y``
  (x, y, z up to width 3, else ``_0`` ..).  ``behavior_names`` selects by
  series name (all its components) or component name.  Units
  (``TimeSeries.unit``) go to ``behavior_units``.  Series that cannot be a
  signal (more than 2-D, not numeric) or lose a name clash with the
  processing module are listed with the reason in ``extra["behavior_skipped"]``.
* **Ids**: ``subject_id`` from ``nwbfile.subject.subject_id`` (the argument
  overrides; neither -> :class:`DataError`); ``session_id`` = the argument,
  else ``nwbfile.identifier``, else the file stem.

All times are seconds on the file's session clock.  Every array is copied
into numpy before the file is closed.  Bad input raises :class:`DataError`
naming the file, the field and the value.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nfm.data.schema import DataError, Session

__all__ = ["load_session", "load_sessions"]

QUALITY_COLUMNS = ("quality", "label", "KSLabel")
_UNKNOWN_LOCATIONS = ("", "none", "nan", "null", "n/a", "na", "unknown", "unk")
_XYZ = ("x", "y", "z")


# ----------------------------------------------------------------- helpers
def _to_str(arr: Any) -> np.ndarray:
    """Array of text (str, bytes or object holding either) -> numpy str array."""
    a = np.asarray(arr)
    if a.dtype.kind == "S":
        return np.char.decode(a, "utf-8")
    if a.dtype.kind == "O" and a.size and isinstance(a.flat[0], bytes):
        return np.char.decode(a.astype("S"), "utf-8")
    return a.astype(str)


def _py(x: Any) -> Any:
    """numpy scalar -> python scalar (readable in error messages)."""
    return x.item() if isinstance(x, np.generic) else x


def _is_text(a: np.ndarray) -> bool:
    return a.dtype.kind in "USO"


def _plain_column(table, name: str, src: str, field: str) -> np.ndarray:
    """One value per row of an hdmf table column, copied into numpy."""
    from hdmf.common.table import DynamicTableRegion, VectorIndex

    col = table[name]
    if isinstance(col, VectorIndex):
        raise DataError(src, field, "ragged column (a list of values per row) where one value per row is needed")
    if isinstance(col, DynamicTableRegion):
        raise DataError(src, field, "reference column (rows of another table) where one value per row is needed")
    return np.asarray(col.data[:])


def _ragged(col, src: str, field: str, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(flat values, cumulative end indices (n_rows,)) of a ragged hdmf column."""
    from hdmf.common.table import VectorIndex

    if not isinstance(col, VectorIndex):
        raise DataError(src, field, f"expected a ragged column (VectorIndex), found {type(col).__name__}")
    ends = np.asarray(col.data[:]).astype(np.int64)
    flat = np.asarray(col.target.data[:])
    if ends.shape != (n_rows,):
        raise DataError(src, f"{field}_index", f"{ends.shape[0]} index entries for {n_rows} rows")
    if n_rows and (ends[0] < 0 or np.any(np.diff(ends) < 0)):
        i = int(np.flatnonzero(np.diff(np.concatenate([[0], ends])) < 0)[0])
        raise DataError(src, f"{field}_index", f"index decreases at row {i}: {_py(ends[i])!r}")
    if n_rows and ends[-1] != len(flat):
        raise DataError(src, f"{field}_index", f"last end index {ends[-1]} != {len(flat)} stored values (index out of range)")
    return flat, ends


def _normalise_regions(loc: np.ndarray) -> np.ndarray:
    loc = np.char.strip(_to_str(loc))
    unknown = np.isin(np.char.lower(loc), _UNKNOWN_LOCATIONS)
    return np.where(unknown, "unknown", loc).astype(str)


def _series_times(ts, src: str, field: str, n: int) -> np.ndarray:
    """Sample times (n,) in seconds of a pynwb TimeSeries."""
    stamps = ts.timestamps
    if stamps is not None:
        t = np.asarray(stamps[:], dtype=np.float64)
        if t.shape != (n,):
            raise DataError(src, f"{field}.timestamps", f"{t.shape[0]} timestamps for {n} samples")
    else:
        rate = ts.rate
        if rate is None or not np.isfinite(rate) or rate <= 0:
            raise DataError(src, f"{field}.rate", f"no timestamps and sampling rate {rate!r} Hz is not positive")
        start = 0.0 if ts.starting_time is None else float(ts.starting_time)
        t = start + np.arange(n, dtype=np.float64) / float(rate)
    bad = ~np.isfinite(t)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(src, f"{field}.timestamps", f"non-finite time {_py(t[i])!r} at sample {i}")
    return t


def _scaled(ts, data: np.ndarray, dtype) -> np.ndarray:
    """``data * conversion + offset`` (the TimeSeries' physical values)."""
    conv = 1.0 if ts.conversion is None else float(ts.conversion)
    offset = float(getattr(ts, "offset", 0.0) or 0.0)
    out = data.astype(np.float64)
    if conv != 1.0:
        out = out * conv
    if offset != 0.0:
        out = out + offset
    return out.astype(dtype, copy=False)


# ---------------------------------------------------------------- opening
def _open(path: Path):
    import h5py
    from pynwb import NWBHDF5IO

    if not path.exists():
        raise DataError(path, "file", "does not exist")
    if path.is_dir():
        raise DataError(path, "file", "is a directory, not an NWB (HDF5) file")
    if not h5py.is_hdf5(str(path)):
        with open(path, "rb") as fh:
            head = fh.read(8)
        raise DataError(path, "file", f"not an HDF5/NWB file (starts with bytes {head!r}); --source nwb needs a .nwb file")
    try:
        io = NWBHDF5IO(str(path), "r")
    except Exception as exc:  # pynwb raises TypeError/ValueError/OSError for non-NWB HDF5
        raise DataError(path, "file", f"HDF5 file that pynwb cannot open as NWB ({type(exc).__name__}: {exc})") from exc
    return io


# ------------------------------------------------------------------ spikes
def _units_region_columns(nwb, units, src: str, n: int, region_map, extra: dict) -> dict[str, np.ndarray]:
    from hdmf.common.table import VectorIndex

    cols: dict[str, np.ndarray] = {}
    if "location" in units.colnames:
        cols["region"] = _normalise_regions(_plain_column(units, "location", src, "units.location"))
        extra["region_source"] = "units.location"
    elif "electrodes" in units.colnames:
        col = units["electrodes"]
        if isinstance(col, VectorIndex):
            rows, ends = _ragged(col, src, "units.electrodes", n)
            counts = np.diff(np.concatenate([[0], ends]))
            first = np.full(n, -1, dtype=np.int64)  # first electrode row of each unit, -1 = none
            first[counts > 0] = np.asarray(rows, dtype=np.int64)[(ends - counts)[counts > 0]]
            table = col.target.table
        else:
            first = np.asarray(col.data[:]).astype(np.int64)
            table = col.table
        first = np.asarray(first, dtype=np.int64)
        n_el = len(table)
        out = (first >= n_el) | (first < -1)
        if out.any():
            i = int(np.flatnonzero(out)[0])
            raise DataError(src, "units.electrodes", f"electrode row {first[i]} of unit row {i} is outside 0..{n_el - 1}")
        has = first >= 0
        safe = np.where(has, first, 0)

        def take(name, fill, conv):
            vals = conv(_plain_column(table, name, src, f"electrodes.{name}"))
            return np.where(has, vals[safe], fill) if n_el else np.full(n, fill)

        if "location" in table.colnames:
            cols["region"] = _normalise_regions(take("location", "unknown", _to_str))
            extra["region_source"] = "electrodes.location"
        else:
            cols["region"] = np.full(n, "unknown")
            extra["region_source"] = "none (electrodes table has no location)"
        as_float = lambda a: np.asarray(a, dtype=np.float64)  # noqa: E731
        if "rel_y" in table.colnames:
            cols["depth_um"] = take("rel_y", np.nan, as_float)
            extra["depth_source"] = "electrodes.rel_y (µm along the electrode group)"
        elif "y" in table.colnames:
            cols["depth_um"] = take("y", np.nan, as_float)
            extra["depth_source"] = "electrodes.y (µm, brain coordinate, +y inferior)"
        if "rel_x" in table.colnames:
            cols["x_um"] = take("rel_x", np.nan, as_float)
        for axis in _XYZ:
            if axis in table.colnames:
                cols[f"brain_{axis}_um"] = take(axis, np.nan, as_float)
        if "group_name" in table.colnames:
            cols["probe"] = take("group_name", "", _to_str)
    else:
        cols["region"] = np.full(n, "unknown")
        extra["region_source"] = "none (units have no location or electrodes column)"
    if region_map is not None:
        mapped = np.asarray(region_map(cols["region"])).astype(str)
        if mapped.shape != (n,):
            raise DataError(src, "units.region", f"region_map returned shape {mapped.shape} for {n} units")
        cols["region_raw"], cols["region"] = cols["region"], mapped
    return cols


def _check_obs_intervals(units, src: str, n: int, times: np.ndarray, unit_row: np.ndarray, ids: np.ndarray) -> None:
    """Every spike must lie inside one of its unit's ``obs_intervals`` (if the column exists)."""
    if "obs_intervals" not in units.colnames:
        return
    iv, ends = _ragged(units["obs_intervals"], src, "units.obs_intervals", n)
    iv = np.asarray(iv, dtype=np.float64).reshape(-1, 2)
    iv_unit = np.repeat(np.arange(n), np.diff(np.concatenate([[0], ends])))
    if len(times) == 0:
        return
    # merge interval starts (kind 0) and spikes (kind 1), sorted by unit, time, kind
    unit_all = np.concatenate([iv_unit, unit_row])
    time_all = np.concatenate([iv[:, 0], times])
    kind_all = np.concatenate([np.zeros(len(iv_unit), np.int8), np.ones(len(times), np.int8)])
    order = np.lexsort((kind_all, time_all, unit_all))
    is_start = kind_all[order] == 0
    pos = np.where(is_start, np.arange(len(order)), -1)
    last_start = np.maximum.accumulate(pos)  # position (in order) of the latest interval start
    spike_pos = ~is_start
    ls = last_start[spike_pos]
    spike_idx = order[spike_pos] - len(iv_unit)  # index into times
    ok = ls >= 0
    if len(iv_unit):
        iv_idx = np.where(ok, order[np.maximum(ls, 0)], 0)  # interval row of the latest start
        ok &= (iv_unit[iv_idx] == unit_row[spike_idx]) & (times[spike_idx] <= iv[iv_idx, 1])
    if not np.all(ok):
        j = spike_idx[int(np.flatnonzero(~ok)[0])]
        u = unit_row[j]
        raise DataError(src, "units.spike_times",
                        f"spike time {_py(times[j])!r} s of unit id {_py(ids[u])!r} is outside the unit's obs_intervals "
                        f"{iv[iv_unit == u].tolist()}")


def _read_spikes(nwb, src: str, *, quality_column, good_units_only: bool, region_map, extra: dict):
    units = nwb.units
    n = len(units)
    if n == 0:
        raise DataError(src, "units", "units table is empty (0 rows)")
    if "spike_times" not in units.colnames:
        raise DataError(src, "units.spike_times", f"column missing (columns: {list(units.colnames)})")
    ids = np.asarray(units.id.data[:])
    flat, ends = _ragged(units["spike_times"], src, "units.spike_times", n)
    if flat.dtype.kind not in "iuf":
        raise DataError(src, "units.spike_times", f"dtype {flat.dtype} is not numeric")
    flat = np.asarray(flat, dtype=np.float64)
    unit_row = np.repeat(np.arange(n, dtype=np.int64), np.diff(np.concatenate([[0], ends])))
    bad = ~np.isfinite(flat)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(src, "units.spike_times",
                        f"non-finite spike time {_py(flat[i])!r} (unit id {_py(ids[unit_row[i]])!r}, flat index {i})")
    neg = flat < 0
    if neg.any():
        i = int(np.flatnonzero(neg)[0])
        raise DataError(src, "units.spike_times",
                        f"negative spike time {_py(flat[i])!r} s (unit id {_py(ids[unit_row[i]])!r}, flat index {i})")
    _check_obs_intervals(units, src, n, flat, unit_row, ids)

    cols: dict[str, np.ndarray] = {"unit_id": _to_str(ids) if _is_text(ids) else ids.astype(np.int64).astype(str)}
    cols.update(_units_region_columns(nwb, units, src, n, region_map, extra))

    qname = None
    if quality_column == "auto":
        qname = next((c for c in QUALITY_COLUMNS if c in units.colnames), None)
    elif quality_column is not None:
        if quality_column not in units.colnames:
            raise DataError(src, f"units.{quality_column}", f"quality column missing (columns: {list(units.colnames)})")
        qname = quality_column
    if qname is not None:
        raw = _plain_column(units, qname, src, f"units.{qname}")
        if _is_text(raw):
            lab = np.char.strip(_to_str(raw))
            cols["quality"] = (np.char.lower(lab) == "good").astype(np.int64)
            cols["quality_label"] = lab
        elif raw.dtype.kind in "biuf":
            cols["quality"] = (raw == 1).astype(np.int64)
            cols["quality_raw"] = raw.astype(np.float64)
        else:
            raise DataError(src, f"units.{qname}", f"dtype {raw.dtype} is neither text nor numeric")
        extra["quality_column"] = qname

    order = np.argsort(flat, kind="stable")
    spike_times, spike_units = flat[order], unit_row[order]

    if good_units_only:
        if "quality" not in cols:
            raise DataError(src, "units.quality",
                            f"good_units_only=True but the units table has none of the columns {QUALITY_COLUMNS}")
        keep = cols["quality"] == 1
        if not keep.any():
            raise DataError(src, "units.quality", f"good_units_only=True but none of the {n} units is good")
        new_row = np.cumsum(keep) - 1
        mask = keep[spike_units]
        spike_times, spike_units = spike_times[mask], new_row[spike_units[mask]]
        cols = {k: np.asarray(v)[keep] for k, v in cols.items()}
        extra["n_units_dropped"] = int(n - keep.sum())
    return cols, spike_times, spike_units.astype(np.int64)


# ------------------------------------------------------------------ ophys
def _roi_candidates(nwb) -> list[tuple[str, str, Any]]:
    """(qualified name, container kind 'dff'|'fluorescence', series) of every RoiResponseSeries."""
    from pynwb.ophys import DfOverF, Fluorescence

    out = []
    for mname, module in nwb.processing.items():
        for cname, container in module.data_interfaces.items():
            if isinstance(container, DfOverF):
                kind = "dff"
            elif isinstance(container, Fluorescence):
                kind = "fluorescence"
            else:
                continue
            for sname, series in container.roi_response_series.items():
                out.append((f"{mname}/{cname}/{sname}", kind, series))
    return out


def _choose_roi(cands, src: str, roi_response: str):
    names = [q for q, _, _ in cands]
    if roi_response != "auto":
        hit = [c for c in cands if c[0] == roi_response or c[2].name == roi_response]
        if len(hit) != 1:
            what = "matches several series" if hit else "not found"
            raise DataError(src, "roi_response", f"{roi_response!r} {what}; RoiResponseSeries in the file: {names}")
        q, kind, s = hit[0]
        if "deconv" in s.name.lower():
            kind = "deconvolved"
        return q, kind, s
    ranks = [
        ("dff", [c for c in cands if c[1] == "dff"]),
        ("deconvolved", [c for c in cands if c[1] != "dff" and "deconv" in c[2].name.lower()]),
        ("fluorescence", [c for c in cands if c[1] == "fluorescence" and "deconv" not in c[2].name.lower()
                          and "neuropil" not in c[2].name.lower()]),
    ]
    for kind, group in ranks:
        if len(group) == 1:
            return group[0][0], kind, group[0][2]
        if len(group) > 1:
            raise DataError(src, "roi_response",
                            f"roi_response='auto' is ambiguous: several {kind} series {[g[0] for g in group]}; "
                            "pass roi_response=<name>")
    raise DataError(src, "roi_response", f"no usable RoiResponseSeries (found {names}); pass roi_response=<name>")


def _read_calcium(nwb, cands, src: str, *, roi_response: str, region_map, extra: dict):
    qname, kind, series = _choose_roi(cands, src, roi_response)
    field = f"ophys.{qname}"
    data = np.asarray(series.data[:])
    if data.dtype.kind not in "biuf":
        raise DataError(src, f"{field}.data", f"dtype {data.dtype} is not numeric")
    if data.ndim == 1:
        data = data[:, None]
    if data.ndim != 2:
        raise DataError(src, f"{field}.data", f"shape {data.shape} is not (frames, ROIs)")
    rois = series.rois
    rows = np.asarray(rois.data[:]).astype(np.int64)
    ps = rois.table
    n_ps = len(ps)
    if rows.size and (rows.min() < 0 or rows.max() >= n_ps):
        i = int(np.flatnonzero((rows < 0) | (rows >= n_ps))[0])
        raise DataError(src, f"{field}.rois", f"row {rows[i]} is outside the {n_ps} rows of {ps.name}")
    if data.shape[1] != len(rows):
        raise DataError(src, f"{field}.data",
                        f"shape {data.shape}: {data.shape[1]} columns for {len(rows)} ROIs (data must be frames x ROIs)")
    frame_times = _series_times(series, src, field, data.shape[0])
    activity = _scaled(series, data, np.float32)
    bad = ~np.isfinite(activity)
    if bad.any():
        f, r = (int(v[0]) for v in np.nonzero(bad))
        raise DataError(src, f"{field}.data", f"non-finite value {_py(activity[f, r])!r} at frame {f}, ROI row {r}")
    roi_ids = np.asarray(ps.id.data[:])[rows]
    plane = getattr(ps, "imaging_plane", None)
    location = getattr(plane, "location", None) if plane is not None else None
    region = _normalise_regions(np.full(len(rows), "" if location is None else str(location)))
    cols: dict[str, np.ndarray] = {
        "unit_id": roi_ids.astype(np.int64).astype(str) if not _is_text(roi_ids) else _to_str(roi_ids),
        "region": region,
        "plane": np.full(len(rows), ps.name),
    }
    if region_map is not None:
        mapped = np.asarray(region_map(region)).astype(str)
        if mapped.shape != region.shape:
            raise DataError(src, "units.region", f"region_map returned shape {mapped.shape} for {len(region)} ROIs")
        cols["region_raw"], cols["region"] = region, mapped
    extra["roi_response"] = qname
    if plane is not None:
        extra["imaging_plane"] = plane.name
        if getattr(plane, "imaging_rate", None) is not None:
            extra["imaging_rate_hz"] = float(plane.imaging_rate)
    return cols, frame_times, activity, kind


# ---------------------------------------------------------------- trials
def _read_trials(nwb, src: str, trial_columns: Sequence[str] | None, extra: dict) -> dict[str, np.ndarray] | None:
    table = nwb.trials
    if table is None:
        return None
    n = len(table)
    if n == 0:
        raise DataError(src, "trials", "trials table has 0 rows")
    names = list(table.colnames)
    for req in ("start_time", "stop_time"):
        if req not in names:
            raise DataError(src, f"trials.{req}", f"required column missing (columns: {names})")
    if trial_columns is not None:
        missing = [c for c in trial_columns if c not in names]
        if missing:
            raise DataError(src, f"trials.{missing[0]}", f"requested trial column not in the table (columns: {names})")
        names = ["start_time", "stop_time"] + [c for c in trial_columns if c not in ("start_time", "stop_time")]
    out: dict[str, np.ndarray] = {}
    cats: dict[str, list[str]] = {}
    for name in names:
        field = f"trials.{name}"
        arr = _plain_column(table, name, src, field)
        if arr.dtype.kind in "biuf":
            arr = arr.astype(np.float64)
            if arr.ndim == 1:
                out[name] = arr
            elif arr.ndim == 2:
                for k in range(arr.shape[1]):
                    out[f"{name}_{k}"] = arr[:, k]
            else:
                raise DataError(src, field, f"shape {arr.shape}: more than 2 dimensions per table")
        elif _is_text(arr) and arr.ndim == 1:
            try:
                text = _to_str(arr)
            except (TypeError, ValueError, UnicodeDecodeError) as exc:
                raise DataError(src, field, f"object column that is not text ({exc})") from exc
            labels, codes = np.unique(text, return_inverse=True)
            out[name] = codes.astype(np.int64)
            cats[name] = labels.tolist()
        else:
            raise DataError(src, field, f"dtype {arr.dtype} shape {arr.shape} is neither numeric nor text")
    start, stop = out["start_time"], out["stop_time"]
    bad = ~np.isfinite(start)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(src, "trials.start_time", f"non-finite value {_py(start[i])!r} at trial {i}")
    bad = stop < start
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(src, "trials.stop_time", f"stop_time {_py(stop[i])!r} < start_time {_py(start[i])!r} at trial {i}")
    if cats:
        extra["trial_categories"] = cats
    extra["trials_source"] = "trials_table"
    return out


# ------------------------------------------------------------- behaviour
def _behavior_series(nwb) -> tuple[list[tuple[str, str, Any]], dict[str, str]]:
    """(name, where, TimeSeries) candidates of the behavior module, then acquisition."""
    from pynwb.base import TimeSeries
    from pynwb.ecephys import ElectricalSeries
    from pynwb.icephys import PatchClampSeries
    from pynwb.image import ImageSeries

    not_behavior = (ElectricalSeries, ImageSeries, PatchClampSeries)
    found: list[tuple[str, str, Any]] = []
    skipped: dict[str, str] = {}

    def walk(objs, where):
        for obj in objs:
            if isinstance(obj, TimeSeries):
                if isinstance(obj, not_behavior):
                    skipped[obj.name] = f"{where}: {type(obj).__name__} is not a behaviour signal"
                else:
                    found.append((obj.name, where, obj))
            elif hasattr(obj, "children") and not hasattr(obj, "colnames"):
                walk([c for c in obj.children if isinstance(c, TimeSeries)], f"{where}/{obj.name}")

    for mname, module in nwb.processing.items():
        if mname.lower() in ("behavior", "behaviour"):
            walk(module.data_interfaces.values(), f"processing/{mname}")
    walk(nwb.acquisition.values(), "acquisition")
    return found, skipped


def _component_names(name: str, width: int) -> list[str]:
    if width == 1:
        return [name]
    if width <= 3:
        return [f"{name}_{a}" for a in _XYZ[:width]]
    return [f"{name}_{k}" for k in range(width)]


def _read_behavior(nwb, src: str, behavior_names: Iterable[str] | None, extra: dict):
    found, skipped = _behavior_series(nwb)
    series: dict[str, tuple[str, Any]] = {}
    for name, where, ts in found:
        if name in series:
            skipped[f"{where}/{name}"] = f"name clash with {series[name][0]}/{name} (kept that one)"
            continue
        series[name] = (where, ts)
    # shapes without reading data: which components does each series give?
    comps: dict[str, list[str]] = {}
    for name, (where, ts) in series.items():
        shape = getattr(ts.data, "shape", None)
        if shape is None:
            shape = np.shape(ts.data)
        if len(shape) == 1:
            comps[name] = [name]
        elif len(shape) == 2:
            comps[name] = _component_names(name, int(shape[1]))
        else:
            skipped[name] = f"{where}: data shape {tuple(shape)} has more than 2 dimensions"
    wanted_series: dict[str, set[str] | None] = {}
    if behavior_names is None:
        wanted_series = {name: None for name in comps}
    else:
        comp_owner = {c: name for name, cs in comps.items() for c in cs}
        for req in behavior_names:
            if req in comps:
                wanted_series[req] = None
            elif req in comp_owner:
                owner = comp_owner[req]
                if wanted_series.get(owner, set()) is not None:
                    wanted_series.setdefault(owner, set()).add(req)
            else:
                why = f" ({skipped[req]})" if req in skipped else ""
                raise DataError(src, f"behavior.{req}",
                                f"not found{why}; available: {sorted(comp_owner)}")
    behavior: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    units: dict[str, str] = {}
    for name, sel in wanted_series.items():
        where, ts = series[name]
        field = f"behavior.{name}"
        data = np.asarray(ts.data[:])
        if data.dtype.kind not in "biuf":
            if behavior_names is not None:
                raise DataError(src, field, f"dtype {data.dtype} is not numeric")
            skipped[name] = f"{where}: dtype {data.dtype} is not numeric"
            continue
        times = _series_times(ts, src, field, data.shape[0])
        values = _scaled(ts, data, np.float64)
        if values.ndim == 1:
            values = values[:, None]
        for k, cname in enumerate(comps[name]):
            if sel is None or cname in sel:
                behavior[cname] = (times, np.ascontiguousarray(values[:, k]))
                units[cname] = str(ts.unit)
    if skipped:
        extra["behavior_skipped"] = skipped
    return behavior, units


# ------------------------------------------------------------------- API
def load_session(
    path: str | Path,
    *,
    modality: str = "auto",
    roi_response: str = "auto",
    behavior_names: Iterable[str] | None = None,
    window_length: float = 2.0,
    session_id: str | None = None,
    subject_id: str | None = None,
    good_units_only: bool = False,
    quality_column: str | None = "auto",
    trial_columns: Sequence[str] | None = None,
    region_map: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Session:
    """Read one NWB file into a validated :class:`Session` (see the module docstring).

    Args:
        path: the ``.nwb`` file (HDF5).
        modality: ``"spikes"`` (units table), ``"calcium"`` (RoiResponseSeries)
            or ``"auto"`` (whichever the file has; a file with both raises).
        roi_response: ``"auto"`` (ranking in the module docstring) or the name
            of the RoiResponseSeries to read.
        behavior_names: behaviour signals to keep (series or component names);
            ``None`` keeps every one found.
        window_length: seconds per window when the file has no trials table.
        session_id: overrides ``nwbfile.identifier``.
        subject_id: used when the file has no ``subject.subject_id`` (and
            overrides it when it has one; the file's value goes to
            ``extra["subject_id_in_file"]``).
        good_units_only: spikes only: keep units with ``quality == 1``
            (needs a quality column); the count dropped is in
            ``extra["n_units_dropped"]``.
        quality_column: ``"auto"`` (first of ``quality``, ``label``,
            ``KSLabel``), a column name, or ``None`` (no quality).
        trial_columns: trial columns to keep besides start/stop (``None``:
            all; use it to leave out ragged or reference columns).
        region_map: vectorised map of location strings (N,) -> region
            acronyms (N,), e.g. to Allen Beryl.

    Returns:
        The session; spike or frame times and trial times in seconds.

    Raises:
        DataError: not an NWB/HDF5 file, no units and no ophys, empty units,
            non-finite / negative / out-of-``obs_intervals`` spike times, a
            missing subject id, unusable trial columns, ...
    """
    if modality not in ("auto", "spikes", "calcium"):
        raise ValueError(f"modality must be 'auto', 'spikes' or 'calcium', not {modality!r}")
    if not (np.isfinite(window_length) and window_length > 0):
        raise ValueError(f"window_length must be a positive number of seconds, not {window_length!r}")
    path = Path(path)
    src = str(path)
    extra: dict[str, Any] = {"format": "nwb"}
    with _open(path) as io:
        try:
            nwb = io.read()
        except Exception as exc:
            raise DataError(src, "file", f"HDF5 file that pynwb cannot read as NWB ({type(exc).__name__}: {exc})") from exc

        has_units = nwb.units is not None
        cands = _roi_candidates(nwb)
        if modality == "auto":
            if has_units and cands:
                raise DataError(src, "modality", "file has both a units table and RoiResponseSeries "
                                f"{[c[0] for c in cands]}; pass modality='spikes' or 'calcium'")
            if not has_units and not cands:
                raise DataError(src, "units", "no units table and no ophys RoiResponseSeries: "
                                "not an NWB file of spikes or 2-photon data")
            modality = "spikes" if has_units else "calcium"
        if modality == "spikes" and not has_units:
            raise DataError(src, "units", "modality='spikes' but the file has no units table")
        if modality == "calcium" and not cands:
            raise DataError(src, "ophys", "modality='calcium' but the file has no RoiResponseSeries "
                            "(DfOverF / Fluorescence)")
        if modality == "calcium" and good_units_only:
            raise ValueError("good_units_only applies to spikes (units table quality); not to calcium ROIs")

        file_subject = getattr(nwb.subject, "subject_id", None) if nwb.subject is not None else None
        if subject_id is None:
            if not file_subject:
                raise DataError(src, "subject.subject_id",
                                f"missing (subject={'None' if nwb.subject is None else repr(file_subject)}); "
                                "pass subject_id=")
            subject_id = str(file_subject)
        elif file_subject and str(file_subject) != str(subject_id):
            extra["subject_id_in_file"] = str(file_subject)
        sid = session_id or (str(nwb.identifier) if nwb.identifier else path.stem)
        extra["nwb_identifier"] = None if nwb.identifier is None else str(nwb.identifier)
        if nwb.session_start_time is not None:
            extra["session_start_time"] = nwb.session_start_time.isoformat()

        kw: dict[str, Any] = {}
        if modality == "spikes":
            units, st, su = _read_spikes(nwb, src, quality_column=quality_column,
                                         good_units_only=good_units_only, region_map=region_map, extra=extra)
            kw.update(spike_times=st, spike_units=su)
            span = (float(st[0]), float(st[-1])) if len(st) else None
        else:
            units, ft, act, kind = _read_calcium(nwb, cands, src, roi_response=roi_response,
                                                 region_map=region_map, extra=extra)
            kw.update(frame_times=ft, activity=act, activity_kind=kind)
            # windows must lie between the first and last frame (activity is interpolated)
            span = (float(ft[0]), float(ft[-1])) if len(ft) else None
        trials = _read_trials(nwb, src, trial_columns, extra)
        behavior, behavior_units = _read_behavior(nwb, src, behavior_names, extra)

    if trials is None:
        if span is None:
            raise DataError(src, "spike_times" if modality == "spikes" else "frame_times",
                            "no trials table and no spikes/frames to cut into windows")
        from nfm.data.records import consecutive_windows

        trials = {k: np.asarray(v) for k, v in consecutive_windows(span[0], span[1], length=window_length).items()}
        extra["trials_source"] = "consecutive_windows"
        extra["align_event"] = "start_time"
        extra["window_length_s"] = float(window_length)
    return Session(
        session_id=str(sid),
        subject_id=str(subject_id),
        units=units,
        trials=trials,
        modality=modality,
        behavior=behavior,
        behavior_units=behavior_units,
        source=src,
        extra=extra,
        **kw,
    ).validate()


def load_sessions(paths: Iterable[str | Path], **kw) -> list[Session]:
    """:func:`load_session` for each file (same keyword options); session ids must be unique."""
    paths = [Path(p) for p in paths]
    if kw.get("session_id") is not None and len(paths) > 1:
        raise ValueError("session_id= names one session; it cannot be given for several files")
    sessions: list[Session] = []
    seen: dict[str, str] = {}
    for p in paths:
        s = load_session(p, **kw)
        if s.session_id in seen:
            raise DataError(p, "session_id", f"{s.session_id!r} is also the id of {seen[s.session_id]}")
        seen[s.session_id] = str(p)
        sessions.append(s)
    return sessions
