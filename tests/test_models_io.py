"""Config from meta, save/load bit-exact (safetensors only), Auto classes, offline Hub-id load, add_session."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers

from models_fixtures import make_batch, make_meta, setup_module_common, tiny_config
from nfm.models import (AUTO_CLASSES, NfmConfig, NfmForBehaviorDecoding, NfmForMaskedModeling, NfmForPretraining,
                        NfmForSpikeGeneration, NfmModel)
from nfm.models.masking import sample_mask

REPO = Path(__file__).resolve().parents[1]


def setup_module():
    setup_module_common()


def _mask(batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    return sample_mask("neuron", batch["unit_mask"], batch["unit_region"], 20, generator=g)


def test_config_from_meta():
    meta = make_meta({"s-1": ["VISp", "CA1"], "s.2": ["LP"] * 2, "s3": ["CA1", "unknown", "VISp"]})
    cfg = NfmConfig.from_dataset_meta(meta, hidden_size=64, num_attention_heads=4)
    assert cfg.session_n_units == {"s-1": 2, "s.2": 2, "s3": 3}
    assert cfg.region_vocab == ["unknown", "CA1", "LP", "VISp"]
    assert (cfg.bin_size, cfg.n_bins, cfg.behavior_names, cfg.stimulus_names, cfg.trial_label_names) == (
        0.02, 20, ["wheel_speed"], ["signed_contrast"], ["choice"])
    assert cfg.hidden_size == 64 and cfg.likelihood == "poisson"
    assert NfmConfig.from_dataset_meta(meta, preset="mtm").hidden_size == 512
    coarse = NfmConfig.from_dataset_meta(meta, bin_size=0.04)  # spike data re-binned: the grid is the config's
    assert (coarse.bin_size, coarse.n_bins, coarse.window) == (0.04, 10, list(meta.window))
    with pytest.raises(TypeError, match="needs a DatasetMeta"):
        NfmConfig.from_dataset_meta({"bin_size": 0.02})
    with pytest.raises(ValueError, match="n_bins comes from the dataset's time grid"):
        NfmConfig.from_dataset_meta(meta, n_bins=50)
    with pytest.raises(ValueError, match="n_bins"):
        NfmConfig(bin_size=0.02, n_bins=20, window=[0.0, 2.0])  # 2 s / 20 ms = 100 bins
    with pytest.raises(ValueError, match="hidden_size"):
        NfmConfig(hidden_size=30, num_attention_heads=4)


def test_sessions_with_equal_unit_counts_get_their_own_parameters():
    # MtM keyed stitchers by neuron count; two sessions with 6 units must not share parameters
    meta = make_meta({"x": ["LP"] * 6, "y": ["LP"] * 6})
    model = NfmModel(tiny_config(meta))
    assert len(model.sessions) == 2
    a = model(**make_batch(meta, ["x"], seed=1)).last_hidden_state
    b = model(**{**make_batch(meta, ["x"], seed=1), "session_ids": ["y"]}).last_hidden_state
    assert not torch.allclose(a, b)


def test_save_load_bit_exact_safetensors_only(tmp_path):
    torch.manual_seed(0)
    meta = make_meta()
    model = NfmForPretraining(tiny_config(meta)).eval()
    batch = make_batch(meta, ["sA", "sB"], seed=2)
    mask = _mask(batch)
    ref = model(**batch, mask=mask)
    model.save_pretrained(tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["config.json", "model.safetensors"], files
    loaded = NfmForPretraining.from_pretrained(tmp_path).eval()
    sd0, sd1 = model.state_dict(), loaded.state_dict()
    assert sd0.keys() == sd1.keys()
    assert all(torch.equal(sd0[k], sd1[k]) for k in sd0)
    out = loaded(**batch, mask=mask)
    assert torch.equal(out.log_rates, ref.log_rates) and torch.equal(out.id_logits, ref.id_logits)
    assert torch.equal(out.loss, ref.loss)
    # a pickle checkpoint is refused (nothing on the load path unpickles)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((tmp_path / "config.json").read_text())
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    with pytest.raises(OSError):
        NfmForPretraining.from_pretrained(pickled)
    with pytest.raises(ValueError, match="safetensors"):
        NfmForPretraining.from_pretrained(tmp_path, use_safetensors=False)


def test_auto_classes_round_trip(tmp_path):
    torch.manual_seed(0)
    meta = make_meta()
    model = NfmForPretraining(tiny_config(meta)).eval()
    model.save_pretrained(tmp_path)
    assert isinstance(transformers.AutoConfig.from_pretrained(tmp_path), NfmConfig)
    for auto_name, cls in AUTO_CLASSES.items():
        loaded = getattr(transformers, auto_name).from_pretrained(tmp_path)
        assert type(loaded) is cls, auto_name
    backbone = transformers.AutoModel.from_pretrained(tmp_path).eval()
    for k, v in model.nfm.state_dict().items():
        assert torch.equal(backbone.state_dict()[k], v), k
    batch = make_batch(meta, ["sA"], seed=1)
    assert torch.equal(backbone(**batch).last_hidden_state, model.nfm(**batch).last_hidden_state)
    # task heads initialised on top of a pretrained backbone keep its weights
    dec = NfmForBehaviorDecoding.from_pretrained(tmp_path)
    assert torch.equal(dec.nfm.region_embed.weight, model.nfm.region_embed.weight)
    gen = transformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    assert torch.equal(gen.decoder.dt_head.weight, model.decoder.dt_head.weight)


@pytest.mark.slow
def test_load_by_hub_id_offline(tmp_path):
    torch.manual_seed(0)
    meta = make_meta()
    model = NfmForMaskedModeling(tiny_config(meta))
    rev = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--nfm-test--tiny-nfm"
    snap = repo / "snapshots" / rev
    model.save_pretrained(snap)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(rev)
    expected = float(sum(p.detach().double().sum() for p in model.nfm.parameters()))
    code = (
        "import transformers, torch\n"
        "transformers.utils.logging.set_verbosity_error()\n"
        "from nfm.models import register_auto_classes; register_auto_classes()\n"
        "m = transformers.AutoModel.from_pretrained('nfm-test/tiny-nfm')\n"
        "print(type(m).__name__, repr(float(sum(p.double().sum() for p in m.parameters()))))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"),
           "HF_HOME": str(tmp_path / "hf_home"), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    name, total = res.stdout.split()
    assert name == "NfmModel" and float(total) == expected
    # and an id that is not in the cache fails offline instead of reaching the network
    res = subprocess.run([sys.executable, "-c", code.replace("tiny-nfm", "absent")], env=env, capture_output=True,
                         text=True, cwd=tmp_path, timeout=120)
    assert res.returncode != 0


def test_add_session_leaves_old_outputs_unchanged(tmp_path):
    torch.manual_seed(0)
    meta = make_meta()
    model = NfmForPretraining(tiny_config(meta))
    batch = make_batch(meta, ["sA", "sB"], seed=3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(3):  # "after training": a few optimiser steps first
        opt.zero_grad()
        model(**batch).loss.backward()
        opt.step()
    model.eval()
    mask = _mask(batch)
    before = model(**batch, mask=mask)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    n_before = sum(p.numel() for p in model.parameters())
    idx = model.add_session("new-animal", 5, regions=["VISp", "VISp", "RSP", "CA1", "RSP"])
    assert idx.tolist() == [3, 3, 4, 1, 4]  # RSP appended to the vocabulary
    assert model.config.region_vocab[-1] == "RSP" and model.config.session_n_units["new-animal"] == 5
    after = model(**batch, mask=mask)
    assert torch.equal(after.log_rates, before.log_rates) and torch.equal(after.id_logits, before.id_logits)
    sd = model.state_dict()
    for k, v in state.items():  # old parameters untouched (region tables: old rows identical)
        assert torch.equal(sd[k][: v.shape[0]], v), k
    added = sum(p.numel() for p in model.parameters()) - n_before
    H = model.config.hidden_size
    assert added == 5 * (2 * H + 2) + H + 3 * H  # unit/readout rows, 2 biases, session token, 3 region rows
    with pytest.raises(ValueError, match="already"):
        model.add_session("new-animal", 5)
    # the new session runs in a batch mixed with an old one and survives save/load
    meta_new = make_meta({"sA": meta.sessions["sA"].units["region"], "new-animal": ["VISp"] * 5})
    mixed = make_batch(meta_new, ["sA", "new-animal"], seed=4, region_vocab=model.config.region_vocab)
    mixed["unit_region"][1, :5] = idx
    out = model(**mixed)
    assert torch.isfinite(out.loss)
    model.save_pretrained(tmp_path)
    again = NfmForPretraining.from_pretrained(tmp_path).eval()
    m2 = _mask(mixed, 1)
    assert torch.equal(again(**mixed, mask=m2).log_rates, model(**mixed, mask=m2).log_rates)
    assert json.loads((tmp_path / "config.json").read_text())["session_n_units"]["new-animal"] == 5


def test_spike_generation_and_behavior_heads_share_backbone_names():
    meta = make_meta()
    cfg = tiny_config(meta)
    keys = set(NfmForSpikeGeneration(cfg).state_dict())
    assert keys == set(NfmForPretraining(cfg).state_dict())
    assert {k for k in keys if k.startswith("nfm.")} == {f"nfm.{k}" for k in NfmModel(cfg).state_dict()}


def test_top_level_names_and_a_light_import():
    """``import nfm`` loads no torch/transformers; the model classes come from the top level, and the Auto classes
    know nfm as soon as transformers' Auto modules are imported (stand-ins until the classes load)."""
    code = ("import sys, nfm\n"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n"
            "from transformers import AutoConfig, AutoModelForPreTraining\n"
            "from nfm import NfmConfig, NfmForPretraining, NfmModel\n"
            "import nfm.models as m\n"
            "assert type(AutoConfig.for_model('nfm')) is NfmConfig\n"
            "cfg = NfmConfig(session_n_units={'s': 3}, hidden_size=16, num_attention_heads=2, intermediate_size=16,"
            " num_hidden_layers=1, decoder_layers=1)\n"
            "model = AutoModelForPreTraining.from_config(cfg)\n"
            "assert type(model) is NfmForPretraining, type(model)\n"
            "print('ok')\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]
