"""Hand-built dataset meta and model batches (the format of the batch contract) for the model tests."""
from __future__ import annotations

import numpy as np
import torch

from nfm.data.meta import DatasetMeta, SessionMeta
from nfm.models import NfmConfig, register_auto_classes

REGIONS = ["CA1", "LP", "VISp"]


def make_meta(sessions: dict[str, list[str]] | None = None, n_bins: int = 20, bin_size: float = 0.02,
              behavior_names=("wheel_speed",), stimulus_names=("signed_contrast",),
              trial_label_names=("choice",), modality: str = "spikes") -> DatasetMeta:
    """A :class:`DatasetMeta` as ``nfm.data.hf.build_dataset`` makes: sessions keyed by id with unit tables."""
    if sessions is None:
        sessions = {"sA": ["CA1"] * 3 + ["VISp"] * 4 + ["LP"] * 3, "sB": ["LP"] * 3 + ["VISp"] * 3}
    return DatasetMeta(
        modality=modality, bin_size=bin_size, n_bins=n_bins, window=(-0.1, -0.1 + n_bins * bin_size),
        behavior_names=list(behavior_names), stimulus_names=list(stimulus_names),
        trial_columns=list(trial_label_names), trial_label_names=list(trial_label_names),
        regions=sorted({r for v in sessions.values() for r in v}),
        sessions={sid: SessionMeta(subject_id=f"subject-{sid}", n_units=len(regs),
                                   units={"unit_id": [f"{sid}-u{i}" for i in range(len(regs))], "region": list(regs)})
                  for sid, regs in sessions.items()},
    )


def tiny_config(meta: dict | None = None, **overrides) -> NfmConfig:
    """A very small model for fast tests (no dropout, no modality dropout, so outputs are deterministic)."""
    kw = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, decoder_layers=1,
              hidden_dropout=0.0, contrastive_dim=16, gen_windows_per_step=0, modality_dropout=0.0)
    kw.update(overrides)
    return NfmConfig.from_dataset_meta(meta or make_meta(), **kw)


def make_batch(meta: dict, session_ids: list[str], seed: int = 0, rate_hz: float = 20.0,
               region_vocab: list[str] | None = None) -> dict:
    """A batch following the batch contract: Poisson spike events per unit, binned counts, behaviour, stimulus."""
    rng = np.random.default_rng(seed)
    B = len(session_ids)
    T, bin_size = meta.n_bins, meta.bin_size
    dur = T * bin_size
    vocab = region_vocab or ["unknown"] + meta.regions
    n_units = [meta.sessions[s].n_units for s in session_ids]
    N = max(n_units)
    unit_mask = np.arange(N)[None] < np.array(n_units)[:, None]
    unit_region = np.zeros((B, N), dtype=np.int64)
    times, units = [], []
    for b, s in enumerate(session_ids):
        regs = meta.sessions[s].units["region"]
        unit_region[b, : len(regs)] = [vocab.index(r) if r in vocab else 0 for r in regs]
        rates = rate_hz * rng.uniform(0.3, 1.7, n_units[b])
        counts = rng.poisson(rates * dur)
        u = np.repeat(np.arange(n_units[b]), counts)
        t = rng.uniform(0, dur, len(u))
        order = np.lexsort((u, t))
        times.append(t[order])
        units.append(u[order])
    E = max(len(t) for t in times)
    ev_t = np.zeros((B, E), np.float32)
    ev_u = np.zeros((B, E), np.int64)
    ev_m = np.zeros((B, E), bool)
    spikes = np.zeros((B, T, N), np.float32)
    for b in range(B):
        n = len(times[b])
        ev_t[b, :n], ev_u[b, :n], ev_m[b, :n] = times[b], units[b], True
        np.add.at(spikes[b], (np.floor(times[b] / bin_size).astype(int), units[b]), 1.0)
    K, D, L = len(meta.behavior_names), len(meta.stimulus_names), len(meta.trial_label_names)
    return {
        "spikes": torch.from_numpy(spikes), "unit_mask": torch.from_numpy(unit_mask),
        "unit_region": torch.from_numpy(unit_region), "session_ids": list(session_ids),
        "event_times": torch.from_numpy(ev_t), "event_units": torch.from_numpy(ev_u),
        "event_mask": torch.from_numpy(ev_m),
        "behavior": torch.from_numpy(rng.standard_normal((B, T, K)).astype(np.float32)),
        "stimulus": torch.from_numpy(rng.standard_normal((B, T, D)).astype(np.float32)),
        "trial_labels": torch.from_numpy(rng.choice([-1.0, 1.0], (B, L)).astype(np.float32)),
        "trial_id": torch.arange(B),
    }


def setup_module_common():
    import transformers

    transformers.utils.logging.set_verbosity_error()
    torch.set_num_threads(1)
    register_auto_classes()
