"""Fidelity of generated spikes (Neuroformer-style evaluation).

Count arrays are ``(intervals, neurons)`` or ``(trials, bins, neurons)``
spike counts per interval/bin (the last axis is neurons; leading axes are
pooled into intervals).  True and generated arrays must have the same neuron
axis; per-interval metrics need the same shape.

Event lists are tuples ``(times, units)`` or ``(times, units, trials)`` of
equal-length 1-D arrays: spike times in seconds, unit indices, and optionally
a trial (or window) id so that inter-spike intervals never span two trials.

Metrics
-------
* :func:`per_neuron_pearson` -- Pearson r per neuron between true and
  generated counts over intervals (Neuroformer's main figure); NaN where either
  series is constant.
* :func:`psth_correlation` -- per-neuron Pearson r between trial-averaged
  PSTHs ``(bins,)``; true and generated may hold different numbers of trials.
* :func:`firing_set_f1` -- per interval, F1 between the set of neurons that
  fired in truth and in the generation; mean over intervals.
* :func:`firing_rate_distance` -- 1-Wasserstein distance (Hz) between the
  distributions over neurons of mean firing rates.
* :func:`isi_distance` -- 1-Wasserstein distance (s) or KS statistic between
  pooled inter-spike-interval distributions.
* :func:`plot_rasters` -- true vs generated raster PNG.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.stats import ks_2samp, wasserstein_distance

__all__ = [
    "per_neuron_pearson",
    "psth_correlation",
    "firing_set_f1",
    "firing_rate_distance",
    "interspike_intervals",
    "isi_distance",
    "generation_summary",
    "plot_rasters",
    "condition_psth_correlation",
    "trial_count_correlation",
]


def _flat_pair(true_counts, gen_counts) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(true_counts, dtype=np.float64)
    g = np.asarray(gen_counts, dtype=np.float64)
    if t.shape != g.shape or t.ndim < 2:
        raise ValueError(f"true {t.shape} and generated {g.shape} counts must share one (..., neurons) shape")
    for name, a in (("true", t), ("generated", g)):
        if not np.isfinite(a).all() or (a < 0).any():
            raise ValueError(f"{name} counts must be finite and >= 0")
    return t.reshape(-1, t.shape[-1]), g.reshape(-1, g.shape[-1])


def _columnwise_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r of matching columns of ``a`` and ``b`` ``(samples, K)``; NaN where either is constant."""
    da, db = a - a.mean(axis=0), b - b.mean(axis=0)
    na, nb = np.sqrt((da**2).sum(axis=0)), np.sqrt((db**2).sum(axis=0))
    denom = na * nb
    out = np.full(a.shape[1], np.nan)
    ok = (np.ptp(a, axis=0) > 0) & (np.ptp(b, axis=0) > 0)
    out[ok] = (da * db).sum(axis=0)[ok] / denom[ok]
    return np.clip(out, -1.0, 1.0)


def per_neuron_pearson(true_counts, gen_counts) -> np.ndarray:
    """Per-neuron Pearson r between true and generated counts across intervals, ``(neurons,)``.

    NaN for a neuron whose true or generated counts are constant (e.g. silent).
    """
    t, g = _flat_pair(true_counts, gen_counts)
    if t.shape[0] < 2:
        raise ValueError("per_neuron_pearson needs at least 2 intervals")
    return _columnwise_pearson(t, g)


def psth_correlation(true_counts, gen_counts) -> np.ndarray:
    """Per-neuron Pearson r between true and generated trial-averaged PSTHs, ``(neurons,)``.

    ``true_counts`` ``(trials, bins, neurons)``, ``gen_counts``
    ``(trials', bins, neurons)`` (e.g. several generations per trial).  NaN
    where either PSTH is flat.
    """
    t = np.asarray(true_counts, dtype=np.float64)
    g = np.asarray(gen_counts, dtype=np.float64)
    if t.ndim != 3 or g.ndim != 3 or t.shape[1:] != g.shape[1:]:
        raise ValueError(
            f"true {t.shape} and generated {g.shape} must be (trials, bins, neurons) with equal bins and neurons"
        )
    return _columnwise_pearson(t.mean(axis=0), g.mean(axis=0))


