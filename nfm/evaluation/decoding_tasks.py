"""Decoding tasks: behaviour / trial labels from model features (linear decoders) and from a behaviour head
fine-tuned on the train split (:class:`~nfm.models.NfmForBehaviorDecoding`).

Linear decoders follow the task's ``decoder_protocol``:

* ``train_to_eval`` (default): fitted on the session's train trials only (C / alpha by CV inside them,
  :func:`~nfm.evaluation.metrics.decode_choice_split` / :func:`~nfm.evaluation.metrics.decode_regression_split`)
  and scored on its trials of the evaluated split;
* ``cv_all_splits``: nested CV over the trials of every split pooled (:func:`~nfm.evaluation.metrics.decode_choice`
  / :func:`~nfm.evaluation.metrics.decode_regression`, the MtM protocol); most scored trials are then training
  trials of the model, which the report says.
"""
from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch

from nfm.evaluation import baselines as bl
from nfm.evaluation import metrics as mt
from nfm.evaluation.kinds.decoding import resolve_target
from nfm.evaluation.tasks import Task
from nfm.models.masking import MaskSample

from .context import SPLITS, EvalContext, SessionData, mean_or_nan, require, to_device
from .predictor import NotApplicable, Predictor

def _features(ctx: EvalContext, predictor: Predictor, sd: SessionData, source: str, sigma_ms: float) -> np.ndarray:
    """(R, T, F) per-bin features of ``source``: latents, rates (nothing masked) or smoothed activity."""
    ck = (predictor.name if source != "spikes" else "-", "features", source, sd.session_id, sd.splits, sigma_ms)
    if ck in ctx._pred:
        return ctx._pred[ck]
    if source == "spikes" and ctx.modality == "calcium":  # dF/F (or deconvolved) directly, bad frames as 0
        x = sd.counts if sd.valid is None else np.where(sd.valid, sd.counts, 0.0)
    elif source == "spikes":
        from scipy.ndimage import gaussian_filter1d

        x = gaussian_filter1d(sd.counts, bl.sigma_ms_to_bins(sigma_ms, ctx.bin_size), axis=1, mode="reflect")
    else:
        parts = []
        for _, batch in sd.batch_slices():
            if source == "latents":
                parts.append(predictor.latents(batch))
            else:
                none = torch.zeros_like(batch["spikes"], dtype=torch.bool)
                parts.append(predictor.predict(batch, MaskSample(none, none.clone(), "none"))[0])
        x = np.concatenate(parts)
    ctx._pred[ck] = x
    return x


def _chunk_mean(x: np.ndarray, n_chunks: int) -> np.ndarray:
    """(R, T, F) -> (R, n_chunks * F): bins averaged in ``n_chunks`` consecutive groups, flattened."""
    groups = np.array_split(np.arange(x.shape[1]), min(n_chunks, x.shape[1]))
    starts = np.array([g[0] for g in groups])
    sums = np.add.reduceat(x, starts, axis=1)
    sizes = np.array([len(g) for g in groups], dtype=np.float64)
    return (sums / sizes[None, :, None]).reshape(x.shape[0], -1)


def _decoder_kwargs(dec: dict, classification: bool) -> dict:
    """Keyword arguments of the ``decode_*`` functions from the task's ``decoder`` block."""
    kw = {"n_splits": dec["n_splits"], "seed": dec["seed"]}
    grid = "Cs" if classification else "alphas"
    if grid in dec:
        kw[grid] = dec[grid]
    return kw


def _feature_sources(ctx: EvalContext, task: Task) -> list[tuple[str, Predictor | None]]:
    """(source name, predictor) of every feature source the task scores: the model's ``features`` it supports,
    the observed activity (``spikes`` baseline) and the baseline model's features."""
    sources = []
    for s in task.spec["features"]:
        reason = ctx.predictor.can("mtm" if s == "rates" else "latents")
        if reason:
            ctx.note(task.name, f"features {s!r}: {reason}")
        else:
            sources.append((s, ctx.predictor))
    if "spikes" in task.baselines:  # observed activity: smoothed spike counts, or 2-photon activity as recorded
        sources.append(("spikes" if ctx.modality == "spikes" else "activity", None))
    if "baseline_model" in task.baselines and ctx.baseline is not None:
        for s in task.spec["features"]:
            if ctx.baseline.can("mtm" if s == "rates" else "latents") is None:
                sources.append((f"baseline_model/{s}", ctx.baseline))
    if not sources:
        raise NotApplicable("no feature source available")
    return sources


