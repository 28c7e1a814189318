"""2-photon evaluation: same-frame ridge (co-smoothing analogue) and PSTH-by-condition baselines, decoding from
latents vs dF/F directly, trial-label names mapped with the task option ``column_map``."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nfm.data.hf import build_dataset
from nfm.data.sources.synthetic import make_calcium_world
from nfm.evaluation.baselines import ConditionPSTH, SameFrameRidge
from nfm.evaluation.runner import evaluate
from nfm.models import NfmConfig, NfmForMaskedModeling

TINY = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)


def test_same_frame_ridge_recovers_a_linear_readout_with_cv_on_train_only():
    rng = np.random.default_rng(0)
    W = rng.standard_normal((6, 2))
    x = rng.standard_normal((40, 10, 6))
    y = x @ W + 0.1 * rng.standard_normal((40, 10, 2))
    valid = np.ones_like(x, bool)
    valid[0, 0, 0] = False
    x_bad = x.copy()
    x_bad[0, 0, 0] = 1e6  # a bad frame: filled with the ROI's mean, never used as a value
    m = SameFrameRidge().fit(x_bad[:30], y[:30], valid[:30], None)
    pred = m.predict(x[30:])
    r2 = 1 - ((pred - y[30:]) ** 2).sum() / ((y[30:] - y[30:].mean((0, 1))) ** 2).sum()
    assert r2 > 0.95 and m.alpha <= 1.0
    np.testing.assert_allclose(m.var, 0.01, rtol=0.3)


def test_condition_psth_means_and_unseen_conditions():
    act = np.arange(4 * 3 * 2, dtype=float).reshape(4, 3, 2)
    labels = np.array([0.0, 1.0, 0.0, np.nan])
    m = ConditionPSTH().fit(act, labels)
    np.testing.assert_allclose(m.predict([0.0])[0], act[[0, 2]].mean(0))
    np.testing.assert_allclose(m.predict([5.0])[0], act.mean(0))  # unseen: the grand training mean
    np.testing.assert_allclose(m.predict([np.nan])[0], act.mean(0))


@pytest.fixture(scope="module")
def cal():
    sessions = make_calcium_world(n_animals=1, n_cells=12, n_trials=48, seed=2)
    dd, meta = build_dataset(sessions, window=(-0.5, 1.5), bin_size=0.1)
    torch.manual_seed(0)
    model = NfmForMaskedModeling(NfmConfig.from_dataset_meta(meta, **TINY)).eval()
    return sessions, dd, meta, model


def test_calcium_masking_reports_ridge_and_psth_baselines(cal, tmp_path):
    _, dd, meta, model = cal
    res = evaluate(model, (dd, meta), tasks="co_smoothing,forward_prediction", output=tmp_path / "r.json")
    co, fp = res["co_smoothing"], res["forward_prediction"]
    for prefix in ("", "null/", "ridge/", "psth/"):
        assert np.isfinite(co[f"{prefix}r2"]) and np.isfinite(co[f"{prefix}gaussian_nll"]), prefix
    assert co["null/r2"] == 0.0
    # tuned cells: the condition mean and the other ROIs in the same frame both beat the per-ROI mean
    assert co["psth/r2"] > 0.05 and co["ridge/r2"] > 0.05
    assert co["psth/delta_nll"] > 0 and co["ridge/delta_nll"] > 0
    assert np.isfinite(fp["psth/r2"]) and "ridge/r2" not in fp  # no same-frame regressors in a forward mask
    text = (tmp_path / "r.md").read_text()
    assert "ridge/r2" in text and "psth baseline" in text


def test_direction_decoding_from_latents_vs_dff_and_a_renamed_column(cal):
    _, _, _, model = cal
    s = make_calcium_world(n_animals=1, n_cells=12, n_trials=120, seed=3)[0]  # every direction >= 4 trials
    s.trials = {("direction" if k == "stimulus_direction" else k): v for k, v in s.trials.items()}  # other rig
    dd, meta = build_dataset([s], window=(-0.5, 1.5), bin_size=0.1)
    fast = {"decoder": {"n_splits": 2, "Cs": [1.0]}}
    res = evaluate(model, (dd, meta), tasks="stimulus_direction", task_overrides={"stimulus_direction": fast})
    assert "column_map.stimulus_direction" in res["stimulus_direction"]["not_applicable"]
    res = evaluate(model, (dd, meta), tasks="stimulus_direction,psth_r2", task_overrides={
        "stimulus_direction": {**fast, "column_map": {"stimulus_direction": "direction"}},
        "psth_r2": {"column_map": {"stimulus_direction": "direction"}}})
    sd = res["stimulus_direction"]
    assert {"latents/accuracy", "activity/accuracy", "chance"} <= set(sd)
    assert sd["activity/accuracy"] > sd["chance"] + 0.2  # direction-tuned ROIs: dF/F decodes it directly
    assert np.isfinite(res["psth_r2"]["psth_r2"])
