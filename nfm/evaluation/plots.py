"""Figures of the evaluation report (matplotlib Agg canvas, PNG, no pyplot state).

Every function takes arrays, writes one PNG and returns its path.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

__all__ = ["plot_per_neuron_hist", "plot_psth_examples", "plot_bars", "plot_trace", "plot_summary"]


def _figure(width: float, height: float, rows: int = 1, cols: int = 1, **kw):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False, **kw)
    return fig, axes


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def plot_per_neuron_hist(values: dict[str, np.ndarray], path, *, xlabel: str, title: str | None = None) -> Path:
    """Overlaid histograms of a per-neuron metric, one per predictor (``name -> (neurons,)``, NaN ignored)."""
    fig, axes = _figure(6, 3.5)
    ax = axes[0, 0]
    finite = [np.asarray(v, dtype=float)[np.isfinite(v)] for v in values.values()]
    allv = np.concatenate(finite) if finite else np.zeros(0)
    if allv.size:
        lo, hi = np.percentile(allv, [1, 99])
        lo, hi = (lo - 0.5, hi + 0.5) if lo == hi else (lo, hi)
        bins = np.linspace(lo, hi, 31)
        for (name, _), v in zip(values.items(), finite):
            ax.hist(np.clip(v, lo, hi), bins=bins, histtype="step", linewidth=1.5,
                    label=f"{name} (median {np.median(v):.3g})" if v.size else name)
        ax.legend(fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("units")
    if title:
        ax.set_title(title)
    return _save(fig, path)


def plot_psth_examples(rates: np.ndarray, data: np.ndarray, conditions: np.ndarray, path, *, bin_size: float,
                       n_units: int = 4, title: str | None = None,
                       condition_labels: list[str] | None = None) -> Path:
    """True (solid) vs predicted (dashed) condition-averaged PSTHs of the ``n_units`` most active units.

    ``rates``/``data``: (trials, bins, units) expected counts per bin; ``conditions``: (trials,) condition index;
    ``condition_labels``: name of each condition index (e.g. ``"choice=-1, feedbackType=1"``) for the legend.
    The y axis is the rate [spikes/s] (counts / ``bin_size``); the legend names each condition's colour and the
    two line styles.
    """
    from matplotlib.lines import Line2D

    cond = np.asarray(conditions)
    units = np.argsort(-data.mean(axis=(0, 1)))[: min(n_units, data.shape[2])]
    cols = len(units)
    fig, axes = _figure(3.2 * cols, 3.4, 1, cols)
    t = (np.arange(data.shape[1]) + 0.5) * bin_size
    handles = []
    for k, c in enumerate(np.unique(cond)):
        color = f"C{k % 10}"
        name = condition_labels[int(c)] if condition_labels is not None and int(c) < len(condition_labels) \
            else f"condition {int(c)}"
        handles.append(Line2D([], [], color=color, lw=1.5, label=f"{name} (n={int((cond == c).sum())})"))
        for ax, u in zip(axes[0], units):
            sel = cond == c
            ax.plot(t, data[sel, :, u].mean(0) / bin_size, color=color, lw=1.2)
            ax.plot(t, rates[sel, :, u].mean(0) / bin_size, color=color, lw=1.2, ls="--")
    for ax, u in zip(axes[0], units):
        ax.set_title(f"unit {u}")
        ax.set_xlabel("time in trial window (s)")
    axes[0, 0].set_ylabel("rate (spikes/s)")
    handles += [Line2D([], [], color="k", lw=1.2, label="true"),
                Line2D([], [], color="k", lw=1.2, ls="--", label="predicted")]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(4, len(handles)), fontsize=7, frameon=False)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_bars(values: dict[str, float], path, *, title: str | None = None) -> Path:
    """Horizontal bars of named scores (NaN/None shown as empty)."""
    names = list(values)
    v = np.array([np.nan if values[n] is None else float(values[n]) for n in names])
    fig, axes = _figure(6, 0.35 * max(len(names), 2) + 1.2)
    ax = axes[0, 0]
    ax.barh(np.arange(len(names)), np.nan_to_num(v), color=["0.6" if "/" in n and n.split("/")[0] in
                                                            ("spikes", "null", "smoothing") else "C0" for n in names])
    ax.set_yticks(np.arange(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    for i, x in enumerate(v):
        if math.isfinite(x):
            ax.text(x, i, f" {x:.3g}", va="center", fontsize=7)
    if title:
        ax.set_title(title)
    return _save(fig, path)


def plot_trace(true: np.ndarray, pred: np.ndarray, path, *, bin_size: float, n_trials: int = 3,
               title: str | None = None) -> Path:
    """True vs predicted per-bin traces of the first ``n_trials`` trials, concatenated; (trials, bins) each."""
    k = min(n_trials, true.shape[0])
    y, p = true[:k].ravel(), pred[:k].ravel()
    t = np.arange(y.size) * bin_size
    fig, axes = _figure(8, 2.8)
    ax = axes[0, 0]
    ax.plot(t, y, color="k", lw=1.0, label="true")
    ax.plot(t, p, color="C3", lw=1.0, label="decoded")
    for b in range(1, k):
        ax.axvline(b * true.shape[1] * bin_size, color="0.8", lw=0.8)
    ax.set_xlabel(f"time (s), {k} trials back to back")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return _save(fig, path)


#: colours of the summary figure: the model, the best baseline, the other references (null and baselines)
MODEL_COLOR, BEST_COLOR, OTHER_COLOR, FLAG_COLOR = "C0", "C1", "0.6", "C3"


def plot_summary(summary: dict[str, dict[str, float | None]], path, metrics: dict[str, str] | None = None) -> Path:
    """One small bar panel per task: the primary metric of the model, its null model and each baseline.

    ``summary``: ``{task: {"model": value, "null": value, "<baseline>": value, "chance": value}}`` (None/NaN
    left out); ``metrics``: ``{task: metric name}`` (the panel's title and y label; a metric of
    :data:`nfm.evaluation.flags.LOWER_IS_BETTER` is judged lower-is-better).

    * the model's bar is blue (``C0``), beside it the best baseline (the best of the keys other than
      ``model``, ``null`` and ``chance``) in its own colour (orange, ``C1``, its tick label says "best"), the
      null model and the other baselines in grey;
    * ``chance`` (a decoder's majority-class accuracy) is a dashed horizontal line labelled "chance";
    * a model score below its null model / chance or below the best baseline
      (:func:`nfm.evaluation.flags.compare`) turns the panel's title red with one line saying which and by how
      much;
    * each bar carries its value, inside the axes (the y range is padded on both sides, so a label never
      reaches the title, negative values included); a bar of height 0 (the null model's 0 bits/spike) is drawn
      as a thick line at 0, so it stays visible.
    """
    from matplotlib.lines import Line2D

    from nfm.evaluation import flags as fl

    names = list(summary)
    metrics = metrics or {}
    cols = min(4, max(1, len(names)))
    rows = int(math.ceil(len(names) / cols))
    fig, axes = _figure(3.6 * cols, 3.3 * rows, rows, cols)
    for ax in axes.ravel()[len(names):]:
        ax.set_axis_off()
    for ax, name in zip(axes.ravel(), names):
        metric = metrics.get(name, "")
        lower = not fl.higher_is_better(metric) if metric else False
        entries = {k: float(v) for k, v in summary[name].items() if v is not None and math.isfinite(float(v))}
        chance = entries.pop("chance", None)
        baselines = {k: v for k, v in entries.items() if k not in ("model", "null")}
        best = (min if lower else max)(baselines, key=baselines.get) if baselines else None
        order = [k for k in ("model",) if k in entries] + ([best] if best else []) + \
            [k for k in entries if k not in ("model", best)]
        values = np.array([entries[k] for k in order], dtype=float)
        colors = [MODEL_COLOR if k == "model" else BEST_COLOR if k == best else OTHER_COLOR for k in order]
        labels = [f"{k} (best)" if k == best else k for k in order]
        x = np.arange(len(order))
        ax.bar(x, values, color=colors, edgecolor="k", linewidth=0.5, width=0.7)
        lo = float(min(np.append(values, [0.0] + ([chance] if chance is not None else []))))
        hi = float(max(np.append(values, [0.0] + ([chance] if chance is not None else []))))
        span = (hi - lo) or 1.0
        ax.set_ylim(lo - 0.18 * span if lo < 0 else 0.0 - 0.05 * span, hi + 0.18 * span)
        for xi, v, c in zip(x, values, colors):
            if abs(v) < 1e-3 * span:  # zero height: a visible stub
                ax.plot([xi - 0.35, xi + 0.35], [0, 0], color=c if c != OTHER_COLOR else "0.35", lw=3,
                        solid_capstyle="butt")
            ax.annotate(f"{v:.3g}", (xi, v), xytext=(0, 2 if v >= 0 else -2), textcoords="offset points",
                        ha="center", va="bottom" if v >= 0 else "top", fontsize=6, annotation_clip=True)
        if chance is not None:
            ax.axhline(chance, color="k", lw=1.0, ls="--", label=f"chance {chance:.3g}")
            ax.legend(handles=[Line2D([], [], color="k", lw=1.0, ls="--", label=f"chance {chance:.3g}")],
                      fontsize=6, loc="best", frameon=False)
        ax.set_xticks(x, labels, rotation=30, fontsize=7, ha="right")
        ax.axhline(0.0, color="k", lw=0.6)
        title = f"{name}: {metric}" if metric else name
        refs = [(k, entries[k]) for k in ("null",) if k in entries] + \
            ([("chance", chance)] if chance is not None else []) + ([(best, entries[best])] if best else [])
        found = fl.compare(name, "model", entries["model"], refs, lower) if "model" in entries else []
        if found:
            word = "above" if lower else "below"
            title += "\n" + "; ".join(f"{word} {f.reference} by {f.margin:.3g}" for f in found)
        ax.set_title(title, fontsize=8 if found else 9, color=FLAG_COLOR if found else "k")
        ax.set_ylabel(metric or "score", fontsize=8)
        ax.set_xlabel("model / baseline", fontsize=7)
    return _save(fig, path)
