"""IBL BrainWideBench (BWB) submissions: an nfm model's predictions written in the benchmark's own format.

The contract is the package ``ibl-bwb-eval`` (0.1.0; installed by the Makefile with ``--no-deps``, see
``docs/bwb.md``).  :func:`write_bwb` runs a model on a dataset split and writes, through
``ibl_bwb_eval.predictions.PredictionsWriter``::

    DIR/predictions/<label>/<task>/<recording_id>/seed_<seed>.safetensors      (one per seed, 43-47)
    DIR/ground_truth/<task>/<recording_id>/ground_truth.safetensors           (ground_truth=True)

which the benchmark's scorers read unchanged::

    python -m ibl_bwb_eval.scoring.ts2 --pred_dir DIR/predictions/<label> --gt_dir DIR/ground_truth

Tasks written (``<task>`` is the contract's id, ``ts2-co_smoothing`` ...):

* **TS2** ``co_smoothing``: a fixed 10% of each recording's units (at least one; drawn once per recording id,
  the same for every model, seed and split: :func:`held_out_units`) is hidden from the model in every bin
  and predicted (one model pass, nfm's ``neuron`` mask); the trailing ``COSMOOTH_TARGET_WINDOW`` (1 s) of each
  trial window is scored.  ``predictions`` (n, T, held-out units) are Poisson log-rates per bin (the log of
  the model's expected counts, floored at 1e-9 counts: nfm's own rate floor), ``targets`` the spike counts.
* **TS2** ``forecasting``: the last ``FORECAST_RATIO x FORECAST_BASE_WINDOW`` (0.1 s, the contract's fixed
  scored region) of each window is hidden (nfm's ``causal`` forward mask) and predicted for every unit.
* **TS1** classification (``choice``, ``reward``, ``stimulus_contrast``): per recording, a logistic regression
  (standardised features, sklearn defaults, C=1) on the model's latent states (``Predictor.latents``, nothing
  masked), averaged in ``TS1_CHUNKS`` consecutive chunks of the trial window, fitted on the recording's
  ``train`` trials and applied to the evaluated split; ``predictions`` (n, 1, classes) are log-probabilities
  (a class absent from the training trials gets ``LOG_PROB_FLOOR``).  Classes: ``choice`` ``(choice > 0)``
  (IBL -1 -> 0, 1 -> 1; no-go trials, choice 0, are left out), ``reward`` ``(feedbackType > 0)``,
  ``stimulus_contrast`` the index of ``max(contrastLeft, contrastRight)`` (NaN as 0) in
  ``CONTRAST_LEVELS`` (0, 6.25, 12.5, 25, 100%).  Ground truth ``values`` (n, 1) int64, ``trial_id`` (n,).
* **TS3** ``unit_cosmos``: each unit's Allen Cosmos region (its ``region`` acronym mapped by
  ``iblatlas.regions.BrainRegions``; units in ``void``/``root`` or with an acronym the atlas does not know are left
  out, as BWB drops them) from per-unit features of the model: the log of its predicted expected counts
  (nothing masked) averaged over the evaluated trials in ``TS3_CHUNKS`` chunks of the window, and their mean.
  Inductive: the units of each recording are classified by a logistic regression fitted on the units of the
  *other* evaluated recordings (leave one recording out; at least 2 recordings).  ``pred_proba`` (units, 10) in
  ``COSMOS_LABELS`` order (0 for a class no training unit had), ``entity_ids`` the cluster uuids (IBL) or
  ``<session id>/<unit id>``; one file per seed at ``<label>/ts3-unit_cosmos/seed_<seed>.safetensors``, ground
  truth at ``ground_truth/ts3-unit_cosmos/ground_truth.safetensors`` (``targets`` = indices into the labels).
* Not written (listed in :attr:`BwbReport.skipped` with the reason): the TS1 timestep tasks (the contract's
  ``movement_window`` / ``licking_window`` intervals are defined outside the package, so nfm cannot cut the same
  1 s windows; paws and licks are not in nfm datasets).

Ids.  ``window_timestamps`` (float64) is the start of each trial window in the recording's clock:
the align event (``meta.align_event``, a trials column) plus ``meta.window[0]``; both sides of the
alignment are written by this module, so they agree exactly (nfm stores trial columns as float32, so
the value is the session time to float32 precision: about 0.2 ms at an hour).  The recording id is the IBL
eid (``SessionMeta.extra["eid"]``) where the dataset has it, else the dataset's session id (a synthetic
world, NWB: said in :attr:`BwbReport.notes`).  TS1's ``trial_id`` is the row of the session's ALF trials table
(``extra["trial_filter"]["alf_trial_index"]``, IBL) where the dataset has it, else nfm's ``trial_id``.  ``entity_ids`` (an extra field the TS2 scorer ignores) names the
scored units: IBL cluster uuids (the part after ``<probe>/`` of nfm's ``unit_id``) where the dataset has them,
else the dataset's unit ids.

Seeds.  BWB reports seeds 43-47 as five training runs of a model.  One nfm model is deterministic at
evaluation, so its predictions are written under each seed of ``seeds`` (identical files, a zero spread);
write five models' predictions with ``seeds=[s]`` each to report a real spread.

What the benchmark's own ground truth cannot be matched against here: its held-out units (not part of
the contract package) and its window starts; scores of these files are scores of nfm's protocol in BWB's
format and metrics (Poisson D2 primary, bits/spike; BWB drops units without a scored spike).
"""
from __future__ import annotations

