"""No future leakage (causal MtM and generation), KV cache == no cache, closed-loop generation."""
import pytest
import torch

from models_fixtures import make_batch, make_meta, setup_module_common, tiny_config
from nfm.models import NfmForMaskedModeling, NfmForSpikeGeneration
from nfm.models.masking import causal_mask, temporal_mask
from nfm.models.tokenization import bin_events


def setup_module():
    setup_module_common()


@pytest.fixture(scope="module")
def gen_setup():
    torch.manual_seed(0)
    meta = make_meta()
    model = NfmForSpikeGeneration(tiny_config(meta)).eval()
    batch = make_batch(meta, ["sA", "sB"], seed=0, rate_hz=15.0)
    return meta, model, batch


def _perturb_after(batch, t_cut, seed=1):
    """Replace every spike at or after t_cut (s) by different random ones (counts and events stay consistent)."""
    g = torch.Generator().manual_seed(seed)
    b2 = dict(batch)
    keep = batch["event_mask"] & (batch["event_times"] < t_cut)
    B, E = batch["event_times"].shape
    dur = batch["spikes"].shape[1] * 0.02
    new_t = t_cut + torch.rand(B, 25, generator=g) * (dur - t_cut - 1e-4)
    new_u = torch.stack([torch.randint(0, int(batch["unit_mask"][b].sum()), (25,), generator=g) for b in range(B)])
    t = torch.cat([torch.where(keep, batch["event_times"], torch.zeros_like(batch["event_times"])), new_t], 1)
    u = torch.cat([batch["event_units"], new_u], 1)
    m = torch.cat([keep, torch.ones(B, 25, dtype=torch.bool)], 1)
    order = torch.argsort(torch.where(m, t, torch.full_like(t, 1e9)), dim=1, stable=True)
    b2["event_times"], b2["event_units"], b2["event_mask"] = t.gather(1, order), u.gather(1, order), m.gather(1, order)
    b2["spikes"] = bin_events(b2["event_times"], b2["event_units"], b2["event_mask"], n_bins=batch["spikes"].shape[1],
                              n_units=batch["spikes"].shape[2], bin_size=0.02)
    return b2


def test_causal_mode_has_no_future_leakage():
    torch.manual_seed(0)
    meta = make_meta()
    model = NfmForMaskedModeling(tiny_config(meta)).eval()
    batch = make_batch(meta, ["sA", "sB"], seed=3)
    t_cut = 9  # bins
    later = batch["spikes"].clone()
    later[:, t_cut:] = torch.poisson(torch.full_like(later[:, t_cut:], 2.0))
    g = torch.Generator().manual_seed(0)
    for sampler, leaks in ((causal_mask, False), (temporal_mask, True)):
        mask = sampler(batch["unit_mask"], 20, 0.5, g)
        a = model(**batch, mask=mask).log_rates
        b = model(**{**batch, "spikes": later}, mask=mask).log_rates
        assert not torch.allclose(a[:, t_cut:], b[:, t_cut:])
        # causal: outputs before the cut identical; bidirectional (temporal) mode: they change
        assert torch.allclose(a[:, :t_cut], b[:, :t_cut], atol=1e-6) is not leaks


def test_generation_logits_have_no_future_leakage(gen_setup):
    _, model, batch = gen_setup
    k_cut = 4  # windows of 0.04 s
    t_cut = k_cut * model.config.gen_window
    with torch.no_grad():
        a = model(**batch)
        b = model(**_perturb_after(batch, t_cut))
        c = model(**_perturb_after(batch, t_cut - 0.06))  # earlier cut: must change earlier windows
    q = min(a.target_mask.shape[-1], b.target_mask.shape[-1])
    valid = a.target_mask[:, :k_cut]
    assert not valid[..., q:].any()
    valid = valid[..., :q]
    assert torch.equal(valid, b.target_mask[:, :k_cut, :q])
    for name in ("dt_logits", "id_logits"):
        x, y = getattr(a, name)[:, :k_cut, :q], getattr(b, name)[:, :k_cut, :q]
        assert torch.equal(torch.isinf(x[valid]), torch.isinf(y[valid]))
        assert torch.allclose(x[valid].nan_to_num(0, 0, 0), y[valid].nan_to_num(0, 0, 0), atol=1e-5)
    assert not torch.allclose(a.dt_logits[:, k_cut - 1, 0], c.dt_logits[:, k_cut - 1, 0], atol=1e-5)


