"""IBL mesoscope (2-photon) sessions through ONE -> :class:`~nfm.data.schema.Session`.

One session (eid) becomes one calcium :class:`Session` with every field of view
(FOV) merged. Per FOV, collection ``alf/FOV_00``, ``alf/FOV_01``, ...:

* ``mpci.times`` (F,) frame times (s, session clock);
* ``mpci.ROIActivityDeconvolved`` (F, N) deconvolved activity (a.u.), or
  ``mpci.ROIActivityF`` (F, N) raw ROI fluorescence (a.u., not dF/F) with
  ``activity="F"``;
* ``mpci.badFrames`` (F,) bool or 0/1 int, True = frame with poor registration;
* ``mpciROIs.mpciROITypes`` (N,) 1 = cell (soma), 0 = not a cell;
* ``mpciROIs.brainLocationIds_ccf_2017_estimate`` (N,) Allen CCF 2017 ids
  (``mpciROIs.brainLocationIds_ccf_2017``, the histology-based ids, win when
  present); mapped offline with ``iblatlas.regions.BrainRegions()`` to the
  finest acronym and the Beryl acronym (``region``); an id unknown to the atlas
  is an error;
* ``mpciROIs.uuids`` (N,) ROI ids (``.csv`` with header ``uuids`` as IBL writes
  it, or ``.npy``); without it the id is ``"FOV_xx/roi<i>"`` (recorded in
  ``extra``); optional ``mpciROIs.mlapdv_estimate`` (N, 3) µm from bregma.

Bad frames are never dropped: the activity of every bad frame is set to NaN in
its FOV before resampling, so each clock frame that draws on a bad frame with
non-zero interpolation weight is NaN (counted per FOV in
``extra["fovs"][fov]["n_clock_frames_nan_from_bad"]``; the bad frames
themselves in ``n_bad_frames``). Downstream, NaN marks a missing sample: the
trial records interpolate activity at bin centres, so a bin whose centre falls
next to a NaN frame is NaN and a model masks it out of its loss.

One frame clock: FOVs are scanned one after another within each frame period
(interleaved), so their frame times differ by fractions of a frame and their
frame counts may differ. All FOVs are linearly resampled
(:func:`nfm.data.sources.suite2p.resample_frames`, vectorised) onto one clock
-- ``clock="first_fov"`` (default): the first FOV's own frame times, so that
FOV's values are copied exactly; ``clock="regular"``: a regular grid at the
mean frame rate over the time range all FOVs cover -- and their ROIs are
concatenated (FOV order, then ROI order). A clock frame outside a FOV's time
range is NaN there (no extrapolation; counted in ``n_clock_frames_outside``).

Trials and behaviour reuse the Neuropixels source (:mod:`nfm.data.sources.ibl`):
the ALF trials table found by ``brainbox`` ``SessionLoader`` (``alf`` or
``alf/task_00``) with the MtM/brain-wide-map filters (counts in
``extra["trial_filter"]``), wheel velocity and speed (rad/s) and whisker motion
energy (a.u.) when present.
"""
from __future__ import annotations

import csv
import functools
import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..schema import DataError, Session
from .ibl import (
    DEFAULT_KEY_EVENTS,
    filter_trials,
    load_behavior,
    load_each,
    load_trials_table,
    make_one,
)
from .suite2p import resample_frames

__all__ = ["load_session", "load_sessions", "list_fovs", "load_fov", "ccf_to_acronyms", "common_clock"]

ACTIVITY_DATASETS = {"deconvolved": "mpci.ROIActivityDeconvolved", "F": "mpci.ROIActivityF"}
LOCATION_DATASETS = ("mpciROIs.brainLocationIds_ccf_2017", "mpciROIs.brainLocationIds_ccf_2017_estimate")
_FOV_RE = re.compile(r"^alf/(FOV_(\d+))$")


@functools.lru_cache(maxsize=1)
def _brain_regions():
    from iblatlas.regions import BrainRegions

    return BrainRegions()  # shipped with iblatlas: no download


