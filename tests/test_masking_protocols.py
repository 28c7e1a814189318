"""Masked-task protocols: MtM's one-unit-at-a-time plan (``protocol: mtm_per_neuron``), BWB's Poisson D2 and
bits/spike in the masked tasks, their validation and their cost.

Expected numbers are computed here from the written formulas (gammaln, explicit per-unit loops), never by calling
the scoring code under test.
"""
import json

import numpy as np
import pytest
import torch
from scipy.special import gammaln
from transformers.utils import logging as hf_logging

from nfm.data.hf import build_dataset
from nfm.data.schema import Session
from nfm.data.sources.synthetic import make_ibl_like_world
from nfm.evaluation.context import EvalContext, SessionData
from nfm.evaluation.costs import count_work
from nfm.evaluation.masking_tasks import OneAtATimePlan, mask_plan
from nfm.evaluation.runner import Predictor, evaluate
from nfm.evaluation.tasks import TaskError, load_tasks, validate_task
from nfm.models import NfmConfig, NfmForPretraining

hf_logging.set_verbosity_error()
REGION = np.array(["VISp"] * 3 + ["LP"] * 3)
N_UNITS = len(REGION)


def session_data(regions, n_bins=5, n_trials=2) -> SessionData:
    n = len(regions)
    return SessionData("s0", ("test",), np.zeros((n_trials, n_bins, n)), None, np.zeros((n_trials, n_bins, 0)), {},
                       np.arange(n_trials), np.asarray(regions), [], (None, None, None))


# --------------------------------------------------------------------------- the plan
@pytest.mark.parametrize("mode", ["neuron", "intra_region"])
def test_one_at_a_time_plan_hides_one_target_per_entry_and_covers_every_unit_once(mode):
    regions = np.array(["CA1", "LP", "CA1", "VISp", "LP", "LP", "CA1"])
    T, N = 5, len(regions)
    sd = session_data(regions, T)
    plan = mask_plan({"mode": mode, "held_out_folds": 2, "seed": 0}, sd, T, 0.02, protocol="mtm_per_neuron")
    assert isinstance(plan, OneAtATimePlan) and len(plan) == N
    covered = np.zeros(N, dtype=int)
    for i, p in enumerate(plan):
        tgt, hid = p.target[0].numpy(), p.hidden[0].numpy()
        assert p.target.shape == (1, T, N) and p.mode == mode and not p.causal
        units = np.flatnonzero(tgt.any(0))
        assert units.tolist() == [i] and tgt[:, i].all()  # one unit, every bin
        covered[units] += 1
        if mode == "neuron":  # all the others visible
            assert (hid == tgt).all()
        else:  # its region's other units visible, every unit outside its region hidden
            assert (hid.any(0) == ((np.arange(N) == i) | (regions != regions[i]))).all()
            assert (hid == hid[:1]).all()
    assert (covered == 1).all()
    assert (plan[-1].target[0].numpy() == plan[N - 1].target[0].numpy()).all()
    assert len(plan[1:3]) == 2
    with pytest.raises(IndexError, match="entry 7"):
        plan[N]
    # the NLB plan of the same mask: folds of several units
    nlb = mask_plan({"mode": mode, "held_out_folds": 2, "seed": 0}, sd, T, 0.02)
    assert len(nlb) < N and max(int(p.target[0].any(0).sum()) for p in nlb) > 1


def test_one_at_a_time_plan_refuses_masks_that_are_not_unit_masks():
    sd = session_data(REGION)
    for mask in ({"mode": "forward", "forward_s": 0.02}, {"mode": "inter_region"}):
        with pytest.raises(ValueError, match=f"mask.mode '{mask['mode']}'"):
            mask_plan(mask, sd, 5, 0.02, protocol="mtm_per_neuron")
    with pytest.raises(ValueError, match="protocol 'mtm'"):
        mask_plan({"mode": "neuron", "held_out_folds": 2}, sd, 5, 0.02, protocol="mtm")


