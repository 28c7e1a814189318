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

    Build it from a model config with :meth:`for_config` (its region vocabulary and time grid), so that the
    bin size flows dataset -> config -> collator from one place.
    """

    def __init__(self, meta: DatasetMeta, region_vocab: Sequence[str] | None = None, bin_size: float | None = None,
                 behavior_names: Sequence[str] | None = None, stimulus_names: Sequence[str] | None = None,
                 modality_map: dict[str, str] | None = None):
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

    @classmethod
    def for_config(cls, meta: DatasetMeta, config, modality_map: dict[str, str] | None = None) -> "NfmCollator":
        """The collator of a model: its ``config.region_vocab``, the time grid of the dataset's sessions in the
        config (``config.grid_of``: the primary ``bin_size`` unless they have their own ``session_grid``) and
        the model's behaviour / stimulus variables (``modality_map`` for differently named ones).  A trial
        window that differs from the model's raises ``ValueError``."""
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
                   modality_map=modality_map)

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        B, T = len(rows), self.n_bins
        sids = [r["session_id"] for r in rows]
        unknown = [s for s in sids if s not in self.n_units]
        if unknown:
            raise KeyError(f"session {unknown[0]!r} is not in this dataset's meta")
        n_units = np.array([self.n_units[s] for s in sids])
        N = int(n_units.max())
        unit_mask = np.arange(N)[None, :] < n_units[:, None]
        unit_region = np.zeros((B, N), dtype=np.int64)
        for b, s in enumerate(sids):  # one step per trial
            unit_region[b, : n_units[b]] = self.session_regions[s]
        batch: dict[str, Any] = {"session_ids": sids, "unit_mask": torch.from_numpy(unit_mask),
                                 "unit_region": torch.from_numpy(unit_region)}
        if self.meta.modality == "spikes":
            batch.update(self._spikes(rows, B, T, N))
        else:
            batch.update(self._activity(rows, B, T, N))
        batch["behavior"] = torch.from_numpy(self._per_bin(rows, "behavior_", self.behavior_names, B, T, fill=np.nan))
        batch["stimulus"] = torch.from_numpy(self._per_bin(rows, "stimulus_", self.stimulus_names, B, T, fill=np.nan))
        labels = np.array([[r.get(f"trial_{c}", np.nan) for c in self.trial_label_names] for r in rows], dtype=np.float32)
        batch["trial_labels"] = torch.from_numpy(labels.reshape(B, len(self.trial_label_names)))
        batch["trial_id"] = torch.tensor([int(r["trial_id"]) for r in rows], dtype=torch.long)
        batch["bin_size"] = self.bin_size
        return batch

    def _spikes(self, rows, B, T, N) -> dict[str, torch.Tensor]:
        times = [np.asarray(r["spike_times"], dtype=np.float64) for r in rows]
        units = [np.asarray(r["spike_units"], dtype=np.int64) for r in rows]
        lengths = np.array([len(t) for t in times])
        E = int(lengths.max()) if B else 0
        t_all = np.concatenate(times) if B else np.zeros(0)
        u_all = np.concatenate(units) if B else np.zeros(0, dtype=np.int64)
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

    def _activity(self, rows, B, T, N) -> dict[str, torch.Tensor]:
        act = np.zeros((B, T * self.group, N), dtype=np.float32)
        for b, r in enumerate(rows):  # one step per trial
            a = np.asarray(r["activity"], dtype=np.float32)
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

    def _per_bin(self, rows, prefix, names, B, T, fill) -> np.ndarray:
        out = np.full((B, T * self.group, len(names)), fill, dtype=np.float32)
        for k, name in enumerate(names):
            col = [r.get(prefix + self.modality_map.get(name, name)) for r in rows]
            for b, v in enumerate(col):  # one step per trial and signal
                if v is not None:
                    out[b, :, k] = v
        return mean_bins(out, self.group)
