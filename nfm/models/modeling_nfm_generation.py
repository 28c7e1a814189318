"""Neuroformer-style spike generation on the nfm backbone, and the joint pretraining model.

Classes
-------
* :class:`NfmEventDecoder` -- decoder of (unit, dt) event tokens with cross-attention to the past neural state,
  past spike events and stimulus/behaviour tokens; contrastive alignment.
* :class:`NfmForSpikeGeneration` -- teacher-forced training of the decoder; ``generate()`` with a KV cache and
  closed-loop simulation; unit-to-unit attention maps.
* :class:`NfmForPretraining` -- MtM masking (:mod:`nfm.models.modeling_nfm`) + generation on one backbone.

Event generation (precise definition, no future leakage)
--------------------------------------------------------
A trial of T bins (``bin_size`` s) is cut into K = T / w windows of ``w = gen_window / bin_size`` bins.  The
backbone runs once with the ``"generate"`` prompt, no masking and a causal attention mask, so its state at bin
j depends on spikes of bins <= j only.  The decoder for window k (bins ``[k w, (k+1) w)``) sees, as
cross-attention memory:

1. the session and prompt token states;
2. backbone states of the ``gen_past / bin_size`` bins before ``k w``;
3. spike-event tokens of the ``gen_past_events / gen_window`` windows before window k (unit token + relative
   time), the source side of the unit-to-unit attention maps used for connectivity;
4. stimulus/behaviour tokens of the bins from ``k w - P`` to ``(k+1) w - 1`` (exogenous inputs, not spikes).

Within window k, the decoder is causal over ``[SOS] (u_1, dt_1) ... [EOS]``.  The state at position i predicts
``dt_{i+1}`` (``n_dt`` classes + EOS), then ``u_{i+1}`` from the state plus an embedding of ``dt_{i+1}``.  A
grammar mask keeps the canonical order (dt non-decreasing; within one dt class, units non-decreasing) in
training and in generation.  Unit tokens are ``W e_u`` and unit-id logits are dot products of the decoder query
with the session's unit rows ``e_u`` (any neuron count; padding units masked out).

Closed loop: :meth:`NfmSpikeSampling.generate` generates window k, bins the generated events into the spike
tensor and re-runs the backbone, so generated spikes become the past state of window k+1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from .configuration_nfm import NfmConfig
from .masking import MaskSample
from .modeling_nfm import (
    NfmAttention,
    NfmMLP,
    NfmModel,
    NfmPreTrainedModel,
    SessionTables,
    _as_session_list,
    masked_modeling,
)
from .mixed_precision import full_precision, param_dtype
from .positions import N_PREFIX, StaticKVCache, rope_cos_sin
from .generation_fast_paths import FastWindowDecoder, decode_buckets
from .tokenization import NO_UNIT, EventTokens, bin_events, special_ids, tokenize_events, tokens_to_events


#: length buckets of the teacher-forced decoder pass (``config.gen_length_buckets`` overrides it)
DEFAULT_LENGTH_BUCKETS = 8


# --------------------------------------------------------------------------- outputs
@dataclass
class NfmSpikeGenerationOutput(ModelOutput):
    """Teacher-forced event-decoder output (K windows -- or ``gen_windows_per_step`` random ones in training --,
    decoder positions Q = longest window + 1).

    loss: mu * id_loss + (1 - gamma - mu) * dt_loss + gamma * contrastive_loss; id_loss / dt_loss:
        cross-entropies averaged over target tokens [nats / token].
    dt_logits: (B, K, Q, n_dt + 1) (last class = EOS); id_logits: (B, K, Q, N) (-inf where not allowed).
    target_units / target_dts: (B, K, Q) long next tokens (unit -1 for EOS/PAD); target_mask: (B, K, Q) bool.
    memory_units: (B, K, M) long unit of each memory slot that is a past event token (-1 otherwise).
    attentions / cross_attentions: per decoder layer (B*K, heads, Q, Q) / (B*K, heads, Q, M).
    backbone_attentions: per backbone layer (B, heads, 2 + T, 2 + T).
    """

    loss: torch.Tensor | None = None
    id_loss: torch.Tensor | None = None
    dt_loss: torch.Tensor | None = None
    contrastive_loss: torch.Tensor | None = None
    dt_logits: torch.Tensor | None = None
    id_logits: torch.Tensor | None = None
    target_units: torch.Tensor | None = None
    target_dts: torch.Tensor | None = None
    target_mask: torch.Tensor | None = None
    memory_units: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    cross_attentions: tuple[torch.Tensor, ...] | None = None
    backbone_attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class NfmPretrainingOutput(ModelOutput):
    """Both objectives: ``loss`` = w_mtm L_masked + gamma L_contrastive + mu L_id + (1 - gamma - mu) L_dt."""

    loss: torch.Tensor | None = None
    mtm_loss: torch.Tensor | None = None
    id_loss: torch.Tensor | None = None
    dt_loss: torch.Tensor | None = None
    contrastive_loss: torch.Tensor | None = None
    log_rates: torch.Tensor | None = None
    means: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    mask_mode_id: torch.Tensor | None = None
    dt_logits: torch.Tensor | None = None
    id_logits: torch.Tensor | None = None


@dataclass
class NfmGenerationOutput(ModelOutput):
    """Result of :meth:`NfmSpikeSampling.generate`.

    spikes: (B, T, N) float32 counts: the given past bins, generated windows, zeros after them.
    event_times / event_units / event_mask: (B, E) generated events only (seconds from the trial-window start,
        sorted by time then unit).
    token_units / token_dts: (B, n_windows, L) generated tokens per window (unit -1 / dt PAD after EOS).
    n_events: (B, n_windows) long generated events per window.
    """

    spikes: torch.Tensor | None = None
    event_times: torch.Tensor | None = None
    event_units: torch.Tensor | None = None
    event_mask: torch.Tensor | None = None
    token_units: torch.Tensor | None = None
    token_dts: torch.Tensor | None = None
    n_events: torch.Tensor | None = None


# --------------------------------------------------------------------------- decoder
class NfmDecoderLayer(GradientCheckpointingLayer):
    """Pre-LN decoder block: causal self-attention (RoPE, KV cache), cross-attention to the memory, MLP."""

    def __init__(self, config: NfmConfig):
        super().__init__()
        H, eps = config.hidden_size, config.layer_norm_eps
        self.ln1 = nn.LayerNorm(H, eps=eps)
        self.self_attn = NfmAttention(config)
        self.ln2 = nn.LayerNorm(H, eps=eps)
        self.cross_attn = NfmAttention(config, cross=True)
        self.ln3 = nn.LayerNorm(H, eps=eps)
        self.mlp = NfmMLP(config)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, x, memory, memory_mask, cos, sin, cache=None, use_cache=False, output_attentions=False):
        cache = cache or {}
        h, w_self, p_self = self.self_attn(self.ln1(x), cos=cos, sin=sin, is_causal=True, past=cache.get("self"),
                                           use_cache=use_cache, output_attentions=output_attentions)
        x = x + self.dropout(h)
        h, w_cross, p_cross = self.cross_attn(self.ln2(x), memory=memory, attn_mask=memory_mask[:, None, None, :],
                                              past=cache.get("cross"), use_cache=use_cache,
                                              output_attentions=output_attentions)
        x = x + self.dropout(h)
        x = x + self.dropout(self.mlp(self.ln3(x)))
        present = {"self": p_self, "cross": p_cross} if use_cache else None
        return x, w_self, w_cross, present


class NfmEventDecoder(nn.Module):
    """Neuroformer-style decoder of (unit, dt) event tokens (see the module docstring for the exact windows)."""

    MEM_PREFIX, MEM_BINS, MEM_MODALITY, MEM_EVENTS = range(4)

    def __init__(self, config: NfmConfig):
        super().__init__()
        H, eps = config.hidden_size, config.layer_norm_eps
        self.config = config
        self.n_dt = config.n_dt
        self.window_bins = config.window_bins
        self.past_bins = config.past_bins
        self.past_windows = config.past_event_windows
        # teacher-forced training runs the decoder on length buckets (spike_generation); not a saved weight
        self.length_buckets = int(getattr(config, "gen_length_buckets", DEFAULT_LENGTH_BUCKETS))
        self.dt_embed = nn.Embedding(self.n_dt + 3, H)  # dt classes, EOS, SOS, PAD
        self.unit_proj = nn.Linear(H, H)
        self.next_dt_embed = nn.Embedding(self.n_dt, H)
        self.memory_type = nn.Embedding(4, H)
        self.memory_offset = nn.Embedding(self.past_bins + self.window_bins, H)
        self.past_event_time = (nn.Embedding(self.past_windows * self.n_dt, H) if self.past_windows else None)
        self.memory_norm = nn.LayerNorm(H, eps=eps)
        # stimulus values (+ missing indicators unless a checkpoint predates them) and behaviour values + indicators
        in_dim = config.stimulus_dim * (2 if config.modality_missing_indicators else 1) + 2 * config.behavior_dim
        if in_dim:
            self.modality_fc1 = nn.Linear(in_dim, H)
            self.modality_fc2 = nn.Linear(H, H)
            self.modality_norm = nn.LayerNorm(H, eps=eps)
            self.contrast_neural = nn.Linear(H, config.contrastive_dim)
            self.contrast_modality = nn.Linear(H, config.contrastive_dim)
        self.has_modality = bool(in_dim)
        self.layers = nn.ModuleList([NfmDecoderLayer(config) for _ in range(config.decoder_layers)])
        self.norm = nn.LayerNorm(H, eps=eps)
        self.dt_head = nn.Linear(H, self.n_dt + 1)
        self.id_query = nn.Linear(H, H)

    # ---- inputs
    def modality_inputs(self, stimulus, behavior, B: int, T: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Stimulus (B, T, D) and behaviour (B, T, K) as (values (B, T, D + K) float32 with NaN = missing,
        present (B, T) bool: at least one channel observed in the bin).  None or a (B, T, 0) tensor for a
        variable group the config has means "absent" (all NaN): a dataset without the base's modalities.  In
        training (``self.training``), ``config.modality_dropout`` drops a trial's stimulus and, independently,
        its behaviour (set missing)."""
        cfg = self.config
        parts = []
        for name, x, dim, names in (("stimulus", stimulus, cfg.stimulus_dim, cfg.stimulus_names),
                                    ("behavior", behavior, cfg.behavior_dim, cfg.behavior_names)):
            if not dim:
                continue
            if x is None or (x.dim() == 3 and x.shape[:2] == (B, T) and x.shape[2] == 0):
                x = torch.full((B, T, dim), float("nan"), device=device)
            x = x.float()
            if x.shape != (B, T, dim):
                raise ValueError(f"{name} shape {tuple(x.shape)} != (B, T, {'D' if name == 'stimulus' else 'K'}) = "
                                 f"{(B, T, dim)} (config.{name}_names={names}); build the collator from the model "
                                 "(NfmCollator.for_config) so variables are in the model's order, NaN where absent")
            if self.training and cfg.modality_dropout > 0:
                drop = torch.rand(B, device=x.device) < cfg.modality_dropout
                x = x.masked_fill(drop.view(B, 1, 1), float("nan"))
            parts.append(x)
        values = torch.cat(parts, -1)
        return values, ~torch.isnan(values).all(-1)

    def modality_tokens(self, stimulus, behavior, B: int, T: int, device) -> torch.Tensor | None:
        """Stimulus (B, T, D) and behaviour (B, T, K; NaN = missing) -> (B, T, H) tokens, or None if D = K = 0.
        Missing channels are fed as 0 with a missing indicator (stimulus indicators only with
        ``config.modality_missing_indicators``; older checkpoints read a missing stimulus as 0); bins with no
        observed channel are masked out of the memory (:meth:`modality_present`)."""
        if not self.has_modality:
            return None
        return self._modality_tokens(*self.modality_inputs(stimulus, behavior, B, T, device))[0]

    def _modality_tokens(self, values: torch.Tensor, present: torch.Tensor):
        cfg = self.config
        D = cfg.stimulus_dim
        stim, beh = values[..., :D], values[..., D:]
        parts = [torch.nan_to_num(stim, nan=0.0)] if D else []
        if D and cfg.modality_missing_indicators:
            parts.append(torch.isnan(stim).float())
        if cfg.behavior_dim:
            parts += [torch.nan_to_num(beh, nan=0.0), torch.isnan(beh).float()]
        x = torch.cat(parts, -1).to(self.modality_fc1.weight.dtype)
        return self.modality_norm(self.modality_fc2(F.gelu(self.modality_fc1(x)))), present

    def modality_memory(self, stimulus, behavior, B: int, T: int, device):
        """``(tokens (B, T, H), present (B, T) bool)`` or ``(None, None)`` without stimulus/behaviour channels:
        the tokens the decoder attends to and which of them are observed (the others are masked)."""
        if not self.has_modality:
            return None, None
        return self._modality_tokens(*self.modality_inputs(stimulus, behavior, B, T, device))

    def unit_tokens(self, tables: SessionTables) -> torch.Tensor:
        """(B, N, H) decoder token embedding of every unit of each trial's session."""
        return self.unit_proj(tables.unit_embed)

    def build_memory(self, last_hidden, mod_tokens, tokens: EventTokens, unit_tok, windows: torch.Tensor,
                     mod_present: torch.Tensor | None = None):
        """Cross-attention memory of the windows ``windows`` (Kw,) -> (memory (B, Kw, M, H), mask, units).

        ``units`` (B, Kw, M) is the unit of each past-event slot (-1 for other slots).  ``mod_present`` (B, T)
        bool: modality tokens of bins without any observed stimulus/behaviour channel are masked out.
        """
        B = last_hidden.shape[0]
        dev = last_hidden.device
        Kw = windows.shape[0]
        P, w = self.past_bins, self.window_bins
        typ = self.memory_type.weight
        parts = [last_hidden[:, :N_PREFIX].unsqueeze(1).expand(B, Kw, N_PREFIX, -1) + typ[self.MEM_PREFIX]]
        masks = [torch.ones(B, Kw, N_PREFIX, dtype=torch.bool, device=dev)]
        units = [torch.full((B, Kw, N_PREFIX), NO_UNIT, dtype=torch.long, device=dev)]
        bins = last_hidden[:, N_PREFIX:]
        start = windows.unsqueeze(1) * w  # (Kw, 1)
        if P:
            idx = start - P + torch.arange(P, device=dev)
            parts.append(bins[:, idx.clamp_min(0)] + typ[self.MEM_BINS] + self.memory_offset.weight[:P])
            masks.append((idx >= 0).unsqueeze(0).expand(B, -1, -1))
            units.append(torch.full((B, Kw, P), NO_UNIT, dtype=torch.long, device=dev))
        if mod_tokens is not None:
            idx = start - P + torch.arange(P + w, device=dev)
            parts.append(mod_tokens[:, idx.clamp_min(0)] + typ[self.MEM_MODALITY] + self.memory_offset.weight)
            ok = (idx >= 0).unsqueeze(0).expand(B, -1, -1)
            masks.append(ok if mod_present is None else ok & mod_present[:, idx.clamp_min(0)])
            units.append(torch.full((B, Kw, P + w), NO_UNIT, dtype=torch.long, device=dev))
        if self.past_windows:
            S = tokens.units.shape[2]
            ev_u, ev_dt, ev_ok = (tokens.units[:, :, 1:S - 1], tokens.dts[:, :, 1:S - 1],
                                  tokens.events[:, :, 1:S - 1])
            b_idx = torch.arange(B, device=dev).view(B, 1, 1)
            for j in range(1, self.past_windows + 1):
                src = windows - j
                ok = ev_ok[:, src.clamp_min(0)] & (src >= 0).view(1, Kw, 1)
                u = ev_u[:, src.clamp_min(0)].clamp_min(0)
                rel = (self.past_windows - j) * self.n_dt + ev_dt[:, src.clamp_min(0)].clamp(0, self.n_dt - 1)
                parts.append(unit_tok[b_idx, u] + self.past_event_time(rel) + typ[self.MEM_EVENTS])
                masks.append(ok)
                units.append(torch.where(ok, u, torch.full_like(u, NO_UNIT)))
        memory = self.memory_norm(torch.cat([p.to(parts[0].dtype) for p in parts], dim=2))
        return memory, torch.cat(masks, dim=2), torch.cat(units, dim=2)

    def embed_tokens(self, units, dts, unit_tok):
        """(B, Kw, L) unit/dt tokens -> (B, Kw, L, H) input embeddings (specials carry no unit part)."""
        B = units.shape[0]
        b_idx = torch.arange(B, device=units.device).view(B, *([1] * (units.dim() - 1)))
        u = unit_tok[b_idx, units.clamp_min(0)] * (units >= 0).unsqueeze(-1)
        return self.dt_embed(dts) + u

    def rope(self, n_pos: int, device, start: int = 0):
        cfg = self.config
        return rope_cos_sin(n_pos, cfg.hidden_size // cfg.num_attention_heads, cfg.rope_theta, device, start=start)

    def run(self, x, memory, memory_mask, start: int = 0, cache=None, use_cache=False, output_attentions=False,
            rope=None):
        """Decoder layers on (B', L, H) inputs at positions start .. start + L - 1 -> (states, cache, attns).
        ``rope``: precomputed (cos, sin) tables of those positions (default: computed here)."""
        cos, sin = rope if rope is not None else self.rope(x.shape[1], x.device, start)
        new_cache, self_w, cross_w = [], [], []
        for i, layer in enumerate(self.layers):
            x, ws, wc, present = layer(x, memory, memory_mask, cos, sin, cache=cache[i] if cache else None,
                                       use_cache=use_cache, output_attentions=output_attentions)
            new_cache.append(present)
            self_w.append(ws)
            cross_w.append(wc)
        return self.norm(x), (new_cache if use_cache else None), tuple(self_w), tuple(cross_w)

    # ---- heads
    def dt_logits(self, states, cur_dts):
        """(..., H) states, (...) current dt tokens -> (..., n_dt + 1) logits; classes below the current dt are
        -inf (canonical order), EOS (last class) always allowed."""
        with full_precision(states):  # softmax statistics in float32, also under autocast
            logits = self.dt_head(states.to(param_dtype(self.dt_head))).float()
        cur = torch.where(cur_dts < self.n_dt, cur_dts, torch.zeros_like(cur_dts))
        allowed = torch.arange(self.n_dt + 1, device=states.device) >= cur.unsqueeze(-1)
        return logits.masked_fill(~allowed, float("-inf"))

    def id_logits(self, states, next_dts, cur_units, cur_dts, tables: SessionTables, rows: torch.Tensor | None = None):
        """Unit-id logits (B, Kw, L, N) = (W (state + e_dt)) . e_u / sqrt(H) + bias_u; padding units and units
        breaking the canonical order (same dt class, lower unit) are -inf.  ``rows`` (B,): the trial of ``tables``
        each state row belongs to (default: row b is trial b)."""
        B = states.shape[0]
        keys, bias, unit_mask = tables.unit_embed, tables.id_bias, tables.unit_mask
        if rows is not None:
            keys, bias, unit_mask = keys[rows], bias[rows], unit_mask[rows]
        with full_precision(states):  # softmax statistics in float32, also under autocast
            dtype = param_dtype(self.id_query)
            q = self.id_query(states.to(dtype) + self.next_dt_embed(next_dts.clamp(0, self.n_dt - 1)).to(dtype))
            keys = keys.to(q.dtype)
            logits = torch.einsum("bkqh,bnh->bkqn", q, keys).float() / math.sqrt(q.shape[-1])
            logits = logits + bias.float().view(B, 1, 1, -1)
        same = (cur_dts < self.n_dt) & (next_dts == cur_dts) & (cur_units >= 0)
        floor = torch.where(same, cur_units, torch.zeros_like(cur_units))
        N = keys.shape[1]
        allowed = (torch.arange(N, device=states.device) >= floor.unsqueeze(-1)) & unit_mask.view(B, 1, 1, N)
        return logits.masked_fill(~allowed, float("-inf"))

    def contrastive_loss(self, bin_states, mod_tokens, mod_present=None):
        """Symmetric InfoNCE between per-window pooled backbone states and pooled modality tokens (B*K pairs;
        with ``mod_present`` (B, T), tokens of unobserved bins are left out of the pooling and windows without
        any observed bin out of the pairs; None when fewer than 2 pairs remain)."""
        B, T, H = bin_states.shape
        w = self.window_bins
        K = T // w
        neural = bin_states[:, :K * w].reshape(B, K, w, H).mean(2).reshape(B * K, H)
        if mod_present is None:
            modal = mod_tokens[:, :K * w].reshape(B, K, w, H).mean(2).reshape(B * K, H)
        else:
            p = mod_present[:, :K * w].reshape(B, K, w, 1).to(mod_tokens.dtype)
            n = p.sum(2)
            modal = ((mod_tokens[:, :K * w].reshape(B, K, w, H) * p).sum(2) / n.clamp_min(1)).reshape(B * K, H)
            keep = (n > 0).reshape(B * K)
            if int(keep.sum()) < 2:
                return None
            if not bool(keep.all()):
                neural, modal = neural[keep], modal[keep]
        with full_precision(neural):  # the InfoNCE logits (softmax statistics) in float32, also under autocast
            dtype = param_dtype(self.contrast_neural)
            zn = F.normalize(self.contrast_neural(neural.to(dtype)).float(), dim=-1)
            zm = F.normalize(self.contrast_modality(modal.to(dtype)).float(), dim=-1)
            logits = zn @ zm.T / self.config.contrastive_temperature
            labels = torch.arange(zn.shape[0], device=logits.device)
            return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def _check_events(event_times, event_units, event_mask, tables: SessionTables):
    if event_times is None or event_units is None:
        raise ValueError("the generation objective needs event_times and event_units (B, E) in the batch")
    if event_mask is None:
        event_mask = torch.ones_like(event_units, dtype=torch.bool)
    event_mask = event_mask.bool()
    N = tables.unit_mask.shape[1]
    u = event_units.long()
    out = event_mask & ((u < 0) | (u >= N))
    if not bool(out.any()):
        real = torch.gather(tables.unit_mask, 1, u.clamp(0, N - 1))
        out = event_mask & ~real
    if bool(out.any()):
        b, e = (int(x) for x in out.nonzero()[0])
        raise ValueError(f"event {e} of trial {b} has unit {int(u[b, e])}, which is not a real unit of the trial "
                         f"(unit_mask)")
    return event_mask


def _check_generation_grid(backbone: NfmModel, spikes, bin_size, session_ids) -> None:
    """Generation reads spike sessions whose bins are the config's ``bin_size`` (its windows are whole bins of
    it); a 2-photon session or another bin size raises, naming the session."""
    cfg = backbone.config
    sids = _as_session_list(session_ids, spikes.shape[0])
    modality = cfg.modality_of(sids[0])
    if modality != "spikes":
        raise ValueError(f"session {sids[0]!r} is {modality}: the generation objective applies to spike sessions "
                         "only")
    backbone.check_grid(spikes, bin_size, sids)
    size = backbone.batch_grid(sids)[1]
    if abs(size - float(cfg.bin_size)) > 1e-12:
        raise ValueError(f"session {sids[0]!r} is binned at {size} s but generation windows are whole bins of "
                         f"config.bin_size={cfg.bin_size} s")


def _sharded(module: nn.Module) -> bool:
    """Whether FSDP (1 or 2) wraps ``module``'s layers: every rank must then call each layer the same number of
    times per step (each call all-gathers its weights), which data-dependent length buckets would break."""
    try:
        from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel
    except ImportError:  # pragma: no cover - torch without distributed
        return False
    return any(isinstance(m, (FSDPModule, FullyShardedDataParallel)) for m in module.modules())


def _past_event_counts(tokens: EventTokens, windows: torch.Tensor, past_windows: int) -> torch.Tensor:
    """(B, Kw, past_windows) long: events of window ``k - j`` (j = 1 .. past_windows) for each chosen window k
    (0 before the trial start) -- the filled past-event slots of each block of :meth:`NfmEventDecoder.build_memory`."""
    B = tokens.n_events.shape[0]
    out = [tokens.n_events[:, (windows - j).clamp_min(0)] * (windows >= j) for j in range(1, past_windows + 1)]
    return torch.stack(out, -1) if out else tokens.n_events.new_zeros(B, windows.shape[0], 0)


def spike_generation(backbone: NfmModel, decoder: NfmEventDecoder, spikes, *, unit_mask=None, unit_region=None,
                     session_ids=None, event_times=None, event_units=None, event_mask=None, stimulus=None,
                     behavior=None, bin_size=None, output_attentions=False,
                     length_buckets: int | None = None) -> NfmSpikeGenerationOutput:
    """The generation objective on one batch (teacher forcing): backbone with the ``generate`` prompt, event
    tokens, decoder, dt / unit-id cross-entropies and contrastive alignment (see the module docstring).

    ``length_buckets`` (default ``decoder.length_buckets``: ``config.gen_length_buckets`` or 8): the decoder
    runs on the (trial, window) sequences sorted by length in at most this many groups (split for the least
    padding), each padded to its own longest sequence and with the past-event memory cut to the most past
    events any of its sequences has
    (:func:`~nfm.models.generation_fast_paths.decode_buckets`); 1, or ``output_attentions``, runs every sequence padded to the longest one.  Both
    give the same losses and logits (to float rounding); logits at padding positions (``target_mask`` False)
    are 0 on the bucketed path."""
    config = backbone.config
    B, T, N = spikes.shape
    _check_generation_grid(backbone, spikes, bin_size, session_ids)
    w = config.window_bins
    if T % w:
        raise ValueError(f"trial length T={T} bins is not a multiple of the generation window "
                         f"({config.gen_window} s = {w} bins); change config.gen_window")
    K = T // w
    session_ids = _as_session_list(session_ids, B)
    tables = backbone.session_tables(session_ids, unit_mask, unit_region, device=spikes.device)
    event_mask = _check_events(event_times, event_units, event_mask, tables)
    out = backbone(spikes, prompt="generate", tables=tables, output_attentions=output_attentions)
    tokens = tokenize_events(event_times, event_units, event_mask, window_s=config.gen_window, n_windows=K,
                             dt_resolution=config.dt_resolution)
    mod, mod_present = decoder.modality_memory(stimulus, behavior, B, T, spikes.device)
    unit_tok = decoder.unit_tokens(tables)
    windows = torch.arange(K, device=spikes.device)
    n_step = config.gen_windows_per_step
    if decoder.training and 0 < n_step < K:  # train on a random subset of windows (same for the whole batch)
        windows = torch.randperm(K, device=spikes.device)[:n_step].sort().values
    Kw = windows.shape[0]
    memory, mem_mask, mem_units = decoder.build_memory(out.last_hidden_state, mod, tokens, unit_tok, windows,
                                                       mod_present)
    units_w, dts_w, mask_w = tokens.units[:, windows], tokens.dts[:, windows], tokens.mask[:, windows]
    S = int(mask_w.sum(-1).max())  # longest sequence among the chosen windows (SOS ... EOS)
    in_u, in_dt = units_w[..., :S - 1], dts_w[..., :S - 1]
    tg_u, tg_dt, tg_m = units_w[..., 1:S], dts_w[..., 1:S], mask_w[..., 1:S]
    x = decoder.embed_tokens(in_u, in_dt, unit_tok)
    n_dt = decoder.n_dt
    dt_target = torch.where(tg_m, tg_dt.clamp_max(n_dt), torch.full_like(tg_dt, -100))  # EOS -> n_dt
    is_event = tg_m & (tg_dt < n_dt)
    n_buckets = decoder.length_buckets if length_buckets is None else int(length_buckets)
    if n_buckets > 1 and _sharded(decoder):  # FSDP gathers a layer's weights at every call: keep the count equal
        n_buckets = 1
    self_w = cross_w = ()
    if n_buckets > 1 and not output_attentions:
        past_events = _past_event_counts(tokens, windows, decoder.past_windows)
        dt_logits, id_logits, dt_loss, id_loss = decode_buckets(
            decoder, x, memory, mem_mask, past_events, tokens.units.shape[2] - 2, in_u, in_dt, tg_u, tg_dt, tg_m,
            dt_target, is_event, tables, n_buckets)
    else:
        H = x.shape[-1]
        M = memory.shape[2]
        states, _, self_w, cross_w = decoder.run(x.reshape(B * Kw, S - 1, H), memory.reshape(B * Kw, M, H),
                                                 mem_mask.reshape(B * Kw, M), output_attentions=output_attentions)
        states = states.view(B, Kw, S - 1, H)
        dt_logits = decoder.dt_logits(states, in_dt)
        id_logits = decoder.id_logits(states, tg_dt, in_u, in_dt, tables)
        dt_loss = F.cross_entropy(dt_logits.reshape(-1, n_dt + 1), dt_target.reshape(-1), ignore_index=-100)
        if bool(is_event.any()):
            id_loss = F.cross_entropy(id_logits[is_event], tg_u[is_event])
        else:  # no event in the batch: a zero that keeps the graph (the logits hold -inf)
            id_loss = states.sum() * 0.0
    contrastive = None
    if mod is not None and config.contrastive_weight > 0:
        contrastive = decoder.contrastive_loss(out.bin_states, mod, mod_present)
    gamma, mu = config.contrastive_weight, config.id_loss_weight
    loss = mu * id_loss + (1 - gamma - mu) * dt_loss
    if contrastive is not None:
        loss = loss + gamma * contrastive
    return NfmSpikeGenerationOutput(
        loss=loss, id_loss=id_loss, dt_loss=dt_loss, contrastive_loss=contrastive, dt_logits=dt_logits,
        id_logits=id_logits, target_units=tg_u, target_dts=tg_dt, target_mask=tg_m, memory_units=mem_units,
        last_hidden_state=out.last_hidden_state,
        attentions=self_w if output_attentions else None, cross_attentions=cross_w if output_attentions else None,
        backbone_attentions=out.attentions)


# --------------------------------------------------------------------------- sampling
def _sample(logits: torch.Tensor, do_sample: bool, temperature: float, top_k, top_p, generator) -> torch.Tensor:
    """(B, C) float logits (-inf = forbidden) -> (B,) long.

    Greedy (``do_sample=False``): argmax.  Sampling: logits / temperature, then top-k, then top-p (nucleus, only
    when ``top_p < 1``: the smallest set of most probable classes whose probability reaches ``top_p``; one sort),
    then one draw from the renormalised distribution p by the exponential race ``argmax_i p_i / E_i`` with
    ``E_i ~ Exp(1)`` i.i.d. (exactly a categorical draw, cheaper than ``torch.multinomial`` on CPU).
    """
    if not do_sample:
        return logits.argmax(-1)
    if temperature != 1.0:
        logits = logits / max(float(temperature), 1e-6)
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, int(top_k), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    order = None
    if top_p is not None and top_p < 1.0:
        logits, order = torch.sort(logits, descending=True, dim=-1)
    probs = logits.softmax(-1)
    if order is not None:
        probs = probs.masked_fill(probs.cumsum(-1) - probs > top_p, 0.0)  # keep the smallest prefix reaching top_p
    race = probs / torch.empty_like(probs).exponential_(generator=generator)
    pick = race.argmax(-1)
    return pick if order is None else order.gather(-1, pick.unsqueeze(-1)).squeeze(-1)


def _window_generator(generator: torch.Generator | None, device) -> torch.Generator:
    """A generator for one window, seeded from ``generator`` (or the global RNG): what a window samples then does
    not depend on how many random draws the previous window made (the fast path may decode a few PAD steps past
    the end of a window before it notices, see :class:`FastWindowDecoder`)."""
    seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator,
                             device=generator.device if generator is not None else "cpu"))
    return torch.Generator(device=device).manual_seed(seed)


