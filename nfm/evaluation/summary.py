"""The evaluation that recipes run at the end of training (``eval_summary.json``).

It is the evaluation runner (:func:`nfm.evaluation.runner.evaluate`) on a short task list, so the numbers of a
training summary are exactly those ``recipes/evaluate.py`` reports for the same model, data, split and tasks
(same masks, same folds, same baselines), plus the teacher-forced generation losses when the model has an event
decoder.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

#: tasks of the training-end summary: the masked-prediction tasks (each unit scored once; co-smoothing also
#: against the NLB smoothing baseline fitted on the train split)
SUMMARY_TASKS = ("co_smoothing", "forward_prediction", "intra_region", "inter_region")


def compact(results: dict[str, Any]) -> dict[str, Any]:
    """Runner results without the per-session breakdowns (for model cards and console lines)."""
    return {task: ({k: v for k, v in res.items() if k != "per_session"} if isinstance(res, dict) else res)
            for task, res in results.items()}


@torch.no_grad()
def generation_losses(model, dd, meta, split: str, session_ids: Sequence[str], batch_size: int = 16,
                      max_trials: int | None = None) -> dict[str, float] | None:
    """Mean teacher-forced ``id_loss`` / ``dt_loss`` [nats / token] of the event decoder on a split (every window
    of each trial), or None for a model without a decoder."""
    from nfm.data.collate import NfmCollator
    from nfm.data.sampler import SessionBatchSampler
    from nfm.training import rows, subset_split

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(base, "decoder", None) is None or meta.modality != "spikes":  # generation: spike sessions only
        return None
    ds = subset_split(dd[split], session_ids)
    if max_trials:
        ds = ds.select(_first_per_session(list(ds["session_id"]), int(max_trials)))
    if len(ds) == 0:
        return None
    collator = NfmCollator.for_config(meta, base.config)
    device = next(base.parameters()).device
    was_training = base.training
    base.eval()
    ids, dts = [], []
    try:
        for idx in SessionBatchSampler(list(ds["session_id"]), batch_size=batch_size, shuffle=False):
            batch = collator(rows(ds, idx))
            spikes = batch.pop("spikes").to(device)
            batch = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
            out = base.generation_outputs(spikes, **{k: batch.get(k) for k in (
                "unit_mask", "unit_region", "session_ids", "event_times", "event_units", "event_mask", "stimulus",
                "behavior", "bin_size")})
            ids.append(float(out.id_loss))
            dts.append(float(out.dt_loss))
    finally:
        base.train(was_training)
    return {"id_loss": float(np.mean(ids)), "dt_loss": float(np.mean(dts))}


def _first_per_session(session_ids: list[str], n: int) -> list[int]:
    seen: dict[str, int] = {}
    keep = []
    for i, s in enumerate(session_ids):
        if seen.get(s, 0) < n:
            keep.append(i)
            seen[s] = seen.get(s, 0) + 1
    return keep


def end_of_training_summary(model, dd, meta, session_ids: Sequence[str], *, split: str = "validation",
                            tasks: Sequence[str] = SUMMARY_TASKS, batch_size: int = 16,
                            max_trials: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Evaluate a freshly trained model (or a PEFT model around one) on ``split`` of ``session_ids``.

    Returns ``{"split", "sessions", "tasks": {task: runner metrics (with per_session)}, "generation": {...}}``;
    ``tasks`` is exactly what ``evaluate(model, (dd, meta), tasks, split, sessions=session_ids)`` returns.
    """
    from nfm.evaluation.runner import evaluate

    base = model
    if hasattr(model, "merge_and_unload"):  # a PEFT model: evaluate the merged weights (as evaluate.py --adapter)
        import copy

        from nfm.adapters import merge_adapter

        base = merge_adapter(copy.deepcopy(model))
    was_training = base.training
    try:
        results = evaluate(base, (dd, meta), tasks=list(tasks), split=split, sessions=list(session_ids),
                           batch_size=batch_size, max_trials=max_trials, seed=seed)
    finally:
        base.train(was_training)
    out: dict[str, Any] = {"split": split, "sessions": list(session_ids), "tasks": results}
    gen = generation_losses(base, dd, meta, split, session_ids, batch_size=batch_size, max_trials=max_trials)
    if gen is not None:
        out["generation"] = gen
    return out


__all__ = ["SUMMARY_TASKS", "end_of_training_summary", "generation_losses", "compact"]
