"""Connectivity task: unit-to-unit matrices from the model (decoder attention, in-silico silencing) against
ground-truth weights, with correlation baselines."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from nfm.evaluation import connectivity as conn
from nfm.evaluation.tasks import Task
from nfm.models.masking import MaskSample

from .context import EvalContext, SessionData, mean_or_nan, require, safe_name
from .predictor import NotApplicable, Predictor

def perturbation_matrix(predictor: Predictor, sd: SessionData, n_forward: int) -> np.ndarray:
    """In-silico silencing: ``score[i, j]`` = mean over trials and the last ``n_forward`` bins of
    ``log rate_i(intact) - log rate_i(unit j silenced)``, rates predicted causally from the past with the
    forward bins hidden (causal prompt).  (N, N), ``[target i, source j]``; diagonal 0.

    Unit j is silenced by zeroing its counts in every input bin (and removing its spike events); every
    source unit is a separate copy of the batch, run in chunks.
    """
    R, T, N = sd.counts.shape
    fwd = np.zeros((T, N), dtype=bool)
    fwd[T - n_forward:] = True
    score = np.zeros((N, N))
    total = 0
    for _, batch in sd.batch_slices():  # one batch of trials; all silenced copies of it in chunks
        B = batch["spikes"].shape[0]
        um = batch["unit_mask"]
        mask_b = torch.from_numpy(fwd).unsqueeze(0).expand(B, T, N) & um.unsqueeze(1)
        base, _ = predictor.predict(batch, MaskSample(mask_b.contiguous(), mask_b.clone(), "causal", True))
        base_log = np.log(np.maximum(base[:, T - n_forward:], 1e-9))  # (B, F, N)
        chunk = max(1, 256 // B)
        for j0 in range(0, N, chunk):
            js = np.arange(j0, min(N, j0 + chunk))
            rep = {k: (v.repeat_interleave(len(js), 0) if torch.is_tensor(v) and v.dim() > 0 else
                       ([x for x in v for _ in js] if isinstance(v, list) else v)) for k, v in batch.items()}
            silence = torch.zeros(B * len(js), 1, N, dtype=torch.bool)
            silence[torch.arange(B * len(js)), 0, torch.from_numpy(np.tile(js, B))] = True
            rep["spikes"] = rep["spikes"].masked_fill(silence, 0.0)
            if "event_units" in rep and rep["event_units"].numel():
                ev_j = torch.from_numpy(np.tile(js, B)).unsqueeze(1)
                rep["event_mask"] = rep["event_mask"] & (rep["event_units"] != ev_j)
            m_rep = mask_b.repeat_interleave(len(js), 0).contiguous()
            r, _ = predictor.predict(rep, MaskSample(m_rep, m_rep.clone(), "causal", True))
            sil_log = np.log(np.maximum(r[:, T - n_forward:], 1e-9)).reshape(B, len(js), n_forward, N)
            delta = (base_log[:, None] - sil_log).sum(axis=(0, 2))  # (len(js), N): [j, i]
            score[:, js] += delta.T
        total += B * n_forward
    score /= total
    np.fill_diagonal(score, 0.0)
    return score


def gradient_matrix(predictor: Predictor, sd: SessionData, n_lags: int, n_targets: int) -> np.ndarray:
    """Model Jacobian connectivity: ``score[i, j]`` = mean over trials and ``n_targets`` target bins (evenly
    spaced in the second half of the trial) of ``sum_{l=1..n_lags} d log rate_i(t) / d input_j(t - l)``,
    predicted with bins from t on hidden (forward prediction, causal prompt).  Signed (inhibition < 0);
    (N, N), [target i, source j]; diagonal 0.  Unlike in-silico silencing (which removes a unit from every
    past bin and so also counts paths through other units), it measures the direct, short-lag dependence."""
    R, T, N = sd.counts.shape
    targets = np.unique(np.linspace(max(n_lags, T // 2), T - 1, n_targets).round().astype(int))
    score = np.zeros((N, N))
    for _, batch in sd.batch_slices():  # one batch of trials at a time
        for t in targets:
            score += predictor.lagged_gradient(batch, int(t), n_lags).sum(axis=0)
    score /= R * len(targets)
    np.fill_diagonal(score, 0.0)
    return score


def run_connectivity(ctx: EvalContext, task: Task) -> dict:
    require(ctx, task)
    with_w = [s for s in ctx.sessions
              if isinstance(ctx.meta.session(s).extra, dict) and "true_weights" in ctx.meta.session(s).extra]
    if not with_w:
        raise NotApplicable("no evaluated session has ground-truth weights (meta extra.true_weights); "
                            "this task runs on the hub-network world (prepare_data --world hub_network)")
    wanted = task.metrics_for("spikes")
    per_session: dict[str, dict] = {}
    first_fig = True
    for sid in ctx.track(with_w, task.name):
        W = np.asarray(ctx.meta.session(sid).extra["true_weights"], dtype=np.float64)
        sd = ctx.session(sid)
        if task.spec["max_trials"] and sd.n_trials > task.spec["max_trials"]:
            sd = sd.head(task.spec["max_trials"])
        if W.shape != (sd.n_units, sd.n_units):
            raise ValueError(f"session {sid}: true_weights shape {W.shape} != ({sd.n_units}, {sd.n_units}) units")
        mats: dict[str, np.ndarray] = {}
        if "attention" in task.spec["methods"]:
            reason = ctx.predictor.can("attention")
            if reason:
                ctx.note(task.name, f"attention: {reason}")
            else:
                att = np.concatenate([ctx.predictor.unit_attention(b) for _, b in sd.batch_slices()])
                mats["attention"] = att.mean(axis=0)
        if "gradient" in task.spec["methods"]:
            reason = ctx.predictor.can("gradient")
            if reason:
                ctx.note(task.name, f"gradient: {reason}")
            else:
                mats["gradient"] = gradient_matrix(ctx.predictor, sd, task.spec["gradient"]["lags"],
                                                   task.spec["gradient"]["n_targets"])
        if "perturbation" in task.spec["methods"]:
            reason = ctx.predictor.can("mtm")
            if reason:
                ctx.note(task.name, f"perturbation: {reason}")
            else:
                k = task.spec["perturbation"]["forward_s"] / ctx.bin_size
                n_fwd = int(round(k))
                if abs(k - n_fwd) > 1e-6 or not 0 < n_fwd < ctx.n_bins:
                    raise ValueError(f"{task.source}: perturbation.forward_s={task.spec['perturbation']['forward_s']}"
                                     f" s must be a whole number of {ctx.bin_size} s bins shorter than the trial")
                mats["perturbation"] = perturbation_matrix(ctx.predictor, sd, n_fwd)
        if "pearson" in task.baselines:
            mats["pearson"] = conn.pearson_matrix(sd.counts)
        if "ccg" in task.baselines:
            mats["ccg"] = conn.cross_correlogram_matrix(sd.counts, task.spec["ccg_max_lag_bins"])
        entry: dict[str, Any] = {"n_trials": sd.n_trials, "n_units": sd.n_units,
                                 "n_edges": int((W[~np.eye(len(W), dtype=bool)] != 0).sum())}
        nz = W != 0
        one_way = np.triu(nz ^ nz.T, 1).any()
        for name, mat in mats.items():
            if "auroc" in wanted:
                entry[f"{name}/auroc"] = conn.edge_auroc(mat, W)
            if "auprc" in wanted:
                entry[f"{name}/auprc"] = conn.edge_auprc(mat, W)
            if "direction_accuracy" in wanted:
                entry[f"{name}/direction_accuracy"] = (conn.direction_accuracy(mat, W) if one_way
                                                       else float("nan"))
        if "auprc" in wanted:
            entry["chance/auprc"] = float(nz[~np.eye(len(W), dtype=bool)].mean())
        per_session[sid] = entry
        if ctx.figure_dir is not None and first_fig:
            path = conn.plot_connectivity({"ground truth": W, **mats},
                                          ctx.figure_dir / f"{task.name}_{safe_name(sid)}.png",
                                          title=f"{sid}: [target i, source j]")
            ctx.figure(task.name, path)
            first_fig = False
    keys = [k for k in next(iter(per_session.values())) if "/" in k]
    out: dict[str, Any] = {k: mean_or_nan(e.get(k) for e in per_session.values()) for k in keys}
    out["n_sessions"] = len(per_session)
    out["per_session"] = per_session
    return out
