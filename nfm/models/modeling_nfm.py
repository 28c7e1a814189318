"""The nfm model family, transformers-style: backbone, masked modelling (MtM) and behaviour decoding.

Read top-down: outputs, building blocks (attention with RoPE and a KV cache, MLP, pre-LN layers), per-session
parameters, the backbone :class:`NfmModel` with its one masked-prediction method, then the heads.  The
Neuroformer-style event decoder and spike generation (:class:`NfmForSpikeGeneration`, and
:class:`NfmForPretraining` with both objectives) are in :mod:`nfm.models.modeling_nfm_generation`.

Classes
-------
* :class:`NfmModel` -- the backbone.  One token per time bin (NDT1/MtM style) plus a session token and a prompt
  token, RoPE, pre-LN transformer on ``F.scaled_dot_product_attention``.
* :class:`NfmForMaskedModeling` -- MtM multi-task masking (Poisson NLL on log-rates for spike counts, Gaussian
  NLL for 2-photon activity), loss averaged over the masked entries.
* :class:`~nfm.models.modeling_nfm_behavior.NfmForBehaviorDecoding` (in its own file) -- per-bin regression and
  trial-label heads.

Read-in / read-out for any neuron count
---------------------------------------
Each session owns a small :class:`NfmSessionParameters` (keyed by a sanitised session id, never by its unit
count): per-unit input embeddings ``(N_s, H)``, per-unit read-out rows ``(N_s, H)`` and biases, a per-unit
id-logit bias, a session token and (Gaussian likelihood) per-unit log-variances.  Brain-region embeddings are
shared across sessions and animals and are added to the per-unit rows, so a unit's input row is
``e_u = unit_embed[u] + region_embed[region(u)]``.

* Read-in of bin t: ``z_t = sum_u x_tu e_u + sum_u hidden_tu m_region(u)`` (``x`` = standardised, transformed
  counts with hidden entries zeroed, ``m`` = shared per-region mask embeddings), then LayerNorm -> Linear ->
  GELU -> Linear.
* Read-out: ``pred_tu = LN(h_t) . (readout[u] + region_readout[region(u)]) + bias_u`` (a Poisson log-rate per
  bin or a Gaussian mean).

Masked prediction lives in one place: :meth:`NfmModel.predict_masked` (input hiding, prompt, causal attention,
read-out, variance).  The training loss (:func:`masked_nll`), the evaluation runner and the training-end
summary all go through it.

Prompts
-------
The prompt token tells the backbone what it is asked: a mask mode (``neuron``, ``causal``, ``temporal``,
``intra_region``, ``inter_region``, ``random_token``), ``none`` (nothing masked, bidirectional: embeddings and
behaviour decoding) or ``generate`` (nothing masked, causal: the past state of the event decoder).  See
:data:`nfm.models.configuration_nfm.PROMPTS`.
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

from .configuration_nfm import PROMPTS, NfmConfig
from .masking import CAUSAL_MODES, MaskSample, sample_mask
from .mixed_precision import full_precision
from .modeling_outputs import NfmMaskedModelingOutput, NfmMaskedPrediction, NfmModelOutput
from .positions import N_PREFIX, StaticKVCache, apply_rope, rope_cos_sin, time_positions

#: per-unit Gaussian log-variances are clamped to this range [log units^2]
LOG_VAR_RANGE = (-10.0, 10.0)


_SESSION_KEYS: dict[str, str] = {}


def session_key(session_id: str) -> str:
    """ModuleDict key of a session: sanitised id + 8 hex digits of its sha1 (injective in practice).  Memoised:
    models fill the memo when they create a session, so ``torch.compile`` reads a dict instead of tracing sha1."""
    session_id = str(session_id)
    key = _SESSION_KEYS.get(session_id)
    if key is None:
        clean = re.sub(r"[^0-9A-Za-z_]", "_", session_id)[:48]
        key = _SESSION_KEYS[session_id] = f"s_{clean}_{hashlib.sha1(session_id.encode()).hexdigest()[:8]}"
    return key


# outputs (NfmModelOutput, NfmMaskedPrediction, NfmMaskedModelingOutput): nfm/models/modeling_outputs.py


# --------------------------------------------------------------------------- building blocks
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
            with full_precision(q):  # the maps (connectivity inference) in float32, also under autocast
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
    input_mean / input_scale (B, N) read-in standardisation (padding: 0 / 0); modality: the batch's modality
    and grid: its ``(window [s], bin_size [s], n_bins)`` (every session of a batch has the same ones).
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
    modality: str = "spikes"
    grid: tuple | None = None


# --------------------------------------------------------------------------- base class
class NfmPreTrainedModel(PreTrainedModel):
    config_class = NfmConfig
    base_model_prefix = "nfm"
    main_input_name = "spikes"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["NfmEncoderLayer", "NfmDecoderLayer"]
    # heads another nfm class trained (a pretraining checkpoint loaded as a backbone or an MtM model): not
    # used here, so not reported as unexpected weights
    _keys_to_ignore_on_load_unexpected = [r"^decoder\.", r"^behavior_head\."]

    def save_pretrained(self, save_directory, *args, **kwargs):
        """``PreTrainedModel.save_pretrained``, then the process umask for the files it made private
        (safetensors writes ``model.safetensors`` with mode 0600; see :mod:`nfm.files`)."""
        out = super().save_pretrained(save_directory, *args, **kwargs)
        from nfm.files import apply_umask

        apply_umask(save_directory)
        return out

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
            if isinstance(module, NfmModel) and module.bin_duration is not None:
                init.zeros_(module.bin_duration)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """transformers' ``from_pretrained`` restricted to safetensors weights (nothing on the load path
        unpickles; a checkpoint with only ``pytorch_model.bin`` is refused)."""
        if kwargs.get("use_safetensors") is False:
            raise ValueError("nfm models load safetensors weights only (use_safetensors=False is not supported)")
        kwargs["use_safetensors"] = True
        return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)

    def add_session(self, session_id: str, n_units: int, regions=None, **kwargs) -> torch.Tensor:
        """Add a new session (animal/recording; ``modality``, ``grid``, ``frame_bins`` keywords): see
        :meth:`NfmModel.add_session`."""
        return self.base_model.add_session(session_id, n_units, regions, **kwargs)

    def predict_masked(self, spikes: torch.Tensor, **kwargs) -> NfmMaskedPrediction:
        """Masked prediction of the backbone: see :meth:`NfmModel.predict_masked`."""
        return self.base_model.predict_masked(spikes, **kwargs)

    def validate(self, spikes: torch.Tensor, **batch) -> None:
        """Eager checks of a batch (see :meth:`NfmModel.validate`); for use outside a ``torch.compile`` region."""
        return self.base_model.validate(spikes, **batch)

    def get_input_embeddings(self):
        """None: the read-in is per-session unit rows, not a token table.  (transformers' default raises, and
        Accelerate's FSDP2 wrapping asks every model for its input embeddings.)"""
        return None

    def get_output_embeddings(self):
        return None

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
        logits start at each unit's share of the spikes).  Gaussian: ``readout_bias = mean``.  The likelihood is the
        session's (``config.likelihood_of(config.modality_of(session_id))``).
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
        if self.config.likelihood_of(self.config.modality_of(session_id)) == "poisson":
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


def _fsdp2_sharded(model: nn.Module) -> bool:
    """Whether PyTorch FSDP2 (``fully_shard``, e.g. through Accelerate) wraps ``model``'s layers."""
    if not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return False
    from torch.distributed.fsdp import FSDPModule

    return any(isinstance(m, FSDPModule) for m in (model, *getattr(model, "layers", ())))


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

    Forward (keyword-only after ``spikes``):
        spikes: (B, T, N) float counts per bin (or binned 2-photon activity); T must be the ``n_bins`` of the
            sessions' time grid (``config.grid_of``: the primary ``config.n_bins`` unless a session has its own
            ``session_grid``).  Every session of a batch shares one modality and one grid.
        unit_mask: (B, N) bool real units (default: the first n_units of each trial's session).
        unit_region: (B, N) long index into ``config.region_vocab`` (default 0 = unknown).
        session_ids: list of B session id strings.
        hidden_mask: (B, T, N) bool entries hidden from the input (masked modelling).
        prompt: prompt token, one of :data:`PROMPTS` (default ``"none"``).
        causal: causal attention (default: True for the ``causal`` and ``generate`` prompts).
        bin_size: [s] bin size of the batch (the collator's); a value other than the sessions' raises.
        valid_mask: (B, T, N) bool, False = missing entry (2-photon bad frames): hidden from the input.
        The other keys of a collator batch (``event_*``, ``behavior``, ``stimulus``, ``trial_labels``,
        ``trial_id``) are accepted and ignored, so ``backbone(**batch)`` works.
    """

    def __init__(self, config: NfmConfig):
        super().__init__(config)
        H, R = config.hidden_size, len(config.region_vocab)
        self.sessions = nn.ModuleDict({session_key(s): NfmSessionParameters(n, H, self._learns_variance(s))
                                       for s, n in config.session_n_units.items()})
        # continuous-time positions: every bin token carries its duration, log(bin_size / unit) * bin_duration
        self.bin_duration = nn.Parameter(torch.zeros(H)) if config.rope_time_unit is not None else None
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
        # window-level skip (config.level_skip): read-out += level_gain * the unit's mean visible input level
        self.level_gain = nn.Parameter(torch.zeros(1)) if config.level_skip else None
        self.post_init()

    # ---------------------------------------------------------------- sessions
    def _learns_variance(self, session_id: str) -> bool:
        """A session gets a learned per-unit log-variance when its likelihood is Gaussian (2-photon)."""
        cfg = self.config
        return cfg.likelihood_of(cfg.modality_of(session_id)) == "gaussian" and cfg.gaussian_learn_variance

    def session_module(self, session_id: str) -> NfmSessionParameters:
        key = session_key(session_id)
        if key not in self.sessions:
            known = list(self.config.session_n_units)
            raise ValueError(f"session {session_id!r} is not in this model ({len(known)} known, e.g. {known[:3]}); "
                             f"add it with model.add_session({session_id!r}, n_units)")
        return self.sessions[key]

    def add_session(self, session_id: str, n_units: int, regions=None, *, modality: str | None = None,
                    grid=None, frame_bins: int | None = None) -> torch.Tensor:
        """Create the small parameters of a new session; nothing else changes (old outputs stay identical).

        Args:
            session_id: the new session's id string.
            n_units: its number of units (neurons or ROIs).
            regions: optional list of ``n_units`` region acronyms.  Acronyms not in ``config.region_vocab`` are
                appended to it and get new rows in the shared region tables, initialised as copies of the
                ``"unknown"`` row (old rows and outputs unchanged).
            modality: ``"spikes"`` / ``"calcium"`` (default: the primary ``config.modality``); its likelihood
                and read-out follow it.  grid: ``((window_start, window_stop), bin_size)`` [s] of its batches
                (default: the primary grid).  frame_bins: bins per imaging frame of interpolated 2-photon data.
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
        if modality is not None or grid is not None or frame_bins is not None:
            self.config.set_session_info(session_id, modality=modality, grid=grid, frame_bins=frame_bins)
        module = NfmSessionParameters(int(n_units), self.config.hidden_size, self._learns_variance(session_id))
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
        modality = self.config.modality_of(uniq[0])
        other = next((s for s in uniq if self.config.modality_of(s) != modality), None)
        if other is not None:
            raise ValueError(f"a batch holds sessions of one modality: {uniq[0]!r} is {modality} but {other!r} is "
                             f"{self.config.modality_of(other)} (batch sessions of one dataset at a time)")
        for s, m in zip(uniq, mods):
            if m.n_units > N:
                raise ValueError(f"session {s!r} has {m.n_units} units but the batch has only N={N} unit columns")
        n = torch.tensor([m.n_units for m in mods], device=device)[inv]
        if unit_mask is None:
            unit_mask = torch.arange(N, device=device).unsqueeze(0) < n.unsqueeze(1)
        else:
            unit_mask = unit_mask.to(device=device, dtype=torch.bool)
        if unit_region is None:
            unit_region = torch.zeros(B, N, dtype=torch.long, device=device)
        else:
            unit_region = unit_region.to(device=device, dtype=torch.long)
        if not torch.compiler.is_compiling():  # data-dependent checks read values back: outside compiled graphs
            self.check_units(session_ids, unit_mask, unit_region, n)

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
        if _fsdp2_sharded(self):
            # FSDP2 reduce-scatters the gradients its ranks all hold: a session another rank trains this step
            # gets an exact zero gradient here instead of none (DDP's find_unused_parameters does this for DDP)
            token = token + 0.0 * sum(p.sum() for p in self.sessions.parameters() if p.requires_grad)
        log_var = stack("log_var") if mods[0].log_var is not None else None
        return SessionTables(unit_embed, readout, stack("readout_bias"), stack("id_bias"), token, log_var,
                             unit_mask, unit_region, stack("input_mean"), stack("input_scale"), modality,
                             self.batch_grid(uniq))

    # ---------------------------------------------------------------- checks
    def check_units(self, session_ids, unit_mask: torch.Tensor, unit_region: torch.Tensor,
                    n_units: torch.Tensor) -> None:
        """Refuse unit columns marked real beyond a trial's session (``unit_mask`` (B, N) vs ``n_units`` (B,)) and
        region indices outside the vocabulary.  Called by :meth:`session_tables` in eager mode; under
        ``torch.compile`` it is skipped (it reads tensor values back), so call :meth:`validate` on batches
        outside the compiled region."""
        N = unit_mask.shape[1]
        beyond = unit_mask & (torch.arange(N, device=unit_mask.device).unsqueeze(0) >= n_units.unsqueeze(1))
        if bool(beyond.any()):
            b = int(beyond.any(1).nonzero()[0])
            raise ValueError(f"trial {b} (session {session_ids[b]!r}) marks unit columns beyond its "
                             f"{int(n_units[b])} units as real in unit_mask")
        R = self.region_embed.num_embeddings
        if bool(((unit_region < 0) | (unit_region >= R)).any()):
            raise ValueError(f"unit_region values must be in 0..{R - 1} (config.region_vocab), got "
                             f"{int(unit_region.min())}..{int(unit_region.max())}")

    def validate(self, spikes: torch.Tensor, *, session_ids=None, unit_mask=None, unit_region=None,
                 bin_size: float | None = None, **_batch) -> None:
        """Every check of :meth:`forward` on a batch (time grid, known sessions, unit columns, regions), eagerly:
        call it outside a ``torch.compile`` region, which skips the checks that read tensor values."""
        ids = _as_session_list(session_ids, spikes.shape[0])
        self.check_grid(spikes, bin_size, ids)
        N = spikes.shape[2]
        mods = [self.session_module(s) for s in ids]
        n = torch.tensor([m.n_units for m in mods], device=spikes.device)
        um = (torch.arange(N, device=spikes.device).unsqueeze(0) < n.unsqueeze(1) if unit_mask is None
              else unit_mask.to(device=spikes.device, dtype=torch.bool))
        ur = torch.zeros_like(um, dtype=torch.long) if unit_region is None else unit_region.to(spikes.device).long()
        if int(n.max()) > N:
            b = int(n.argmax())
            raise ValueError(f"session {ids[b]!r} has {int(n[b])} units but the batch has only N={N} unit columns")
        self.check_units(ids, um, ur, n)

    def batch_grid(self, session_ids) -> tuple[tuple[float, float], float, int]:
        """``(window, bin_size, n_bins)`` of a batch's sessions (:meth:`NfmConfig.grid_of`); every session of a
        batch must share it.  ``session_ids`` None: the primary grid."""
        cfg = self.config
        if session_ids is None:
            return (float(cfg.window[0]), float(cfg.window[1])), float(cfg.bin_size), int(cfg.n_bins)
        uniq = list(dict.fromkeys([session_ids] if isinstance(session_ids, str) else [str(x) for x in session_ids]))
        grid = cfg.grid_of(uniq[0])
        other = next((s for s in uniq[1:] if cfg.grid_of(s) != grid), None)
        if other is not None:
            raise ValueError(f"a batch holds sessions of one time grid: {uniq[0]!r} has {grid} but {other!r} has "
                             f"{cfg.grid_of(other)} (window [s], bin_size [s], n_bins)")
        return grid

    def check_grid(self, spikes: torch.Tensor, bin_size: float | None = None, session_ids=None,
                   grid: tuple | None = None) -> None:
        """Refuse a batch on another time grid than its sessions' (T != ``n_bins`` or another ``bin_size``; the
        primary grid of the config unless ``session_ids`` (or ``grid``, a :class:`SessionTables` grid) name
        sessions with their own ``session_grid``)."""
        if spikes.dim() != 3:
            raise ValueError(f"spikes must be (B, T, N), got shape {tuple(spikes.shape)}")
        window, size, n_bins = grid if grid is not None else self.batch_grid(session_ids)
        if bin_size is not None and abs(float(bin_size) - size) > 1e-9:
            raise ValueError(f"the batch is binned at {float(bin_size)} s but the model reads these sessions at "
                             f"{size} s bins (config.bin_size / session_grid); build the collator from the model: "
                             "NfmCollator.for_config(meta, model.config)")
        if spikes.shape[1] != n_bins:
            raise ValueError(f"the batch has T={spikes.shape[1]} bins but the model was built for n_bins="
                             f"{n_bins} ({size} s bins over {list(window)} s) for these sessions; build the "
                             "collator from the model: NfmCollator.for_config(meta, model.config)")

    # ---------------------------------------------------------------- forward
    def transform_input(self, spikes: torch.Tensor, modality: str | None = None) -> torch.Tensor:
        """The read-in transform of ``modality`` (default: the primary one): log1p for counts, none for 2-photon
        activity unless the config says otherwise (:meth:`NfmConfig.input_transform_of`)."""
        if self.config.input_transform_of(modality or self.config.modality) == "log1p":
            return torch.sign(spikes) * torch.log1p(spikes.abs())
        return spikes

    def standardized_input(self, spikes: torch.Tensor, tables: SessionTables) -> torch.Tensor:
        """(B, T, N) read-in values: ``(transform(x) - input_mean) * input_scale`` (0 = the unit's mean)."""
        x = self.transform_input(spikes.float(), tables.modality)
        if tables.input_mean is not None:
            x = (x - tables.input_mean.float().unsqueeze(1)) * tables.input_scale.float().unsqueeze(1)
        return x

    def window_level(self, spikes: torch.Tensor, hidden: torch.Tensor, tables: SessionTables) -> torch.Tensor:
        """(B, 1, N) each unit's mean standardised input over its visible bins of the window (0 for a unit with
        none visible): the ``level_skip`` term, so a slow change of a unit's rate (drift) seen in its own
        visible activity reaches its read-out directly."""
        visible = (~hidden & tables.unit_mask.unsqueeze(1)).float()
        n = visible.sum(1, keepdim=True)
        return (self.standardized_input(spikes, tables) * visible).sum(1, keepdim=True) / n.clamp_min(1.0)

    def forward(self, spikes: torch.Tensor, *, unit_mask: torch.Tensor | None = None,
                unit_region: torch.Tensor | None = None, session_ids=None, hidden_mask: torch.Tensor | None = None,
                prompt: str = "none", causal: bool | None = None, tables: SessionTables | None = None,
                bin_size: float | None = None, valid_mask: torch.Tensor | None = None, event_times=None,
                event_units=None, event_mask=None, behavior=None, stimulus=None, trial_labels=None, trial_id=None,
                output_attentions: bool | None = None, output_hidden_states: bool | None = None,
                return_dict: bool | None = None) -> NfmModelOutput:
        """Bin states of a batch (see the class docstring for the arguments; ``tables``: precomputed
        :meth:`session_tables`)."""
        if spikes.dim() != 3:
            raise ValueError(f"spikes must be (B, T, N), got shape {tuple(spikes.shape)}")
        B, T, N = spikes.shape
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = (self.config.output_hidden_states if output_hidden_states is None
                                else output_hidden_states)
        if prompt not in PROMPTS:
            raise ValueError(f"prompt {prompt!r} is not one of {PROMPTS}")
        if causal is None:
            causal = prompt in CAUSAL_MODES or prompt == "generate"
        if tables is None:
            tables = self.session_tables(_as_session_list(session_ids, B), unit_mask, unit_region, n_units=N,
                                         device=spikes.device)
        self.check_grid(spikes, bin_size, grid=tables.grid)
        if valid_mask is not None:  # missing entries: hidden, their stored 0 is not a value
            invalid = ~valid_mask.bool().to(spikes.device) & tables.unit_mask.unsqueeze(1)
            hidden_mask = invalid if hidden_mask is None else hidden_mask | invalid
        x = self.standardized_input(spikes, tables).to(self.region_embed.weight.dtype) * tables.unit_mask.unsqueeze(1)
        if hidden_mask is not None:
            if hidden_mask.shape != spikes.shape:
                raise ValueError(f"hidden_mask shape {tuple(hidden_mask.shape)} != spikes shape {tuple(spikes.shape)}")
            x = x.masked_fill(hidden_mask, 0.0)
        z = torch.einsum("btn,bnh->bth", x, tables.unit_embed.to(x.dtype))
        if hidden_mask is not None:
            mask_rows = self.region_mask_embed(tables.unit_region) * tables.unit_mask.unsqueeze(-1)
            z = z + torch.einsum("btn,bnh->bth", hidden_mask.to(z.dtype), mask_rows.to(z.dtype))
        bins = self.readin_fc2(F.gelu(self.readin_fc1(self.readin_norm(z))))
        grid_size = tables.grid[1] if tables.grid is not None else float(self.config.bin_size)
        if self.bin_duration is not None:  # the token carries its duration (0 on the unit grid)
            bins = bins + math.log(grid_size / self.config.rope_time_unit) * self.bin_duration.to(bins.dtype)
        prompt_id = PROMPTS.index(prompt if self.config.use_prompt_token else "none")  # prompt ablation: no task
        prompt_row = self.prompt_embed.weight[prompt_id].expand(B, -1)
        h = torch.cat([tables.token.unsqueeze(1).to(bins.dtype), prompt_row.unsqueeze(1).to(bins.dtype), bins], dim=1)
        h = self.dropout(h)
        cos, sin = rope_cos_sin(N_PREFIX + T, self.config.hidden_size // self.config.num_attention_heads,
                                self.config.rope_theta, h.device,
                                positions=time_positions(T, grid_size, self.config.rope_time_unit))
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
        """(B, T, H) states -> (B, T, N) log-rates (Poisson) or means (Gaussian); padding units get 0.  Under
        autocast in float32 (:func:`full_precision`): the likelihood's inputs are never rounded to bf16."""
        with full_precision(bin_states):
            dtype = tables.readout.dtype  # float32 master weights under autocast
            pred = torch.einsum("bth,bnh->btn", bin_states.to(dtype), tables.readout)
            pred = pred + tables.readout_bias.to(pred.dtype).unsqueeze(1)
            return pred * tables.unit_mask.unsqueeze(1)

    def log_variance(self, tables: SessionTables) -> torch.Tensor | None:
        """(B, N) float32 Gaussian per-unit log-variances (learned, clamped to :data:`LOG_VAR_RANGE`, or
        ``log(config.gaussian_fixed_variance)``); None when the batch's sessions have the Poisson likelihood."""
        if self.config.likelihood_of(tables.modality) == "poisson":
            return None
        if tables.log_var is not None:
            return tables.log_var.float().clamp(*LOG_VAR_RANGE)
        return torch.full_like(tables.readout_bias, math.log(self.config.gaussian_fixed_variance)).float()

    def predict_masked(self, spikes: torch.Tensor, *, mask: MaskSample, prompt: str | None = None,
                       unit_mask: torch.Tensor | None = None, unit_region: torch.Tensor | None = None,
                       session_ids=None, valid_mask: torch.Tensor | None = None, bin_size: float | None = None,
                       tables: SessionTables | None = None, output_attentions: bool | None = None,
                       output_hidden_states: bool | None = None) -> NfmMaskedPrediction:
        """Predict every entry of a batch whose ``mask.hidden`` entries are hidden: the one masked-prediction
        path of nfm (training loss, evaluation and summaries all call it).

        Args:
            spikes: (B, T, N) counts per bin (or 2-photon activity).
            mask: a :class:`~nfm.models.masking.MaskSample`, (B, T, N) or a (1, T, N) template (broadcast);
                entries of padding units are cleared.
            prompt: prompt token (default ``mask.mode``); causal attention follows ``mask.causal``.
            valid_mask: (B, T, N) bool, False = missing (2-photon bad frames): always hidden, never a target.
        Returns :class:`NfmMaskedPrediction` (log-rates or means, per-unit log-variances, the final masks).
        """
        if spikes.dim() != 3:
            raise ValueError(f"spikes must be (B, T, N), got shape {tuple(spikes.shape)}")
        B, T, N = spikes.shape
        if tables is None:
            tables = self.session_tables(_as_session_list(session_ids, B), unit_mask, unit_region, n_units=N,
                                         device=spikes.device)
        self.check_grid(spikes, bin_size, grid=tables.grid)
        sample = mask.expand(tables.unit_mask)
        target, hidden = sample.target, sample.hidden
        if valid_mask is not None:  # missing entries: their stored 0 is not a value
            invalid = ~valid_mask.bool().to(spikes.device) & tables.unit_mask.unsqueeze(1)
            target, hidden = target & ~invalid, hidden | invalid
        prompt = sample.mode if prompt is None else prompt
        out = self(spikes, hidden_mask=hidden, prompt=prompt, causal=sample.causal, tables=tables,
                   output_attentions=output_attentions, output_hidden_states=output_hidden_states)
        prediction = self.readout(out.bin_states, tables).float()
        if self.level_gain is not None:
            prediction = prediction + self.level_gain.float() * self.window_level(spikes, hidden, tables)
        return NfmMaskedPrediction(
            prediction=prediction, log_variance=self.log_variance(tables),
            target=target, hidden=hidden, prompt=prompt, max_log_rate=float(self.config.max_log_rate),
            last_hidden_state=out.last_hidden_state, hidden_states=out.hidden_states, attentions=out.attentions)


# --------------------------------------------------------------------------- likelihoods
def masked_nll(pred: NfmMaskedPrediction, values: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of ``values`` (B, T, N) averaged over the ``pred.target`` entries (float32).

    Poisson (``pred.prediction`` = log-rate l, clamped to +-max_log_rate): ``exp(l) - y l + log y!``.
    Gaussian (mean m, per-unit log-variance v): ``0.5 (log 2 pi + v + (y - m)^2 / e^v)``.
    """
    with full_precision(values):  # float32 also under autocast
        y = values.float()
        m = pred.target.float()
        denom = m.sum().clamp_min(1.0)
        if pred.log_variance is None:
            lr = pred.prediction.float().clamp(-pred.max_log_rate, pred.max_log_rate)
            nll = torch.exp(lr) - y * lr + torch.lgamma(y.clamp_min(0) + 1.0)
        else:
            lv = pred.log_variance.float().unsqueeze(1)
            nll = 0.5 * (math.log(2 * math.pi) + lv + (y - pred.prediction.float()) ** 2 * torch.exp(-lv))
        return (nll * m).sum() / denom


def masked_modeling(backbone: NfmModel, spikes, *, unit_mask=None, unit_region=None, session_ids=None,
                    mask_mode: str | None = None, mask: MaskSample | None = None, prompt: str | None = None,
                    valid_mask=None, bin_size=None, generator: torch.Generator | None = None,
                    output_attentions=None, output_hidden_states=None) -> NfmMaskedModelingOutput:
    """The MtM objective on one batch: sample a mask (mode ``mask_mode``, or one drawn from
    ``config.active_mask_modes`` with ``config.mask_mode_probabilities``) unless ``mask`` is given, predict
    (:meth:`NfmModel.predict_masked`), score."""
    config = backbone.config
    B, T, N = spikes.shape
    session_ids = _as_session_list(session_ids, B)
    tables = backbone.session_tables(session_ids, unit_mask, unit_region, device=spikes.device)
    if mask is None:
        if mask_mode is None:
            modes = config.active_mask_modes
            dev = generator.device if generator is not None else None
            if config.mask_mode_weights:
                probs = torch.tensor(config.mask_mode_probabilities, device=dev)
                pick = torch.multinomial(probs, 1, generator=generator)
            else:  # uniform (MtM); kept as randint so a seeded run draws what it drew before
                pick = torch.randint(len(modes), (1,), generator=generator, device=dev)
            mask_mode = modes[int(pick)]
        mask = sample_mask(mask_mode, tables.unit_mask, tables.unit_region, T, config, generator,
                           block=config.frame_bins_of(session_ids[0]))
    elif not isinstance(mask, MaskSample):
        raise TypeError(f"mask must be a nfm.models.masking.MaskSample, got {type(mask).__name__}")
    pred = backbone.predict_masked(spikes, mask=mask, prompt=prompt, valid_mask=valid_mask, bin_size=bin_size,
                                   tables=tables, output_attentions=output_attentions,
                                   output_hidden_states=output_hidden_states)
    poisson = pred.log_variance is None
    return NfmMaskedModelingOutput(
        loss=masked_nll(pred, spikes), log_rates=pred.prediction if poisson else None,
        means=None if poisson else pred.prediction, log_variances=pred.log_variance, mask=pred.target,
        hidden_mask=pred.hidden,
        mask_mode_id=torch.full((B,), PROMPTS.index(pred.prompt), dtype=torch.long, device=spikes.device),
        last_hidden_state=pred.last_hidden_state, hidden_states=pred.hidden_states, attentions=pred.attentions)


# --------------------------------------------------------------------------- heads
class NfmForMaskedModeling(NfmPreTrainedModel):
    """MtM: one mask mode per batch (sampled from ``config.mask_modes`` unless ``mask_mode`` is given), its
    prompt token fed, masked entries predicted; loss averaged over the target entries.

    Forward (keyword-only after ``spikes``; the collator's batch keys, so ``model(**batch)`` works):
        spikes (B, T, N), unit_mask (B, N), unit_region (B, N), session_ids (B,), valid_mask (B, T, N) bool
        (2-photon bad frames: never scored, always hidden), bin_size [s] (checked against the config);
        mask_mode: the mode to sample (default: one of ``config.mask_modes``); mask: an explicit
        :class:`~nfm.models.masking.MaskSample` (evaluation masks); prompt: the prompt token (default: the mask's
        mode); generator: for the mask sampling.  Batch keys it does not use (``event_*``, ``behavior``,
        ``stimulus``, ``trial_labels``, ``trial_id``) are accepted and ignored.
    """

    def __init__(self, config: NfmConfig):
        super().__init__(config)
        self.nfm = NfmModel(config)
        self.post_init()

    def forward(self, spikes: torch.Tensor, *, unit_mask=None, unit_region=None, session_ids=None,
                mask_mode: str | None = None, mask: MaskSample | None = None, prompt: str | None = None,
                valid_mask=None, bin_size: float | None = None, generator: torch.Generator | None = None,
                event_times=None, event_units=None, event_mask=None, behavior=None, stimulus=None,
                trial_labels=None, trial_id=None, output_attentions=None, output_hidden_states=None,
                return_dict=None, return_loss: bool = True) -> NfmMaskedModelingOutput:
        out = masked_modeling(self.nfm, spikes, unit_mask=unit_mask, unit_region=unit_region,
                              session_ids=session_ids, mask_mode=mask_mode, mask=mask, prompt=prompt,
                              valid_mask=valid_mask, bin_size=bin_size, generator=generator,
                              output_attentions=output_attentions, output_hidden_states=output_hidden_states)
        return out if return_dict is not False else out.to_tuple()


__all__ = [
    "NfmPreTrainedModel", "NfmModel", "NfmForMaskedModeling",
    "NfmModelOutput", "NfmMaskedPrediction", "NfmMaskedModelingOutput",
    "NfmSessionParameters", "SessionTables", "session_key", "masked_nll", "masked_modeling",
]