def ccf_to_acronyms(ids, source: str = "<memory>", field: str = "brainLocationIds") -> tuple[np.ndarray, np.ndarray]:
    """Allen CCF 2017 ids (N,) -> (finest acronym (N,), Beryl acronym (N,)), offline.

    0 is ``"void"``; negative (left-hemisphere lateralised) ids map like their
    positive twin. An id the atlas does not know raises :class:`DataError`
    (``BrainRegions.id2acronym`` would silently drop it).
    """
    arr = np.asarray(ids)
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(source, field, f"atlas id {arr[i]!r} of ROI {i} is not an integer")
    elif arr.dtype.kind not in "iu":
        raise DataError(source, field, f"dtype {arr.dtype} is not an integer atlas id")
    arr = arr.astype(np.int64).reshape(-1)
    br = _brain_regions()
    known = np.isin(arr, br.id)
    if not known.all():
        i = int(np.flatnonzero(~known)[0])
        raise DataError(source, field, f"Allen id {arr[i]!r} of ROI {i} is not in the iblatlas region tree")
    return br.id2acronym(arr).astype(str), br.id2acronym(arr, mapping="Beryl").astype(str)


# ------------------------------------------------------------------------------- files
def list_fovs(one, eid) -> list[str]:
    """FOV collections ``alf/FOV_00``, ``alf/FOV_01``, ... of a session, in FOV order."""
    collections = one.list_collections(str(eid), collection="alf/FOV_*") or []
    found = sorted((int(m.group(2)), str(c)) for c in collections if (m := _FOV_RE.match(str(c))))
    return [c for _, c in found]