class NfmSpikeSampling:
    """``generate()`` and ``generation_outputs()`` for models that own ``self.nfm`` (backbone) and
    ``self.decoder`` (event decoder)."""

    def generation_outputs(self, spikes, *, unit_mask=None, unit_region=None, session_ids=None, event_times=None,
                           event_units=None, event_mask=None, stimulus=None, behavior=None, bin_size=None,
                           trial_labels=None, trial_id=None, valid_mask=None,
                           output_attentions: bool = False) -> NfmSpikeGenerationOutput:
        """Teacher-forced event-decoder outputs (losses, logits and, with ``output_attentions``, the attention
        maps for :meth:`NfmForSpikeGeneration.unit_attention`) of any model with an event decoder.
        ``trial_labels``, ``trial_id`` and ``valid_mask`` (batch keys) are accepted and ignored."""
        if getattr(self, "decoder", None) is None:
            raise ValueError("this model has no event decoder ('generation' not in config.objectives)")
        return spike_generation(self.nfm, self.decoder, spikes, unit_mask=unit_mask, unit_region=unit_region,
                                session_ids=session_ids, event_times=event_times, event_units=event_units,
                                event_mask=event_mask, stimulus=stimulus, behavior=behavior, bin_size=bin_size,
                                output_attentions=output_attentions)

    @torch.no_grad()
    def generate(self, spikes: torch.Tensor, *, unit_mask=None, unit_region=None, session_ids=None,
                 event_times=None, event_units=None, event_mask=None, stimulus=None, behavior=None,
                 bin_size=None, trial_labels=None, trial_id=None, valid_mask=None, start_window: int = 0,
                 n_windows: int | None = None, max_events: int | None = None, min_events: int = 0,
                 do_sample: bool = True, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, use_cache: bool = True,
                 generator: torch.Generator | None = None) -> NfmGenerationOutput:
        """Generate spike events window by window, closed loop.

        The bins before ``start_window`` (and their events) are the given past; windows ``start_window ..
        start_window + n_windows - 1`` are generated one after the other: for each, the backbone re-reads the
        spike tensor in which earlier generated windows have replaced the data, so generated spikes are the past
        state of the next window.  Sampling: ``do_sample=False`` is greedy; else temperature / top-k / top-p.
        ``max_events`` (default ``config.gen_max_events``) caps the events of one window (then EOS is forced);
        ``min_events`` forbids EOS before that many events.  ``use_cache=False`` recomputes the whole prefix at
        every step (the reference the KV cache must match); ``use_cache=True`` on a model in eval mode runs the
        fused single-token path (:class:`FastWindowDecoder`), which samples the same tokens up to float
        rounding.  Each window draws from its own generator seeded from ``generator`` (or the global RNG), so a
        fixed ``generator`` gives the same windows on every path.  Batch keys it does not use
        (``trial_labels``, ``trial_id``, ``valid_mask``) are accepted so that ``model.generate(**batch, ...)``
        works.
        """
        cfg = self.config
        backbone, decoder = self.nfm, self.decoder
        B, T, N = spikes.shape
        _check_generation_grid(backbone, spikes, bin_size, session_ids)
        w = cfg.window_bins
        if T % w:
            raise ValueError(f"trial length T={T} bins is not a multiple of the window ({w} bins)")
        K = T // w
        n_windows = K - start_window if n_windows is None else int(n_windows)
        if not (0 <= start_window and n_windows >= 1 and start_window + n_windows <= K):
            raise ValueError(f"windows {start_window}..{start_window + n_windows - 1} are outside the trial's "
                             f"{K} windows of {cfg.gen_window} s")
        max_events = cfg.gen_max_events if max_events is None else int(max_events)
        if min_events > max_events:
            raise ValueError(f"min_events={min_events} > max_events={max_events}")
        dev = spikes.device
        session_ids = _as_session_list(session_ids, B)
        tables = backbone.session_tables(session_ids, unit_mask, unit_region, device=dev)
        t0 = start_window * cfg.gen_window
        if event_times is None:
            event_times = torch.zeros(B, 0, device=dev)
            event_units = torch.zeros(B, 0, dtype=torch.long, device=dev)
        event_mask = _check_events(event_times, event_units, event_mask, tables)
        past_mask = event_mask & (event_times < t0 - 1e-9)  # the given past only
        past_t, past_u, past_m = event_times, event_units.long(), past_mask
        spikes = spikes.clone().float()
        spikes[:, start_window * w:] = 0.0
        mod, mod_present = decoder.modality_memory(stimulus, behavior, B, T, dev)
        unit_tok = decoder.unit_tokens(tables)
        n_dt = decoder.n_dt
        EOS, SOS, PAD = special_ids(n_dt)
        all_u, all_dt, all_n = [], [], []
        for k in range(start_window, start_window + n_windows):
            out = backbone(spikes, prompt="generate", tables=tables)
            tokens = tokenize_events(past_t, past_u, past_m, window_s=cfg.gen_window, n_windows=K,
                                     dt_resolution=cfg.dt_resolution)
            win = torch.tensor([k], device=dev)
            memory, mem_mask, _ = decoder.build_memory(out.last_hidden_state, mod, tokens, unit_tok, win,
                                                       mod_present)
            memory, mem_mask = memory[:, 0], mem_mask[:, 0]
            g_win = _window_generator(generator, dev) if do_sample else None
            units, dts = self._decode_window(decoder, memory, mem_mask, unit_tok, tables, max_events, min_events,
                                             do_sample, temperature, top_k, top_p, use_cache, g_win)
            n = ((dts < n_dt) & (units >= 0)).sum(1)
            all_u.append(units)
            all_dt.append(dts)
            all_n.append(n)
            ev_t, ev_u, ev_m = tokens_to_events(units.unsqueeze(1), dts.unsqueeze(1), k, window_s=cfg.gen_window,
                                                dt_resolution=cfg.dt_resolution, n_dt=n_dt)
            spikes += bin_events(ev_t, ev_u, ev_m, n_bins=T, n_units=N, bin_size=cfg.bin_size)
            past_t = torch.cat([past_t.float(), ev_t], 1)
            past_u = torch.cat([past_u, ev_u], 1)
            past_m = torch.cat([past_m, ev_m], 1)
        L = max(u.shape[1] for u in all_u)
        tok_u = torch.stack([F.pad(u, (0, L - u.shape[1]), value=NO_UNIT) for u in all_u], 1)
        tok_dt = torch.stack([F.pad(d, (0, L - d.shape[1]), value=PAD) for d in all_dt], 1)
        ev_t, ev_u, ev_m = tokens_to_events(tok_u, tok_dt, start_window, window_s=cfg.gen_window,
                                            dt_resolution=cfg.dt_resolution, n_dt=n_dt)
        return NfmGenerationOutput(spikes=spikes, event_times=ev_t, event_units=ev_u, event_mask=ev_m,
                                   token_units=tok_u, token_dts=tok_dt, n_events=torch.stack(all_n, 1))

    @staticmethod
    def _decode_window(decoder: NfmEventDecoder, memory, mem_mask, unit_tok, tables, max_events, min_events,
                       do_sample, temperature, top_k, top_p, use_cache, generator):
        """Autoregressive decoding of one window for all B trials -> (units (B, L), dts (B, L)) without SOS;
        finished trials are padded (unit -1, dt PAD); EOS is not included.

        Three paths, one grammar and one sampler (:func:`_sample`): ``use_cache=False`` re-runs the decoder on
        the whole prefix at every token (the reference); ``use_cache=True`` in eval mode runs
        :class:`FastWindowDecoder` (fused single-token step); ``use_cache=True`` in training mode (dropout on)
        runs the decoder layers with their KV cache.  The end of the window (every trial past EOS) is checked
        after each token on CPU and every 16 tokens on other devices, where reading it back is a host sync;
        steps decoded past the end only write PAD.
        """
        B = memory.shape[0]
        dev = memory.device
        n_dt = decoder.n_dt
        EOS, SOS, PAD = special_ids(n_dt)
        seq_u = torch.full((B, max_events + 2), NO_UNIT, dtype=torch.long, device=dev)
        seq_dt = torch.full((B, max_events + 2), PAD, dtype=torch.long, device=dev)
        seq_dt[:, 0] = SOS
        finished = torch.zeros(B, dtype=torch.bool, device=dev)
        fast = FastWindowDecoder(decoder, memory, mem_mask, unit_tok, tables, max_events + 1) \
            if use_cache and not decoder.training else None
        cache = ([{"self": StaticKVCache(max_events + 1), "cross": None} for _ in decoder.layers]
                 if use_cache and fast is None else None)
        cos, sin = decoder.rope(max_events + 1, dev)
        check_every = 1 if dev.type == "cpu" else 16
        for step in range(max_events + 1):
            cur_u, cur_dt = seq_u[:, step], seq_dt[:, step]
            if fast is not None:
                state = fast.step(step, cur_u, cur_dt)
                dt_logits = fast.dt_logits(state, cur_dt)
            else:
                if cache is not None:
                    x = decoder.embed_tokens(seq_u[:, step:step + 1], seq_dt[:, step:step + 1], unit_tok)
                    states, cache, _, _ = decoder.run(x, memory, mem_mask, cache=cache, use_cache=True,
                                                      rope=(cos[step:step + 1], sin[step:step + 1]))
                else:
                    x = decoder.embed_tokens(seq_u[:, :step + 1], seq_dt[:, :step + 1], unit_tok)
                    states, _, _, _ = decoder.run(x, memory, mem_mask)
                state = states[:, -1]
                dt_logits = decoder.dt_logits(state, cur_dt)
            if step < min_events:
                dt_logits[:, EOS] = float("-inf")
            if step == max_events:
                dt_logits[:, :EOS] = float("-inf")
                dt_logits[:, EOS] = 0.0
            nxt_dt = _sample(dt_logits, do_sample, temperature, top_k, top_p, generator)
            if fast is not None:
                id_logits = fast.id_logits(state, nxt_dt, cur_u, cur_dt)
            else:
                id_logits = decoder.id_logits(state[:, None, None], nxt_dt[:, None, None], cur_u[:, None, None],
                                              cur_dt[:, None, None], tables)[:, 0, 0]
            nxt_u = _sample(id_logits, do_sample, temperature, top_k, top_p, generator)
            finished = finished | (nxt_dt == EOS)
            seq_u[:, step + 1] = nxt_u.masked_fill(finished, NO_UNIT)
            seq_dt[:, step + 1] = nxt_dt.masked_fill(finished, PAD)
            if step + 1 >= min_events and (step + 1) % check_every == 0 and bool(finished.all()):
                break
        length = int((seq_dt[:, 1:] != PAD).sum(1).max()) if B else 0  # tokens until the last trial's EOS
        return seq_u[:, 1:length + 1], seq_dt[:, 1:length + 1]


