"""MtM mask modes: exactly the intended entries are masked, the loss uses them alone, prompts differ."""
import math

import pytest
import torch

from models_fixtures import make_batch, make_meta, setup_module_common, tiny_config
from nfm.models import PROMPTS, NfmForMaskedModeling
from nfm.models.masking import MaskSample, sample_mask


def setup_module():
    setup_module_common()


T = 12


def _units():
    # three trials with 10, 7 and 4 real units (rest padding); regions 1..3
    unit_mask = torch.arange(10).unsqueeze(0) < torch.tensor([[10], [7], [4]])
    unit_region = torch.tensor([[1, 1, 1, 2, 2, 2, 2, 3, 3, 3],
                                [2, 2, 3, 3, 3, 1, 1, 0, 0, 0],
                                [3, 3, 3, 3, 0, 0, 0, 0, 0, 0]])
    return unit_mask, unit_region


def _k(ratio, n):
    return max(1, min(n, round(ratio * n)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_neuron_temporal_causal_random_token_counts(seed):
    um, ur = _units()
    n = um.sum(1).tolist()
    g = torch.Generator().manual_seed(seed)
    m = sample_mask("neuron", um, ur, T, generator=g)
    assert torch.equal(m.target, m.hidden) and not m.causal
    assert not (m.target & ~um.unsqueeze(1)).any()
    # whole units: every bin of a unit is masked or none
    assert torch.equal(m.target.all(1), m.target.any(1))
    assert m.target[:, 0].sum(1).tolist() == [_k(0.3, x) for x in n]

    for mode, ratio, causal in (("temporal", 0.3, False), ("causal", 0.6, True)):
        m = sample_mask(mode, um, ur, T, generator=g)
        assert m.causal is causal and m.mode == mode
        bins = m.target.any(2)
        assert bins.sum(1).tolist() == [_k(ratio, T)] * 3
        # whole bins over all real units, never padding
        assert torch.equal(m.target, bins.unsqueeze(2) & um.unsqueeze(1))

    m = sample_mask("random_token", um, ur, T, generator=g)
    assert m.target.flatten(1).sum(1).tolist() == [_k(0.3, T * x) for x in n]
    assert not (m.target & ~um.unsqueeze(1)).any()
    assert not torch.equal(m.target.all(1), m.target.any(1))  # entries, not whole units


@pytest.mark.parametrize("seed", range(4))
def test_region_modes(seed):
    um, ur = _units()
    g = torch.Generator().manual_seed(seed)
    m = sample_mask("inter_region", um, ur, T, generator=g)
    assert torch.equal(m.target, m.hidden)
    units = m.target[:, 0]
    for b in range(3):
        regs = ur[b][units[b]].unique()
        assert len(regs) == 1  # one region ...
        assert torch.equal(units[b], um[b] & (ur[b] == regs[0]))  # ... all of its real units

    m = sample_mask("intra_region", um, ur, T, generator=g)
    tgt, hid = m.target[:, 0], m.hidden[:, 0]
    assert torch.equal(m.target.all(1), m.target.any(1))
    for b in range(3):
        r = ur[b][tgt[b]].unique()
        assert len(r) == 1
        in_r = um[b] & (ur[b] == r[0])
        assert int(tgt[b].sum()) == _k(0.3, int(in_r.sum()))
        # hidden: the targets plus every real unit outside the kept region; the rest of the region is visible
        assert torch.equal(hid[b], tgt[b] | (um[b] & ~in_r))
        assert not (hid[b] & in_r & ~tgt[b]).any()


def _poisson_nll(log_rates, y, mask):
    lr = log_rates.clamp(-20, 20)
    nll = torch.exp(lr) - y * lr + torch.lgamma(y + 1)
    return (nll * mask).sum() / mask.sum()


@pytest.mark.parametrize("mode", ["neuron", "causal", "temporal", "intra_region", "inter_region", "random_token"])
def test_model_loss_on_masked_entries_only(mode):
    torch.manual_seed(0)
    meta = make_meta()
    model = NfmForMaskedModeling(tiny_config(meta)).eval()
    batch = make_batch(meta, ["sA", "sB", "sA"], seed=1)
    out = model(**batch, mask_mode=mode, generator=torch.Generator().manual_seed(5))
    ref = sample_mask(mode, batch["unit_mask"], batch["unit_region"], 20, model.config,
                      torch.Generator().manual_seed(5))
    assert torch.equal(out.mask, ref.target) and torch.equal(out.hidden_mask, ref.hidden)
    assert PROMPTS[int(out.mask_mode_id[0])] == mode
    assert torch.allclose(out.loss, _poisson_nll(out.log_rates, batch["spikes"], out.mask.float()), rtol=1e-5)
    # changing a target entry changes only its loss term (the entry is hidden from the input)
    b, t, n = out.mask.nonzero()[0].tolist()
    spikes2 = batch["spikes"].clone()
    spikes2[b, t, n] += 3
    out2 = model(**{**batch, "spikes": spikes2}, mask=MaskSample(out.mask, out.hidden_mask, mode, mode == "causal"))
    assert torch.equal(out2.log_rates, out.log_rates)
    assert not torch.allclose(out2.loss, out.loss)
    # changing entries that are neither targets nor visible (hidden-only, intra-region) changes nothing
    hidden_only = out.hidden_mask & ~out.mask
    if hidden_only.any():
        spikes3 = batch["spikes"] + 5.0 * hidden_only
        out3 = model(**{**batch, "spikes": spikes3}, mask=MaskSample(out.mask, out.hidden_mask, mode, False))
        assert torch.equal(out3.loss, out.loss)


def test_prompt_token_differs_per_mode():
    torch.manual_seed(0)
    meta = make_meta()
    model = NfmForMaskedModeling(tiny_config(meta)).eval()
    batch = make_batch(meta, ["sA", "sA"], seed=2)
    g = torch.Generator().manual_seed(0)
    fixed = sample_mask("neuron", batch["unit_mask"], batch["unit_region"], 20, generator=g)
    outs = {}
    for mode in ["neuron", "temporal", "intra_region", "inter_region", "random_token"]:
        # same mask and attention, only the prompt token changes
        outs[mode] = model(**batch, mask=MaskSample(fixed.target, fixed.hidden, mode, False)).log_rates
    modes = list(outs)
    for i in range(len(modes)):
        for j in range(i + 1, len(modes)):
            assert not torch.allclose(outs[modes[i]], outs[modes[j]]), (modes[i], modes[j])
    rows = model.nfm.prompt_embed.weight
    assert torch.cdist(rows, rows).fill_diagonal_(1.0).min() > 0


def test_all_samples_mtm_modes_uniformly():
    meta = make_meta()
    model = NfmForMaskedModeling(tiny_config(meta, mask_modes=["all"])).eval()
    batch = make_batch(meta, ["sA"], seed=3)
    g = torch.Generator().manual_seed(0)
    seen = [PROMPTS[int(model(**batch, generator=g).mask_mode_id[0])] for _ in range(40)]
    assert set(seen) == {"neuron", "causal", "intra_region", "inter_region"}
    model.config.mask_modes = ["temporal"]
    assert {PROMPTS[int(model(**batch, generator=g).mask_mode_id[0])] for _ in range(5)} == {"temporal"}


def test_mask_mode_weights_set_the_draw_frequencies():
    """``mask_mode_weights`` {neuron: 3} over MtM's four modes: neuron drawn half of the time, the others a sixth
    each (checked on 600 draws of the model and of the collator's draw for a compiled forward)."""
    from collections import Counter

    from nfm.data.collate import NfmCollator

    meta = make_meta()
    cfg = tiny_config(meta, mask_modes=["all"], mask_mode_weights={"neuron": 3.0})
    assert cfg.mask_mode_probabilities == pytest.approx([0.5, 1 / 6, 1 / 6, 1 / 6])
    model = NfmForMaskedModeling(cfg).eval()
    batch = make_batch(meta, ["sA"], seed=3)
    g = torch.Generator().manual_seed(0)
    n = 600
    with torch.no_grad():
        seen = Counter(PROMPTS[int(model(**batch, generator=g).mask_mode_id[0])] for _ in range(n))
    # binomial sd at p=1/2, n=600 is ~0.02: 0.1 is > 4 sd, yet a uniform draw (0.25) is far outside
    assert abs(seen["neuron"] / n - 0.5) < 0.1, seen
    for m in ("causal", "intra_region", "inter_region"):
        assert abs(seen[m] / n - 1 / 6) < 0.07, seen
    col = NfmCollator(meta, draw_mask_mode=cfg.active_mask_modes, draw_mask_probs=cfg.mask_mode_probabilities)
    draws = Counter(col.draw_mask_mode() for _ in range(n))
    assert abs(draws["neuron"] / n - 0.5) < 0.1, draws


@pytest.mark.parametrize("weights, field", [({"temporal": 2.0}, "not an active mask mode"),
                                            ({"neuron": 0.0}, "must be a finite number > 0"),
                                            ({"neuron": float("nan")}, "must be a finite number > 0")])
def test_bad_mask_mode_weights_are_refused(weights, field):
    with pytest.raises(ValueError, match="mask_mode_weights") as e:
        tiny_config(make_meta(), mask_modes=["all"], mask_mode_weights=weights).check()
    assert field in str(e.value)


def test_gaussian_likelihood_and_bad_frames():
    torch.manual_seed(0)
    meta = make_meta(modality="calcium")
    cfg = tiny_config(meta)
    assert cfg.likelihood == "gaussian" and cfg.objectives == ["mtm"]
    model = NfmForMaskedModeling(cfg).eval()
    with torch.no_grad():
        model.nfm.sessions[next(iter(model.nfm.sessions))].log_var.fill_(0.5)
    batch = make_batch(meta, ["sA", "sA"], seed=4)
    valid = torch.ones_like(batch["spikes"], dtype=torch.bool)
    valid[0, :5, 2] = False  # bad frames
    out = model(**batch, mask_mode="neuron", valid_mask=valid, generator=torch.Generator().manual_seed(1))
    assert out.log_rates is None and out.means is not None
    assert not (out.mask & ~valid).any() and (out.hidden_mask | valid).all()
    lv = out.log_variances.unsqueeze(1)
    nll = 0.5 * (math.log(2 * math.pi) + lv + (batch["spikes"] - out.means) ** 2 / lv.exp())
    m = out.mask.float()
    assert torch.allclose(out.loss, (nll * m).sum() / m.sum(), rtol=1e-5)


def test_unknown_mode_and_bad_inputs_raise():
    um, ur = _units()
    with pytest.raises(ValueError, match="unknown mask mode"):
        sample_mask("bogus", um, ur, T)
    with pytest.raises(ValueError, match="unit_mask"):
        sample_mask("neuron", um.long(), ur, T)
    meta = make_meta()
    model = NfmForMaskedModeling(tiny_config(meta))
    batch = make_batch(meta, ["sA"])
    with pytest.raises(ValueError, match="not in this model"):
        model(**{**batch, "session_ids": ["nope"]})


def test_model_card_states_the_mask_mix():
    from nfm.cards import mask_mix

    meta = make_meta()
    assert mask_mix(tiny_config(meta, mask_modes=["all"])) == \
        "neuron 0.25, causal 0.25, intra_region 0.25, inter_region 0.25"
    assert mask_mix(tiny_config(meta, mask_modes=["all"], mask_mode_weights={"neuron": 6.0})) == \
        "neuron 0.67, causal 0.11, intra_region 0.11, inter_region 0.11"