def _source_features(ctx: EvalContext, task: Task, source: str, pred: Predictor | None,
                     sd: SessionData) -> np.ndarray:
    """(R, T, F) per-bin features of one source for the session's trials of ``sd``."""
    base_source = "spikes" if source == "activity" else source.split("/")[-1]
    return _features(ctx, pred, sd, base_source, task.spec["smoothing_sigma_ms"])


def _session_targets(ctx: EvalContext, task: Task, sd: SessionData, classification: bool,
                     names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(y, keep) of the trials of ``sd``: labels (R,) or per-bin targets (R, T, C) of the ``names`` channels,
    and (R,) bool of the usable trials (finite, label not excluded).  NotApplicable when none has a value."""
    if classification:
        y = sd.trial_columns.get(names[0])
        if y is None or not np.isfinite(y).any():
            raise NotApplicable(f"session {sd.session_id} has no {names[0]!r} values in split(s) {list(sd.splits)}")
        keep = np.isfinite(y) & ~np.isin(y, np.asarray(task.spec["exclude_values"], dtype=float))
        return y, keep
    idx = [ctx.meta.behavior_names.index(n) for n in names]
    y = sd.behavior[..., idx]  # (R, T, C)
    keep = np.isfinite(y).all(axis=(1, 2))
    if not keep.any():
        raise NotApplicable(f"session {sd.session_id} has no {names} values in split(s) {list(sd.splits)}")
    return y, keep


def _class_check(y: np.ndarray, n_splits: int, sid: str) -> None:
    """NotApplicable unless the pooled labels allow a nested stratified ``n_splits``-fold CV (cv_all_splits)."""
    classes, counts = np.unique(y, return_counts=True)
    if classes.size < 2:
        raise NotApplicable(f"session {sid}: only one class ({classes.tolist()}) among {y.size} trials")
    smallest = int(counts.min())
    if smallest < n_splits or smallest - math.ceil(smallest / n_splits) < n_splits:
        raise NotApplicable(f"session {sid}: class counts {dict(zip(classes.tolist(), counts.tolist()))} too "
                            f"small for nested {n_splits}-fold stratified CV")


def _split_class_check(y_train: np.ndarray, y_eval: np.ndarray, n_splits: int, sid: str, split: str) -> None:
    """NotApplicable unless the train labels allow a stratified ``n_splits``-fold CV and every class of the
    evaluated split is among them (train_to_eval)."""
    tc, tn = np.unique(y_train, return_counts=True)
    ec, en = np.unique(y_eval, return_counts=True)
    counts = (f"train class counts {dict(zip(tc.tolist(), tn.tolist()))}, {split} class counts "
              f"{dict(zip(ec.tolist(), en.tolist()))}")
    if y_eval.size == 0:
        raise NotApplicable(f"session {sid}: no {split} trial with a label to score ({counts})")
    if tc.size < 2:
        raise NotApplicable(f"session {sid}: the train split holds {tc.size} class(es) ({counts})")
    unseen = np.setdiff1d(ec, tc)
    if unseen.size:
        raise NotApplicable(f"session {sid}: class(es) {unseen.tolist()} occur only in the {split} split, the "
                            f"decoder fitted on train cannot predict them ({counts})")
    if int(tn.min()) < n_splits:
        raise NotApplicable(f"session {sid}: {counts}: too few train trials of a class for {n_splits}-fold "
                            "stratified CV inside the train split")


def _score_cv_all_splits(ctx: EvalContext, task: Task, sid: str, classification: bool, names: list[str],
                         sources: list) -> tuple[dict, tuple | None]:
    """One session under ``cv_all_splits``: nested CV over the trials of every split pooled (out-of-fold
    scores of trials that include the model's training trials).  Returns (entry, example trace or None)."""
    dec = task.spec["decoder"]
    sd = ctx.session(sid, tuple(s for s in SPLITS if s in ctx.dd))
    y, keep = _session_targets(ctx, task, sd, classification, names)
    if classification:
        _class_check(y[keep], dec["n_splits"], sid)
    elif keep.sum() < 2 * dec["n_splits"]:
        raise NotApplicable(f"session {sid}: {int(keep.sum())} trials with {names}: too few for nested "
                            f"{dec['n_splits']}-fold CV")
    entry: dict[str, Any] = {"n_trials": int(keep.sum()), "n_trials_excluded": int((~keep).sum())}
    kw, example = _decoder_kwargs(dec, classification), None
    for source, pred in sources:
        x = _source_features(ctx, task, source, pred, sd)
        if classification:
            y_cls = np.unique(y[keep], return_inverse=True)[1].ravel()  # float labels (0.2/0.8) -> classes
            res = mt.decode_choice(_chunk_mean(x[keep], task.spec["time_chunks"]), y_cls, **kw)
            entry.update({f"{source}/{m}": float(res[m]) for m in ("accuracy", "balanced_accuracy")})
            entry["chance"] = float(res["chance"])  # majority-class fraction of the pooled trials
            continue
        for c, n in enumerate(names):  # one decoder per behaviour channel
            res = mt.decode_regression(x[keep], y[keep][..., c], **kw)
            entry[f"{source}/r2_{n}"] = float(res["r2"])
            if example is None:
                example = (sid, n, y[keep][..., c], res["predictions"])
    return entry, example


def _score_train_to_eval(ctx: EvalContext, task: Task, sid: str, classification: bool, names: list[str],
                         sources: list) -> tuple[dict, tuple | None]:
    """One session under ``train_to_eval``: decoders fitted on its train trials (C / alpha by CV inside them)
    and scored on its trials of the evaluated split.  Returns (entry, example trace or None)."""
    dec = task.spec["decoder"]
    sd_tr, sd_ev = ctx.session(sid, "train", cap=False), ctx.session(sid)
    y_tr, k_tr = _session_targets(ctx, task, sd_tr, classification, names)
    y_ev, k_ev = _session_targets(ctx, task, sd_ev, classification, names)
    if classification:
        _split_class_check(y_tr[k_tr], y_ev[k_ev], dec["n_splits"], sid, ctx.split)
    else:
        if k_tr.sum() < dec["n_splits"]:
            raise NotApplicable(f"session {sid}: {int(k_tr.sum())} train trials with {names} ({int(k_ev.sum())} "
                                f"{ctx.split} trials): too few for {dec['n_splits']}-fold CV inside the train split")
        flat = [n for c, n in enumerate(names) if np.ptp(y_ev[k_ev][..., c]) == 0]
        if flat:
            raise NotApplicable(f"session {sid}: {flat} constant over its {int(k_ev.sum())} {ctx.split} trials "
                                "(R2 undefined)")
    entry: dict[str, Any] = {"n_train_trials": int(k_tr.sum()), "n_eval_trials": int(k_ev.sum()),
                             "n_trials_excluded": int((~k_tr).sum() + (~k_ev).sum())}
    kw, example = _decoder_kwargs(dec, classification), None
    chunks = task.spec["time_chunks"]
    for source, pred in sources:
        x_tr = _source_features(ctx, task, source, pred, sd_tr)[k_tr]
        x_ev = _source_features(ctx, task, source, pred, sd_ev)[k_ev]
        if classification:
            res = mt.decode_choice_split(_chunk_mean(x_tr, chunks), y_tr[k_tr], _chunk_mean(x_ev, chunks),
                                         y_ev[k_ev], **kw)
            entry.update({f"{source}/{m}": float(res[m]) for m in ("accuracy", "balanced_accuracy")})
            entry["chance"] = float(res["chance"])  # the train split's majority class, on the evaluated trials
            entry[f"{source}/best_C"] = float(res["best_C"])
            continue
        for c, n in enumerate(names):  # one decoder per behaviour channel
            res = mt.decode_regression_split(x_tr, y_tr[k_tr][..., c], x_ev, y_ev[k_ev][..., c], **kw)
            entry[f"{source}/r2_{n}"] = float(res["r2"])
            entry[f"{source}/best_alpha_{n}"] = float(res["best_alpha"])
            if example is None:
                example = (sid, n, y_ev[k_ev][..., c], res["predictions"])
    return entry, example


def _channel_means(entry: dict, sources: list, names: list[str], wanted: list[str]) -> dict:
    """The reported keys of a session: ``SOURCE/r2`` (mean over the behaviour channels; ``SOURCE/r2_NAME``
    kept when there are several), ``SOURCE/accuracy`` etc. and ``chance`` as the task asks."""
    out = {k: v for k, v in entry.items() if "/" not in k or "/best_" in k}
    for source, _ in sources:
        if f"{source}/r2_{names[0]}" in entry:
            r2s = [entry[f"{source}/r2_{n}"] for n in names]
            out[f"{source}/r2"] = float(np.mean(r2s))
            if len(names) > 1:
                out.update({f"{source}/r2_{n}": v for n, v in zip(names, r2s)})
            if len(names) == 1 and f"{source}/best_alpha_{names[0]}" in out:
                out[f"{source}/best_alpha"] = out.pop(f"{source}/best_alpha_{names[0]}")
        for m in ("accuracy", "balanced_accuracy"):
            if f"{source}/{m}" in entry and m in wanted:
                out[f"{source}/{m}"] = entry[f"{source}/{m}"]
    if "chance" not in wanted:
        out.pop("chance", None)
    return out


PROTOCOL_RUNNERS = {"train_to_eval": _score_train_to_eval, "cv_all_splits": _score_cv_all_splits}


def _train_share(ctx: EvalContext, sessions: list[str]) -> float:
    """Share of the pooled trials of ``sessions`` (every split) that belong to the train split."""
    total = sum(int(np.count_nonzero(ctx._session_rows(sp) == s)) for sp in SPLITS if sp in ctx.dd for s in sessions)
    train = sum(int(np.count_nonzero(ctx._session_rows("train") == s)) for s in sessions) if "train" in ctx.dd else 0
    return train / total if total else float("nan")


def run_decoding(ctx: EvalContext, task: Task) -> dict:
    """A decoding task under its ``decoder_protocol`` (``train_to_eval``: fitted on the train split, scored on
    ``ctx.split``; ``cv_all_splits``: nested CV over every split pooled).  Returns the mean over sessions of
    ``SOURCE/METRIC`` (and ``chance``), ``decoder_protocol``, ``n_sessions`` and ``per_session``."""
    require(ctx, task)
    kind, names = resolve_target(task.spec["target"], ctx.meta, task.spec.get("column_map"))
    protocol = task.spec["decoder_protocol"]
    if protocol == "train_to_eval":
        if ctx.split == "train":
            raise NotApplicable("decoder_protocol train_to_eval fits the decoder on the train split, and the "
                                "evaluated split is train: the decoder would be scored on the trials it was fitted "
                                "on (evaluate another split, or set decoder_protocol: cv_all_splits)")
        if "train" not in ctx.dd:
            raise NotApplicable(f"decoder_protocol train_to_eval needs a train split (the dataset has {list(ctx.dd)})")
    classification = kind == "label"
    wanted = task.metrics_for("classification" if classification else "regression")
    sources = _feature_sources(ctx, task)
    per_session: dict[str, dict] = {}
    example = None
    for sid in ctx.track(ctx.sessions, task.name):
        try:
            entry, ex = PROTOCOL_RUNNERS[protocol](ctx, task, sid, classification, names, sources)
        except NotApplicable as err:
            per_session[sid] = {"not_applicable": str(err)}
            continue
        per_session[sid] = _channel_means(entry, sources, names, wanted)
        example = example or ex
    scored = {s: e for s, e in per_session.items() if "not_applicable" not in e}
    if not scored:
        raise NotApplicable("; ".join(sorted({e["not_applicable"] for e in per_session.values()})))
    keys = [k for k in next(iter(scored.values())) if ("/" in k and "/best_" not in k) or k == "chance"]
    out: dict[str, Any] = {k: mean_or_nan(e.get(k) for e in scored.values()) for k in keys}
    out["decoder_protocol"] = protocol
    out["n_sessions"] = len(scored)
    out["per_session"] = per_session
    if protocol == "train_to_eval":
        ctx.note(task.name, f"decoder_protocol train_to_eval: decoders fitted on the train split ("
                            f"{task.spec['decoder']['n_splits']}-fold CV inside it for the penalty, then refit) and "
                            f"scored on the {ctx.split!r} split, trials the decoder never saw")
    else:
        ctx.note(task.name, f"decoder_protocol cv_all_splits: the decoder saw training trials -- nested CV over the "
                            f"trials of splits {[s for s in SPLITS if s in ctx.dd]} pooled, "
                            f"{_train_share(ctx, list(scored)):.0%} of them from the train split the model may "
                            "have been trained on; not a held-out score")
    if ctx.figure_dir is not None:
        _decoding_figures(ctx, task, out, example, protocol)
    return out


def _decoding_figures(ctx: EvalContext, task: Task, out: dict, example: tuple | None, protocol: str) -> None:
    from nfm.evaluation import plots

    path = plots.plot_bars({k: v for k, v in out.items() if isinstance(v, float)},
                           ctx.figure_dir / f"{task.name}_scores.png", title=f"{task.name} ({protocol})")
    ctx.figure(task.name, path)
    if example is not None:
        sid, n, true, pred = example
        what = (f"decoder fitted on train, {ctx.split} trials" if protocol == "train_to_eval"
                else "out-of-fold prediction, every split")
        path = plots.plot_trace(true, pred, ctx.figure_dir / f"{task.name}_trace.png", bin_size=ctx.bin_size,
                                title=f"{n} ({sid}), {what}")
        ctx.figure(task.name, path)


# --------------------------------------------------------------------------- task: fine-tuned decoding
def _balanced_accuracy(y: np.ndarray, p: np.ndarray) -> float:
    """Mean over the classes present in ``y`` of the recall (sklearn's definition, without its warning
    when a small split holds one class)."""
    classes, inv = np.unique(y, return_inverse=True)
    hit = (p == y).astype(np.float64)
    recall = np.bincount(inv.ravel(), weights=hit, minlength=classes.size) / np.bincount(inv.ravel())
    return float(recall.mean())


def run_finetune_decoding(ctx: EvalContext, task: Task) -> dict:
    from nfm.models import NfmForBehaviorDecoding

    require(ctx, task)
    pred = ctx.predictor
    model = getattr(pred, "model", None)
    if model is None or getattr(model, "nfm", None) is None:
        raise NotApplicable(f"{pred.name} is not an nfm model with a backbone to fine-tune")
    labels, behaviors = [], []
    for t in task.spec["targets"]:
        try:
            kind, names = resolve_target(t, ctx.meta, task.spec.get("column_map"))
        except NotApplicable as err:
            ctx.note(task.name, f"target {t}: {err}")
            continue
        (labels if kind == "label" else behaviors).extend(n for n in names if n not in labels + behaviors)
    if not labels and not behaviors:
        raise NotApplicable("none of the targets is in the dataset: " + "; ".join(ctx.notes.get(task.name, [])))
    if "train" not in ctx.dd:
        raise NotApplicable("the dataset has no train split to fine-tune on")
    label_names = list(ctx.meta.trial_label_names)
    lab_idx = [label_names.index(n) if n in label_names else None for n in labels]
    if any(i is None for i in lab_idx):
        bad = [n for n, i in zip(labels, lab_idx) if i is None]
        raise NotApplicable(f"trial column(s) {bad} are not trial labels of the batch (meta trial_label_names)")
    beh_idx = [ctx.meta.behavior_names.index(n) for n in behaviors]
    excl = {k: np.asarray(v, dtype=float) for k, v in task.spec["exclude_values"].items()}
    tr = task.spec["train"]
    train_sd = {sid: ctx.session(sid, "train", cap=False, batch_size=tr["batch_size"], fraction=tr["fraction"],
                                 seed=tr["seed"]) for sid in ctx.sessions}

    def prep(batch: dict) -> dict:
        b = dict(batch)
        tl = batch["trial_labels"][:, lab_idx].clone() if labels else torch.zeros(batch["spikes"].shape[0], 0)
        for j, n in enumerate(labels):
            if n in excl:
                bad = torch.from_numpy(np.isin(tl[:, j].numpy(), excl[n]))
                tl[bad, j] = float("nan")
        b["trial_labels"] = tl
        full = batch["behavior"]
        keep = torch.full_like(full, float("nan"))
        keep[..., beh_idx] = full[..., beh_idx]
        b["behavior"] = keep
        return b

    classes: dict[str, list[float]] = {}
    trainable = []
    for j, n in enumerate(labels):  # a label with one class cannot train a classifier: left out, said so
        vals = np.concatenate([prep(b)["trial_labels"][:, j].numpy() for sd in train_sd.values()
                               for b in sd.batches])
        vals = vals[np.isfinite(vals)]
        if np.unique(vals).size < 2:
            ctx.note(task.name, f"label {n!r}: fewer than 2 classes among the {vals.size} train trial(s) used "
                                f"(fraction {tr['fraction']:g}): not trained, not scored")
            continue
        trainable.append(j)
        classes[n] = sorted(float(v) for v in np.unique(vals))
    labels, lab_idx = [labels[j] for j in trainable], [lab_idx[j] for j in trainable]
    if not labels and not behaviors:
        raise NotApplicable("no target can be trained: " + "; ".join(ctx.notes.get(task.name, [])))
    cfg = copy.deepcopy(model.config)
    cfg.trial_label_names = labels
    cfg.trial_label_classes = classes
    torch.manual_seed(tr["seed"])
    dec = NfmForBehaviorDecoding(cfg).to(pred.device)
    dec.nfm.load_state_dict(model.nfm.state_dict())
    dec.freeze_backbone(bool(tr["freeze_backbone"]))
    params = [p for p in dec.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=tr["learning_rate"])
    train_batches = [prep(b) for sd in train_sd.values() for b in sd.batches]
    rng = np.random.default_rng(tr["seed"])
    dec.train()
    losses = []
    for step in ctx.track(range(tr["max_steps"]), f"{task.name} (training)", unit="step"):  # one step per batch
        b = to_device(train_batches[int(rng.integers(len(train_batches)))], pred.device)
        out = dec(b["spikes"], unit_mask=b["unit_mask"], unit_region=b["unit_region"],
                  session_ids=b["session_ids"], behavior=b["behavior"] if behaviors else None,
                  trial_labels=b["trial_labels"] if labels else None, bin_size=b["bin_size"])
        if out.loss is None:
            continue
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(float(out.loss.detach()))
    dec.eval()
    per_session: dict[str, dict] = {}
    for sid in ctx.track(ctx.sessions, task.name):
        sd = ctx.session(sid)
        ys, ps, bt, bp = [], [], [], []
        with torch.no_grad():
            for _, batch in sd.batch_slices():
                b = to_device(prep(batch), pred.device)
                o = dec(b["spikes"], unit_mask=b["unit_mask"], unit_region=b["unit_region"],
                        session_ids=b["session_ids"], bin_size=b["bin_size"])
                if labels:
                    ys.append(b["trial_labels"].cpu().numpy())
                    ps.append(np.stack([np.asarray(classes[n])[o.trial_logits[n].argmax(-1).cpu().numpy()]
                                        for n in labels], axis=1))
                if behaviors:
                    bt.append(b["behavior"][..., beh_idx].cpu().numpy())
                    bp.append(o.behavior_predictions[..., beh_idx].cpu().numpy())
        entry: dict[str, Any] = {"n_trials": sd.n_trials}
        for j, n in enumerate(labels):
            y, p = np.concatenate(ys)[:, j], np.concatenate(ps)[:, j]
            ok = np.isfinite(y)
            if ok.sum() == 0:
                continue
            entry[f"{n}/accuracy"] = float(np.mean(p[ok] == y[ok]))
            cls = np.asarray(classes[n])  # class values -> indices (sklearn rejects float labels)
            yi = np.abs(y[ok][:, None] - cls[None, :]).argmin(1)
            pi = np.abs(p[ok][:, None] - cls[None, :]).argmin(1)
            entry[f"{n}/balanced_accuracy"] = _balanced_accuracy(yi, pi)
        for j, n in enumerate(behaviors):
            y, p = np.concatenate(bt)[..., j], np.concatenate(bp)[..., j]
            ok = np.isfinite(y).all(axis=1)
            if ok.sum() == 0 or np.ptp(y[ok]) == 0:
                continue
            entry[f"{n}/r2"] = mt.r2_score(p[ok].ravel(), y[ok].ravel(), reduce="pooled")
        per_session[sid] = entry
    wanted = task.metrics_for("any")
    keys = sorted({k for e in per_session.values() for k in e if "/" in k and k.split("/")[-1] in wanted})
    out: dict[str, Any] = {k: mean_or_nan(e.get(k) for e in per_session.values()) for k in keys}
    if not keys:
        raise NotApplicable("no target could be scored on the evaluated split")
    out["train_steps"] = len(losses)
    out["final_train_loss"] = float(losses[-1]) if losses else float("nan")
    out["n_sessions"] = len(per_session)
    out["per_session"] = per_session
    out["train_trials"] = int(sum(sd.n_trials for sd in train_sd.values()))
    if tr["fraction"] < 1:
        ctx.note(task.name, f"few-shot: each session's {tr['fraction']:g} of its train trials drawn by "
                            f"nfm.data.fewshot with seed {tr['seed']} (the trials LoRA adaptation with "
                            f"--train_fraction {tr['fraction']:g} --train_fraction_seed {tr['seed']} uses)")
    ctx.note(task.name, f"fine-tuned on {out['train_trials']} train trials ({tr['fraction']:g} of the split) of "
                        f"{len(train_sd)} session(s) for {len(losses)} steps "
                        f"(lr {tr['learning_rate']}, backbone {'frozen' if tr['freeze_backbone'] else 'trained'})")
    return out