# --------------------------------------------------------------------------- heads
class NfmForSpikeGeneration(NfmSpikeSampling, NfmPreTrainedModel):
    """Neuroformer-style event generation on the nfm backbone (see the module docstring).

    Forward (keyword-only after ``spikes``; the collator's batch keys): spikes (B, T, N), unit_mask, unit_region,
    session_ids, event_times (B, E) [s from the trial-window start], event_units (B, E), event_mask (B, E),
    stimulus (B, T, D), behavior (B, T, K; NaN = missing), bin_size [s].  ``trial_labels``, ``trial_id`` and
    ``valid_mask`` are accepted and ignored.
    """

    def __init__(self, config: NfmConfig):
        super().__init__(config)
        self.nfm = NfmModel(config)
        self.decoder = NfmEventDecoder(config)
        self.post_init()

    def forward(self, spikes: torch.Tensor, *, unit_mask=None, unit_region=None, session_ids=None,
                event_times=None, event_units=None, event_mask=None, stimulus=None, behavior=None,
                bin_size: float | None = None, trial_labels=None, trial_id=None, valid_mask=None,
                output_attentions=None, return_dict=None, return_loss: bool = True) -> NfmSpikeGenerationOutput:
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        out = self.generation_outputs(spikes, unit_mask=unit_mask, unit_region=unit_region, session_ids=session_ids,
                                      event_times=event_times, event_units=event_units, event_mask=event_mask,
                                      stimulus=stimulus, behavior=behavior, bin_size=bin_size,
                                      output_attentions=output_attentions)
        return out if return_dict is not False else out.to_tuple()

    @staticmethod
    def unit_attention(outputs: NfmSpikeGenerationOutput, n_units: int) -> torch.Tensor:
        """Directed unit-to-unit attention (B, N, N): entry [b, i, j] is the mean cross-attention weight (over
        layers, heads and occurrences) from the decoder state that predicts a spike of unit i (target) to the
        past spike-event tokens of unit j (source).  Needs ``output_attentions=True``; 0 where a pair never
        co-occurs."""
        if not outputs.cross_attentions:
            raise ValueError("run the model with output_attentions=True to read unit-to-unit attention")
        tgt = torch.where(outputs.target_mask & (outputs.target_units >= 0), outputs.target_units,
                          torch.full_like(outputs.target_units, NO_UNIT))  # (B, K, Q)
        src = outputs.memory_units  # (B, K, M)
        B, K, Q = tgt.shape
        M = src.shape[2]
        att = torch.stack([a.float().mean(1) for a in outputs.cross_attentions]).mean(0).view(B, K, Q, M)
        ok = (tgt >= 0).unsqueeze(-1) & (src >= 0).unsqueeze(2)
        b = torch.arange(B, device=att.device).view(B, 1, 1, 1)
        flat = (b * n_units + tgt.clamp_min(0).unsqueeze(-1)) * n_units + src.clamp_min(0).unsqueeze(2)
        total = torch.zeros(B * n_units * n_units, device=att.device)
        count = torch.zeros_like(total)
        total.index_add_(0, flat[ok], att[ok])
        count.index_add_(0, flat[ok], torch.ones_like(att[ok]))
        return (total / count.clamp_min(1)).view(B, n_units, n_units)


