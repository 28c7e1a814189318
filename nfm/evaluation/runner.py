"""Evaluation runner: reads ``tasks/*.yaml``, runs a model on a dataset split, scores, reports.

>>> from nfm.evaluation.runner import evaluate
>>> results = evaluate(model, "outputs/pretrain/dataset", tasks="all", split="test",
...                    output="outputs/eval/results.json")

``results`` (and ``results.json``) maps each task name to its metrics (floats,
``null`` where undefined, e.g. no spike to compute an ISI from) plus a
``per_session`` breakdown, or to ``{"not_applicable": "<reason>"}`` when the
dataset lacks what the task needs (a variable, a modality, ground-truth
weights) or the model lacks the head it needs.  Beside the JSON the runner
writes ``results.md`` (summary table with the baselines, one table per task)
and PNG figures in ``figures/``.

Metric names
------------
Model metrics are plain (``bps``) or prefixed by the model feature / method
they come from (``latents/accuracy``, ``perturbation/auroc``); baselines are
prefixed by the baseline's name: ``null/bps`` (per-neuron mean rate of the
evaluated entries: exactly 0 bits/spike by definition), ``smoothing/bps``
(NLB smoothing + Poisson GLM, fitted on the train split), ``spikes/accuracy``
(the same decoder on Gaussian-smoothed observed activity), ``pearson/auroc``,
``ccg/auroc`` and ``baseline_model/...`` (``baseline_model=``, e.g. a model
trained with temporal masking only, run through the same tasks).

Bits per spike: pooled or per neuron
------------------------------------
``bps`` is the NLB definition pooled over every evaluated neuron of every
session: ``sum(NLL_null - NLL_model) / (total spikes * ln 2)`` (a
spike-weighted mean: busy neurons count more).  ``bps_neuron_mean`` is the
mean over neurons of each neuron's own bps (its NLL difference over its own
spikes; silent neurons excluded); ``bps_session_mean`` the mean over sessions
of each session's pooled bps.  The null model of each neuron is its mean count
over the evaluated entries (NLB).

Masks at evaluation
-------------------
See :mod:`nfm.evaluation.masking_tasks` (every unit is scored once per task).

The model interface
-------------------
The runner calls a model only through a :class:`Predictor`:
:class:`NfmPredictor` adapts an nfm model (``NfmForPretraining``,
``NfmForMaskedModeling``, ``NfmForSpikeGeneration``, ...); any object with the
same methods (e.g. an analytic oracle in a test) can be evaluated the same way.

Modules: :mod:`~nfm.evaluation.predictor` (model side), :mod:`~nfm.evaluation.context`
(data, caches), one module per task family (:mod:`~nfm.evaluation.masking_tasks`,
:mod:`~nfm.evaluation.decoding_tasks`, :mod:`~nfm.evaluation.generation_tasks`,
:mod:`~nfm.evaluation.connectivity_tasks`), :mod:`~nfm.evaluation.report`.  Each task kind is declared once
in :mod:`nfm.evaluation.kinds` (validation, cost, runner); the runner dispatches through that registry.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from collections.abc import Mapping
from typing import Any, Callable, Iterator, Sequence

from nfm.evaluation.tasks import QUICK_MAX_TRIALS, Task, load_tasks

from .connectivity_tasks import perturbation_matrix
from .context import EvalContext, SessionData, check_compatibility, select_sessions
from .generation_tasks import generate_held_out, generate_to_files
from .kinds import TASK_KINDS
from .masking_tasks import mask_plan, score_calcium, score_spikes
from .predictor import ModelDatasetMismatch, NfmPredictor, NotApplicable, Predictor, as_predictor, load_model
from .report import render_markdown, write_results

__all__ = [
    "evaluate", "load_model", "Predictor", "NfmPredictor", "as_predictor", "NotApplicable", "ModelDatasetMismatch",
    "check_compatibility", "select_sessions", "generate_held_out", "generate_to_files", "write_results",
    "render_markdown", "mask_plan", "perturbation_matrix", "score_spikes", "score_calcium", "EvalContext",
    "SessionData", "RUNNERS", "run_task",
]


def run_task(ctx: EvalContext, task: Task) -> dict:
    """Run one task on ``ctx`` with its kind's runner (:data:`nfm.evaluation.kinds.TASK_KINDS`)."""
    return TASK_KINDS[task.kind].runner()(ctx, task)