import math
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from nfm.errors import UsageError

#: the TS2 tasks in the order they are written
TS2_TASKS = ("co_smoothing", "forecasting")
#: the TS1 tasks of the contract (none written yet)
TS1_TASKS = ("choice", "reward", "stimulus_contrast", "whisker_motion_energy", "wheel_speed", "right_paw_speed",
             "left_paw_speed", "licking_rate")
#: the TS1 tasks nfm writes: trial-level classification from a trials column
TS1_CLASSIFICATION = ("choice", "reward", "stimulus_contrast")
#: IBL's absolute contrast levels, the 5 classes of ``stimulus_contrast``
CONTRAST_LEVELS = (0.0, 0.0625, 0.125, 0.25, 1.0)
#: chunks of the trial window whose mean latent states are a trial's decoder features
TS1_CHUNKS = 4
#: chunks of the trial window whose trial-averaged predicted rates are a unit's TS3 features
TS3_CHUNKS = 10
#: log-probability of a class the decoder never saw in training
LOG_PROB_FLOOR = -30.0
#: fraction of a recording's units held out for co-smoothing (BWB: 10%, fixed per recording)
HELDOUT_FRACTION = 0.1
#: forecasting's scored fraction of the contract's 1 s base window (``IBLBrainWideBenchTS2.FORECAST_RATIO``,
#: which ibl_bwb_eval.tasks.ts2 names but the contract package does not ship): the last 0.1 s of every window
FORECAST_RATIO = 0.1
#: log-rate floor: log of nfm's rate floor (expected counts per bin), as in nfm.evaluation.metrics
LOG_RATE_FLOOR = math.log(1e-9)
INSTALL_HINT = ("pip install --no-deps ibl-bwb-eval==0.1.0 && pip install torchmetrics rich "
                "(make install does this; docs/bwb.md)")


def _bwb():
    """The contract package, or a one-line install hint."""
    try:
        import ibl_bwb_eval  # noqa: F401
        from ibl_bwb_eval import predictions  # noqa: F401 (needs torch, safetensors)
    except ImportError as err:
        raise UsageError("--bwb", f"the BrainWideBench package is not installed ({err}); {INSTALL_HINT}") from None
    return ibl_bwb_eval


