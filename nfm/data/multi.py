"""Several prepared datasets in one training run (mixed pretraining): rows, sampler and collator.

* :class:`MultiDataset` -- the training rows of several nfm datasets (of either modality, each on its own time
  grid) behind one index: row ``i`` of dataset ``k`` is global row ``offsets[k] + i``.  Session ids must be
  unique across datasets.
* :class:`WeightedSessionBatchSampler` -- :class:`~nfm.data.sampler.SessionBatchSampler` (one session per
  batch, rank-aware, deterministic in ``seed + epoch``) whose epoch draws a stated share of its batches from each
  dataset (``weights``; default: each dataset's share of the training batches, i.e. every trial once per epoch).
* :class:`MultiCollator` -- dispatches a batch (one session, so one dataset) to that dataset's
  :class:`~nfm.data.collate.NfmCollator` (its grid, modality and the model's variables).

Mixing rule (stated in the run summary): an epoch has ``n = sum_k n_k`` batches, ``n_k`` the natural number of
batches of dataset k (its sessions' trials cut into ``batch_size`` batches).  With weights ``w`` (normalised to
sum 1), dataset k contributes ``round(w_k * n)`` batches (at least 1): its shuffled batches, repeated in a new
shuffle when more are needed, cut when fewer are.  Batches of all datasets are then shuffled together.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from .collate import NfmCollator
from .sampler import SessionBatchSampler


class MultiDataset(torch.utils.data.Dataset):
    """Training rows of several datasets (``datasets.Dataset`` each) under one index.

    Args:
        parts: the datasets (e.g. each one's train split, already subset to its training sessions).
        names: a label per dataset (its folder name) for summaries.
    """

    def __init__(self, parts: Sequence[Any], names: Sequence[str] | None = None):
        self.parts = list(parts)
        if not self.parts:
            raise ValueError("MultiDataset needs at least one dataset")
        self.names = list(names) if names is not None else [f"dataset{k}" for k in range(len(self.parts))]
        if len(self.names) != len(self.parts):
            raise ValueError(f"{len(self.names)} names for {len(self.parts)} datasets")
        lengths = [len(p) for p in self.parts]
        self.offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self.session_ids = [str(s) for p in self.parts for s in p["session_id"]]
        self.dataset_of_row = np.repeat(np.arange(len(self.parts)), lengths)
        owner: dict[str, int] = {}
        for k, p in enumerate(self.parts):
            for sid in dict.fromkeys(str(s) for s in p["session_id"]):
                if owner.setdefault(sid, k) != k:
                    raise ValueError(f"session {sid!r} is in {self.names[owner[sid]]} and {self.names[k]}: session "
                                     "ids must be unique across datasets")
        self.dataset_of_session = owner

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _locate(self, i: int) -> tuple[int, int]:
        if not 0 <= i < len(self):
            raise IndexError(f"row {i} is outside 0..{len(self) - 1}")
        k = int(self.dataset_of_row[i])
        return k, int(i - self.offsets[k])

    def __getitem__(self, i):
        if isinstance(i, str):  # a column, as on a datasets.Dataset ("session_id" is what the Trainer reads)
            if i != "session_id":
                raise KeyError(f"MultiDataset exposes the column 'session_id' only, not {i!r}")
            return list(self.session_ids)
        k, j = self._locate(int(i))
        return self.parts[k][j]

    def __getitems__(self, idx: Sequence[int]) -> list[dict]:
        """Rows ``idx`` (one columnar read per dataset they come from), in the order given."""
        idx = [int(i) for i in idx]
        loc = [self._locate(i) for i in idx]
        out: list[dict | None] = [None] * len(idx)
        for k in dict.fromkeys(k for k, _ in loc):
            pos = [p for p, (kk, _) in enumerate(loc) if kk == k]
            cols = self.parts[k][[loc[p][1] for p in pos]]
            for p, values in zip(pos, zip(*cols.values())):
                out[p] = dict(zip(cols, values))
        return out

    def make_batch_sampler(self, batch_size: int, weights: Sequence[float] | None = None, **kwargs):
        """The per-session sampler across datasets (:class:`WeightedSessionBatchSampler`)."""
        return WeightedSessionBatchSampler(self.session_ids, self.dataset_of_row, batch_size=batch_size,
                                           weights=weights, **kwargs)


class WeightedSessionBatchSampler(SessionBatchSampler):
    """One-session batches drawn across datasets with a stated mixing weight (see the module docstring).

    Args:
        session_ids: session id of every row; dataset_of_row: (rows,) dataset index of every row;
        weights: share of the batches of an epoch drawn from each dataset (any positive numbers, normalised);
            None = natural shares (every trial once per epoch).  Other arguments as :class:`SessionBatchSampler`.
    """

    def __init__(self, session_ids: Sequence[str], dataset_of_row, batch_size: int,
                 weights: Sequence[float] | None = None, **kwargs):
        super().__init__(session_ids, batch_size, **kwargs)
        of_row = np.asarray(dataset_of_row, dtype=np.int64)
        if of_row.shape != (len(session_ids),):
            raise ValueError(f"dataset_of_row has {of_row.shape} entries for {len(session_ids)} rows")
        self.n_datasets = int(of_row.max()) + 1
        self.session_dataset = [int(of_row[rows[0]]) for rows in self.session_rows]
        natural = np.zeros(self.n_datasets, dtype=np.int64)
        for rows, k in zip(self.session_rows, self.session_dataset):
            natural[k] += len(rows) // self.batch_size if self.drop_last else -(-len(rows) // self.batch_size)
        self.natural_batches = natural
        if weights is None:
            self.weights = natural / natural.sum()
        else:
            w = np.asarray(list(weights), dtype=np.float64)
            if w.shape != (self.n_datasets,) or not np.all(np.isfinite(w)) or np.any(w <= 0):
                raise ValueError(f"dataset weights {list(weights)} must be {self.n_datasets} positive numbers (one "
                                 "per dataset)")
            self.weights = w / w.sum()
        total = int(natural.sum())
        self.batches_per_dataset = np.maximum(1, np.round(self.weights * total)).astype(np.int64)
        self.batches_per_dataset[natural == 0] = 0
        self.total_batches = int(self.batches_per_dataset.sum())

    def global_batches(self) -> list[np.ndarray]:
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        per: list[list[np.ndarray]] = [[] for _ in range(self.n_datasets)]
        for rows, k in zip(self.session_rows, self.session_dataset):  # one step per session
            if self.shuffle:
                rows = rows[torch.randperm(len(rows), generator=g).numpy()]
            stop = len(rows) - len(rows) % self.batch_size if self.drop_last else len(rows)
            per[k] += [rows[i:i + self.batch_size] for i in range(0, stop, self.batch_size)]
        batches: list[np.ndarray] = []
        for k, pool in enumerate(per):  # one step per dataset
            need = int(self.batches_per_dataset[k])
            drawn: list[np.ndarray] = []
            while len(drawn) < need and pool:
                order = torch.randperm(len(pool), generator=g).tolist() if self.shuffle else range(len(pool))
                drawn += [pool[i] for i in order][: need - len(drawn)]
            batches += drawn
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
        base = list(batches)
        while len(batches) % self.num_replicas:
            batches += base[: (-len(batches)) % self.num_replicas]
        return batches

    def describe(self, names: Sequence[str] | None = None) -> str:
        """One line: batches per epoch from each dataset and its weight."""
        names = list(names) if names is not None else [f"dataset{k}" for k in range(self.n_datasets)]
        return "; ".join(f"{n}: {int(b)} batches/epoch (weight {w:.3f}, natural {int(m)})" for n, b, w, m in
                         zip(names, self.batches_per_dataset, self.weights, self.natural_batches))


class MultiCollator:
    """Collate a one-session batch with the collator of the session's dataset.

    Args:
        collators: one :class:`NfmCollator` per dataset (e.g. ``NfmCollator.for_config(meta_k, config)``).
    """

    def __init__(self, collators: Sequence[NfmCollator]):
        self.collators = list(collators)
        self.dataset_of_session: dict[str, int] = {}
        for k, c in enumerate(self.collators):
            for sid in c.meta.sessions:
                if self.dataset_of_session.setdefault(sid, k) != k:
                    raise ValueError(f"session {sid!r} is in two datasets; session ids must be unique")

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        ks = {self.dataset_of_session.get(str(r["session_id"])) for r in rows}
        if None in ks:
            bad = next(r["session_id"] for r in rows if str(r["session_id"]) not in self.dataset_of_session)
            raise KeyError(f"session {bad!r} is in none of the datasets")
        if len(ks) != 1:
            raise ValueError("a batch mixes rows of several datasets; draw batches with the per-session sampler")
        k = ks.pop()
        return self.collators[k](rows)


__all__ = ["MultiDataset", "WeightedSessionBatchSampler", "MultiCollator"]
