"""Scores that should worry a reader: a model score below the null model (or chance) or below the best baseline.

One rule, used by ``results.md`` (:mod:`nfm.evaluation.report`), the summary figure
(:func:`nfm.evaluation.plots.plot_summary`) and the model cards (:mod:`nfm.cards`), so the three say the same.

For each task the *primary* metric is compared (the task file's ``primary``; where a result does not have it,
e.g. a 2-photon masking task whose primary is ``bps``, the first of the task's metrics it does have).
Each model score of that metric (``bps``; ``latents/accuracy`` and ``rates/accuracy``; ``mtm/bps``) is flagged
when it is worse than

* the null reference: ``null/<metric>`` (the per-unit mean: 0 bits/spike by definition), or for a decoder
  ``chance`` (the train split's majority class applied to the evaluated trials; accuracy only), or
* the best baseline: the best of ``smoothing/``, ``ridge/``, ``psth/``, ``glm/``, ``spikes/``, ``activity/``,
  ``pearson/``, ``ccg/`` and ``baseline_model/`` for that metric.

"Worse" is lower for every metric except those in :data:`LOWER_IS_BETTER`.  A tie is not flagged.  Each flag is
one line: which reference, its value, and by how much the model is below it (in the metric's own unit).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

#: baselines that are the "nothing learned" reference (not counted as the best baseline)
NULL_REFERENCES = ("null", "chance")
#: baseline prefixes of runner results (``<prefix>/<metric>``), each a fitted or data baseline
BASELINES = ("smoothing", "ridge", "psth", "glm", "spikes", "activity", "pearson", "ccg", "baseline_model")
#: every prefix that marks a reference, not the model
REFERENCE_PREFIXES = tuple(f"{p}/" for p in ("null", *BASELINES, "chance"))
#: metrics where a smaller value is better (distances, losses, negative log-likelihoods)
LOWER_IS_BETTER = frozenset({"gaussian_nll", "delta_nll", "rate_wasserstein_hz", "isi_wasserstein_s", "isi_ks",
                             "id_loss", "dt_loss", "loss"})
#: relative tolerance under which two scores count as equal (no flag)
TIE_RTOL = 1e-9


@dataclass(frozen=True)
class Flag:
    """A model score worse than a reference.  ``margin`` > 0: how far worse, in the metric's unit."""

    task: str
    key: str          # the model's result key, e.g. ``bps`` or ``latents/accuracy``
    value: float
    reference: str    # ``null``, ``chance`` or a baseline name
    reference_value: float
    margin: float
    lower_is_better: bool = False

    @property
    def is_null(self) -> bool:
        return self.reference in NULL_REFERENCES


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


def _g(v: float) -> str:
    return f"{v:.4g}"


def higher_is_better(metric: str) -> bool:
    """False for the metrics of :data:`LOWER_IS_BETTER` (the last path part of ``metric`` is looked up)."""
    return metric.split("/")[-1] not in LOWER_IS_BETTER


def is_reference_key(key: str) -> bool:
    """``null/bps``, ``smoothing/mtm/bps``, ``spikes/accuracy``, ``chance``: a baseline's, not the model's."""
    return key == "chance" or key.startswith(REFERENCE_PREFIXES)


def model_keys(res: Mapping[str, Any], metric: str) -> list[str]:
    """The model's result keys of ``metric``: ``metric`` itself or ``<source>/metric`` (finite values only)."""
    return [k for k, v in res.items() if k != "per_session" and _finite(v) and not is_reference_key(k)
            and (k == metric or k.endswith("/" + metric))]


def reference_value(res: Mapping[str, Any], prefix: str, metric: str) -> float | None:
    """``<prefix>/<metric>`` (or ``<prefix>/<protocol>/<metric>``, e.g. ``null/mtm/bps``); None when absent."""
    if prefix == "chance":
        v = res.get("chance")
        return float(v) if metric.split("/")[-1] == "accuracy" and _finite(v) else None
    if _finite(res.get(f"{prefix}/{metric}")):
        return float(res[f"{prefix}/{metric}"])
    for k, v in res.items():
        if k.startswith(prefix + "/") and k.endswith("/" + metric) and _finite(v):
            return float(v)
    return None


def primary_metric(res: Mapping[str, Any], primary: str | None, candidates: Sequence[str] = ()) -> str | None:
    """The metric a task is judged by: ``primary`` when the model has it, else the first of ``candidates`` the
    model has (a 2-photon masking task reports ``r2``, not its spike primary ``bps``), else None."""
    for m in ([primary] if primary else []) + list(candidates):
        if model_keys(res, m):
            return m
    return None


