"""Mask sampling for multi-task masked modelling (MtM).

Pure torch functions on a batch of binned activity of shape (B, T, N) with its
``unit_mask`` (B, N) bool (True = real unit, False = padding) and
``unit_region`` (B, N) long (index into the config's region vocabulary).

Every sampler returns a :class:`MaskSample` with two (B, T, N) bool tensors:

* ``target``: the entries the model must predict; the loss is averaged over
  exactly these entries.
* ``hidden``: the entries zeroed in the model input (``target`` is a subset).
  For all modes but intra-region, ``hidden == target``.

Padding units are never hidden nor targets.  Counts are exact per trial (a
random subset of fixed size, not independent coin flips), so a test can check
them:

=================  ==========================================================
mode               what is masked (per trial b, n_b = real units of b)
=================  ==========================================================
``neuron``         k = max(1, round(ratio * n_b)) whole units (all T bins)
``temporal``       k = max(1, round(ratio * T)) whole bins (all real units)
``causal``         as temporal with its own ratio (MtM 0.6); the model adds a
                   causal attention mask (``MaskSample.causal``)
``random_token``   k = max(1, round(ratio * T * n_b)) single (bin, unit) entries
``inter_region``   one region, drawn uniformly among the regions present in the
                   trial: all its units (all bins) are target and hidden; it is
                   predicted from the other regions
``intra_region``   one region r drawn as above is kept; k = max(1, round(ratio *
                   n_r)) of its units are the targets; every unit outside r is
                   hidden too (input only from the rest of r), but not a target
=================  ==========================================================
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .configuration_nfm import MASK_MODES

#: Modes whose model pass uses a causal attention mask.
CAUSAL_MODES = ("causal",)


@dataclass
class MaskSample:
    """A mask. ``target``/``hidden``: (B, T, N) bool (or (1, T, N) templates shared by every trial of a batch,
    see :meth:`expand`); ``mode``: the mask mode (its prompt token unless the caller gives another);
    ``causal``: causal attention."""

    target: torch.Tensor
    hidden: torch.Tensor
    mode: str
    causal: bool = False

    def expand(self, unit_mask: torch.Tensor) -> "MaskSample":
        """This mask for a batch with ``unit_mask`` (B, N): a (1, T, N') template is broadcast to B trials and
        cut or zero-padded to N units; entries of padding units are cleared."""
        B, N = unit_mask.shape
        tgt, hid = self.target.to(unit_mask.device), self.hidden.to(unit_mask.device)
        if tgt.shape[-1] != N:
            pad = N - tgt.shape[-1]
            tgt = torch.nn.functional.pad(tgt, (0, pad)) if pad > 0 else tgt[..., :N]
            hid = torch.nn.functional.pad(hid, (0, pad)) if pad > 0 else hid[..., :N]
        um = unit_mask.bool().unsqueeze(1)
        T = tgt.shape[1]
        return MaskSample((tgt & um).expand(B, T, N).contiguous(), (hid & um).expand(B, T, N).contiguous(),
                          self.mode, self.causal)


def _rand(shape, device, generator) -> torch.Tensor:
    if generator is not None:
        return torch.rand(shape, generator=generator, device=generator.device).to(device)
    return torch.rand(shape, device=device)


def _choose_k(valid: torch.Tensor, k: torch.Tensor, generator) -> torch.Tensor:
    """Pick ``k[b]`` random True entries of each row of ``valid`` (B, M) -> (B, M) bool."""
    scores = _rand(valid.shape, valid.device, generator)
    scores = torch.where(valid, scores, torch.full_like(scores, 2.0))  # invalid entries rank last
    ranks = scores.argsort(dim=1).argsort(dim=1)
    return (ranks < k.unsqueeze(1)) & valid


def _count(ratio: float, n: torch.Tensor) -> torch.Tensor:
    """max(1, round(ratio * n)) but never more than n (n may be 0 for an empty row)."""
    k = torch.round(ratio * n.double()).long().clamp_min(1)
    return torch.minimum(k, n.long())


def _check(unit_mask: torch.Tensor, n_bins: int) -> None:
    if unit_mask.dtype != torch.bool or unit_mask.dim() != 2:
        raise ValueError(f"unit_mask must be a (B, N) bool tensor, got {tuple(unit_mask.shape)} {unit_mask.dtype}")
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")


def neuron_mask(unit_mask: torch.Tensor, n_bins: int, ratio: float = 0.3, generator=None) -> MaskSample:
    """Mask whole units: (B, N) ``unit_mask`` -> targets (B, T, N) over all ``n_bins`` bins."""
    _check(unit_mask, n_bins)
    units = _choose_k(unit_mask, _count(ratio, unit_mask.sum(1)), generator)
    m = units.unsqueeze(1).expand(-1, n_bins, -1).contiguous()
    return MaskSample(m, m.clone(), "neuron")


def temporal_mask(unit_mask: torch.Tensor, n_bins: int, ratio: float = 0.3, generator=None,
                  mode: str = "temporal", block: int = 1) -> MaskSample:
    """Mask whole bins: k = max(1, round(ratio * T)) bins per trial, all real units.

    ``block`` > 1 (2-photon frames interpolated to ``block`` bins per frame): whole blocks of ``block``
    consecutive bins (the last may be shorter) are masked instead, k = max(1, round(ratio * ceil(T / block)))
    of them, so a masked stretch covers whole frames.
    """
    _check(unit_mask, n_bins)
    B = unit_mask.shape[0]
    block = int(block)
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    n_blocks = -(-n_bins // block)
    valid = torch.ones(B, n_blocks, dtype=torch.bool, device=unit_mask.device)
    k = torch.full((B,), n_blocks, device=unit_mask.device)
    bins = _choose_k(valid, _count(ratio, k), generator)
    if block > 1:
        bins = bins.repeat_interleave(block, dim=1)[:, :n_bins]
    m = bins.unsqueeze(2) & unit_mask.unsqueeze(1)
    return MaskSample(m, m.clone(), mode, causal=mode in CAUSAL_MODES)


def causal_mask(unit_mask: torch.Tensor, n_bins: int, ratio: float = 0.6, generator=None,
                block: int = 1) -> MaskSample:
    """MtM causal mode: whole bins (ratio 0.6; whole ``block``-bin frames) masked and a causal attention mask."""
    return temporal_mask(unit_mask, n_bins, ratio, generator, mode="causal", block=block)


def random_token_mask(unit_mask: torch.Tensor, n_bins: int, ratio: float = 0.3, generator=None) -> MaskSample:
    """Mask single (bin, unit) entries: k = max(1, round(ratio * T * n_b)) per trial."""
    _check(unit_mask, n_bins)
    B, N = unit_mask.shape
    valid = unit_mask.unsqueeze(1).expand(B, n_bins, N).reshape(B, n_bins * N)
    m = _choose_k(valid, _count(ratio, valid.sum(1)), generator).reshape(B, n_bins, N)
    return MaskSample(m, m.clone(), "random_token")


def _pick_region(unit_mask: torch.Tensor, unit_region: torch.Tensor, generator, n_regions: int | None = None
                 ) -> torch.Tensor:
    """One region index per trial, uniform among the regions of its real units -> (B,) long.  ``n_regions``
    (the region vocabulary size) replaces the data-dependent ``max + 1`` under ``torch.compile``, where the
    value checks are skipped too (they read tensors back)."""
    if unit_region.shape != unit_mask.shape:
        raise ValueError(f"unit_region shape {tuple(unit_region.shape)} != unit_mask shape {tuple(unit_mask.shape)}")
    compiling = torch.compiler.is_compiling()
    if not compiling and not bool(unit_mask.any(1).all()):
        b = int((~unit_mask.any(1)).nonzero()[0])
        raise ValueError(f"trial {b} of the batch has no real unit (unit_mask all False)")
    if not compiling and bool((unit_region < 0).any()):
        raise ValueError(f"unit_region has negative index {int(unit_region.min())}")
    R = int(n_regions) if compiling and n_regions is not None else int(unit_region.max()) + 1
    present = (torch.nn.functional.one_hot(unit_region, R).bool() & unit_mask.unsqueeze(2)).any(1)  # (B, R)
    scores = _rand(present.shape, present.device, generator)
    scores = torch.where(present, scores, torch.full_like(scores, -1.0))
    return scores.argmax(1)


def inter_region_mask(unit_mask: torch.Tensor, unit_region: torch.Tensor, n_bins: int, generator=None,
                      n_regions: int | None = None) -> MaskSample:
    """Mask one whole region per trial (all its units, all bins); predicted from the other regions."""
    _check(unit_mask, n_bins)
    region = _pick_region(unit_mask, unit_region, generator, n_regions)
    units = unit_mask & (unit_region == region.unsqueeze(1))
    m = units.unsqueeze(1).expand(-1, n_bins, -1).contiguous()
    return MaskSample(m, m.clone(), "inter_region")


def intra_region_mask(unit_mask: torch.Tensor, unit_region: torch.Tensor, n_bins: int, ratio: float = 0.3,
                      generator=None, n_regions: int | None = None) -> MaskSample:
    """Keep one region per trial; mask ``ratio`` of its units (targets); hide every other unit (input only)."""
    _check(unit_mask, n_bins)
    region = _pick_region(unit_mask, unit_region, generator, n_regions)
    in_region = unit_mask & (unit_region == region.unsqueeze(1))
    targets = _choose_k(in_region, _count(ratio, in_region.sum(1)), generator)
    hidden = targets | (unit_mask & ~in_region)
    T = n_bins
    return MaskSample(targets.unsqueeze(1).expand(-1, T, -1).contiguous(),
                      hidden.unsqueeze(1).expand(-1, T, -1).contiguous(), "intra_region")


def no_mask(unit_mask: torch.Tensor, n_bins: int, causal: bool = False) -> MaskSample:
    """Nothing masked (embedding extraction, behaviour decoding, generation past state)."""
    B, N = unit_mask.shape
    m = torch.zeros(B, n_bins, N, dtype=torch.bool, device=unit_mask.device)
    return MaskSample(m, m.clone(), "none", causal=causal)


def forward_prediction_mask(unit_mask: torch.Tensor, n_bins: int, n_forward: int) -> MaskSample:
    """Evaluation mask for forward prediction: the last ``n_forward`` bins are hidden and predicted, causal."""
    _check(unit_mask, n_bins)
    if not 0 < n_forward <= n_bins:
        raise ValueError(f"n_forward must be in 1..{n_bins}, got {n_forward}")
    bins = torch.arange(n_bins, device=unit_mask.device) >= n_bins - n_forward
    m = bins.view(1, -1, 1) & unit_mask.unsqueeze(1)
    return MaskSample(m, m.clone(), "causal", causal=True)


def held_out_units_mask(unit_mask: torch.Tensor, held_out: torch.Tensor, n_bins: int, mode: str = "neuron",
                        also_hidden: torch.Tensor | None = None) -> MaskSample:
    """Evaluation mask on whole units: the units ``held_out`` (B, N) bool are hidden and predicted in every bin.

    ``mode="neuron"`` is co-smoothing, ``"inter_region"`` a whole region held out; ``also_hidden`` (B, N) bool
    hides more units from the input without scoring them (``"intra_region"``: every unit outside the region).
    """
    _check(unit_mask, n_bins)
    for name, x in (("held_out", held_out), ("also_hidden", also_hidden)):
        if x is not None and x.shape != unit_mask.shape:
            raise ValueError(f"{name} shape {tuple(x.shape)} != unit_mask shape {tuple(unit_mask.shape)}")
    units = held_out.bool() & unit_mask
    hidden = units if also_hidden is None else units | (also_hidden.bool() & unit_mask)
    return MaskSample(units.unsqueeze(1).expand(-1, n_bins, -1).contiguous(),
                      hidden.unsqueeze(1).expand(-1, n_bins, -1).contiguous(), mode, causal=mode in CAUSAL_MODES)


def sample_mask(mode: str, unit_mask: torch.Tensor, unit_region: torch.Tensor | None, n_bins: int,
                config=None, generator=None, block: int = 1) -> MaskSample:
    """Sample a mask of ``mode`` with the ratios of ``config`` (an :class:`NfmConfig`; MtM defaults if None);
    ``block``: bins per imaging frame (temporal and causal masks cover whole frames)."""
    ratio = (lambda name, default: getattr(config, f"mask_ratio_{name}", default) if config is not None else default)
    if unit_region is None:
        unit_region = torch.zeros_like(unit_mask, dtype=torch.long)
    if mode == "neuron":
        return neuron_mask(unit_mask, n_bins, ratio("neuron", 0.3), generator)
    if mode == "temporal":
        return temporal_mask(unit_mask, n_bins, ratio("temporal", 0.3), generator, block=block)
    if mode == "causal":
        return causal_mask(unit_mask, n_bins, ratio("causal", 0.6), generator, block=block)
    if mode == "random_token":
        return random_token_mask(unit_mask, n_bins, ratio("random_token", 0.3), generator)
    n_regions = len(config.region_vocab) if config is not None else None
    if mode == "inter_region":
        return inter_region_mask(unit_mask, unit_region, n_bins, generator, n_regions)
    if mode == "intra_region":
        return intra_region_mask(unit_mask, unit_region, n_bins, ratio("intra_region", 0.3), generator, n_regions)
    if mode == "none":
        return no_mask(unit_mask, n_bins)
    raise ValueError(f"unknown mask mode {mode!r}; known: {MASK_MODES + ('none',)}")


__all__ = [
    "MaskSample", "CAUSAL_MODES", "neuron_mask", "temporal_mask", "causal_mask", "random_token_mask",
    "inter_region_mask", "intra_region_mask", "no_mask", "forward_prediction_mask", "held_out_units_mask",
    "sample_mask",
]
