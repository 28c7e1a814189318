"""The nfm model family, transformers-style, readable in one file.

Classes
-------
* :class:`NfmModel` -- the backbone.  One token per time bin (NDT1/MtM style)
  plus a session token and a prompt (mask-mode) token, RoPE, pre-LN transformer
  on ``F.scaled_dot_product_attention``.
* :class:`NfmForMaskedModeling` -- MtM multi-task masking (Poisson NLL on
  log-rates for spike counts, Gaussian NLL for 2-photon activity), loss
  averaged over the masked entries.
* :class:`NfmForSpikeGeneration` -- Neuroformer-style autoregressive
  generation of (unit, dt) event tokens with cross-attention to the past neural
  state and to stimulus/behaviour tokens; contrastive alignment; ``generate()``
  with a KV cache and closed-loop simulation.
* :class:`NfmForPretraining` -- both objectives on one backbone.
* :class:`NfmForBehaviorDecoding` -- trial-class and per-bin regression heads.

Read-in / read-out for any neuron count
---------------------------------------
Each session owns a small :class:`NfmSessionParameters` (keyed by a sanitised
session id, never by its unit count): per-unit input embeddings ``(N_s, H)``,
per-unit read-out rows ``(N_s, H)`` and biases, a per-unit id-logit bias, a
session token and (Gaussian likelihood) per-unit log-variances.  Brain-region
embeddings are shared across sessions and animals and are added to the per-unit
rows, so a unit's input row is ``e_u = unit_embed[u] + region_embed[region(u)]``.

* Read-in of bin t: ``z_t = sum_u x_tu e_u + sum_u hidden_tu m_region(u)``
  (``x`` = transformed counts with masked entries zeroed, ``m`` = shared
  per-region mask embeddings), then LayerNorm -> Linear -> GELU -> Linear.
* Read-out: ``log_rate_tu = LN(h_t) . (readout[u] + region_readout[region(u)])
  + bias_u``.
* Event decoder: unit tokens are ``W e_u``; unit-id logits are dot products of
  the decoder query with the same session unit rows ``e_u`` (any neuron count;
  padding units masked out).

Event generation (precise definition, no future leakage)
--------------------------------------------------------
A trial of T bins (``bin_size`` s) is cut into K = T / w windows of
``w = gen_window / bin_size`` bins.  The backbone runs once with the
``"generate"`` prompt, no masking and a causal attention mask, so its state at
bin j depends on spikes of bins <= j only.  The decoder for window k
(bins ``[k w, (k+1) w)``) sees, as cross-attention memory:

1. the session and prompt token states;
2. backbone states of the ``gen_past / bin_size`` bins before ``k w``;
3. spike-event tokens of the ``gen_past_events / gen_window`` windows before
   window k (unit token + relative time), the source side of the unit-to-unit
   attention maps used for connectivity;
4. stimulus/behaviour tokens of the bins from ``k w - P`` to ``(k+1) w - 1``
   (exogenous inputs, not spikes).

Within window k, the decoder is causal over ``[SOS] (u_1, dt_1) ... [EOS]``.
The state at position i predicts ``dt_{i+1}`` (``n_dt`` classes + EOS), then
``u_{i+1}`` from the state plus an embedding of ``dt_{i+1}``.  A grammar mask
keeps the canonical order (dt non-decreasing; within one dt class, units
non-decreasing) in training and in generation.

Closed loop: :meth:`NfmForSpikeGeneration.generate` generates window k, bins the
generated events into the spike tensor and re-runs the backbone, so generated
spikes become the past state of window k+1.
"""
from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from .configuration_nfm import PROMPTS, NfmConfig
from .masking import CAUSAL_MODES, MaskSample, sample_mask
from .tokenization import NO_UNIT, EventTokens, bin_events, special_ids, tokenize_events, tokens_to_events

N_PREFIX = 2  # session token, prompt token


def session_key(session_id: str) -> str:
    """ModuleDict key of a session: sanitised id + 8 hex digits of its sha1 (injective in practice)."""
    clean = re.sub(r"[^0-9A-Za-z_]", "_", str(session_id))[:48]
    return f"s_{clean}_{hashlib.sha1(str(session_id).encode()).hexdigest()[:8]}"


# --------------------------------------------------------------------------- outputs
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
class NfmMaskedModelingOutput(ModelOutput):
    """MtM output. ``loss``: NLL averaged over the masked (target) entries.

    log_rates: (B, T, N) Poisson log-rates per bin (spike counts) -- None for the Gaussian likelihood.
    means / log_variances: (B, T, N) / (B, N) Gaussian prediction (2-photon activity) -- None for Poisson.
    mask: (B, T, N) bool target entries; hidden_mask: (B, T, N) bool entries zeroed in the input.
    mask_mode_id: (B,) long index of the batch's mode in :data:`PROMPTS` (one mode per batch).
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


@dataclass
class NfmSpikeGenerationOutput(ModelOutput):
    """Teacher-forced event-decoder output (K windows -- or ``gen_windows_per_step`` random ones in training --,
    decoder positions Q = longest window + 1).

    loss: mu * id_loss + (1 - gamma - mu) * dt_loss + gamma * contrastive_loss (normalised by the active weights
        when used alone); id_loss / dt_loss: cross-entropies averaged over target tokens.
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
class NfmBehaviorDecodingOutput(ModelOutput):
    """Behaviour decoding. behavior_predictions: (B, T, K); trial_logits: name -> (B, C) logits or (B,) values."""

    loss: torch.Tensor | None = None
    behavior_loss: torch.Tensor | None = None
    trial_loss: torch.Tensor | None = None
    behavior_predictions: torch.Tensor | None = None
    trial_logits: dict[str, torch.Tensor] | None = None
    last_hidden_state: torch.Tensor | None = None


