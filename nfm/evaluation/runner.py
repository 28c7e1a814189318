"""Evaluation runner: reads ``tasks/*.yaml``, runs a model on a dataset split, scores, reports.

>>> from nfm.evaluation.runner import evaluate
>>> results = evaluate(model, "outputs/pretrain/dataset", tasks="all", split="test",
...                    output="outputs/eval/results.json")

``results`` (and ``results.json``) maps each task name to its metrics (floats,
``null`` where undefined, e.g. no spike to compute an ISI from) plus a
``per_session`` breakdown, or to ``{"not_applicable": "<reason>"}`` when the
dataset lacks what the task needs (a variable, a modality, ground-truth
weights) or the model lacks the head it needs.  Beside the JSON the runner
writes ``results.md`` (summary table with the baselines, one table per task)
and PNG figures in ``figures/``.

Metric names
------------
Model metrics are plain (``bps``) or prefixed by the model feature / method
they come from (``latents/accuracy``, ``perturbation/auroc``); baselines are
prefixed by the baseline's name: ``null/bps`` (per-neuron mean rate of the
evaluated entries: exactly 0 bits/spike by definition), ``smoothing/bps``
(NLB smoothing + Poisson GLM, fitted on the train split), ``spikes/accuracy``
(the same decoder on Gaussian-smoothed observed activity), ``pearson/auroc``,
``ccg/auroc`` and ``baseline_model/...`` (``baseline_model=``, e.g. a model
trained with temporal masking only, run through the same tasks).

Bits per spike: pooled or per neuron
------------------------------------
``bps`` is the NLB definition pooled over every evaluated neuron of every
session: ``sum(NLL_null - NLL_model) / (total spikes * ln 2)`` (a
spike-weighted mean: busy neurons count more).  ``bps_neuron_mean`` is the
mean over neurons of each neuron's own bps (its NLL difference over its own
spikes; silent neurons excluded); ``bps_session_mean`` the mean over sessions
of each session's pooled bps.  The null model of each neuron is its mean count
over the evaluated entries (NLB).

Masks at evaluation (every unit scored once per task)
-----------------------------------------------------
* ``neuron`` (co-smoothing): a seeded partition of each session's units into
  ``held_out_folds`` folds; each fold is hidden and predicted in turn.
* ``forward``: the last ``forward_s`` seconds of each trial are hidden and
  predicted with the causal prompt and causal attention.
* ``intra_region``: for each region r, r's units are split into folds; a fold
  is predicted while it and every unit outside r are hidden.
* ``inter_region``: each region in turn is hidden and predicted from the rest.
Regions are the unit table's acronyms (``meta["sessions"][sid]["units"]["region"]``).

The model interface
-------------------
The runner calls a model only through a :class:`Predictor`:
:class:`NfmPredictor` adapts an nfm model (``NfmForPretraining``,
``NfmForMaskedModeling``, ``NfmForSpikeGeneration``, ...); any object with the
same methods (e.g. an analytic oracle in a test) can be evaluated the same way.
"""
from __future__ import annotations

import copy
import json
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

from nfm.data.collate import NfmCollator
from nfm.evaluation import baselines as bl
from nfm.evaluation import connectivity as conn
from nfm.evaluation import generation_metrics as gm
from nfm.evaluation import metrics as mt
from nfm.evaluation.tasks import Task, load_tasks
from nfm.models.masking import MaskSample

__all__ = [
    "evaluate",
    "load_model",
    "Predictor",
    "NfmPredictor",
    "as_predictor",
    "NotApplicable",
    "ModelDatasetMismatch",
    "check_compatibility",
    "generate_held_out",
    "generate_to_files",
    "write_results",
    "render_markdown",
]

SPLITS = ("train", "validation", "test")


class NotApplicable(Exception):
    """The task (or one session of it) cannot be scored here; the message is the reason."""


class ModelDatasetMismatch(ValueError):
    """The model and the dataset disagree (unknown session, unit count, modality, bin size, window)."""


# --------------------------------------------------------------------------- predictors
class Predictor:
    """What the runner asks of a model.  Subclass it to evaluate anything through the same scoring path.

    Attributes
    ----------
    name : str
        Label in reports.
    likelihood : ``"poisson"`` (``predict`` returns expected counts per bin) or ``"gaussian"`` (means).
    session_n_units : dict[str, int] or None
        Sessions the predictor knows with their unit counts (None = any session).
    region_vocab : list[str] or None
        Region vocabulary for the collator's ``unit_region`` (None = the dataset's).
    bin_size : float or None
        Bin size [s] of the batches it expects (None = the dataset's).
    window : sequence of 2 floats or None
        Trial window [s] it was trained on (None = any).
    modality : str or None
        ``"spikes"`` / ``"calcium"`` (None = any).
    """

    name = "model"
    likelihood = "poisson"
    session_n_units: dict[str, int] | None = None
    region_vocab: list[str] | None = None
    bin_size: float | None = None
    window: Sequence[float] | None = None
    modality: str | None = None
    #: bins per generated window (generation starts on a window boundary)
    generation_window_bins: int = 1

    def predict(self, batch: dict, mask: MaskSample) -> tuple[np.ndarray, np.ndarray | None]:
        """Predictions for every entry of the batch given the input with ``mask.hidden`` entries hidden.

        Returns ``rates`` (B, T, N) float64 (expected counts per bin, or activity means) and ``var``
        (B, T, N) predictive variances (Gaussian likelihood) or None.
        """
        raise NotApplicable(f"{self.name} cannot predict masked activity")

    def latents(self, batch: dict) -> np.ndarray:
        """Per-bin latent states (B, T, H) with nothing masked."""
        raise NotApplicable(f"{self.name} has no latent states")

    def generate(self, batch: dict, start_window: int, *, temperature: float, top_p: float | None,
                 top_k: int | None, generator: torch.Generator | None) -> dict[str, np.ndarray]:
        """Closed-loop generation from window ``start_window`` on; returns numpy ``spikes`` (B, T, N),
        ``event_times`` / ``event_units`` / ``event_mask`` (B, E) of the generated events (seconds from the
        trial-window start) and ``window_bins`` (int)."""
        raise NotApplicable(f"{self.name} cannot generate spikes")

    def unit_attention(self, batch: dict) -> np.ndarray:
        """Directed unit-to-unit attention (B, N, N), [b, i, j] = target i <- source j."""
        raise NotApplicable(f"{self.name} exposes no unit-to-unit attention")

    _METHODS = {"mtm": "predict", "latents": "latents", "generation": "generate", "attention": "unit_attention"}

    def can(self, what: str) -> str | None:
        """None if the predictor supports ``what`` (mtm, latents, generation, attention), else the reason.

        By default: supported when the subclass overrides the corresponding method.
        """
        method = self._METHODS.get(what)
        if method is None:
            return f"unknown capability {what!r}"
        if getattr(type(self), method) is getattr(Predictor, method):
            return f"{self.name} does not implement {method}()"
        return None


def _to_device(batch: dict, device) -> dict:
    return {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}