@dataclass
class BwbReport:
    """What :func:`write_bwb` wrote and skipped.

    written: one entry per (task, recording): ``task`` (``ts2-co_smoothing``), ``recording_id``, ``session_id``
    (nfm's), ``files`` (the seed files), ``ground_truth`` (path or None), ``n_windows``, ``n_units``,
    ``n_bins`` (scored bins per window).  skipped: ``(task, reason)``; notes: how ids were chosen.
    """

    out_dir: str
    label: str
    seeds: list[int]
    written: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def tasks_written(self) -> list[str]:
        return list(dict.fromkeys(w["task"] for w in self.written))

    def format(self) -> str:
        """The lines a user reads: tasks written (recordings, windows, files), tasks skipped and why, notes,
        and the scorer commands."""
        lines = [f"BrainWideBench predictions of {self.label!r} (seeds {', '.join(map(str, self.seeds))}) "
                 f"under {Path(self.out_dir) / 'predictions' / self.label}"]
        for task in self.tasks_written():
            ws = [w for w in self.written if w["task"] == task]
            what = (f"{ws[0]['n_units']} units of {len(ws[0]['session_id'].split(','))} recording(s)"
                    if task.startswith("ts3-") else
                    f"{len(ws)} recording(s), {sum(w['n_windows'] for w in ws)} windows")
            lines.append(f"  written {task}: {what}, {sum(len(w['files']) for w in ws)} files" + (
                             "; ground truth too" if any(w["ground_truth"] for w in ws) else ""))
        for task, reason in self.skipped:
            lines.append(f"  skipped {task}: {reason}")
        for note in self.notes:
            lines.append(f"  note: {note}")
        if self.written:
            gt = Path(self.out_dir) / "ground_truth"
            suites = sorted({w["task"].split("-", 1)[0] for w in self.written})
            for s in suites:
                lines.append(f"  score: python -m ibl_bwb_eval.scoring.{s} --pred_dir "
                             f"{Path(self.out_dir) / 'predictions' / self.label} --gt_dir {gt}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- ids
def held_out_units(recording_id: str, n_units: int, fraction: float = HELDOUT_FRACTION) -> np.ndarray:
    """The co-smoothing held-out units of a recording: ``max(1, ceil(fraction * n_units))`` unit rows (sorted),
    drawn from a generator seeded by the recording id alone (the same for every model, seed and split)."""
    if n_units < 2:
        raise ValueError(f"recording {recording_id}: co-smoothing needs >= 2 units (has {n_units})")
    k = min(n_units - 1, max(1, math.ceil(fraction * n_units)))
    rng = np.random.default_rng(zlib.crc32(f"bwb-co_smoothing/{recording_id}".encode()))
    return np.sort(rng.permutation(n_units)[:k])


def _check_path_part(value: str, what: str, where: str) -> str:
    value = str(value)
    if not value or value in (".", "..") or "/" in value or "\\" in value or not value.isascii():
        raise UsageError(where, f"{what} {value!r} cannot name a folder of the submission (empty, '.', '..', a "
                                "'/' or a non-ASCII character)")
    return value


def recording_id_of(meta, sid: str) -> tuple[str, bool]:
    """``(recording id, is_ibl)``: the session's IBL eid (``extra["eid"]``) where the dataset has one, else the
    dataset's session id."""
    extra = meta.session(sid).extra or {}
    eid = extra.get("eid") if isinstance(extra, dict) else None
    if eid:
        return str(eid), True
    return str(sid), False


def unit_ids_of(meta, sid: str) -> tuple[np.ndarray, bool]:
    """``(ids (N,), are_uuids)``: IBL cluster uuids (``unit_id`` ``"<probe>/<uuid>"``) where every unit has one,
    else the dataset's unit ids."""
    units = meta.session(sid).units
    ids = np.asarray([str(u) for u in units["unit_id"]])
    tails = np.asarray([u.rsplit("/", 1)[-1] for u in ids])
    looks_uuid = all(len(t) == 36 and t.count("-") == 4 for t in tails)
    return (tails, True) if looks_uuid else (ids, False)


def window_starts(meta, sd) -> np.ndarray:
    """(R,) float64 start of each trial window in the recording's clock: the align event + ``window[0]``."""
    col = meta.align_event
    if col not in sd.trial_columns:
        raise ValueError(f"session {sd.session_id}: the align event {col!r} is not a trials column of the dataset "
                         "(window timestamps need it)")
    t = sd.trial_columns[col].astype(np.float64) + float(meta.window[0])
    if not np.isfinite(t).all():
        i = int(np.flatnonzero(~np.isfinite(t))[0])
        raise ValueError(f"session {sd.session_id}: trial {int(sd.trial_ids[i])} has align event {col}={t[i]!r}")
    if len(np.unique(t)) != len(t):
        raise ValueError(f"session {sd.session_id}: two trial windows start at the same time ({col}); BWB aligns "
                         "windows by their start")
    return t


# --------------------------------------------------------------------------- writing
def _write_gt(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)
    return path


def _write_predictions(out: Path, label: str, task: str, seeds: Sequence[int], recording_id: str,
                       metadata: dict[str, str], fields: dict[str, tuple[torch.Tensor, torch.dtype | None]]) -> list[str]:
    from ibl_bwb_eval.predictions import PredictionsWriter

    files = []
    for seed in seeds:
        w = PredictionsWriter(True, out / "predictions", task, int(seed), label=label,
                              metadata={"recording_id": recording_id, **metadata},
                              path_fn=lambda base, md: base / md["recording_id"])
        for name, (value, dtype) in fields.items():
            w.set(dtype=dtype, **{name: value.contiguous()})
        w.save()
        files.append(str(w._output_path()))
    return files


def _ts2_plan(task: str, n_bins: int, bin_size: float, n_units: int, recording_id: str):
    """``(mask template (1, T, N), scored bins (slice), scored units (array))`` of a TS2 task; ValueError when
    the window is too short."""
    from ibl_bwb_eval.tasks import ts2 as contract

    from nfm.models.masking import forward_prediction_mask, held_out_units_mask

    units = torch.ones(1, n_units, dtype=torch.bool)
    if task == "co_smoothing":
        k = int(round(contract.COSMOOTH_TARGET_WINDOW / bin_size))
        if k > n_bins:
            raise ValueError(f"the trial window ({n_bins * bin_size:g} s) is shorter than the scored trailing "
                             f"{contract.COSMOOTH_TARGET_WINDOW:g} s")
        held = held_out_units(recording_id, n_units)
        sel = torch.zeros(1, n_units, dtype=torch.bool)
        sel[0, torch.from_numpy(held)] = True
        return held_out_units_mask(units, sel, n_bins, mode="neuron"), slice(n_bins - k, n_bins), held
    ratio = FORECAST_RATIO
    k = int(round(ratio * contract.FORECAST_BASE_WINDOW / bin_size))
    if not 0 < k < n_bins:
        raise ValueError(f"the forecast window ({ratio * contract.FORECAST_BASE_WINDOW:g} s) is {k} bins of "
                         f"{bin_size:g} s; it needs 1 .. {n_bins - 1}")
    return forward_prediction_mask(units, n_bins, k), slice(n_bins - k, n_bins), np.arange(n_units)


def _write_ts2(ctx, out: Path, label: str, seeds, ground_truth: bool, report: BwbReport) -> None:
    import ibl_bwb_eval

    from .predictor import NotApplicable

    pred = ctx.predictor
    reason = None
    if ctx.modality != "spikes":
        reason = f"TS2 scores Poisson spike counts; this dataset is {ctx.modality}"
    elif pred.likelihood != "poisson":
        reason = f"the model's likelihood is {pred.likelihood}, not Poisson (TS2 takes log-rates)"
    else:
        reason = pred.can("mtm")
    if reason:
        for task in TS2_TASKS:
            report.skipped.append((f"ts2-{task}", reason))
        return
    for task in TS2_TASKS:
        tid = ibl_bwb_eval.task_id("ts2", task)
        n_before = len(report.written)
        for sid in ctx.sessions:
            rid, is_ibl = recording_id_of(ctx.meta, sid)
            rid = _check_path_part(rid, "recording id", f"session {sid}")
            try:
                sd = ctx.session(sid)
                mask, bins, units = _ts2_plan(task, ctx.n_bins, ctx.bin_size, sd.n_units, rid)
                starts = window_starts(ctx.meta, sd)
            except (ValueError, NotApplicable) as err:
                report.skipped.append((tid, f"session {sid}: {err}"))
                continue
            rates, _, _ = ctx.masked_predictions(pred, sd, [mask], f"bwb/{task}")
            rates = rates[:, bins][:, :, units]
            if not np.isfinite(rates).all():
                raise ValueError(f"{pred.name}: non-finite predicted rates for session {sid} ({tid})")
            log_rates = np.ascontiguousarray(np.log(np.maximum(rates, 1e-9)))
            counts = np.ascontiguousarray(sd.counts[:, bins][:, :, units])
            ids, _ = unit_ids_of(ctx.meta, sid)
            entity = ibl_bwb_eval_entity(ids[units])
            md = {"nfm_session_id": sid, "ids": "ibl" if is_ibl else "dataset", "split": ctx.split,
                  "bin_size_s": f"{ctx.bin_size:g}", "writer": "nfm.evaluation.bwb"}
            files = _write_predictions(out, label, tid, seeds, rid, md, {
                "predictions": (torch.from_numpy(log_rates), torch.float32),
                "window_timestamps": (torch.from_numpy(starts), torch.float64),
                "entity_ids": (entity, None)})
            gt = None
            if ground_truth:
                gt = str(_write_gt(out / "ground_truth" / tid / rid / "ground_truth.safetensors", {
                    "targets": torch.from_numpy(counts.astype(np.float32)),
                    "window_timestamps": torch.from_numpy(starts),
                    "entity_ids": entity},
                    {"task": tid, "recording_id": rid, "ibl_bwb_eval_version": ibl_bwb_eval.__version__, **md}))
            report.written.append({"task": tid, "recording_id": rid, "session_id": sid, "files": files,
                                   "ground_truth": gt, "n_windows": int(log_rates.shape[0]),
                                   "n_units": int(len(units)), "n_bins": int(log_rates.shape[1])})
        if len(report.written) == n_before and not any(t == tid for t, _ in report.skipped):
            report.skipped.append((tid, "no session written"))


def alf_trial_index(meta, sid: str, trial_ids: np.ndarray) -> tuple[np.ndarray, bool]:
    """``(ids, is_ibl)``: each trial's row in the session's ALF trials table (``extra["trial_filter"]
    ["alf_trial_index"]``) where the dataset has it, else nfm's ``trial_id``."""
    extra = meta.session(sid).extra or {}
    filt = extra.get("trial_filter") if isinstance(extra, dict) else None
    index = filt.get("alf_trial_index") if isinstance(filt, dict) else None
    trial_ids = np.asarray(trial_ids, dtype=np.int64)
    if index is None:
        return trial_ids, False
    index = np.asarray(index, dtype=np.int64)
    if trial_ids.size and trial_ids.max() >= len(index):
        raise ValueError(f"session {sid}: trial_id {int(trial_ids.max())} has no row in extra.trial_filter."
                         f"alf_trial_index ({len(index)} rows)")
    return index[trial_ids], True


def ts1_classes(task: str, columns: dict[str, np.ndarray], sid: str) -> tuple[np.ndarray, np.ndarray]:
    """``(class (R,) int64, keep (R,) bool)`` of a TS1 classification task from a session's trials columns;
    ValueError (the reason) when the dataset lacks the variable."""
    def col(name):
        if name not in columns:
            raise ValueError(f"the dataset has no trials column {name!r}")
        return np.asarray(columns[name], dtype=np.float64)

    if task == "choice":
        v = col("choice")
        return (v > 0).astype(np.int64), np.isfinite(v) & (v != 0)
    if task == "reward":
        v = col("feedbackType")
        return (v > 0).astype(np.int64), np.isfinite(v) & (v != 0)
    if task == "stimulus_contrast":
        c = np.fmax(np.nan_to_num(col("contrastLeft")), np.nan_to_num(col("contrastRight")))
        levels = np.asarray(CONTRAST_LEVELS)
        hit = np.abs(c[:, None] - levels[None]) < 1e-4
        if not hit.any(axis=1).all():
            bad = c[~hit.any(axis=1)][0]
            raise ValueError(f"session {sid}: contrast {bad:g} is not one of IBL's levels {list(CONTRAST_LEVELS)}")
        return hit.argmax(axis=1).astype(np.int64), np.ones(len(c), dtype=bool)
    raise ValueError(f"{task!r} is not a TS1 classification task nfm writes")


def _trial_features(ctx, sd) -> np.ndarray:
    """(R, TS1_CHUNKS * H) the mean latent states of each trial in consecutive chunks of the window."""
    lat = np.concatenate([ctx.predictor.latents(b) for _, b in sd.batch_slices()])
    groups = np.array_split(np.arange(lat.shape[1]), min(TS1_CHUNKS, lat.shape[1]))
    return np.concatenate([lat[:, g].mean(axis=1) for g in groups], axis=1)


def _write_ts1(ctx, out: Path, label: str, seeds, ground_truth: bool, report: BwbReport) -> None:
    import ibl_bwb_eval
    from ibl_bwb_eval.tasks import get_ts1_readout_spec
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from .predictor import NotApplicable

    reason = ctx.predictor.can("latents")
    if reason is None and "train" not in ctx.dd:
        reason = "the dataset has no train split to fit the decoders on"
    if reason is None and ctx.split == "train":
        reason = "the decoders are fitted on the train split; evaluate another split"
    for task in TS1_CLASSIFICATION:
        tid = ibl_bwb_eval.task_id("ts1", task)
        if reason:
            report.skipped.append((tid, reason))
            continue
        n_classes = get_ts1_readout_spec(task).dim
        n_before, why = len(report.written), []
        for sid in ctx.sessions:
            rid, is_ibl = recording_id_of(ctx.meta, sid)
            rid = _check_path_part(rid, "recording id", f"session {sid}")
            try:
                sd, tr = ctx.session(sid), ctx.session(sid, "train")
                y, keep = ts1_classes(task, sd.trial_columns, sid)
                y_tr, keep_tr = ts1_classes(task, tr.trial_columns, sid)
                trial_index, _ = alf_trial_index(ctx.meta, sid, sd.trial_ids)
            except (ValueError, NotApplicable) as err:
                why.append(f"session {sid}: {err}")
                continue
            if len(np.unique(y_tr[keep_tr])) < 2:
                why.append(f"session {sid}: its train trials have one class only")
                continue
            if not keep.any():
                why.append(f"session {sid}: no evaluated trial has a {task} label")
                continue
            x_tr, x = _trial_features(ctx, tr)[keep_tr], _trial_features(ctx, sd)[keep]
            clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
            clf.fit(x_tr, y_tr[keep_tr])
            logp = np.full((int(keep.sum()), n_classes), LOG_PROB_FLOOR)
            logp[:, clf.classes_] = np.maximum(clf.predict_log_proba(x), LOG_PROB_FLOOR)
            ids = torch.from_numpy(np.ascontiguousarray(trial_index[keep]))
            md = {"nfm_session_id": sid, "ids": "ibl" if is_ibl else "dataset", "split": ctx.split,
                  "decoder": f"logistic regression on {TS1_CHUNKS} chunk means of the latent states, fitted on the "
                             "train trials", "writer": "nfm.evaluation.bwb"}
            files = _write_predictions(out, label, tid, seeds, rid, md, {
                "predictions": (torch.from_numpy(np.ascontiguousarray(logp[:, None, :])), torch.float32),
                "trial_id": (ids, None)})
            gt = None
            if ground_truth:
                gt = str(_write_gt(out / "ground_truth" / tid / rid / "ground_truth.safetensors", {
                    "values": torch.from_numpy(np.ascontiguousarray(y[keep][:, None])), "trial_id": ids},
                    {"task": tid, "recording_id": rid, "ibl_bwb_eval_version": ibl_bwb_eval.__version__, **md}))
            report.written.append({"task": tid, "recording_id": rid, "session_id": sid, "files": files,
                                   "ground_truth": gt, "n_windows": int(keep.sum()), "n_units": 0, "n_bins": 1})
        if len(report.written) == n_before:
            report.skipped.append((tid, "; ".join(why) or "no session written"))
        elif why:
            report.notes.append(f"{tid}: " + "; ".join(why))


def cosmos_of(acronyms) -> np.ndarray:
    """Allen Cosmos acronym of each region acronym (``iblatlas.regions.BrainRegions``, offline); ``""`` for an
    acronym the atlas does not know."""
    from iblatlas.regions import BrainRegions

    acr = np.asarray([str(a) for a in acronyms])
    out = np.full(acr.shape, "", dtype=object)
    br = BrainRegions()
    known = np.isin(acr, br.acronym)
    if known.any():
        out[known] = br.acronym2acronym(acr[known], mapping="Cosmos")
    return out.astype(str)


def _unit_features(ctx, sd) -> np.ndarray:
    """(N, TS3_CHUNKS + 1) per-unit features: log of the trial-averaged predicted expected counts (nothing masked)
    in consecutive chunks of the window, and their mean."""
    from nfm.models.masking import MaskSample

    parts = []
    for _, b in sd.batch_slices():
        none = torch.zeros_like(b["spikes"], dtype=torch.bool)
        parts.append(ctx.predictor.predict(b, MaskSample(none, none.clone(), "none"))[0])
    rates = np.concatenate(parts).mean(axis=0)  # (T, N)
    groups = np.array_split(np.arange(rates.shape[0]), min(TS3_CHUNKS, rates.shape[0]))
    f = np.log(np.stack([rates[g].mean(axis=0) for g in groups], axis=1) + 1e-6)  # (N, chunks)
    return np.concatenate([f, f.mean(axis=1, keepdims=True)], axis=1)


def _write_ts3(ctx, out: Path, label: str, seeds, ground_truth: bool, report: BwbReport) -> None:
    import ibl_bwb_eval
    from ibl_bwb_eval.tasks import COSMOS_LABELS
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    tid = ibl_bwb_eval.task_id("ts3", "unit_cosmos")
    reason = None
    if ctx.modality != "spikes":
        reason = f"TS3 classifies spike-sorted units; this dataset is {ctx.modality}"
    elif ctx.predictor.can("mtm"):
        reason = ctx.predictor.can("mtm")
    elif len(ctx.sessions) < 2:
        reason = ("one evaluated recording: the unit classifier is fitted on the units of the other recordings "
                  "(inductive), so it needs >= 2")
    if reason:
        report.skipped.append((tid, reason))
        return
    try:
        import iblatlas  # noqa: F401
    except ImportError:
        report.skipped.append((tid, "iblatlas is not installed (pip install nfm[ibl]): no Cosmos mapping"))
        return
    labels = np.asarray(COSMOS_LABELS)
    feats, ys, ids, groups = [], [], [], []
    for sid in ctx.sessions:
        cos = cosmos_of(ctx.meta.session(sid).regions)
        keep = np.isin(cos, labels)
        if not keep.any():
            continue
        rid, is_ibl = recording_id_of(ctx.meta, sid)
        uids, are_uuids = unit_ids_of(ctx.meta, sid)
        uids = uids if (is_ibl and are_uuids) else np.asarray([f"{sid}/{u}" for u in uids])
        feats.append(_unit_features(ctx, ctx.session(sid))[keep])
        ys.append(np.searchsorted(labels, cos[keep]))
        ids.append(uids[keep])
        groups.append(np.full(int(keep.sum()), len(groups)))
    if len(feats) < 2:
        report.skipped.append((tid, f"{len(feats)} evaluated recording(s) have units in Cosmos regions "
                                    f"{list(COSMOS_LABELS)}; the inductive classifier needs >= 2"))
        return
    x, y, uid, g = (np.concatenate(a) for a in (feats, ys, ids, groups))
    if len(np.unique(uid)) != len(uid):
        raise ValueError(f"{tid}: two units share an entity id (e.g. {uid[np.unique(uid, return_counts=True)[1] > 1][0]})")
    proba = np.zeros((len(y), len(labels)))
    left_out = []
    for k in range(len(feats)):
        tr, te = g != k, g == k
        if len(np.unique(y[tr])) < 2:
            proba[np.ix_(te, np.unique(y[tr]))] = 1.0
            left_out.append(str(k))
            continue
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
        clf.fit(x[tr], y[tr])
        proba[np.ix_(te, clf.classes_)] = clf.predict_proba(x[te])
    md = {"label_names": ",".join(COSMOS_LABELS), "split": ctx.split, "n_recordings": str(len(feats)),
          "classifier": f"logistic regression on {TS3_CHUNKS + 1} per-unit predicted-rate features, leave one "
                        "recording out", "writer": "nfm.evaluation.bwb"}
    entity = ibl_bwb_eval_entity(uid)
    from ibl_bwb_eval.predictions import PredictionsWriter

    files = []
    for seed in seeds:
        w = PredictionsWriter(True, out / "predictions", tid, int(seed), label=label, metadata=md)
        w.set(pred_proba=torch.from_numpy(np.ascontiguousarray(proba)))
        w.set(entity_ids=entity.contiguous())
        w.save()
        files.append(str(w._output_path()))
    gt = None
    if ground_truth:
        gt = str(_write_gt(out / "ground_truth" / tid / "ground_truth.safetensors", {
            "targets": torch.from_numpy(y.astype(np.int64)), "entity_ids": entity},
            {"task": tid, "ibl_bwb_eval_version": ibl_bwb_eval.__version__, **md}))
    report.written.append({"task": tid, "recording_id": "", "session_id": ",".join(ctx.sessions), "files": files,
                           "ground_truth": gt, "n_windows": 0, "n_units": int(len(y)), "n_bins": 0})
    if left_out:
        report.notes.append(f"{tid}: {len(left_out)} recording(s) whose other recordings have one Cosmos class "
                            "only: predicted as that class")


def ibl_bwb_eval_entity(ids: np.ndarray) -> torch.Tensor:
    """``encode_entity_ids`` of the contract (ASCII ids, non-empty)."""
    from ibl_bwb_eval.entity_ids import encode_entity_ids

    return encode_entity_ids(np.asarray(ids).astype(str))


def write_bwb(model, dataset, out_dir: str | os.PathLike, *, label: str, split: str = "test",
              sessions: str | Sequence[str] | None = "all", seeds: Sequence[int] | None = None,
              ground_truth: bool = False, batch_size: int = 32, max_trials: int | None = None) -> BwbReport:
    """Write BrainWideBench predictions of ``model`` on ``dataset`` (see the module docstring).

    Args:
        model: an nfm model (``load_model(path, adapter=...)`` merges an adapter) or a
            :class:`~nfm.evaluation.predictor.Predictor`.
        dataset: an nfm dataset folder or ``(DatasetDict, meta)``.
        out_dir: the submission folder (``predictions/`` and ``ground_truth/`` go in it).
        label: the model's name on the leaderboard (a folder name).
        split / sessions / batch_size / max_trials: as :func:`nfm.evaluation.runner.evaluate`.
        seeds: the seeds the files are written under (default: the contract's ``EVAL_SEEDS``, 43-47).
        ground_truth: also write the dataset's ground truth in the contract's format (to score locally).
    Returns a :class:`BwbReport` (what was written, what was skipped and why).
    """
    bwb = _bwb()
    from nfm.data.hf import load_dataset

    from .context import EvalContext, check_compatibility, select_sessions
    from .predictor import as_predictor

    label = _check_path_part(label, "label", "--bwb_label")
    seeds = [int(s) for s in (bwb.EVAL_SEEDS if seeds is None else seeds)]
    if not seeds:
        raise UsageError("--bwb_seeds", "no seed given")
    if isinstance(dataset, (str, os.PathLike)):
        dd, meta = load_dataset(dataset)
    else:
        dd, meta = dataset
    if split not in dd:
        raise UsageError("--split", f"{split!r} is not a split of the dataset (splits: {list(dd)})")
    predictor = as_predictor(model, "model")
    chosen = select_sessions(meta, dd, split, predictor, sessions)
    predictor = predictor.bind(meta, chosen)
    check_compatibility(predictor, meta, chosen)
    ctx = EvalContext(dd, meta, predictor, split, chosen, batch_size=batch_size, max_trials=max_trials)
    out = Path(out_dir)
    report = BwbReport(str(out), label, seeds)
    ibl = [recording_id_of(meta, s)[1] for s in chosen]
    if not all(ibl):
        plain = [s for s, i in zip(chosen, ibl) if not i]
        report.notes.append(f"{len(plain)} session(s) without IBL ids (e.g. {plain[0]}): recording id = the "
                            "dataset's session id, entity ids = its unit ids; these cannot align with BWB's own "
                            "ground truth files")
    if not all(unit_ids_of(meta, s)[1] for s in chosen if recording_id_of(meta, s)[1]):
        report.notes.append("some IBL sessions have no cluster uuids (unit_id <probe>/<index>): their entity ids "
                            "are nfm's unit ids")
    if len(seeds) > 1:
        report.notes.append(f"one model, deterministic at evaluation: the files of seeds {seeds} are identical "
                            "(BWB's seeds are training runs; write each run's model with seeds=[s] for a spread)")
    _write_ts2(ctx, out, label, seeds, ground_truth, report)
    _write_ts1(ctx, out, label, seeds, ground_truth, report)
    for task in ("whisker_motion_energy", "wheel_speed"):
        report.skipped.append((f"ts1-{task}", "its 1 s target window (the contract's movement_window) is defined "
                                              "outside the ibl_bwb_eval package; nfm cannot cut the same windows"))
    for task in ("right_paw_speed", "left_paw_speed", "licking_rate"):
        report.skipped.append((f"ts1-{task}", "nfm datasets carry no paw pose or lick times"))
    _write_ts3(ctx, out, label, seeds, ground_truth, report)
    return report


__all__ = ["write_bwb", "BwbReport", "held_out_units", "recording_id_of", "unit_ids_of", "window_starts",
           "alf_trial_index", "ts1_classes", "cosmos_of", "TS2_TASKS", "TS1_TASKS", "TS1_CLASSIFICATION", "CONTRAST_LEVELS",
           "HELDOUT_FRACTION"]
