"""Per-session modality in one model: legacy checkpoints, config, likelihood per session, time base in seconds,
missing stimulus / behaviour."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from legacy_fixtures import LEGACY_DIR, outputs
from models_fixtures import make_batch, make_meta, setup_module_common, tiny_config

from nfm.models import NfmConfig, NfmForMaskedModeling, NfmForPretraining
from nfm.models.masking import sample_mask


def setup_module(module):
    setup_module_common()


@pytest.mark.parametrize("modality,cls", [("spikes", NfmForPretraining), ("calcium", NfmForMaskedModeling)])
def test_legacy_checkpoints_load(modality, cls):
    """Checkpoints written by the single-modality code (commit 164e5e7, tests/legacy_fixtures.py) load with
    every weight used and give the outputs they gave then."""
    folder = LEGACY_DIR / modality
    model, info = cls.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    cfg = model.config
    assert cfg.modalities == [modality] and cfg.session_modality == {} and cfg.rope_time_unit is None
    assert all(cfg.modality_of(s) == modality for s in cfg.session_n_units)
    want = json.loads((folder / "expected.json").read_text())
    got = outputs(model, modality)
    np.testing.assert_allclose(got["prediction"], want["prediction"], rtol=1e-5, atol=1e-6)
    if modality == "calcium":
        np.testing.assert_allclose(got["log_variance"], want["log_variance"], rtol=1e-6)
    else:
        assert want["log_variance"] is None and got["log_variance"] is None
        for k in ("id_loss", "dt_loss", "contrastive_loss"):
            assert got[k] == pytest.approx(want[k], rel=1e-5), k


# ------------------------------------------------------------------ time base in seconds
def test_time_positions_equal_index_positions_on_the_unit_grid():
    """A config with continuous-time RoPE (rope_time_unit = bin_size) gives exactly the outputs of the same
    weights with bin-index positions; a coarser grid gets positions spaced by its bin duration."""
    from nfm.models.positions import time_positions

    meta = make_meta()
    torch.manual_seed(0)
    cfg = tiny_config(meta)
    assert cfg.rope_time_unit == pytest.approx(meta.bin_size)
    model = NfmForMaskedModeling(cfg).eval()
    legacy = NfmForMaskedModeling(NfmConfig(**{**cfg.to_dict(), "rope_time_unit": None})).eval()
    legacy.load_state_dict({k: v for k, v in model.state_dict().items() if "bin_duration" not in k})
    batch = make_batch(meta, ["sA", "sB"], seed=1)
    keys = ("unit_mask", "unit_region", "session_ids")
    with torch.no_grad():
        a = model.nfm(batch["spikes"], **{k: batch[k] for k in keys}).bin_states
        b = legacy.nfm(batch["spikes"], **{k: batch[k] for k in keys}).bin_states
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    pos = time_positions(4, 0.1, 0.02)
    torch.testing.assert_close(pos, torch.tensor([0.0, 1.0, 4.0, 9.0, 14.0, 19.0]))  # centres 0.05 s + 0.1 s steps
    assert time_positions(3, 0.02, None) is None


# ------------------------------------------------------------------ per-session modality
def _two_metas():
    spk = make_meta()
    cal = make_meta({"cA": ["VISp"] * 4 + ["VISl"] * 3}, n_bins=5, bin_size=0.1, modality="calcium",
                    behavior_names=("running_speed",), stimulus_names=(), trial_label_names=("direction",))
    cal.window = (-0.1, 0.4)
    return spk, cal


def test_config_from_two_datasets_lists_modalities_grids_and_likelihoods():
    spk, cal = _two_metas()
    cfg = NfmConfig.from_dataset_metas([cal, spk], hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=64, decoder_layers=1)
    assert cfg.modality == "spikes" and cfg.modalities == ["spikes", "calcium"]  # primary: the spike dataset
    assert cfg.modality_of("cA") == "calcium" and cfg.modality_of("sA") == "spikes"
    (w, size, n), (w2, size2, n2) = cfg.grid_of("cA"), cfg.grid_of("sA")
    assert w == pytest.approx((-0.1, 0.4)) and size == 0.1 and n == 5
    assert w2 == pytest.approx((-0.1, 0.3)) and size2 == 0.02 and n2 == 20
    assert cfg.likelihood_of("calcium") == "gaussian" and cfg.likelihood_of("spikes") == "poisson"
    assert cfg.rope_time_unit == pytest.approx(0.02) and "generation" in cfg.objectives
    assert cfg.behavior_names == ["wheel_speed", "running_speed"] and "VISl" in cfg.region_vocab
    model = NfmForPretraining(cfg)
    assert model.nfm.session_module("cA").log_var is not None and model.nfm.session_module("sA").log_var is None
    cfg2 = NfmConfig.from_dict(cfg.to_dict())  # round trip through config.json
    assert cfg2.session_grid == cfg.session_grid and cfg2.session_modality == cfg.session_modality
    with pytest.raises(ValueError, match="unique across"):
        NfmConfig.from_dataset_metas([spk, spk])


def test_mixed_model_runs_each_modality_with_its_own_likelihood_and_refuses_mixed_batches():
    from nfm.models.modeling_nfm import masked_nll

    spk, cal = _two_metas()
    torch.manual_seed(0)
    cfg = NfmConfig.from_dataset_metas([spk, cal], hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=64, decoder_layers=1, modality_dropout=0.0,
                                       gen_windows_per_step=0)
    model = NfmForPretraining(cfg)
    sb = make_batch(spk, ["sA", "sB"], seed=0, region_vocab=cfg.region_vocab)
    cb = make_batch(cal, ["cA", "cA"], seed=1, region_vocab=cfg.region_vocab)
    sb["behavior"] = torch.cat([sb["behavior"], torch.full((2, 20, 1), float("nan"))], -1)  # model order
    cb["spikes"] = torch.randn_like(cb["spikes"])
    cb["behavior"] = torch.zeros(2, 5, 2)
    cb["stimulus"] = torch.full((2, 5, 1), float("nan"))
    out_s = model(**sb, generator=torch.Generator().manual_seed(0))
    out_c = model(**cb, generator=torch.Generator().manual_seed(0))
    assert out_s.id_loss is not None and out_s.log_rates is not None  # MtM + generation on spikes
    assert out_c.id_loss is None and out_c.means is not None and out_c.log_rates is None  # MtM only, Gaussian
    (out_s.loss + out_c.loss).backward()
    assert model.nfm.session_module("cA").log_var.grad is not None
    # the Gaussian NLL with the session's learned variance
    mask = sample_mask("neuron", cb["unit_mask"], cb["unit_region"], 5, cfg, torch.Generator().manual_seed(0))
    pred = model.nfm.predict_masked(cb["spikes"], mask=mask, unit_mask=cb["unit_mask"],
                                    unit_region=cb["unit_region"], session_ids=cb["session_ids"])
    assert pred.log_variance is not None and torch.isfinite(masked_nll(pred, cb["spikes"]))
    with pytest.raises(ValueError, match="one modality"):
        model.nfm.session_tables(["sA", "cA"], None, None, n_units=10)
    with pytest.raises(ValueError, match="T=20 bins .* n_bins=5"):
        model.nfm(sb["spikes"][:1, :, :7], session_ids=["cA"])
    with pytest.raises(ValueError, match="generation applies to spike sessions only"):
        model(**cb, objectives=["generation"])


# ------------------------------------------------------------------ missing stimulus / behaviour (issue 10)
@torch.no_grad()
def test_missing_modalities_are_masked_not_zero_filled():
    meta = make_meta()
    torch.manual_seed(0)
    model = NfmForPretraining(tiny_config(meta)).eval()
    assert model.config.modality_missing_indicators
    batch = make_batch(meta, ["sA", "sB"], seed=2)
    B, T = 2, 20
    ref = model.generation_outputs(**{**batch, "stimulus": None, "behavior": None})
    for stim, beh in ((torch.zeros(B, T, 0), torch.zeros(B, T, 0)),
                      (torch.full((B, T, 1), float("nan")), torch.full((B, T, 1), float("nan")))):
        out = model.generation_outputs(**{**batch, "stimulus": stim, "behavior": beh})  # absent = all NaN
        assert float(out.dt_loss) == pytest.approx(float(ref.dt_loss), rel=1e-6)
    zeros = model.generation_outputs(**{**batch, "stimulus": torch.zeros(B, T, 1), "behavior": torch.zeros(B, T, 1)})
    assert float(zeros.dt_loss) != pytest.approx(float(ref.dt_loss), rel=1e-6)  # an observed 0 is not "missing"
    assert ref.contrastive_loss is None  # nothing observed: no pairs to align
    dec = model.decoder
    stim = batch["stimulus"].clone()
    stim[0, :5] = float("nan")
    beh = batch["behavior"].clone()
    beh[0, :3] = float("nan")
    tokens, present = dec.modality_memory(stim, beh, B, T, "cpu")
    assert present[0, :3].logical_not().all() and present[0, 3:].all() and present[1].all()
    out = model.nfm(batch["spikes"], session_ids=batch["session_ids"], unit_mask=batch["unit_mask"],
                    prompt="generate")
    from nfm.models.tokenization import tokenize_events
    toks = tokenize_events(batch["event_times"], batch["event_units"], batch["event_mask"], window_s=0.04,
                           n_windows=10, dt_resolution=0.01)
    tables = model.nfm.session_tables(batch["session_ids"], batch["unit_mask"], batch["unit_region"])
    _, mem_mask, _ = dec.build_memory(out.last_hidden_state, tokens, toks, dec.unit_tokens(tables),
                                      torch.arange(10), present)
    P, w = dec.past_bins, dec.window_bins
    mod_slots = mem_mask[0, 1, 2 + P: 2 + P + P + w]  # window 1: bins 2 - P .. 3 (the first two are < 0)
    idx = 1 * w - P + torch.arange(P + w)
    assert torch.equal(mod_slots, (idx >= 3) & (idx >= 0))


def test_modality_dropout_only_in_training():
    meta = make_meta()
    model = NfmForPretraining(tiny_config(meta, modality_dropout=0.9))
    batch = make_batch(meta, ["sA"] * 64, seed=3)
    dec = model.decoder
    dec.train()
    torch.manual_seed(0)
    _, present = dec.modality_memory(batch["stimulus"], batch["behavior"], 64, 20, "cpu")
    dropped = (~present).all(1).float().mean()
    assert 0.7 < float(dropped) < 0.9  # both groups dropped: 0.81 expected
    dec.eval()
    _, present = dec.modality_memory(batch["stimulus"], batch["behavior"], 64, 20, "cpu")
    assert present.all()
    assert NfmConfig.from_dataset_meta(meta).modality_dropout == 0.2
    with pytest.raises(ValueError, match="modality_dropout"):
        tiny_config(meta, modality_dropout=1.0)