class NfmForPretraining(NfmSpikeSampling, NfmPreTrainedModel):
    """MtM + Neuroformer on one backbone; objectives and weights from the config (``objectives``,
    ``mtm_weight``, ``contrastive_weight``, ``id_loss_weight``).

    Forward (keyword-only after ``spikes``): the batch keys of :class:`NfmForMaskedModeling` and
    :class:`NfmForSpikeGeneration`, plus ``objectives`` (a subset of ``config.objectives`` for this call, e.g.
    ``["mtm"]`` to score masked predictions without the generation pass; default: all of them).  In a model
    that has seen both modalities, generation runs on spike batches only (2-photon batches get MtM alone).
    """

    def __init__(self, config: NfmConfig):
        super().__init__(config)
        self.nfm = NfmModel(config)
        self.decoder = NfmEventDecoder(config) if "generation" in config.objectives else None
        self.post_init()

    def forward(self, spikes: torch.Tensor, *, unit_mask=None, unit_region=None, session_ids=None,
                event_times=None, event_units=None, event_mask=None, stimulus=None, behavior=None,
                mask_mode: str | None = None, mask: MaskSample | None = None, prompt: str | None = None,
                valid_mask=None, bin_size: float | None = None, trial_labels=None, trial_id=None,
                generator: torch.Generator | None = None, objectives=None, return_dict=None,
                return_loss: bool = True) -> NfmPretrainingOutput:
        cfg = self.config
        if objectives is None:
            objectives = list(cfg.objectives)
        else:
            objectives = [objectives] if isinstance(objectives, str) else list(objectives)
            extra = [o for o in objectives if o not in cfg.objectives]
            if extra or not objectives:
                raise ValueError(f"objectives={objectives} must be a non-empty subset of the model's "
                                 f"config.objectives={list(cfg.objectives)}")
        loss = spikes.new_zeros((), dtype=torch.float32)
        out = NfmPretrainingOutput()
        if "mtm" in objectives:
            m = masked_modeling(self.nfm, spikes, unit_mask=unit_mask, unit_region=unit_region,
                                session_ids=session_ids, mask_mode=mask_mode, mask=mask, prompt=prompt,
                                valid_mask=valid_mask, bin_size=bin_size, generator=generator)
            loss = loss + cfg.mtm_weight * m.loss
            out.mtm_loss, out.log_rates, out.means, out.mask, out.mask_mode_id = (
                m.loss, m.log_rates, m.means, m.mask, m.mask_mode_id)
        spike_batch = session_ids is None or cfg.modality_of(_as_session_list(session_ids, spikes.shape[0])[0]) == "spikes"
        if "generation" in objectives and not spike_batch and len(objectives) == 1:
            raise ValueError("objectives=['generation'] on a 2-photon batch: generation applies to spike sessions only")
        if "generation" in objectives and spike_batch:  # MtM on every session, generation on spike sessions
            g = self.generation_outputs(spikes, unit_mask=unit_mask, unit_region=unit_region,
                                        session_ids=session_ids, event_times=event_times, event_units=event_units,
                                        event_mask=event_mask, stimulus=stimulus, behavior=behavior,
                                        bin_size=bin_size)
            loss = loss + g.loss
            out.id_loss, out.dt_loss, out.contrastive_loss, out.dt_logits, out.id_logits = (
                g.id_loss, g.dt_loss, g.contrastive_loss, g.dt_logits, g.id_logits)
        out.loss = loss
        return out if return_dict is not False else out.to_tuple()

    def generate(self, spikes: torch.Tensor, **kwargs) -> NfmGenerationOutput:
        if self.decoder is None:
            raise ValueError("this model was built without the 'generation' objective (config.objectives)")
        return super().generate(spikes, **kwargs)


__all__ = [
    "NfmEventDecoder", "NfmDecoderLayer", "NfmForSpikeGeneration", "NfmForPretraining", "NfmSpikeSampling",
    "NfmSpikeGenerationOutput", "NfmPretrainingOutput", "NfmGenerationOutput", "spike_generation",
]
