"""Data-dependent session init (read-out biases at the mean rate, read-in standardisation) and the
``objectives=`` argument of NfmForPretraining.forward."""
import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from nfm.data.hf import load_dataset
from nfm.models import NfmConfig, NfmForPretraining
from nfm.data.collate import NfmCollator
from nfm.training import init_sessions_from_data, session_statistics, subset_split
from nfm.training import rows as dataset_rows
from training_fixtures import TINY_MODEL, make_tiny_dataset

IDS = ["synth-00-00", "synth-01-00"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    dd, meta = load_dataset(make_tiny_dataset(tmp_path_factory.mktemp("data") / "tiny"))
    return subset_split(dd["train"], IDS), meta.subset(IDS)


def _model(meta, **over):
    torch.manual_seed(0)
    return NfmForPretraining(NfmConfig.from_dataset_meta(meta, **{**TINY_MODEL, **over}))


def _session_counts(ds, meta, sid, bin_size=None):
    collator = NfmCollator(meta, bin_size=bin_size)
    rows = [i for i, s in enumerate(ds["session_id"]) if s == sid]
    n = meta.sessions[sid].n_units
    return collator(dataset_rows(ds, rows))["spikes"].numpy()[..., :n].astype(np.float64)


@pytest.mark.parametrize("bin_size", [None, 0.04])
def test_session_statistics_match_the_collated_counts(tiny, bin_size):
    ds, meta = tiny
    stats = session_statistics(ds, meta, bin_size=bin_size, transform=torch.log1p)
    assert set(stats) == set(IDS)
    for sid in IDS:
        x = _session_counts(ds, meta, sid, bin_size)
        assert x.sum() > 0
        np.testing.assert_allclose(stats[sid]["mean"], x.mean((0, 1)), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(stats[sid]["input_mean"], np.log1p(x).mean((0, 1)), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(stats[sid]["input_std"], np.log1p(x).std((0, 1)), rtol=1e-5, atol=1e-7)


def test_init_sets_biases_and_standardises_the_read_in(tiny):
    ds, meta = tiny
    model = _model(meta, input_transform="none")
    ref = _model(meta, input_transform="none")  # same weights, no statistics
    assert init_sessions_from_data(model, ds, meta) == IDS
    stats = session_statistics(ds, meta)
    sid = IDS[1]
    mod = model.nfm.session_module(sid)
    mean, mu, sd = stats[sid]["mean"], stats[sid]["input_mean"], stats[sid]["input_std"]
    np.testing.assert_allclose(mod.readout_bias.detach().numpy(), np.log(np.maximum(mean, 1e-3)), rtol=1e-5)
    assert float(torch.logsumexp(mod.id_bias.detach(), 0)) == pytest.approx(0.0, abs=1e-5)
    np.testing.assert_allclose(mod.input_scale.numpy(), 1 / np.maximum(sd, 0.05), rtol=1e-5)
    # the read-in sees (x - mean) * scale: equal to the un-initialised model fed standardised counts
    ref.load_state_dict({k: v for k, v in model.state_dict().items() if "input_" not in k}, strict=False)
    model.eval()
    ref.eval()
    x = torch.from_numpy(_session_counts(ds, meta, sid)).float()
    z = (x - torch.from_numpy(mu).float()) * mod.input_scale
    hidden = torch.zeros_like(x, dtype=torch.bool)
    hidden[..., 0] = True  # a hidden unit enters as 0 in both (= its mean for the standardised model)
    um = torch.ones(x.shape[0], x.shape[2], dtype=torch.bool)
    with torch.no_grad():
        a = model.nfm(x, unit_mask=um, session_ids=sid, hidden_mask=hidden, prompt="neuron").last_hidden_state
        b = ref.nfm(z, unit_mask=um, session_ids=sid, hidden_mask=hidden, prompt="neuron").last_hidden_state
        plain = ref.nfm(x, unit_mask=um, session_ids=sid, hidden_mask=hidden, prompt="neuron").last_hidden_state
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(a, plain, atol=1e-3)


def test_init_only_touches_the_named_sessions(tiny):
    ds, meta = tiny
    model = _model(meta)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert init_sessions_from_data(model, ds, meta, session_ids=[IDS[0]]) == [IDS[0]]
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    key0 = model.nfm.sessions
    own = {f"nfm.sessions.{k}." for k in key0 if key0[k] is model.nfm.session_module(IDS[0])}
    assert changed and all(any(c.startswith(p) for p in own) for c in changed)
    with pytest.raises(ValueError, match="has 3 entries"):
        model.init_session_statistics(IDS[0], np.ones(3))
    with pytest.raises(ValueError, match="negative"):
        model.init_session_statistics(IDS[0], -np.ones(meta.sessions[IDS[0]].n_units))


def test_checkpoint_without_statistics_loads_as_identity(tiny, tmp_path):
    _, meta = tiny
    model = _model(meta)
    n = meta.sessions[IDS[0]].n_units
    model.init_session_statistics(IDS[0], np.full(n, 0.2), np.full(n, 0.1), np.full(n, 0.5))
    model.save_pretrained(tmp_path)
    loaded = NfmForPretraining.from_pretrained(tmp_path).nfm.session_module(IDS[0])
    assert torch.allclose(loaded.input_mean, torch.full((n,), 0.1)) and torch.allclose(loaded.input_scale, torch.full((n,), 2.0))
    path = os.path.join(tmp_path, "model.safetensors")  # a checkpoint written before the statistics existed
    save_file({k: v for k, v in load_file(path).items() if "input_" not in k}, path, metadata={"format": "pt"})
    old = NfmForPretraining.from_pretrained(tmp_path).nfm.session_module(IDS[0])
    assert torch.equal(old.input_mean, torch.zeros(n)) and torch.equal(old.input_scale, torch.ones(n))


def test_forward_objectives_argument(tiny):
    ds, meta = tiny
    model = _model(meta)
    model.eval()
    batch = NfmCollator.for_config(meta, model.config)(dataset_rows(ds, [0, 1, 2]))
    with torch.no_grad():
        full = model(**batch, mask_mode="neuron", generator=torch.Generator().manual_seed(3))
        mtm = model(**batch, mask_mode="neuron", generator=torch.Generator().manual_seed(3), objectives=["mtm"])
        gen = model(**batch, objectives="generation")
    assert mtm.id_loss is None and mtm.mtm_loss is not None
    assert float(mtm.loss) == pytest.approx(float(full.mtm_loss), rel=1e-6)
    assert gen.mtm_loss is None and float(gen.loss) == pytest.approx(float(full.loss - full.mtm_loss), rel=1e-5)
    assert model.config.objectives == ["mtm", "generation"]
    with pytest.raises(ValueError, match="subset"):
        _model(meta, objectives=["mtm"])(**batch, objectives=["generation"])