# --------------------------------------------------------------------------- an oracle that is hurt by hiding
def world(n_trials=24, seed=0):
    """Poisson spikes of 6 units with known expected counts per bin that depend on the time in the trial."""
    rng = np.random.default_rng(seed)
    T, bin_size, window = 50, 0.02, (-0.5, 0.5)
    tau = (np.arange(T) + 0.5) * bin_size
    base = np.array([5.0, 8.0, 12.0, 3.0, 20.0, 6.0])
    expected = base * bin_size * (1 + 0.8 * np.sin(2 * np.pi * tau[:, None] + np.arange(N_UNITS)))  # (T, N)
    counts = rng.poisson(np.broadcast_to(expected, (n_trials, T, N_UNITS)))
    stim_on = 1.0 + 2.0 * np.arange(n_trials)
    k, b, u = np.nonzero(counts)
    reps = counts[k, b, u]
    k, b, u = np.repeat(k, reps), np.repeat(b, reps), np.repeat(u, reps)
    t = stim_on[k] + window[0] + (b + rng.uniform(0.05, 0.95, b.size)) * bin_size
    order = np.lexsort((u, t))
    session = Session(session_id="oracle-0", subject_id="m0",
                      units={"unit_id": np.array([f"u{i}" for i in range(N_UNITS)]), "region": REGION},
                      trials={"stimOn_times": stim_on, "choice": rng.choice([-1.0, 1.0], n_trials)},
                      spike_times=t[order], spike_units=u[order].astype(np.int64),
                      recording_end=float(stim_on[-1] + 2))
    dd, meta = build_dataset([session], window=window, bin_size=bin_size)
    return dd, meta, counts[np.asarray(dd["test"]["trial_id"])].astype(float), expected


class HidingOracle(Predictor):
    """Predicts the true expected counts times (1 + hidden units / N): the more is hidden, the worse; records
    the masks it was given."""

    name = "hiding-oracle"

    def __init__(self, expected, meta):
        self.expected = expected
        self.session_n_units = {s: m.n_units for s, m in meta.sessions.items()}
        self.bin_size = meta.bin_size
        self.seen = []

    def predict(self, batch, mask):
        tgt, hid = mask.target[0].numpy(), mask.hidden[0].numpy()
        self.seen.append((mask.mode, tgt.copy(), hid.copy()))
        k = hid.any(0).sum()
        B = batch["spikes"].shape[0]
        return np.broadcast_to(self.expected * (1 + k / N_UNITS), (B,) + self.expected.shape).copy(), None


def per_unit_bps(rates, counts):
    """NLB bits/spike of each unit (null = its mean count), written out."""
    rates = np.broadcast_to(rates, counts.shape)

    def nll(r):
        r = np.maximum(r, 1e-9)
        return (r - counts * np.log(r) + gammaln(counts + 1)).sum(axis=(0, 1))

    null = np.broadcast_to(counts.mean(axis=(0, 1)), counts.shape)
    return (nll(null) - nll(rates)) / (counts.sum(axis=(0, 1)) * np.log(2)), nll(null) - nll(rates)


def per_unit_d2(rates, counts):
    """1 - (NLL_model - NLL_sat) / (NLL_null - NLL_sat) per unit, full Poisson NLLs."""
    rates = np.broadcast_to(rates, counts.shape)

    def nll(r):
        r = np.maximum(r, 1e-300)
        return (r - counts * np.log(r) + gammaln(counts + 1)).sum(axis=(0, 1))

    sat = (counts - np.where(counts > 0, counts * np.log(np.where(counts > 0, counts, 1)), 0)
           + gammaln(counts + 1)).sum(axis=(0, 1))
    null = np.broadcast_to(counts.mean(axis=(0, 1)), counts.shape)
    return 1 - (nll(rates) - sat) / (nll(null) - sat)