class NfmPredictor(Predictor):
    """Adapter from an nfm model to :class:`Predictor` (the one place that knows the model's API).

    * masked prediction: ``model.nfm`` backbone with ``hidden_mask``/``mask_mode``/``causal`` of an explicit
      :class:`~nfm.models.masking.MaskSample`, then ``model.nfm.readout`` (the same computation as
      ``NfmForMaskedModeling.forward(mask=...)``, without its loss); rates = exp(log-rate clamped to
      +-``config.max_log_rate``); Gaussian variances = exp(per-unit log-variance clamped to [-10, 10]) or
      ``config.gaussian_fixed_variance``;
    * latents: the backbone's ``bin_states`` with the ``"none"`` prompt;
    * generation: ``model.generate(...)`` (closed loop);
    * attention: ``model.generation_outputs(..., output_attentions=True)`` then
      ``NfmForSpikeGeneration.unit_attention``.
    """

    def __init__(self, model, name: str = "model"):
        self.model = model
        self.name = name
        cfg = model.config
        self.config = cfg
        self.backbone = getattr(model, "nfm", None) or model
        if not hasattr(self.backbone, "session_tables"):
            raise TypeError(f"{type(model).__name__} is not an nfm model (no nfm backbone)")
        self.likelihood = cfg.likelihood
        self.session_n_units = {str(k): int(v) for k, v in cfg.session_n_units.items()}
        self.region_vocab = list(cfg.region_vocab)
        self.bin_size = float(cfg.bin_size)
        self.window = [float(x) for x in cfg.window]
        self.modality = cfg.modality
        self.device = next(model.parameters()).device
        self.generation_window_bins = int(cfg.window_bins) if getattr(model, "decoder", None) is not None else 1

    # ---- capabilities
    def can(self, what: str) -> str | None:
        cls = type(self.model).__name__
        objectives = list(getattr(self.config, "objectives", []))
        if what == "mtm":
            if cls in ("NfmForMaskedModeling",) or (cls == "NfmForPretraining" and "mtm" in objectives):
                return None
            return (f"{cls} was not trained for masked modelling (config.objectives={objectives}); its read-out "
                    "is not a masked-prediction model")
        if what == "latents":
            return None
        if what in ("generation", "attention"):
            if getattr(self.model, "decoder", None) is None:
                return f"{cls} has no event decoder (config.objectives={objectives})"
            return None
        return f"unknown capability {what!r}"

    # ---- calls
    @torch.no_grad()
    def predict(self, batch: dict, mask: MaskSample) -> tuple[np.ndarray, np.ndarray | None]:
        self.model.eval()
        b = _to_device(batch, self.device)
        bb = self.backbone
        tables = bb.session_tables(b["session_ids"], b["unit_mask"], b["unit_region"], device=self.device)
        out = bb(b["spikes"], session_ids=b["session_ids"], hidden_mask=mask.hidden.to(self.device),
                 mask_mode=mask.mode, causal=mask.causal, tables=tables)
        pred = bb.readout(out.bin_states, tables).float()
        if self.likelihood == "poisson":
            m = float(self.config.max_log_rate)
            return torch.exp(pred.clamp(-m, m)).double().cpu().numpy(), None
        if tables.log_var is not None:
            var = torch.exp(tables.log_var.float().clamp(-10.0, 10.0))
        else:
            var = torch.full_like(tables.readout_bias.float(), float(self.config.gaussian_fixed_variance))
        var = var.unsqueeze(1).expand_as(pred)
        return pred.double().cpu().numpy(), var.double().cpu().numpy()

    @torch.no_grad()
    def latents(self, batch: dict) -> np.ndarray:
        self.model.eval()
        b = _to_device(batch, self.device)
        out = self.backbone(b["spikes"], unit_mask=b["unit_mask"], unit_region=b["unit_region"],
                            session_ids=b["session_ids"], mask_mode="none")
        return out.bin_states.double().cpu().numpy()

    @torch.no_grad()
    def generate(self, batch: dict, start_window: int, *, temperature: float, top_p: float | None,
                 top_k: int | None, generator: torch.Generator | None) -> dict[str, np.ndarray]:
        reason = self.can("generation")
        if reason:
            raise NotApplicable(reason)
        self.model.eval()
        b = _to_device(batch, self.device)
        out = self.model.generate(
            b["spikes"], unit_mask=b["unit_mask"], unit_region=b["unit_region"], session_ids=b["session_ids"],
            event_times=b["event_times"], event_units=b["event_units"], event_mask=b["event_mask"],
            stimulus=b.get("stimulus"), behavior=b.get("behavior"), start_window=start_window,
            do_sample=True, temperature=temperature, top_k=top_k or None, top_p=top_p, generator=generator)
        return {"spikes": out.spikes.double().cpu().numpy(), "event_times": out.event_times.double().cpu().numpy(),
                "event_units": out.event_units.cpu().numpy(), "event_mask": out.event_mask.cpu().numpy(),
                "window_bins": int(self.config.window_bins)}

    @torch.no_grad()
    def unit_attention(self, batch: dict) -> np.ndarray:
        reason = self.can("attention")
        if reason:
            raise NotApplicable(reason)
        from nfm.models import NfmForSpikeGeneration

        self.model.eval()
        b = _to_device(batch, self.device)
        out = _generation_outputs_with_attention(self.model, b)
        N = b["spikes"].shape[2]
        return NfmForSpikeGeneration.unit_attention(out, N).double().cpu().numpy()


def _generation_outputs_with_attention(model, batch: dict):
    """Teacher-forced event-decoder outputs with cross-attention maps (``model.generation_outputs``)."""
    keys = ("spikes", "unit_mask", "unit_region", "session_ids", "event_times", "event_units", "event_mask",
            "stimulus", "behavior")
    return model.generation_outputs(**{k: batch.get(k) for k in keys}, output_attentions=True)


def as_predictor(model, name: str = "model") -> Predictor:
    """A :class:`Predictor` as is, or an nfm model wrapped in :class:`NfmPredictor`."""
    if isinstance(model, Predictor):
        return model
    return NfmPredictor(model, name=name)


def load_model(path_or_id: str, adapter: str | None = None, device: str | None = None):
    """Load an nfm model from a folder or a Hugging Face Hub id (safetensors), optionally with a PEFT adapter.

    The class is the one named in the checkpoint's ``config.architectures`` (e.g. ``NfmForPretraining``).
    ``adapter``: an nfm PEFT adapter folder (``recipes/finetune_lora.py``): :func:`nfm.adapters.load_adapter`
    adds the new animal's sessions and loads the LoRA weights, :func:`nfm.adapters.merge_adapter` folds them
    into a plain model for evaluation.
    """
    import nfm.models as models
    from transformers import AutoConfig

    models.register_auto_classes()
    config = AutoConfig.from_pretrained(path_or_id)
    arch = (getattr(config, "architectures", None) or ["NfmForPretraining"])[0]
    cls = getattr(models, arch, None)
    if cls is None:
        raise ValueError(f"{path_or_id}: config.architectures names {arch!r}, which is not an nfm model class")
    model = cls.from_pretrained(path_or_id)
    if adapter:
        from nfm import adapters

        model = adapters.merge_adapter(adapters.load_adapter(model, adapter))
    if device:
        model = model.to(device)
    model.eval()
    return model


# --------------------------------------------------------------------------- data
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


@dataclass
class MaskPass:
    """One evaluation mask applied to every trial of a session: (T, N) bool target and hidden entries."""

    target: np.ndarray
    hidden: np.ndarray
    mode: str
    causal: bool = False


def _stable_seed(*parts) -> list[int]:
    return [zlib.crc32(str(p).encode()) for p in parts]


