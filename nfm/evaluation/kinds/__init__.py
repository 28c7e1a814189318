"""The registry of evaluation task kinds (the ``kind:`` of a task file).

A kind is one :class:`~nfm.evaluation.kinds.base.TaskKind`, declared in one module: its name, the metrics and
baselines it knows, ``validate`` (its own fields of a task file), ``cost`` (its work, counted before it runs),
``quick`` (the ``--quick`` overrides) and ``run`` (the runner).  :func:`nfm.evaluation.tasks.validate_task`,
:func:`nfm.evaluation.costs.count_work` and :func:`nfm.evaluation.runner.evaluate` dispatch through
:data:`TASK_KINDS` and know no kind by name.

The shipped kinds (each module's docstring lists its task-file fields):

========================  ============================================  ==========================================
kind                      declared in                                   runs in
========================  ============================================  ==========================================
``masking``, ``psth``     :mod:`nfm.evaluation.kinds.masking`           :mod:`nfm.evaluation.masking_tasks`
``decoding``,             :mod:`nfm.evaluation.kinds.decoding`          :mod:`nfm.evaluation.decoding_tasks`
``finetune_decoding``
``generation``            :mod:`nfm.evaluation.kinds.generation`        :mod:`nfm.evaluation.generation_tasks`
``connectivity``          :mod:`nfm.evaluation.kinds.connectivity`      :mod:`nfm.evaluation.connectivity_tasks`
========================  ============================================  ==========================================

The declarations import neither numpy nor torch (task files are read and checked instantly); the shipped kinds
name their runner as ``"module:function"``, imported when a task runs.

Adding a kind: write one module (e.g. ``nfm/evaluation/kinds/my_kind.py``) that builds ``MY_KIND =
TaskKind(name="my_kind", metrics=..., baselines=..., validate=..., run=..., cost=..., quick=...)`` and add it to
the tuple below; a task file with ``kind: my_kind`` then validates, is costed and runs.  Code outside nfm (a
plugin, a test) calls :func:`register_kind` instead.
"""
from __future__ import annotations

from .base import NotApplicable, Task, TaskError, TaskKind
from .connectivity import CONNECTIVITY
from .decoding import DECODING, FINETUNE_DECODING
from .generation import GENERATION
from .masking import MASKING, PSTH

#: every known task kind by name (the order is the one the error messages list)
TASK_KINDS: dict[str, TaskKind] = {k.name: k for k in (
    MASKING, PSTH, DECODING, FINETUNE_DECODING, GENERATION, CONNECTIVITY,
)}


def register_kind(kind: TaskKind, *, replace: bool = False) -> TaskKind:
    """Add ``kind`` to :data:`TASK_KINDS` (``replace=True``: over a kind of the same name) and return it."""
    if not isinstance(kind, TaskKind):
        raise TypeError(f"register_kind takes a TaskKind, got {type(kind).__name__}")
    if kind.name in TASK_KINDS and not replace and TASK_KINDS[kind.name] is not kind:
        raise ValueError(f"a task kind {kind.name!r} is already registered (pass replace=True to replace it)")
    TASK_KINDS[kind.name] = kind
    return kind


def get_kind(name: str) -> TaskKind:
    """The registered kind ``name``; a KeyError listing the known kinds otherwise."""
    try:
        return TASK_KINDS[name]
    except (KeyError, TypeError):
        raise KeyError(f"unknown task kind {name!r}; known kinds: {list(TASK_KINDS)}") from None


__all__ = ["TASK_KINDS", "TaskKind", "Task", "TaskError", "NotApplicable", "register_kind", "get_kind"]