def _load_npy(path: Path, field: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" in str(e) or "Object arrays" in str(e):
            raise DataError(path, field, "holds an object (pickled) array; object arrays are never unpickled") from None
        raise DataError(path, field, f"not a readable .npy file: {e}") from None
    except (OSError, EOFError) as e:
        raise DataError(path, field, f"cannot read: {e}") from None


def _load_uuids(path: Path) -> np.ndarray:
    """ROI uuids (N,) str from ``mpciROIs.uuids.csv`` (one column, header ``uuids``) or ``.npy``."""
    if path.suffix == ".npy":
        arr = _load_npy(path, "mpciROIs.uuids")
        return arr.astype(str).reshape(-1)
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or [h.strip() for h in rows[0]] != ["uuids"]:
        raise DataError(path, "mpciROIs.uuids", f"expected a one-column CSV with header 'uuids', got {rows[:1]!r}")
    if any(len(r) != 1 for r in rows[1:]):
        i = next(i for i, r in enumerate(rows[1:]) if len(r) != 1)
        raise DataError(path, "mpciROIs.uuids", f"row {i} has {len(rows[i + 1])} cells, expected 1")
    return np.asarray([r[0].strip() for r in rows[1:]], dtype=str)


class _FovFiles:
    """``object.attribute`` -> local path of one FOV collection (downloaded by ONE if remote)."""

    def __init__(self, one, eid: str, collection: str, revision: str | None, session_path: Path):
        self.one, self.eid, self.collection, self.revision = one, eid, collection, revision
        self.folder = Path(session_path) / collection
        names = one.list_datasets(eid, collection=collection, revision=revision) or []
        self.names = {}
        for rel in names:
            name = Path(str(rel)).name
            parts = name.split(".")
            if len(parts) >= 3:
                self.names.setdefault(".".join(parts[:2]), name)

    def has(self, dataset: str) -> bool:
        return dataset in self.names

    def path(self, dataset: str) -> Path:
        if dataset not in self.names:
            raise DataError(self.folder / f"{dataset}.*", dataset,
                            f"dataset missing in collection {self.collection} of eid {self.eid} "
                            f"(found {sorted(self.names)})")
        return Path(self.one.load_dataset(self.eid, self.names[dataset], collection=self.collection,
                                          revision=self.revision, download_only=True))


def load_fov(one, eid, collection: str, *, activity: str = "deconvolved", revision: str | None = None,
             session_path=None) -> dict:
    """Read and check one FOV collection.

    Returns a dict: ``times`` (F,) s float64, ``activity`` (F, N) float32 with
    bad frames set to NaN, ``bad`` (F,) bool, ``roi_types`` (N,) int64,
    ``atlas_id`` (N,) int64, ``acronym``/``region`` (N,) str (finest/Beryl),
    ``uuids`` (N,) str or None, ``mlapdv`` (N, 3) µm or None, ``files`` (names
    of the datasets read). Raises :class:`DataError` naming the file, field and
    value for a missing dataset or a shape/value problem.
    """
    if activity not in ACTIVITY_DATASETS:
        raise ValueError(f"activity must be one of {sorted(ACTIVITY_DATASETS)}, got {activity!r}")
    eid = str(eid)
    session_path = Path(session_path if session_path is not None else one.eid2path(eid))
    files = _FovFiles(one, eid, collection, revision, session_path)
    act_name = ACTIVITY_DATASETS[activity]
    p_times, p_act, p_bad = files.path("mpci.times"), files.path(act_name), files.path("mpci.badFrames")
    times = _load_npy(p_times, "mpci.times")
    act = _load_npy(p_act, act_name)
    bad = _load_npy(p_bad, "mpci.badFrames")
    if times.dtype.kind not in "iuf" or times.ndim != 1 or len(times) == 0:
        raise DataError(p_times, "mpci.times", f"expected (frames,) numbers, got {times.dtype} shape {times.shape}")
    times = times.astype(np.float64)
    nonfinite = ~np.isfinite(times)
    if nonfinite.any():
        i = int(np.flatnonzero(nonfinite)[0])
        raise DataError(p_times, "mpci.times", f"non-finite frame time {times[i]!r} at frame {i}")
    if len(times) > 1 and np.any(np.diff(times) <= 0):
        i = int(np.flatnonzero(np.diff(times) <= 0)[0]) + 1
        raise DataError(p_times, "mpci.times", f"not strictly increasing at frame {i}: {times[i]!r} <= {times[i - 1]!r}")
    if act.dtype.kind not in "iuf" or act.ndim != 2 or act.shape[0] != len(times):
        raise DataError(p_act, act_name, f"expected (frames {len(times)}, ROIs) numbers, got {act.dtype} shape {act.shape}")
    if bad.shape != times.shape:
        raise DataError(p_bad, "mpci.badFrames", f"shape {bad.shape} != ({len(times)},) frames of mpci.times")
    if bad.dtype.kind == "b":
        bad = bad.astype(bool)
    elif bad.dtype.kind in "iuf" and np.all((bad == 0) | (bad == 1)):
        bad = bad == 1
    else:
        vals = np.unique(bad)[:5]
        raise DataError(p_bad, "mpci.badFrames", f"expected bool or 0/1 per frame, got {bad.dtype} values {vals.tolist()}")
    n_rois = act.shape[1]

    def per_roi(dataset: str, kind: str = "iu") -> tuple[np.ndarray, Path]:
        path = files.path(dataset)
        arr = _load_npy(path, dataset)
        if arr.shape[:1] != (n_rois,) or arr.dtype.kind not in kind:
            raise DataError(path, dataset, f"expected ({n_rois},) values (one per ROI of {act_name}), "
                                           f"got {arr.dtype} shape {arr.shape}")
        return arr, path

    roi_types, p_types = per_roi("mpciROIs.mpciROITypes", "iub")
    loc_name = next((d for d in LOCATION_DATASETS if files.has(d)), LOCATION_DATASETS[-1])
    atlas_raw, p_loc = per_roi(loc_name, "iuf")
    acronym, region = ccf_to_acronyms(atlas_raw, p_loc, loc_name)
    uuids = None
    if files.has("mpciROIs.uuids"):
        p_uuid = files.path("mpciROIs.uuids")
        uuids = _load_uuids(p_uuid)
        if uuids.shape != (n_rois,):
            raise DataError(p_uuid, "mpciROIs.uuids", f"{len(uuids)} ids for {n_rois} ROIs of {act_name}")
    mlapdv = None
    if files.has("mpciROIs.mlapdv_estimate"):
        p_ml = files.path("mpciROIs.mlapdv_estimate")
        mlapdv = _load_npy(p_ml, "mpciROIs.mlapdv_estimate")
        if mlapdv.shape != (n_rois, 3) or mlapdv.dtype.kind not in "iuf":
            raise DataError(p_ml, "mpciROIs.mlapdv_estimate", f"expected ({n_rois}, 3) µm, got {mlapdv.dtype} shape {mlapdv.shape}")
    act = act.astype(np.float32, copy=True)
    act[bad] = np.nan
    return {"times": times, "activity": act, "bad": bad, "roi_types": roi_types.astype(np.int64),
            "atlas_id": atlas_raw.astype(np.int64), "acronym": acronym, "region": region,
            "uuids": uuids, "mlapdv": mlapdv, "location_dataset": loc_name,
            "files": {"times": str(p_times), "activity": str(p_act), "badFrames": str(p_bad),
                      "roi_types": str(p_types), "location": str(p_loc)}}


def common_clock(fov_times: Sequence[np.ndarray], kind: str = "first_fov") -> np.ndarray:
    """The frame clock (C,) s that every FOV is resampled onto.

    ``"first_fov"``: the first FOV's frame times. ``"regular"``: a regular grid
    from the latest first frame to the earliest last frame of all FOVs, at the
    mean frame rate (mean over FOVs of ``(F - 1) / (t[-1] - t[0])``, Hz).
    """
    if kind == "first_fov":
        return np.asarray(fov_times[0], dtype=np.float64)
    if kind != "regular":
        raise ValueError(f"clock must be 'first_fov' or 'regular', got {kind!r}")
    t0 = max(float(t[0]) for t in fov_times)
    t1 = min(float(t[-1]) for t in fov_times)
    rates = [(len(t) - 1) / (t[-1] - t[0]) for t in fov_times if len(t) > 1]
    if not rates or t1 <= t0:
        raise ValueError(f"FOVs share no time range ({t0} s to {t1} s) for a regular clock")
    fs = float(np.mean(rates))
    return t0 + np.arange(int(np.floor((t1 - t0) * fs + 1e-9)) + 1) / fs


# ------------------------------------------------------------------------------ session
def load_session(
    eid,
    one,
    *,
    activity: str = "deconvolved",
    cells_only: bool = True,
    clock: str = "first_fov",
    fovs: Sequence[str] | None = None,
    revision: str | None = None,
    align_event: str = "stimOn_times",
    min_rt: float | None = 0.08,
    max_rt: float | None = 2.0,
    max_trial_duration: float | None = 10.0,
    drop_no_choice: bool = True,
    key_events: Iterable[str] = DEFAULT_KEY_EVENTS,
    wheel_fs: float = 1000.0,
    wheel_out_hz: float = 100.0,
    motion_energy_cameras: Sequence[str] = ("left", "right"),
) -> Session:
    """Load one IBL mesoscope session (all FOVs on one clock) as a validated calcium :class:`Session`.

    Args:
        eid: experiment id (str/UUID) or session path; ``one``: a ONE instance
            (``One(cache_dir=..., mode="local")`` reads an ALF tree offline).
        activity: ``"deconvolved"`` (``mpci.ROIActivityDeconvolved``) or ``"F"``
            (``mpci.ROIActivityF``, raw fluorescence); ``Session.activity_kind``.
        cells_only: keep ROIs with ``mpciROITypes == 1`` (soma) only; the others
            are counted in ``extra["fovs"][fov]["n_rois_not_cell"]``.
        clock: ``"first_fov"`` or ``"regular"`` (see module docstring).
        fovs: FOV collections to read (default every ``alf/FOV_*``).
        revision: ALF revision of the FOV datasets (default: the default revision).
        align_event ... key_events: trial filters of
            :func:`nfm.data.sources.ibl.filter_trials` (seconds).
        wheel_fs, wheel_out_hz, motion_energy_cameras: behaviour, as in
            :func:`nfm.data.sources.ibl.load_session`.

    Returns: ``Session`` with ``frame_times`` (C,) s, ``activity`` (C, N)
    float32 (NaN: bad or out-of-range frames), units ``unit_id`` (ROI uuid),
    ``region`` (Beryl), ``acronym``, ``atlas_id``, ``fov``, ``roi_index`` (row in
    that FOV's files), ``roi_type``, ``ml_um``/``ap_um``/``dv_um`` (NaN if absent).
    """
    eid = str(one.to_eid(eid))
    session_path = Path(one.eid2path(eid))
    details = one.get_details(eid)
    details = dict(details) if details is not None else {}
    subject = str(details.get("subject") or session_path.parts[-3])
    collections = list(fovs) if fovs is not None else list_fovs(one, eid)
    if not collections:
        raise DataError(f"{session_path}/alf", "FOV_*",
                        f"no field of view found for eid {eid}: expected collections alf/FOV_00, alf/FOV_01, ... "
                        f"holding mpci.times, {ACTIVITY_DATASETS[activity] if activity in ACTIVITY_DATASETS else 'mpci.ROIActivity*'}, "
                        "mpci.badFrames and mpciROIs.*")
    loaded = [load_fov(one, eid, c, activity=activity, revision=revision, session_path=session_path)
              for c in collections]
    try:
        frame_clock = common_clock([f["times"] for f in loaded], clock)
    except ValueError as e:
        raise DataError(f"{session_path}/alf", "mpci.times", str(e)) from None

    blocks, cols = [], {k: [] for k in ("unit_id", "region", "acronym", "atlas_id", "fov", "roi_index",
                                        "roi_type", "ml_um", "ap_um", "dv_um")}
    fov_info = {}
    for coll, f in zip(collections, loaded):
        fov = coll.split("/")[-1]
        keep = f["roi_types"] == 1 if cells_only else np.ones(len(f["roi_types"]), bool)
        idx = np.flatnonzero(keep)
        n_frames = len(f["times"])
        info = {"collection": coll, "n_frames": n_frames, "n_bad_frames": int(np.count_nonzero(f["bad"])),
                "frame_rate_hz": float((n_frames - 1) / (f["times"][-1] - f["times"][0])) if n_frames > 1 else None,
                "n_rois": int(len(keep)), "n_rois_kept": int(len(idx)),
                "n_rois_not_cell": int(np.count_nonzero(f["roi_types"] != 1)),
                "location_dataset": f["location_dataset"],
                "unit_id_source": "mpciROIs.uuids" if f["uuids"] is not None else "FOV and ROI index (no mpciROIs.uuids)"}
        res, counts = resample_frames(f["times"], f["activity"][:, idx], frame_clock, f["bad"],
                                      source=f["files"]["activity"])
        info.update(n_clock_frames_outside=counts["outside"], n_clock_frames_nan_from_bad=counts["from_bad"])
        fov_info[fov] = info
        if len(idx) == 0:
            continue
        blocks.append(res)
        ids = f["uuids"][idx] if f["uuids"] is not None else np.char.add(f"{fov}/roi", idx.astype(str))
        cols["unit_id"].append(np.asarray(ids, dtype=str))
        cols["region"].append(f["region"][idx])
        cols["acronym"].append(f["acronym"][idx])
        cols["atlas_id"].append(f["atlas_id"][idx])
        cols["fov"].append(np.full(len(idx), fov))
        cols["roi_index"].append(idx.astype(np.int64))
        cols["roi_type"].append(f["roi_types"][idx])
        ml = f["mlapdv"][idx].astype(np.float64) if f["mlapdv"] is not None else np.full((len(idx), 3), np.nan)
        for j, key in enumerate(("ml_um", "ap_um", "dv_um")):
            cols[key].append(ml[:, j])
    if not blocks:
        raise DataError(f"{session_path}/alf", "mpciROIs.mpciROITypes",
                        f"no ROI kept: none of {sum(i['n_rois'] for i in fov_info.values())} ROIs is a cell (type 1)"
                        + ("; pass cells_only=False to keep them" if cells_only else ""))
    units = {k: np.concatenate(v) for k, v in cols.items()}
    act = np.concatenate(blocks, axis=1)

    table, trials_source = load_trials_table(one, eid, session_path)
    trials, trial_counts = filter_trials(
        table, trials_source, align_event=align_event, min_rt=min_rt, max_rt=max_rt,
        max_trial_duration=max_trial_duration, drop_no_choice=drop_no_choice, key_events=key_events)

    behavior, behavior_units, extra = load_behavior(
        one, eid, session_path, wheel_fs=wheel_fs, wheel_out_hz=wheel_out_hz, cameras=motion_energy_cameras)

    extra.update({
        "eid": eid, "session_path": str(session_path), "lab": details.get("lab"),
        "date": str(details.get("date") or session_path.parts[-2]),
        "activity_dataset": ACTIVITY_DATASETS[activity], "clock": clock,
        "clock_frame_rate_hz": float((len(frame_clock) - 1) / (frame_clock[-1] - frame_clock[0]))
        if len(frame_clock) > 1 else None,
        "cells_only": bool(cells_only), "fovs": fov_info,
        "n_bad_frames": int(sum(i["n_bad_frames"] for i in fov_info.values())),
        "n_clock_frames_all_nan": int(np.count_nonzero(np.isnan(act).all(axis=1))),
        "trial_filter": trial_counts,
    })
    session = Session(session_id=eid, subject_id=subject, units=units, trials=trials, modality="calcium",
                      frame_times=frame_clock, activity=act, activity_kind=activity,
                      behavior=behavior, behavior_units=behavior_units,
                      recording_end=float(frame_clock[-1]), source=str(session_path), extra=extra)
    return session.validate()


def load_sessions(eids: Iterable, *, one=None, one_cache_dir=None, skip_errors: bool = False,
                  progress: bool = True, **kwargs) -> list[Session]:
    """:func:`load_session` for each eid (``kwargs`` passed on).

    ``one`` or ``one_cache_dir`` (ONE local mode) choose the data; with neither,
    the public IBL server. ``skip_errors=True`` skips sessions that raise
    :class:`DataError` with a warning naming each; by default it raises.
    """
    one = one if one is not None else make_one(one_cache_dir)
    return load_each(load_session, eids, one, what="IBL mesoscope session", skip_errors=skip_errors,
                     progress=progress, **kwargs)