def firing_set_f1(true_counts, gen_counts, *, per_interval: bool = False):
    """F1 between the sets of neurons that fired (count > 0) in each interval.

    For interval k with true set A and generated set B:
    ``F1 = 2 |A & B| / (|A| + |B|)`` (precision |A&B|/|B|, recall |A&B|/|A|).
    An interval where neither fired has no F1 (NaN) and is left out of the
    mean.  Returns the mean over intervals, or the ``(intervals,)`` array.
    """
    t, g = _flat_pair(true_counts, gen_counts)
    a, b = t > 0, g > 0
    both = (a & b).sum(axis=1)
    denom = a.sum(axis=1) + b.sum(axis=1)
    f1 = np.full(denom.shape, np.nan)
    f1[denom > 0] = 2.0 * both[denom > 0] / denom[denom > 0]
    if per_interval:
        return f1
    if np.isnan(f1).all():
        raise ValueError("firing_set_f1: no spike in any interval, true or generated")
    return float(np.nanmean(f1))


def firing_rate_distance(true_counts, gen_counts, bin_size_s: float) -> float:
    """1-Wasserstein distance (Hz) between the per-neuron mean firing-rate distributions.

    Each neuron's rate is its mean count over all leading axes divided by
    ``bin_size_s`` (seconds per bin/interval).  The neuron axes must match;
    the leading axes may differ.  Time-shuffling a raster leaves it unchanged.
    """
    t = np.asarray(true_counts, dtype=np.float64)
    g = np.asarray(gen_counts, dtype=np.float64)
    if t.ndim < 2 or g.ndim < 2 or t.shape[-1] != g.shape[-1]:
        raise ValueError(f"true {t.shape} and generated {g.shape} need a common neurons (last) axis")
    if bin_size_s <= 0:
        raise ValueError(f"bin_size_s must be > 0, got {bin_size_s}")
    rt = t.reshape(-1, t.shape[-1]).mean(axis=0) / bin_size_s
    rg = g.reshape(-1, g.shape[-1]).mean(axis=0) / bin_size_s
    return float(wasserstein_distance(rt, rg))


def _events(events, name: str):
    if not isinstance(events, (tuple, list)) or len(events) not in (2, 3):
        raise ValueError(f"{name} must be (times, units) or (times, units, trials)")
    arrays = [np.asarray(a).ravel() for a in events]
    if len({a.size for a in arrays}) != 1:
        raise ValueError(f"{name}: times/units/trials lengths differ: {[a.size for a in arrays]}")
    times = arrays[0].astype(np.float64)
    if not np.isfinite(times).all():
        raise ValueError(f"{name}: non-finite spike times")
    units = arrays[1].astype(np.int64)
    trials = arrays[2].astype(np.int64) if len(arrays) == 3 else np.zeros_like(units)
    return times, units, trials


def interspike_intervals(events) -> np.ndarray:
    """All inter-spike intervals (seconds) within each (trial, unit), pooled, ``(K,)``.

    ``events``: ``(times, units)`` or ``(times, units, trials)``.  Vectorised:
    one lexsort by trial, unit, time and one diff.
    """
    times, units, trials = _events(events, "events")
    order = np.lexsort((times, units, trials))
    t, u, tr = times[order], units[order], trials[order]
    same = (u[1:] == u[:-1]) & (tr[1:] == tr[:-1])
    return np.diff(t)[same]


def isi_distance(true_events, gen_events, *, method: str = "wasserstein") -> float:
    """Distance between the pooled ISI distributions of true and generated spikes.

    ``method="wasserstein"``: 1-Wasserstein distance in seconds;
    ``method="ks"``: two-sample Kolmogorov-Smirnov statistic (unitless, 0..1).
    Raises ``ValueError`` when either side has no ISI.
    """
    a = interspike_intervals(true_events)
    b = interspike_intervals(gen_events)
    if a.size == 0 or b.size == 0:
        raise ValueError(f"isi_distance: no inter-spike interval (true {a.size}, generated {b.size})")
    if method == "wasserstein":
        return float(wasserstein_distance(a, b))
    if method == "ks":
        return float(ks_2samp(a, b).statistic)
    raise ValueError(f"method must be 'wasserstein' or 'ks', got {method!r}")


