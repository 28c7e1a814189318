"""Output records of the nfm backbone and its MtM head (``transformers.utils.ModelOutput`` dataclasses; shapes in
each docstring).  Split from :mod:`nfm.models.modeling_nfm`, which re-exports them."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput


@dataclass
class NfmModelOutput(ModelOutput):
    """Backbone output.

    last_hidden_state: (B, 2 + T, H) final-normed states of [session, prompt, bin_1 .. bin_T].
    bin_states: (B, T, H) the bin part of ``last_hidden_state``.
    hidden_states: tuple of (B, 2 + T, H) per layer input + final (with ``output_hidden_states``).
    attentions: tuple of (B, heads, 2 + T, 2 + T) per layer (with ``output_attentions``).
    """

    last_hidden_state: torch.Tensor | None = None
    bin_states: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class NfmMaskedPrediction(ModelOutput):
    """What :meth:`NfmModel.predict_masked` returns.

    prediction: (B, T, N) float32 Poisson log-rates [log spikes / bin] (spikes) or Gaussian means (2-photon);
        padding units 0.
    log_variance: (B, N) float32 per-unit Gaussian log-variance (clamped to :data:`LOG_VAR_RANGE`), None for
        the Poisson likelihood.
    target / hidden: (B, T, N) bool entries to score / entries hidden from the input (``target`` is a subset).
    prompt: the prompt token fed.  max_log_rate: the clamp of Poisson log-rates [+-].
    last_hidden_state / hidden_states / attentions: as in :class:`NfmModelOutput`.
    """

    prediction: torch.Tensor | None = None
    log_variance: torch.Tensor | None = None
    target: torch.Tensor | None = None
    hidden: torch.Tensor | None = None
    prompt: str | None = None
    max_log_rate: float | None = None
    last_hidden_state: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None

    def expected(self) -> torch.Tensor:
        """(B, T, N) expected values: spike counts per bin ``exp(clamped log-rate)`` or Gaussian means."""
        if self.log_variance is None:
            m = float(self.max_log_rate)
            return torch.exp(self.prediction.float().clamp(-m, m))
        return self.prediction.float()

    def variance(self) -> torch.Tensor | None:
        """(B, T, N) Gaussian predictive variances, None for the Poisson likelihood."""
        if self.log_variance is None:
            return None
        return torch.exp(self.log_variance.float()).unsqueeze(1).expand_as(self.prediction)


@dataclass
class NfmMaskedModelingOutput(ModelOutput):
    """MtM output. ``loss``: NLL averaged over the masked (target) entries.

    log_rates: (B, T, N) Poisson log-rates per bin (spike counts) -- None for the Gaussian likelihood.
    means / log_variances: (B, T, N) / (B, N) Gaussian prediction (2-photon activity) -- None for Poisson.
    mask: (B, T, N) bool target entries; hidden_mask: (B, T, N) bool entries zeroed in the input.
    mask_mode_id: (B,) long index of the batch's prompt in :data:`PROMPTS` (one mode per batch).
    """

    loss: torch.Tensor | None = None
    log_rates: torch.Tensor | None = None
    means: torch.Tensor | None = None
    log_variances: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    hidden_mask: torch.Tensor | None = None
    mask_mode_id: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
