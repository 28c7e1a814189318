"""Generation tasks: closed-loop generation of held-out trials and its fidelity (Neuroformer's metrics), and
:func:`generate_to_files` (what ``recipes/generate.py`` runs)."""
from __future__ import annotations

import json
import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from nfm.data.binning import sum_bins
from nfm.evaluation import generation_metrics as gm
from nfm.evaluation.tasks import Task

from .context import EvalContext, SessionData, check_compatibility, mean_or_nan, require, safe_name, select_sessions
from .predictor import NotApplicable, Predictor, as_predictor
from .report import jsonable

def generate_held_out(predictor: Predictor, sd: SessionData, *, prompt_s: float, bin_size: float,
                      temperature: float = 1.0, top_p: float | None = 0.95, top_k: int | None = None,
                      seed: int = 0, progress: Callable[[float], None] | None = None) -> dict[str, np.ndarray]:
    """Closed-loop generation of a session's trials after ``prompt_s`` seconds of true data.

    Generation starts at the first generation-window boundary at or after ``prompt_s`` (``t0`` in the result).
    The session's trials are generated together, in batches of the context's batch size (one closed loop per
    batch).  ``progress(n)``: called as the work advances, ``n`` trials' worth at a time (fractions of a batch
    after each generated window: :func:`window_progress`).

    Returns ``true_counts`` / ``gen_counts`` (R, T_gen, N) counts per bin of the generated part,
    ``true_events`` / ``gen_events`` as (times s from the trial-window start, units, trial) of the
    generated part, ``prompt_events`` (the given past), ``start_bin``.
    """
    gen = torch.Generator().manual_seed(int(seed))
    gen_spk, gt, gu, gr = [], [], [], []
    start_bin = None
    for sl, batch in sd.batch_slices():  # one closed-loop generation per batch of trials
        w = int(predictor.generation_window_bins)
        start_window = int(math.ceil(prompt_s / (w * bin_size) - 1e-6))  # first window boundary >= prompt_s
        if start_window * w >= sd.counts.shape[1]:
            raise NotApplicable(f"prompt_s={prompt_s} s leaves nothing to generate")
        n_batch = int(batch["spikes"].shape[0])
        n_windows = sd.counts.shape[1] // w - start_window
        with window_progress(predictor, progress, n_batch / max(n_windows, 1), limit=n_batch) as reported:
            out = predictor.generate(batch, start_window, temperature=temperature, top_p=top_p, top_k=top_k,
                                     generator=gen)
        if progress is not None and reported() < n_batch - 1e-9:
            progress(n_batch - reported())
        start_bin = start_window * int(out["window_bins"])
        gen_spk.append(out["spikes"][:, start_bin:])
        rr, ee = np.nonzero(out["event_mask"])
        gt.append(out["event_times"][rr, ee])
        gu.append(out["event_units"][rr, ee])
        gr.append(rr + sl.start)
    t0 = start_bin * bin_size
    times, units, trials = sd.events
    after = times >= t0 - 1e-9
    return {"true_counts": sd.counts[:, start_bin:], "gen_counts": np.concatenate(gen_spk),
            "true_events": (times[after], units[after], trials[after]),
            "gen_events": (np.concatenate(gt), np.concatenate(gu).astype(np.int64), np.concatenate(gr)),
            "prompt_events": (times[~after], units[~after], trials[~after]), "start_bin": int(start_bin),
            "t0": float(t0)}


# --------------------------------------------------------------------------- simulation baselines
def psth_simulation(train: SessionData, test: SessionData, conditions: tuple[np.ndarray, np.ndarray],
                    start_bin: int, seed: int = 0) -> np.ndarray:
    """Poisson samples of each test trial from its condition's mean training PSTH (the overall training PSTH
    for a condition absent from training): (R, T - start_bin, N) counts of the generated part."""
    c_train, c_test = conditions
    rng = np.random.default_rng(seed)
    overall = train.counts.mean(axis=0)
    rates = np.stack([train.counts[c_train == c].mean(axis=0) if (c_train == c).any() else overall for c in c_test])
    return rng.poisson(rates[:, start_bin:]).astype(np.float64)


def _stimulus(sd: SessionData) -> np.ndarray:
    return np.concatenate([b["stimulus"].double().numpy() for b in sd.batches])


