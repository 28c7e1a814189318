"""Configuration of the nfm model family (:class:`NfmConfig`).

One config holds every architectural and objective setting of the backbone
(:class:`~nfm.models.modeling_nfm.NfmModel`), of the MtM masked-modelling head,
of the Neuroformer-style event decoder and of the behaviour heads.  Every
default is documented next to its field; units are given in brackets.

Data-dependent fields (sessions with their unit counts, region vocabulary, bin
size, trial length, behaviour/stimulus/label names, modality) are filled from a
dataset's :class:`~nfm.data.meta.DatasetMeta` by :meth:`NfmConfig.from_dataset_meta`.

Presets
-------
``NfmConfig.from_dataset_meta(meta, preset="mtm")`` picks a documented size:

* ``"default"``: hidden 128, 4 backbone layers, 4 heads, MLP 512, 2 decoder
  layers (about 1 M shared parameters; pretrains the default synthetic world in
  minutes on a 2-core CPU).
* ``"mtm"``: the MtM paper size (hidden 512, 5 layers, 8 heads, MLP 1024,
  dropout 0.4).
* ``"neuroformer"``: Neuroformer-like width (hidden 256, 4 + 4 layers, 8 heads).
"""
from __future__ import annotations

import math
from dataclasses import field
from typing import TYPE_CHECKING, Any

from transformers import PreTrainedConfig

if TYPE_CHECKING:
    from nfm.data.meta import DatasetMeta

#: Every masking mode the MtM head knows (see :mod:`nfm.models.masking`).
MASK_MODES = ("neuron", "causal", "temporal", "intra_region", "inter_region", "random_token")
#: ``mask_modes=["all"]`` expands to MtM's four modes (temporal is MtM's baseline).
MTM_MODES = ("neuron", "causal", "intra_region", "inter_region")
#: Prompt-token vocabulary: one token per mask mode, ``"none"`` (no masking,
#: bidirectional; embedding extraction and behaviour decoding) and
#: ``"generate"`` (no masking, causal; the past state of the event decoder).
PROMPTS = ("none",) + MASK_MODES + ("generate",)
OBJECTIVES = ("mtm", "generation")
LIKELIHOODS = ("poisson", "gaussian")
MODALITIES = ("spikes", "calcium")
#: likelihood of each modality (the primary modality's can be overridden with ``likelihood``)
DEFAULT_LIKELIHOOD = {"spikes": "poisson", "calcium": "gaussian"}
INPUT_TRANSFORMS = ("none", "log1p")

PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "mtm": dict(hidden_size=512, num_hidden_layers=5, num_attention_heads=8, intermediate_size=1024,
                hidden_dropout=0.4),
    "neuroformer": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=8, intermediate_size=1024,
                        decoder_layers=4),
}


