"""One schema for every source: the :class:`Session`.

A source (IBL through ONE, mesoscope FOVs, suite2p folders, NWB files, the
synthetic worlds) turns a recording into a :class:`Session`; everything after
that (trial alignment, binning, Arrow storage, collation, models) reads only
this object, never a file format.

Units and conventions
---------------------
* All times are **seconds on the session clock** (the clock of the trials
  table and behaviour), float64.
* ``modality == "spikes"``: ``spike_times`` (S,) sorted ascending and
  ``spike_units`` (S,) int64 row indices into the unit table.
* ``modality == "calcium"``: ``frame_times`` (F,) sorted ascending and
  ``activity`` (F, N) float32 (deconvolved events or dF/F, see
  ``activity_kind``), N = number of ROIs in the unit table.
* ``units``: columns of equal length N. Required: ``unit_id`` (str, stable id
  or uuid) and ``region`` (str, Allen CCF acronym at Beryl level, ``"void"``
  or ``"unknown"`` when not known). Optional: ``depth_um`` (float, µm),
  ``x_um``/``y_um`` (float), ``quality`` (int, 1 = good), ``probe`` (str).
* ``trials``: columns of equal length n_trials; event times in seconds,
  ``choice`` in {-1, 0, 1}, ``feedbackType`` in {-1, 1}, contrasts in [0, 1],
  ``probabilityLeft``, ``reaction_time`` (s), ``stimulus`` (id or direction
  in degrees), anything else the source has.
* ``behavior``: name -> ``(times, values)`` continuous signals sampled on
  their own clock (times (K,) seconds, values (K,) float); ``behavior_units``
  gives each signal's unit, e.g. ``{"wheel_speed": "rad/s"}``.
* ``stimulus``: name -> ``(times, values)`` continuous stimulus features
  (e.g. signed contrast on screen, grating direction), same layout; the
  generation model cross-attends to them.

Every check raises :class:`DataError`, which names the file (``source``), the
field and the offending value.  Nothing is silently dropped or re-ordered.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

MODALITIES = ("spikes", "calcium")


class DataError(ValueError):
    """Bad input data. The message names the file, the field and the value."""

    def __init__(self, source: str, field: str, message: str):
        self.source, self.field = str(source), str(field)
        super().__init__(f"{source}: field '{field}': {message}")


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


@dataclass
class Session:
    """One recording session in the nfm schema (see module docstring for units)."""

    session_id: str
    subject_id: str
    units: dict[str, np.ndarray]
    trials: dict[str, np.ndarray]
    modality: str = "spikes"
    spike_times: np.ndarray | None = None
    spike_units: np.ndarray | None = None
    frame_times: np.ndarray | None = None
    activity: np.ndarray | None = None
    activity_kind: str | None = None
    behavior: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    behavior_units: dict[str, str] = field(default_factory=dict)
    stimulus: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    recording_end: float | None = None
    source: str = "<memory>"
    extra: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ basics
    @property
    def n_units(self) -> int:
        return len(self.units["unit_id"])

    @property
    def n_trials(self) -> int:
        return 0 if not self.trials else len(next(iter(self.trials.values())))

    @property
    def n_spikes(self) -> int:
        return 0 if self.spike_times is None else int(len(self.spike_times))

    def error(self, field: str, message: str) -> DataError:
        return DataError(self.source, field, message)

    # -------------------------------------------------------------- validation
    def validate(self) -> "Session":
        """Check every invariant; return ``self`` so calls can be chained."""
        if not self.session_id:
            raise self.error("session_id", "empty session id")
        if self.modality not in MODALITIES:
            raise self.error("modality", f"{self.modality!r} is not one of {MODALITIES}")
        for col in ("unit_id", "region"):
            if col not in self.units:
                raise self.error(f"units.{col}", "required unit column is missing")
        n = self.n_units
        if n == 0:
            raise self.error("units.unit_id", "session has no units")
        for col, values in self.units.items():
            if len(values) != n:
                raise self.error(f"units.{col}", f"length {len(values)} != {n} units")
        ids = np.asarray(self.units["unit_id"]).astype(str)
        if len(np.unique(ids)) != n:
            uniq, counts = np.unique(ids, return_counts=True)
            raise self.error("units.unit_id", f"duplicate unit id {uniq[counts > 1][0]!r}")
        if self.n_trials == 0:
            raise self.error("trials", "no trials (empty session or every trial filtered out)")
        for col, values in self.trials.items():
            if len(values) != self.n_trials:
                raise self.error(f"trials.{col}", f"length {len(values)} != {self.n_trials} trials")
        if self.modality == "spikes":
            self._validate_spikes()
        else:
            self._validate_calcium()
        for name, (t, v) in [*self.behavior.items(), *self.stimulus.items()]:
            t, v = np.asarray(t), np.asarray(v)
            if t.ndim != 1 or v.shape[:1] != t.shape:
                raise self.error(f"behavior.{name}", f"times shape {t.shape} vs values shape {v.shape}")
            if len(t) > 1 and np.any(np.diff(t) < 0):
                i = _first_bad(np.diff(t) < 0)
                raise self.error(f"behavior.{name}.times", f"not sorted at index {i + 1}: {t[i + 1]!r} < {t[i]!r}")
        return self

    def _validate_spikes(self) -> None:
        st, su = self.spike_times, self.spike_units
        if st is None or su is None:
            raise self.error("spike_times", "spike modality needs spike_times and spike_units")
        st, su = np.asarray(st), np.asarray(su)
        if st.ndim != 1 or st.shape != su.shape:
            raise self.error("spike_units", f"shape {su.shape} does not match spike_times {st.shape}")
        if len(st) == 0:
            raise self.error("spike_times", "session has no spikes")
        bad = ~np.isfinite(st)
        if bad.any():
            i = _first_bad(bad)
            raise self.error("spike_times", f"non-finite value {st[i]!r} at index {i}")
        if st[0] < 0:
            i = _first_bad(st < 0)
            raise self.error("spike_times", f"negative time {st[i]!r} at index {i}")
        if len(st) > 1:
            dec = np.diff(st) < 0
            if dec.any():
                i = _first_bad(dec)
                raise self.error("spike_times", f"not sorted at index {i + 1}: {st[i + 1]!r} < {st[i]!r}")
        if self.recording_end is not None and st[-1] > self.recording_end:
            i = _first_bad(st > self.recording_end)
            raise self.error("spike_times", f"time {st[i]!r} at index {i} is after the recording end {self.recording_end!r} s")
        if not np.issubdtype(su.dtype, np.integer):
            raise self.error("spike_units", f"dtype {su.dtype} is not an integer type")
        out = (su < 0) | (su >= self.n_units)
        if out.any():
            i = _first_bad(out)
            raise self.error("spike_units", f"cluster index {su[i]!r} at spike {i} is outside 0..{self.n_units - 1}")

    def _validate_calcium(self) -> None:
        ft, act = self.frame_times, self.activity
        if ft is None or act is None:
            raise self.error("activity", "calcium modality needs frame_times and activity")
        ft, act = np.asarray(ft), np.asarray(act)
        if act.ndim != 2 or act.shape != (len(ft), self.n_units):
            raise self.error("activity", f"shape {act.shape} != (frames {len(ft)}, units {self.n_units})")
        bad = ~np.isfinite(ft)
        if bad.any():
            i = _first_bad(bad)
            raise self.error("frame_times", f"non-finite value {ft[i]!r} at frame {i}")
        if len(ft) > 1 and np.any(np.diff(ft) <= 0):
            i = _first_bad(np.diff(ft) <= 0)
            raise self.error("frame_times", f"not strictly increasing at frame {i + 1}: {ft[i + 1]!r} <= {ft[i]!r}")

    # ----------------------------------------------------------- metadata dump
    def unit_table(self) -> dict[str, list]:
        """JSON-friendly unit table (lists of python scalars)."""
        out = {}
        for col, values in self.units.items():
            arr = np.asarray(values)
            out[col] = arr.astype(str).tolist() if arr.dtype.kind in "OUS" else arr.tolist()
        return out