def _glm_features(counts, stim, beh, t):
    """Features of bin ``t`` (R, F): stimulus, behaviour (NaN -> 0) and its missing flags, every unit's count
    at lag 1 and its mean over lags 2-5 (bins before the trial start count as 0)."""
    R, T, N = counts.shape
    lag1 = counts[:, t - 1] if t >= 1 else np.zeros((R, N))
    lo = max(0, t - 5)
    lag25 = counts[:, lo:max(lo, t - 1)].sum(axis=1) / 4.0
    b = np.nan_to_num(beh[:, t])
    return np.concatenate([stim[:, t], b, np.isnan(beh[:, t]).astype(np.float64), lag1, lag25], axis=1)


def _glm_features_all(counts, stim, beh):
    """:func:`_glm_features` of every bin at once, (R, T, F): the same values (the lags 2-5 summed in the same
    order, the missing ones as 0)."""
    R, T, N = counts.shape
    lag1 = np.zeros_like(counts, dtype=np.float64)
    lag1[:, 1:] = counts[:, :-1]
    # bins t-5 .. t-2 (those before the trial start left out), summed oldest first as counts[:, lo:t-1].sum(1)
    lag25 = np.zeros((R, T, N))
    for t in range(2, T):
        lo = max(0, t - 5)
        lag25[:, t] = counts[:, lo:t - 1].sum(axis=1)
    lag25 /= 4.0
    return np.concatenate([stim, np.nan_to_num(beh), np.isnan(beh).astype(np.float64), lag1, lag25], axis=2)


def glm_spec(spec: dict) -> dict:
    """The task's ``glm`` field with the defaults filled in (:data:`~nfm.evaluation.kinds.generation.GLM_SIM_DEFAULTS`)."""
    from nfm.evaluation.kinds.generation import GLM_SIM_DEFAULTS

    return {**GLM_SIM_DEFAULTS, **(spec.get("glm") or {})}


#: bump when the GLM simulator's fit changes (cached fits of older versions are then never read)
GLM_SIM_VERSION = 1


class GLMSimulator:
    """Poisson GLM of every unit's count per bin on the stimulus, behaviour and the population's recent counts
    (lag 1 and lags 2-5), fitted on the training trials with the L2 penalty chosen by ``cv_folds``-fold CV over
    trials (:func:`~nfm.evaluation.baselines.poisson_glm_fit`, scipy L-BFGS, every penalty and fold from the same
    start); simulated closed loop (sampled counts feed the next bins' features).

    ``max_train_trials``: fit on the first that many training trials only (``--quick``; 0/None = all).
    :meth:`params` / :meth:`from_params` pack and restore a fit (the baseline cache stores it).
    """

    def __init__(self, train: SessionData | None, alphas=(1e-3, 1e-2, 1e-1, 1.0), seed: int = 0, cv_folds: int = 3,
                 max_train_trials: int | None = None):
        if train is None:  # from_params
            return
        from nfm.evaluation.baselines import poisson_glm_fit

        counts, stim, beh = train.counts, _stimulus(train), train.behavior
        if max_train_trials:
            counts, stim, beh = counts[:max_train_trials], stim[:max_train_trials], beh[:max_train_trials]
        R, T, N = counts.shape
        if len(alphas) > 1 and R < cv_folds:
            raise NotApplicable(f"glm simulator: {R} training trials for {cv_folds} CV folds")
        x = _glm_features_all(counts, stim, beh)  # (R, T, F)
        self.mean = x.reshape(-1, x.shape[-1]).mean(axis=0)
        sd = x.reshape(-1, x.shape[-1]).std(axis=0)
        self.scale = np.where(sd > 0, sd, 1.0)
        z = (x - self.mean) / self.scale
        folds = np.array_split(np.random.default_rng(seed).permutation(R), int(cv_folds))
        scores = {}
        for a in sorted(alphas, reverse=True) if len(alphas) > 1 else ():  # one penalty: nothing to choose
            total = 0.0
            for f in folds:  # fit on the other folds' trials, score this fold's
                tr = np.setdiff1d(np.arange(R), f)
                w, b = poisson_glm_fit(z[tr].reshape(-1, z.shape[-1]), counts[tr].reshape(-1, N), a)
                eta = np.clip(z[f].reshape(-1, z.shape[-1]) @ w.T + b, -30, 30)
                total += float((counts[f].reshape(-1, N) * eta - np.exp(eta)).sum())
            scores[a] = total
        self.cv_scores = scores
        self.alpha = max(scores, key=scores.get) if scores else float(alphas[0])
        self.coef, self.intercept = poisson_glm_fit(z.reshape(-1, z.shape[-1]), counts.reshape(-1, N), self.alpha)

    def params(self) -> np.ndarray:
        """The fit as one (N + 2, F + 1) array: row 0 the feature means and the penalty, row 1 the scales, then
        each unit's coefficients and intercept."""
        F = self.coef.shape[1]
        out = np.zeros((self.coef.shape[0] + 2, F + 1))
        out[0, :F], out[0, F] = self.mean, self.alpha
        out[1, :F] = self.scale
        out[2:, :F], out[2:, F] = self.coef, self.intercept
        return out

    @classmethod
    def from_params(cls, p: np.ndarray) -> "GLMSimulator":
        self = cls(None)
        F = p.shape[1] - 1
        self.mean, self.alpha, self.scale = p[0, :F].copy(), float(p[0, F]), p[1, :F].copy()
        self.coef, self.intercept = p[2:, :F].copy(), p[2:, F].copy()
        self.cv_scores = {}
        return self

    def simulate(self, test: SessionData, start_bin: int, seed: int = 0) -> np.ndarray:
        """(R, T - start_bin, N) sampled counts after the true prompt (bins before ``start_bin``): every trial
        and unit of a bin in one step (the features of bin t read the counts sampled before it)."""
        rng = np.random.default_rng(seed)
        counts = test.counts.copy()
        stim, beh = _stimulus(test), test.behavior
        for t in range(start_bin, counts.shape[1]):  # one step per bin (closed loop)
            z = (_glm_features(counts, stim, beh, t) - self.mean) / self.scale
            counts[:, t] = rng.poisson(np.exp(np.clip(z @ self.coef.T + self.intercept, -30, 10)))
        return counts[:, start_bin:]