def default_primary(task_name: str, res: Mapping[str, Any]) -> str | None:
    """:func:`primary_metric` of a shipped task found by name (for results read without their task objects,
    e.g. a training run's ``eval_summary.json``); None for an unknown task."""
    from .tasks import load_tasks

    try:
        (task,) = load_tasks([task_name])
    except Exception:  # not a shipped task: nothing to judge it by
        return None
    return task_primary(task, res)


def task_primary(task, res: Mapping[str, Any]) -> str | None:
    """:func:`primary_metric` with the task's own metric lists as the fallbacks."""
    candidates = [m for ms in task.metrics.values() for m in ms if m != "chance"]
    return primary_metric(res, task.primary, candidates)


def best_baseline(res: Mapping[str, Any], metric: str) -> tuple[str, float] | None:
    """``(name, value)`` of the best non-null baseline of ``metric`` in a task's results, or None."""
    hib = higher_is_better(metric)
    found = [(b, v) for b in BASELINES if (v := reference_value(res, b, metric)) is not None]
    if not found:
        return None
    return (max if hib else min)(found, key=lambda bv: bv[1])


def null_reference(res: Mapping[str, Any], metric: str) -> tuple[str, float] | None:
    """``("null", value)`` or, for a decoder's accuracy, ``("chance", value)``; None when neither is there."""
    for name in NULL_REFERENCES:
        v = reference_value(res, name, metric)
        if v is not None:
            return name, v
    return None


def compare(task: str, key: str, value: float, references: Sequence[tuple[str, float]],
            lower_is_better: bool = False) -> list[Flag]:
    """A :class:`Flag` for each ``(name, value)`` reference that ``value`` is worse than (ties excluded)."""
    out = []
    for name, ref in references:
        margin = (value - ref) if lower_is_better else (ref - value)
        if margin > TIE_RTOL * max(abs(ref), abs(value), 1e-12):
            out.append(Flag(task, key, float(value), name, float(ref), float(margin), lower_is_better))
    return out


def task_flags(task: str, res: Mapping[str, Any], metric: str | None) -> list[Flag]:
    """Every flag of one task's results (``metric``: its primary metric; None: no flags)."""
    if metric is None or not isinstance(res, Mapping) or "not_applicable" in res:
        return []
    refs = [r for r in (null_reference(res, metric), best_baseline(res, metric)) if r is not None]
    lower = not higher_is_better(metric)
    return [f for k in model_keys(res, metric) for f in compare(task, k, float(res[k]), refs, lower)]


def result_flags(results: Mapping[str, Any], tasks: Sequence = ()) -> dict[str, list[Flag]]:
    """``{task: [Flag, ...]}`` of runner results (tasks without a flag left out).  ``tasks``: the
    :class:`~nfm.evaluation.tasks.Task` objects (their primary metric); a task not given is looked up among the
    shipped tasks by name."""
    by_name = {t.name: t for t in tasks}
    out = {}
    for name, res in results.items():
        if not isinstance(res, Mapping) or "not_applicable" in res:
            continue
        metric = task_primary(by_name[name], res) if name in by_name else default_primary(name, res)
        flags = task_flags(name, res, metric)
        if flags:
            out[name] = flags
    return out


def flag_line(flags: Sequence[Flag]) -> str:
    """One line for the flags of one model score: ``co_smoothing: bps -0.26 is below the null model (0) by 0.26
    and below the best baseline smoothing (0.21) by 0.47``."""
    f0 = flags[0]
    word = "above" if f0.lower_is_better else "below"
    parts = []
    for f in flags:
        what = {"null": "the null model", "chance": "chance"}.get(f.reference, f"the best baseline {f.reference}")
        parts.append(f"{word} {what} ({_g(f.reference_value)}) by {_g(f.margin)}")
    return f"{f0.task}: {f0.key} {_g(f0.value)} is " + " and ".join(parts)


def flag_lines(flags_by_task: Mapping[str, Sequence[Flag]]) -> list[str]:
    """One line per flagged model score (see :func:`flag_line`), in task order."""
    lines = []
    for flags in flags_by_task.values():
        by_key: dict[str, list[Flag]] = {}
        for f in flags:
            by_key.setdefault(f.key, []).append(f)
        lines += [flag_line(fs) for fs in by_key.values()]
    return lines
