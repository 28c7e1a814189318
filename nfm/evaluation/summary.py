"""The evaluation that recipes run at the end of training (``eval_summary.json``): a bounded summary.

It is the evaluation runner's task code (:func:`nfm.evaluation.runner.run_task` on an
:class:`~nfm.evaluation.context.EvalContext` built as :func:`nfm.evaluation.runner.evaluate` builds it), so the
numbers of a training summary are exactly those ``recipes/evaluate.py`` reports for the same model, data,
split, tasks, sessions and trial cap (same masks, same folds, same baselines), plus the teacher-forced
generation losses when the model has an event decoder.

The bound (the default of the recipes)
--------------------------------------
A summary may take at most ``max(10% of the training time it follows, 60 s)`` (:func:`summary_budget`;
``budget_s`` sets another bound, 0 none).  Within it:

* the short task list (:data:`SUMMARY_TASKS`, the masked-prediction tasks, as their task files define them:
  the numbers are comparable with a full ``recipes/evaluate.py`` run) and the smoothing baseline read from the
  baseline cache (:mod:`nfm.evaluation.baseline_cache`) when an earlier run on the same data fitted it;
* a pilot on the first session, planned with the cost estimate (:func:`nfm.evaluation.costs.calibrate` on this
  machine: one batch, one smoothing-baseline fit only when a fit is due): fewer trials per session (halved, down
  to :data:`MIN_TRIALS`) while its estimate does not fit in 60% of the time left;
* then more sessions, in order, while their estimates (scaled by how far the pilot's was off) fit in 60% of the
  time left; every task runs again on all of them together with the first (its collated trials, model passes
  and cached baseline are reused), so each task is scored on the same sessions;
* one progress line per task (and one before a task estimated at 2 s or more); a task whose estimate (scaled by
  how far the finished ones were off) no longer fits in the time left is skipped, and the generation losses
  stop before the bound;
* the result's ``bound`` entry says what was cut (fewer trials, fewer sessions, skipped tasks; ``cut: []`` when
  nothing was) and holds the one command of the full evaluation (``recipes/evaluate.py --model <dir> ...``),
  which the summary also prints.

With ``budget_s=0`` the summary is the evaluation of ``tasks`` on the whole split (or ``max_trials`` per
session), unbounded, as before.
"""
from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Sequence

import numpy as np
import torch

from nfm.data.subsets import rows, subset_split

#: tasks of the training-end summary: the masked-prediction tasks (each unit scored once; co-smoothing also
#: against the NLB smoothing baseline fitted on the train split)
SUMMARY_TASKS = ("co_smoothing", "forward_prediction", "intra_region", "inter_region")
#: the summary's default bound: this share of the training time ...
SUMMARY_FRACTION = 0.10
#: ... or this many seconds, whichever is larger
SUMMARY_MIN_S = 60.0
#: the plan keeps the estimate under this share of the bound (the estimate is rough, x2 either way)
PLAN_SHARE = 0.6
#: fewest trials per session the plan goes down to before it drops sessions
MIN_TRIALS = 8


def summary_budget(train_seconds: float | None) -> float:
    """The default bound of a training summary [s]: ``max(SUMMARY_FRACTION * train_seconds, SUMMARY_MIN_S)``
    (10% of the training time, at least 60 s)."""
    return max(SUMMARY_FRACTION * float(train_seconds or 0.0), SUMMARY_MIN_S)


def compact(results: dict[str, Any]) -> dict[str, Any]:
    """Runner results without the per-session breakdowns (for model cards and console lines)."""
    return {task: ({k: v for k, v in res.items() if k != "per_session"} if isinstance(res, dict) else res)
            for task, res in results.items()}


@torch.no_grad()
def generation_losses(model, dd, meta, split: str, session_ids: Sequence[str], batch_size: int = 16,
                      max_trials: int | None = None, deadline: float | None = None) -> dict[str, float] | None:
    """Mean teacher-forced ``id_loss`` / ``dt_loss`` [nats / token] of the event decoder on a split (every window
    of each trial), or None for a model without a decoder.  ``deadline`` (a ``time.perf_counter()`` value): stop
    before a batch that would end past it (at least one batch runs); ``trials`` / ``trials_total`` then say how
    many were scored (the recipes' summary moves them into its ``bound`` entry)."""
    from nfm.data.collate import NfmCollator
    from nfm.data.sampler import SessionBatchSampler

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
    n_done = 0
    try:
        t0 = time.perf_counter()
        for idx in SessionBatchSampler(list(ds["session_id"]), batch_size=batch_size, shuffle=False):
            # stop before a batch that would end past the deadline (the mean batch time so far)
            if deadline is not None and ids and time.perf_counter() + (time.perf_counter() - t0) / len(ids) > deadline:
                break
            batch = collator(rows(ds, idx))
            spikes = batch.pop("spikes").to(device)
            batch = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
            out = base.generation_outputs(spikes, **{k: batch.get(k) for k in (
                "unit_mask", "unit_region", "session_ids", "event_times", "event_units", "event_mask", "stimulus",
                "behavior", "bin_size")})
            ids.append(float(out.id_loss))
            dts.append(float(out.dt_loss))
            n_done += len(idx)
    finally:
        base.train(was_training)
    out = {"id_loss": float(np.mean(ids)), "dt_loss": float(np.mean(dts))}
    if deadline is not None:
        out.update(trials=n_done, trials_total=len(ds))
    return out


