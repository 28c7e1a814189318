"""Evaluation context: a dataset split collated for one model, per-session data and cached predictions.

:class:`EvalContext` holds the dataset (``DatasetDict`` + :class:`~nfm.data.meta.DatasetMeta`), the predictor(s),
the evaluated split and sessions; :meth:`EvalContext.session` collates a session's trials once (on the model's
time grid) into :class:`SessionData`, and :meth:`EvalContext.masked_predictions` runs a plan of evaluation masks
(:class:`~nfm.models.masking.MaskSample` templates) through the predictor and caches the result, so tasks that
share masks (co-smoothing and its PSTH) run the model once.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from nfm.data.collate import NfmCollator
from nfm.data.fewshot import fewshot_positions
from nfm.data.meta import DatasetMeta
from nfm.models.masking import MaskSample

from .predictor import ModelDatasetMismatch, NotApplicable, Predictor, to_device  # noqa: F401 (re-export)

SPLITS = ("train", "validation", "test")


@dataclass
class SessionData:
    """One session's trials of one or more splits, collated.

    counts: (R, T, N) float64 spike counts per bin (or 2-photon activity); valid: (R, T, N) bool
    (False = bad 2-photon frame) or None; behavior: (R, T, K) float64 (NaN = missing);
    trial_columns: name -> (R,) float64; regions: (N,) str; batches: the collated model batches
    (CPU tensors) in row order; events: (times, units, trial) arrays of the trials' spike events
    (seconds from the trial-window start).
    """

    session_id: str
    splits: tuple[str, ...]
    counts: np.ndarray
    valid: np.ndarray | None
    behavior: np.ndarray
    trial_columns: dict[str, np.ndarray]
    trial_ids: np.ndarray
    regions: np.ndarray
    batches: list[dict]
    events: tuple[np.ndarray, np.ndarray, np.ndarray]

    @property
    def n_trials(self) -> int:
        return self.counts.shape[0]

    @property
    def n_units(self) -> int:
        return self.counts.shape[2]

    def batch_slices(self) -> Iterable[tuple[slice, dict]]:
        start = 0
        for b in self.batches:
            n = b["spikes"].shape[0]
            yield slice(start, start + n), b
            start += n

    def head(self, n: int) -> "SessionData":
        """The first ``n`` trials (whole batches plus a cut last batch)."""
        batches, total = [], 0
        for b in self.batches:
            if total >= n:
                break
            take = min(n - total, b["spikes"].shape[0])
            batches.append({k: (v[:take] if (torch.is_tensor(v) and v.dim() > 0) or isinstance(v, list) else v)
                            for k, v in b.items()})
            total += take
        t, u, r = self.events
        keep = r < n
        return SessionData(self.session_id, self.splits, self.counts[:n],
                           None if self.valid is None else self.valid[:n], self.behavior[:n],
                           {k: v[:n] for k, v in self.trial_columns.items()}, self.trial_ids[:n], self.regions,
                           batches, (t[keep], u[keep], r[keep]))


def _stable_seed(*parts) -> list[int]:
    return [zlib.crc32(str(p).encode()) for p in parts]


class EvalContext:
    """Everything a task runner needs: the data, the predictors, caches, the figure folder and notes."""

    def __init__(self, dd, meta: DatasetMeta, predictor: Predictor, split: str, sessions: list[str], *,
                 baseline: Predictor | None = None, batch_size: int = 32, max_trials: int | None = None,
                 figure_dir: Path | None = None, progress: bool = False, seed: int = 0, baseline_cache=None):
        self.dd, self.meta = dd, meta
        self.predictor, self.baseline = predictor, baseline
        self.split, self.sessions = split, sessions
        self.batch_size, self.max_trials = int(batch_size), max_trials
        self.figure_dir = figure_dir
        self.progress = progress
        self.seed = seed
        #: :class:`~nfm.evaluation.baseline_cache.BaselineCache` of the data baselines, or None (always refit)
        self.baseline_cache = baseline_cache
        self.modality = meta.modality
        self.collator = NfmCollator(meta, region_vocab=predictor.region_vocab, bin_size=predictor.bin_size)
        self.bin_size = self.collator.bin_size
        self.n_bins = self.collator.n_bins
        self.figures: dict[str, list[str]] = {}
        #: session -> smoothing-baseline hyper-parameters chosen by CV on its training trials (last task run)
        self.smoothing_choices: dict[str, dict[str, float]] = {}
        self.notes: dict[str, list[str]] = {}
        self._sessions: dict[tuple, SessionData] = {}
        self._rows: dict[str, np.ndarray] = {}
        self._trial_id_cols: dict[str, np.ndarray] = {}
        self._pred: dict[tuple, Any] = {}

    # ---- data
    def _session_rows(self, split: str) -> np.ndarray:
        if split not in self._rows:
            self._rows[split] = np.asarray([str(s) for s in self.dd[split]["session_id"]], dtype=object)
        return self._rows[split]

    def _trial_ids(self, split: str) -> np.ndarray:
        """(rows,) int64 trial id of every row of ``split`` (cached)."""
        if split not in self._trial_id_cols:
            self._trial_id_cols[split] = np.asarray(self.dd[split]["trial_id"], dtype=np.int64)
        return self._trial_id_cols[split]

    def session(self, sid: str, splits: str | Sequence[str] | None = None, *, cap: bool = True,
                batch_size: int | None = None, fraction: float = 1.0, seed: int = 0) -> SessionData:
        """The session's trials of ``splits`` (default: the evaluated split), cached.

        ``cap``: apply ``max_trials`` (to the evaluated split only); ``batch_size``: trials per collated
        batch (default: the context's); ``fraction`` < 1: each split's few-shot subset of the session's trials
        (``max(1, ceil(fraction * n))``, in row order) drawn by :func:`nfm.data.fewshot.fewshot_positions` from
        ``(session id, trial ids, fraction, seed)`` -- the same draw as
        :func:`nfm.data.subsets.subset_split`, so few-shot heads and LoRA adaptation train on the same trials.
        """
        splits = (self.split,) if splits is None else ((splits,) if isinstance(splits, str) else tuple(splits))
        bs = int(batch_size or self.batch_size)
        key = (sid, splits, cap, bs, float(fraction), int(seed))
        if key in self._sessions:
            return self._sessions[key]
        rows: list[dict] = []
        for sp in splits:
            if sp not in self.dd:
                raise NotApplicable(f"the dataset has no {sp!r} split (has {list(self.dd)})")
            idx = np.flatnonzero(self._session_rows(sp) == sid)
            if cap and sp == self.split and self.max_trials:
                idx = idx[: int(self.max_trials)]
            if fraction != 1.0 and len(idx):  # the draw of subset_split (LoRA adaptation): same trial ids
                idx = idx[fewshot_positions(sid, self._trial_ids(sp)[idx], fraction, seed)]
            if len(idx):
                rows.extend(self.dd[sp].select(idx).to_list())
        if not rows:
            raise NotApplicable(f"session {sid} has no trial in split(s) {list(splits)}")
        batches = [self.collator(rows[i:i + bs]) for i in range(0, len(rows), bs)]
        counts = np.concatenate([b["spikes"].double().numpy() for b in batches])
        valid = (np.concatenate([b["valid_mask"].numpy() for b in batches]) if "valid_mask" in batches[0] else None)
        behavior = np.concatenate([b["behavior"].double().numpy() for b in batches])
        cols = sorted({k for r in rows for k in r if k.startswith("trial_") and k != "trial_id"})
        trial_columns = {c[len("trial_"):]: np.array([np.nan if r.get(c) is None else r.get(c) for r in rows],
                                                     dtype=np.float64) for c in cols}
        t_list, u_list, r_list = [], [], []
        start = 0
        for b in batches:  # one step per batch
            m = b["event_mask"].numpy()
            rr, ee = np.nonzero(m)
            t_list.append(b["event_times"].numpy()[rr, ee].astype(np.float64))
            u_list.append(b["event_units"].numpy()[rr, ee])
            r_list.append(rr + start)
            start += m.shape[0]
        events = (np.concatenate(t_list), np.concatenate(u_list).astype(np.int64), np.concatenate(r_list))
        regions = np.asarray(self.meta.session(sid).regions).astype(str)
        sd = SessionData(sid, splits, counts, valid, behavior, trial_columns,
                         np.array([int(r["trial_id"]) for r in rows]), regions, batches, events)
        self._sessions[key] = sd
        return sd

    # ---- predictions
    def masked_predictions(self, predictor: Predictor, sd: SessionData, plan: list[MaskSample], key: str):
        """Assemble (rates, var, target_union) (R, T, N) from one pass of the model per mask of ``plan``.

        ``plan``: (1, T, N) mask templates of the session (see :func:`nfm.evaluation.masking_tasks.mask_plan`);
        each is expanded to every batch of the session and only its target entries are kept.
        """
        ck = (predictor.name, sd.session_id, sd.splits, key)
        if ck in self._pred:
            return self._pred[ck]
        R, T, N = sd.counts.shape
        rates = np.full((R, T, N), np.nan)
        var = None
        covered = np.zeros((T, N), dtype=bool)
        for p in plan:  # one model pass per mask (fold / region) and batch
            sel = p.target[0].cpu().numpy()
            for sl, batch in sd.batch_slices():
                r, v = predictor.predict(batch, p.expand(batch["unit_mask"]))
                rates[sl][:, sel] = np.asarray(r)[:, sel]
                if v is not None:
                    if var is None:
                        var = np.full((R, T, N), np.nan)
                    var[sl][:, sel] = np.asarray(v)[:, sel]
            covered |= sel
        target = np.broadcast_to(covered, (R, T, N)).copy()
        if sd.valid is not None:
            target &= sd.valid
        self._pred[ck] = (rates, var, target)
        return self._pred[ck]

    def track(self, items, desc: str, unit: str = "session", total: int | None = None):
        """``items``, with a progress bar (``desc``, count and ETA) inside the running task when the context
        shows progress; the bar is removed when the loop ends."""
        if not self.progress:
            return items
        from tqdm.auto import tqdm

        return tqdm(items, desc=f"  {desc}", unit=unit, total=total, leave=False, mininterval=0.5)

    def note(self, task: str, text: str) -> None:
        self.notes.setdefault(task, [])
        if text not in self.notes[task]:
            self.notes[task].append(text)

    def figure(self, task: str, path: Path) -> None:
        self.figures.setdefault(task, []).append(str(path))


# --------------------------------------------------------------------------- compatibility
def check_compatibility(predictor: Predictor, meta: DatasetMeta, session_ids: Sequence[str]) -> None:
    """Raise :class:`ModelDatasetMismatch` unless the predictor can read every session of ``session_ids``."""
    if predictor.modality and predictor.modality != meta.modality:
        raise ModelDatasetMismatch(f"{predictor.name} was built for {predictor.modality!r} data but the dataset "
                                   f"is {meta.modality!r}")
    if predictor.window is not None:
        mw = [float(x) for x in meta.window]
        if any(abs(a - b) > 1e-9 for a, b in zip(predictor.window, mw)):
            raise ModelDatasetMismatch(f"{predictor.name} was trained on trial window {list(predictor.window)} s "
                                       f"but the dataset's window is {mw} s")
    known = predictor.session_n_units
    if known is None:
        return
    for sid in session_ids:
        n_data = int(meta.session(sid).n_units)
        if sid not in known:
            raise ModelDatasetMismatch(
                f"session {sid!r} of the dataset is unknown to {predictor.name} (it knows {len(known)} sessions, "
                f"e.g. {list(known)[:3]}); evaluate only the sessions it knows (sessions='known', CLI "
                "--sessions known), or adapt it to the new animal first (recipes/finetune_lora.py, --adapter)")
        if int(known[sid]) != n_data:
            raise ModelDatasetMismatch(
                f"session {sid!r}: {predictor.name} has {known[sid]} units but the dataset has {n_data} "
                "(neuron-count mismatch: a different spike sorting or ROI set of this session?)")


def select_sessions(meta: DatasetMeta, dd, split: str, predictor: Predictor, sessions) -> list[str]:
    """Evaluated sessions: ``"all"`` of the split, ``"known"`` (the ones the predictor knows) or given ids."""
    in_split = list(dict.fromkeys(str(s) for s in dd[split]["session_id"]))
    if sessions is None or sessions == "all":
        return in_split
    if sessions == "known":
        known = predictor.session_n_units
        chosen = in_split if known is None else [s for s in in_split if s in known]
        if not chosen:
            raise ModelDatasetMismatch(f"no session of the {split!r} split is known to {predictor.name}")
        return chosen
    wanted = [s.strip() for s in sessions.split(",")] if isinstance(sessions, str) else [str(s) for s in sessions]
    missing = [s for s in wanted if s not in in_split]
    if missing:
        raise ValueError(f"session {missing[0]!r} has no trial in the {split!r} split (sessions there: "
                         f"{in_split[:5]}{' ...' if len(in_split) > 5 else ''})")
    return wanted


# --------------------------------------------------------------------------- helpers shared by the task runners
def require(ctx: EvalContext, task, capability: str | None = None) -> None:
    """Raise :class:`NotApplicable` unless the task fits the data's modality (and the model has ``capability``)."""
    if not task.applies_to(ctx.modality):
        raise NotApplicable(f"task is for {task.modality} data; this dataset is {ctx.modality}")
    reason = ctx.predictor.can(capability) if capability else None
    if reason:
        raise NotApplicable(reason)


def mean_or_nan(values) -> float:
    """Mean of the non-None finite values, NaN if there are none."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    return float(np.nanmean(v)) if v.size and np.isfinite(v).any() else float("nan")


def safe_name(name: str) -> str:
    """A session id as a file-name stem."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
