"""Spike events <-> Neuroformer (unit, dt) token sequences, vectorised in torch.

A trial of length ``n_windows * window_s`` seconds is cut into consecutive
windows of ``window_s`` seconds.  Each window's spikes become one token
sequence ``[SOS] (u_1, dt_1) ... (u_L, dt_L) [EOS] [PAD] ...`` where

* ``dt_i`` = floor((t_i - k * window_s) / dt_resolution) is the dt class of the
  event's offset from its window start (window and dt class both follow
  :func:`nfm.data.binning.bin_index_torch`, the rule of every binning in nfm) (``n_dt = ceil(window_s /
  dt_resolution)`` classes), and
* events are ordered by dt class, then unit index ascending (Neuroformer's
  "unrolled in space" order within a time step).

The dt vocabulary is ``0 .. n_dt-1`` plus three specials: ``EOS = n_dt``,
``SOS = n_dt + 1``, ``PAD = n_dt + 2``.  Unit tokens are session unit indices;
specials and padding carry unit ``-1`` (:data:`NO_UNIT`).

Decoding maps a token back to the centre of its dt class:
``t = k * window_s + (dt + 0.5) * dt_resolution`` (seconds from the trial
window start), so a round trip moves an event by at most ``dt_resolution``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from nfm.data.binning import bin_index_torch

NO_UNIT = -1


def n_dt_classes(window_s: float, dt_resolution: float) -> int:
    """Number of dt classes of a window: ceil(window_s / dt_resolution)."""
    return int(math.ceil(window_s / dt_resolution - 1e-6))


def special_ids(n_dt: int) -> tuple[int, int, int]:
    """(EOS, SOS, PAD) ids in the dt vocabulary of ``n_dt`` classes."""
    return n_dt, n_dt + 1, n_dt + 2


@dataclass
class EventTokens:
    """Token sequences of every window of a batch.

    ``units``, ``dts``: (B, K, S) long; ``mask``: (B, K, S) bool, True for SOS, events and EOS;
    ``n_events``: (B, K) long events per window.  S = max events per window + 2 (SOS and EOS).
    """

    units: torch.Tensor
    dts: torch.Tensor
    mask: torch.Tensor
    n_events: torch.Tensor
    n_dt: int

    @property
    def events(self) -> torch.Tensor:
        """(B, K, S) bool: True for the event tokens only (not SOS, EOS, PAD)."""
        return self.mask & (self.dts < self.n_dt)


def tokenize_events(event_times: torch.Tensor, event_units: torch.Tensor, event_mask: torch.Tensor, *,
                    window_s: float, n_windows: int, dt_resolution: float, min_len: int = 0) -> EventTokens:
    """Cut spike events into per-window (unit, dt) token sequences.

    Args:
        event_times: (B, E) float seconds from the trial-window start, in [0, n_windows * window_s).
        event_units: (B, E) long unit index within the trial's session (>= 0 where ``event_mask``).
        event_mask: (B, E) bool, True for real events.
        window_s: window length [s]; dt_resolution: dt class width [s]; n_windows: windows per trial K.
        min_len: minimum number of event slots per window (S >= min_len + 2).

    Raises ``ValueError`` naming the trial, event index and value of an event outside the trial or with a
    negative unit; nothing is dropped.
    """
    if event_times.shape != event_units.shape or event_times.shape != event_mask.shape or event_times.dim() != 2:
        raise ValueError(f"event_times {tuple(event_times.shape)}, event_units {tuple(event_units.shape)} and "
                         f"event_mask {tuple(event_mask.shape)} must be equal (B, E) shapes")
    device = event_times.device
    B, E = event_times.shape
    K = int(n_windows)
    n_dt = n_dt_classes(window_s, dt_resolution)
    EOS, SOS, PAD = special_ids(n_dt)
    valid = event_mask.bool()
    t = event_times.double()
    bad = valid & (event_units < 0)
    if bool(bad.any()):
        b, e = (int(x) for x in bad.nonzero()[0])
        raise ValueError(f"event {e} of trial {b} has a negative unit {int(event_units[b, e])}")
    win = bin_index_torch(t, window_s, K, valid=valid, what="event")  # the one binning rule (nfm.data.binning)
    rel = torch.where(valid, t - win.double() * window_s, torch.zeros_like(t))
    dt = bin_index_torch(rel.clamp_min(0), dt_resolution, n_dt, valid=valid, what="event offset")
    units = event_units.long()
    n_units = int(units[valid].max()) + 1 if bool(valid.any()) else 1
    group = torch.arange(B, device=device).unsqueeze(1) * K + win.clamp(0, K - 1)  # (B, E)
    key = (group * n_dt + dt) * n_units + units.clamp_min(0)
    key = torch.where(valid, key, torch.full_like(key, torch.iinfo(torch.long).max))
    order = torch.sort(key.flatten(), stable=True).indices
    n_valid = int(valid.sum())
    order = order[:n_valid]
    g = group.flatten()[order]
    counts = torch.bincount(g, minlength=B * K)
    L = max(int(counts.max()) if n_valid else 0, int(min_len))
    S = L + 2
    starts = torch.cumsum(counts, 0) - counts
    pos = torch.arange(n_valid, device=device) - starts[g] + 1  # +1: after SOS
    out_u = torch.full((B * K, S), NO_UNIT, dtype=torch.long, device=device)
    out_dt = torch.full((B * K, S), PAD, dtype=torch.long, device=device)
    out_u[g, pos] = units.flatten()[order]
    out_dt[g, pos] = dt.flatten()[order]
    out_dt[:, 0] = SOS
    rows = torch.arange(B * K, device=device)
    out_dt[rows, counts + 1] = EOS
    mask = torch.arange(S, device=device).unsqueeze(0) <= (counts + 1).unsqueeze(1)
    return EventTokens(out_u.view(B, K, S), out_dt.view(B, K, S), mask.view(B, K, S), counts.view(B, K), n_dt)


def tokens_to_events(units: torch.Tensor, dts: torch.Tensor, window_index: torch.Tensor | int, *, window_s: float,
                     dt_resolution: float, n_dt: int | None = None):
    """Turn (B, K, S) event tokens back into padded event arrays.

    ``units``/``dts``: (B, K, S) long; only tokens with ``0 <= dt < n_dt`` and ``unit >= 0`` are events (SOS,
    EOS, PAD are skipped).  ``window_index``: (K,) long or int offset of the windows within the trial.
    Returns ``(event_times (B, E) float32 s, event_units (B, E) long, event_mask (B, E) bool)`` sorted by time
    then unit; times are dt-class centres ``k * window_s + (dt + 0.5) * dt_resolution``.
    """
    if n_dt is None:
        n_dt = n_dt_classes(window_s, dt_resolution)
    B, K, S = units.shape
    device = units.device
    if isinstance(window_index, int):
        window_index = torch.arange(K, device=device) + window_index
    if units.numel() == 0:  # no token at all (e.g. every trial ended its window at once)
        return (torch.zeros(B, 0, device=device), torch.zeros(B, 0, dtype=torch.long, device=device),
                torch.zeros(B, 0, dtype=torch.bool, device=device))
    is_event = (dts >= 0) & (dts < n_dt) & (units >= 0)
    times = (window_index.view(1, K, 1).double() * window_s + (dts.double() + 0.5) * dt_resolution)
    # order: window, dt, unit (tokens are already ordered like this when produced by the decoder grammar,
    # but sort anyway so that any token array gives sorted events)
    key = (window_index.view(1, K, 1) * (n_dt + 1) + dts.clamp(0, n_dt)) * (int(units.max().clamp_min(0)) + 1) \
        + units.clamp_min(0)
    key = torch.where(is_event, key, torch.full_like(key, torch.iinfo(torch.long).max)).view(B, K * S)
    order = torch.sort(key, dim=1, stable=True).indices
    n = is_event.view(B, -1).sum(1)
    E = int(n.max()) if B else 0
    order = order[:, :E]
    ev_t = torch.gather(times.view(B, -1), 1, order).float()
    ev_u = torch.gather(units.view(B, -1), 1, order)
    ev_m = torch.arange(E, device=device).unsqueeze(0) < n.unsqueeze(1)
    ev_t = torch.where(ev_m, ev_t, torch.zeros_like(ev_t))
    ev_u = torch.where(ev_m, ev_u, torch.zeros_like(ev_u))
    return ev_t, ev_u, ev_m


def bin_events(event_times: torch.Tensor, event_units: torch.Tensor, event_mask: torch.Tensor, *, n_bins: int,
               n_units: int, bin_size: float) -> torch.Tensor:
    """Count events per bin: (B, E) arrays -> counts (B, n_bins, n_units) float32, binned by
    :func:`nfm.data.binning.bin_index_torch` (the collator's rule)."""
    B, E = event_times.shape
    counts = torch.zeros(B * n_bins * n_units, dtype=torch.float32, device=event_times.device)
    valid = event_mask.bool()
    b = torch.arange(B, device=event_times.device).unsqueeze(1).expand(B, E)
    bad = valid & ((event_units < 0) | (event_units >= n_units))
    if bool(bad.any()):
        bb, e = (int(x) for x in bad.nonzero()[0])
        raise ValueError(f"event {e} of trial {bb}: unit {int(event_units[bb, e])} is outside 0..{n_units - 1}")
    t = bin_index_torch(event_times, bin_size, n_bins, valid=valid, what="event")
    flat = (b * n_bins + t) * n_units + event_units.long()
    counts.index_add_(0, flat[valid], torch.ones(int(valid.sum()), device=event_times.device))
    return counts.view(B, n_bins, n_units)


__all__ = ["EventTokens", "NO_UNIT", "n_dt_classes", "special_ids", "tokenize_events", "tokens_to_events",
           "bin_events"]