class EvalContext:
    """Everything a task runner needs: the data, the predictors, caches, the figure folder and notes."""

    def __init__(self, dd, meta: dict, predictor: Predictor, split: str, sessions: list[str], *,
                 baseline: Predictor | None = None, batch_size: int = 32, max_trials: int | None = None,
                 figure_dir: Path | None = None, progress: bool = False, seed: int = 0):
        self.dd, self.meta = dd, meta
        self.predictor, self.baseline = predictor, baseline
        self.split, self.sessions = split, sessions
        self.batch_size, self.max_trials = int(batch_size), max_trials
        self.figure_dir = figure_dir
        self.progress = progress
        self.seed = seed
        self.modality = meta["modality"]
        self.collator = NfmCollator(meta, region_vocab=predictor.region_vocab, bin_size=predictor.bin_size)
        self.bin_size = self.collator.bin_size
        self.n_bins = self.collator.n_bins
        self.figures: dict[str, list[str]] = {}
        self.notes: dict[str, list[str]] = {}
        self._sessions: dict[tuple, SessionData] = {}
        self._rows: dict[str, np.ndarray] = {}
        self._pred: dict[tuple, Any] = {}

    # ---- data
    def _session_rows(self, split: str) -> np.ndarray:
        if split not in self._rows:
            self._rows[split] = np.asarray([str(s) for s in self.dd[split]["session_id"]], dtype=object)
        return self._rows[split]

    def session(self, sid: str, splits: str | Sequence[str] | None = None, *, cap: bool = True,
                batch_size: int | None = None) -> SessionData:
        """The session's trials of ``splits`` (default: the evaluated split), cached.

        ``cap``: apply ``max_trials`` (to the evaluated split only); ``batch_size``: trials per collated
        batch (default: the context's).
        """
        splits = (self.split,) if splits is None else ((splits,) if isinstance(splits, str) else tuple(splits))
        bs = int(batch_size or self.batch_size)
        key = (sid, splits, cap, bs)
        if key in self._sessions:
            return self._sessions[key]
        rows: list[dict] = []
        for sp in splits:
            if sp not in self.dd:
                raise NotApplicable(f"the dataset has no {sp!r} split (has {list(self.dd)})")
            idx = np.flatnonzero(self._session_rows(sp) == sid)
            if cap and sp == self.split and self.max_trials:
                idx = idx[: int(self.max_trials)]
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
        regions = np.asarray(self.meta["sessions"][sid]["units"]["region"]).astype(str)
        sd = SessionData(sid, splits, counts, valid, behavior, trial_columns,
                         np.array([int(r["trial_id"]) for r in rows]), regions, batches, events)
        self._sessions[key] = sd
        return sd

    # ---- predictions
    def masked_predictions(self, predictor: Predictor, sd: SessionData, plan: list[MaskPass], key: str):
        """Assemble (rates, var, target_union) (R, T, N) from one pass of the model per mask of ``plan``."""
        ck = (predictor.name, sd.session_id, sd.splits, key)
        if ck in self._pred:
            return self._pred[ck]
        R, T, N = sd.counts.shape
        rates = np.full((R, T, N), np.nan)
        var = None
        covered = np.zeros((T, N), dtype=bool)
        for p in plan:  # one model pass per mask (fold / region) and batch
            for sl, batch in sd.batch_slices():
                B = batch["spikes"].shape[0]
                um = batch["unit_mask"]
                tgt = torch.from_numpy(p.target).unsqueeze(0).expand(B, T, N) & um.unsqueeze(1)
                hid = torch.from_numpy(p.hidden).unsqueeze(0).expand(B, T, N) & um.unsqueeze(1)
                r, v = predictor.predict(batch, MaskSample(tgt.contiguous(), hid.contiguous(), p.mode, p.causal))
                sel = p.target
                rates[sl][:, sel] = np.asarray(r)[:, sel]
                if v is not None:
                    if var is None:
                        var = np.full((R, T, N), np.nan)
                    var[sl][:, sel] = np.asarray(v)[:, sel]
            covered |= p.target
        target = np.broadcast_to(covered, (R, T, N)).copy()
        if sd.valid is not None:
            target &= sd.valid
        self._pred[ck] = (rates, var, target)
        return self._pred[ck]

    def note(self, task: str, text: str) -> None:
        self.notes.setdefault(task, [])
        if text not in self.notes[task]:
            self.notes[task].append(text)

    def figure(self, task: str, path: Path) -> None:
        self.figures.setdefault(task, []).append(str(path))


# --------------------------------------------------------------------------- compatibility
def check_compatibility(predictor: Predictor, meta: dict, session_ids: Sequence[str]) -> None:
    """Raise :class:`ModelDatasetMismatch` unless the predictor can read every session of ``session_ids``."""
    if predictor.modality and predictor.modality != meta["modality"]:
        raise ModelDatasetMismatch(f"{predictor.name} was built for {predictor.modality!r} data but the dataset "
                                   f"is {meta['modality']!r}")
    if predictor.window is not None:
        mw = [float(x) for x in meta["window"]]
        if any(abs(a - b) > 1e-9 for a, b in zip(predictor.window, mw)):
            raise ModelDatasetMismatch(f"{predictor.name} was trained on trial window {list(predictor.window)} s "
                                       f"but the dataset's window is {mw} s")
    known = predictor.session_n_units
    if known is None:
        return
    for sid in session_ids:
        n_data = int(meta["sessions"][sid]["n_units"])
        if sid not in known:
            raise ModelDatasetMismatch(
                f"session {sid!r} of the dataset is unknown to {predictor.name} (it knows {len(known)} sessions, "
                f"e.g. {list(known)[:3]}); evaluate only the sessions it knows (sessions='known', CLI "
                "--sessions known), or adapt it to the new animal first (recipes/finetune_lora.py, --adapter)")
        if int(known[sid]) != n_data:
            raise ModelDatasetMismatch(
                f"session {sid!r}: {predictor.name} has {known[sid]} units but the dataset has {n_data} "
                "(neuron-count mismatch: a different spike sorting or ROI set of this session?)")


def _select_sessions(meta: dict, dd, split: str, predictor: Predictor, sessions) -> list[str]:
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


# --------------------------------------------------------------------------- masks
def mask_plan(mask: dict, sd: SessionData, n_bins: int, bin_size: float) -> list[MaskPass]:
    """The evaluation masks of a session (see the module docstring); every scored unit is a target once."""
    T, N = n_bins, sd.n_units
    mode = mask["mode"]
    everything = np.ones((T, N), dtype=bool)
    if mode == "forward":
        k = mask["forward_s"] / bin_size
        if abs(k - round(k)) > 1e-6:
            raise ValueError(f"mask.forward_s={mask['forward_s']} s is not a whole number of {bin_size} s bins")
        k = int(round(k))
        if not 0 < k < T:
            raise NotApplicable(f"forward_s={mask['forward_s']} s leaves no past in a {T * bin_size:g} s trial")
        m = np.zeros((T, N), dtype=bool)
        m[T - k:] = True
        return [MaskPass(m, m.copy(), "causal", causal=True)]
    rng = np.random.default_rng(_stable_seed(mask.get("seed", 0), sd.session_id))
    if mode == "neuron":
        folds = np.array_split(rng.permutation(N), min(int(mask["held_out_folds"]), N))
        out = []
        for f in folds:
            m = np.zeros((T, N), dtype=bool)
            m[:, f] = True
            out.append(MaskPass(m, m.copy(), "neuron"))
        return out
    regions = list(dict.fromkeys(sd.regions.tolist()))
    if mode == "inter_region":
        if len(regions) < 2:
            raise NotApplicable(f"session {sd.session_id} has a single region ({regions[0]}): nothing to predict "
                                "a whole region from")
        out = []
        for r in regions:
            m = everything & (sd.regions == r)[None, :]
            out.append(MaskPass(m, m.copy(), "inter_region"))
        return out
    if mode == "intra_region":
        out = []
        for r in regions:
            units = np.flatnonzero(sd.regions == r)
            outside = sd.regions != r
            for f in np.array_split(rng.permutation(units), min(int(mask["held_out_folds"]), len(units))):
                tgt = np.zeros((T, N), dtype=bool)
                tgt[:, f] = True
                out.append(MaskPass(tgt, tgt | outside[None, :], "intra_region"))
        return out
    raise ValueError(f"unknown mask mode {mode!r}")


def _plan_key(mask: dict) -> str:
    return json.dumps(mask, sort_keys=True)


# --------------------------------------------------------------------------- scoring helpers
def _masked_mean(x: np.ndarray, m: np.ndarray) -> np.ndarray:
    axes = tuple(range(x.ndim - 1))
    s = np.where(m, x, 0.0).sum(axis=axes)
    c = m.sum(axis=axes)
    return np.divide(s, c, out=np.zeros_like(s, dtype=np.float64), where=c > 0)