def test_greedy_kv_cache_equals_no_cache(gen_setup):
    _, model, batch = gen_setup
    kw = dict(start_window=3, n_windows=2, do_sample=False, min_events=6, max_events=14)
    with_cache = model.generate(**batch, use_cache=True, **kw)
    no_cache = model.generate(**batch, use_cache=False, **kw)
    assert (with_cache.n_events >= 6).all()
    assert torch.equal(with_cache.token_units, no_cache.token_units)
    assert torch.equal(with_cache.token_dts, no_cache.token_dts)
    # sampling with the same generator seed also agrees token for token
    s1 = model.generate(**batch, use_cache=True, start_window=3, n_windows=1, top_k=5, top_p=0.9, max_events=10,
                        generator=torch.Generator().manual_seed(7))
    s2 = model.generate(**batch, use_cache=False, start_window=3, n_windows=1, top_k=5, top_p=0.9, max_events=10,
                        generator=torch.Generator().manual_seed(7))
    assert torch.equal(s1.token_units, s2.token_units) and torch.equal(s1.token_dts, s2.token_dts)


def test_closed_loop_ten_windows_feeds_back_its_spikes(gen_setup):
    _, model, batch = gen_setup
    cfg = model.config
    w = cfg.window_bins
    out = model.generate(**batch, start_window=0, n_windows=10, do_sample=False, min_events=1, max_events=5)
    assert out.token_units.shape[:2] == (2, 10) and (out.n_events >= 1).all()
    # returned spikes are exactly the binned generated events (the data were replaced)
    binned = bin_events(out.event_times, out.event_units, out.event_mask, n_bins=20,
                        n_units=batch["spikes"].shape[2], bin_size=cfg.bin_size)
    assert torch.equal(out.spikes, binned)
    assert not torch.equal(out.spikes, batch["spikes"])
    # each window, regenerated alone from the closed-loop past (generated spikes + events), gives the same tokens:
    # the closed loop conditioned on its own output
    for k in (1, 5, 9):
        single = model.generate(**{**batch, "spikes": out.spikes, "event_times": out.event_times,
                                   "event_units": out.event_units, "event_mask": out.event_mask},
                                start_window=k, n_windows=1, do_sample=False, min_events=1, max_events=5)
        n = int(single.token_units.shape[2])
        assert torch.equal(single.token_units[:, 0], out.token_units[:, k, :n])
        assert (out.token_units[:, k, n:] == -1).all()
        assert torch.equal(single.spikes[:, k * w:(k + 1) * w], out.spikes[:, k * w:(k + 1) * w])
    # window counts agree with generated tokens
    assert out.event_mask.sum(1).tolist() == out.n_events.sum(1).tolist()


def test_generate_arguments_checked(gen_setup):
    _, model, batch = gen_setup
    with pytest.raises(ValueError, match="outside the trial"):
        model.generate(**batch, start_window=8, n_windows=5)
    with pytest.raises(ValueError, match="min_events"):
        model.generate(**batch, start_window=0, n_windows=1, min_events=5, max_events=2)


def test_unit_attention_map_shape_and_mass(gen_setup):
    _, model, batch = gen_setup
    with torch.no_grad():
        out = model(**batch, output_attentions=True)
    N = batch["spikes"].shape[2]
    att = NfmForSpikeGeneration.unit_attention(out, N)
    assert att.shape == (2, N, N)
    assert (att >= 0).all() and att.sum() > 0
    # padding units of the second trial (session sB has 6 units) never appear
    assert att[1, 6:].abs().sum() == 0 and att[1, :, 6:].abs().sum() == 0
    assert len(out.cross_attentions) == model.config.decoder_layers


def test_windows_where_every_trial_stops_at_once(gen_setup):
    # max_events=0 forces EOS first in every window: empty windows must give empty events, not an error
    _, model, batch = gen_setup
    out = model.generate(**batch, start_window=2, n_windows=3, max_events=0)
    assert out.n_events.sum() == 0 and out.event_times.shape == (2, 0)
    assert out.spikes[:, 2 * model.config.window_bins:].sum() == 0
    assert torch.equal(out.spikes[:, : 2 * model.config.window_bins],
                       batch["spikes"][:, : 2 * model.config.window_bins])


def test_generation_outputs_of_the_pretraining_model(gen_setup):
    from nfm.models import NfmForPretraining

    meta, model, batch = gen_setup
    pre = NfmForPretraining(model.config).eval()
    pre.load_state_dict(model.state_dict())
    with torch.no_grad():
        a = pre.generation_outputs(**batch, output_attentions=True)
        b = model(**batch, output_attentions=True)
    assert torch.equal(a.id_logits, b.id_logits) and len(a.cross_attentions) == len(b.cross_attentions)
    assert torch.equal(NfmForSpikeGeneration.unit_attention(a, 10), NfmForSpikeGeneration.unit_attention(b, 10))
