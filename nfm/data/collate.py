"""Rows of an nfm dataset -> one model batch (torch tensors).

Batch keys (B trials, T bins, N = most units of any session in the batch,
E = most spike events of any trial in the batch):

* ``spikes`` (B, T, N) float32: spike counts per bin, or 2-photon activity.
* ``unit_mask`` (B, N) bool: real units (padding is False).
* ``unit_region`` (B, N) long: index into ``region_vocab`` (0 = unknown/pad).
* ``session_ids``: list of B session-id strings.
* ``event_times`` (B, E) float32 seconds from the window start; ``event_units``
  (B, E) long; ``event_mask`` (B, E) bool. Ordered by time, then unit.
* ``behavior`` (B, T, K) float32 in ``behavior_names`` order, NaN if absent.
* ``stimulus`` (B, T, D) float32 in ``stimulus_names`` order, NaN if absent (a missing
  variable is never fed as an observed 0: the model masks it).  With
  :meth:`NfmCollator.for_config` both are in the *model's* variable order
  (``config.behavior_names`` / ``stimulus_names``, through an optional
  ``modality_map``), NaN for a variable the dataset lacks.
* ``trial_labels`` (B, L) float32 in ``trial_label_names`` order, NaN if absent.
* ``trial_id`` (B,) long.
* ``valid_mask`` (B, T, N) bool, 2-photon only: False where activity was NaN
  (bad frames) — those entries are set to 0 in ``spikes`` and must not be scored.
* ``bin_size`` (float): seconds per bin T (the grid the batch was binned on).
* ``mask_mode`` (str), only with ``draw_mask_mode``: the MtM mask mode of the batch, drawn here so that a
  compiled model forward has no data-dependent draw (see ``docs/performance.md``).

Input: a ``pyarrow.Table`` of the rows (the fast path: whole Arrow columns to numpy, no Python object per spike;
what :class:`ArrowRows` hands a ``DataLoader``), a list of one-row tables, or a list of row dicts with Python
values (``datasets.Dataset`` rows).  All give the same batch.

Binning is one ``np.bincount`` over the whole batch.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from .binning import bin_index, mean_bins
from .meta import DatasetMeta

UNKNOWN_REGION = "unknown"


class NfmCollator:
    """Callable turning a list of dataset rows into the model batch.

    Args:
        meta: the dataset's :class:`~nfm.data.meta.DatasetMeta`.
        region_vocab: region names of the model (index 0 must be ``unknown``); default ``meta.region_vocab()``.
        bin_size: seconds; default the dataset's.  Spike data can be re-binned at any size that divides the
            window; see :meth:`DatasetMeta.grid` for the rules.  The batch carries ``bin_size`` so that a model
            refuses batches on another grid than its config's.
        behavior_names / stimulus_names: the variables of the batch's ``behavior`` / ``stimulus`` channels, in
            order (default: the dataset's); a name the dataset lacks is NaN (absent).
        modality_map: ``{name in behavior_names/stimulus_names: the dataset's name for it}`` (variables named
            differently in another rig, e.g. ``{"signed_contrast": "contrast"}``).
        draw_mask_mode: MtM mask modes (e.g. ``config.active_mask_modes``) to draw one of per batch into
            ``batch["mask_mode"]`` (default None: no such key, the model draws); uniformly unless
            ``draw_mask_probs`` (one probability per mode, e.g. ``config.mask_mode_probabilities``).
            ``seed``: of that draw.

    Build it from a model config with :meth:`for_config` (its region vocabulary and time grid), so that the
    bin size flows dataset -> config -> collator from one place.
    """

    def __init__(self, meta: DatasetMeta, region_vocab: Sequence[str] | None = None, bin_size: float | None = None,
                 behavior_names: Sequence[str] | None = None, stimulus_names: Sequence[str] | None = None,
                 modality_map: dict[str, str] | None = None, draw_mask_mode: Sequence[str] | None = None,
                 draw_mask_probs: Sequence[float] | None = None, seed: int = 0):
        if not isinstance(meta, DatasetMeta):
            raise TypeError(f"NfmCollator needs a DatasetMeta (nfm.data.meta), got {type(meta).__name__}")
        self.meta = meta
        self.window, self.bin_size, self.n_bins = meta.grid(bin_size)
        # per-bin behaviour/stimulus is stored at the dataset's bins: coarser bins average groups of them
        self.group = max(1, int(round(self.bin_size / meta.bin_size)))
        self.region_vocab = list(region_vocab) if region_vocab is not None else meta.region_vocab()
        if not self.region_vocab or self.region_vocab[0] != UNKNOWN_REGION:
            raise ValueError(f"region_vocab must start with {UNKNOWN_REGION!r}, got {self.region_vocab[:3]}")
        index = {r: i for i, r in enumerate(self.region_vocab)}
        self.session_regions = {sid: np.array([index.get(r, 0) for r in m.regions], dtype=np.int64)
                                for sid, m in meta.sessions.items()}
        self.n_units = {sid: m.n_units for sid, m in meta.sessions.items()}
        self.behavior_names = list(meta.behavior_names if behavior_names is None else behavior_names)
        self.stimulus_names = list(meta.stimulus_names if stimulus_names is None else stimulus_names)
        self.modality_map = dict(modality_map or {})
        for name, col in self.modality_map.items():
            if name not in self.behavior_names + self.stimulus_names:
                raise ValueError(f"modality_map {name}={col}: {name!r} is not a behaviour or stimulus variable of "
                                 f"the model ({self.behavior_names + self.stimulus_names})")
            kind, have = (("behaviour", meta.behavior_names) if name in self.behavior_names
                          else ("stimulus", meta.stimulus_names))
            if col not in have:
                raise ValueError(f"modality_map {name}={col}: the dataset {meta.path} has no {kind} variable "
                                 f"{col!r} (its {kind} variables: {sorted(have)})")
        self.trial_label_names = list(meta.trial_label_names)
        self.mask_modes = list(draw_mask_mode) if draw_mask_mode else None
        self.mask_probs = None
        if draw_mask_probs is not None:
            p = np.asarray(draw_mask_probs, dtype=np.float64)
            if self.mask_modes is None or p.shape != (len(self.mask_modes),) or (p < 0).any() \
                    or not np.isclose(p.sum(), 1.0):
                raise ValueError(f"draw_mask_probs={list(draw_mask_probs)}: needs one probability >= 0 per mode of "
                                 f"draw_mask_mode={self.mask_modes}, summing to 1")
            self.mask_probs = p
        self._rng = np.random.default_rng(seed)

    @classmethod
    def for_config(cls, meta: DatasetMeta, config, modality_map: dict[str, str] | None = None,
                   **kwargs) -> "NfmCollator":
        """The collator of a model: its ``config.region_vocab``, the time grid of the dataset's sessions in the
        config (``config.grid_of``: the primary ``bin_size`` unless they have their own ``session_grid``) and
        the model's behaviour / stimulus variables (``modality_map`` for differently named ones).  A trial
        window that differs from the model's raises ``ValueError``.  ``kwargs``: other constructor arguments
        (``draw_mask_mode``, ``seed``)."""
        known = [s for s in meta.sessions if s in config.session_n_units]
        grids = {config.grid_of(s) for s in known} or {config.grid_of("")}
        if len(grids) > 1:
            raise ValueError(f"the sessions of {meta.path} have {len(grids)} different time grids in the model; "
                             "collate them separately")
        window, bin_size, _ = grids.pop()
        if any(abs(a - b) > 1e-9 for a, b in zip(window, meta.window)):
            raise ValueError(f"the model was built for trial window {list(window)} s but the dataset {meta.path} "
                             f"has {list(meta.window)} s")
        return cls(meta, region_vocab=config.region_vocab, bin_size=bin_size,
                   behavior_names=config.behavior_names, stimulus_names=config.stimulus_names,
                   modality_map=modality_map, **kwargs)

    def __call__(self, rows) -> dict[str, Any]:
        cols = _columns(rows)
        B, T = cols.n_rows, self.n_bins
        sids = cols.session_ids()
        unknown = [s for s in sids if s not in self.n_units]
        if unknown:
            raise KeyError(f"session {unknown[0]!r} is not in this dataset's meta")
        n_units = np.array([self.n_units[s] for s in sids], dtype=np.int64)
        N = int(n_units.max()) if B else 0
        unit_mask = np.arange(N)[None, :] < n_units[:, None]
        unit_region = np.zeros((B, N), dtype=np.int64)
        for s in dict.fromkeys(sids):  # one step per distinct session (a batch holds one, usually)
            rows_s = [b for b, x in enumerate(sids) if x == s]
            unit_region[rows_s, : self.n_units[s]] = self.session_regions[s]
        batch: dict[str, Any] = {"session_ids": sids, "unit_mask": torch.from_numpy(unit_mask),
                                 "unit_region": torch.from_numpy(unit_region)}
        if self.meta.modality == "spikes":
            batch.update(self._spikes(cols, B, T, N))
        else:
            batch.update(self._activity(cols, B, T, N))
        batch["behavior"] = torch.from_numpy(self._per_bin(cols, "behavior_", self.behavior_names, B, T, np.nan))
        batch["stimulus"] = torch.from_numpy(self._per_bin(cols, "stimulus_", self.stimulus_names, B, T, np.nan))
        labels = np.stack([cols.scalar(f"trial_{c}") for c in self.trial_label_names], 1) \
            if self.trial_label_names else np.zeros((B, 0), dtype=np.float32)
        batch["trial_labels"] = torch.from_numpy(labels.reshape(B, len(self.trial_label_names)))
        batch["trial_id"] = torch.from_numpy(cols.trial_ids())
        batch["bin_size"] = self.bin_size
        if self.mask_modes:
            batch["mask_mode"] = self.draw_mask_mode()
        return batch

    def draw_mask_mode(self) -> str:
        """One of ``draw_mask_mode``'s modes, with ``draw_mask_probs`` (uniform without them)."""
        pick = (self._rng.choice(len(self.mask_modes), p=self.mask_probs) if self.mask_probs is not None
                else self._rng.integers(len(self.mask_modes)))
        return self.mask_modes[int(pick)]

    def _spikes(self, cols: "_Columns", B, T, N) -> dict[str, torch.Tensor]:
        t_all, u_all, lengths = cols.spikes()
        E = int(lengths.max()) if B else 0
        row_of = np.repeat(np.arange(B), lengths)
        flat = (row_of * T + bin_index(t_all, self.bin_size, T, self.window[0], what="spike")) * N + u_all
        counts = np.bincount(flat, minlength=B * T * N).reshape(B, T, N).astype(np.float32)
        pos = np.arange(len(t_all)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        ev_t = np.zeros((B, E), dtype=np.float32)
        ev_u = np.zeros((B, E), dtype=np.int64)
        ev_m = np.zeros((B, E), dtype=bool)
        ev_t[row_of, pos] = t_all - self.window[0]
        ev_u[row_of, pos] = u_all
        ev_m[row_of, pos] = True
        return {"spikes": torch.from_numpy(counts), "event_times": torch.from_numpy(ev_t),
                "event_units": torch.from_numpy(ev_u), "event_mask": torch.from_numpy(ev_m)}

    def _activity(self, cols: "_Columns", B, T, N) -> dict[str, torch.Tensor]:
        act = np.zeros((B, T * self.group, N), dtype=np.float32)
        for b, a in enumerate(cols.activity()):  # one step per trial
            act[b, :, : a.shape[1]] = a
        if self.group > 1:  # coarser bins: the mean of the finite stored bins of each group (NaN if none)
            g = act.reshape(B, T, self.group, N)
            n = np.isfinite(g).sum(2)
            act = np.divide(np.nansum(g, 2), n, out=np.full((B, T, N), np.nan, np.float32), where=n > 0)
        valid = np.isfinite(act)
        act[~valid] = 0.0
        return {"spikes": torch.from_numpy(act), "valid_mask": torch.from_numpy(valid),
                "event_times": torch.zeros((B, 0)), "event_units": torch.zeros((B, 0), dtype=torch.long),
                "event_mask": torch.zeros((B, 0), dtype=torch.bool)}

    def _per_bin(self, cols: "_Columns", prefix, names, B, T, fill) -> np.ndarray:
        out = np.full((B, T * self.group, len(names)), fill, dtype=np.float32)
        for k, name in enumerate(names):
            cols.per_bin(prefix + self.modality_map.get(name, name), out[:, :, k])
        return mean_bins(out, self.group)


class ArrowRows(torch.utils.data.Dataset):
    """A ``datasets.Dataset`` seen by a ``DataLoader`` as Arrow: ``__getitems__(indices)`` returns the rows as one
    ``pyarrow.Table`` (memory-mapped columns, no Python object per value) for :class:`NfmCollator`'s fast path.
    ``len()`` and ``[i]`` (a one-row table) as the dataset's; ``dataset``: the wrapped one."""

    def __init__(self, dataset):
        self.dataset = dataset
        self._arrow = dataset.with_format("arrow")

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        return self._arrow[[int(i)]]

    def __getitems__(self, indices) -> "Any":
        return self._arrow[[int(i) for i in indices]]


def arrow_rows(dataset):
    """:class:`ArrowRows` around a ``datasets.Dataset``; anything else (a torch or iterable dataset) unchanged."""
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is a dependency of nfm
        return dataset
    return ArrowRows(dataset) if isinstance(dataset, datasets.Dataset) else dataset


# --------------------------------------------------------------------------- column access
def _columns(rows) -> "_Columns":
    import pyarrow as pa

    if isinstance(rows, pa.Table):
        return _TableColumns(rows)
    rows = list(rows)
    if rows and all(isinstance(r, pa.Table) for r in rows):  # one-row tables (ArrowRows item by item)
        return _TableColumns(pa.concat_tables(rows))
    return _RowColumns(rows)


class _Columns:
    """What the collator reads, per column for the whole batch (B rows)."""

    n_rows: int

    def session_ids(self) -> list[str]: ...

    def spikes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(spike times float64, spike units int64) of all rows concatenated, and each row's count (B,)."""

    def per_bin(self, name: str, out: np.ndarray) -> None:
        """Write list column ``name`` (each row a list of values per dataset bin) into ``out`` (B, T); rows
        without it keep ``out``'s fill."""

    def scalar(self, name: str) -> np.ndarray:
        """(B,) float32 values of a scalar column, NaN where absent."""

    def trial_ids(self) -> np.ndarray: ...

    def activity(self) -> list[np.ndarray]: ...


class _TableColumns(_Columns):
    """Columns of a ``pyarrow.Table``: list columns are flattened once and cut by their offsets (numpy views)."""

    def __init__(self, table):
        self.table = table
        self.n_rows = table.num_rows

    def _col(self, name):
        return self.table.column(name) if name in self.table.column_names else None

    def session_ids(self) -> list[str]:
        return [str(s) for s in self._col("session_id").to_pylist()]

    @staticmethod
    def _flat(col, dtype):
        import pyarrow.compute as pc

        lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
        lengths = np.nan_to_num(lengths.astype(np.float64), nan=0).astype(np.int64)  # null list: 0 values
        values = pc.list_flatten(col).to_numpy(zero_copy_only=False)
        return values.astype(dtype, copy=False), lengths

    def spikes(self):
        t, lengths = self._flat(self._col("spike_times"), np.float64)
        u, lengths_u = self._flat(self._col("spike_units"), np.int64)
        if not np.array_equal(lengths, lengths_u):
            b = int(np.flatnonzero(lengths != lengths_u)[0])
            raise ValueError(f"row {b}: spike_times has {lengths[b]} values but spike_units {lengths_u[b]}")
        return t, u, lengths

    def per_bin(self, name, out):
        col = self._col(name)
        if col is None:
            return
        values, lengths = self._flat(col, np.float32)
        present = np.asarray(col.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        L = out.shape[1]
        if present.all() and (lengths == L).all():
            out[:] = values.reshape(self.n_rows, L)
            return
        starts = np.cumsum(lengths) - lengths
        for b in np.flatnonzero(present):  # rare: a null row or a length that the assignment will refuse
            out[b] = values[starts[b]:starts[b] + lengths[b]]

    def scalar(self, name):
        col = self._col(name)
        if col is None:
            return np.full(self.n_rows, np.nan, dtype=np.float32)
        return np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float32)

    def trial_ids(self):
        return np.asarray(self._col("trial_id").to_numpy(zero_copy_only=False)).astype(np.int64)

    def activity(self):
        import pyarrow.compute as pc

        col = self._col("activity")
        rows_len = pc.list_value_length(col).to_numpy(zero_copy_only=False).astype(np.int64)  # T per row
        inner = pc.list_flatten(col)
        n_per_bin = pc.list_value_length(inner).to_numpy(zero_copy_only=False).astype(np.int64)
        values = pc.list_flatten(inner).to_numpy(zero_copy_only=False).astype(np.float32)
        out, v0, r0 = [], 0, 0
        for T_b in rows_len:  # one step per trial
            n = int(n_per_bin[r0]) if T_b else 0
            out.append(values[v0:v0 + T_b * n].reshape(T_b, n))
            v0, r0 = v0 + T_b * n, r0 + T_b
        return out


class _RowColumns(_Columns):
    """Columns of a list of row dicts with Python values (a ``datasets.Dataset`` row)."""

    def __init__(self, rows):
        self.rows = rows
        self.n_rows = len(rows)

    def session_ids(self):
        return [str(r["session_id"]) for r in self.rows]

    def spikes(self):
        times = [np.asarray(r["spike_times"], dtype=np.float64) for r in self.rows]
        units = [np.asarray(r["spike_units"], dtype=np.int64) for r in self.rows]
        lengths = np.array([len(t) for t in times], dtype=np.int64)
        t_all = np.concatenate(times) if times else np.zeros(0)
        u_all = np.concatenate(units) if units else np.zeros(0, dtype=np.int64)
        return t_all, u_all, lengths

    def per_bin(self, name, out):
        for b, r in enumerate(self.rows):  # one step per trial and signal
            v = r.get(name)
            if v is not None:
                out[b] = v

    def scalar(self, name):
        return np.array([r.get(name, np.nan) for r in self.rows], dtype=np.float32)

    def trial_ids(self):
        return np.array([int(r["trial_id"]) for r in self.rows], dtype=np.int64)

    def activity(self):
        return [np.asarray(r["activity"], dtype=np.float32) for r in self.rows]
