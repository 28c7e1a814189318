"""The evaluation summary written by the recipes: same tasks for every model, co-bps checked by hand."""
import numpy as np
import pytest
import torch
from scipy.special import gammaln

from nfm.data.hf import load_dataset
from nfm.models import NfmConfig, NfmForPretraining
from nfm.models.masking import held_out_units_mask
from nfm.training import EVAL_MASK_MODES, _rows, evaluate_summary, heldout_units, make_collator, subset_meta, subset_split
from training_fixtures import TINY_MODEL, make_tiny_dataset


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    dd, meta = load_dataset(make_tiny_dataset(tmp_path_factory.mktemp("data") / "tiny"))
    ids = ["synth-00-00", "synth-01-00"]
    return subset_split(dd["validation"], ids), subset_meta(meta, ids)


def _model(meta, **over):
    torch.manual_seed(0)
    return NfmForPretraining(NfmConfig.from_dataset_meta(meta, **{**TINY_MODEL, **over}))


def test_every_model_is_scored_on_the_same_tasks(tiny):
    ds, meta = tiny
    mtm = evaluate_summary(_model(meta), ds, meta, batch_size=4)
    temporal = evaluate_summary(_model(meta, mask_modes=["temporal"], objectives=["mtm"]), ds, meta, batch_size=4)
    assert set(mtm["masked_loss"]) == set(temporal["masked_loss"]) == set(EVAL_MASK_MODES)
    assert mtm["masked_loss_prompts"] == {"neuron": "neuron", "causal": "causal", "intra_region": "intra_region",
                                          "inter_region": "inter_region", "temporal": "neuron"}  # MtM's modes exclude temporal
    assert set(temporal["masked_loss_prompts"].values()) == {"temporal"}
    assert temporal["co_smoothing_prompt"] == "temporal" and mtm["co_smoothing_prompt"] == "neuron"
    assert "generation" in mtm and "generation" not in temporal
    assert mtm["n_trials"] == len(ds) == 4  # 2 validation trials per session


def test_co_smoothing_matches_a_hand_computation(tiny):
    ds, meta = tiny
    model = _model(meta)
    summary = evaluate_summary(model, ds, meta, batch_size=16, seed=5)
    model.eval()
    collator = make_collator(meta, model.config)
    for sid, value in summary["co_smoothing_per_session"].items():
        rows = [i for i, s in enumerate(ds["session_id"]) if s == sid]
        batch = collator(_rows(ds, rows))
        n = meta["sessions"][sid]["n_units"]
        held = heldout_units(n, 0.25, 5, sid)
        mask = torch.zeros_like(batch["unit_mask"])
        mask[:, held] = True
        with torch.no_grad():
            out = model(**batch, mask=held_out_units_mask(batch["unit_mask"], mask, batch["spikes"].shape[1]))
        rates = torch.exp(out.log_rates).numpy()[..., held].astype(np.float64)
        counts = batch["spikes"].numpy()[..., held].astype(np.float64)
        null = counts.mean(axis=(0, 1), keepdims=True) * np.ones_like(counts)

        def nll(r):
            r = np.maximum(r, 1e-9)
            return float((r - counts * np.log(r) + gammaln(counts + 1)).sum())

        expected = (nll(null) - nll(rates)) / (counts.sum() * np.log(2))
        assert value == pytest.approx(expected, rel=1e-6, abs=1e-9), sid