#: L-BFGS objective evaluations of one GLM-simulator fit at penalty alpha: ``130 + 40 log10(1 / alpha)^2`` (measured on
#: the demo world's sessions, 69 units x 143 features: about 130, 160, 280 and 470 at alpha = 1, 0.1, 0.01, 0.001)
def _glm_evals(alpha: float) -> float:
    return 130.0 + 40.0 * max(0.0, math.log10(1.0 / float(alpha))) ** 2


def glm_sim_work(ctx: EvalContext, task: Task, sid: str) -> tuple[float, int]:
    """``(work, fits)`` of the task's GLM simulator of session ``sid`` (the cost estimate's ``glm_sim`` unit):
    sum over its fits of objective evaluations x rows x (features + 1) x units; the CV fits (penalties x folds)
    on (k-1)/k of the training trials, the refit (at the grid's mean evaluation count) on all of them."""
    g = glm_spec(task.spec)
    meta = ctx.meta.session(sid)
    n_units = int(meta.n_units)
    R = int(np.count_nonzero(ctx._session_rows("train") == sid)) if "train" in ctx.dd else 0
    if g["max_train_trials"]:
        R = min(R, int(g["max_train_trials"]))
    n_feat = len(ctx.meta.stimulus_names or []) + 2 * len(ctx.meta.behavior_names or []) + 2 * n_units + 1
    per_row = n_feat * n_units * ctx.n_bins
    evals = [_glm_evals(a) for a in g["alphas"]]
    k = int(g["cv_folds"])
    cv = sum(evals) * k * R * (k - 1) / k if len(evals) > 1 else 0.0
    return (cv + float(np.mean(evals)) * R) * per_row, (len(evals) * k if len(evals) > 1 else 0) + 1


def glm_sim_cached(ctx: EvalContext, task: Task, sid: str) -> bool:
    """Whether the baseline cache holds the task's GLM simulator of session ``sid`` (the estimate counts no fit)."""
    if ctx.baseline_cache is None or "train" not in ctx.dd:
        return False
    try:
        train = ctx.session(sid, "train", cap=False)
    except (NotApplicable, ValueError):
        return False
    name, key, _ = _glm_cache_key(task, train)
    return ctx.baseline_cache.path(name, key).is_file()


