"""Scoring inferred unit-by-unit connectivity against ground-truth weights.

Convention (everywhere in nfm): ``W[i, j]`` is the weight of the directed
connection **from source unit j to target unit i** (row = target, column =
source, as in ``rate_i = f(sum_j W[i, j] * activity_j)``).  An inferred
``score`` matrix follows the same convention: ``score[i, j]`` is the evidence
that j drives i.  The diagonal (self-connections) is never scored.

Baselines from binned spike counts (``(T, N)`` or ``(trials, bins, N)``;
lagged products never cross a trial boundary):

* :func:`pearson_matrix` -- zero-lag Pearson correlation (symmetric: finds
  edges, not directions).
* :func:`cross_correlograms` / :func:`cross_correlogram_matrix` -- normalised
  cross-correlation at lags ``-L..L`` bins computed with one matrix product
  per lag (no per-pair loop) and a directed score from it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = [
    "edge_auroc",
    "edge_auprc",
    "direction_accuracy",
    "pearson_matrix",
    "cross_correlograms",
    "cross_correlogram_matrix",
    "plot_connectivity",
]


def _square_pair(score, weights) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(score, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] != s.shape[1] or s.shape != w.shape:
        raise ValueError(f"score {s.shape} and weights {w.shape} must be the same square (N, N) shape")
    off = ~np.eye(s.shape[0], dtype=bool)
    if not np.isfinite(s[off]).all():
        raise ValueError("score has non-finite off-diagonal entries")
    if not np.isfinite(w).all():
        raise ValueError("weights have non-finite entries")
    return s, w


def _edge_labels(score, weights):
    s, w = _square_pair(score, weights)
    off = ~np.eye(s.shape[0], dtype=bool)
    labels = w[off] != 0
    if labels.all() or not labels.any():
        raise ValueError("edge scoring needs both connected and unconnected off-diagonal pairs in weights")
    return labels, np.abs(s[off])


def edge_auroc(score, weights) -> float:
    """Area under the ROC curve of ``|score[i, j]|`` for detecting ``W[i, j] != 0``, off-diagonal pairs."""
    from sklearn.metrics import roc_auc_score

    labels, values = _edge_labels(score, weights)
    return float(roc_auc_score(labels, values))


def edge_auprc(score, weights) -> float:
    """Average precision (area under precision-recall) of ``|score|`` for ``W != 0``, off-diagonal.

    Chance level is the fraction of connected off-diagonal pairs.
    """
    from sklearn.metrics import average_precision_score

    labels, values = _edge_labels(score, weights)
    return float(average_precision_score(labels, values))


def direction_accuracy(score, weights, *, absolute: bool = True) -> float:
    """Fraction of one-way connected pairs whose direction the score gets right.

    Pairs ``{i, j}`` where exactly one of ``W[i, j]``, ``W[j, i]`` is non-zero
    are considered.  If ``W[i, j] != 0`` (j -> i) the pair is correct when
    ``score[i, j] > score[j, i]`` strictly (ties count as wrong).  With
    ``absolute`` (default) magnitudes ``|score|`` are compared, so an
    inhibitory edge with a strongly negative score counts as detected.
    Raises ``ValueError`` when there is no such pair.
    """
    s, w = _square_pair(score, weights)
    if absolute:
        s = np.abs(s)
    nz = w != 0
    iu, ju = np.triu_indices(s.shape[0], k=1)
    forward, backward = nz[iu, ju], nz[ju, iu]  # W[i,j] (j->i), W[j,i] (i->j)
    one_way = forward ^ backward
    if not one_way.any():
        raise ValueError("direction_accuracy: weights have no one-way connected pair")
    s_ij, s_ji = s[iu, ju], s[ju, iu]
    correct = np.where(forward, s_ij > s_ji, s_ji > s_ij)
    return float(correct[one_way].mean())


# --------------------------------------------------------------------------- baselines
def _as_trials(counts) -> np.ndarray:
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim == 2:
        c = c[None]
    if c.ndim != 3:
        raise ValueError(f"counts must be (T, N) or (trials, bins, N), got shape {c.shape}")
    if not np.isfinite(c).all():
        raise ValueError("counts contain non-finite values")
    return c


def _zscore(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Z-score each unit over all trials and bins; constant units become all-zero."""
    flat = c.reshape(-1, c.shape[-1])
    std = flat.std(axis=0)
    const = std == 0
    z = (c - flat.mean(axis=0)) / np.where(const, 1.0, std)
    return z, const


def pearson_matrix(counts) -> np.ndarray:
    """Zero-lag Pearson correlation between units, ``(N, N)``, symmetric.

    ``counts``: ``(T, N)`` or ``(trials, bins, N)`` (all bins pooled).  A unit
    with constant counts has correlation 0 with every unit (itself included);
    other diagonal entries are 1.
    """
    c = _as_trials(counts)
    z, const = _zscore(c)
    flat = z.reshape(-1, z.shape[-1])
    r = flat.T @ flat / flat.shape[0]
    r[const, :] = 0.0
    r[:, const] = 0.0
    return r


