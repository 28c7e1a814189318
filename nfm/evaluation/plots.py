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
                       n_units: int = 4, title: str | None = None) -> Path:
    """True (solid) vs predicted (dashed) condition-averaged PSTHs of the ``n_units`` most active units.

    ``rates``/``data``: (trials, bins, units); ``conditions``: (trials,) condition index.
    """
    cond = np.asarray(conditions)
    units = np.argsort(-data.mean(axis=(0, 1)))[: min(n_units, data.shape[2])]
    cols = len(units)
    fig, axes = _figure(3.2 * cols, 2.8, 1, cols)
    t = (np.arange(data.shape[1]) + 0.5) * bin_size
    for ax, u in zip(axes[0], units):
        for k, c in enumerate(np.unique(cond)):
            sel = cond == c
            color = f"C{k % 10}"
            ax.plot(t, data[sel, :, u].mean(0) / bin_size, color=color, lw=1.2)
            ax.plot(t, rates[sel, :, u].mean(0) / bin_size, color=color, lw=1.2, ls="--")
        ax.set_title(f"unit {u}")
        ax.set_xlabel("time in trial window (s)")
    axes[0, 0].set_ylabel("per s (true solid, predicted dashed)")
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


def plot_summary(summary: dict[str, dict[str, float | None]], path) -> Path:
    """One small bar panel per task: the primary metric of the model and of each baseline that has it."""
    names = list(summary)
    cols = min(4, max(1, len(names)))
    rows = int(math.ceil(len(names) / cols))
    fig, axes = _figure(3.4 * cols, 2.6 * rows, rows, cols)
    for ax in axes.ravel()[len(names):]:
        ax.set_axis_off()
    for ax, name in zip(axes.ravel(), names):
        entries = {k: v for k, v in summary[name].items() if v is not None and math.isfinite(float(v))}
        ax.bar(np.arange(len(entries)), list(entries.values()),
               color=["C0" if k == "model" else "0.6" for k in entries])
        ax.set_xticks(np.arange(len(entries)), list(entries), rotation=30, fontsize=7, ha="right")
        ax.axhline(0.0, color="k", lw=0.6)
        ax.set_title(name, fontsize=9)
    return _save(fig, path)