class NfmConfig(PreTrainedConfig):
    r"""Configuration of every nfm model.

    Data fields (normally from :meth:`from_dataset_meta`):
        session_n_units (dict[str, int]): session id -> number of units (neurons or ROIs). Per-session
            parameters are keyed by the session id, never by the unit count.
        region_vocab (list[str]): brain-region vocabulary; index 0 is ``"unknown"`` (also padding). Region
            embeddings are shared across sessions and animals.
        bin_size (float): bin width [s] (default 0.02).
        n_bins (int): bins per trial T (default 100 = 2 s).
        window (list[float]): trial window around the align event [s] (default [-0.5, 1.5]).
        modality (str): the *primary* modality, ``"spikes"`` (Poisson likelihood) or ``"calcium"`` (Gaussian
            likelihood): the one of the primary time grid (``window``, ``bin_size``, ``n_bins``) and of
            ``likelihood``.
        modalities (list[str]): every modality the model has seen (default ``[modality]``).
        session_modality (dict[str, str]): session id -> ``"spikes"`` / ``"calcium"``; a session not listed has
            the primary ``modality``.  The likelihood and read-out follow the session: Poisson log-rates for
            spike sessions, Gaussian means with a learned per-ROI log-variance (scale) for calcium sessions;
            the backbone, region embeddings and heads are shared.
        session_grid (dict[str, list[float]]): session id -> ``[window_start, window_stop, bin_size]`` [s] of a
            session whose time grid differs from the primary one (another dataset: a 2-photon frame clock, another
            trial window); sessions not listed use the primary grid.  One batch holds one grid.
        session_frame_bins (dict[str, int]): bins per imaging frame of 2-photon sessions whose frames were
            interpolated to a finer grid (``--calcium_interpolate``): temporal and causal masks then cover
            whole blocks of this many bins (whole frames); default 1.
        rope_time_unit (float | None): None: RoPE positions are bin indices (nfm <= 0.1 checkpoints).  A number
            [s]: continuous-time positions, bin b of a grid with bin size d sits at
            ``2 + ((b + 1/2) d - unit / 2) / unit`` (so grids of any bin size share one time base in seconds and
            a grid with ``d == unit`` gets exactly the index positions), and every bin token carries its
            duration: ``+ log(d / unit) * bin_duration`` (a learned vector).  ``from_dataset_meta`` sets it to
            the finest bin size.
        behavior_names / stimulus_names / trial_label_names (list[str]): channel order of the batch's
            ``behavior`` (B, T, K), ``stimulus`` (B, T, D) and ``trial_labels`` (B, L).
        trial_label_classes (dict[str, list[float]]): for :class:`NfmForBehaviorDecoding`, the class values of
            each categorical trial label (e.g. ``{"choice": [-1, 1]}``); labels not listed are regressed.

    Backbone:
        hidden_size (int, 128), num_hidden_layers (int, 4), num_attention_heads (int, 4),
        intermediate_size (int, 512), hidden_dropout (float, 0.1), attention_dropout (float, 0.0),
        layer_norm_eps (float, 1e-5), rope_theta (float, 10000), initializer_range (float, 0.02),
        input_transform (str, ``"log1p"``: sign(x) log(1 + |x|) applied to counts before the read-in;
        ``"none"`` feeds raw values; the transform of the primary modality), calcium_input_transform (str,
        ``"none"``: the transform of 2-photon sessions of a model whose primary modality is spikes), level_skip
        (bool, False: add ``level_gain`` (learned, starts at 0) x the unit's mean standardised input over its
        visible bins of the window to its read-out, so slow per-unit rate changes seen in the unit's own visible
        activity reach its prediction; a unit with no visible bin, e.g. a held-out neuron, gets nothing),
        max_log_rate (float, 20: log-rates are clamped to +-max_log_rate in the
        likelihood so bf16 cannot overflow).

    Masking (MtM):
        mask_modes (list[str], ``["all"]``): modes sampled one per batch (uniformly unless
            ``mask_mode_weights``); ``"all"`` = MtM's neuron, causal, intra-region and inter-region modes. Any of
            :data:`MASK_MODES`.
        mask_mode_weights (dict[str, float] | None, None): relative sampling weight of each active mode (modes
            not named get weight 1); e.g. ``{"neuron": 3}`` draws the neuron mask half of the time among MtM's
            four. None = uniform (MtM).
        use_prompt_token (bool, True): feed the prompt token of the task; False feeds the ``none`` prompt for
            every task (the prompt ablation of MtM: the model is not told which mask it is solving).
        mask_ratio_neuron (0.3), mask_ratio_causal (0.6), mask_ratio_temporal (0.3),
        mask_ratio_intra_region (0.3: share of the kept region's units masked), mask_ratio_random_token (0.3).

    Likelihood:
        likelihood (str): ``"poisson"`` (log-rate read-out) for spike counts, ``"gaussian"`` for 2-photon
            activity; defaults from ``modality``.
        gaussian_learn_variance (bool, True): per-unit learned log-variance; else ``gaussian_fixed_variance``.

    Event generation (Neuroformer):
        gen_window (float, 0.04 s): length of one generated window; the decoder predicts the events of window k
            from backbone states of bins before window k (``gen_past`` s of them), from the spike-event tokens
            of the ``gen_past_events`` s before window k, and from stimulus/behaviour tokens of the bins from
            ``gen_past`` s before window k to the end of window k.  Must be a multiple of ``bin_size`` and divide
            the trial.
        dt_resolution (float, 0.01 s): width of one dt class (offset of an event from its window start).
        gen_past (float, 0.2 s), gen_past_events (float, 0.04 s; 0 disables past-event tokens; a multiple of
            gen_window), decoder_layers (int, 2), gen_max_events (int, 256: cap of generated events per window),
        gen_windows_per_step (int, 10; 0 = all): teacher-forced training on this many randomly drawn windows per
            trial and step instead of all K (the decoder's cost is linear in the number of spike tokens),
        contrastive_dim (int, 64), contrastive_temperature (float, 0.1).
        modality_missing_indicators (bool): stimulus channels get a missing-value indicator like behaviour (a
            variable absent from a dataset, NaN in the batch, is not fed as an observed 0); False in checkpoints
            written before it existed.  Tokens of bins where every stimulus/behaviour channel is missing are masked
            out of the decoder's memory either way.
        modality_dropout (float, 0.0): in training, the probability that a trial's stimulus (and, independently,
            its behaviour) is dropped (set missing) before the decoder reads it, so the model does not come to
            depend on variables a new dataset may lack.
        The decoder cost grows with the window length (self-attention within a window, cross-attention to the
        past-event tokens): 0.04 s windows (2 bins of 20 ms, 4 dt classes) keep CPU pretraining fast.

    Objectives (:class:`NfmForPretraining`):
        objectives (list[str], ``["mtm", "generation"]``); loss
        ``L = mtm_weight * L_masked + contrastive_weight * L_contrastive + id_loss_weight * L_ce(id)
        + (1 - contrastive_weight - id_loss_weight) * L_ce(dt)``.
    """

    model_type = "nfm"

    # ---- data
    session_n_units: dict[str, int] = field(default_factory=dict)
    region_vocab: list[str] = field(default_factory=lambda: ["unknown"])
    bin_size: float = 0.02
    n_bins: int = 100
    window: list[float] = field(default_factory=lambda: [-0.5, 1.5])
    modality: str = "spikes"
    modalities: list[str] = field(default_factory=list)
    session_modality: dict[str, str] = field(default_factory=dict)
    session_grid: dict[str, list[float]] = field(default_factory=dict)
    session_frame_bins: dict[str, int] = field(default_factory=dict)
    behavior_names: list[str] = field(default_factory=list)
    stimulus_names: list[str] = field(default_factory=list)
    trial_label_names: list[str] = field(default_factory=list)
    trial_label_classes: dict[str, list[float]] = field(default_factory=dict)
    # ---- backbone
    hidden_size: int = 128
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 512
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.0
    layer_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_time_unit: float | None = None
    initializer_range: float = 0.02
    input_transform: str = "log1p"
    calcium_input_transform: str = "none"
    max_log_rate: float = 20.0
    level_skip: bool = False
    # ---- masking
    mask_modes: list[str] = field(default_factory=lambda: ["all"])
    mask_mode_weights: dict[str, float] | None = None
    use_prompt_token: bool = True
    mask_ratio_neuron: float = 0.3
    mask_ratio_causal: float = 0.6
    mask_ratio_temporal: float = 0.3
    mask_ratio_intra_region: float = 0.3
    mask_ratio_random_token: float = 0.3
    # ---- likelihood
    likelihood: str | None = None
    gaussian_learn_variance: bool = True
    gaussian_fixed_variance: float = 1.0
    # ---- event generation
    gen_window: float = 0.04
    dt_resolution: float = 0.01
    gen_past: float = 0.2
    gen_past_events: float = 0.04
    gen_windows_per_step: int = 10
    decoder_layers: int = 2
    gen_max_events: int = 256
    contrastive_dim: int = 64
    contrastive_temperature: float = 0.1
    modality_missing_indicators: bool = False
    modality_dropout: float = 0.0
    # ---- objectives
    objectives: list[str] = field(default_factory=lambda: ["mtm", "generation"])
    mtm_weight: float = 1.0
    contrastive_weight: float = 0.1
    id_loss_weight: float = 0.45
    # ---- behaviour decoding
    behavior_loss_weight: float = 1.0
    trial_loss_weight: float = 1.0

    def __post_init__(self, **kwargs):
        if self.likelihood is None:
            self.likelihood = DEFAULT_LIKELIHOOD.get(self.modality, "poisson")
        if not self.modalities:
            self.modalities = [self.modality]
        super().__post_init__(**kwargs)
        self.check()

    # ------------------------------------------------------------ validation
    def check(self) -> "NfmConfig":
        """Raise ``ValueError`` naming the field and value of any inconsistent setting; return self."""
        def bad(name, msg):
            raise ValueError(f"NfmConfig.{name}={getattr(self, name)!r}: {msg}")

        if self.hidden_size % self.num_attention_heads or (self.hidden_size // self.num_attention_heads) % 2:
            bad("hidden_size", f"must split into {self.num_attention_heads} heads of even size (RoPE)")
        if self.modality not in MODALITIES:
            bad("modality", "must be 'spikes' or 'calcium'")
        for m in self.modalities:
            if m not in MODALITIES:
                bad("modalities", f"unknown modality {m!r}; known: {MODALITIES}")
        if self.modality not in self.modalities:
            bad("modalities", f"must contain the primary modality {self.modality!r}")
        for sid, m in self.session_modality.items():
            if m not in self.modalities:
                bad("session_modality", f"session {sid!r} has modality {m!r}, not in modalities={self.modalities}")
        for sid, g in self.session_grid.items():
            if not isinstance(g, (list, tuple)) or len(g) != 3 or not g[1] > g[0] or not g[2] > 0:
                bad("session_grid", f"session {sid!r}: {g!r} must be [window_start, window_stop, bin_size] seconds")
            span = (g[1] - g[0]) / g[2]
            if abs(span - round(span)) > 1e-6 * max(1.0, span):
                bad("session_grid", f"session {sid!r}: window {list(g[:2])} s is not a whole number of {g[2]} s bins")
        for sid, k in self.session_frame_bins.items():
            if int(k) < 1:
                bad("session_frame_bins", f"session {sid!r}: {k!r} must be >= 1")
        if self.rope_time_unit is not None and not self.rope_time_unit > 0:
            bad("rope_time_unit", "must be None (bin-index positions) or > 0 seconds")
        if self.calcium_input_transform not in INPUT_TRANSFORMS:
            bad("calcium_input_transform", f"must be one of {INPUT_TRANSFORMS}")
        if not 0 <= self.modality_dropout < 1:
            bad("modality_dropout", "must be in [0, 1)")
        if self.likelihood not in LIKELIHOODS:
            bad("likelihood", f"must be one of {LIKELIHOODS}")
        if self.input_transform not in INPUT_TRANSFORMS:
            bad("input_transform", f"must be one of {INPUT_TRANSFORMS}")
        for m in self.mask_modes:
            if m != "all" and m not in MASK_MODES:
                bad("mask_modes", f"unknown mode {m!r}; known: {MASK_MODES} or 'all'")
        if not self.mask_modes:
            bad("mask_modes", "needs at least one mode")
        if self.mask_mode_weights is not None:
            if not isinstance(self.mask_mode_weights, dict):
                bad("mask_mode_weights", "must be a mapping mode -> weight")
            for m, w in self.mask_mode_weights.items():
                if m not in self.active_mask_modes:
                    bad("mask_mode_weights", f"mode {m!r} is not an active mask mode {self.active_mask_modes}")
                if isinstance(w, bool) or not (isinstance(w, (int, float)) and math.isfinite(w) and w > 0):
                    bad("mask_mode_weights", f"weight of {m!r} must be a finite number > 0, got {w!r}")
        for o in self.objectives:
            if o not in OBJECTIVES:
                bad("objectives", f"unknown objective {o!r}; known: {OBJECTIVES}")
        if not self.region_vocab or self.region_vocab[0] != "unknown":
            bad("region_vocab", "index 0 must be 'unknown'")
        if len(set(self.region_vocab)) != len(self.region_vocab):
            bad("region_vocab", "has duplicates")
        if not (0 <= self.contrastive_weight and 0 <= self.id_loss_weight
                and self.contrastive_weight + self.id_loss_weight <= 1):
            bad("id_loss_weight", "need contrastive_weight, id_loss_weight >= 0 with sum <= 1")
        for name in ("bin_size", "gen_window", "dt_resolution", "contrastive_temperature"):
            if not getattr(self, name) > 0:
                bad(name, "must be > 0")
        if len(self.window) != 2 or not self.window[1] > self.window[0]:
            bad("window", "must be [start, stop] seconds with stop > start")
        span = (self.window[1] - self.window[0]) / self.bin_size
        if abs(span - self.n_bins) > 1e-6 * max(1.0, span):
            bad("n_bins", f"must equal the window {list(self.window)} s / bin_size {self.bin_size} s = {span:g}")
        if "generation" in self.objectives:
            if self.modality != "spikes":
                bad("objectives", "the 'generation' objective needs spike events: the primary modality must be "
                                  "'spikes' (it applies to the spike sessions only)")
            self._multiple("gen_window", self.gen_window, self.bin_size, "bin_size")
            self._multiple("gen_past", self.gen_past, self.bin_size, "bin_size")
            if self.gen_past_events:
                self._multiple("gen_past_events", self.gen_past_events, self.gen_window, "gen_window")
        for sid, n in self.session_n_units.items():
            if not isinstance(sid, str) or not sid:
                bad("session_n_units", f"session id {sid!r} must be a non-empty string")
            if int(n) < 1:
                bad("session_n_units", f"session {sid!r} has {n} units")
        return self

    def _multiple(self, name: str, value: float, unit: float, unit_name: str) -> int:
        k = value / unit
        if value < 0 or abs(k - round(k)) > 1e-6:
            raise ValueError(f"NfmConfig.{name}={value!r} s must be a non-negative multiple of "
                             f"{unit_name}={unit!r} s")
        return int(round(k))

    # ------------------------------------------------------- derived values
    @property
    def active_mask_modes(self) -> list[str]:
        """``mask_modes`` with ``"all"`` expanded to MtM's four modes (order kept, duplicates removed)."""
        out: list[str] = []
        for m in self.mask_modes:
            for x in (MTM_MODES if m == "all" else (m,)):
                if x not in out:
                    out.append(x)
        return out

    @property
    def mask_mode_probabilities(self) -> list[float]:
        """Sampling probability of each of :attr:`active_mask_modes` (same order): ``mask_mode_weights``
        normalised, weight 1 for a mode it does not name."""
        w = [float((self.mask_mode_weights or {}).get(m, 1.0)) for m in self.active_mask_modes]
        return [x / sum(w) for x in w]

    @property
    def session_ids(self) -> list[str]:
        return list(self.session_n_units)

    # ---- per-session modality and time grid
    def modality_of(self, session_id: str) -> str:
        """Modality of a session (``session_modality``, else the primary ``modality``)."""
        return self.session_modality.get(str(session_id), self.modality)

    def likelihood_of(self, modality: str) -> str:
        """Likelihood of a modality: ``likelihood`` for the primary one, the modality's default otherwise."""
        return self.likelihood if modality == self.modality else DEFAULT_LIKELIHOOD[modality]

    def input_transform_of(self, modality: str) -> str:
        """Read-in transform of a modality (``input_transform`` for the primary one)."""
        return self.input_transform if modality == self.modality else (
            self.calcium_input_transform if modality == "calcium" else "log1p")

    def grid_of(self, session_id: str) -> tuple[tuple[float, float], float, int]:
        """``(window [s], bin_size [s], n_bins)`` of a session (``session_grid``, else the primary grid)."""
        g = self.session_grid.get(str(session_id))
        if g is None:
            return (float(self.window[0]), float(self.window[1])), float(self.bin_size), int(self.n_bins)
        return (float(g[0]), float(g[1])), float(g[2]), int(round((g[1] - g[0]) / g[2]))

    def frame_bins_of(self, session_id: str) -> int:
        """Bins per imaging frame of a session (temporal masks cover whole blocks of them); 1 by default."""
        return int(self.session_frame_bins.get(str(session_id), 1))

    def set_session_info(self, session_id: str, modality: str | None = None, grid=None,
                         frame_bins: int | None = None) -> None:
        """Record a session's modality, time grid ``(window, bin_size)`` and bins per frame (only what differs
        from the primary defaults is stored), adding the modality to ``modalities``; checks the result."""
        sid = str(session_id)
        if modality is not None:
            if modality not in MODALITIES:
                raise ValueError(f"modality {modality!r} of session {sid!r} is not one of {MODALITIES}")
            self.session_modality = {**self.session_modality, sid: modality}
            if modality not in self.modalities:
                self.modalities = list(self.modalities) + [modality]
        if grid is not None:
            (w0, w1), size = (float(grid[0][0]), float(grid[0][1])), float(grid[1])
            same = (abs(size - self.bin_size) <= 1e-12 and abs(w0 - self.window[0]) <= 1e-9
                    and abs(w1 - self.window[1]) <= 1e-9)
            grids = {k: v for k, v in self.session_grid.items() if k != sid}
            self.session_grid = grids if same else {**grids, sid: [w0, w1, size]}
        if frame_bins is not None and int(frame_bins) > 1:
            self.session_frame_bins = {**self.session_frame_bins, sid: int(frame_bins)}
        self.check()

    @property
    def window_bins(self) -> int:
        """Bins per generated window (gen_window / bin_size)."""
        return self._multiple("gen_window", self.gen_window, self.bin_size, "bin_size")

    @property
    def past_bins(self) -> int:
        """Backbone states (bins) before a window that its decoder attends to."""
        return self._multiple("gen_past", self.gen_past, self.bin_size, "bin_size")

    @property
    def past_event_windows(self) -> int:
        """Number of previous windows whose event tokens the decoder attends to."""
        if not self.gen_past_events:
            return 0
        return self._multiple("gen_past_events", self.gen_past_events, self.gen_window, "gen_window")

    @property
    def n_dt(self) -> int:
        """Number of dt classes per window: ceil(gen_window / dt_resolution)."""
        return int(math.ceil(self.gen_window / self.dt_resolution - 1e-6))

    @property
    def stimulus_dim(self) -> int:
        return len(self.stimulus_names)

    @property
    def behavior_dim(self) -> int:
        return len(self.behavior_names)

    # ---------------------------------------------------------- constructors
    @classmethod
    def from_dataset_meta(cls, meta: "DatasetMeta", preset: str = "default", *, bin_size: float | None = None,
                          **overrides) -> "NfmConfig":
        """Build a config from a dataset's :class:`~nfm.data.meta.DatasetMeta`.

        The time grid comes from ``meta.grid(bin_size)``: the dataset's window [s] and bin size [s] (or
        ``bin_size`` to re-bin spike data), and the matching ``n_bins``; the collator of the model reads the
        same grid back from the config (:meth:`nfm.data.collate.NfmCollator.for_config`).  Also read: the
        modality, behaviour / stimulus / trial-label names (and ``trial_label_classes``), the region vocabulary
        (``meta.region_vocab()``) and each session's unit count.  ``preset`` picks a size from :data:`PRESETS`;
        ``overrides`` replace any field (but not the time grid: pass ``bin_size``).  Calcium datasets default to
        the Gaussian likelihood and the MtM objective only; 2-photon frames interpolated to finer bins get
        temporal masks over whole frames (``session_frame_bins``).  Positions are continuous time
        (``rope_time_unit`` = the bin size: the same positions as bin indices on this grid).
        """
        from nfm.data.meta import DatasetMeta

        if not isinstance(meta, DatasetMeta):
            raise TypeError(f"from_dataset_meta needs a DatasetMeta (nfm.data.meta; load one with "
                            f"nfm.data.hf.load_dataset or DatasetMeta.load), got {type(meta).__name__}")
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; known: {sorted(PRESETS)}")
        grid_keys = sorted({"bin_size", "n_bins", "window"} & set(overrides))
        if grid_keys:
            raise ValueError(f"{grid_keys[0]} comes from the dataset's time grid; pass bin_size=... to re-bin")
        window, size, n_bins = meta.grid(bin_size)
        kwargs: dict[str, Any] = dict(
            session_n_units={sid: int(s.n_units) for sid, s in meta.sessions.items()},
            region_vocab=meta.region_vocab(),
            bin_size=size,
            n_bins=n_bins,
            window=list(window),
            modality=meta.modality,
            behavior_names=list(meta.behavior_names),
            stimulus_names=list(meta.stimulus_names),
            trial_label_names=list(meta.trial_label_names),
            trial_label_classes={k: list(v) for k, v in meta.trial_label_classes.items()},
        )
        kwargs.update(session_modality={sid: meta.modality for sid in meta.sessions}, modalities=[meta.modality],
                      rope_time_unit=size, modality_missing_indicators=True,
                      modality_dropout=0.2 if (meta.behavior_names or meta.stimulus_names) else 0.0)
        frames = cls._frame_bins(meta, size)
        if frames > 1:
            kwargs["session_frame_bins"] = {sid: frames for sid in meta.sessions}
        if meta.modality == "calcium":
            kwargs.update(objectives=["mtm"], input_transform="none")
        kwargs.update(PRESETS[preset])
        kwargs.update(overrides)
        if meta.modality == "spikes" and "gen_window" not in overrides:
            kwargs.update(cls._fit_windows(size, n_bins, overrides))
        return cls(**kwargs)

    @staticmethod
    def _frame_bins(meta: "DatasetMeta", bin_size: float) -> int:
        """Bins per imaging frame of interpolated 2-photon data (ceil(frame period / bin size)); 1 otherwise."""
        if meta.modality != "calcium" or meta.calcium_binning != "interpolate" or not meta.frame_period:
            return 1
        return max(1, int(math.ceil(float(meta.frame_period) / bin_size - 1e-6)))

    @classmethod
    def from_dataset_metas(cls, metas: "list[DatasetMeta]", preset: str = "default", *,
                           bin_size: float | None = None, **overrides) -> "NfmConfig":
        """One config for several datasets (mixed pretraining), of either modality and their own time grids.

        The *primary* dataset is the first spike dataset (else the first one): its grid (at ``bin_size``, which
        also re-bins every other spike dataset) is ``window`` / ``bin_size`` / ``n_bins`` and its modality is
        ``modality``.  Every other dataset's sessions keep their own grid (``session_grid``: 2-photon data at
        their frame clock, other windows) and modality (``session_modality``); positions are continuous time in
        units of the finest bin size (``rope_time_unit``), so bins of any duration share one time base in
        seconds.  Regions, behaviour / stimulus / trial-label names are the union (primary first); session ids
        must be unique across datasets.  The generation objective (default when a spike dataset is present)
        applies to spike sessions only; MtM to all.
        """
        from nfm.data.meta import DatasetMeta

        metas = list(metas)
        if not metas or not all(isinstance(m, DatasetMeta) for m in metas):
            raise TypeError("from_dataset_metas needs a non-empty list of DatasetMeta")
        if len(metas) == 1:
            return cls.from_dataset_meta(metas[0], preset, bin_size=bin_size, **overrides)
        seen: dict[str, str] = {}
        for m in metas:
            for sid in m.sessions:
                if sid in seen:
                    raise ValueError(f"session id {sid!r} is in both {seen[sid]} and {m.path}; session ids must be "
                                     "unique across the datasets of one model")
                seen[sid] = m.path
        primary = next((m for m in metas if m.modality == "spikes"), metas[0])
        spike_bin = bin_size if bin_size is not None else primary.bin_size
        grids = {id(m): m.grid(spike_bin if m.modality == "spikes" else None) for m in metas}
        unit = min(g[1] for g in grids.values())
        union = lambda attr: list(dict.fromkeys(x for m in [primary] + metas for x in getattr(m, attr)))  # noqa: E731
        config = cls.from_dataset_meta(primary, preset, bin_size=spike_bin, **overrides)
        vocab = list(config.region_vocab)
        vocab += [r for m in metas for r in m.region_vocab() if r not in vocab]
        classes = {}
        for m in metas:
            for k, v in m.trial_label_classes.items():
                classes[k] = sorted(set(classes.get(k, [])) | {float(x) for x in v})
        config.region_vocab = vocab
        config.behavior_names = union("behavior_names")
        config.stimulus_names = union("stimulus_names")
        config.trial_label_names = union("trial_label_names")
        config.trial_label_classes = classes
        if "rope_time_unit" not in overrides:
            config.rope_time_unit = unit
        if "modality_dropout" not in overrides and (config.behavior_names or config.stimulus_names):
            config.modality_dropout = 0.2
        for m in metas:
            if m is primary:
                continue
            window, size, _ = grids[id(m)]
            for sid, s in m.sessions.items():
                config.session_n_units = {**config.session_n_units, sid: int(s.n_units)}
                config.set_session_info(sid, modality=m.modality, grid=(window, size),
                                        frame_bins=cls._frame_bins(m, size))
        return config.check()

    @classmethod
    def _fit_windows(cls, bin_size: float, n_bins: int, overrides: dict) -> dict:
        """Default generation windows rounded to whole bins: the window length is the largest whole number of
        bins <= max(1, round(0.04 s / bin_size)) that divides the trial; past windows are whole bins/windows."""
        w = max(1, int(round(cls.gen_window / bin_size)))
        while n_bins % w:
            w -= 1
        out = {"gen_window": w * bin_size}
        if "gen_past" not in overrides:
            out["gen_past"] = max(1, int(round(cls.gen_past / bin_size))) * bin_size
        if "gen_past_events" not in overrides:
            out["gen_past_events"] = max(1, int(round(cls.gen_past_events / out["gen_window"]))) * out["gen_window"]
        return out


__all__ = ["NfmConfig", "MASK_MODES", "MTM_MODES", "PROMPTS", "PRESETS"]