def test_mtm_protocol_scores_each_unit_alone_with_the_task_prompt():
    dd, meta, c, expected = world()
    oracle = HidingOracle(expected, meta)
    res = evaluate(oracle, (dd, meta), tasks="co_smoothing,intra_region",
                   task_overrides={"co_smoothing": {"protocol": "mtm_per_neuron", "baselines": ["null"]},
                                   "intra_region": {"protocol": "mtm_per_neuron", "baselines": ["null"]}})
    co, intra = res["co_smoothing"], res["intra_region"]
    # co-smoothing: 1 unit hidden per pass -> rates x (1 + 1/N); intra-region: it and the 3 units outside its region
    for r, factor in ((co, 1 + 1 / N_UNITS), (intra, 1 + 4 / N_UNITS)):
        per, diff = per_unit_bps(expected * factor, c)
        assert r["mtm/bps_neuron_mean"] == pytest.approx(np.nanmean(per), rel=1e-9)  # MtM's per_neuron number
        assert r["mtm/bps"] == pytest.approx(diff.sum() / (c.sum() * np.log(2)), rel=1e-9)
        assert r["mtm/poisson_d2"] == pytest.approx(np.mean(per_unit_d2(expected * factor, c)), rel=1e-9)
        assert abs(r["null/mtm/bps"]) < 1e-12 and abs(r["null/mtm/poisson_d2"]) < 1e-12
        assert not {"bps", "bps_neuron_mean", "null/bps", "poisson_d2"} & set(r)  # only the protocol's keys
        assert set(r["per_session"]["oracle-0"]) >= {"mtm/bps", "mtm/bps_neuron_mean", "mtm/poisson_d2"}
    modes = [s[0] for s in oracle.seen]
    assert set(modes) == {"neuron", "intra_region"}
    for mode in ("neuron", "intra_region"):
        seen = [s for s in oracle.seen if s[0] == mode]
        assert len(seen) == N_UNITS * len(list(range(0, c.shape[0], 32)))  # one pass per unit and batch
        targets = [np.flatnonzero(s[1].any(0)) for s in seen]
        assert all(len(t) == 1 for t in targets) and sorted(int(t[0]) for t in targets) == list(range(N_UNITS))
        for (_, tgt, hid), t in zip(seen, targets):
            want = {int(t[0])} if mode == "neuron" else {int(t[0])} | set(np.flatnonzero(REGION != REGION[t[0]]))
            assert set(np.flatnonzero(hid.any(0))) == want

    # the default NLB protocol: folds of 2, 2, 1, 1 units -> a different (worse) number than one at a time
    nlb = evaluate(HidingOracle(expected, meta), (dd, meta), tasks="co_smoothing",
                   task_overrides={"co_smoothing": {"baselines": ["null"]}})["co_smoothing"]
    assert nlb["bps_neuron_mean"] < co["mtm/bps_neuron_mean"] - 1e-3
    assert abs(nlb["null/poisson_d2"]) < 1e-12 and "mtm/bps" not in nlb


def test_mtm_protocol_on_a_tiny_model_runs_and_differs_from_the_nlb_folds(tmp_path):
    dd, meta = build_dataset(make_ibl_like_world(n_animals=1, n_trials=24, units_per_region=(3, 4), seed=3))
    torch.manual_seed(0)
    model = NfmForPretraining(NfmConfig.from_dataset_meta(
        meta, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, decoder_layers=1,
        gen_max_events=24)).eval()
    fast = {"smoothing": {"method": "ridge", "sigma_ms": 50, "alpha": 1.0}}
    base = evaluate(model, (dd, meta), tasks="co_smoothing", task_overrides={"co_smoothing": fast})["co_smoothing"]
    over = {"co_smoothing": {**fast, "protocol": "mtm_per_neuron", "primary": "bps_neuron_mean"},
            "intra_region": {**fast, "protocol": "mtm_per_neuron"}}
    res = evaluate(model, (dd, meta), tasks="co_smoothing,intra_region", task_overrides=over, baseline_model=model,
                   output=tmp_path / "results.json")
    for name in ("co_smoothing", "intra_region"):
        r = res[name]
        for k in ("mtm/bps", "mtm/bps_neuron_mean", "mtm/bps_session_mean", "mtm/poisson_d2",
                  "smoothing/mtm/bps", "smoothing/mtm/poisson_d2", "baseline_model/mtm/bps"):
            assert np.isfinite(r[k]), (name, k)
        assert r["baseline_model/mtm/bps"] == pytest.approx(r["mtm/bps"], rel=1e-12)
        assert abs(r["null/mtm/bps"]) < 1e-12
    co = res["co_smoothing"]
    assert abs(co["mtm/bps"] - base["bps"]) > 1e-6 and abs(co["mtm/bps_neuron_mean"] - base["bps_neuron_mean"]) > 1e-6
    assert np.isfinite(base["poisson_d2"]) and abs(base["null/poisson_d2"]) < 1e-12
    md = (tmp_path / "results.md").read_text()
    assert "| co_smoothing | bps_neuron_mean |" in md and "mtm/bps_neuron_mean" in md
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["co_smoothing"]["mtm/bps"] == pytest.approx(co["mtm/bps"])


