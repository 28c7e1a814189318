"""Behaviour decoding on the nfm backbone: :class:`NfmBehaviorHead` and :class:`NfmForBehaviorDecoding`.

The backbone runs with the ``none`` prompt (nothing masked, bidirectional attention); per-bin behaviour is
regressed from each bin state and trial labels (choice, block, ...) from the mean bin state.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput

from .configuration_nfm import NfmConfig
from .mixed_precision import full_precision
from .modeling_nfm import NfmModel, NfmPreTrainedModel


@dataclass
class NfmBehaviorDecodingOutput(ModelOutput):
    """Behaviour decoding. behavior_predictions: (B, T, K); trial_logits: name -> (B, C) logits or (B,) values."""

    loss: torch.Tensor | None = None
    behavior_loss: torch.Tensor | None = None
    trial_loss: torch.Tensor | None = None
    behavior_predictions: torch.Tensor | None = None
    trial_logits: dict[str, torch.Tensor] | None = None
    last_hidden_state: torch.Tensor | None = None


def _label_key(name: str) -> str:
    return "l_" + re.sub(r"[^0-9A-Za-z_]", "_", name)


class NfmBehaviorHead(nn.Module):
    """Behaviour read-outs from bin states: per-bin regression of ``config.behavior_names`` and one head per
    trial label (classification over ``config.trial_label_classes[name]``, or regression)."""

    def __init__(self, config: NfmConfig):
        super().__init__()
        H = config.hidden_size
        self.config = config
        self.per_bin = nn.Linear(H, config.behavior_dim) if config.behavior_dim else None
        self.trial = nn.ModuleDict({
            _label_key(n): nn.Linear(H, len(config.trial_label_classes.get(n, [])) or 1)
            for n in config.trial_label_names})

    def forward(self, bin_states: torch.Tensor) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """(B, T, H) -> per-bin predictions (B, T, K) float32 or None, and ``{label: (B, C) logits or (B,)}``
        from the mean bin state."""
        params = next(self.parameters(), None)
        if params is None:
            return None, {}
        with full_precision(bin_states):  # the heads and their losses in float32, also under autocast
            bin_states = bin_states.to(params.dtype)
            per_bin = self.per_bin(bin_states).float() if self.per_bin is not None else None
            pooled = bin_states.mean(1)
            trial = {}
            for name in self.config.trial_label_names:
                logits = self.trial[_label_key(name)](pooled).float()
                trial[name] = logits if self.config.trial_label_classes.get(name) else logits[:, 0]
        return per_bin, trial


class NfmForBehaviorDecoding(NfmPreTrainedModel):
    """Behaviour heads on the backbone (prompt ``"none"``, no masking, bidirectional attention).

    * per-bin regression of ``config.behavior_names`` from each bin state (MSE over non-NaN entries);
    * trial labels (``config.trial_label_names``) from the mean bin state: classification (cross-entropy) for
      labels listed in ``config.trial_label_classes`` (value -> class by exact match), regression otherwise.
      NaN labels are missing and skipped; a value outside the listed classes raises ``ValueError``.
    ``loss = behavior_loss_weight * L_bins + trial_loss_weight * mean over labels``.
    Load a pretrained backbone with ``NfmForBehaviorDecoding.from_pretrained(path)``; freeze it with
    :meth:`freeze_backbone`.
    """

    def __init__(self, config: NfmConfig):
        super().__init__(config)
        self.nfm = NfmModel(config)
        self.behavior_head = NfmBehaviorHead(config)
        self.post_init()

    def freeze_backbone(self, frozen: bool = True) -> None:
        self.nfm.requires_grad_(not frozen)

    def forward(self, spikes: torch.Tensor, *, unit_mask=None, unit_region=None, session_ids=None, behavior=None,
                trial_labels=None, valid_mask=None, bin_size: float | None = None, event_times=None,
                event_units=None, event_mask=None, stimulus=None, trial_id=None, output_attentions=None,
                return_dict=None, return_loss: bool = True) -> NfmBehaviorDecodingOutput:
        """``behavior`` (B, T, K) float (NaN = missing) and ``trial_labels`` (B, L) float (NaN = missing) are
        the targets; other batch keys as in :class:`NfmForMaskedModeling`."""
        cfg = self.config
        out = self.nfm(spikes, unit_mask=unit_mask, unit_region=unit_region, session_ids=session_ids,
                       valid_mask=valid_mask, prompt="none", bin_size=bin_size, output_attentions=output_attentions)
        beh_pred, trial_logits = self.behavior_head(out.bin_states)
        losses = []
        beh_loss = trial_loss = None
        if beh_pred is not None and behavior is not None:
            ok = ~torch.isnan(behavior)
            if bool(ok.any()):
                beh_loss = ((beh_pred - torch.nan_to_num(behavior.float())) ** 2)[ok].mean()
                losses.append(cfg.behavior_loss_weight * beh_loss)
        per_label = []
        for i, name in enumerate(cfg.trial_label_names):
            if trial_labels is None:
                break
            y = trial_labels[:, i].float()
            ok = ~torch.isnan(y)
            if not bool(ok.any()):
                continue
            classes = cfg.trial_label_classes.get(name)
            logits = trial_logits[name]
            if classes:
                cls = torch.tensor(classes, dtype=torch.float32, device=y.device)
                match = (y[ok].unsqueeze(1) - cls).abs() < 1e-6
                if not bool(match.any(1).all()):
                    bad = y[ok][~match.any(1)][0]
                    raise ValueError(f"trial label {name!r} has value {float(bad)!r}, not one of its classes "
                                     f"{classes} (config.trial_label_classes)")
                per_label.append(F.cross_entropy(logits[ok], match.float().argmax(1)))
            else:
                per_label.append(F.mse_loss(logits[ok], y[ok]))
        if per_label:
            trial_loss = torch.stack(per_label).mean()
            losses.append(cfg.trial_loss_weight * trial_loss)
        loss = torch.stack(losses).sum() if losses else None
        res = NfmBehaviorDecodingOutput(loss=loss, behavior_loss=beh_loss, trial_loss=trial_loss,
                                        behavior_predictions=beh_pred, trial_logits=trial_logits,
                                        last_hidden_state=out.last_hidden_state)
        return res if return_dict is not False else res.to_tuple()


__all__ = ["NfmBehaviorHead", "NfmForBehaviorDecoding", "NfmBehaviorDecodingOutput"]