def _glm_cache_key(task: Task, train: SessionData):
    """``(name, key, cap)`` of a session's GLM simulator in the baseline cache: the training counts, stimulus and
    behaviour it is fitted on (content fingerprints), the grid, folds, trial cap, seed and
    :data:`GLM_SIM_VERSION`."""
    from nfm.evaluation.baseline_cache import array_fingerprint

    g = glm_spec(task.spec)
    cap = int(g["max_train_trials"] or 0) or None
    sl = slice(None, cap)
    key = {"baseline": "glm_sim", "version": GLM_SIM_VERSION, "alphas": list(g["alphas"]),
           "cv_folds": int(g["cv_folds"]), "max_train_trials": cap, "seed": int(task.spec["seed"]),
           "train": array_fingerprint(train.counts[sl]), "stimulus": array_fingerprint(_stimulus(train)[sl]),
           "behavior": array_fingerprint(train.behavior[sl])}
    return f"glm_sim-{train.session_id}-{'+'.join(train.splits)}", key, cap


def glm_simulator(ctx: EvalContext, task: Task, train: SessionData) -> GLMSimulator:
    """The task's GLM simulator of ``train``'s session: read from the baseline cache
    (:mod:`nfm.evaluation.baseline_cache`) when a fit of the same training data (counts, stimulus, behaviour:
    content fingerprints), grid, folds and seed exists; fitted and written there otherwise."""
    g = glm_spec(task.spec)
    name, key, cap = _glm_cache_key(task, train)
    stim = _stimulus(train)
    if cap and train.n_trials > cap:
        ctx.note(task.name, f"glm baseline: fitted on the first {cap} training trials of each session, penalty "
                            f"by {int(g['cv_folds'])}-fold CV over {list(g['alphas'])}")
    cache = ctx.baseline_cache
    n_units = train.counts.shape[2]
    n_feat = stim.shape[2] + 2 * train.behavior.shape[2] + 2 * n_units
    if cache is not None:
        hit = cache.load(name, key, (n_units + 2, n_feat + 1))
        if cache.last_status.startswith("corrupt"):
            ctx.note(task.name, f"glm baseline: cache entry refused and refitted "
                                f"({cache.last_status[len('corrupt: '):]})")
        if hit is not None:
            return GLMSimulator.from_params(hit[0])
    sim = GLMSimulator(train, alphas=g["alphas"], seed=task.spec["seed"], cv_folds=g["cv_folds"],
                       max_train_trials=cap)
    if cache is not None:
        cache.save(name, key, sim.params(), {"alpha": sim.alpha})
    return sim


def _conditions(task: Task, *sds: SessionData) -> list[np.ndarray] | None:
    """Condition label per trial of each session-data (joint values of the first condition set they all have)."""
    sets = task.spec.get("conditions") or []
    for cols in ([sets] if sets and all(isinstance(c, str) for c in sets) else sets):
        if all(c in sd.trial_columns for sd in sds for c in cols):
            return [np.array(["|".join(f"{v:g}" for v in row) for row in
                              np.stack([sd.trial_columns[c] for c in cols], axis=1)]) for sd in sds]
    return None
@contextmanager
def window_progress(predictor: Predictor, progress: Callable[[float], None] | None, per_window: float,
                    limit: float = float("inf")):
    """While a closed loop runs, call ``progress(per_window)`` after each generated window.

    The closed loop (``model.generate``) runs the backbone once per window, so a forward hook on the backbone of
    an :class:`~nfm.evaluation.predictor.NfmPredictor` marks each window without touching the sampling code;
    other predictors report once per batch (the caller tops up).  At most ``limit`` is reported.  Yields a
    function returning the amount reported so far.
    """
    done = [0.0]
    backbone = getattr(predictor, "backbone", None)
    handle = None
    if progress is not None and isinstance(backbone, torch.nn.Module):
        def hook(module, args, output):
            step = min(per_window, limit - done[0])
            if step > 0:
                done[0] += step
                progress(step)

        handle = backbone.register_forward_hook(hook)
    try:
        yield lambda: done[0]
    finally:
        if handle is not None:
            handle.remove()


def _trial_bar(enabled: bool, total: int, desc: str):
    """A tqdm bar counting generated trials (with ETA), or None."""
    if not enabled or total <= 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="trial", leave=False, mininterval=0.5,
                bar_format="{l_bar}{bar}| {n:.1f}/{total} trials [{elapsed}<{remaining}]")


