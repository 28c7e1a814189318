"""Mixed pretraining (issue 12): one model on a spike dataset and a 2-photon dataset at once, saved, reloaded and
evaluated on both; the weighted per-session sampler across datasets; YAML ``datasets:``."""
from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest
import yaml

from nfm.data.multi import MultiCollator, MultiDataset, WeightedSessionBatchSampler
from nfm.data.prepare import prepare
from training_fixtures import RECIPES, TINY_MODEL, make_tiny_dataset, tiny_args


def _pretrain():
    spec = importlib.util.spec_from_file_location("pretrain_recipe", RECIPES / "pretrain.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod.main


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed")
    spk = make_tiny_dataset(root / "spikes")
    cal = root / "calcium"
    prepare("synthetic", cal, world="calcium", progress=False,
            source_options=dict(n_animals=2, n_cells=10, n_trials=24, frame_rate=16.0))
    return root, spk, cal


def test_weighted_sampler_mixes_datasets_with_the_stated_weights():
    sids = ["a1"] * 40 + ["a2"] * 40 + ["b1"] * 16
    of_row = [0] * 80 + [1] * 16
    natural = WeightedSessionBatchSampler(sids, of_row, batch_size=8, seed=0)
    assert list(natural.batches_per_dataset) == [10, 2] and len(natural) == 12
    s = WeightedSessionBatchSampler(sids, of_row, batch_size=8, weights=[1, 1], seed=0)
    assert list(s.batches_per_dataset) == [6, 6]
    batches = list(s)
    assert len(batches) == 12
    from_b = [b for b in batches if b[0] >= 80]
    assert len(from_b) == 6 and all(len({sids[i] for i in b}) == 1 for b in batches)  # one session per batch
    assert {i for b in from_b for i in b} == set(range(80, 96))  # b's trials repeated, all of them seen
    s.set_epoch(1)
    assert list(s) != batches  # reshuffled per epoch, deterministic in seed + epoch
    s.set_epoch(0)
    assert list(s) == batches
    ranks = [list(WeightedSessionBatchSampler(sids, of_row, 8, weights=[1, 1], seed=0, num_replicas=2, rank=r))
             for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 6
    with pytest.raises(ValueError, match="2 positive numbers"):
        WeightedSessionBatchSampler(sids, of_row, 8, weights=[1, 0])
    assert "weight 0.500" in s.describe(["A", "B"])


def test_multi_dataset_rows_and_collator(data):
    from nfm.data.collate import NfmCollator
    from nfm.data.hf import load_dataset
    from nfm.models import NfmConfig

    _, spk, cal = data
    (dd1, m1), (dd2, m2) = load_dataset(spk), load_dataset(cal)
    ds = MultiDataset([dd1["train"], dd2["train"]], ["spikes", "calcium"])
    assert len(ds) == len(dd1["train"]) + len(dd2["train"])
    i = len(dd1["train"]) + 2
    assert ds[i]["session_id"] == dd2["train"][2]["session_id"]
    rows = ds.__getitems__([i, 0, i + 1])
    assert [r["session_id"] for r in rows] == [dd2["train"][2]["session_id"], dd1["train"][0]["session_id"],
                                              dd2["train"][3]["session_id"]]
    cfg = NfmConfig.from_dataset_metas([m1, m2], **TINY_MODEL)
    coll = MultiCollator([NfmCollator.for_config(m, cfg) for m in (m1, m2)])
    sid = dd2["train"][2]["session_id"]
    b = coll([r for r in ds.__getitems__(range(len(dd1["train"]), len(ds))) if r["session_id"] == sid][:3])
    assert b["spikes"].shape[1] == m2.n_bins and b["bin_size"] == pytest.approx(m2.bin_size)
    assert b["behavior"].shape[2] == len(cfg.behavior_names)  # the model's variables, NaN where absent
    assert cfg.stimulus_names == ["signed_contrast", "direction_cos", "direction_sin"]
    stim = b["stimulus"].numpy()
    assert np.isnan(stim[..., 0]).all() and np.isfinite(stim[..., 1:]).all()  # the spike rig's contrast: absent
    with pytest.raises(ValueError, match="mixes rows of several datasets"):
        coll([ds[0], ds[i]])


@pytest.mark.slow
def test_pretrain_on_spikes_and_calcium_together_save_reload_evaluate(data):
    """Done-when of issue 12: one model pretrained on a spike dataset and a 2-photon dataset together, saved,
    reloaded (AutoModelForPreTraining) and evaluated on both with the evaluation runner."""
    from transformers import AutoModelForPreTraining

    from nfm.evaluation.runner import evaluate
    from nfm.models import register_auto_classes

    root, spk, cal = data
    out = root / "run"
    cfg = root / "mixed.yaml"
    cfg.write_text(yaml.safe_dump({"datasets": [str(spk), str(cal)], "dataset_weights": [1.0, 1.0]}))
    args = tiny_args(spk, out, max_steps=6, eval_max_trials=3, eval_tasks="co_smoothing")
    i = args.index("--dataset")
    del args[i:i + 2]  # the datasets come from the YAML
    assert _pretrain()(["--config", str(cfg)] + args) == 0
    summary = json.loads((out / "eval_summary.json").read_text())
    assert set(summary["datasets"]) == {"spikes", "calcium"}
    assert "bps" in summary["datasets"]["spikes"]["tasks"]["co_smoothing"]
    assert "r2" in summary["datasets"]["calcium"]["tasks"]["co_smoothing"]
    assert "generation" in summary["datasets"]["spikes"] and "generation" not in summary["datasets"]["calcium"]
    register_auto_classes()
    model = AutoModelForPreTraining.from_pretrained(out)
    c = model.config
    assert c.modalities == ["spikes", "calcium"] and c.modality_of("synth-2p-00") == "calcium"
    assert c.grid_of("synth-2p-00")[1] == pytest.approx(2.0 / 33) and c.grid_of("synth-00-00")[1] == 0.02
    res_s = evaluate(model, spk, tasks="co_smoothing,forward_prediction", split="test", sessions="known",
                     max_trials=3)
    res_c = evaluate(model, cal, tasks="co_smoothing,forward_prediction", split="test", max_trials=3)
    assert np.isfinite(res_s["co_smoothing"]["bps"]) and np.isfinite(res_s["forward_prediction"]["bps"])
    assert np.isfinite(res_c["co_smoothing"]["r2"]) and np.isfinite(res_c["co_smoothing"]["gaussian_nll"])
    assert np.isfinite(res_c["forward_prediction"]["r2"])
    # the summary at the end of training is the runner's number for the same model and data
    again = evaluate(model, cal, tasks="co_smoothing", split="validation", max_trials=3)
    assert again["co_smoothing"]["r2"] == pytest.approx(summary["datasets"]["calcium"]["tasks"]["co_smoothing"]["r2"],
                                                        rel=1e-5, abs=1e-6)
