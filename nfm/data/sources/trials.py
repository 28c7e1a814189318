"""Trial-aligned binned spike counts (``.npz``) -> :class:`nfm.data.schema.Session`.

Many public recordings are distributed already cut into trials and binned: one
count array per session, a few bins after (or around) an event of each trial.
This source reads them into the nfm schema so that they go through the same
path as every other source (``prepare`` -> Arrow rows -> collator).

The nfm trial-count layout (``layout="nfm"``)
----------------------------------------------
One ``.npz`` per session, read with ``np.load(path, allow_pickle=False)``:

=================  ========================  =====================================================
key                shape / dtype             meaning
=================  ========================  =====================================================
``counts``         (trials, units, bins) int spike counts per bin (any integer dtype, or floats
                                             holding whole numbers); >= 0
``bin_starts``     (trials, bins) float      start of each bin, seconds on the session clock;
                                             strictly increasing, equal widths within a trial;
                                             trials in time order, not overlapping
``unit_regions``   (units,) str              brain region of each unit (Allen acronym)
``bin_size``       () float, optional        seconds; default: the bins' width, read from
                                             ``bin_starts`` (median step, rounded to 1 µs)
``unit_ids``       (units,) str, optional    stable unit ids; default ``unit0000``, ``unit0001``...
``subject``        () str, optional          animal id (default: the file stem)
``session``        () str, optional          session id (default: the file stem)
``align_event``    () str, optional          name of the event at the first bin start of every trial
                                             (e.g. ``stimOn_times``); the trials table gets that
                                             column too
``trial_<name>``   (trials,) or (trials, 1)  per-trial variable ``<name>`` (numeric), e.g.
                                             ``trial_choice``, ``trial_contrastLeft``
=================  ========================  =====================================================

Any other key is refused (a typo would otherwise drop a variable silently).

The Steinmetz et al. (2019) layout (``layout="steinmetz"``)
-----------------------------------------------------------
The course subset in ``shared/data/steinmetz_2019`` (see ``datasets/steinmetz_2019/README.md``):
``spks`` (trials, neurons, bins) -> counts, ``time`` (trials, bins) -> bin starts, ``brain_area``
(neurons,) -> regions, ``mouse_name`` -> subject, session id ``<mouse_name>_<date_exp>``; trial
variables (stored as (trials,) or (trials, 1)): ``contrast_left`` -> ``contrastLeft``,
``contrast_right`` -> ``contrastRight`` (in [0, 1]), ``feedback_type`` -> ``feedbackType``
(+1 reward, -1 error), plus derived ``signed_contrast = contrastRight - contrastLeft`` (as the IBL
source) and ``choice`` (:func:`derived_choice`).  The first bin starts at stimulus onset, so the
trials table also has ``stimOn_times``.  Other keys of such a file are listed in
``session.extra["ignored_keys"]``.

``layout="auto"`` (default) picks ``nfm`` when the file has ``counts``, ``steinmetz`` when it has
``spks``.

The Session
-----------
* Trials: ``start_time`` = first bin start, ``stop_time`` = ``start_time + bins * bin_size`` (s), the
  align event column if any, and the trial variables.  Align on ``start_time`` with window
  ``(0, bins * bin_size)`` (what ``prepare("trials", ...)`` does by default).
* Spikes: each count becomes that many events at its bin's centre,
  ``start_time + (b + 0.5) * bin_size`` (the grid of the first bin start, so that small rounding of the
  stored bin starts cannot move an event), ordered by trial, bin, unit.  Re-binning at the source bin
  size, or any whole multiple of it, on a window on that grid, gives the stored counts exactly; finer
  or misaligned bins would invent structure and are refused by :func:`dataset_grid` (which
  ``prepare`` calls).  The source bin size is ``session.extra["source_bin_size"]`` (s).
* Units: ``unit_id`` and ``region`` (kept as written in the file).
* ``recording_end`` = the last trial's ``stop_time``: nothing exists between trials, so windows must
  stay inside ``[0, bins * bin_size]`` of each trial (:func:`dataset_grid`).

Every bad input raises :class:`~nfm.data.schema.DataError` naming the file, the field and the value.
Building events is vectorised (``np.nonzero`` + ``np.repeat`` over the whole count array).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..schema import DataError, Session

LAYOUTS = ("auto", "nfm", "steinmetz")
#: jitter allowed in bin widths and in each bin start's offset from the trial's regular grid, as a fraction of
#: the bin (stored bin starts are often rounded); events sit at bin centres on that grid, so small jitter
#: cannot move one across bins; 2% as the continuous ``binned`` source
WIDTH_TOLERANCE = 0.02
#: keys of the nfm layout besides ``trial_<name>``
NFM_KEYS = ("counts", "bin_starts", "unit_regions", "bin_size", "unit_ids", "subject", "session", "align_event")
#: Steinmetz per-trial key -> nfm trial column (IBL names, so the evaluation tasks find them)
STEINMETZ_TRIAL_KEYS = {"contrast_left": "contrastLeft", "contrast_right": "contrastRight",
                        "feedback_type": "feedbackType"}
STEINMETZ_KEYS = ("spks", "time", "brain_area", "mouse_name", "date_exp", *STEINMETZ_TRIAL_KEYS)


# ----------------------------------------------------------------------------------------- helpers
def _per_trial(values, n_trials: int, source: str, field: str) -> np.ndarray:
    """A per-trial array of shape (trials,) or (trials, 1) -> (trials,) float64; anything else raises."""
    v = np.asarray(values)
    if v.ndim == 2 and v.shape[1] == 1:
        v = v[:, 0]
    if v.ndim != 1 or v.shape[0] != n_trials:
        raise DataError(source, field, f"shape {v.shape} is not ({n_trials},) or ({n_trials}, 1) (one value per trial)")
    if v.dtype.kind not in "biuf":
        raise DataError(source, field, f"non-numeric per-trial values of dtype {v.dtype} (first value {v.flat[0]!r})")
    return v.astype(np.float64)


def _scalar_str(f, key: str, source: str) -> str:
    v = f[key]
    if v.ndim != 0 or v.dtype.kind not in "US":
        raise DataError(source, key, f"expected a scalar string, got shape {v.shape} dtype {v.dtype}")
    s = v.item()
    s = s.decode() if isinstance(s, bytes) else str(s)
    if not s.strip():
        raise DataError(source, key, "empty string")
    return s.strip()


def _strings(values, n: int, source: str, field: str) -> np.ndarray:
    v = np.asarray(values)
    if v.ndim != 1 or v.shape[0] != n:
        raise DataError(source, field, f"shape {v.shape} does not match {n} units of the counts")
    if v.dtype.kind == "S":
        v = np.char.decode(v, "utf-8")
    if v.dtype.kind != "U":
        raise DataError(source, field, f"dtype {v.dtype} is not a string type")
    v = np.char.strip(v)
    empty = v == ""
    if empty.any():
        raise DataError(source, field, f"empty string at unit {int(np.flatnonzero(empty)[0])}")
    return v


def derived_choice(contrast_left, contrast_right, feedback) -> np.ndarray:
    """The animal's choice (trials,) float64 from contrasts and feedback, where it is defined.

    Sign convention of nfm's IBL source (ALF ``_ibl_trials.choice``): **+1 = the left side was chosen**
    (wheel turned clockwise, which brings a left stimulus to the centre), **-1 = right**.  Where the two
    contrasts differ the correct side is the higher one: choice = that side when ``feedback == +1``,
    the other side when ``feedback == -1``.  Where they are equal (including both zero) the feedback does
    not tell the side: NaN (the evaluation tasks leave NaN labels out).  Caveat (Steinmetz et al.
    2019): an error may also be a missed response (no movement), which this rule labels as the other
    side; the data hold no explicit choice to tell them apart.
    """
    cl, cr, fb = (np.asarray(x, dtype=np.float64) for x in (contrast_left, contrast_right, feedback))
    higher = np.where(cl > cr, 1.0, -1.0)
    out = np.where(fb > 0, higher, -higher)
    return np.where(cl != cr, out, np.nan)


# ------------------------------------------------------------------------------------- the Session
def session_from_trial_counts(
    counts: np.ndarray,
    bin_starts: np.ndarray,
    regions: np.ndarray,
    *,
    session_id: str,
    subject_id: str,
    bin_size: float | None = None,
    trial_variables: dict[str, np.ndarray] | None = None,
    unit_ids: np.ndarray | None = None,
    align_event: str | None = None,
    source: str = "<memory>",
    fields: dict[str, str] | None = None,
    extra: dict | None = None,
) -> Session:
    """Session from trial-aligned counts (see the module docstring).

    Args:
        counts: (trials, units, bins) non-negative whole-number spike counts.
        bin_starts: (trials, bins) seconds on the session clock, equal widths within each trial.
        regions: (units,) str region of each unit.
        bin_size: seconds; default the bins' width read from ``bin_starts`` (median, rounded to 1 µs).
        trial_variables: name -> (trials,) or (trials, 1) numeric per-trial values (trials columns).
        unit_ids: (units,) str; default ``unit0000``...
        align_event: optional name of the event at each trial's first bin start (an extra trials column).
        source: the file, named in every error.  ``fields``: the file's key of each of ``counts``,
            ``bin_starts``, ``regions``, ``bin_size`` (errors name the file's keys, e.g. ``spks``).
    """
    names = {"counts": "counts", "bin_starts": "bin_starts", "regions": "unit_regions", "bin_size": "bin_size",
             **(fields or {})}
    c = np.asarray(counts)
    if c.ndim != 3:
        raise DataError(source, names["counts"], f"shape {c.shape}: expected 3 dims (trials, units, bins)")
    n, N, T = c.shape
    if n == 0 or N == 0 or T == 0:
        raise DataError(source, names["counts"], f"shape {c.shape} has an empty dimension (trials, units, bins)")
    t = np.asarray(bin_starts)
    if t.shape != (n, T):
        raise DataError(source, names["bin_starts"],
                        f"shape {t.shape} does not match counts {c.shape}: expected (trials {n}, bins {T})")
    if t.dtype.kind not in "iuf":
        raise DataError(source, names["bin_starts"], f"dtype {t.dtype} is not numeric")
    t = t.astype(np.float64)
    regions = _strings(regions, N, source, names["regions"])
    ids = (np.array([f"unit{i:04d}" for i in range(N)]) if unit_ids is None
           else _strings(unit_ids, N, source, "unit_ids"))

    # ---- counts: whole, finite, non-negative
    if c.dtype.kind == "b" or c.dtype.kind not in "iuf":
        raise DataError(source, names["counts"], f"dtype {c.dtype} is not a count type (integers)")
    if c.dtype.kind == "f":
        bad = ~np.isfinite(c)
        if bad.any():
            k, u, b = np.argwhere(bad)[0]
            raise DataError(source, names["counts"], f"non-finite count {c[k, u, b].item()!r} at trial {k}, unit {u}, bin {b}")
    if c.dtype.kind in "if":
        neg = c < 0
        if neg.any():
            k, u, b = np.argwhere(neg)[0]
            raise DataError(source, names["counts"], f"negative count {c[k, u, b].item()!r} at trial {k}, unit {u}, bin {b}")
    if c.dtype.kind == "f":
        frac = c != np.round(c)
        if frac.any():
            k, u, b = np.argwhere(frac)[0]
            raise DataError(source, names["counts"],
                            f"non-integer count {c[k, u, b].item()!r} at trial {k}, unit {u}, bin {b} (dtype {c.dtype})")

    # ---- bin starts: finite, increasing, equal widths, trials in order and apart
    bad = ~np.isfinite(t)
    if bad.any():
        k, b = np.argwhere(bad)[0]
        raise DataError(source, names["bin_starts"], f"non-finite bin start {t[k, b].item()!r} at trial {k}, bin {b}")
    if t[:, 0].min() < 0:
        k = int(np.argmin(t[:, 0]))
        raise DataError(source, names["bin_starts"], f"negative bin start {t[k, 0].item()!r} s at trial {k}, bin 0 "
                                                     "(times are seconds on the session clock, >= 0)")
    steps = np.diff(t, axis=1)
    if T > 1:
        nonpos = steps <= 0
        if nonpos.any():
            k, b = np.argwhere(nonpos)[0]
            raise DataError(source, names["bin_starts"],
                            f"not increasing at trial {k}, bin {b + 1}: {t[k, b + 1].item()!r} s after {t[k, b].item()!r} s")
    if bin_size is None:
        if T < 2:
            raise DataError(source, names["bin_size"], "missing: one bin per trial, so the bin width cannot be "
                                                       "read from the bin starts; store it")
        bs = float(round(float(np.median(steps)), 6))
    else:
        bs = float(bin_size)
        if not (np.isfinite(bs) and bs > 0):
            raise DataError(source, names["bin_size"], f"value {bin_size!r} is not a positive number of seconds")
    if T > 1:
        off = np.abs(steps - bs) > WIDTH_TOLERANCE * bs
        if off.any():
            k, b = np.argwhere(off)[0]
            raise DataError(source, names["bin_starts"],
                            f"bins of unequal width at trial {k}, bin {b}: {steps[k, b].item()!r} s != bin size {bs!r} s")
        # widths each within tolerance can still drift: every bin start must sit on the trial's regular grid
        drift = np.abs(t - t[:, :1] - bs * np.arange(T)) > WIDTH_TOLERANCE * bs
        if drift.any():
            k, b = np.argwhere(drift)[0]
            raise DataError(source, names["bin_starts"],
                            f"bins of unequal width in trial {k}: bin {b} starts at {t[k, b].item()!r} s, "
                            f"{(t[k, b] - t[k, 0] - b * bs).item():+.3g} s off the grid of {bs!r} s bins from the "
                            "trial's first bin start")
    length = T * bs
    start = t[:, 0].copy()
    stop = start + length
    if n > 1:
        overlap = start[1:] < stop[:-1] - WIDTH_TOLERANCE * bs
        if overlap.any():
            k = int(np.flatnonzero(overlap)[0]) + 1
            raise DataError(source, names["bin_starts"],
                            f"trial {k} starts at {start[k].item()!r} s, before trial {k - 1} ends at {stop[k - 1].item()!r} s "
                            "(trials must be in time order and not overlap)")

    # ---- trial variables
    trials: dict[str, np.ndarray] = {"start_time": start, "stop_time": stop}
    if align_event:
        if align_event in trials:
            raise DataError(source, "align_event", f"{align_event!r} clashes with a built-in trials column")
        trials[align_event] = start.copy()
    for name, values in (trial_variables or {}).items():
        if name in trials:
            raise DataError(source, name, f"trial variable {name!r} clashes with the trials column of that name")
        trials[name] = _per_trial(values, n, source, name)

    # ---- events at bin centres, ordered by trial, bin, unit (vectorised: no loop per trial/unit/spike)
    ctb = c.transpose(0, 2, 1)  # (trials, bins, units): row-major order = time order within a trial
    k, b, u = np.nonzero(ctb)
    reps = ctb[k, b, u].astype(np.int64)
    spike_times = np.repeat(start[k] + (b + 0.5) * bs, reps)
    spike_units = np.repeat(u.astype(np.int64), reps)
    info = {"source_bin_size": bs, "n_bins_per_trial": int(T), "trial_window": [0.0, float(length)],
            "trials_source": "trial_counts", **(extra or {})}
    return Session(
        session_id=session_id, subject_id=subject_id,
        units={"unit_id": ids, "region": regions}, trials=trials, modality="spikes",
        spike_times=spike_times, spike_units=spike_units, recording_end=float(stop[-1]),
        source=source, extra=info,
    ).validate()


# ------------------------------------------------------------------------------------------ files
def detect_layout(files: Sequence[str], source: str) -> str:
    """``"nfm"`` if the file has ``counts``, ``"steinmetz"`` if it has ``spks``; else :class:`DataError`."""
    if "counts" in files:
        return "nfm"
    if "spks" in files:
        return "steinmetz"
    raise DataError(source, "counts", f"not a trial-count file: neither 'counts' (nfm layout) nor 'spks' "
                                      f"(steinmetz layout) is among its keys {sorted(files)}")


def _require(f, keys, source: str, layout: str) -> None:
    for key in keys:
        if key not in f.files:
            raise DataError(source, key, f"required array missing for the {layout} layout (file has {sorted(f.files)})")


def load_npz(path: str | Path, *, layout: str = "auto", session_id: str | None = None,
             subject_id: str | None = None) -> Session:
    """One session from a trial-count ``.npz`` (layouts: see the module docstring).

    ``session_id`` / ``subject_id`` override the file's ids (nfm layout: ``session`` / ``subject``, else the
    file stem; steinmetz: ``<mouse_name>_<date_exp>`` / ``mouse_name``).
    """
    path = Path(path)
    source = str(path)
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r} is not one of {LAYOUTS}")
    with np.load(path, allow_pickle=False) as f:
        files = list(f.files)
        layout = detect_layout(files, source) if layout == "auto" else layout
        if layout == "nfm":
            _require(f, ("counts", "bin_starts", "unit_regions"), source, layout)
            unknown = [k for k in files if k not in NFM_KEYS and not k.startswith("trial_")]
            if unknown:
                raise DataError(source, unknown[0], f"unknown key of the nfm trial-count layout (keys: "
                                                    f"{list(NFM_KEYS)} and trial_<name>)")
            if "bin_size" in files and f["bin_size"].shape != ():
                raise DataError(source, "bin_size", f"shape {f['bin_size'].shape}: expected a scalar (seconds)")
            trial_vars = {k[len("trial_"):]: f[k] for k in files if k.startswith("trial_")}
            empty = [k for k in trial_vars if not k]
            if empty:
                raise DataError(source, "trial_", "per-trial key without a variable name")
            kw = dict(
                counts=f["counts"], bin_starts=f["bin_starts"], regions=f["unit_regions"],
                bin_size=float(f["bin_size"]) if "bin_size" in files else None,
                unit_ids=f["unit_ids"] if "unit_ids" in files else None,
                align_event=_scalar_str(f, "align_event", source) if "align_event" in files else None,
                trial_variables=trial_vars,
                session_id=session_id or (_scalar_str(f, "session", source) if "session" in files else path.stem),
                subject_id=subject_id or (_scalar_str(f, "subject", source) if "subject" in files else path.stem),
                extra={"layout": "nfm"},
            )
        elif layout == "steinmetz":
            _require(f, ("spks", "time", "brain_area", "mouse_name", *STEINMETZ_TRIAL_KEYS), source, layout)
            spks = f["spks"]
            if spks.ndim != 3:
                raise DataError(source, "spks", f"shape {spks.shape}: expected 3 dims (trials, neurons, bins)")
            n = spks.shape[0]
            tv = {dst: _per_trial(f[src], n, source, src) for src, dst in STEINMETZ_TRIAL_KEYS.items()}
            for src in ("contrast_left", "contrast_right"):
                v = tv[STEINMETZ_TRIAL_KEYS[src]]
                bad = ~np.isfinite(v) | (v < 0) | (v > 1)
                if bad.any():
                    i = int(np.flatnonzero(bad)[0])
                    raise DataError(source, src, f"contrast {v[i].item()!r} at trial {i} is not in [0, 1]")
            fb = tv["feedbackType"]
            bad = ~np.isin(fb, (-1.0, 1.0))
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise DataError(source, "feedback_type", f"value {fb[i].item()!r} at trial {i} is not +1 (reward) or -1 (error)")
            tv["signed_contrast"] = tv["contrastRight"] - tv["contrastLeft"]
            tv["choice"] = derived_choice(tv["contrastLeft"], tv["contrastRight"], fb)
            mouse = _scalar_str(f, "mouse_name", source)
            date = _scalar_str(f, "date_exp", source) if "date_exp" in files else None
            kw = dict(
                counts=spks, bin_starts=f["time"], regions=f["brain_area"], trial_variables=tv,
                align_event="stimOn_times",
                session_id=session_id or (f"{mouse}_{date}" if date else f"{mouse}_{path.stem}"),
                subject_id=subject_id or mouse,
                fields={"counts": "spks", "bin_starts": "time", "regions": "brain_area", "bin_size": "time"},
                extra={"layout": "steinmetz", "date_exp": date, "file": path.name,
                       "ignored_keys": sorted(k for k in files if k not in STEINMETZ_KEYS),
                       "choice_rule": "derived: higher-contrast side if feedback +1, else the other side; "
                                      "NaN where contrasts are equal; +1 = left, -1 = right"},
            )
        else:
            raise ValueError(f"layout {layout!r} is not one of {LAYOUTS}")
    return session_from_trial_counts(source=source, **kw)


def load_sessions(paths: Sequence[str | Path], *, layout: str = "auto", session_ids: Sequence[str] | None = None,
                  subject_ids: Sequence[str] | None = None) -> list[Session]:
    """One session per file (``layout``: ``auto``, ``nfm`` or ``steinmetz``); session ids must be unique."""
    paths = list(paths)
    if not paths:
        raise ValueError("no trial-count files given")
    for name, ids in (("session_ids", session_ids), ("subject_ids", subject_ids)):
        if ids is not None and len(ids) != len(paths):
            raise ValueError(f"{name}: {len(ids)} ids for {len(paths)} files")
    sessions = [load_npz(p, layout=layout, session_id=session_ids[i] if session_ids else None,
                         subject_id=subject_ids[i] if subject_ids else None) for i, p in enumerate(paths)]
    seen: dict[str, str] = {}
    for s in sessions:
        if s.session_id in seen:
            raise DataError(s.source, "session", f"session id {s.session_id!r} is also the id of {seen[s.session_id]}")
        seen[s.session_id] = s.source
    return sessions


# ------------------------------------------------------------------------------------------ grid
def dataset_grid(sessions: Sequence[Session], window: tuple[float, float] | None = None,
                 bin_size: float | None = None) -> tuple[tuple[float, float], float]:
    """``(window [s], bin_size [s])`` to align trial-count sessions on ``start_time``, checked for exactness.

    Defaults: window ``(0, bins * source bin size)`` and the source bin size (both must then agree across
    sessions, else ``ValueError`` asking for ``--window`` / ``--bin_size``).  Raises ``ValueError`` naming the
    session when ``bin_size`` is not a whole multiple of a session's source bin size (finer bins would split
    counts that sit at bin centres: half the bins empty), when a window edge is not on that session's bin
    grid, or when the window reaches outside ``[0, bins * bin_size]`` of its trials (nothing was recorded
    there: the counts would be silently zero).
    """
    sizes = {s.session_id: float(s.extra["source_bin_size"]) for s in sessions}
    lengths = {s.session_id: float(s.extra["trial_window"][1]) for s in sessions}
    if bin_size is None:
        if len(set(sizes.values())) > 1:
            raise ValueError(f"sessions have different source bin sizes {sizes} (s): pass --bin_size, a whole "
                             "multiple of each")
        bin_size = next(iter(sizes.values()))
    if window is None:
        if len({round(v, 9) for v in lengths.values()}) > 1:
            raise ValueError(f"sessions have trials of different lengths {lengths} (s): pass --window START END "
                             "inside every session's trials")
        window = (0.0, next(iter(lengths.values())))
    window = (float(window[0]), float(window[1]))
    bin_size = float(bin_size)
    for sid, src in sizes.items():
        ratio = bin_size / src
        if ratio < 1 - 1e-9 or abs(ratio - round(ratio)) > 1e-6:
            raise ValueError(f"bin_size {bin_size:g} s is not a whole multiple of session {sid}'s source bins of "
                             f"{src:g} s: its counts exist only at that resolution (re-binning at a whole multiple "
                             "is exact; finer or fractional bins would be made up)")
        for edge in window:
            q = edge / src
            if abs(q - round(q)) > 1e-6:
                raise ValueError(f"window edge {edge:g} s is not on session {sid}'s grid of {src:g} s bins")
        if window[0] < -1e-9 or window[1] > lengths[sid] + 1e-9 * max(1.0, lengths[sid]):
            raise ValueError(f"window {list(window)} s reaches outside session {sid}'s trials, which hold counts "
                             f"only from 0 to {lengths[sid]:g} s after their first bin start")
    return window, bin_size