def _advance(bar):
    """``progress(n)`` for a trial bar: adds ``n`` without passing the total (fractions of a batch add up with
    rounding), or None without a bar."""
    if bar is None:
        return None
    return lambda n: bar.update(max(0.0, min(n, bar.total - bar.n)))


def _per_interval(counts: np.ndarray, k: int) -> np.ndarray:
    """(R, T, N) counts per bin -> (R, T // k, N) counts per interval of ``k`` bins; a trailing interval shorter
    than ``k`` bins (the generated part need not be a whole number of intervals) is not scored."""
    whole = (counts.shape[1] // k) * k
    return sum_bins(counts[:, :whole], k)


def _simulation_scores(true_counts, gen_counts, cond, interval_bins: int) -> dict[str, float]:
    """Trial-level and condition-PSTH fidelity of simulated counts (model or baseline)."""
    tc, gc = _per_interval(true_counts, interval_bins), _per_interval(gen_counts, interval_bins)
    out = {}
    trial_r = gm.trial_count_correlation(tc, gc) if tc.shape[0] >= 2 else np.array([np.nan])
    out["trial_count_r"] = float(np.nanmean(trial_r)) if np.isfinite(trial_r).any() else float("nan")
    if cond is not None:
        pr = gm.condition_psth_correlation(tc, gc, cond)
        out["psth_r_condition"] = float(np.nanmean(pr)) if np.isfinite(pr).any() else float("nan")
    return out


def _generation_scores(g: dict, interval_bins: int, interval_s: float) -> dict[str, float]:
    tc, gc = _per_interval(g["true_counts"], interval_bins), _per_interval(g["gen_counts"], interval_bins)
    r = gm.per_neuron_pearson(tc, gc) if tc.shape[0] * tc.shape[1] >= 2 else np.array([np.nan])
    psth = gm.psth_correlation(tc, gc)
    fired = (tc > 0).any() or (gc > 0).any()
    isi_t, isi_g = gm.interspike_intervals(g["true_events"]), gm.interspike_intervals(g["gen_events"])
    has_isi = isi_t.size > 0 and isi_g.size > 0
    return {
        "pearson_r": float(np.nanmean(r)) if np.isfinite(r).any() else float("nan"),
        "psth_r": float(np.nanmean(psth)) if np.isfinite(psth).any() else float("nan"),
        "f1": gm.firing_set_f1(tc, gc) if fired else float("nan"),
        "rate_wasserstein_hz": gm.firing_rate_distance(tc, gc, interval_s),
        "isi_wasserstein_s": gm.isi_distance(g["true_events"], g["gen_events"]) if has_isi else float("nan"),
        "isi_ks": gm.isi_distance(g["true_events"], g["gen_events"], method="ks") if has_isi else float("nan"),
        "true_spikes": float(g["true_counts"].sum()), "generated_spikes": float(g["gen_counts"].sum()),
    }


def _generated(ctx: EvalContext, sd: SessionData, task: Task, progress) -> dict:
    """:func:`generate_held_out` of the task's settings, kept in the context: a second task asking for the same
    generation (same model, trials, batches, prompt, sampling settings and seed, e.g. ``generation_fidelity`` and
    ``generation_simulation`` under ``--quick``) reads the first one's result (the closed loop is seeded, so it
    would draw the same spikes again)."""
    spec = task.spec
    key = ("generation", id(ctx.predictor), sd.session_id, sd.splits, tuple(int(t) for t in sd.trial_ids),
           tuple(int(b["spikes"].shape[0]) for b in sd.batches), float(spec["prompt_s"]), float(ctx.bin_size),
           float(spec["temperature"]), spec["top_p"], int(spec["top_k"] or 0), int(spec["seed"]))
    if key in ctx._pred:
        if progress is not None:
            progress(sd.n_trials)
        return ctx._pred[key]
    g = generate_held_out(ctx.predictor, sd, prompt_s=spec["prompt_s"], bin_size=ctx.bin_size,
                          temperature=spec["temperature"], top_p=spec["top_p"], top_k=spec["top_k"] or None,
                          seed=spec["seed"], progress=progress)
    ctx._pred[key] = g
    return g


def run_generation(ctx: EvalContext, task: Task) -> dict:
    require(ctx, task, "generation")
    k = task.spec["interval_s"] / ctx.bin_size
    if abs(k - round(k)) > 1e-6 or round(k) < 1:
        raise ValueError(f"{task.source}: interval_s={task.spec['interval_s']} s is not a whole number of "
                         f"{ctx.bin_size} s bins")
    interval_bins = int(round(k))
    wanted = task.metrics_for("spikes")
    per_session: dict[str, dict] = {}
    first = None
    cap = task.spec["max_trials"]
    data = {}
    for sid in ctx.sessions:
        sd = ctx.session(sid)
        data[sid] = sd.head(cap) if cap and sd.n_trials > cap else sd
    bar = _trial_bar(ctx.progress, sum(sd.n_trials for sd in data.values()), f"  {task.name}")
    for sid, sd in data.items():
        try:
            g = _generated(ctx, sd, task, _advance(bar))
        except NotApplicable as err:
            per_session[sid] = {"not_applicable": str(err)}
            continue
        s = _generation_scores(g, interval_bins, task.spec["interval_s"])
        train = ctx.session(sid, "train", cap=False) if task.baselines else None
        cond = _conditions(task, sd, train) if train is not None else _conditions(task, sd)
        s.update(_simulation_scores(g["true_counts"], g["gen_counts"], cond and cond[0], interval_bins))
        entry = {m: s[m] for m in wanted if m in s}
        for name in task.baselines:  # the same scores for the simulation baselines, fitted on the train split
            if name == "psth":
                if cond is None:
                    ctx.note(task.name, "psth baseline: the dataset has none of the condition columns")
                    continue
                sim = psth_simulation(train, sd, (cond[1], cond[0]), g["start_bin"], seed=task.spec["seed"])
            else:
                try:
                    sim = glm_simulator(ctx, task, train).simulate(sd, g["start_bin"], seed=task.spec["seed"])
                except NotApplicable as err:
                    ctx.note(task.name, f"glm baseline of {sid}: {err}")
                    continue
            b = _simulation_scores(g["true_counts"], sim, cond and cond[0], interval_bins)
            b["pearson_r"] = _generation_scores({**g, "gen_counts": sim}, interval_bins,
                                                task.spec["interval_s"])["pearson_r"]
            entry.update({f"{name}/{k}": v for k, v in b.items() if k in wanted})
        per_session[sid] = {**entry, "true_spikes": s["true_spikes"], "generated_spikes": s["generated_spikes"],
                            "n_trials": sd.n_trials}
        if first is None:
            first = (sid, g, sd.n_units)
    if bar is not None:
        bar.close()
    scored = {s: e for s, e in per_session.items() if "not_applicable" not in e}
    if not scored:
        raise NotApplicable("; ".join(sorted({e["not_applicable"] for e in per_session.values()})))
    keys = list(dict.fromkeys(k for e in scored.values() for k in e if k in wanted or "/" in k))
    out: dict[str, Any] = {m: mean_or_nan(e.get(m) for e in scored.values()) for m in keys}
    out["n_sessions"] = len(scored)
    out["per_session"] = per_session
    if ctx.figure_dir is not None and first is not None:
        sid, g, n_units = first
        pt, pu, pr = g["prompt_events"]
        tt, tu, tr_ = g["true_events"]
        gt, gu, gr = g["gen_events"]
        sel_p, sel_t, sel_g = pr == 0, tr_ == 0, gr == 0
        true_ev = (np.concatenate([pt[sel_p], tt[sel_t]]), np.concatenate([pu[sel_p], tu[sel_t]]))
        gen_ev = (np.concatenate([pt[sel_p], gt[sel_g]]), np.concatenate([pu[sel_p], gu[sel_g]]))
        path = gm.plot_rasters(true_ev, gen_ev, ctx.figure_dir / f"{task.name}_raster.png", n_units=n_units,
                               title=f"{sid}, trial 0: true (top) vs generated after {g['t0']:g} s (bottom)",
                               prompt_end=g["t0"])
        ctx.figure(task.name, path)
    return out


def generate_to_files(model, dataset, output_dir, *, split: str = "test", sessions="known", prompt_s: float = 0.5,
                      temperature: float = 1.0, top_p: float | None = 0.95, top_k: int | None = None,
                      max_trials: int | None = 16, batch_size: int = 16, interval_s: float | None = None,
                      seed: int = 0, progress: bool = False) -> dict:
    """Closed-loop generation of held-out trials, saved per session; returns the fidelity summary.

    ``sessions``: ``"known"`` (default: the sessions the model knows), ``"all"`` or ids.  Each session's trials
    are generated together in batches of ``batch_size`` (one closed loop per batch).  ``progress``: a bar over
    every generated trial (advancing after each generated window) with the ETA.  Each session's files are
    written as soon as it is done.

    Writes to ``output_dir``: ``<session>.npz`` (no pickled objects) with ``true_counts`` /
    ``gen_counts`` (R, T_gen, N) float32 counts per bin of the generated part, ``{true,gen,prompt}_event_
    {times,units,trials}`` (seconds from the trial-window start, unit index, row in ``trial_ids``),
    ``trial_ids`` (R,), ``start_bin``, ``bin_size`` [s], ``t0`` [s]; ``<session>_raster.png`` (first trial,
    true vs prompt + generated); ``generation_summary.json`` (fidelity metrics per session, counts per
    ``interval_s``, default one generation window).
    """
    from nfm.data.hf import load_dataset

    dd, meta = load_dataset(dataset) if isinstance(dataset, (str, os.PathLike)) else dataset
    if split not in dd:
        raise ValueError(f"split {split!r} is not in the dataset (splits: {list(dd)})")
    predictor = as_predictor(model)
    reason = predictor.can("generation")
    if reason:
        raise ValueError(f"cannot generate: {reason}")
    chosen = select_sessions(meta, dd, split, predictor, sessions)
    check_compatibility(predictor, meta, chosen)
    ctx = EvalContext(dd, meta, predictor, split, chosen, batch_size=batch_size, max_trials=max_trials)
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    interval_bins = max(1, int(round((interval_s or predictor.generation_window_bins * ctx.bin_size)
                                     / ctx.bin_size)))
    summary: dict[str, Any] = {}
    total = sum(min(int(np.count_nonzero(ctx._session_rows(split) == sid)), max_trials or 10**9) for sid in chosen)
    bar = _trial_bar(progress, total, "generating")
    for sid in chosen:  # one closed loop per batch of the session's trials
        sd = ctx.session(sid)
        g = generate_held_out(predictor, sd, prompt_s=prompt_s, bin_size=ctx.bin_size, temperature=temperature,
                              top_p=top_p, top_k=top_k, seed=seed, progress=_advance(bar))
        arrays = {"true_counts": g["true_counts"].astype(np.float32), "gen_counts": g["gen_counts"].astype(np.float32),
                  "trial_ids": sd.trial_ids.astype(np.int64), "start_bin": np.int64(g["start_bin"]),
                  "bin_size": np.float64(ctx.bin_size), "t0": np.float64(g["t0"])}
        for part in ("true", "gen", "prompt"):
            t, u, r = g[f"{part}_events"]
            arrays.update({f"{part}_event_times": np.asarray(t, np.float64), f"{part}_event_units":
                           np.asarray(u, np.int64), f"{part}_event_trials": np.asarray(r, np.int64)})
        stem = safe_name(sid)
        np.savez_compressed(out_dir / f"{stem}.npz", **arrays)
        pt, pu, pr = g["prompt_events"]
        tt, tu, tr_ = g["true_events"]
        gt, gu, gr = g["gen_events"]
        true_ev = (np.concatenate([pt[pr == 0], tt[tr_ == 0]]), np.concatenate([pu[pr == 0], tu[tr_ == 0]]))
        gen_ev = (np.concatenate([pt[pr == 0], gt[gr == 0]]), np.concatenate([pu[pr == 0], gu[gr == 0]]))
        gm.plot_rasters(true_ev, gen_ev, out_dir / f"{stem}_raster.png", n_units=sd.n_units,
                        title=f"{sid}, trial {int(sd.trial_ids[0])}: generated after {g['t0']:g} s",
                        prompt_end=g["t0"])
        summary[sid] = {**_generation_scores(g, interval_bins, interval_bins * ctx.bin_size),
                        "n_trials": sd.n_trials, "npz": f"{stem}.npz", "raster": f"{stem}_raster.png"}
        if bar is not None:
            s = summary[sid]
            bar.write(f"{sid}: {s['n_trials']} trials, {s['generated_spikes']:.0f} generated vs "
                      f"{s['true_spikes']:.0f} true spikes -> {out_dir / s['npz']}")
    if bar is not None:
        bar.close()
    (out_dir / "generation_summary.json").write_text(json.dumps(jsonable(summary), indent=1, allow_nan=False))
    return summary
