"""The evaluation summary written by the recipes: the evaluation runner on a short task list, so it equals
``evaluate`` on the same model, data and tasks; co-bps checked by hand through the training forward pass."""
import json

import numpy as np
import pytest
import torch
from scipy.special import gammaln

from nfm.data.collate import NfmCollator
from nfm.data.hf import load_dataset
from nfm.evaluation.context import SessionData
from nfm.evaluation.masking_tasks import mask_plan
from nfm.evaluation.predictor import NfmPredictor
from nfm.evaluation.runner import evaluate
from nfm.evaluation.summary import SUMMARY_TASKS, end_of_training_summary
from nfm.models import NfmConfig, NfmForPretraining
from nfm.training import rows as dataset_rows
from training_fixtures import TINY_MODEL, make_tiny_dataset

IDS = ["synth-00-00", "synth-01-00"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    dd, meta = load_dataset(make_tiny_dataset(tmp_path_factory.mktemp("data") / "tiny"))
    return dd, meta.subset(IDS)


def _model(meta, **over):
    torch.manual_seed(0)
    return NfmForPretraining(NfmConfig.from_dataset_meta(meta, **{**TINY_MODEL, **over})).eval()


def test_summary_is_the_runner_on_the_same_tasks(tiny):
    dd, meta = tiny
    model = _model(meta)
    summary = end_of_training_summary(model, dd, meta, IDS, split="validation", batch_size=4)
    direct = evaluate(model, (dd, meta), tasks=list(SUMMARY_TASKS), split="validation", sessions=IDS, batch_size=4)
    assert set(summary["tasks"]) == set(SUMMARY_TASKS)
    assert json.dumps(summary["tasks"], sort_keys=True, default=float) == json.dumps(direct, sort_keys=True,
                                                                                      default=float)
    assert summary["tasks"]["co_smoothing"]["smoothing/bps"] is not None  # the NLB baseline beside the model
    assert set(summary["generation"]) == {"id_loss", "dt_loss"}
    temporal = _model(meta, mask_modes=["temporal"], objectives=["mtm"])
    t_summary = end_of_training_summary(temporal, dd, meta, IDS, split="validation", batch_size=4)
    assert "generation" not in t_summary and set(t_summary["tasks"]) == set(SUMMARY_TASKS)


def test_a_single_mode_model_is_scored_under_its_own_prompt(tiny):
    _, meta = tiny
    mtm = NfmPredictor(_model(meta))
    temporal = NfmPredictor(_model(meta, mask_modes=["temporal"], objectives=["mtm"]))
    assert [mtm.prompt_for(m) for m in ("neuron", "causal", "temporal", "none")] == \
        ["neuron", "causal", "neuron", "none"]
    assert [temporal.prompt_for(m) for m in ("neuron", "causal", "inter_region")] == ["temporal"] * 3


def test_co_smoothing_matches_a_hand_computation_through_the_training_forward(tiny):
    dd, meta = tiny
    model = _model(meta)
    res = evaluate(model, (dd, meta), tasks=["co_smoothing"], split="validation", sessions=IDS, batch_size=16)
    collator = NfmCollator.for_config(meta, model.config)
    num = den = 0.0
    for sid in IDS:
        idx = [i for i, s in enumerate(dd["validation"]["session_id"]) if s == sid]
        batch = collator(dataset_rows(dd["validation"], idx))
        n = meta.sessions[sid].n_units
        sd = SessionData(sid, ("validation",), batch["spikes"].double().numpy(), None, None, {}, np.arange(len(idx)),
                         np.asarray(meta.sessions[sid].regions), [batch], (None, None, None))
        plan = mask_plan({"mode": "neuron", "held_out_folds": 4, "seed": 0}, sd, model.config.n_bins,
                         model.config.bin_size)
        rates = np.zeros(batch["spikes"].shape)
        for fold in plan:  # the training forward pass with an explicit evaluation mask
            with torch.no_grad():
                out = model(**batch, mask=fold.expand(batch["unit_mask"]), objectives=["mtm"])
            sel = fold.target[0].numpy()
            rates[:, sel] = torch.exp(out.log_rates).numpy()[:, sel]
        counts = batch["spikes"].numpy()[..., :n].astype(np.float64)
        rates = rates[..., :n]
        null = counts.mean(axis=(0, 1), keepdims=True) * np.ones_like(counts)

        def nll(r):
            r = np.maximum(r, 1e-9)
            return float((r - counts * np.log(r) + gammaln(counts + 1)).sum())

        num += nll(null) - nll(rates)
        den += counts.sum() * np.log(2)
    assert res["co_smoothing"]["bps"] == pytest.approx(num / den, rel=1e-6, abs=1e-9)
