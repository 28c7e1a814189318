"""Rough cost of evaluation tasks before they run (``recipes/evaluate.py`` prints it first).

Each task's work is counted from the task file and the dataset (no model call) by its kind's ``cost``
(:class:`~nfm.evaluation.kinds.base.TaskKind`, into a :class:`Work`), in these units:

* ``trial_passes``: trials through the model (masked prediction, latents, silenced copies), summed over the
  masks of the task's plan (:func:`nfm.evaluation.masking_tasks.mask_plan`: folds, regions; with the masking
  protocol ``mtm_per_neuron`` one mask per unit, so N passes per trial);
* ``windows``: closed-loop generation windows x batches of trials (timed on a batch of the size the generation
  tasks run: at most their ``max_trials``);
* ``fits``: logistic-regression decoder fits per feature source (``decoder_protocol: train_to_eval``: folds x
  grid + 1 refit on the train split; ``cv_all_splits``: outer folds x (inner folds x grid + 1) on every split),
  ``ridge`` fits (the same, per behaviour channel), ``glm`` fits of the NLB smoothing baseline (one per mask);
* ``glm_sim``: the Poisson GLM simulator of a generation task's ``glm`` baseline (fits: penalties x CV folds on
  (k-1)/k of the training trials, then one refit; none when the baseline cache holds it), in L-BFGS objective
  evaluations x rows x features x units (:func:`nfm.evaluation.generation_tasks.glm_sim_work`; ``sim_fits``
  counts the fits for the table);
* ``steps``: optimiser steps of a fine-tuned decoder;
* ``scored``: entries (trials x bins x units) scored by a masking task, once per predictor it compares (the
  model, the null model, the smoothing / ridge / PSTH baselines, a baseline model): bits/spike, Poisson D2 and
  the per-neuron values (R2 and Gaussian NLL for 2-photon) over the whole evaluated split;
* ``collate``: trials read and collated the first time a task needs them (later tasks reuse them).

:func:`calibrate` times one unit of each on this machine with the real model and data (collating a session,
a masked prediction of one batch, the scoring of one batch, one generated window of one batch, one
smoothing-baseline fit, one decoder fit of the real shape on random data, one GLM-simulator objective evaluation
of the real shape; a few seconds), and
:func:`estimate_costs` multiplies.  The figure is rough, meant to tell minutes from hours; the progress bars
inside each task then give the real ETA.  ``tests/test_cost_calibration.py`` runs small masking and decoding
tasks and checks each task's estimate against its measured time within :data:`STATED_FACTOR` (before the
``scored`` unit, forward prediction was estimated at a seventh of its time: its scoring was not counted).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .context import SPLITS, EvalContext
from .kinds import TASK_KINDS
from .kinds.base import Task

#: how far (either way) an estimate may be from the measured time of a task that takes long enough to time
#: (checked by tests/test_cost_calibration.py; the format line says it)
STATED_FACTOR = 3.0


@dataclass
class TaskCost:
    """Work of one task (see the module docstring) and its estimated time [s] (None until calibrated)."""

    task: str
    trial_passes: float = 0.0
    windows: float = 0.0
    fits: float = 0.0
    ridge: float = 0.0
    glm: float = 0.0
    glm_sim: float = 0.0
    sim_fits: float = 0.0
    steps: float = 0.0
    scored: float = 0.0
    collate: float = 0.0
    seconds: float | None = None
    notes: list[str] = field(default_factory=list)


def _trials(ctx: EvalContext, sid: str, splits: Sequence[str], cap: bool = True) -> int:
    n = 0
    for sp in splits:
        if sp not in ctx.dd:
            continue
        k = int(np.count_nonzero(ctx._session_rows(sp) == sid))
        if cap and sp == ctx.split and ctx.max_trials:
            k = min(k, int(ctx.max_trials))
        n += k
    return n


class Work:
    """What a kind's ``cost(work, task)`` (:class:`~nfm.evaluation.kinds.base.TaskKind`) counts into.

    ``ctx`` (the :class:`EvalContext`), ``cost`` (the task's :class:`TaskCost`: add to its fields and ``notes``),
    ``models`` (1, or 2 with a baseline model the task scores), ``masks`` (mask specs whose predictions earlier
    tasks left cached; add yours), :meth:`trials` (trials of a session in some splits) and :meth:`collate` (count
    a session's splits as collated, once over all tasks)."""

    def __init__(self, ctx: EvalContext, task: Task, seen: dict):
        self.ctx, self.cost = ctx, TaskCost(task.name)
        self.models = 1 + (ctx.baseline is not None and "baseline_model" in task.baselines)
        self.masks = seen.setdefault("masks", set())
        self._collated = seen.setdefault("collated", set())

    def trials(self, sid: str, splits: Sequence[str], cap: bool = True) -> int:
        """Trials of session ``sid`` in ``splits`` (the evaluated split capped at ``max_trials`` with ``cap``)."""
        return _trials(self.ctx, sid, splits, cap)

    def collate(self, sid: str, splits: Sequence[str], cap: bool = True) -> None:
        """Count the trials of ``sid`` in ``splits`` as collated, unless an earlier task collated them."""
        key = (sid, tuple(splits), cap)
        if key not in self._collated:
            self._collated.add(key)
            self.cost.collate += _trials(self.ctx, sid, splits, cap)


def count_work(ctx: EvalContext, task: Task, seen: dict | None = None) -> TaskCost:
    """The work of ``task`` on the context's sessions (no model call), counted by its kind's ``cost``
    (:data:`nfm.evaluation.kinds.TASK_KINDS`).  ``seen``: what tasks counted before left cached (``"masks"``:
    mask specs whose predictions are shared, e.g. co-smoothing and its PSTH; ``"collated"``: (session, splits)
    already collated); updated."""
    work = Work(ctx, task, seen if seen is not None else {})
    if not task.applies_to(ctx.modality):
        work.cost.notes.append("not applicable")
        return work.cost
    kind = TASK_KINDS[task.kind]
    if kind.cost is not None:
        kind.cost(work, task)
    return work.cost


def _decoder_fit_trials(ctx: EvalContext, sid: str, tasks: Sequence[Task]) -> int:
    """Trials of the largest decoder fit set of the session among the decoding tasks (calibration size):
    the train split (``train_to_eval``) or every split (``cv_all_splits``)."""
    sizes = [_trials(ctx, sid, SPLITS if t.spec["decoder_protocol"] == "cv_all_splits" else ("train",), cap=False)
             for t in tasks if t.kind == "decoding"]
    return max(sizes or [0])


def calibrate(ctx: EvalContext, tasks: Sequence[Task]) -> dict[str, float]:
    """Seconds per unit of work on this machine: ``trial_pass``, ``window`` (one generated window of one batch),
    ``fit`` (one decoder fit) and ``step`` (one fine-tuning step), from one timed call of each that the tasks
    need.  Unsupported calls (a model without an event decoder) are skipped."""
    import torch

    from .masking_tasks import mask_plan

    out: dict[str, float] = {}
    sid = ctx.sessions[0]
    t = time.perf_counter()
    sd = ctx.session(sid)  # cached: the first task reuses it
    out["collate"] = (time.perf_counter() - t) / max(sd.n_trials, 1)
    batch = sd.batches[0]
    B = int(batch["spikes"].shape[0])
    if ctx.predictor.can("mtm") is None:
        mask = mask_plan({"mode": "neuron", "held_out_folds": 2, "seed": 0}, sd, ctx.n_bins, ctx.bin_size)[0]
        m = mask.expand(batch["unit_mask"])
        ctx.predictor.predict(batch, m)  # warm-up (first call allocates)
        t = time.perf_counter()
        ctx.predictor.predict(batch, m)
        out["trial_pass"] = (time.perf_counter() - t) / B
    elif ctx.predictor.can("latents") is None:
        ctx.predictor.latents(batch)
        t = time.perf_counter()
        ctx.predictor.latents(batch)
        out["trial_pass"] = (time.perf_counter() - t) / B
    if any(t.kind == "generation" for t in tasks) and ctx.predictor.can("generation") is None:
        k_total = ctx.n_bins // int(ctx.predictor.generation_window_bins)
        # a batch of the size the generation tasks run (--quick: 4 trials, not the context's batch)
        caps = [int(t.spec["max_trials"] or B) for t in tasks if t.kind == "generation"]
        gen_batch = sd.head(min(B, max(caps))).batches[0] if max(caps) < B else batch
        t = time.perf_counter()
        ctx.predictor.generate(gen_batch, k_total - 1, temperature=1.0, top_p=0.95, top_k=None,
                               generator=torch.Generator().manual_seed(0))
        out["window"] = time.perf_counter() - t
    if any(t.kind == "decoding" for t in tasks):
        out["fit"], out["ridge"] = _time_fits(_decoder_fit_trials(ctx, sid, tasks), tasks, ctx)
    if ctx.modality == "spikes" and any(("smoothing" in t.baselines and t.kind in ("masking", "psth"))
                                        or ("glm" in t.baselines and t.kind == "generation") for t in tasks):
        out["glm"] = _time_smoothing(ctx, sd)
    if ctx.modality == "spikes" and any("glm" in t.baselines and t.kind == "generation" for t in tasks):
        out["glm_sim"] = _time_glm_sim(ctx, sd)
    if any(t.kind == "masking" for t in tasks):
        out["score"] = _time_scoring(ctx, sd)
    if "trial_pass" in out:
        out["step"] = 3.0 * out["trial_pass"] * 16  # forward + backward of a batch of 16
    return out


def _time_scoring(ctx: EvalContext, sd) -> float:
    """Seconds per scored entry: :func:`~nfm.evaluation.masking_tasks.score_spikes` (2-photon:
    ``score_calcium``) of a half-masked copy of the session's evaluated trials (at most 64), best of two."""
    from .masking_tasks import score_calcium, score_spikes

    x = np.asarray(sd.counts[:64], dtype=np.float64)
    if x.size == 0:
        return 0.0
    m = np.zeros(x.shape, dtype=bool)
    m[..., ::2] = True
    pred = np.broadcast_to(x.mean(axis=(0, 1), keepdims=True) + 0.1, x.shape).copy()
    best = math.inf
    for _ in range(2):
        t = time.perf_counter()
        try:
            if ctx.modality == "spikes":
                score_spikes(pred, x, m)
            else:
                score_calcium(pred, None, x, m)
        except Exception:  # e.g. no spike in the calibration entries: nothing to time
            return 0.0
        best = min(best, time.perf_counter() - t)
    return best / x.size


def _time_fits(n_trials: int, tasks: Sequence[Task], ctx: EvalContext) -> tuple[float, float]:
    """Seconds of one decoder fit: an L2 logistic-regression fit as a decoding task runs it (scaled, CV-scored),
    on random data of the trial-level features' shape (trials x (chunks x H)), the mean over a small grid search
    at the decoders' smallest, middle and largest C; and one ridge fit of the per-bin features' shape
    ((trials x bins) x H)."""
    from sklearn.linear_model import LogisticRegression, Ridge

    from . import metrics as mt

    chunks = max([t.spec.get("time_chunks", 10) for t in tasks if t.kind == "decoding"] or [10])
    hidden = int(getattr(getattr(ctx.predictor, "config", None), "hidden_size", 64) or 64)
    rng = np.random.default_rng(0)
    n = max(int(n_trials), 8)  # the fit set: train split (train_to_eval) or every split (cv_all_splits)
    x = rng.normal(size=(n, chunks * hidden))
    y = (x[:, 0] + rng.normal(size=n) > 0).astype(int)
    LogisticRegression(C=1.0, max_iter=1000).fit(x[:8], y[:8])  # sklearn's one-time set-up, not a fit's cost
    # what a decoding task runs (metrics.decode_choice_split: scaler + logistic regression in a CV grid search,
    # each fit also scored), at the grid's smallest, middle and largest C (weakly regularised fits take many more
    # iterations) with 2 folds: 2 x 3 + 1 fits, divided by that
    grid = sorted({float(c) for t in tasks if t.kind == "decoding" for c in (t.spec["decoder"].get("Cs") or [])})
    cs = [grid[0], grid[len(grid) // 2], grid[-1]] if len(grid) >= 3 else (grid or [1.0])
    half = n // 2
    t = time.perf_counter()
    try:
        mt.decode_choice_split(x[:half], y[:half], x[half:], y[half:], Cs=cs, n_splits=2, seed=0)
        t_log = (time.perf_counter() - t) / (2 * len(cs) + 1)
    except ValueError:  # too few trials of a class for the calibration split: time one plain fit instead
        t = time.perf_counter()
        LogisticRegression(C=1.0, max_iter=1000).fit(x, y)
        t_log = time.perf_counter() - t
    xb = rng.normal(size=(n * ctx.n_bins, hidden))
    t = time.perf_counter()
    Ridge(alpha=1.0).fit(xb, xb[:, 0])
    return t_log, time.perf_counter() - t


def _time_smoothing(ctx: EvalContext, sd) -> float:
    """One fit of the NLB smoothing baseline (Poisson GLM) on the session's train split (the faster of two when
    the first takes under 0.5 s), half of the units predicting the other half (the train split's collation is cached for the tasks)."""
    from . import baselines as bl

    train = ctx.session(sd.session_id, "train", cap=False)
    n = train.counts.shape[2]
    hin, tgt = np.arange(0, n, 2), np.arange(1, n, 2)
    if tgt.size == 0:
        return 0.0
    best = math.inf
    for _ in range(2):  # the first fit also pays one-time set-up; a second one only when the first was short
        t = time.perf_counter()
        bl.SmoothingBaseline(sigma_bins=bl.sigma_ms_to_bins(50.0, ctx.bin_size), alpha=1e-3, method="poisson").fit(
            train.counts[..., hin], train.counts[..., tgt])
        best = min(best, time.perf_counter() - t)
        if best > 0.5:
            break
    return best


def _time_glm_sim(ctx: EvalContext, sd) -> float:
    """Seconds per unit of ``glm_sim`` work: one evaluation of the GLM simulator's L-BFGS objective and gradient
    (:func:`~nfm.evaluation.baselines.poisson_glm_fit`: two (rows x features) x (features x units) products and the
    Poisson terms) on random data of the shape of the session's training trials, best of three, per row x
    feature x unit."""
    train = ctx.session(sd.session_id, "train", cap=False)
    R, T, N = train.counts.shape
    n_feat = sum(b["stimulus"].shape[-1] for b in train.batches[:1]) + 2 * train.behavior.shape[2] + 2 * N + 1
    rows = max(1, min(R, 32) * T)  # enough rows to time the products, not the set-up
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=(rows, n_feat)), rng.normal(scale=0.01, size=(N, n_feat))
    y = rng.poisson(0.3, size=(rows, N)).astype(np.float64)
    best = math.inf
    for _ in range(3):
        t = time.perf_counter()
        eta = np.clip(x @ w.T, -30.0, 30.0)
        mu = np.exp(eta)
        float((mu - y * eta).mean(0).sum())
        ((mu - y).T @ x) / rows
        best = min(best, time.perf_counter() - t)
    return best / (rows * n_feat * N)


def estimate_costs(ctx: EvalContext, tasks: Sequence[Task], timing: dict[str, float] | None = None) -> list[TaskCost]:
    """:func:`count_work` of every task, with ``seconds`` when ``timing`` (from :func:`calibrate`) is given."""
    seen: dict = {}
    costs = [count_work(ctx, t, seen) for t in tasks]
    if timing:
        for c in costs:
            c.seconds = sum(getattr(c, k) * timing.get(k2, 0.0) for k, k2 in (
                ("trial_passes", "trial_pass"), ("windows", "window"), ("fits", "fit"), ("ridge", "ridge"),
                ("glm", "glm"), ("glm_sim", "glm_sim"), ("steps", "step"), ("scored", "score"), ("collate", "collate")))
    return costs


def _duration(s: float | None) -> str:
    if s is None:
        return "?"
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def format_costs(costs: Sequence[TaskCost], timing: dict[str, float] | None = None) -> str:
    """The table ``recipes/evaluate.py`` prints before it starts."""
    lines = [f"estimated cost (rough, within x{STATED_FACTOR:g} either way; progress bars show the real ETA):",
             f"  {'task':24s} {'trial passes':>12s} {'gen. windows':>12s} {'fits':>8s} {'steps':>6s} {'time':>9s}"]
    for c in costs:
        lines.append(f"  {c.task:24s} {c.trial_passes:12.0f} {c.windows:12.0f} {c.fits + c.ridge + c.glm + c.sim_fits:8.0f} "
                     f"{c.steps:6.0f} {_duration(c.seconds):>9s}" + (f"  ({'; '.join(c.notes)})" if c.notes else ""))
    total = sum(c.seconds or 0.0 for c in costs)
    lines.append(f"  {'total':24s} {'':>12s} {'':>12s} {'':>8s} {'':>6s} {_duration(total):>9s}")
    if timing:
        lines.append("  measured on this machine: " + ", ".join(
            f"{k} {v * 1e9:.0f} ns/entry" if k == "score" else f"{k} {v * 1e12:.0f} ps/unit" if k == "glm_sim"
            else f"{k} {v * 1e3:.1f} ms" for k, v in timing.items()))
    return "\n".join(lines)


__all__ = ["TaskCost", "Work", "count_work", "calibrate", "estimate_costs", "format_costs"]
