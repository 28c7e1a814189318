"""Typed dataset metadata: :class:`DatasetMeta` (``nfm_meta.json``) and :class:`SessionMeta`.

Everything the rows of an nfm dataset share lives here, once: the time grid
(align event, window [s], bin size [s], number of bins), the modality, the
names of the per-bin behaviour and stimulus signals and of the trial columns,
the region vocabulary and one :class:`SessionMeta` per session (subject, unit
table, trial counts, source file).  Every other module reads these fields as
attributes; nothing else parses ``nfm_meta.json``.

The time grid of a *model* can differ from the dataset's (spike data re-binned
at a coarser or finer ``bin_size``): :meth:`DatasetMeta.grid` checks a bin size
against the dataset and returns the ``(window, bin_size, n_bins)`` that the
config and the collator then share.

``format_version`` is the only version field.  Version 1 files (nfm 0.1) load
unchanged.
"""
from __future__ import annotations

import copy
import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable

from .binning import n_bins_for
from .schema import MODALITIES, DataError

META_FILE = "nfm_meta.json"
FORMAT_VERSION = 1
SPLITS = ("train", "validation", "test")
SPLIT_MODES = ("random", "contiguous")


@dataclass
class SessionMeta:
    """What a dataset knows about one session (recording).

    subject_id: animal id; n_units: units (neurons or ROIs) N; n_trials: trials kept;
    n_spikes_in_windows: spike events inside the trial windows (None for 2-photon);
    split_counts: trials per split; units: the unit table (``unit_id``, ``region`` (Allen/Beryl acronym),
    optional ``depth_um``, ``quality``, ...; every column has N entries); source: the file or URI it came from;
    extra: source-specific facts (trial-filter counts, ground-truth weights of a synthetic world, ...).
    """

    subject_id: str
    n_units: int
    units: dict[str, list]
    n_trials: int = 0
    n_spikes_in_windows: int | None = None
    split_counts: dict[str, int] = field(default_factory=dict)
    source: str = "<memory>"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def regions(self) -> list[str]:
        """Region acronym of every unit (N,)."""
        return [str(r) for r in self.units["region"]]


