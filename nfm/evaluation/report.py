"""Evaluation reports: ``results.json`` (NaN -> null), ``results.md`` (summary table with the baselines, one
table per task) and ``figures/summary.png``."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np

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


def _summary_value(res: dict, primary: str, prefix: str = "") -> float | None:
    """The task's primary metric for the model (prefix '') or a baseline (prefix 'null/', ...)."""
    if prefix + primary in res:
        return res[prefix + primary]
    for k, v in res.items():
        if k == "per_session" or not isinstance(v, (int, float)):
            continue
        if prefix:
            if k.startswith(prefix) and k.endswith("/" + primary):
                return v
        elif k.endswith("/" + primary) and not k.startswith(BASELINE_PREFIXES):
            return v
    return None


BASELINE_PREFIXES = ("null/", "smoothing/", "spikes/", "baseline_model/", "pearson/", "ccg/", "chance/")
SUMMARY_BASELINES = ("null/", "smoothing/", "spikes/", "pearson/", "ccg/", "baseline_model/")


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
              "| task | metric | model | null | smoothing | spikes | pearson | ccg | baseline_model |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, res in results.items():
        if "not_applicable" in res:
            lines.append(f"| {name} | – | not applicable: {res['not_applicable']} |  |  |  |  |  |  |")
            continue
        primary = by_name[name].primary if name in by_name else next(
            (k for k, v in res.items() if isinstance(v, float)), "")
        row = [name, primary, _fmt(_summary_value(res, primary))]
        row += [_fmt(_summary_value(res, primary, p)) for p in SUMMARY_BASELINES]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Bits/spike (`bps`) is pooled over neurons and sessions (NLB); `bps_neuron_mean` averages "
              "per-neuron values. `null/bps` is 0 by definition. Baselines are prefixed by their name.", ""]
    for name, res in results.items():
        lines += [f"## {name}", ""]
        t = by_name.get(name)
        if t is not None and t.description:
            lines += [t.description, ""]
        if "not_applicable" in res:
            lines += [f"Not applicable: {res['not_applicable']}", ""]
            continue
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
        summary = {}
        for name, res in results.items():
            if "not_applicable" in res or name not in by_name:
                continue
            summary[name] = {"model": _summary_value(res, by_name[name].primary),
                             **{p.rstrip("/"): _summary_value(res, by_name[name].primary, p)
                                for p in SUMMARY_BASELINES}}
        if summary:
            path = plots.plot_summary(summary, out.parent / "figures" / "summary.png",
                                      metrics={name: by_name[name].primary for name in summary})
            figures = {"summary": [str(path)], **figures}
    finally:
        md = render_markdown(results, tasks, notes, {k: v for k, v in figures.items() if k != "summary"},
                             header, figure_root=out.parent)
        if "summary" in figures:
            rel = os.path.relpath(figures["summary"][0], out.parent)
            md = md.replace("## Summary\n", f"## Summary\n\n![summary]({rel})\n", 1)
        out.with_suffix(".md").write_text(md)
    return out
