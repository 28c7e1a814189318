"""Per-session, distributed-aware batch sampler.

Trials of different sessions have different neuron counts and per-session
read-in/read-out parameters, so a batch is drawn from ONE session (no padding
across sessions, every per-session parameter sees whole batches, as in MtM).

Each epoch (deterministic in ``seed + epoch``, identical on every rank):

1. the trials of each session are shuffled and cut into batches of
   ``batch_size`` (a session's last batch may be smaller unless
   ``drop_last``);
2. the list of all batches of all sessions is shuffled -- or, with
   ``sessions_per_block = S > 0``, the sessions are shuffled and cut into
   blocks of S, and batches are shuffled within each block only, blocks one
   after the other: a pass over a dataset larger than memory then reads one
   block of sessions at a time from the memory-mapped Arrow files instead of
   every session in every stretch of steps;
3. the list is padded (by repeating its first batches) to a multiple of
   ``num_replicas`` and rank ``r`` takes batches ``r, r + R, r + 2R, ...``.

So the ranks see disjoint shards (apart from at most ``R - 1`` repeated
padding batches), together they visit every trial of every session once per
epoch, and every rank runs the same number of steps (no rank waits on a
collective that another never reaches).

The sampler is a *batch* sampler: give it to ``DataLoader(batch_sampler=...)``.
It is already rank-aware, so an Accelerate ``BatchSamplerShard`` wrapped around
it must be made a pass-through (``nfm.training`` does this).
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler


class SessionBatchSampler(Sampler[list[int]]):
    """Batches of row indices, each batch from a single session.

    Args:
        session_ids: session id of every dataset row (length = number of rows).
        batch_size: trials per batch (per process).
        num_replicas: number of data-parallel processes (world size).
        rank: this process's index in ``0 .. num_replicas - 1``.
        shuffle: shuffle trials and batch order each epoch (False: sessions in
            order of first appearance, trials in row order).
        seed: base seed; epoch ``e`` uses ``seed + e``.
        drop_last: drop each session's last incomplete batch.
        sessions_per_block: 0 (default) shuffles all batches together; S > 0 shuffles them within blocks of S
            sessions (see the module docstring).
    """

    def __init__(
        self,
        session_ids: Sequence[str],
        batch_size: int,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        sessions_per_block: int = 0,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in 0..{num_replicas - 1} (num_replicas={num_replicas})")
        sids = np.asarray(list(session_ids), dtype=object).astype(str)
        if sids.size == 0:
            raise ValueError("SessionBatchSampler: the dataset has no rows")
        names, first, inverse = np.unique(sids, return_index=True, return_inverse=True)
        order = np.argsort(first, kind="stable")  # sessions in order of first appearance
        self.session_names = [str(n) for n in names[order]]
        rank_of = np.empty(len(order), dtype=np.int64)
        rank_of[order] = np.arange(len(order))
        code = rank_of[inverse]
        rows = np.argsort(code, kind="stable")
        bounds = np.searchsorted(code[rows], np.arange(len(order) + 1))
        self.session_rows = [rows[bounds[i]:bounds[i + 1]] for i in range(len(order))]
        self.batch_size = int(batch_size)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        if sessions_per_block < 0:
            raise ValueError(f"sessions_per_block must be >= 0, got {sessions_per_block}")
        self.sessions_per_block = int(sessions_per_block)
        self.epoch = 0
        n_batches = [len(r) // self.batch_size if self.drop_last else -(-len(r) // self.batch_size)
                     for r in self.session_rows]
        self.total_batches = int(sum(n_batches))
        if self.total_batches == 0:
            raise ValueError(f"no session has {self.batch_size} trials; lower batch_size or set drop_last=False")

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffle of epoch ``epoch`` (call before iterating)."""
        self.epoch = int(epoch)

    def global_batches(self) -> list[np.ndarray]:
        """All batches of this epoch for all ranks, padded to a multiple of ``num_replicas``."""
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        per_session = []
        for rows in self.session_rows:  # one step per session
            if self.shuffle:
                rows = rows[torch.randperm(len(rows), generator=g).numpy()]
            stop = len(rows) - len(rows) % self.batch_size if self.drop_last else len(rows)
            per_session.append([rows[i:i + self.batch_size] for i in range(0, stop, self.batch_size)])
        if self.shuffle and self.sessions_per_block:
            order = torch.randperm(len(per_session), generator=g).tolist()
            batches = []
            for k in range(0, len(order), self.sessions_per_block):  # one step per block of sessions
                block = [b for i in order[k:k + self.sessions_per_block] for b in per_session[i]]
                batches += [block[i] for i in torch.randperm(len(block), generator=g).tolist()]
        else:
            batches = [b for bs in per_session for b in bs]
            if self.shuffle:
                batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
        base = list(batches)
        while len(batches) % self.num_replicas:  # fewer batches than ranks needs several rounds
            batches += base[: (-len(batches)) % self.num_replicas]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.global_batches()[self.rank::self.num_replicas]:
            yield batch.tolist()

    def __len__(self) -> int:
        return -(-self.total_batches // self.num_replicas)
