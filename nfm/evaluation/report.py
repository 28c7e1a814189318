"""Evaluation reports: ``results.json`` (NaN -> null), ``results.md`` and ``figures/summary.png``.

``results.md`` opens with a summary table (per task: the primary metric of the model, its null model or chance,
its best baseline and the other baselines), then a *Warnings* list: one line for every model score below its null
model, chance or best baseline (:mod:`nfm.evaluation.flags`: which reference and by how much), then one table
per task.  ``summary.png`` shows the same comparison (:func:`nfm.evaluation.plots.plot_summary`)."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from nfm.evaluation import flags
from nfm.evaluation.tasks import Task

def jsonable(x):
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return x if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def _primary(name: str, res: dict, by_name: dict) -> str | None:
    """The metric a task's row shows (:func:`nfm.evaluation.flags.task_primary`; the shipped task of that name
    when no task object was given)."""
    if name in by_name:
        return flags.task_primary(by_name[name], res)
    return flags.default_primary(name, res)


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "nan"
        return f"{v:.4g}"
    return str(v)


def render_markdown(results: dict, tasks: Sequence[Task] | None = None, notes: dict | None = None,
                    figures: dict | None = None, header: dict | None = None, figure_root: Path | None = None) -> str:
    """The ``results.md`` report: summary table (model and baselines side by side) and one section per task."""
    by_name = {t.name: t for t in (tasks or [])}
    lines = ["# nfm evaluation", ""]
    for k, v in (header or {}).items():
        if v is not None:
            lines.append(f"- {k}: {v}")
    lines += ["", "## Summary", "",
              "| task | metric | model | null / chance | best baseline | other baselines |",
              "| --- | --- | --- | --- | --- | --- |"]
    flagged = flags.result_flags(results, list(by_name.values()))
    for name, res in results.items():
        if "not_applicable" in res:
            lines.append(f"| {name} | – | not applicable: {res['not_applicable']} |  |  |  |")
            continue
        primary = _primary(name, res, by_name)
        if primary is None:
            lines.append(f"| {name} | – | – |  |  |  |")
            continue
        null = flags.null_reference(res, primary)
        best = flags.best_baseline(res, primary)
        others = [(b, v) for b in flags.BASELINES if (v := flags.reference_value(res, b, primary)) is not None
                  and (best is None or b != best[0])]
        model = ", ".join(f"{k} {_fmt(res[k])}" if k != primary else _fmt(res[k])
                          for k in flags.model_keys(res, primary)) or "–"
        row = [name, primary, model + (" ⚠" if name in flagged else ""),
               f"{null[0]} {_fmt(null[1])}" if null else "–", f"{best[0]} {_fmt(best[1])}" if best else "–",
               ", ".join(f"{b} {_fmt(v)}" for b, v in others) or "–"]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Bits/spike (`bps`) is pooled over neurons and sessions (NLB); `bps_neuron_mean` averages "
              "per-neuron values. `null/bps` is 0 by definition. Baselines are prefixed by their name.", ""]
    warn = flags.flag_lines(flagged)
    lines += ["### Warnings", "", *(f"- ⚠ {w}" for w in warn), ""] if warn else \
        ["No score is below its null model, chance or best baseline.", ""]
    for name, res in results.items():
        lines += [f"## {name}", ""]
        t = by_name.get(name)
        if t is not None and t.description:
            lines += [t.description, ""]
        if "not_applicable" in res:
            lines += [f"Not applicable: {res['not_applicable']}", ""]
            continue
        task_warn = flags.flag_lines({name: flagged[name]}) if name in flagged else []
        lines += [*(f"- ⚠ {w}" for w in task_warn), *([""] if task_warn else [])]
        lines += ["| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in res.items() if k != "per_session"]
        per = res.get("per_session", {})
        cols = list(dict.fromkeys(k for e in per.values() for k in e if k != "not_applicable"))
        if per:
            lines += ["", "| session | " + " | ".join(cols) + " |", "| --- |" + " --- |" * len(cols)]
            for sid, e in per.items():
                if "not_applicable" in e:
                    lines.append(f"| {sid} | not applicable: {e['not_applicable']} |" + " |" * (len(cols) - 1))
                else:
                    lines.append(f"| {sid} | " + " | ".join(_fmt(e.get(c)) for c in cols) + " |")
        for n in (notes or {}).get(name, []):
            lines.append(f"\n- note: {n}")
        for f in (figures or {}).get(name, []):
            rel = os.path.relpath(f, figure_root) if figure_root is not None else f
            lines += ["", f"![{name}]({rel})"]
        lines.append("")
    return "\n".join(lines) + "\n"


def summary_entry(res: dict, primary: str) -> dict[str, float]:
    """One panel of the summary figure: ``{"model": v, "null" or "chance": v, <baseline>: v, ...}`` for the
    primary metric (the first model score of it, e.g. ``latents/accuracy``); absent references left out."""
    keys = flags.model_keys(res, primary)
    entry = {"model": float(res[keys[0]])} if keys else {}
    null = flags.null_reference(res, primary)
    if null is not None:
        entry[null[0]] = null[1]
    for b in flags.BASELINES:
        v = flags.reference_value(res, b, primary)
        if v is not None:
            entry[b] = v
    return entry


def write_results(results: dict, output: str | os.PathLike, *, tasks: Sequence[Task] | None = None,
                  notes: dict | None = None, figures: dict | None = None, header: dict | None = None) -> Path:
    """Write ``results.json`` (NaN -> null), ``results.md`` and ``figures/summary.png`` beside it."""
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(jsonable(results), indent=1, allow_nan=False))
    os.replace(tmp, out)
    figures = dict(figures or {})
    try:
        from nfm.evaluation import plots

        by_name = {t.name: t for t in (tasks or [])}
        summary, metrics = {}, {}
        for name, res in results.items():
            if "not_applicable" in res or name not in by_name:
                continue
            primary = flags.task_primary(by_name[name], res)
            if primary is not None:
                summary[name] = summary_entry(res, primary)
                metrics[name] = primary
        if summary:
            path = plots.plot_summary(summary, out.parent / "figures" / "summary.png", metrics=metrics)
            figures = {"summary": [str(path)], **figures}
    finally:
        md = render_markdown(results, tasks, notes, {k: v for k, v in figures.items() if k != "summary"},
                             header, figure_root=out.parent)
        if "summary" in figures:
            rel = os.path.relpath(figures["summary"][0], out.parent)
            md = md.replace("## Summary\n", f"## Summary\n\n![summary]({rel})\n", 1)
        out.with_suffix(".md").write_text(md)
    return out