def _null_like(counts: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Each unit's mean over its evaluated entries, broadcast to ``counts.shape`` (the NLB null)."""
    return np.broadcast_to(_masked_mean(counts, m), counts.shape).copy()


def score_spikes(rates: np.ndarray, counts: np.ndarray, m: np.ndarray) -> dict[str, Any]:
    """Bits/spike of one session: pooled value, per-neuron values and the parts needed to pool sessions."""
    n_spk = float(np.where(m, counts, 0.0).sum())
    if n_spk <= 0:
        raise NotApplicable("no spike in the evaluated entries")
    bps = mt.bits_per_spike(rates, counts, mask=m)
    per = mt.bits_per_spike(rates, counts, mask=m, pooled=False)
    evaluated = m.reshape(-1, m.shape[-1]).any(axis=0)
    per = np.where(evaluated, per, np.nan)
    nll_model = mt.poisson_nll(rates, counts, mask=m)
    nll_null = mt.poisson_nll(_null_like(counts, m), counts, mask=m)
    return {"bps": bps, "per_neuron": per, "nll_model": nll_model, "nll_null": nll_null, "spikes": n_spk,
            "n_neurons": int(evaluated.sum())}


def score_calcium(means: np.ndarray, var: np.ndarray | None, act: np.ndarray, m: np.ndarray) -> dict[str, Any]:
    """R2 and Gaussian NLL (nats per evaluated entry) of 2-photon predictions against the per-ROI mean.

    Baseline = each ROI's mean and variance over its evaluated entries (a fitted per-ROI Gaussian, so its
    R2 is 0).  The model's NLL uses its predictive variance when it gives one, else each ROI's mean squared
    residual (its best constant variance).  Variances are floored at 1e-6 x the median positive ROI variance.
    """
    n_entries = int(m.sum())
    if n_entries == 0:
        raise NotApplicable("no evaluated entry")
    rois = m.reshape(-1, m.shape[-1]).any(axis=0)
    mu = _null_like(act, m)
    base_var = _masked_mean((act - mu) ** 2, m)
    pos = base_var[rois & (base_var > 0)]
    floor = 1e-6 * (float(np.median(pos)) if pos.size else 1.0)
    base_var = np.maximum(base_var, floor)
    per = mt.r2_score(means[..., rois], act[..., rois], mask=m[..., rois], reduce="none")
    pooled = mt.r2_score(means[..., rois], act[..., rois], mask=m[..., rois], reduce="pooled")
    if var is None:
        var = np.broadcast_to(np.maximum(_masked_mean((act - np.nan_to_num(means)) ** 2, m), floor), act.shape)
    v = np.where(m, np.maximum(np.nan_to_num(var, nan=1.0), floor), 1.0)
    nll_model = mt.gaussian_nll(np.where(m, means, 0.0), act, var=v, mask=m)
    nll_base = mt.gaussian_nll(mu, act, var=np.broadcast_to(base_var, act.shape), mask=m)
    return {"r2": float(np.nanmean(per)) if np.isfinite(per).any() else float("nan"), "r2_pooled": pooled,
            "per_neuron": _scatter(per, rois),
            "gaussian_nll": nll_model / n_entries, "gaussian_nll_baseline": nll_base / n_entries,
            "delta_nll": (nll_base - nll_model) / n_entries, "n_entries": n_entries, "n_neurons": int(rois.sum())}


def _scatter(values: np.ndarray, where: np.ndarray) -> np.ndarray:
    out = np.full(where.shape, np.nan)
    out[where] = values
    return out


def _mean_or_nan(values) -> float:
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    return float(np.nanmean(v)) if v.size and np.isfinite(v).any() else float("nan")


# --------------------------------------------------------------------------- task: masking
def _masking_predictions(ctx: EvalContext, task: Task, predictor: Predictor, sid: str):
    sd = ctx.session(sid)
    plan = mask_plan(task.spec["mask"], sd, ctx.n_bins, ctx.bin_size)
    rates, var, target = ctx.masked_predictions(predictor, sd, plan, _plan_key(task.spec["mask"]))
    return sd, plan, rates, var, target


def _smoothing_rates(ctx: EvalContext, sd: SessionData, plan: list[MaskPass], spec: dict) -> np.ndarray:
    """NLB smoothing baseline per mask pass: held-in (not hidden) units -> target units, fitted on train."""
    ck = ("smoothing", sd.session_id, sd.splits, json.dumps([p.target.any(0).tolist() for p in plan]),
          json.dumps(spec, sort_keys=True))
    if ck in ctx._pred:
        return ctx._pred[ck]
    train = ctx.session(sd.session_id, "train", cap=False)
    sigma = bl.sigma_ms_to_bins(spec["sigma_ms"], ctx.bin_size)
    out = np.full(sd.counts.shape, np.nan)
    for p in plan:  # one baseline fit per mask pass
        tgt = np.flatnonzero(p.target.any(0))
        hin = np.flatnonzero(~p.hidden.any(0))
        if hin.size == 0:  # nothing to smooth: the training mean rate
            out[..., tgt] = train.counts[..., tgt].mean(axis=(0, 1))
            continue
        model = bl.SmoothingBaseline(sigma_bins=sigma, alpha=spec["alpha"], method=spec["method"])
        model.fit(train.counts[..., hin], train.counts[..., tgt])
        out[..., tgt] = model.predict(sd.counts[..., hin])
    ctx._pred[ck] = out
    return out


def _aggregate_spikes(parts: dict[str, dict], prefix: str = "") -> dict[str, float]:
    if not parts:
        return {}
    num = sum(p["nll_null"] - p["nll_model"] for p in parts.values())
    den = sum(p["spikes"] for p in parts.values()) * mt.LN2
    per = np.concatenate([p["per_neuron"] for p in parts.values()])
    return {f"{prefix}bps": float(num / den),
            f"{prefix}bps_neuron_mean": float(np.nanmean(per)) if np.isfinite(per).any() else float("nan"),
            f"{prefix}bps_session_mean": float(np.mean([p["bps"] for p in parts.values()]))}


def _session_spike_metrics(p: dict, prefix: str = "") -> dict[str, float]:
    per = p["per_neuron"]
    return {f"{prefix}bps": float(p["bps"]),
            f"{prefix}bps_neuron_mean": float(np.nanmean(per)) if np.isfinite(per).any() else float("nan")}


def _require(ctx: EvalContext, task: Task, capability: str | None = None) -> None:
    """Raise :class:`NotApplicable` unless the task fits the data's modality (and the model has ``capability``)."""
    if not task.applies_to(ctx.modality):
        raise NotApplicable(f"task is for {task.modality} data; this dataset is {ctx.modality}")
    reason = ctx.predictor.can(capability) if capability else None
    if reason:
        raise NotApplicable(reason)


def run_masking(ctx: EvalContext, task: Task) -> dict:
    _require(ctx, task, "mtm")
    spikes = ctx.modality == "spikes"
    wanted = task.metrics_for(ctx.modality)
    per_session: dict[str, dict] = {}
    parts: dict[str, dict[str, dict]] = {"": {}, "null/": {}, "smoothing/": {}, "baseline_model/": {}}
    cal: dict[str, dict[str, dict]] = {"": {}, "null/": {}, "baseline_model/": {}}
    per_neuron_fig: dict[str, list] = {}
    for sid in ctx.sessions:
        try:
            sd, plan, rates, var, target = _masking_predictions(ctx, task, ctx.predictor, sid)
        except NotApplicable as err:
            per_session[sid] = {"not_applicable": str(err)}
            continue
        entry: dict[str, Any] = {"n_trials": sd.n_trials}
        candidates: list[tuple[str, np.ndarray, np.ndarray | None]] = [("", rates, var)]
        if "null" in task.baselines:
            candidates.append(("null/", _null_like(sd.counts, target), None))
        if "smoothing" in task.baselines:
            if not spikes:
                ctx.note(task.name, "smoothing baseline: defined for spike counts only (not 2-photon)")
            elif task.spec["mask"]["mode"] == "forward":
                ctx.note(task.name, "smoothing baseline: defined for unit masks, not forward prediction")
            else:
                try:
                    candidates.append(("smoothing/", _smoothing_rates(ctx, sd, plan, task.spec["smoothing"]), None))
                except NotApplicable as err:
                    ctx.note(task.name, f"smoothing baseline not run for {sid}: {err}")
        if "baseline_model" in task.baselines and ctx.baseline is not None:
            if ctx.baseline.can("mtm") is None:
                _, _, r_b, v_b, _ = _masking_predictions(ctx, task, ctx.baseline, sid)
                candidates.append(("baseline_model/", r_b, v_b))
            else:
                ctx.note(task.name, f"baseline model: {ctx.baseline.can('mtm')}")
        try:
            for prefix, r, v in candidates:
                if spikes:
                    sc = score_spikes(r, sd.counts, target)
                    parts[prefix][sid] = sc
                    entry.update(_session_spike_metrics(sc, prefix))
                    if prefix == "":
                        entry.update(n_neurons=sc["n_neurons"], n_spikes=sc["spikes"])
                else:
                    sc = score_calcium(r, v, sd.counts, target)
                    cal[prefix][sid] = sc
                    entry.update({f"{prefix}{k}": float(sc[k]) for k in
                                  ("r2", "r2_pooled", "gaussian_nll", "gaussian_nll_baseline", "delta_nll")})
                    if prefix == "":
                        entry.update(n_neurons=sc["n_neurons"], n_entries=sc["n_entries"])
                per_neuron_fig.setdefault(prefix.rstrip("/") or "model", []).append(sc["per_neuron"])
        except NotApplicable as err:
            for store in (parts, cal):
                for d in store.values():
                    d.pop(sid, None)
            per_session[sid] = {"not_applicable": str(err)}
            continue
        per_session[sid] = entry
    scored = [s for s, e in per_session.items() if "not_applicable" not in e]
    if not scored:
        reasons = {e["not_applicable"] for e in per_session.values()}
        raise NotApplicable("; ".join(sorted(reasons)) or "no session")
    out: dict[str, Any] = {}
    if spikes:
        for prefix, d in parts.items():
            agg = _aggregate_spikes(d, prefix)
            out.update({k: v for k, v in agg.items() if k.split("/")[-1] in wanted})
    else:
        for prefix, d in cal.items():
            if not d:
                continue
            for k in ("r2", "r2_pooled", "gaussian_nll", "gaussian_nll_baseline", "delta_nll"):
                if k in wanted:
                    if k in ("gaussian_nll", "gaussian_nll_baseline", "delta_nll"):
                        w = np.array([c["n_entries"] for c in d.values()], dtype=float)
                        vals = np.array([c[k] for c in d.values()], dtype=float)
                        out[f"{prefix}{k}"] = float((vals * w).sum() / w.sum())
                    else:
                        out[f"{prefix}{k}"] = _mean_or_nan(c[k] for c in d.values())
    out["n_sessions"] = len(scored)
    out["per_session"] = per_session
    if ctx.figure_dir is not None:
        from nfm.evaluation import plots

        label = "bits/spike per neuron" if spikes else "R2 per ROI"
        data = {k: np.concatenate(v) for k, v in per_neuron_fig.items()}
        path = plots.plot_per_neuron_hist(data, ctx.figure_dir / f"{task.name}_per_neuron.png",
                                          xlabel=label, title=task.name)
        ctx.figure(task.name, path)
    return out


# --------------------------------------------------------------------------- task: psth
def _condition_labels(task: Task, sd: SessionData) -> tuple[np.ndarray, list[str]]:
    sets = task.spec["conditions"]
    options = [sets] if all(isinstance(c, str) for c in sets) else sets
    for cols in options:
        if all(c in sd.trial_columns for c in cols):
            vals = np.stack([sd.trial_columns[c] for c in cols], axis=1)
            return vals, list(cols)
    raise NotApplicable(f"the dataset has none of the condition columns {options} (trial columns: "
                        f"{sorted(sd.trial_columns)})")


def _psth_r2_any(rates: np.ndarray, data: np.ndarray, cond: np.ndarray, spikes: bool) -> np.ndarray:
    """Per-unit PSTH R2 (NaN for flat PSTHs); counts go through metrics.psth_r2, 2-photon through r2_score."""
    if spikes:
        return mt.psth_r2(rates, data, cond, per_neuron=True)
    _, inv = np.unique(cond, return_inverse=True)
    onehot = np.zeros((inv.max() + 1, len(inv)))
    onehot[inv, np.arange(len(inv))] = 1.0
    onehot /= onehot.sum(axis=1, keepdims=True)
    t = np.einsum("ct,tbn->cbn", onehot, data).reshape(-1, data.shape[-1])
    p = np.einsum("ct,tbn->cbn", onehot, rates).reshape(-1, data.shape[-1])
    return mt.r2_score(p, t, reduce="none")


def run_psth(ctx: EvalContext, task: Task) -> dict:
    _require(ctx, task, "mtm")
    spikes = ctx.modality == "spikes"
    per_session: dict[str, dict] = {}
    per_unit: dict[str, list[np.ndarray]] = {}
    example = None
    for sid in ctx.sessions:
        try:
            sd = ctx.session(sid)
            labels, cols = _condition_labels(task, sd)
            ok = np.isfinite(labels).all(axis=1)
            uniq, inv, counts = np.unique(labels[ok], axis=0, return_inverse=True, return_counts=True)
            inv = np.asarray(inv).ravel()
            keep_cond = counts >= task.spec["min_trials_per_condition"]
            rows = np.flatnonzero(ok)[keep_cond[inv]]
            if keep_cond.sum() < 2:
                raise NotApplicable(f"fewer than 2 conditions of {cols} with >= "
                                    f"{task.spec['min_trials_per_condition']} trials in session {sid}")
            cond = inv[keep_cond[inv]]
            _, plan, rates, var, target = _masking_predictions(ctx, task, ctx.predictor, sid)
            if not target[rows].all() and sd.valid is None:
                raise NotApplicable("the mask does not cover every bin and unit (psth needs unit masks)")
        except NotApplicable as err:
            per_session[sid] = {"not_applicable": str(err)}
            continue
        data = np.where(target, sd.counts, np.nan)[rows] if sd.valid is not None else sd.counts[rows]
        data = np.nan_to_num(data)
        cands = [("", rates)]
        if "null" in task.baselines:
            cands.append(("null/", _null_like(sd.counts, target)))
        if "smoothing" in task.baselines and spikes:
            cands.append(("smoothing/", _smoothing_rates(ctx, sd, plan, task.spec["smoothing"])))
        if "baseline_model" in task.baselines and ctx.baseline is not None and ctx.baseline.can("mtm") is None:
            cands.append(("baseline_model/", _masking_predictions(ctx, task, ctx.baseline, sid)[2]))
        entry: dict[str, Any] = {"n_trials": int(len(rows)), "n_conditions": int(keep_cond.sum()),
                                 "n_trials_excluded": int(sd.n_trials - len(rows))}
        for prefix, r in cands:
            per = _psth_r2_any(np.nan_to_num(r[rows]), data, cond, spikes)
            per_unit.setdefault(prefix, []).append(per)
            entry[f"{prefix}psth_r2"] = float(np.nanmean(per)) if np.isfinite(per).any() else float("nan")
        per_session[sid] = entry
        if example is None:
            example = (sid, rates[rows], data, cond)
    scored = [s for s, e in per_session.items() if "not_applicable" not in e]
    if not scored:
        raise NotApplicable("; ".join(sorted({e["not_applicable"] for e in per_session.values()})))
    out: dict[str, Any] = {}
    for prefix, lst in per_unit.items():
        allv = np.concatenate(lst)
        out[f"{prefix}psth_r2"] = float(np.nanmean(allv)) if np.isfinite(allv).any() else float("nan")
    out["n_sessions"] = len(scored)
    out["per_session"] = per_session
    if ctx.figure_dir is not None and example is not None:
        from nfm.evaluation import plots

        sid, r, d, c = example
        path = plots.plot_psth_examples(np.nan_to_num(r), d, c, ctx.figure_dir / f"{task.name}_examples.png",
                                        bin_size=ctx.bin_size, title=f"{task.name}: {sid}")
        ctx.figure(task.name, path)
    return out


# --------------------------------------------------------------------------- task: decoding
def _resolve_target(target: dict, meta: dict) -> tuple[str, list[str]]:
    """(``label`` | ``behavior``, names) or NotApplicable naming what the dataset has."""
    if "trial_label" in target:
        name = target["trial_label"]
        have = list(meta.get("trial_columns", []))
        if name not in have:
            raise NotApplicable(f"the dataset has no trial column {name!r} (trial columns: {have})")
        return "label", [name]
    have = list(meta.get("behavior_names", []))
    if "behavior" in target:
        if target["behavior"] not in have:
            raise NotApplicable(f"the dataset has no behaviour {target['behavior']!r} (behaviours: {have})")
        return "behavior", [target["behavior"]]
    names = [b for b in have if b.startswith(target["behavior_prefix"])]
    if not names:
        raise NotApplicable(f"the dataset has no behaviour starting with {target['behavior_prefix']!r} "
                            f"(behaviours: {have})")
    return "behavior", names


def _features(ctx: EvalContext, predictor: Predictor, sd: SessionData, source: str, sigma_ms: float) -> np.ndarray:
    """(R, T, F) per-bin features of ``source``: latents, rates (nothing masked) or smoothed activity."""
    ck = (predictor.name if source != "spikes" else "-", "features", source, sd.session_id, sd.splits, sigma_ms)
    if ck in ctx._pred:
        return ctx._pred[ck]
    if source == "spikes":
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


def _class_check(y: np.ndarray, n_splits: int) -> None:
    classes, counts = np.unique(y, return_counts=True)
    if classes.size < 2:
        raise NotApplicable(f"only one class ({classes.tolist()}) among {y.size} trials")
    smallest = int(counts.min())
    if smallest < n_splits or smallest - math.ceil(smallest / n_splits) < n_splits:
        raise NotApplicable(f"class counts {dict(zip(classes.tolist(), counts.tolist()))} too small for nested "
                            f"{n_splits}-fold stratified CV")


def run_decoding(ctx: EvalContext, task: Task) -> dict:
    _require(ctx, task)
    kind, names = _resolve_target(task.spec["target"], ctx.meta)
    dec = task.spec["decoder"]
    classification = kind == "label"
    wanted = task.metrics_for("classification" if classification else "regression")
    splits = tuple(s for s in SPLITS if s in ctx.dd) if task.spec["decoder_splits"] == "all" else (ctx.split,)
    sources = [(s, ctx.predictor) for s in task.spec["features"]]
    for s in task.spec["features"]:
        reason = ctx.predictor.can("mtm" if s == "rates" else "latents")
        if reason:
            ctx.note(task.name, f"features {s!r}: {reason}")
            sources.remove((s, ctx.predictor))
    if "spikes" in task.baselines:
        sources.append(("spikes", None))
    if "baseline_model" in task.baselines and ctx.baseline is not None:
        for s in task.spec["features"]:
            if ctx.baseline.can("mtm" if s == "rates" else "latents") is None:
                sources.append((f"baseline_model/{s}", ctx.baseline))
    if not sources:
        raise NotApplicable("no feature source available")
    per_session: dict[str, dict] = {}
    example = None
    for sid in ctx.sessions:
        try:
            sd = ctx.session(sid, splits)
            entry: dict[str, Any] = {}
            if classification:
                y = sd.trial_columns.get(names[0])
                if y is None or not np.isfinite(y).any():
                    raise NotApplicable(f"session {sid} has no {names[0]!r} values")
                keep = np.isfinite(y) & ~np.isin(y, np.asarray(task.spec["exclude_values"], dtype=float))
                _class_check(y[keep], dec["n_splits"])
                entry.update(n_trials=int(keep.sum()), n_trials_excluded=int((~keep).sum()))
            else:
                idx = [ctx.meta["behavior_names"].index(n) for n in names]
                target = sd.behavior[..., idx]  # (R, T, C)
                keep = np.isfinite(target).all(axis=(1, 2))
                if not keep.any():
                    raise NotApplicable(f"session {sid} has no {names} values")
                if keep.sum() < 2 * dec["n_splits"]:
                    raise NotApplicable(f"{int(keep.sum())} trials with {names}: too few for nested "
                                        f"{dec['n_splits']}-fold CV")
                entry.update(n_trials=int(keep.sum()), n_trials_excluded=int((~keep).sum()))
        except NotApplicable as err:
            per_session[sid] = {"not_applicable": str(err)}
            continue
        for source, pred in sources:
            base_source = source.split("/")[-1]
            x = _features(ctx, pred, sd, base_source, task.spec["smoothing_sigma_ms"])
            if classification:
                kw = {"n_splits": dec["n_splits"], "seed": dec["seed"]}
                if "Cs" in dec:
                    kw["Cs"] = dec["Cs"]
                y_cls = np.unique(y[keep], return_inverse=True)[1].ravel()  # float labels (0.2/0.8) -> classes
                res = mt.decode_choice(_chunk_mean(x[keep], task.spec["time_chunks"]), y_cls, **kw)
                for m in ("accuracy", "balanced_accuracy"):
                    if m in wanted:
                        entry[f"{source}/{m}"] = float(res[m])
                if "chance" in wanted:
                    entry["chance"] = float(res["chance"])  # majority-class fraction
            else:
                kw = {"n_splits": dec["n_splits"], "seed": dec["seed"]}
                if "alphas" in dec:
                    kw["alphas"] = dec["alphas"]
                r2s = []
                for c in range(len(names)):  # one decoder per behaviour channel
                    res = mt.decode_regression(x[keep], target[keep][..., c], **kw)
                    r2s.append(res["r2"])
                    if example is None and source == sources[0][0]:
                        example = (sid, names[c], target[keep][..., c], res["predictions"])
                entry[f"{source}/r2"] = float(np.mean(r2s))
                if len(names) > 1:
                    entry.update({f"{source}/r2_{n}": float(v) for n, v in zip(names, r2s)})
        per_session[sid] = entry
    scored = {s: e for s, e in per_session.items() if "not_applicable" not in e}
    if not scored:
        raise NotApplicable("; ".join(sorted({e["not_applicable"] for e in per_session.values()})))
    keys = [k for k in next(iter(scored.values())) if "/" in k or k == "chance"]
    out: dict[str, Any] = {k: _mean_or_nan(e.get(k) for e in scored.values()) for k in keys}
    out["n_sessions"] = len(scored)
    out["per_session"] = per_session
    if splits != (ctx.split,):
        ctx.note(task.name, f"decoders fitted and cross-validated (nested) on the trials of splits {list(splits)}")
    if ctx.figure_dir is not None:
        from nfm.evaluation import plots

        path = plots.plot_bars({k: v for k, v in out.items() if isinstance(v, float)},
                               ctx.figure_dir / f"{task.name}_scores.png", title=task.name)
        ctx.figure(task.name, path)
        if example is not None:
            sid, n, true, pred = example
            path = plots.plot_trace(true, pred, ctx.figure_dir / f"{task.name}_trace.png", bin_size=ctx.bin_size,
                                    title=f"{n} ({sid}), out-of-fold prediction")
            ctx.figure(task.name, path)
    return out


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

    _require(ctx, task)
    pred = ctx.predictor
    model = getattr(pred, "model", None)
    if model is None or getattr(model, "nfm", None) is None:
        raise NotApplicable(f"{pred.name} is not an nfm model with a backbone to fine-tune")
    labels, behaviors = [], []
    for t in task.spec["targets"]:
        try:
            kind, names = _resolve_target(t, ctx.meta)
        except NotApplicable as err:
            ctx.note(task.name, f"target {t}: {err}")
            continue
        (labels if kind == "label" else behaviors).extend(n for n in names if n not in labels + behaviors)
    if not labels and not behaviors:
        raise NotApplicable("none of the targets is in the dataset: " + "; ".join(ctx.notes.get(task.name, [])))
    if "train" not in ctx.dd:
        raise NotApplicable("the dataset has no train split to fine-tune on")
    label_names = list(ctx.meta.get("trial_label_names", []))
    lab_idx = [label_names.index(n) if n in label_names else None for n in labels]
    if any(i is None for i in lab_idx):
        bad = [n for n, i in zip(labels, lab_idx) if i is None]
        raise NotApplicable(f"trial column(s) {bad} are not trial labels of the batch (meta trial_label_names)")
    beh_idx = [ctx.meta["behavior_names"].index(n) for n in behaviors]
    excl = {k: np.asarray(v, dtype=float) for k, v in task.spec["exclude_values"].items()}
    tr = task.spec["train"]
    train_sd = {sid: ctx.session(sid, "train", cap=False, batch_size=tr["batch_size"]) for sid in ctx.sessions}

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
    for j, n in enumerate(labels):
        vals = np.concatenate([prep(b)["trial_labels"][:, j].numpy() for sd in train_sd.values()
                               for b in sd.batches])
        vals = vals[np.isfinite(vals)]
        if np.unique(vals).size < 2:
            raise NotApplicable(f"label {n!r} has fewer than 2 classes in the train split")
        classes[n] = sorted(float(v) for v in np.unique(vals))
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
    for step in range(tr["max_steps"]):  # one optimiser step per batch
        b = _to_device(train_batches[int(rng.integers(len(train_batches)))], pred.device)
        out = dec(b["spikes"], unit_mask=b["unit_mask"], unit_region=b["unit_region"],
                  session_ids=b["session_ids"], behavior=b["behavior"] if behaviors else None,
                  trial_labels=b["trial_labels"] if labels else None)
        if out.loss is None:
            continue
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(float(out.loss.detach()))
    dec.eval()
    per_session: dict[str, dict] = {}
    for sid in ctx.sessions:
        sd = ctx.session(sid)
        ys, ps, bt, bp = [], [], [], []
        with torch.no_grad():
            for _, batch in sd.batch_slices():
                b = _to_device(prep(batch), pred.device)
                o = dec(b["spikes"], unit_mask=b["unit_mask"], unit_region=b["unit_region"],
                        session_ids=b["session_ids"])
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
    out: dict[str, Any] = {k: _mean_or_nan(e.get(k) for e in per_session.values()) for k in keys}
    if not keys:
        raise NotApplicable("no target could be scored on the evaluated split")
    out["train_steps"] = len(losses)
    out["final_train_loss"] = float(losses[-1]) if losses else float("nan")
    out["n_sessions"] = len(per_session)
    out["per_session"] = per_session
    ctx.note(task.name, f"fine-tuned on the train split of {len(train_sd)} session(s) for {len(losses)} steps "
                        f"(lr {tr['learning_rate']}, backbone {'frozen' if tr['freeze_backbone'] else 'trained'})")
    return out


# --------------------------------------------------------------------------- task: generation
def _rebin(x: np.ndarray, k: int) -> np.ndarray:
    R, T, N = x.shape
    return x[:, : (T // k) * k].reshape(R, T // k, k, N).sum(axis=2)


def generate_held_out(predictor: Predictor, sd: SessionData, *, prompt_s: float, bin_size: float,
                      temperature: float = 1.0, top_p: float | None = 0.95, top_k: int | None = None,
                      seed: int = 0) -> dict[str, np.ndarray]:
    """Closed-loop generation of a session's trials after ``prompt_s`` seconds of true data.

    Generation starts at the first generation-window boundary at or after ``prompt_s`` (``t0`` in the result).

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
        out = predictor.generate(batch, start_window, temperature=temperature, top_p=top_p, top_k=top_k,
                                 generator=gen)
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


def _generation_scores(g: dict, interval_bins: int, interval_s: float) -> dict[str, float]:
    tc, gc = _rebin(g["true_counts"], interval_bins), _rebin(g["gen_counts"], interval_bins)
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


def run_generation(ctx: EvalContext, task: Task) -> dict:
    _require(ctx, task, "generation")
    k = task.spec["interval_s"] / ctx.bin_size
    if abs(k - round(k)) > 1e-6 or round(k) < 1:
        raise ValueError(f"{task.source}: interval_s={task.spec['interval_s']} s is not a whole number of "
                         f"{ctx.bin_size} s bins")
    interval_bins = int(round(k))
    wanted = task.metrics_for("spikes")
    per_session: dict[str, dict] = {}
    first = None
    for sid in ctx.sessions:
        sd = ctx.session(sid)
        if task.spec["max_trials"] and sd.n_trials > task.spec["max_trials"]:
            sd = _head(sd, task.spec["max_trials"])
        try:
            g = generate_held_out(ctx.predictor, sd, prompt_s=task.spec["prompt_s"], bin_size=ctx.bin_size,
                                  temperature=task.spec["temperature"], top_p=task.spec["top_p"],
                                  top_k=task.spec["top_k"] or None, seed=task.spec["seed"])
        except NotApplicable as err:
            per_session[sid] = {"not_applicable": str(err)}
            continue
        s = _generation_scores(g, interval_bins, task.spec["interval_s"])
        per_session[sid] = {**{m: s[m] for m in wanted}, "true_spikes": s["true_spikes"],
                            "generated_spikes": s["generated_spikes"], "n_trials": sd.n_trials}
        if first is None:
            first = (sid, g, sd.n_units)
    scored = {s: e for s, e in per_session.items() if "not_applicable" not in e}
    if not scored:
        raise NotApplicable("; ".join(sorted({e["not_applicable"] for e in per_session.values()})))
    out: dict[str, Any] = {m: _mean_or_nan(e[m] for e in scored.values()) for m in wanted}
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
                               title=f"{sid}, trial 0: true (top) vs generated after {g['t0']:g} s (bottom)")
        ctx.figure(task.name, path)
    return out


def generate_to_files(model, dataset, output_dir, *, split: str = "test", sessions="all", prompt_s: float = 0.5,
                      temperature: float = 1.0, top_p: float | None = 0.95, top_k: int | None = None,
                      max_trials: int | None = 16, batch_size: int = 16, interval_s: float | None = None,
                      seed: int = 0) -> dict:
    """Closed-loop generation of held-out trials, saved per session; returns the fidelity summary.

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
    chosen = _select_sessions(meta, dd, split, predictor, sessions)
    check_compatibility(predictor, meta, chosen)
    ctx = EvalContext(dd, meta, predictor, split, chosen, batch_size=batch_size, max_trials=max_trials)
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    interval_bins = max(1, int(round((interval_s or predictor.generation_window_bins * ctx.bin_size)
                                     / ctx.bin_size)))
    summary: dict[str, Any] = {}
    for sid in chosen:  # one closed-loop generation per session (batched over its trials)
        sd = ctx.session(sid)
        g = generate_held_out(predictor, sd, prompt_s=prompt_s, bin_size=ctx.bin_size, temperature=temperature,
                              top_p=top_p, top_k=top_k, seed=seed)
        arrays = {"true_counts": g["true_counts"].astype(np.float32), "gen_counts": g["gen_counts"].astype(np.float32),
                  "trial_ids": sd.trial_ids.astype(np.int64), "start_bin": np.int64(g["start_bin"]),
                  "bin_size": np.float64(ctx.bin_size), "t0": np.float64(g["t0"])}
        for part in ("true", "gen", "prompt"):
            t, u, r = g[f"{part}_events"]
            arrays.update({f"{part}_event_times": np.asarray(t, np.float64), f"{part}_event_units":
                           np.asarray(u, np.int64), f"{part}_event_trials": np.asarray(r, np.int64)})
        stem = _safe(sid)
        np.savez_compressed(out_dir / f"{stem}.npz", **arrays)
        pt, pu, pr = g["prompt_events"]
        tt, tu, tr_ = g["true_events"]
        gt, gu, gr = g["gen_events"]
        true_ev = (np.concatenate([pt[pr == 0], tt[tr_ == 0]]), np.concatenate([pu[pr == 0], tu[tr_ == 0]]))
        gen_ev = (np.concatenate([pt[pr == 0], gt[gr == 0]]), np.concatenate([pu[pr == 0], gu[gr == 0]]))
        gm.plot_rasters(true_ev, gen_ev, out_dir / f"{stem}_raster.png", n_units=sd.n_units,
                        title=f"{sid}, trial {int(sd.trial_ids[0])}: generated after {g['t0']:g} s")
        summary[sid] = {**_generation_scores(g, interval_bins, interval_bins * ctx.bin_size),
                        "n_trials": sd.n_trials, "npz": f"{stem}.npz", "raster": f"{stem}_raster.png"}
    (out_dir / "generation_summary.json").write_text(json.dumps(_jsonable(summary), indent=1, allow_nan=False))
    return summary


def _head(sd: SessionData, n: int) -> SessionData:
    """The first ``n`` trials of a session (whole batches plus a cut last batch)."""
    batches, total = [], 0
    for b in sd.batches:
        if total >= n:
            break
        take = min(n - total, b["spikes"].shape[0])
        batches.append({k: (v[:take] if (torch.is_tensor(v) and v.dim() > 0) or isinstance(v, list) else v)
                        for k, v in b.items()})
        total += take
    t, u, r = sd.events
    keep = r < n
    return SessionData(sd.session_id, sd.splits, sd.counts[:n], None if sd.valid is None else sd.valid[:n],
                       sd.behavior[:n], {k: v[:n] for k, v in sd.trial_columns.items()}, sd.trial_ids[:n],
                       sd.regions, batches, (t[keep], u[keep], r[keep]))


# --------------------------------------------------------------------------- task: connectivity
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


def run_connectivity(ctx: EvalContext, task: Task) -> dict:
    _require(ctx, task)
    with_w = [s for s in ctx.sessions
              if isinstance(ctx.meta["sessions"][s].get("extra"), dict)
              and "true_weights" in ctx.meta["sessions"][s]["extra"]]
    if not with_w:
        raise NotApplicable("no evaluated session has ground-truth weights (meta extra.true_weights); "
                            "this task runs on the hub-network world (prepare_data --world hub_network)")
    wanted = task.metrics_for("spikes")
    per_session: dict[str, dict] = {}
    first_fig = True
    for sid in with_w:
        W = np.asarray(ctx.meta["sessions"][sid]["extra"]["true_weights"], dtype=np.float64)
        sd = ctx.session(sid)
        if task.spec["max_trials"] and sd.n_trials > task.spec["max_trials"]:
            sd = _head(sd, task.spec["max_trials"])
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
                                          ctx.figure_dir / f"{task.name}_{_safe(sid)}.png",
                                          title=f"{sid}: [target i, source j]")
            ctx.figure(task.name, path)
            first_fig = False
    keys = [k for k in next(iter(per_session.values())) if "/" in k]
    out: dict[str, Any] = {k: _mean_or_nan(e.get(k) for e in per_session.values()) for k in keys}
    out["n_sessions"] = len(per_session)
    out["per_session"] = per_session
    return out


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


# --------------------------------------------------------------------------- the runner
RUNNERS: dict[str, Callable[[EvalContext, Task], dict]] = {
    "masking": run_masking,
    "psth": run_psth,
    "decoding": run_decoding,
    "finetune_decoding": run_finetune_decoding,
    "generation": run_generation,
    "connectivity": run_connectivity,
}


def evaluate(
    model,
    dataset,
    tasks: str | Sequence[str] | None = "all",
    split: str = "test",
    *,
    baseline_model=None,
    output: str | os.PathLike | None = None,
    sessions: str | Sequence[str] | None = "all",
    batch_size: int = 32,
    max_trials: int | None = None,
    task_dir: str | os.PathLike | None = None,
    task_overrides: dict[str, dict] | None = None,
    seed: int = 0,
    progress: bool = False,
    info: dict | None = None,
) -> dict:
    """Run evaluation tasks and return ``{task name: metrics}`` (see the module docstring).

    Args:
        model: an nfm model (``NfmForPretraining``, ``NfmForMaskedModeling``, ...) or a :class:`Predictor`.
        dataset: an nfm dataset folder, or ``(DatasetDict, meta)``.
        tasks: ``"all"``, ``"a,b"`` or a list of task names / YAML paths (``tasks/`` or ``task_dir``).
        split: the evaluated split (``test`` by default).
        baseline_model: optional second model (e.g. trained with temporal masking only); its scores appear
            as ``baseline_model/...`` metrics of the tasks that list ``baseline_model``.
        output: path of ``results.json``; ``results.md`` and ``figures/`` are written beside it.
        sessions: ``"all"`` (every session of the split: a session unknown to the model or with another unit
            count raises :class:`ModelDatasetMismatch`), ``"known"`` (the sessions the model knows), or ids.
        batch_size: trials per model call.  max_trials: cap of evaluated trials per session (None = all).
        task_overrides: ``{task: {field: value}}`` merged into the task files (e.g. fewer fine-tuning steps).
        info: extra lines for the report header (model / dataset names).
    """
    from nfm.data.hf import load_dataset

    if isinstance(dataset, (str, os.PathLike)):
        dataset_name = str(dataset)
        dd, meta = load_dataset(dataset)
    else:
        dd, meta = dataset
        dataset_name = "<in memory>"
    if split not in dd:
        raise ValueError(f"split {split!r} is not in the dataset (splits: {list(dd)})")
    predictor = as_predictor(model, "model")
    base = as_predictor(baseline_model, "baseline_model") if baseline_model is not None else None
    if base is not None:
        base.name = "baseline_model"
    chosen = _select_sessions(meta, dd, split, predictor, sessions)
    check_compatibility(predictor, meta, chosen)
    if base is not None:
        check_compatibility(base, meta, chosen)
    task_list = load_tasks(tasks, task_dir, task_overrides)
    out_path = Path(output) if output is not None else None
    fig_dir = (out_path.parent / "figures") if out_path is not None else None
    if fig_dir is not None:
        fig_dir.mkdir(parents=True, exist_ok=True)
    ctx = EvalContext(dd, meta, predictor, split, chosen, baseline=base, batch_size=batch_size,
                      max_trials=max_trials, figure_dir=fig_dir, progress=progress, seed=seed)
    results: dict[str, Any] = {}
    iterator = task_list
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(task_list, desc="tasks")
    for task in iterator:
        if progress:
            iterator.set_postfix_str(task.name)
        try:
            results[task.name] = RUNNERS[task.kind](ctx, task)
        except NotApplicable as err:
            results[task.name] = {"not_applicable": str(err)}
    if out_path is not None:
        skipped = [s for s in dict.fromkeys(str(x) for x in dd[split]["session_id"]) if s not in chosen]
        header = {"dataset": dataset_name, "split": split, "sessions": ", ".join(chosen),
                  "sessions not evaluated": ", ".join(skipped) or None,
                  "model": getattr(getattr(predictor, "model", None), "name_or_path", None) or predictor.name,
                  **(info or {})}
        write_results(results, out_path, tasks=task_list, notes=ctx.notes, figures=ctx.figures, header=header)
    return results


# --------------------------------------------------------------------------- reports
def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
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
    tmp.write_text(json.dumps(_jsonable(results), indent=1, allow_nan=False))
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
            path = plots.plot_summary(summary, out.parent / "figures" / "summary.png")
            figures = {"summary": [str(path)], **figures}
    finally:
        md = render_markdown(results, tasks, notes, {k: v for k, v in figures.items() if k != "summary"},
                             header, figure_root=out.parent)
        if "summary" in figures:
            rel = os.path.relpath(figures["summary"][0], out.parent)
            md = md.replace("## Summary\n", f"## Summary\n\n![summary]({rel})\n", 1)
        out.with_suffix(".md").write_text(md)
    return out