def cross_correlograms(counts, max_lag: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised cross-correlograms of all unit pairs at lags ``-max_lag..max_lag`` bins.

    ``ccg[k, i, j] = mean_t z_i(t + lag_k) * z_j(t)`` with ``z`` each unit
    z-scored over all bins, the mean over the pairs of bins (within a trial)
    that are ``lag_k`` apart.  A **positive lag** means j leads i, i.e.
    evidence for j -> i (``W[i, j]``).  ``ccg[-lag, i, j] == ccg[lag, j, i]``.
    Computed with ``max_lag + 1`` matrix products.

    Returns ``lags`` ``(2L+1,)`` int (bins) and ``ccg`` ``(2L+1, N, N)``.
    """
    c = _as_trials(counts)
    n_bins = c.shape[1]
    max_lag = int(max_lag)
    if not 0 <= max_lag < n_bins:
        raise ValueError(f"max_lag must be in [0, bins={n_bins}), got {max_lag}")
    z, _ = _zscore(c)
    n = z.shape[-1]
    ccg = np.empty((2 * max_lag + 1, n, n))
    for lag in range(max_lag + 1):  # one (N, N) matrix product per lag
        later, earlier = z[:, lag:, :], z[:, : n_bins - lag, :]
        m = np.einsum("tbi,tbj->ij", later, earlier) / (later.shape[0] * later.shape[1])
        ccg[max_lag + lag] = m
        ccg[max_lag - lag] = m.T
    return np.arange(-max_lag, max_lag + 1), ccg


def cross_correlogram_matrix(counts, max_lag: int, *, mode: str = "peak") -> np.ndarray:
    """Directed connectivity score from cross-correlograms, ``(N, N)``, ``score[i, j]`` = j -> i.

    ``mode="peak"`` (default): the signed CCG value with the largest magnitude
    over positive lags ``1..max_lag`` (j leading i); an excitatory j -> i edge
    gives a large positive ``score[i, j]`` and a small ``score[j, i]``.
    ``mode="asymmetry"``: mean CCG over lags ``1..L`` minus mean over lags
    ``-L..-1`` (antisymmetric: ``score == -score.T``; compare signed values).
    The diagonal is set to 0.
    """
    if int(max_lag) < 1:
        raise ValueError(f"a directed score needs max_lag >= 1, got {max_lag}")
    lags, ccg = cross_correlograms(counts, max_lag)
    pos, neg = ccg[lags > 0], ccg[lags < 0]
    if mode == "peak":
        idx = np.abs(pos).argmax(axis=0)
        score = np.take_along_axis(pos, idx[None], axis=0)[0]
    elif mode == "asymmetry":
        score = pos.mean(axis=0) - neg.mean(axis=0)
    else:
        raise ValueError(f"mode must be 'peak' or 'asymmetry', got {mode!r}")
    np.fill_diagonal(score, 0.0)
    return score


# --------------------------------------------------------------------------- plotting
def plot_connectivity(matrices: dict, path, *, title: str | None = None) -> Path:
    """Save heat maps of several ``(N, N)`` matrices side by side as a PNG.

    ``matrices``: name -> matrix in the ``[target i, source j]`` convention
    (rows = target, columns = source); e.g. ``{"ground truth": W, "attention":
    A, "pearson": P}``.  Each panel has its own symmetric colour scale (max
    |off-diagonal|), the diagonal is greyed out.  Uses the Agg canvas (no
    display, no pyplot state).  Returns the path written.
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not matrices:
        raise ValueError("plot_connectivity: no matrices given")
    k = len(matrices)
    fig = Figure(figsize=(4.2 * k, 3.8), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, k, squeeze=False)[0]
    for ax, (name, mat) in zip(axes, matrices.items()):
        m = np.array(mat, dtype=np.float64)
        if m.ndim != 2 or m.shape[0] != m.shape[1]:
            raise ValueError(f"matrix {name!r} must be square (N, N), got {m.shape}")
        np.fill_diagonal(m, np.nan)
        vmax = float(np.nanmax(np.abs(m))) if np.isfinite(m).any() else 1.0
        vmax = vmax if vmax > 0 else 1.0
        cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="0.8")
        im = ax.imshow(np.ma.masked_invalid(m), cmap=cmap, vmin=-vmax, vmax=vmax, interpolation="nearest")
        ax.set_title(str(name))
        ax.set_xlabel("source unit j")
        ax.set_ylabel("target unit i")
        fig.colorbar(im, ax=ax, shrink=0.8)
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