class _Runners(Mapping):
    """``{kind: run function}``, read from :data:`~nfm.evaluation.kinds.TASK_KINDS` (a read-only view, kept for
    callers of ``RUNNERS[task.kind](ctx, task)``; a kind's runner is replaced by registering the kind)."""

    def __getitem__(self, kind: str) -> Callable[[EvalContext, Task], dict]:
        return TASK_KINDS[kind].runner()

    def __iter__(self) -> Iterator[str]:
        return iter(TASK_KINDS)

    def __len__(self) -> int:
        return len(TASK_KINDS)


RUNNERS: Mapping[str, Callable[[EvalContext, Task], dict]] = _Runners()


#: seconds between two rewrites of a running evaluation's partial report (rewriting its figure after each of many
#: short tasks cost more than some tasks); the finished tasks are also written when the run is interrupted
PARTIAL_WRITE_S = 10.0


def evaluate(
    model,
    dataset,
    tasks: str | Sequence[str] | None = "all",
    split: str = "test",
    *,
    baseline_model=None,
    output: str | os.PathLike | None = None,
    sessions: str | Sequence[str] | None = "all",
    batch_size: int = 32,
    max_trials: int | None = None,
    task_dir: str | os.PathLike | None = None,
    task_overrides: dict[str, dict] | None = None,
    seed: int = 0,
    progress: bool = False,
    info: dict | None = None,
    quick: bool = False,
    show_costs: bool = False,
    baseline_cache: bool | str | os.PathLike = True,
) -> dict:
    """Run evaluation tasks and return ``{task name: metrics}`` (see the module docstring).

    Args:
        model: an nfm model (``NfmForPretraining``, ``NfmForMaskedModeling``, ...) or a :class:`Predictor`.
        dataset: an nfm dataset folder, or ``(DatasetDict, meta)``.
        tasks: ``"all"``, ``"a,b"`` or a list of task names / YAML paths (``tasks/`` or ``task_dir``).
        split: the evaluated split (``test`` by default).
        baseline_model: optional second model (e.g. trained with temporal masking only); its scores appear
            as ``baseline_model/...`` metrics of the tasks that list ``baseline_model``.
        output: path of ``results.json``; ``results.md`` and ``figures/`` are written beside it.
        sessions: ``"all"`` (every session of the split: a session unknown to the model or with another unit
            count raises :class:`ModelDatasetMismatch`), ``"known"`` (the sessions the model knows), or ids.
        batch_size: trials per model call.  max_trials: cap of evaluated trials per session (None = all).
        task_overrides: ``{task: {field: value}}`` merged into the task files (e.g. fewer fine-tuning steps).
        info: extra lines for the report header (model / dataset names).
        progress: progress bars (tasks, and inside each task: sessions, steps, generated trials, with ETA).
        quick: a first look: :func:`nfm.evaluation.tasks.quick_overrides` (fewer folds, CV splits, steps and
            trials) and at most :data:`~nfm.evaluation.tasks.QUICK_MAX_TRIALS` trials per session.
        show_costs: print the estimated cost of each task (:mod:`nfm.evaluation.costs`) before starting.
        baseline_cache: ``True`` (default): data baselines that do not depend on the model (the smoothing
            baseline, the generation tasks' GLM simulator) are read from / written to the user cache (:mod:`nfm.evaluation.baseline_cache`); a folder:
            that cache folder; ``False``: refit them.

    With ``output``, the report is rewritten as tasks finish (at most every :data:`PARTIAL_WRITE_S` seconds, at the
    end, and when the run is interrupted; ``status`` in its header says how many are done), so an interrupted run
    keeps the tasks it finished.
    """
    from nfm.data.hf import load_dataset

    if isinstance(dataset, (str, os.PathLike)):
        dataset_name = str(dataset)
        dd, meta = load_dataset(dataset)
    else:
        dd, meta = dataset
        dataset_name = "<in memory>"
    if split not in dd:
        raise ValueError(f"split {split!r} is not in the dataset (splits: {list(dd)})")
    predictor = as_predictor(model, "model")
    base = as_predictor(baseline_model, "baseline_model") if baseline_model is not None else None
    if base is not None:
        base.name = "baseline_model"
    chosen = select_sessions(meta, dd, split, predictor, sessions)
    predictor = predictor.bind(meta, chosen)  # a mixed-modality model reads each dataset at its own grid
    check_compatibility(predictor, meta, chosen)
    if base is not None:
        base = base.bind(meta, chosen)
        check_compatibility(base, meta, chosen)
    task_list = load_tasks(tasks, task_dir, task_overrides, quick=quick)
    if quick and max_trials is None:
        max_trials = QUICK_MAX_TRIALS
    out_path = Path(output) if output is not None else None
    fig_dir = (out_path.parent / "figures") if out_path is not None else None
    if fig_dir is not None:
        fig_dir.mkdir(parents=True, exist_ok=True)
    from .baseline_cache import BaselineCache

    cache = None if baseline_cache is False or baseline_cache is None else \
        BaselineCache(None if baseline_cache is True else baseline_cache)
    ctx = EvalContext(dd, meta, predictor, split, chosen, baseline=base, batch_size=batch_size,
                      max_trials=max_trials, figure_dir=fig_dir, progress=progress, seed=seed, baseline_cache=cache)
    if show_costs:
        from .costs import calibrate, estimate_costs, format_costs

        timing = calibrate(ctx, task_list)
        print(format_costs(estimate_costs(ctx, task_list, timing), timing), flush=True)
    skipped = [s for s in dict.fromkeys(str(x) for x in dd[split]["session_id"]) if s not in chosen]
    header = {"dataset": dataset_name, "split": split, "sessions": ", ".join(chosen),
              "sessions not evaluated": ", ".join(skipped) or None,
              "model": getattr(getattr(predictor, "model", None), "name_or_path", None) or predictor.name,
              "quick": (f"yes: fewer folds, CV splits, steps and trials (at most {max_trials} per session); "
                        "not comparable to a full run") if quick else None,
              **(info or {})}
    results: dict[str, Any] = {}
    runtimes: dict[str, float] = {}
    iterator = task_list
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(task_list, desc="tasks", unit="task")
    done, written, last_write = 0, 0, time.perf_counter()

    def write_partial():  # partial results: an interrupted run keeps the finished tasks
        nonlocal written, last_write
        rest = [t.name for t in task_list[done:]]
        status = "complete" if not rest else f"partial: {done} of {len(task_list)} tasks done; not yet run: " \
                                             + ", ".join(rest)
        write_results(results, out_path, tasks=task_list, notes=ctx.notes, figures=ctx.figures,
                      header={**header, "status": status})
        written, last_write = done, time.perf_counter()

    try:
        for i, task in enumerate(iterator):
            if progress:
                iterator.set_postfix_str(task.name)
            t0 = time.perf_counter()
            try:
                results[task.name] = run_task(ctx, task)
            except NotApplicable as err:
                results[task.name] = {"not_applicable": str(err)}
            runtimes[task.name] = time.perf_counter() - t0
            header["runtime"] = ", ".join(f"{k} {v:.1f} s" for k, v in runtimes.items())
            done = i + 1
            # the report (and its summary figure) is rewritten at most every PARTIAL_WRITE_S seconds, and at the end
            if out_path is not None and (done == len(task_list) or time.perf_counter() - last_write >= PARTIAL_WRITE_S):
                write_partial()
    finally:  # interrupted (an error, Ctrl-C): the tasks finished since the last write are written too
        if out_path is not None and written < done:
            write_partial()
    return results