@dataclass
class DatasetMeta:
    """The shared facts of an nfm dataset (see the module docstring).

    Time fields: ``window`` (start, stop) [s] around ``align_event``; ``bin_size`` [s] of the stored per-bin
    columns (behaviour, stimulus, 2-photon activity); ``n_bins`` = window length / bin_size.
    ``regions``: every unit region of the dataset (sorted); a model's region vocabulary is ``["unknown"] +
    regions`` (see :meth:`region_vocab`).
    2-photon: ``frame_period`` [s] the slowest imaging frame period of the sessions (each session's own is in
    ``sessions[sid].extra["frame_period_s"]``); ``calcium_binning``: ``"frames"`` (each bin the mean of the
    frames inside it, bins >= frame period) or ``"interpolate"`` (linear interpolation between frames, an
    explicit opt-in); both None for spike data and for datasets written before they were recorded.
    """

    modality: str
    window: tuple[float, float]
    bin_size: float
    sessions: dict[str, SessionMeta]
    align_event: str = "start_time"
    n_bins: int = 0
    format_version: int = FORMAT_VERSION
    split_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
    split_mode: str = "random"
    seed: int = 42
    behavior_names: list[str] = field(default_factory=list)
    behavior_units: dict[str, str] = field(default_factory=dict)
    stimulus_names: list[str] = field(default_factory=list)
    trial_columns: list[str] = field(default_factory=list)
    trial_label_names: list[str] = field(default_factory=list)
    trial_label_classes: dict[str, list[float]] = field(default_factory=dict)
    regions: list[str] = field(default_factory=list)
    source: str = ""
    frame_period: float | None = None
    calcium_binning: str | None = None
    path: str = field(default="<memory>", compare=False, repr=False)

    def __post_init__(self):
        self.window = (float(self.window[0]), float(self.window[1]))
        self.bin_size = float(self.bin_size)
        if not self.n_bins:
            self.n_bins = n_bins_for(self.window, self.bin_size)
        self.validate()

    # ------------------------------------------------------------ validation
    def _bad(self, name: str, message: str) -> DataError:
        return DataError(self.path, name, message)

    def validate(self) -> "DatasetMeta":
        """Raise :class:`~nfm.data.schema.DataError` naming the file, field and value of any inconsistency."""
        if self.format_version != FORMAT_VERSION:
            raise self._bad("format_version", f"{self.format_version!r} is not {FORMAT_VERSION} (this nfm reads "
                                              f"version {FORMAT_VERSION}; re-run recipes/prepare_data.py)")
        if self.modality not in MODALITIES:
            raise self._bad("modality", f"{self.modality!r} is not one of {MODALITIES}")
        try:
            T = n_bins_for(self.window, self.bin_size)
        except ValueError as err:
            raise self._bad("bin_size", str(err)) from None
        if int(self.n_bins) != T:
            raise self._bad("n_bins", f"{self.n_bins!r} != window {list(self.window)} s / bin_size {self.bin_size} s"
                                      f" = {T}")
        if self.split_mode not in SPLIT_MODES:
            raise self._bad("split_mode", f"{self.split_mode!r} is not one of {SPLIT_MODES}")
        if not self.sessions:
            raise self._bad("sessions", "no session")
        for sid, s in self.sessions.items():
            if not isinstance(sid, str) or not sid:
                raise self._bad("sessions", f"session id {sid!r} must be a non-empty string")
            if int(s.n_units) < 1:
                raise self._bad(f"sessions.{sid}.n_units", f"{s.n_units!r} must be >= 1")
            for col in ("unit_id", "region"):
                if col not in s.units:
                    raise self._bad(f"sessions.{sid}.units.{col}", "required unit column is missing")
            for col, values in s.units.items():
                if len(values) != int(s.n_units):
                    raise self._bad(f"sessions.{sid}.units.{col}", f"{len(values)} entries for n_units={s.n_units}")
        if self.calcium_binning is not None and self.calcium_binning not in ("frames", "interpolate"):
            raise self._bad("calcium_binning", f"{self.calcium_binning!r} is not 'frames' or 'interpolate'")
        if self.frame_period is not None and not float(self.frame_period) > 0:
            raise self._bad("frame_period", f"{self.frame_period!r} must be > 0 seconds")
        for name in self.trial_label_names:
            if name not in self.trial_columns:
                raise self._bad("trial_label_names", f"{name!r} is not a trial column ({self.trial_columns})")
        return self

    # ---------------------------------------------------------------- access
    @property
    def session_ids(self) -> list[str]:
        return list(self.sessions)

    @property
    def subjects(self) -> list[str]:
        """Subject ids in session order, without repeats."""
        return list(dict.fromkeys(s.subject_id for s in self.sessions.values()))

    def session(self, session_id: str) -> SessionMeta:
        """The :class:`SessionMeta` of ``session_id``; ``KeyError`` naming what the dataset has."""
        if session_id not in self.sessions:
            have = list(self.sessions)
            raise KeyError(f"session {session_id!r} is not in the dataset {self.path} (it has {have[:8]}"
                           f"{' ...' if len(have) > 8 else ''})")
        return self.sessions[session_id]

    def region_vocab(self) -> list[str]:
        """``["unknown"] + regions``: the region vocabulary a model built on this dataset starts with."""
        return ["unknown"] + [r for r in dict.fromkeys(map(str, self.regions)) if r != "unknown"]

    @property
    def is_synthetic(self) -> bool:
        return self.source.startswith("synthetic")

    # ------------------------------------------------------------- time grid
    def grid(self, bin_size: float | None = None) -> tuple[tuple[float, float], float, int]:
        """``(window [s], bin_size [s], n_bins)`` of this dataset read at ``bin_size`` (default: its own).

        Spike data can be read at any bin size that divides the window (events are stored, not counts); per-bin
        behaviour and stimulus are averaged over groups of stored bins, so a different bin size must be a whole
        multiple of the stored one when the dataset has them.  2-photon activity is stored per bin (at least one
        imaging frame each, :attr:`frame_period`): it can be read at a whole multiple of the stored bins
        (averaged), never finer.  Raises ``ValueError`` naming the bin sizes (and the frame rate).
        """
        size = self.bin_size if bin_size is None else float(bin_size)
        if abs(size - self.bin_size) > 1e-12:
            ratio = size / self.bin_size
            whole = ratio >= 1 - 1e-9 and abs(ratio - round(ratio)) <= 1e-6
            if self.modality != "spikes" and not whole:
                from .records import frame_rate_error

                if size < self.bin_size and self.frame_period and size < self.frame_period * (1 - 1e-3):
                    raise ValueError(f"{self.path}: " + frame_rate_error(size, float(self.frame_period)))
                raise ValueError(f"bin_size {size} s: {self.modality} activity of {self.path} is stored at "
                                 f"{self.bin_size} s bins and can only be read at whole multiples of them "
                                 "(averaged); re-run recipes/prepare_data.py for another grid")
            if self.modality == "spikes" and (self.behavior_names or self.stimulus_names) and not whole:
                raise ValueError(f"bin_size {size} s must be a whole multiple of the dataset's {self.bin_size} s "
                                 f"bins to re-bin its per-bin behaviour and stimulus ({self.path})")
        return self.window, size, n_bins_for(self.window, size)

    # --------------------------------------------------------------- subsets
    def subset(self, session_ids: Iterable[str]) -> "DatasetMeta":
        """A copy holding only ``session_ids`` (in that order).  The region list is kept whole, so the region
        vocabulary (shared across animals) still covers animals added later."""
        ids = list(session_ids)
        out = copy.copy(self)
        out.sessions = {s: self.session(s) for s in ids}
        return out

    # ---------------------------------------------------------- (de)serialise
    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("sessions", "path")}
        d["window"] = list(self.window)
        d["split_fractions"] = list(self.split_fractions)
        d["sessions"] = {sid: asdict(s) for sid, s in self.sessions.items()}
        if not d["trial_label_classes"]:
            d.pop("trial_label_classes")
        for key in ("frame_period", "calcium_binning"):
            if d[key] is None:
                d.pop(key)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], path: str | os.PathLike = "<memory>") -> "DatasetMeta":
        """Build and validate from the JSON layout; unknown or missing fields raise :class:`DataError`."""
        src = str(path)
        if not isinstance(d, dict):
            raise DataError(src, "<root>", f"must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)} - {"path"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise DataError(src, unknown[0], f"unknown field (known: {sorted(known)})")
        for req in ("modality", "window", "bin_size", "sessions"):
            if req not in d:
                raise DataError(src, req, "required field is missing")
        if not isinstance(d["sessions"], dict):
            raise DataError(src, "sessions", "must map session ids to session entries")
        s_known = {f.name for f in fields(SessionMeta)}
        sessions: dict[str, SessionMeta] = {}
        for sid, entry in d["sessions"].items():
            if not isinstance(entry, dict):
                raise DataError(src, f"sessions.{sid}", "must be an object")
            bad = sorted(set(entry) - s_known)
            if bad:
                raise DataError(src, f"sessions.{sid}.{bad[0]}", f"unknown field (known: {sorted(s_known)})")
            for req in ("subject_id", "n_units", "units"):
                if req not in entry:
                    raise DataError(src, f"sessions.{sid}.{req}", "required field is missing")
            sessions[str(sid)] = SessionMeta(**{**entry, "subject_id": str(entry["subject_id"]),
                                                "n_units": int(entry["n_units"])})
        kw = {k: v for k, v in d.items() if k != "sessions"}
        if "window" in kw:
            w = kw["window"]
            if not isinstance(w, (list, tuple)) or len(w) != 2:
                raise DataError(src, "window", f"{w!r} must be [start, stop] seconds")
        if "trial_label_classes" in kw:
            kw["trial_label_classes"] = {str(k): [float(x) for x in v] for k, v in kw["trial_label_classes"].items()}
        try:
            return cls(sessions=sessions, path=src, **kw)
        except (TypeError, ValueError) as err:
            if isinstance(err, DataError):
                raise
            raise DataError(src, "<root>", str(err)) from None

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``<folder>/nfm_meta.json``."""
        p = Path(folder) / META_FILE
        p.write_text(json.dumps(self.to_dict(), indent=1))
        return p

    @classmethod
    def load(cls, path: str | os.PathLike) -> "DatasetMeta":
        """Read ``nfm_meta.json`` (``path`` is the dataset folder or the file itself)."""
        p = Path(path)
        if p.is_dir():
            p = p / META_FILE
        if not p.is_file():
            raise FileNotFoundError(f"{Path(path)}: not an nfm dataset folder ({META_FILE} missing); make one with "
                                    "recipes/prepare_data.py")
        try:
            raw = json.loads(p.read_text())
        except json.JSONDecodeError as err:
            raise DataError(str(p), "<json>", f"not valid JSON: {err}") from None
        return cls.from_dict(raw, p)


__all__ = ["DatasetMeta", "SessionMeta", "META_FILE", "FORMAT_VERSION", "SPLITS"]