@dataclass
class NfmGenerationOutput(ModelOutput):
    """Result of :meth:`NfmForSpikeGeneration.generate`.

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


# --------------------------------------------------------------------------- building blocks
def rope_cos_sin(n_pos: int, head_dim: int, theta: float, device, start: int = 0):
    """RoPE tables for positions ``start .. start + n_pos - 1`` -> cos, sin of shape (n_pos, head_dim), float32."""
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    pos = torch.arange(start, start + n_pos, device=device, dtype=torch.float32)
    freqs = torch.outer(pos, inv)
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, heads, L, d) by (L, d) tables."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


class StaticKVCache:
    """Pre-allocated self-attention keys/values of one layer for incremental decoding (no re-allocation or
    concatenation per step): buffers (B, heads, max_len, d) allocated at the first write, ``length`` filled."""

    def __init__(self, max_len: int):
        self.max_len = int(max_len)
        self.k = self.v = None
        self.length = 0

    def append(self, k: torch.Tensor, v: torch.Tensor):
        L = k.shape[2]
        if self.k is None:
            shape = (k.shape[0], k.shape[1], self.max_len, k.shape[3])
            self.k, self.v = k.new_empty(shape), v.new_empty(shape)
        if self.length + L > self.max_len:
            raise ValueError(f"KV cache of {self.max_len} positions is full")
        self.k[:, :, self.length:self.length + L] = k
        self.v[:, :, self.length:self.length + L] = v
        self.length += L
        return self.k[:, :, :self.length], self.v[:, :, :self.length]


class NfmAttention(nn.Module):
    """Multi-head attention (self with RoPE and KV cache, or cross to a memory whose K/V are cached).

    ``F.scaled_dot_product_attention`` is used unless ``output_attentions`` asks for the maps, where an explicit
    float32 softmax computes the same thing and returns the weights (B, heads, L_q, L_k).
    """

    def __init__(self, config: NfmConfig, cross: bool = False):
        super().__init__()
        H = config.hidden_size
        self.cross = cross
        self.n_heads = config.num_attention_heads
        self.head_dim = H // self.n_heads
        self.dropout = config.attention_dropout
        # separate q/k/v projections: the LoRA adapters (nfm.adapters) target q_proj, k_proj, v_proj, o_proj
        self.q_proj = nn.Linear(H, H)
        self.k_proj = nn.Linear(H, H)
        self.v_proj = nn.Linear(H, H)
        self.o_proj = nn.Linear(H, H)

    def _split(self, x):
        B, L, _ = x.shape
        return x.view(B, L, self.n_heads, self.head_dim).transpose(1, 2)

    def forward(self, x, memory=None, cos=None, sin=None, attn_mask=None, is_causal=False, past=None,
                use_cache=False, output_attentions=False):
        B, L, H = x.shape
        q = self._split(self.q_proj(x))
        if self.cross:
            if past is not None:
                k, v = past
            else:
                k, v = self._split(self.k_proj(memory)), self._split(self.v_proj(memory))
        else:
            k, v = self._split(self.k_proj(x)), self._split(self.v_proj(x))
            if cos is not None:
                q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
            if isinstance(past, StaticKVCache):
                k, v = past.append(k, v)
            elif past is not None:
                k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        present = (past if isinstance(past, StaticKVCache) else (k, v)) if use_cache else None
        Lk = k.shape[2]
        if is_causal and L == 1:  # one new query attends to every cached position
            is_causal = False
        if is_causal and (Lk != L or output_attentions):
            # bottom-right aligned causal mask (queries are the last L of Lk positions)
            attn_mask = torch.ones(L, Lk, dtype=torch.bool, device=x.device).tril(Lk - L)
            is_causal = False
        dropout = self.dropout if self.training else 0.0
        if output_attentions:
            scores = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(self.head_dim)
            if attn_mask is not None:
                scores = scores.masked_fill(~attn_mask, float("-inf"))
            weights = scores.softmax(-1)
            out = (F.dropout(weights, dropout, self.training) @ v.float()).to(v.dtype)
        else:
            weights = None
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout,
                                                 is_causal=is_causal and L > 1)
        out = out.transpose(1, 2).reshape(B, L, H)
        return self.o_proj(out), weights, present


class NfmMLP(nn.Module):
    def __init__(self, config: NfmConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class NfmEncoderLayer(GradientCheckpointingLayer):
    """Pre-LN block: x + Attn(LN(x)); x + MLP(LN(x))."""

    def __init__(self, config: NfmConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attn = NfmAttention(config)
        self.ln2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = NfmMLP(config)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, x, cos, sin, is_causal=False, output_attentions=False):
        h, w, _ = self.attn(self.ln1(x), cos=cos, sin=sin, is_causal=is_causal, output_attentions=output_attentions)
        x = x + self.dropout(h)
        x = x + self.dropout(self.mlp(self.ln2(x)))
        return x, w


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


class NfmSessionParameters(nn.Module):
    """The small per-session parameters (one recording = one set of units).

    unit_embed (N, H): read-in rows, decoder unit tokens and unit-id logit keys; readout (N, H) and
    readout_bias (N,): log-rate (or mean) read-out; id_bias (N,): unit-id logit bias; token (H,): session
    token; log_var (N,): Gaussian per-unit log-variance (only with a learned Gaussian likelihood).
    Buffers (saved, not trained): input_mean / input_scale (N,): the read-in feeds
    ``(transform(x) - input_mean) * input_scale``, each unit standardised over the training data, so a hidden
    entry (fed as 0) stands for the unit's mean; 0 / 1 (no standardisation) until
    :meth:`NfmPreTrainedModel.init_session_statistics` sets them.
    """

    def __init__(self, n_units: int, hidden_size: int, learn_variance: bool = False):
        super().__init__()
        self.n_units = int(n_units)
        self.unit_embed = nn.Parameter(torch.empty(n_units, hidden_size))
        self.readout = nn.Parameter(torch.empty(n_units, hidden_size))
        self.readout_bias = nn.Parameter(torch.empty(n_units))
        self.id_bias = nn.Parameter(torch.empty(n_units))
        self.token = nn.Parameter(torch.empty(hidden_size))
        self.log_var = nn.Parameter(torch.empty(n_units)) if learn_variance else None
        # read-in standardisation (not trained; set from data by NfmPreTrainedModel.init_session_statistics)
        self.register_buffer("input_mean", torch.zeros(n_units))
        self.register_buffer("input_scale", torch.ones(n_units))


@dataclass
class SessionTables:
    """Per-trial views of the session parameters, padded to the batch's N (padding rows are zero).

    unit_embed (B, N, H) incl. region embeddings; readout (B, N, H) incl. region read-out; readout_bias (B, N);
    id_bias (B, N); token (B, H); log_var (B, N) or None; unit_mask (B, N); unit_region (B, N);
    input_mean / input_scale (B, N) read-in standardisation (padding: 0 / 0).
    """

    unit_embed: torch.Tensor
    readout: torch.Tensor
    readout_bias: torch.Tensor
    id_bias: torch.Tensor
    token: torch.Tensor
    log_var: torch.Tensor | None
    unit_mask: torch.Tensor
    unit_region: torch.Tensor
    input_mean: torch.Tensor | None = None
    input_scale: torch.Tensor | None = None


# --------------------------------------------------------------------------- base class
class NfmPreTrainedModel(PreTrainedModel):
    config_class = NfmConfig
    base_model_prefix = "nfm"
    main_input_name = "spikes"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["NfmEncoderLayer", "NfmDecoderLayer"]

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, NfmSessionParameters):
            init.normal_(module.unit_embed, std=std)
            init.normal_(module.readout, std=std)
            init.zeros_(module.readout_bias)
            init.zeros_(module.id_bias)
            init.normal_(module.token, std=std)
            if module.log_var is not None:
                init.zeros_(module.log_var)
            init.zeros_(module.input_mean)  # no read-in standardisation until init_session_statistics
            init.ones_(module.input_scale)
        else:
            super()._init_weights(module)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """transformers' ``from_pretrained`` restricted to safetensors weights (nothing on the load path
        unpickles; a checkpoint with only ``pytorch_model.bin`` is refused)."""
        if kwargs.get("use_safetensors") is False:
            raise ValueError("nfm models load safetensors weights only (use_safetensors=False is not supported)")
        kwargs["use_safetensors"] = True
        return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)

    def add_session(self, session_id: str, n_units: int, regions=None) -> torch.Tensor:
        """Add a new session (animal/recording): see :meth:`NfmModel.add_session`."""
        return self.base_model.add_session(session_id, n_units, regions)

    @torch.no_grad()
    def init_session_statistics(self, session_id: str, mean_activity, input_mean=None, input_std=None,
                                min_count: float = 1e-3, min_std: float = 0.05) -> None:
        """Data-dependent initialisation of one session's read-in and read-out (call before training it).

        Args:
            session_id: a session of the model.
            mean_activity: (N,) each unit's mean over the training trials and bins: expected spike count per
                bin [spikes / bin] for the Poisson likelihood, mean activity for the Gaussian one.
            input_mean / input_std: (N,) mean and standard deviation of each unit's *transformed* input
                (``config.input_transform`` of the counts, e.g. log1p) over the same bins; the read-in then feeds
                ``(transform(x) - input_mean) / max(input_std, min_std)``, so every unit enters on the same scale
                and a hidden (masked) entry, fed as 0, stands for the unit's mean instead of "no spike".
                None keeps the read-in as it is.
            min_count: floor [spikes / bin] of the Poisson mean (a unit silent in the training data).

        Poisson: ``readout_bias = log(mean)`` (the prediction starts at each unit's mean rate, the NLB null
        model, instead of 1 spike per bin) and ``id_bias = log(mean / sum(mean))`` (the event decoder's unit
        logits start at each unit's share of the spikes).  Gaussian: ``readout_bias = mean``.
        Why: the per-session parameters are updated only on that session's batches (1 step in S with S
        sessions) and Adam moves a parameter by about ``learning_rate`` per update, so a bias at 0 needs
        ~``|log mean| / lr`` of its own updates (thousands of steps) to reach a log-rate of about -2 to -4.
        """
        module = self.base_model.session_module(session_id)

        def vector(x, name):
            v = torch.as_tensor(x, dtype=torch.float64).flatten()
            if v.numel() != module.n_units:
                raise ValueError(f"{name} has {v.numel()} entries but session {session_id!r} has "
                                 f"{module.n_units} units")
            if not bool(torch.isfinite(v).all()):
                raise ValueError(f"{name} of session {session_id!r} has non-finite values")
            return v

        mean = vector(mean_activity, "mean_activity")
        dtype = module.readout_bias.dtype
        if self.config.likelihood == "poisson":
            if bool((mean < 0).any()):
                raise ValueError(f"mean_activity of session {session_id!r} (spike counts) has negative values")
            log_mean = mean.clamp_min(min_count).log()
            module.readout_bias.copy_(log_mean.to(dtype))
            module.id_bias.copy_((log_mean - torch.logsumexp(log_mean, 0)).to(dtype))
        else:
            module.readout_bias.copy_(mean.to(dtype))
        if (input_mean is None) != (input_std is None):
            raise ValueError("give both input_mean and input_std, or neither")
        if input_mean is not None:
            std = vector(input_std, "input_std")
            if bool((std < 0).any()):
                raise ValueError(f"input_std of session {session_id!r} has negative values")
            module.input_mean.copy_(vector(input_mean, "input_mean").to(module.input_mean.dtype))
            module.input_scale.copy_((1.0 / std.clamp_min(min_std)).to(module.input_scale.dtype))


def _as_session_list(session_ids, B: int) -> list[str]:
    if session_ids is None:
        raise ValueError("session_ids is required: a list of B session id strings")
    if isinstance(session_ids, str):
        session_ids = [session_ids] * B
    ids = [str(s) for s in session_ids]
    if len(ids) != B:
        raise ValueError(f"session_ids has {len(ids)} entries but the batch has B={B} trials")
    return ids


# --------------------------------------------------------------------------- backbone
class NfmModel(NfmPreTrainedModel):
    """Backbone: [session token, prompt token, bin_1 .. bin_T] through a pre-LN RoPE transformer.

    Forward inputs (the collator's batch keys; unknown keys are ignored):
        spikes: (B, T, N) float counts per bin (or binned 2-photon activity).
        unit_mask: (B, N) bool real units (default: the first n_units of each trial's session).
        unit_region: (B, N) long index into ``config.region_vocab`` (default 0 = unknown).
        session_ids: list of B session id strings.
        hidden_mask: (B, T, N) bool entries to zero in the input (masked modelling).
        mask_mode: prompt name (one of :data:`PROMPTS`, default ``"none"``).
        causal: causal attention (default: True for the causal mask mode and ``"generate"``).
    """

    def __init__(self, config: NfmConfig):
        super().__init__(config)
        H, R = config.hidden_size, len(config.region_vocab)
        learn_var = config.likelihood == "gaussian" and config.gaussian_learn_variance
        self.sessions = nn.ModuleDict({session_key(s): NfmSessionParameters(n, H, learn_var)
                                       for s, n in config.session_n_units.items()})
        self.region_embed = nn.Embedding(R, H)
        self.region_readout = nn.Embedding(R, H)
        self.region_mask_embed = nn.Embedding(R, H)
        self.prompt_embed = nn.Embedding(len(PROMPTS), H)
        self.readin_norm = nn.LayerNorm(H, eps=config.layer_norm_eps)
        self.readin_fc1 = nn.Linear(H, H)
        self.readin_fc2 = nn.Linear(H, H)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.layers = nn.ModuleList([NfmEncoderLayer(config) for _ in range(config.num_hidden_layers)])
        self.norm = nn.LayerNorm(H, eps=config.layer_norm_eps)
        self.post_init()

    # ---------------------------------------------------------------- sessions
    def session_module(self, session_id: str) -> NfmSessionParameters:
        key = session_key(session_id)
        if key not in self.sessions:
            known = list(self.config.session_n_units)
            raise ValueError(f"session {session_id!r} is not in this model ({len(known)} known, e.g. {known[:3]}); "
                             f"add it with model.add_session({session_id!r}, n_units)")
        return self.sessions[key]

    def add_session(self, session_id: str, n_units: int, regions=None) -> torch.Tensor:
        """Create the small parameters of a new session; nothing else changes (old outputs stay identical).

        Args:
            session_id: the new session's id string.
            n_units: its number of units (neurons or ROIs).
            regions: optional list of ``n_units`` region acronyms.  Acronyms not in ``config.region_vocab`` are
                appended to it and get new rows in the shared region tables, initialised as copies of the
                ``"unknown"`` row (old rows and outputs unchanged).
        Returns:
            (n_units,) long region indices of the new units (zeros when ``regions`` is None), to put in
            ``unit_region`` of the new session's batches.
        """
        session_id = str(session_id)
        if session_id in self.config.session_n_units:
            raise ValueError(f"session {session_id!r} is already in the model")
        if int(n_units) < 1:
            raise ValueError(f"n_units must be >= 1, got {n_units}")
        ref = self.region_embed.weight
        idx = torch.zeros(int(n_units), dtype=torch.long)
        if regions is not None:
            regions = [str(r) for r in regions]
            if len(regions) != int(n_units):
                raise ValueError(f"regions has {len(regions)} entries for n_units={n_units}")
            new = [r for r in dict.fromkeys(regions) if r not in self.config.region_vocab]
            if new:
                self._grow_regions(new)
            vocab = {r: i for i, r in enumerate(self.config.region_vocab)}
            idx = torch.tensor([vocab[r] for r in regions], dtype=torch.long)
        learn_var = self.config.likelihood == "gaussian" and self.config.gaussian_learn_variance
        module = NfmSessionParameters(int(n_units), self.config.hidden_size, learn_var)
        self._init_weights(module)
        self.sessions[session_key(session_id)] = module.to(device=ref.device, dtype=ref.dtype)
        self.config.session_n_units = {**self.config.session_n_units, session_id: int(n_units)}
        return idx

    def _grow_regions(self, new: list[str]) -> None:
        n_new = len(new)
        for name in ("region_embed", "region_readout", "region_mask_embed"):
            old = getattr(self, name)
            emb = nn.Embedding(old.num_embeddings + n_new, old.embedding_dim).to(old.weight.device, old.weight.dtype)
            with torch.no_grad():
                emb.weight[: old.num_embeddings] = old.weight
                emb.weight[old.num_embeddings:] = old.weight[0]
            emb.weight.requires_grad_(old.weight.requires_grad)
            setattr(self, name, emb)
        self.config.region_vocab = list(self.config.region_vocab) + list(new)

    def session_tables(self, session_ids, unit_mask: torch.Tensor | None, unit_region: torch.Tensor | None,
                       n_units: int | None = None, device=None) -> SessionTables:
        """Gather the per-session parameters of a batch (one loop over the batch's distinct sessions)."""
        B = len(session_ids)
        N = unit_mask.shape[1] if unit_mask is not None else int(n_units)
        device = device if device is not None else self.region_embed.weight.device
        uniq = list(dict.fromkeys(session_ids))
        inv = torch.tensor([uniq.index(s) for s in session_ids], device=device)
        mods = [self.session_module(s) for s in uniq]
        for s, m in zip(uniq, mods):
            if m.n_units > N:
                raise ValueError(f"session {s!r} has {m.n_units} units but the batch has only N={N} unit columns")
        if unit_mask is None:
            n = torch.tensor([m.n_units for m in mods], device=device)[inv]
            unit_mask = torch.arange(N, device=device).unsqueeze(0) < n.unsqueeze(1)
        else:
            unit_mask = unit_mask.to(device=device, dtype=torch.bool)
            n = torch.tensor([m.n_units for m in mods], device=device)[inv]
            beyond = unit_mask & (torch.arange(N, device=device).unsqueeze(0) >= n.unsqueeze(1))
            if bool(beyond.any()):
                b = int(beyond.any(1).nonzero()[0])
                raise ValueError(f"trial {b} (session {session_ids[b]!r}) marks unit columns beyond its "
                                 f"{int(n[b])} units as real in unit_mask")
        if unit_region is None:
            unit_region = torch.zeros(B, N, dtype=torch.long, device=device)
        else:
            unit_region = unit_region.to(device=device, dtype=torch.long)
            R = self.region_embed.num_embeddings
            if bool(((unit_region < 0) | (unit_region >= R)).any()):
                raise ValueError(f"unit_region values must be in 0..{R - 1} (config.region_vocab), got "
                                 f"{int(unit_region.min())}..{int(unit_region.max())}")

        def stack(name):
            rows = []
            for m in mods:
                p = getattr(m, name)
                pad = (0, 0, 0, N - m.n_units) if p.dim() == 2 else (0, N - m.n_units)
                rows.append(F.pad(p, pad))
            return torch.stack(rows)[inv]

        um = unit_mask.unsqueeze(-1)
        unit_embed = (stack("unit_embed") + self.region_embed(unit_region)) * um
        readout = (stack("readout") + self.region_readout(unit_region)) * um
        token = torch.stack([m.token for m in mods])[inv]
        log_var = stack("log_var") if mods[0].log_var is not None else None
        return SessionTables(unit_embed, readout, stack("readout_bias"), stack("id_bias"), token, log_var,
                             unit_mask, unit_region, stack("input_mean"), stack("input_scale"))

    # ---------------------------------------------------------------- forward
    def transform_input(self, spikes: torch.Tensor) -> torch.Tensor:
        if self.config.input_transform == "log1p":
            return torch.sign(spikes) * torch.log1p(spikes.abs())
        return spikes

    def forward(self, spikes: torch.Tensor, unit_mask: torch.Tensor | None = None,
                unit_region: torch.Tensor | None = None, session_ids=None, hidden_mask: torch.Tensor | None = None,
                mask_mode: str = "none", causal: bool | None = None, tables: SessionTables | None = None,
                output_attentions: bool | None = None, output_hidden_states: bool | None = None,
                return_dict: bool | None = None, **kwargs) -> NfmModelOutput:
        if spikes.dim() != 3:
            raise ValueError(f"spikes must be (B, T, N), got shape {tuple(spikes.shape)}")
        B, T, N = spikes.shape
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = (self.config.output_hidden_states if output_hidden_states is None
                                else output_hidden_states)
        if mask_mode not in PROMPTS:
            raise ValueError(f"mask_mode {mask_mode!r} is not one of {PROMPTS}")
        if causal is None:
            causal = mask_mode in CAUSAL_MODES or mask_mode == "generate"
        if tables is None:
            tables = self.session_tables(_as_session_list(session_ids, B), unit_mask, unit_region, device=spikes.device)
        x = self.transform_input(spikes.float())
        if tables.input_mean is not None:
            x = (x - tables.input_mean.float().unsqueeze(1)) * tables.input_scale.float().unsqueeze(1)
        x = x.to(self.region_embed.weight.dtype) * tables.unit_mask.unsqueeze(1)
        if hidden_mask is not None:
            if hidden_mask.shape != spikes.shape:
                raise ValueError(f"hidden_mask shape {tuple(hidden_mask.shape)} != spikes shape {tuple(spikes.shape)}")
            x = x.masked_fill(hidden_mask, 0.0)
        z = torch.einsum("btn,bnh->bth", x, tables.unit_embed.to(x.dtype))
        if hidden_mask is not None:
            mask_rows = self.region_mask_embed(tables.unit_region) * tables.unit_mask.unsqueeze(-1)
            z = z + torch.einsum("btn,bnh->bth", hidden_mask.to(z.dtype), mask_rows.to(z.dtype))
        bins = self.readin_fc2(F.gelu(self.readin_fc1(self.readin_norm(z))))
        prompt = self.prompt_embed.weight[PROMPTS.index(mask_mode)].expand(B, -1)
        h = torch.cat([tables.token.unsqueeze(1).to(bins.dtype), prompt.unsqueeze(1).to(bins.dtype), bins], dim=1)
        h = self.dropout(h)
        cos, sin = rope_cos_sin(N_PREFIX + T, self.config.hidden_size // self.config.num_attention_heads,
                                self.config.rope_theta, h.device)
        all_h, all_a = [], []
        for layer in self.layers:
            if output_hidden_states:
                all_h.append(h)
            h, w = layer(h, cos, sin, is_causal=causal, output_attentions=output_attentions)
            if output_attentions:
                all_a.append(w)
        h = self.norm(h)
        if output_hidden_states:
            all_h.append(h)
        out = NfmModelOutput(last_hidden_state=h, bin_states=h[:, N_PREFIX:],
                             hidden_states=tuple(all_h) if output_hidden_states else None,
                             attentions=tuple(all_a) if output_attentions else None)
        return out if return_dict is not False else out.to_tuple()

    def readout(self, bin_states: torch.Tensor, tables: SessionTables) -> torch.Tensor:
        """(B, T, H) states -> (B, T, N) log-rates (Poisson) or means (Gaussian); padding units get 0."""
        pred = torch.einsum("bth,bnh->btn", bin_states, tables.readout.to(bin_states.dtype))
        pred = pred + tables.readout_bias.to(pred.dtype).unsqueeze(1)
        return pred * tables.unit_mask.unsqueeze(1)


# --------------------------------------------------------------------------- likelihoods
def masked_nll(config: NfmConfig, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
               tables: SessionTables):
    """Negative log-likelihood averaged over the True entries of ``mask`` (B, T, N).

    Poisson (``pred`` = log-rate): full NLL ``exp(l) - y l + log y!`` with l clamped to +-max_log_rate.
    Gaussian (``pred`` = mean): ``0.5 (log 2 pi + log var + (y - mean)^2 / var)``.
    Returns (loss scalar float32, log_variances (B, N) or None).
    """
    pred = pred.float()
    y = target.float()
    m = mask.float()
    denom = m.sum().clamp_min(1.0)
    if config.likelihood == "poisson":
        lr = pred.clamp(-config.max_log_rate, config.max_log_rate)
        nll = torch.exp(lr) - y * lr + torch.lgamma(y.clamp_min(0) + 1.0)
        return (nll * m).sum() / denom, None
    if tables.log_var is not None:
        log_var = tables.log_var.float().clamp(-10.0, 10.0)
    else:
        log_var = torch.full_like(tables.readout_bias, math.log(config.gaussian_fixed_variance)).float()
    lv = log_var.unsqueeze(1)
    nll = 0.5 * (math.log(2 * math.pi) + lv + (y - pred) ** 2 * torch.exp(-lv))
    return (nll * m).sum() / denom, log_var


def _masked_modeling(backbone: NfmModel, config: NfmConfig, spikes, unit_mask, unit_region, session_ids,
                     mask_mode=None, mask: MaskSample | torch.Tensor | None = None, hidden_mask=None,
                     generator=None, output_attentions=None, output_hidden_states=None,
                     valid_mask=None) -> NfmMaskedModelingOutput:
    B, T, N = spikes.shape
    session_ids = _as_session_list(session_ids, B)
    tables = backbone.session_tables(session_ids, unit_mask, unit_region, device=spikes.device)
    if isinstance(mask, MaskSample):
        sample = mask
    elif mask is not None:
        mode = mask_mode or "neuron"
        hidden = mask if hidden_mask is None else hidden_mask
        sample = MaskSample(mask.bool() & tables.unit_mask.unsqueeze(1), hidden.bool() & tables.unit_mask.unsqueeze(1),
                            mode, causal=mode in CAUSAL_MODES)
    else:
        if mask_mode is None:
            modes = config.active_mask_modes
            pick = torch.randint(len(modes), (1,), generator=generator, device=generator.device if generator else None)
            mask_mode = modes[int(pick)]
        sample = sample_mask(mask_mode, tables.unit_mask, tables.unit_region, T, config, generator)
    if valid_mask is not None:  # 2-photon bad frames: never scored, always hidden (their 0 is not a value)
        invalid = ~valid_mask.bool() & tables.unit_mask.unsqueeze(1)
        sample = MaskSample(sample.target & ~invalid, sample.hidden | invalid, sample.mode, sample.causal)
    out = backbone(spikes, session_ids=session_ids, hidden_mask=sample.hidden, mask_mode=sample.mode,
                   causal=sample.causal, tables=tables, output_attentions=output_attentions,
                   output_hidden_states=output_hidden_states)
    pred = backbone.readout(out.bin_states, tables)
    loss, log_var = masked_nll(config, pred, spikes, sample.target, tables)
    poisson = config.likelihood == "poisson"
    return NfmMaskedModelingOutput(
        loss=loss, log_rates=pred if poisson else None, means=None if poisson else pred, log_variances=log_var,
        mask=sample.target, hidden_mask=sample.hidden,
        mask_mode_id=torch.full((B,), PROMPTS.index(sample.mode), dtype=torch.long, device=spikes.device),
        last_hidden_state=out.last_hidden_state, hidden_states=out.hidden_states, attentions=out.attentions)


# --------------------------------------------------------------------------- event decoder
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
        self.dt_embed = nn.Embedding(self.n_dt + 3, H)  # dt classes, EOS, SOS, PAD
        self.unit_proj = nn.Linear(H, H)
        self.next_dt_embed = nn.Embedding(self.n_dt, H)
        self.memory_type = nn.Embedding(4, H)
        self.memory_offset = nn.Embedding(self.past_bins + self.window_bins, H)
        self.past_event_time = (nn.Embedding(self.past_windows * self.n_dt, H) if self.past_windows else None)
        self.memory_norm = nn.LayerNorm(H, eps=eps)
        in_dim = config.stimulus_dim + 2 * config.behavior_dim
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
    def modality_tokens(self, stimulus, behavior, B: int, T: int, device) -> torch.Tensor | None:
        """Stimulus (B, T, D) and behaviour (B, T, K; NaN = missing) -> (B, T, H) tokens, or None if D = K = 0."""
        if not self.has_modality:
            return None
        cfg = self.config
        parts = []
        if cfg.stimulus_dim:
            stim = torch.zeros(B, T, cfg.stimulus_dim, device=device) if stimulus is None else stimulus.float()
            if stim.shape != (B, T, cfg.stimulus_dim):
                raise ValueError(f"stimulus shape {tuple(stim.shape)} != (B, T, D) = {(B, T, cfg.stimulus_dim)} "
                                 f"(config.stimulus_names={cfg.stimulus_names})")
            parts.append(torch.nan_to_num(stim, nan=0.0))
        if cfg.behavior_dim:
            beh = (torch.full((B, T, cfg.behavior_dim), float("nan"), device=device) if behavior is None
                   else behavior.float())
            if beh.shape != (B, T, cfg.behavior_dim):
                raise ValueError(f"behavior shape {tuple(beh.shape)} != (B, T, K) = {(B, T, cfg.behavior_dim)} "
                                 f"(config.behavior_names={cfg.behavior_names})")
            missing = torch.isnan(beh)
            parts += [torch.nan_to_num(beh, nan=0.0), missing.float()]
        x = torch.cat(parts, -1).to(self.modality_fc1.weight.dtype)
        return self.modality_norm(self.modality_fc2(F.gelu(self.modality_fc1(x))))

    def unit_tokens(self, tables: SessionTables) -> torch.Tensor:
        """(B, N, H) decoder token embedding of every unit of each trial's session."""
        return self.unit_proj(tables.unit_embed)

    def build_memory(self, last_hidden, mod_tokens, tokens: EventTokens, unit_tok, windows: torch.Tensor):
        """Cross-attention memory of the windows ``windows`` (Kw,) -> (memory (B, Kw, M, H), mask, units).

        ``units`` (B, Kw, M) is the unit of each past-event slot (-1 for other slots).
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
            masks.append((idx >= 0).unsqueeze(0).expand(B, -1, -1))
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
        logits = self.dt_head(states).float()
        cur = torch.where(cur_dts < self.n_dt, cur_dts, torch.zeros_like(cur_dts))
        allowed = torch.arange(self.n_dt + 1, device=states.device) >= cur.unsqueeze(-1)
        return logits.masked_fill(~allowed, float("-inf"))

    def id_logits(self, states, next_dts, cur_units, cur_dts, tables: SessionTables):
        """Unit-id logits (B, Kw, L, N) = (W (state + e_dt)) . e_u / sqrt(H) + bias_u; padding units and units
        breaking the canonical order (same dt class, lower unit) are -inf."""
        B = states.shape[0]
        q = self.id_query(states + self.next_dt_embed(next_dts.clamp(0, self.n_dt - 1)))
        keys = tables.unit_embed.to(q.dtype)
        logits = torch.einsum("bkqh,bnh->bkqn", q, keys).float() / math.sqrt(q.shape[-1])
        logits = logits + tables.id_bias.float().view(B, 1, 1, -1)
        same = (cur_dts < self.n_dt) & (next_dts == cur_dts) & (cur_units >= 0)
        floor = torch.where(same, cur_units, torch.zeros_like(cur_units))
        N = keys.shape[1]
        allowed = (torch.arange(N, device=states.device) >= floor.unsqueeze(-1)) & \
            tables.unit_mask.view(B, 1, 1, N)
        return logits.masked_fill(~allowed, float("-inf"))

    def contrastive_loss(self, bin_states, mod_tokens):
        """Symmetric InfoNCE between per-window pooled backbone states and pooled modality tokens (B*K pairs)."""
        B, T, H = bin_states.shape
        w = self.window_bins
        K = T // w
        neural = bin_states[:, :K * w].reshape(B, K, w, H).mean(2).reshape(B * K, H)
        modal = mod_tokens[:, :K * w].reshape(B, K, w, H).mean(2).reshape(B * K, H)
        zn = F.normalize(self.contrast_neural(neural).float(), dim=-1)
        zm = F.normalize(self.contrast_modality(modal.to(neural.dtype)).float(), dim=-1)
        logits = zn @ zm.T / self.config.contrastive_temperature
        labels = torch.arange(B * K, device=logits.device)
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


def _generation(backbone: NfmModel, decoder: NfmEventDecoder, config: NfmConfig, spikes, unit_mask, unit_region,
                session_ids, event_times, event_units, event_mask, stimulus, behavior,
                output_attentions=False) -> NfmSpikeGenerationOutput:
    B, T, N = spikes.shape
    w = config.window_bins
    if T % w:
        raise ValueError(f"trial length T={T} bins is not a multiple of the generation window "
                         f"({config.gen_window} s = {w} bins); change config.gen_window")
    K = T // w
    session_ids = _as_session_list(session_ids, B)
    tables = backbone.session_tables(session_ids, unit_mask, unit_region, device=spikes.device)
    event_mask = _check_events(event_times, event_units, event_mask, tables)
    out = backbone(spikes, session_ids=session_ids, mask_mode="generate", tables=tables,
                   output_attentions=output_attentions)
    tokens = tokenize_events(event_times, event_units, event_mask, window_s=config.gen_window, n_windows=K,
                             dt_resolution=config.dt_resolution)
    mod = decoder.modality_tokens(stimulus, behavior, B, T, spikes.device)
    unit_tok = decoder.unit_tokens(tables)
    windows = torch.arange(K, device=spikes.device)
    n_step = config.gen_windows_per_step
    if decoder.training and 0 < n_step < K:  # train on a random subset of windows (same for the whole batch)
        windows = torch.randperm(K, device=spikes.device)[:n_step].sort().values
    Kw = windows.shape[0]
    memory, mem_mask, mem_units = decoder.build_memory(out.last_hidden_state, mod, tokens, unit_tok, windows)
    units_w, dts_w, mask_w = tokens.units[:, windows], tokens.dts[:, windows], tokens.mask[:, windows]
    S = int(mask_w.sum(-1).max())  # longest sequence among the chosen windows (SOS ... EOS)
    in_u, in_dt = units_w[..., :S - 1], dts_w[..., :S - 1]
    tg_u, tg_dt, tg_m = units_w[..., 1:S], dts_w[..., 1:S], mask_w[..., 1:S]
    x = decoder.embed_tokens(in_u, in_dt, unit_tok)
    H = x.shape[-1]
    M = memory.shape[2]
    states, _, self_w, cross_w = decoder.run(x.reshape(B * Kw, S - 1, H), memory.reshape(B * Kw, M, H),
                                             mem_mask.reshape(B * Kw, M), output_attentions=output_attentions)
    states = states.view(B, Kw, S - 1, H)
    dt_logits = decoder.dt_logits(states, in_dt)
    id_logits = decoder.id_logits(states, tg_dt, in_u, in_dt, tables)
    n_dt = decoder.n_dt
    dt_target = torch.where(tg_m, tg_dt.clamp_max(n_dt), torch.full_like(tg_dt, -100))  # EOS -> n_dt
    dt_loss = F.cross_entropy(dt_logits.reshape(-1, n_dt + 1), dt_target.reshape(-1), ignore_index=-100)
    is_event = tg_m & (tg_dt < n_dt)
    if bool(is_event.any()):
        id_loss = F.cross_entropy(id_logits[is_event], tg_u[is_event])
    else:
        id_loss = id_logits.sum() * 0.0
    contrastive = None
    if mod is not None and config.contrastive_weight > 0:
        contrastive = decoder.contrastive_loss(out.bin_states, mod)
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
    """(B, C) float logits (-inf = forbidden) -> (B,) long."""
    if not do_sample:
        return logits.argmax(-1)
    logits = logits / max(float(temperature), 1e-6)
    if top_k is not None and top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, int(top_k), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs > top_p  # keep the smallest prefix reaching top_p (always >= 1)
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


class NfmSpikeSampling:
    """``generate()`` and ``generation_outputs()`` for models that own ``self.nfm`` (backbone) and
    ``self.decoder`` (event decoder)."""

    def generation_outputs(self, spikes, unit_mask=None, unit_region=None, session_ids=None, event_times=None,
                           event_units=None, event_mask=None, stimulus=None, behavior=None,
                           output_attentions: bool = False, **kwargs) -> NfmSpikeGenerationOutput:
        """Teacher-forced event-decoder outputs (losses, logits and, with ``output_attentions``, the attention
        maps for :meth:`NfmForSpikeGeneration.unit_attention`) of any model with an event decoder."""
        if getattr(self, "decoder", None) is None:
            raise ValueError("this model has no event decoder ('generation' not in config.objectives)")
        return _generation(self.nfm, self.decoder, self.config, spikes, unit_mask, unit_region, session_ids,
                           event_times, event_units, event_mask, stimulus, behavior, output_attentions)

    @torch.no_grad()
    def generate(self, spikes: torch.Tensor, unit_mask=None, unit_region=None, session_ids=None, event_times=None,
                 event_units=None, event_mask=None, stimulus=None, behavior=None, start_window: int = 0,
                 n_windows: int | None = None, max_events: int | None = None, min_events: int = 0,
                 do_sample: bool = True, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, use_cache: bool = True, generator: torch.Generator | None = None,
                 **kwargs) -> NfmGenerationOutput:
        """Generate spike events window by window, closed loop.

        The bins before ``start_window`` (and their events) are the given past; windows ``start_window ..
        start_window + n_windows - 1`` are generated one after the other: for each, the backbone re-reads the
        spike tensor in which earlier generated windows have replaced the data, so generated spikes are the past
        state of the next window.  Sampling: ``do_sample=False`` is greedy; else temperature / top-k / top-p.
        ``max_events`` (default ``config.gen_max_events``) caps the events of one window (then EOS is forced);
        ``min_events`` forbids EOS before that many events.  ``use_cache=False`` recomputes the whole prefix at
        every step (the reference the KV cache must match).
        """
        cfg = self.config
        backbone, decoder = self.nfm, self.decoder
        B, T, N = spikes.shape
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
        mod = decoder.modality_tokens(stimulus, behavior, B, T, dev)
        unit_tok = decoder.unit_tokens(tables)
        n_dt = decoder.n_dt
        EOS, SOS, PAD = special_ids(n_dt)
        all_u, all_dt, all_n = [], [], []
        for k in range(start_window, start_window + n_windows):
            out = backbone(spikes, session_ids=session_ids, mask_mode="generate", tables=tables)
            tokens = tokenize_events(past_t, past_u, past_m, window_s=cfg.gen_window, n_windows=K,
                                     dt_resolution=cfg.dt_resolution)
            win = torch.tensor([k], device=dev)
            memory, mem_mask, _ = decoder.build_memory(out.last_hidden_state, mod, tokens, unit_tok, win)
            memory, mem_mask = memory[:, 0], mem_mask[:, 0]
            units, dts = self._decode_window(decoder, memory, mem_mask, unit_tok, tables, max_events, min_events,
                                             do_sample, temperature, top_k, top_p, use_cache, generator)
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
        finished trials are padded (unit -1, dt PAD); EOS is not included."""
        B = memory.shape[0]
        dev = memory.device
        n_dt = decoder.n_dt
        EOS, SOS, PAD = special_ids(n_dt)
        seq_u = torch.full((B, max_events + 2), NO_UNIT, dtype=torch.long, device=dev)
        seq_dt = torch.full((B, max_events + 2), PAD, dtype=torch.long, device=dev)
        seq_dt[:, 0] = SOS
        finished = torch.zeros(B, dtype=torch.bool, device=dev)
        cache = ([{"self": StaticKVCache(max_events + 1), "cross": None} for _ in decoder.layers]
                 if use_cache else None)
        cos, sin = decoder.rope(max_events + 1, dev)
        length = 1
        for step in range(max_events + 1):
            if use_cache:
                x = decoder.embed_tokens(seq_u[:, step:step + 1], seq_dt[:, step:step + 1], unit_tok)
                states, cache, _, _ = decoder.run(x, memory, mem_mask, cache=cache, use_cache=True,
                                                  rope=(cos[step:step + 1], sin[step:step + 1]))
            else:
                x = decoder.embed_tokens(seq_u[:, :step + 1], seq_dt[:, :step + 1], unit_tok)
                states, _, _, _ = decoder.run(x, memory, mem_mask)
            state = states[:, -1]
            cur_u, cur_dt = seq_u[:, step], seq_dt[:, step]
            dt_logits = decoder.dt_logits(state, cur_dt)
            if step < min_events:
                dt_logits[:, EOS] = float("-inf")
            if step == max_events:
                dt_logits[:, :EOS] = float("-inf")
                dt_logits[:, EOS] = 0.0
            nxt_dt = _sample(dt_logits, do_sample, temperature, top_k, top_p, generator)
            id_logits = decoder.id_logits(state[:, None, None], nxt_dt[:, None, None], cur_u[:, None, None],
                                          cur_dt[:, None, None], tables)[:, 0, 0]
            nxt_u = _sample(id_logits, do_sample, temperature, top_k, top_p, generator)
            done = finished | (nxt_dt == EOS)
            nxt_u = torch.where(done, torch.full_like(nxt_u, NO_UNIT), nxt_u)
            nxt_dt = torch.where(done, torch.full_like(nxt_dt, PAD), nxt_dt)
            finished = done
            if bool(finished.all()):
                break
            seq_u[:, step + 1] = nxt_u
            seq_dt[:, step + 1] = nxt_dt
            length = step + 2
        return seq_u[:, 1:length], seq_dt[:, 1:length]


# --------------------------------------------------------------------------- heads
class NfmForMaskedModeling(NfmPreTrainedModel):
    """MtM: one mask mode per batch (sampled from ``config.mask_modes`` unless ``mask_mode`` is given), its
    prompt token fed, masked entries predicted; loss averaged over the target entries.

    ``mask`` may be a :class:`~nfm.models.masking.MaskSample` or a (B, T, N) bool target tensor (with
    ``hidden_mask`` for the input entries to zero, default = ``mask``, and ``mask_mode`` naming the prompt,
    default ``"neuron"``) for evaluation masks.  ``valid_mask`` (B, T, N) bool (2-photon bad frames = False):
    invalid entries are never scored and always hidden.
    """

    def __init__(self, config: NfmConfig):
        super().__init__(config)
        self.nfm = NfmModel(config)
        self.post_init()

    def forward(self, spikes, unit_mask=None, unit_region=None, session_ids=None, mask_mode: str | None = None,
                mask=None, hidden_mask=None, valid_mask=None, generator: torch.Generator | None = None,
                output_attentions=None, output_hidden_states=None, return_dict=None,
                return_loss: bool = True, **kwargs) -> NfmMaskedModelingOutput:
        out = _masked_modeling(self.nfm, self.config, spikes, unit_mask, unit_region, session_ids, mask_mode, mask,
                               hidden_mask, generator, output_attentions, output_hidden_states, valid_mask)
        return out if return_dict is not False else out.to_tuple()


class NfmForSpikeGeneration(NfmSpikeSampling, NfmPreTrainedModel):
    """Neuroformer-style event generation on the nfm backbone (see the module docstring)."""

    def __init__(self, config: NfmConfig):
        super().__init__(config)
        self.nfm = NfmModel(config)
        self.decoder = NfmEventDecoder(config)
        self.post_init()

    def forward(self, spikes, unit_mask=None, unit_region=None, session_ids=None, event_times=None,
                event_units=None, event_mask=None, stimulus=None, behavior=None, output_attentions=None,
                return_dict=None, return_loss: bool = True, **kwargs) -> NfmSpikeGenerationOutput:
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        out = _generation(self.nfm, self.decoder, self.config, spikes, unit_mask, unit_region, session_ids,
                          event_times, event_units, event_mask, stimulus, behavior, output_attentions)
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

    ``forward(..., objectives=[...])`` runs a subset of the model's objectives for one call (e.g. only
    ``["mtm"]`` to score masked predictions without the generation pass); default: ``config.objectives``.
    """

    def __init__(self, config: NfmConfig):
        super().__init__(config)
        self.nfm = NfmModel(config)
        self.decoder = NfmEventDecoder(config) if "generation" in config.objectives else None
        self.post_init()

    def forward(self, spikes, unit_mask=None, unit_region=None, session_ids=None, event_times=None,
                event_units=None, event_mask=None, stimulus=None, behavior=None, mask_mode: str | None = None,
                mask=None, hidden_mask=None, valid_mask=None, generator: torch.Generator | None = None,
                objectives=None, return_dict=None, return_loss: bool = True, **kwargs) -> NfmPretrainingOutput:
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
            m = _masked_modeling(self.nfm, cfg, spikes, unit_mask, unit_region, session_ids, mask_mode, mask,
                                 hidden_mask, generator, valid_mask=valid_mask)
            loss = loss + cfg.mtm_weight * m.loss
            out.mtm_loss, out.log_rates, out.means, out.mask, out.mask_mode_id = (
                m.loss, m.log_rates, m.means, m.mask, m.mask_mode_id)
        if "generation" in objectives:
            g = _generation(self.nfm, self.decoder, cfg, spikes, unit_mask, unit_region, session_ids, event_times,
                            event_units, event_mask, stimulus, behavior)
            loss = loss + g.loss
            out.id_loss, out.dt_loss, out.contrastive_loss, out.dt_logits, out.id_logits = (
                g.id_loss, g.dt_loss, g.contrastive_loss, g.dt_logits, g.id_logits)
        out.loss = loss
        return out if return_dict is not False else out.to_tuple()

    def generate(self, *args, **kwargs):
        if self.decoder is None:
            raise ValueError("this model was built without the 'generation' objective (config.objectives)")
        return super().generate(*args, **kwargs)


def _label_key(name: str) -> str:
    return "l_" + re.sub(r"[^0-9A-Za-z_]", "_", name)


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
        H = config.hidden_size
        self.behavior_head = nn.Linear(H, config.behavior_dim) if config.behavior_dim else None
        self.trial_heads = nn.ModuleDict({
            _label_key(n): nn.Linear(H, len(config.trial_label_classes.get(n, [])) or 1)
            for n in config.trial_label_names})
        self.post_init()

    def freeze_backbone(self, frozen: bool = True) -> None:
        self.nfm.requires_grad_(not frozen)

    def forward(self, spikes, unit_mask=None, unit_region=None, session_ids=None, behavior=None,
                trial_labels=None, valid_mask=None, output_attentions=None, return_dict=None,
                return_loss: bool = True, **kwargs) -> NfmBehaviorDecodingOutput:
        cfg = self.config
        hidden = None
        if valid_mask is not None:  # 2-photon bad frames are marked as missing, not fed as zeros
            hidden = ~valid_mask.bool()
            if unit_mask is not None:
                hidden = hidden & unit_mask.bool().unsqueeze(1)
        out = self.nfm(spikes, unit_mask=unit_mask, unit_region=unit_region, session_ids=session_ids,
                       hidden_mask=hidden, mask_mode="none", output_attentions=output_attentions)
        h = out.bin_states
        losses = []
        beh_pred = beh_loss = trial_loss = None
        if self.behavior_head is not None:
            beh_pred = self.behavior_head(h).float()
            if behavior is not None:
                ok = ~torch.isnan(behavior)
                if bool(ok.any()):
                    beh_loss = ((beh_pred - torch.nan_to_num(behavior.float())) ** 2)[ok].mean()
                    losses.append(cfg.behavior_loss_weight * beh_loss)
        pooled = h.mean(1)
        trial_logits, per_label = {}, []
        for i, name in enumerate(cfg.trial_label_names):
            head = self.trial_heads[_label_key(name)]
            logits = head(pooled).float()
            classes = cfg.trial_label_classes.get(name)
            trial_logits[name] = logits if classes else logits[:, 0]
            if trial_labels is None:
                continue
            y = trial_labels[:, i].float()
            ok = ~torch.isnan(y)
            if not bool(ok.any()):
                continue
            if classes:
                cls = torch.tensor(classes, dtype=torch.float32, device=y.device)
                match = (y[ok].unsqueeze(1) - cls).abs() < 1e-6
                if not bool(match.any(1).all()):
                    bad = y[ok][~match.any(1)][0]
                    raise ValueError(f"trial label {name!r} has value {float(bad)!r}, not one of its classes "
                                     f"{classes} (config.trial_label_classes)")
                per_label.append(F.cross_entropy(logits[ok], match.float().argmax(1)))
            else:
                per_label.append(F.mse_loss(logits[ok, 0], y[ok]))
        if per_label:
            trial_loss = torch.stack(per_label).mean()
            losses.append(cfg.trial_loss_weight * trial_loss)
        loss = torch.stack(losses).sum() if losses else None
        res = NfmBehaviorDecodingOutput(loss=loss, behavior_loss=beh_loss, trial_loss=trial_loss,
                                        behavior_predictions=beh_pred, trial_logits=trial_logits,
                                        last_hidden_state=out.last_hidden_state)
        return res if return_dict is not False else res.to_tuple()


__all__ = [
    "NfmPreTrainedModel", "NfmModel", "NfmForMaskedModeling", "NfmForSpikeGeneration", "NfmForPretraining",
    "NfmForBehaviorDecoding", "NfmModelOutput", "NfmMaskedModelingOutput", "NfmSpikeGenerationOutput",
    "NfmPretrainingOutput", "NfmBehaviorDecodingOutput", "NfmGenerationOutput", "NfmSessionParameters",
    "NfmEventDecoder", "session_key", "masked_nll",
]
