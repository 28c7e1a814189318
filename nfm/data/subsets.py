"""Rows of a split: the sessions' (few-shot) subset of a ``datasets.Dataset`` and a batch of its rows as dicts.

Used by training (:mod:`nfm.training.data` re-exports both) and by evaluation (the end-of-training summary), so
it lives below both.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from .fewshot import fewshot_rows


def subset_split(ds, session_ids: Iterable[str], fraction: float = 1.0, seed: int = 0):
    """Rows of ``ds`` whose session is in ``session_ids``; with ``fraction < 1`` each session's few-shot subset
    (``max(1, ceil(fraction * n))`` of its ``n`` rows) drawn by :func:`nfm.data.fewshot.fewshot_rows` -- the
    same draw as the fine-tuned behaviour heads (``EvalContext.session(..., fraction=, seed=)``), so one
    ``(fraction, seed)`` selects the same trial ids in both.  Rows keep their order in ``ds``."""
    trial_ids = ds["trial_id"] if fraction < 1.0 else np.zeros(len(ds), dtype=np.int64)
    return ds.select(fewshot_rows(ds["session_id"], trial_ids, session_ids, fraction, seed))


def rows(dataset, idx: list[int]) -> list[dict]:
    """Rows ``idx`` of a datasets.Dataset as a list of dicts (one columnar read)."""
    cols = dataset[list(idx)]
    return [dict(zip(cols, values)) for values in zip(*cols.values())]


__all__ = ["subset_split", "rows"]
