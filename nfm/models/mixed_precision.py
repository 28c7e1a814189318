"""Float32 regions inside mixed-precision (bf16 autocast) training and generation."""
from __future__ import annotations

import contextlib

import torch
from torch import nn

__all__ = ["full_precision", "param_dtype"]


def full_precision(x: torch.Tensor):
    """A context with autocast off on ``x``'s device while it is on (else a no-op): the float32 regions of
    mixed-precision (bf16 autocast) training and generation -- read-out log-rates / means and the likelihood,
    the event decoder's dt and unit-id logits, the contrastive logits, behaviour heads and explicit attention
    maps.  Inside it, feed a module ``x.to(param_dtype(module))``: float32 master weights give float32 math; a
    model stored in bf16 (no autocast) keeps its own dtype."""
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def param_dtype(module: nn.Module) -> torch.dtype:
    """The dtype of ``module``'s (first) parameter (float32 under autocast: the master weights)."""
    return next(module.parameters()).dtype
