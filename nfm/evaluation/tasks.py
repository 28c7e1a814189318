"""Evaluation tasks as YAML files (one task per file, like lm-evaluation-harness).

A task file in ``tasks/`` (or any folder given to :func:`load_tasks`) says
what is masked or generated, which metric is reported, which target variable
is decoded and with which decoder.  The runner (:mod:`nfm.evaluation.runner`)
reads these specs and nothing else, so a user adds a task by adding a file.

Common fields
-------------
``name`` (str, defaults to the file stem; must be unique), ``kind`` (a kind of
:data:`nfm.evaluation.kinds.TASK_KINDS`), ``description`` (str), ``modality`` (``spikes``, ``calcium``
or ``any``: a dataset of another modality makes the task *not applicable*),
``primary`` (the metric shown in the summary table), ``metrics`` (list of
metric names, or ``{spikes: [...], calcium: [...]}``; each must be one the
kind knows, see :data:`METRICS`), ``baselines`` (list, see :data:`BASELINES`),
``column_map`` (``{name the task uses: the dataset's name}``: trial columns
and behaviours named differently in another rig, e.g. ``{stimulus_direction:
direction}``; on the command line ``recipes/evaluate.py --task_option
stimulus_direction.column_map.stimulus_direction=direction``).

Kinds and their own fields
--------------------------
Each kind is one :class:`~nfm.evaluation.kinds.base.TaskKind` in :data:`nfm.evaluation.kinds.TASK_KINDS`; its
module's docstring lists its fields: ``masking`` and ``psth`` (:mod:`nfm.evaluation.kinds.masking`), ``decoding``
and ``finetune_decoding`` (:mod:`nfm.evaluation.kinds.decoding`), ``generation``
(:mod:`nfm.evaluation.kinds.generation`), ``connectivity`` (:mod:`nfm.evaluation.kinds.connectivity`).  This
module checks the common fields and hands the rest to the kind.

Every problem raises :class:`TaskError` naming the file, the field and the value.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Iterable

import yaml

from nfm import resources as _resources
from nfm.errors import did_you_mean

from .kinds import TASK_KINDS
from .kinds.base import Task, TaskError
from .kinds.base import str_list as _str_list
from .kinds.base import typed as _typed
from .kinds.decoding import DECODER_PROTOCOLS
from .kinds.masking import MASK_MODES, MASK_PROTOCOLS, PROTOCOL_MODES, PROTOCOL_PREFIX, SMOOTHING_DEFAULTS

#: the shipped task kinds (the registry, :data:`nfm.evaluation.kinds.TASK_KINDS`, may hold more)
KINDS = tuple(TASK_KINDS)
MODALITIES = ("spikes", "calcium", "any")
#: Metric names each shipped kind can report (per modality where it matters); see ``TaskKind.metrics``.
METRICS: dict[str, dict[str, tuple[str, ...]]] = {k.name: dict(k.metrics) for k in TASK_KINDS.values()}
#: Baselines each shipped kind knows; see ``TaskKind.baselines``.
BASELINES: dict[str, tuple[str, ...]] = {k.name: tuple(k.baselines) for k in TASK_KINDS.values()}

#: the tasks shipped with nfm (``nfm/resources/tasks``, shown in the repository as ``tasks/``)
DEFAULT_TASK_DIR = _resources.path("tasks")
TASK_DIR_ENV = "NFM_TASK_DIR"


def validate_task(raw: dict, source: str = "<memory>", default_name: str | None = None) -> Task:
    """Validate a task mapping (as read from YAML); fill in defaults; return a :class:`Task`.

    The common fields are checked here, the kind's own fields by its ``TaskKind.validate``
    (:data:`nfm.evaluation.kinds.TASK_KINDS`); then the metrics and baselines against the kind's lists."""
    src = str(source)
    if not isinstance(raw, dict):
        raise TaskError(src, "<root>", f"a task file must hold a mapping, got {type(raw).__name__}")
    spec = copy.deepcopy(raw)
    name = spec.setdefault("name", default_name)
    if not isinstance(name, str) or not name or not name.replace("_", "").replace("-", "").isalnum():
        raise TaskError(src, "name", f"{name!r} must be a non-empty name of letters, digits, '_' or '-'")
    if "kind" not in spec:
        raise TaskError(src, "kind", f"required field is missing; known kinds: {list(TASK_KINDS)}")
    kind_name = spec["kind"]
    kind = TASK_KINDS.get(kind_name) if isinstance(kind_name, str) else None
    if kind is None:
        raise TaskError(src, "kind", f"{kind_name!r} is not one of the known kinds {list(TASK_KINDS)} (a new kind "
                                     "is registered in nfm.evaluation.kinds)")
    modality = spec.setdefault("modality", "any")
    if modality not in MODALITIES:
        raise TaskError(src, "modality", f"{modality!r} is not one of {list(MODALITIES)}")
    description = spec.setdefault("description", "")
    _typed(description, str, src, "description", "a string")

    cmap = spec.setdefault("column_map", {})
    if not isinstance(cmap, dict) or not all(isinstance(k, str) and isinstance(v, str) and v
                                             for k, v in cmap.items()):
        raise TaskError(src, "column_map", f"{cmap!r} must map the task's names to the dataset's names (strings)")

    variants = tuple(kind.validate(spec, src))
    modality = spec["modality"]  # a kind may narrow it (generation, connectivity: spikes)

    known = kind.metrics
    raw_metrics = spec.get("metrics")
    metrics: dict[str, list[str]] = {}
    if raw_metrics is None:
        metrics = {v: list(known.get(v, known.get("any", ()))) for v in variants}
    elif isinstance(raw_metrics, dict):
        for key, value in raw_metrics.items():
            if key not in known:
                raise TaskError(src, f"metrics.{key}", f"unknown variant; known: {list(known)}")
            metrics[key] = _str_list(value, src, f"metrics.{key}", known[key])
    else:
        lst = _str_list(raw_metrics, src, "metrics")
        for v in variants:
            allowed = known.get(v, known.get("any", ()))
            for m in lst:
                if m not in allowed:
                    raise TaskError(src, "metrics", f"unknown metric {m!r} for a {kind.name} task ({v}); known: "
                                                    f"{list(allowed)}")
            metrics[v] = list(lst)
    if not any(metrics.values()):
        raise TaskError(src, "metrics", "no metric to report")
    baselines = _str_list(spec.get("baselines", []), src, "baselines", kind.baselines)
    if kind.check_baselines is not None:
        kind.check_baselines(spec, baselines, src)
    all_metrics = [m for ms in metrics.values() for m in ms]
    primary = spec.setdefault("primary", all_metrics[0])
    if primary not in all_metrics:
        raise TaskError(src, "primary", f"{primary!r} is not one of the task's metrics {all_metrics}")
    return Task(name=name, kind=kind.name, modality=modality, primary=primary, metrics=metrics, baselines=baselines,
                description=description, spec=spec, source=src)