# --------------------------------------------------------------------------- validation and cost
@pytest.mark.parametrize("spec, needle", [
    ({"kind": "masking", "mask": {"mode": "neuron"}, "protocol": "mtm"},
     "'mtm' is not one of ['nlb', 'mtm_per_neuron']"),
    ({"kind": "masking", "mask": {"mode": "forward"}, "protocol": "mtm_per_neuron"}, "mask.mode is 'forward'"),
    ({"kind": "masking", "mask": {"mode": "inter_region"}, "protocol": "mtm_per_neuron"},
     "mask.mode is 'inter_region'"),
    ({"kind": "psth", "mask": {"mode": "neuron"}, "conditions": ["choice"], "protocol": "mtm_per_neuron"},
     "only masking tasks"),
])
def test_bad_protocol_is_an_error_naming_the_field_and_value(spec, needle):
    with pytest.raises(TaskError) as err:
        validate_task(spec, "my_task.yaml", default_name="my_task")
    assert err.value.field == "protocol" and needle in str(err.value) and "my_task.yaml" in str(err.value)


def test_shipped_masked_tasks_default_to_nlb_and_refuse_mtm_where_it_has_no_meaning():
    tasks = {t.name: t for t in load_tasks("co_smoothing,forward_prediction,intra_region,inter_region")}
    assert {t.spec["protocol"] for t in tasks.values()} == {"nlb"}
    assert all("poisson_d2" in t.metrics["spikes"] for t in tasks.values())
    for name in ("forward_prediction", "inter_region"):
        with pytest.raises(TaskError, match="needs a unit mask"):
            load_tasks(name, overrides={name: {"protocol": "mtm_per_neuron"}})
    t = load_tasks("co_smoothing", overrides={"co_smoothing": {"protocol": "mtm_per_neuron"}}, quick=True)[0]
    assert t.spec["protocol"] == "mtm_per_neuron"


def test_cost_counts_one_mask_per_unit_for_the_mtm_protocol():
    dd, meta, c, expected = world()
    oracle = HidingOracle(expected, meta)
    ctx = EvalContext(dd, meta, oracle, "test", ["oracle-0"])
    names = ("co_smoothing", "intra_region")
    nlb = load_tasks(names, overrides={n: {"mask": {"held_out_folds": 2}} for n in names})
    mtm = load_tasks(names, overrides={n: {"mask": {"held_out_folds": 2}, "protocol": "mtm_per_neuron"}
                                       for n in names})
    from nfm.evaluation.kinds.masking import cv_fits

    R = c.shape[0]
    for t_nlb, t_mtm, n_folds in zip(nlb, mtm, (2, 2 * 2)):  # 2 folds; 2 folds in each of the 2 regions
        a, b = count_work(ctx, t_nlb), count_work(ctx, t_mtm)
        cv = cv_fits(t_nlb.spec["smoothing"])  # the baseline's CV grid, counted once per session
        assert a.trial_passes == n_folds * R and a.glm == n_folds + cv and not a.notes
        assert b.trial_passes == N_UNITS * R and b.glm == N_UNITS + cv
        assert any("one model pass per unit" in n for n in b.notes)
    # an NLB co-smoothing and its MtM variant do not share cached predictions
    seen: dict = {}
    count_work(ctx, nlb[0], seen)
    assert count_work(ctx, mtm[0], seen).trial_passes == N_UNITS * R
