"""Few-shot subsets of a session's trials: one seeded draw shared by every consumer.

LoRA / full adaptation (:func:`nfm.data.subsets.subset_split`) and the fine-tuned behaviour heads
(:meth:`nfm.evaluation.context.EvalContext.session` with ``fraction < 1``) both call
:func:`fewshot_positions`, so the same ``(fraction, seed)`` selects exactly the same trials of a session in
both, whatever the order of the rows or of the sessions.

The draw depends only on the session id, the set of trial ids offered, ``fraction`` and ``seed``:

* ``k = max(1, ceil(fraction * n))`` trials of the ``n`` offered (``fraction`` in (0, 1]; ``1`` keeps all);
* the offered trial ids are sorted, permuted by ``np.random.default_rng([seed, crc32(session_id)])``, and the
  first ``k`` are kept.
"""
from __future__ import annotations

import math
import zlib
from typing import Iterable

import numpy as np

__all__ = ["fewshot_count", "fewshot_positions", "fewshot_rows"]


def _check_fraction(fraction: float) -> float:
    f = float(fraction)
    if not (0.0 < f <= 1.0):
        raise ValueError(f"few-shot fraction {fraction!r} must be in (0, 1] (share of a session's trials)")
    return f


def fewshot_count(n_trials: int, fraction: float) -> int:
    """Trials kept out of ``n_trials``: ``max(1, ceil(fraction * n_trials))`` (0 when there are none).

    A relative tolerance of 1e-9 keeps float products such as ``0.3 * 10`` at 3, not 4."""
    f = _check_fraction(fraction)
    if n_trials <= 0:
        return 0
    return min(int(n_trials), max(1, int(math.ceil(f * n_trials * (1 - 1e-9)))))


def _session_rng(session_id: str, seed: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(str(session_id).encode())])


def fewshot_positions(session_id: str, trial_ids, fraction: float, seed: int = 0) -> np.ndarray:
    """Positions into ``trial_ids`` of one session's few-shot subset, ascending.

    ``trial_ids``: ``(n,)`` integer trial ids of the session's offered trials (e.g. its rows of the train
    split), unique, in any order.  Returns ``(k,)`` int64 indices into ``trial_ids``
    (``k = fewshot_count(n, fraction)``); with ``fraction == 1`` every position.  Duplicated trial ids raise
    ``ValueError`` naming the session and the id.
    """
    ids = np.asarray(trial_ids)
    if ids.ndim != 1:
        raise ValueError(f"session {session_id!r}: trial_ids must be 1-d, got shape {ids.shape}")
    k = fewshot_count(ids.size, fraction)
    if k == ids.size:
        return np.arange(ids.size, dtype=np.int64)
    order = np.argsort(ids, kind="stable")
    dup = ids[order][1:] == ids[order][:-1]
    if dup.any():
        raise ValueError(f"session {session_id!r}: trial id {ids[order][1:][dup][0].item()!r} appears more than once; "
                         "a few-shot draw needs unique trial ids per session")
    chosen = order[_session_rng(session_id, seed).permutation(ids.size)[:k]]
    return np.sort(chosen).astype(np.int64)


def fewshot_rows(session_column, trial_id_column, session_ids: Iterable[str], fraction: float = 1.0,
                 seed: int = 0) -> np.ndarray:
    """Row indices (ascending, int64) of a split's few-shot subset over several sessions.

    ``session_column`` / ``trial_id_column``: ``(rows,)`` session id and trial id of each row of the split
    (e.g. ``ds["session_id"]``, ``ds["trial_id"]``); ``session_ids``: the sessions kept.  Each session's rows
    are drawn by :func:`fewshot_positions` on its own (independent of the other sessions and of row order).
    """
    _check_fraction(fraction)
    sids = np.asarray(list(session_column), dtype=object).astype(str)
    tids = np.asarray(list(trial_id_column))
    if tids.shape != sids.shape:
        raise ValueError(f"trial_id column has {tids.size} rows but session_id column has {sids.size}")
    wanted = list(dict.fromkeys(str(s) for s in session_ids))
    if fraction >= 1.0:
        return np.flatnonzero(np.isin(sids, wanted)).astype(np.int64)
    parts = []
    for s in wanted:  # one step per session
        rows = np.flatnonzero(sids == s)
        if rows.size:
            parts.append(rows[fewshot_positions(s, tids[rows], fraction, seed)])
    return np.sort(np.concatenate(parts)).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)