def load_task_file(path: str | os.PathLike) -> Task:
    """Read and validate one task YAML file (``yaml.safe_load``: no Python objects are built)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise TaskError(str(path), "<yaml>", f"not valid YAML: {err}") from err
    return validate_task(raw, str(path), default_name=path.stem)


def task_dir(path: str | os.PathLike | None = None) -> Path:
    """The task folder: ``path``, else ``$NFM_TASK_DIR``, else the tasks shipped with nfm (``tasks/``)."""
    p = Path(path or os.environ.get(TASK_DIR_ENV) or DEFAULT_TASK_DIR)
    if not p.is_dir():
        raise FileNotFoundError(f"task folder {p} does not exist (set --task_dir or ${TASK_DIR_ENV})")
    return p


def available_tasks(path: str | os.PathLike | None = None) -> dict[str, Task]:
    """Every task of a folder (``*.yaml`` / ``*.yml``), validated, by name.  Duplicate names raise."""
    folder = task_dir(path)
    out: dict[str, Task] = {}
    for f in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        t = load_task_file(f)
        if t.name in out:
            raise TaskError(str(f), "name", f"{t.name!r} is also defined in {out[t.name].source}")
        out[t.name] = t
    return out


def load_tasks(names: str | Iterable[str] | None = "all", path: str | os.PathLike | None = None,
               overrides: dict[str, dict] | None = None, quick: bool = False) -> list[Task]:
    """Tasks by name (``"all"``, ``"a,b"``, a list; an entry ending in ``.yaml`` is read as a file).

    ``overrides``: ``{task name: {field: value}}`` merged (recursively for mappings) into the file's
    fields before validation, e.g. ``{"choice": {"decoder": {"Cs": [0.1, 1.0]}}}``; ``quick``: the
    :func:`quick_overrides` first (``overrides`` win over them).  An unknown name raises ``KeyError`` with the
    closest task name.
    """
    overrides = dict(overrides or {})
    if names is None or names == "all" or names == ["all"]:
        wanted = None
    else:
        wanted = [n.strip() for n in (names.replace(",", " ").split() if isinstance(names, str) else names)
                  if n.strip()]
        if not wanted:
            raise ValueError("no task names given")
    files = [n for n in (wanted or []) if n.endswith((".yaml", ".yml"))]
    by_name = available_tasks(path) if (wanted is None or len(files) < len(wanted)) else {}
    tasks: list[Task] = []
    if wanted is None:
        tasks = list(by_name.values())
    else:
        for n in wanted:
            if n.endswith((".yaml", ".yml")):
                tasks.append(load_task_file(n))
            elif n in by_name:
                tasks.append(by_name[n])
            else:
                raise KeyError(f"unknown task {n!r}; {did_you_mean(n, sorted(by_name), 'tasks')}")
    unknown = set(overrides) - {t.name for t in tasks}
    if unknown:
        raise KeyError(f"overrides for task(s) {sorted(unknown)} that are not selected")
    out = []
    for t in tasks:
        extra = _merge(quick_overrides(t), overrides.get(t.name, {})) if quick else overrides.get(t.name)
        if extra:
            what = " (with --quick)" if quick else ""
            what = f" (with{' --quick and' if quick else ''} overrides)" if t.name in overrides else what
            t = validate_task(_merge(_original(t), extra), t.source + what, default_name=t.name)
        out.append(t)
    return out


#: ``--quick``: trials per session kept in every task (unless ``max_trials`` is given)
QUICK_MAX_TRIALS = 32


def quick_overrides(task: Task) -> dict:
    """Field overrides of ``--quick`` (a first look: scores are noisier and not comparable to a full run).

    masking / psth: 2 held-out folds (neuron, intra-region masks); decoding: 2 CV folds (inside the train
    split; outer and inner with ``cv_all_splits``) and every other value of the regularisation grid;
    fine-tuned decoding: 25 training steps; generation: 4 trials per session (and the ``glm`` simulation
    baseline fitted on the first :data:`QUICK_MAX_TRIALS` training trials, 2 CV folds, every other penalty);
    connectivity: 8 trials per session.  Evaluated trials are also capped at
    :data:`QUICK_MAX_TRIALS` per session (the runner's ``max_trials``).
    """
    kind = TASK_KINDS.get(task.kind)
    return kind.quick(task) if kind is not None and kind.quick is not None else {}


def _original(t: Task) -> dict:
    return copy.deepcopy(t.spec)


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


__all__ = ["Task", "TaskError", "TASK_KINDS", "KINDS", "METRICS", "BASELINES", "DECODER_PROTOCOLS", "MASK_MODES",
           "MASK_PROTOCOLS", "PROTOCOL_MODES", "PROTOCOL_PREFIX", "SMOOTHING_DEFAULTS", "validate_task", "load_task_file",
           "available_tasks", "load_tasks", "quick_overrides", "QUICK_MAX_TRIALS", "task_dir", "DEFAULT_TASK_DIR"]
