"""What every task kind is made of: :class:`TaskKind` (name, metrics, baselines, ``validate``, ``cost``,
``quick``, ``run``), the validated :class:`Task`, :class:`TaskError` and the small spec checkers a kind's
``validate`` uses (each raises a :class:`TaskError` naming the file, the field and the value).

Light on purpose: it imports neither numpy, torch nor scipy, so that reading and validating task files
(``recipes/evaluate.py --list_tasks``, a bad ``--task_option``) stays instant.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

if TYPE_CHECKING:  # annotations only
    from nfm.evaluation.context import EvalContext
    from nfm.evaluation.costs import Work


class TaskError(ValueError):
    """A bad task file. The message names the file, the field and the value."""

    def __init__(self, source: str, field: str, message: str):
        self.source, self.field = str(source), str(field)
        super().__init__(f"{source}: field '{field}': {message}")


class NotApplicable(Exception):
    """The task (or one session of it) cannot be scored here; the message is the reason."""


@dataclass
class Task:
    """One validated task spec.  ``spec`` keeps every field of the file (with defaults filled in)."""

    name: str
    kind: str
    modality: str
    primary: str
    metrics: dict[str, list[str]]
    baselines: list[str]
    description: str = ""
    spec: dict[str, Any] = field(default_factory=dict)
    source: str = "<memory>"

    def get(self, key: str, default=None):
        return self.spec.get(key, default)

    def metrics_for(self, variant: str) -> list[str]:
        """Metric names to report for ``variant`` (a modality, or classification/regression for decoding)."""
        if variant in self.metrics:
            return self.metrics[variant]
        return self.metrics.get("any", [])

    def applies_to(self, modality: str) -> bool:
        return self.modality in ("any", modality)


@dataclass(frozen=True)
class TaskKind:
    """One kind of evaluation task (the ``kind:`` of a task file), declared in one module and registered in
    :data:`nfm.evaluation.kinds.TASK_KINDS`.

    Attributes:
        name: the value of ``kind:`` in a task file.
        metrics: ``{variant: metric names}`` the kind can report; a variant is a modality (``spikes``,
            ``calcium``), ``any``, or a kind's own split (``classification`` / ``regression`` for decoding).
            A task's ``metrics`` field is checked against these; without one it reports all of them.
        baselines: the names a task's ``baselines`` field may list.
        validate: ``validate(spec, src) -> variants``: checks the kind's own fields of ``spec`` (a copy of the
            file's mapping; the common fields ``name``, ``modality`` (default ``any``), ``description`` and
            ``column_map`` are already checked), fills in their defaults in place and returns the variants the
            task reports (keys of ``metrics``).  It may narrow ``spec["modality"]`` (e.g. to ``spikes``).  Every
            problem raises :class:`TaskError`.
        run: ``run(ctx, task) -> {metric: value, ..., "per_session": {...}}`` on an
            :class:`~nfm.evaluation.context.EvalContext`; raise :class:`NotApplicable` when the data or the model
            lacks what the task needs.  Either the function or ``"module:function"`` (imported when the task
            runs: the runners of the shipped kinds import torch, their declarations must not).
        cost: ``cost(work, task)``: counts the task's work (trial passes, fits, windows, steps, collated trials)
            into ``work`` (:class:`nfm.evaluation.costs.Work`) without calling the model; None: counted as
            nothing.
        quick: ``quick(task) -> {field: value}``: the overrides of ``--quick`` (fewer folds, steps, trials).
        check_baselines: ``check_baselines(spec, baselines, src)``: checks that need the validated baselines
            (e.g. a baseline the task's mask cannot run); runs after the metrics and baselines are checked.
    """

    name: str
    metrics: Mapping[str, tuple[str, ...]]
    baselines: tuple[str, ...]
    validate: Callable[[dict, str], tuple[str, ...]]
    run: Callable[[EvalContext, Task], dict] | str
    cost: Callable[[Work, Task], None] | None = None
    quick: Callable[[Task], dict] | None = None
    check_baselines: Callable[[dict, list, str], None] | None = None

    def runner(self) -> Callable[[EvalContext, Task], dict]:
        """The ``run`` function (imported here when given as ``"module:function"``)."""
        if callable(self.run):
            return self.run
        module, _, attr = self.run.partition(":")
        return getattr(importlib.import_module(module), attr)


# --------------------------------------------------------------------------- spec checkers
def require(d: dict, key: str, src: str, where: str = ""):
    """``d[key]``, or a TaskError naming ``{where}{key}`` as missing."""
    if key not in d:
        raise TaskError(src, f"{where}{key}", "required field is missing")
    return d[key]


def typed(value, types, src: str, name: str, what: str):
    """``value`` if it is an instance of ``types`` (a bool only where ``bool`` is named), else a TaskError."""
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise TaskError(src, name, f"{value!r} must be {what}")
    if not isinstance(value, types):
        raise TaskError(src, name, f"{value!r} must be {what}")
    return value


def number(d: dict, key: str, default, src: str, where: str, *, positive=True, integer=False, minimum=None):
    """``d[key]`` (default ``default``, written back) checked as an integer or a number (then a float), > 0 unless
    ``positive=False``, >= ``minimum`` when given."""
    v = d.get(key, default)
    name = f"{where}{key}"
    if integer:
        typed(v, int, src, name, "an integer")
    else:
        typed(v, (int, float), src, name, "a number")
        v = float(v)
    if positive and not v > 0:
        raise TaskError(src, name, f"{v!r} must be > 0")
    if minimum is not None and v < minimum:
        raise TaskError(src, name, f"{v!r} must be >= {minimum}")
    d[key] = v
    return v


def str_list(value, src: str, name: str, allowed: Iterable[str] | None = None) -> list[str]:
    """A string or a list of strings as a list, each in ``allowed`` when given."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list) and None in value:
        raise TaskError(src, name, f"{value!r}: YAML reads a bare null as None; write \"null\" in quotes")
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise TaskError(src, name, f"{value!r} must be a list of strings")
    if allowed is not None:
        allowed = tuple(allowed)
        for x in value:
            if x not in allowed:
                raise TaskError(src, name, f"unknown value {x!r}; known: {list(allowed)}")
    return list(value)


def variants_of(spec: dict) -> tuple[str, ...]:
    """The modalities a task of ``spec["modality"]`` reports: both for ``any``, else its own."""
    modality = spec["modality"]
    return ("spikes", "calcium") if modality == "any" else (modality,)


def spikes_only(spec: dict, src: str, what: str) -> tuple[str, ...]:
    """A kind that needs spike data: ``modality`` must be ``spikes`` or ``any`` (narrowed to ``spikes``)."""
    modality = spec["modality"]
    if modality not in ("spikes", "any"):
        raise TaskError(src, "modality", f"{modality!r}: {what}")
    spec["modality"] = "spikes"
    return ("spikes",)


__all__ = ["TaskKind", "Task", "TaskError", "NotApplicable", "require", "typed", "number", "str_list",
           "variants_of", "spikes_only"]
