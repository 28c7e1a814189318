"""The model side of evaluation: what the task runners ask of a model (:class:`Predictor`) and the adapter
from an nfm model (:class:`NfmPredictor`), plus :func:`load_model`.

The runners call a model only through a :class:`Predictor`, so any object with the same methods (an analytic
oracle in a test, another library's model) is evaluated by exactly the same scoring code.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from nfm.models.masking import MaskSample

from .kinds.base import NotApplicable  # noqa: F401 (re-export: defined beside the task kinds, which raise it too)


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

    def bind(self, meta, session_ids: Sequence[str]) -> "Predictor":
        """The predictor as it reads ``session_ids`` of the dataset ``meta`` (a model that has seen several
        datasets reads each at its own time grid and modality); default: itself."""
        return self

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

    def lagged_gradient(self, batch: dict, target_bin: int, n_lags: int) -> np.ndarray:
        """(n_lags, N, N): summed over the batch's trials, ``d log rate_i(target_bin) / d input_j(target_bin -
        l)`` for l = 1 .. n_lags, bins from ``target_bin`` on hidden (forward prediction); [l-1, i, j] =
        target i <- source j at lag l bins."""
        raise NotApplicable(f"{self.name} exposes no input gradients")

    _METHODS = {"mtm": "predict", "latents": "latents", "generation": "generate", "attention": "unit_attention",
                "gradient": "lagged_gradient"}

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


def to_device(batch: dict, device) -> dict:
    return {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}


class NfmPredictor(Predictor):
    """Adapter from an nfm model to :class:`Predictor` (the one place that knows the model's API).

    * masked prediction: :meth:`nfm.models.NfmModel.predict_masked` (the computation of the training loss),
      under the prompt of :meth:`prompt_for`; rates = ``NfmMaskedPrediction.expected()``, Gaussian variances
      = ``NfmMaskedPrediction.variance()``;
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

    def bind(self, meta, session_ids: Sequence[str]) -> "NfmPredictor":
        """A copy reading ``session_ids`` at their time grid, modality and likelihood in the config
        (``config.grid_of`` / ``modality_of``); sessions of one evaluation must share them."""
        import copy

        known = [s for s in session_ids if s in self.session_n_units]
        if not known:
            return self
        cfg = self.config
        keys = {(cfg.grid_of(s), cfg.modality_of(s)) for s in known}
        if len(keys) > 1:
            raise ModelDatasetMismatch(f"{self.name} reads the evaluated sessions on {len(keys)} different time "
                                       "grids / modalities; evaluate them separately")
        (window, size, _), modality = keys.pop()
        out = copy.copy(self)
        out.bin_size, out.window, out.modality = size, [window[0], window[1]], modality
        out.likelihood = cfg.likelihood_of(modality)
        return out

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
        if what == "gradient":
            return self.can("mtm")
        if what in ("generation", "attention"):
            if getattr(self.model, "decoder", None) is None:
                return f"{cls} has no event decoder (config.objectives={objectives})"
            return None
        return f"unknown capability {what!r}"

    # ---- calls
    @torch.no_grad()
    def predict(self, batch: dict, mask: MaskSample) -> tuple[np.ndarray, np.ndarray | None]:
        self.model.eval()
        b = to_device(batch, self.device)
        pred = self.backbone.predict_masked(b["spikes"], mask=mask, unit_mask=b["unit_mask"],
                                            unit_region=b["unit_region"], session_ids=b["session_ids"],
                                            prompt=self.prompt_for(mask.mode), bin_size=b.get("bin_size"))
        var = pred.variance()
        return (pred.expected().double().cpu().numpy(),
                None if var is None else var.double().cpu().numpy())

    def prompt_for(self, mode: str) -> str:
        """The prompt token fed with an evaluation mask of ``mode``: the mode itself when the model was trained
        on it (or it is ``none``), else the model's first trained mode (a temporal-only model is scored on
        co-smoothing under its ``temporal`` prompt)."""
        trained = list(self.config.active_mask_modes)
        if mode in trained or mode == "none" or not trained:
            return mode
        return trained[0]

    @torch.no_grad()
    def latents(self, batch: dict) -> np.ndarray:
        self.model.eval()
        b = to_device(batch, self.device)
        out = self.backbone(b["spikes"], unit_mask=b["unit_mask"], unit_region=b["unit_region"],
                            session_ids=b["session_ids"], prompt="none", bin_size=b.get("bin_size"))
        return out.bin_states.double().cpu().numpy()

    @torch.no_grad()
    def generate(self, batch: dict, start_window: int, *, temperature: float, top_p: float | None,
                 top_k: int | None, generator: torch.Generator | None) -> dict[str, np.ndarray]:
        reason = self.can("generation")
        if reason:
            raise NotApplicable(reason)
        self.model.eval()
        b = to_device(batch, self.device)
        out = self.model.generate(
            b["spikes"], unit_mask=b["unit_mask"], unit_region=b["unit_region"], session_ids=b["session_ids"],
            event_times=b["event_times"], event_units=b["event_units"], event_mask=b["event_mask"],
            stimulus=b.get("stimulus"), behavior=b.get("behavior"), bin_size=b.get("bin_size"),
            start_window=start_window,
            do_sample=True, temperature=temperature, top_k=top_k or None, top_p=top_p, generator=generator)
        return {"spikes": out.spikes.double().cpu().numpy(), "event_times": out.event_times.double().cpu().numpy(),
                "event_units": out.event_units.cpu().numpy(), "event_mask": out.event_mask.cpu().numpy(),
                "window_bins": int(self.config.window_bins)}

    def lagged_gradient(self, batch: dict, target_bin: int, n_lags: int) -> np.ndarray:
        reason = self.can("gradient")
        if reason:
            raise NotApplicable(reason)
        self.model.eval()
        b = to_device(batch, self.device)
        x = b["spikes"].detach().float().clone().requires_grad_(True)
        B, T, N = x.shape
        if not n_lags <= target_bin < T:
            raise ValueError(f"target bin {target_bin} needs {n_lags} past bins inside the trial of {T} bins")
        hidden = torch.zeros(1, T, N, dtype=torch.bool, device=self.device)
        hidden[:, target_bin:] = True
        mask = MaskSample(hidden, hidden.clone(), "causal", True)
        with torch.enable_grad():
            pred = self.backbone.predict_masked(x, mask=mask, unit_mask=b["unit_mask"], unit_region=b["unit_region"],
                                                session_ids=b["session_ids"], prompt=self.prompt_for("causal"),
                                                bin_size=b.get("bin_size"))
            log_rate = pred.prediction[:, target_bin, :]  # (B, N)
            out = np.zeros((n_lags, N, N))
            for i in range(N):  # one backward pass per target unit
                (g,) = torch.autograd.grad(log_rate[:, i].sum(), x, retain_graph=i < N - 1)
                past = g[:, target_bin - n_lags:target_bin].sum(0).flip(0)  # (n_lags, N): lag 1 first
                out[:, i, :] = past.double().cpu().numpy()
        return out

    @torch.no_grad()
    def unit_attention(self, batch: dict) -> np.ndarray:
        reason = self.can("attention")
        if reason:
            raise NotApplicable(reason)
        from nfm.models import NfmForSpikeGeneration

        self.model.eval()
        b = to_device(batch, self.device)
        out = _generation_outputs_with_attention(self.model, b)
        N = b["spikes"].shape[2]
        return NfmForSpikeGeneration.unit_attention(out, N).double().cpu().numpy()


def _generation_outputs_with_attention(model, batch: dict):
    """Teacher-forced event-decoder outputs with cross-attention maps (``model.generation_outputs``)."""
    keys = ("unit_mask", "unit_region", "session_ids", "event_times", "event_units", "event_mask", "stimulus",
            "behavior", "bin_size")
    return model.generation_outputs(batch["spikes"], **{k: batch.get(k) for k in keys}, output_attentions=True)


def as_predictor(model, name: str = "model") -> Predictor:
    """A :class:`Predictor` as is, or an nfm model wrapped in :class:`NfmPredictor`."""
    if isinstance(model, Predictor):
        return model
    return NfmPredictor(model, name=name)


def check_model_files(path_or_id: str) -> None:
    """For a local model folder: ``config.json`` must exist and be an nfm model's (``model_type`` ``"nfm"``);
    otherwise a :class:`~nfm.data.schema.DataError` naming the file (a Hub id is checked when it is loaded)."""
    from pathlib import Path

    from nfm.cli import check_model_config
    from nfm.data.schema import DataError

    folder = Path(path_or_id)
    if not folder.is_dir():
        return
    cfg = folder / "config.json"
    if not cfg.is_file():
        raise DataError(str(cfg), "<file>", "missing: not a saved model folder (save_pretrained writes config.json)")
    check_model_config(cfg)


def from_pretrained_checked(cls, path_or_id: str, **kwargs):
    """``cls.from_pretrained(path_or_id)`` with one-line errors naming the file: a config that is not an nfm
    model's, an unreadable (e.g. truncated) ``*.safetensors`` weights file."""
    from pathlib import Path

    from nfm.data.schema import DataError

    check_model_files(path_or_id)
    try:
        return cls.from_pretrained(path_or_id, **kwargs)
    except Exception as err:  # noqa: BLE001 - only safetensors' own errors are translated
        if type(err).__name__ != "SafetensorError":
            raise
        folder = Path(path_or_id)
        files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
        where = str(files[0]) if len(files) == 1 else f"{path_or_id}/*.safetensors"
        raise DataError(where, "<weights>", f"unreadable safetensors file ({err}); truncated or corrupt: save or "
                                            "download the model again") from None


def load_model(path_or_id: str, adapter: str | None = None, device: str | None = None,
               allow_base_mismatch: bool = False):
    """Load an nfm model from a folder or a Hugging Face Hub id (safetensors), optionally with a PEFT adapter.

    The class is the one named in the checkpoint's ``config.architectures`` (e.g. ``NfmForPretraining``).
    ``adapter``: an nfm PEFT adapter folder (``recipes/finetune_lora.py``): :func:`nfm.adapters.load_adapter`
    checks that ``path_or_id`` is the base it was trained on (``allow_base_mismatch`` lets another base
    through), adds the new animal's sessions and loads the LoRA weights, :func:`nfm.adapters.merge_adapter`
    folds them into a plain model for evaluation.
    """
    import nfm.models as models
    from transformers import AutoConfig

    models.register_auto_classes()  # idempotent
    check_model_files(path_or_id)
    config = AutoConfig.from_pretrained(path_or_id)
    arch = (getattr(config, "architectures", None) or ["NfmForPretraining"])[0]
    cls = getattr(models, arch, None)
    if cls is None:
        raise ValueError(f"{path_or_id}: config.architectures names {arch!r}, which is not an nfm model class")
    model = from_pretrained_checked(cls, path_or_id)
    if adapter:
        from nfm import adapters

        model = adapters.merge_adapter(adapters.load_adapter(model, adapter, allow_base_mismatch=allow_base_mismatch,
                                                             base_name=str(path_or_id)))
    if device:
        model = model.to(device)
    model.eval()
    return model


__all__ = ["Predictor", "NfmPredictor", "as_predictor", "load_model", "check_model_files", "from_pretrained_checked", "NotApplicable", "ModelDatasetMismatch"]