def _first_per_session(session_ids: list[str], n: int) -> list[int]:
    seen: dict[str, int] = {}
    keep = []
    for i, s in enumerate(session_ids):
        if seen.get(s, 0) < n:
            keep.append(i)
            seen[s] = seen.get(s, 0) + 1
    return keep


def full_evaluation_command(model_dir: str | None, split: str, tasks: Sequence[str], *, dataset: str | None = None,
                            adapter: str | None = None, sessions: str | None = None) -> str:
    """The ``recipes/evaluate.py`` command of the full evaluation a bounded summary stands in for."""
    from pathlib import Path

    from nfm.cli import recipe_command

    recipes = Path(__file__).resolve().parents[2] / "recipes"
    parts = [recipe_command("evaluate.py", recipes) if recipes.is_dir() else "python recipes/evaluate.py",
             "--model", str(model_dir or "<model folder>")]
    if adapter:
        parts += ["--adapter", str(adapter)]
    if dataset:
        parts += ["--dataset", str(dataset)]
    parts += ["--split", split, "--tasks", ",".join(tasks)]
    if sessions:
        parts += ["--sessions", sessions]
    return " ".join(parts)


def end_of_training_summary(model, dd, meta, session_ids: Sequence[str], *, split: str = "validation",
                            tasks: Sequence[str] = SUMMARY_TASKS, batch_size: int = 16,
                            max_trials: int | None = None, seed: int = 0, budget_s: float | None = None,
                            train_seconds: float | None = None, parts: int = 1, full_command: str | None = None,
                            baseline_cache: bool = True, log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Evaluate a freshly trained model (or a PEFT model around one) on ``split`` of ``session_ids``, within a
    time bound (see the module docstring for the rule).

    ``budget_s``: the bound [s]; None (default): :func:`summary_budget` of ``train_seconds``; 0: no bound (the
    evaluation of ``tasks`` on the whole split, or ``max_trials`` per session).  ``parts``: this summary is
    one of that many sharing the bound (one per dataset of a mixed run): it gets ``1 / parts`` of it.
    ``full_command``: the ``recipes/evaluate.py`` command of the full evaluation (printed and recorded; default:
    one built from the model's ``name_or_path``).  ``log``: where progress lines go (None: silent).

    Returns ``{"split", "sessions", "tasks": {task: runner metrics (with per_session)}, "generation": {...},
    "bound": {...}}``; ``tasks`` is exactly what ``evaluate(model, (dd, meta), tasks, split,
    sessions=bound["sessions_evaluated"], max_trials=bound["max_trials"])`` returns for the tasks it ran
    (``bound["skipped"]`` lists the others).  The model is scored as saved: in float32, autocast off.
    """
    t_start = time.perf_counter()
    base = model
    if hasattr(model, "merge_and_unload"):  # a PEFT model: evaluate the merged weights (as evaluate.py --adapter)
        import copy

        from nfm.adapters import merge_adapter

        base = merge_adapter(copy.deepcopy(model))
    was_training = base.training
    say = log or (lambda _line: None)
    bounded = budget_s is None or float(budget_s) > 0
    budget = (summary_budget(train_seconds) if budget_s is None else float(budget_s)) / max(int(parts), 1) \
        if bounded else None
    tasks = list(tasks)
    if full_command is None:
        full_command = full_evaluation_command(getattr(base, "name_or_path", None) or None, split, tasks)
    try:
        dev = next(base.parameters()).device.type
        with torch.autocast(dev, enabled=False) if torch.is_autocast_enabled(dev) else contextlib.nullcontext():
            out = _run(base, dd, meta, list(session_ids), split, tasks, batch_size, max_trials, seed, budget,
                       t_start, baseline_cache, say, train_seconds, budget_s is None, int(parts))
    finally:
        base.train(was_training)
    bound = out["bound"]
    bound["full_evaluation"] = full_command
    bound["elapsed_s"] = round(time.perf_counter() - t_start, 2)
    if bounded:
        cut = "; ".join(bound["cut"]) if bound["cut"] else "nothing cut"
        say(f"summary: {bound['elapsed_s']:.1f} s of a {budget:.0f} s bound ({bound['rule']}): {cut}")
    say(f"full evaluation: {full_command}")
    return out


def _run(base, dd, meta, session_ids, split, tasks, batch_size, max_trials, seed, budget, t_start, baseline_cache,
         say, train_seconds, budget_rule_default, parts) -> dict[str, Any]:
    from .baseline_cache import BaselineCache
    from .context import EvalContext, check_compatibility, select_sessions
    from .costs import calibrate, estimate_costs
    from .masking_tasks import smoothing_cached
    from .predictor import as_predictor
    from .tasks import load_tasks

    bounded = budget is not None
    predictor = as_predictor(base, "model")
    chosen = select_sessions(meta, dd, split, predictor, session_ids)
    predictor = predictor.bind(meta, chosen)
    check_compatibility(predictor, meta, chosen)
    task_list = load_tasks(tasks)
    trials = int(max_trials) if max_trials else None
    cache = BaselineCache() if baseline_cache else None

    def context(sessions, n_trials, share=None):
        ctx = EvalContext(dd, meta, predictor, split, list(sessions), batch_size=batch_size, max_trials=n_trials,
                          seed=seed, baseline_cache=cache)
        if share is not None and share.max_trials == n_trials:  # collated trials and model passes, reused
            ctx._sessions = share._sessions
            # (not the smoothing baselines: read again, from the baseline cache, each records its CV choice)
            ctx._pred = {k: v for k, v in share._pred.items() if not (isinstance(k, tuple) and k[0] == "smoothing")}
        return ctx

    if not bounded:
        results, _, _ = _run_tasks(context(chosen, trials), task_list, None, None, None, say)
        out: dict[str, Any] = {"split": split, "sessions": list(chosen), "tasks": results}
        gen = generation_losses(base, dd, meta, split, chosen, batch_size=batch_size, max_trials=trials)
        if gen is not None:
            out["generation"] = gen
        out["bound"] = {"budget_s": None, "rule": "no bound", "max_trials": trials,
                        "sessions_evaluated": list(chosen), "sessions_asked": list(chosen), "skipped": [], "cut": []}
        return out

    rule = (f"max({100 * SUMMARY_FRACTION:.0f}% of {train_seconds:.0f} s of training, {SUMMARY_MIN_S:.0f} s)"
            if budget_rule_default and train_seconds is not None else "set by --eval_budget_s")
    if parts > 1:
        rule += f", shared by {parts} datasets"
    deadline = t_start + budget

    def left() -> float:
        return deadline - time.perf_counter()

    say(f"summary: bounded to {budget:.0f} s ({rule}): {len(task_list)} tasks on {len(chosen)} session(s)"
        + (f", at most {trials} trials each" if trials else "")
        + ", the smoothing baseline from the cache where an earlier run fitted it")

    def glm_due(ctx, sid) -> bool:  # a smoothing-baseline fit is due for this session (not in the cache)
        return meta.modality == "spikes" and any(
            "smoothing" in t.baselines and t.kind in ("masking", "psth")
            and t.spec.get("mask", {}).get("mode") != "forward" and not smoothing_cached(ctx, sid, t)
            for t in task_list)

    # 1. a pilot on the first session, planned with the cost estimate (calibrated on this machine: one batch, and
    #    one smoothing-baseline fit only when a fit is due): fewer trials while one session would not fit
    first = chosen[0]
    while True:
        pool = context(chosen, trials)  # its collated trials are shared by every context of this plan
        pilot = context([first], trials, share=pool)
        timing = calibrate(pilot, task_list if glm_due(pilot, first) else [])
        est = [c.seconds or 0.0 for c in estimate_costs(pilot, task_list, timing)]
        n_in_split = {s: int(np.count_nonzero(pilot._session_rows(split) == s)) for s in chosen}
        longest = min(trials or 10 ** 9, max(n_in_split.values()))
        if sum(est) <= PLAN_SHARE * left() or longest <= MIN_TRIALS:
            break
        trials = max(MIN_TRIALS, longest // 2)
    say(f"summary: session 1 of {len(chosen)} ({first}), estimate {sum(est):.1f} s")
    results, took, skipped = _run_tasks(pilot, task_list, est, left, "summary (session 1)", say)
    # 2. more sessions, in order, while their estimates -- scaled by how far the pilot's was off -- fit in 60% of
    #    the time left; then every task again on all of them (the pilot's collated trials, model passes and cached
    #    baseline are reused), so each task is scored on the same sessions
    ran = [i for i, t in enumerate(task_list) if t.name in took]
    guess = sum(est[i] for i in ran)
    scale = min(max(sum(took.values()) / guess, 0.5), 4.0) if guess > 0.05 else 1.0
    rest = [t for t in task_list if t.name not in skipped]
    sessions, per_task = [first], [0.0] * len(rest)
    room = PLAN_SHARE * left()
    for sid in chosen[1:]:
        if room <= 0:
            break
        one = context([sid], trials, share=pool)
        if "glm" not in timing and glm_due(one, sid):
            timing = calibrate(one, rest)  # the first session with a baseline fit due: time one fit
        costs = [(c.seconds or 0.0) * scale for c in estimate_costs(one, rest, timing)]
        room = PLAN_SHARE * left() - sum(per_task)
        if sum(costs) > room:
            break
        sessions.append(sid)
        per_task = [a + b for a, b in zip(per_task, costs)]
    if len(sessions) > 1:
        ctx = context(sessions, trials, share=pilot)
        say(f"summary: {len(sessions)} of {len(chosen)} sessions, estimate {sum(per_task):.1f} s")
        results, _, skipped2 = _run_tasks(ctx, rest, per_task, left, f"summary ({len(sessions)} sessions)", say,
                                          prior=(sum(took.values()), guess * scale))
        skipped = skipped + skipped2  # (a task is scored on every evaluated session or skipped)
    bound: dict[str, Any] = {"budget_s": round(budget, 1), "rule": rule, "max_trials": trials,
                             "sessions_evaluated": list(sessions), "sessions_asked": list(chosen),
                             "skipped": skipped, "cut": [], "estimate_scale": round(scale, 2)}
    capped = [s for s in sessions if trials and n_in_split[s] > trials and trials != max_trials]
    if capped:
        bound["cut"].append(f"{trials} trials per session (of up to {max(n_in_split[s] for s in capped)})")
    if len(sessions) < len(chosen):
        bound["cut"].append(f"{len(sessions)} of {len(chosen)} sessions ({', '.join(sessions)})")
    if skipped:
        bound["cut"].append(f"skipped {', '.join(skipped)} (would not fit)")
    out = {"split": split, "sessions": list(sessions), "tasks": results}
    gen = generation_losses(base, dd, meta, split, sessions, batch_size=batch_size, max_trials=trials,
                            deadline=deadline)
    if gen is not None:
        done, total = gen.pop("trials"), gen.pop("trials_total")
        bound["generation_trials"] = [done, total]
        if done < total:
            bound["cut"].append(f"generation losses on {done} of {total} trials")
        out["generation"] = gen
    out["bound"] = bound
    return out


def _run_tasks(ctx, task_list, estimates, left, label, say, prior=(0.0, 0.0)):
    """Run the tasks on ``ctx`` as the evaluation runner does -> (results, seconds per task run, skipped names).
    With ``estimates`` and ``left()`` (seconds left): a task whose estimate, scaled by how far the finished ones
    (and ``prior``: (seconds taken, seconds estimated) before) were off, exceeds the time left is skipped."""
    from .predictor import NotApplicable
    from .runner import run_task

    results: dict[str, Any] = {}
    took: dict[str, float] = {}
    skipped: list[str] = []
    spent, guessed = prior
    n = len(task_list)
    for i, task in enumerate(task_list):
        est = estimates[i] if estimates is not None else None
        head = f"{label or 'summary'} [{i + 1}/{n}] {task.name}"
        if est is not None and left is not None:
            scaled = est * (spent / guessed if guessed > 0 else 1.0)
            if scaled > left():
                skipped.append(task.name)
                say(f"{head}: skipped (~{scaled:.0f} s, {max(left(), 0):.0f} s left)")
                continue
        if label is not None and (est is None or est >= 2.0):  # a long one: say so before it starts
            say(f"{head}" + (f" (~{est:.0f} s)" if est is not None else "") + " ...")
        t0 = time.perf_counter()
        try:
            results[task.name] = run_task(ctx, task)
        except NotApplicable as err:
            results[task.name] = {"not_applicable": str(err)}
        took[task.name] = time.perf_counter() - t0
        if est:
            spent, guessed = spent + took[task.name], guessed + est
        if label is not None:
            say(f"{head}: {took[task.name]:.1f} s" + (f" (estimate {est:.1f} s)" if est is not None else ""))
    return results, took, skipped


__all__ = ["SUMMARY_TASKS", "SUMMARY_FRACTION", "SUMMARY_MIN_S", "summary_budget", "end_of_training_summary",
           "full_evaluation_command", "generation_losses", "compact"]