def generation_summary(true_counts, gen_counts, bin_size_s: float, true_events=None, gen_events=None) -> dict:
    """All fidelity numbers in one dict (means over neurons ignore NaN).

    ``true_counts``/``gen_counts``: ``(trials, bins, neurons)`` of equal shape.
    Keys: ``pearson_r`` (mean per-neuron r over intervals), ``psth_r``,
    ``f1``, ``rate_wasserstein_hz`` and, when events are given,
    ``isi_wasserstein_s`` and ``isi_ks``.
    """
    r = per_neuron_pearson(true_counts, gen_counts)
    psth = psth_correlation(true_counts, gen_counts)
    out = {
        "pearson_r": float(np.nanmean(r)) if np.isfinite(r).any() else float("nan"),
        "psth_r": float(np.nanmean(psth)) if np.isfinite(psth).any() else float("nan"),
        "f1": firing_set_f1(true_counts, gen_counts),
        "rate_wasserstein_hz": firing_rate_distance(true_counts, gen_counts, bin_size_s),
    }
    if true_events is not None and gen_events is not None:
        out["isi_wasserstein_s"] = isi_distance(true_events, gen_events)
        out["isi_ks"] = isi_distance(true_events, gen_events, method="ks")
    return out


def plot_rasters(true_events, gen_events, path, *, n_units: int | None = None, title: str | None = None,
                 prompt_end: float | None = None) -> Path:
    """Save a two-panel raster PNG: true spikes (top) and generated spikes (bottom).

    Events are ``(times, units[, trials])`` (the trial id is ignored here);
    x = time in seconds, y = unit index.  ``prompt_end`` [s, same clock]: where the given (true) prompt ends and
    generation starts, drawn as a dashed line on both panels with the prompt shaded.  Uses the Agg canvas.
    Returns the path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    t_times, t_units, _ = _events(true_events, "true_events")
    g_times, g_units, _ = _events(gen_events, "gen_events")
    if n_units is None:
        n_units = int(max(t_units.max(initial=-1), g_units.max(initial=-1)) + 1)
    fig = Figure(figsize=(8, 6), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 1, sharex=True, sharey=True)
    for ax, (label, times, units, color) in zip(
        axes, (("true", t_times, t_units, "k"), ("generated", g_times, g_units, "tab:red"))
    ):
        ax.scatter(times, units, marker="|", s=30, linewidths=0.8, c=color)
        if prompt_end is not None:
            lo = min(t_times.min(initial=prompt_end), g_times.min(initial=prompt_end), 0.0)
            ax.axvspan(lo, prompt_end, color="0.9", zorder=0, label="prompt (true data given)")
            ax.axvline(prompt_end, color="tab:blue", ls="--", lw=1.2, label=f"generation starts ({prompt_end:g} s)")
            ax.legend(loc="upper right", fontsize=7, framealpha=0.9)
        ax.set_ylabel("unit")
        ax.set_title(f"{label} ({times.size} spikes)")
        ax.set_ylim(-0.5, max(n_units, 1) - 0.5)
    axes[1].set_xlabel("time (s)")
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def condition_psth_correlation(true_counts, gen_counts, conditions) -> np.ndarray:
    """Per-neuron Pearson r between true and generated condition-averaged PSTHs, ``(neurons,)``.

    ``true_counts`` / ``gen_counts``: ``(trials, bins, neurons)`` of the same trials; ``conditions``:
    ``(trials,)`` condition label of each trial.  Each neuron's PSTHs of all conditions are concatenated
    (conditions x bins) before correlating, so the score rewards getting both the time course and the
    differences between conditions.  NaN where either is flat.
    """
    t = np.asarray(true_counts, dtype=np.float64)
    g = np.asarray(gen_counts, dtype=np.float64)
    c = np.asarray(conditions)
    if t.shape != g.shape or t.ndim != 3 or c.shape != (t.shape[0],):
        raise ValueError(f"true {t.shape}, generated {g.shape} and conditions {c.shape} must be (R, T, N) x2 + (R,)")
    labels = np.unique(c)
    pt = np.concatenate([t[c == k].mean(axis=0) for k in labels])  # (C * T, N)
    pg = np.concatenate([g[c == k].mean(axis=0) for k in labels])
    return _columnwise_pearson(pt, pg)


def trial_count_correlation(true_counts, gen_counts) -> np.ndarray:
    """Per-neuron Pearson r across trials between the true and generated total counts of each trial,
    ``(neurons,)``: does the simulation reproduce which trials had more spikes (trial-level fidelity)?"""
    t = np.asarray(true_counts, dtype=np.float64)
    g = np.asarray(gen_counts, dtype=np.float64)
    if t.shape != g.shape or t.ndim != 3 or t.shape[0] < 2:
        raise ValueError(f"true {t.shape} and generated {g.shape} must be equal (trials >= 2, bins, neurons)")
    return _columnwise_pearson(t.sum(axis=1), g.sum(axis=1))
