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
