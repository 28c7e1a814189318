"""Evaluation runner end to end: real (tiny, untrained) nfm models, analytic oracles, reports, errors."""
import copy
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.special import gammaln
from transformers.utils import logging as hf_logging

from nfm.data.hf import build_dataset, save_dataset
from nfm.data.schema import Session
from nfm.data.sources.synthetic import make_calcium_world, make_hub_network, make_ibl_like_world
from nfm.evaluation.runner import ModelDatasetMismatch, Predictor, evaluate
from nfm.evaluation.tasks import available_tasks
from nfm.models import NfmConfig, NfmForPretraining

hf_logging.set_verbosity_error()
REPO = Path(__file__).resolve().parent.parent
TINY = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, decoder_layers=1,
            gen_max_events=24)
FAST = {  # fewer CV folds / grid points / steps: the plumbing is the same
    "choice": {"decoder": {"n_splits": 2, "Cs": [1.0]}},
    "block": {"decoder": {"n_splits": 2, "Cs": [1.0]}},
    "wheel_speed": {"decoder": {"n_splits": 2, "alphas": [1.0]}},
    "whisker_motion_energy": {"decoder": {"n_splits": 2, "alphas": [1.0]}},
    "behavior_finetuned": {"train": {"max_steps": 2}},
    "co_smoothing": {"smoothing": {"method": "ridge"}},
    "intra_region": {"smoothing": {"method": "ridge"}},
    "inter_region": {"smoothing": {"method": "ridge"}},
    "psth_r2": {"smoothing": {"method": "ridge"}, "min_trials_per_condition": 1},
    "generation_fidelity": {"max_trials": 3},
}


def tiny_model(meta, **kw):
    torch.manual_seed(0)
    return NfmForPretraining(NfmConfig.from_dataset_meta(meta, **{**TINY, **kw})).eval()


@pytest.fixture(scope="module")
def ibl():
    sessions = make_ibl_like_world(n_animals=2, n_trials=30, units_per_region=(3, 4), seed=3)
    return build_dataset(sessions)


def is_png(path) -> bool:
    return Path(path).is_file() and Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- real model, every task
@pytest.mark.slow
def test_all_tasks_on_tiny_model_write_json_md_png(ibl, tmp_path):
    dd, meta = ibl
    model = tiny_model(meta)
    out = tmp_path / "eval" / "results.json"
    res = evaluate(model, (dd, meta), tasks="all", output=out, task_overrides=FAST, baseline_model=model)
    assert set(res) == set(available_tasks())
    for name, r in res.items():
        if "not_applicable" in r:
            assert isinstance(r["not_applicable"], str) and r["not_applicable"]
            continue
        assert set(r["per_session"]) <= set(meta.sessions), name
        for k, v in r.items():
            if k == "decoder_protocol":  # decoding tasks: how the decoder was fitted / scored (issue 17)
                assert v == "train_to_eval", (name, v)
            elif k != "per_session":
                assert isinstance(v, (int, float)), (name, k, v)
    # masking tasks scored with the NLB null in the same table: exactly 0 bits/spike
    for name in ("co_smoothing", "forward_prediction", "intra_region", "inter_region"):
        assert abs(res[name]["null/bps"]) < 1e-12
        assert np.isfinite(res[name]["bps"]) and np.isfinite(res[name]["bps_neuron_mean"])
        assert "baseline_model/bps" in res[name]
        # the same model as its own baseline gives the same number through the same path
        assert res[name]["baseline_model/bps"] == pytest.approx(res[name]["bps"], rel=1e-12)
    assert np.isfinite(res["co_smoothing"]["smoothing/bps"])
    assert {"latents/accuracy", "rates/accuracy", "spikes/accuracy", "chance"} <= set(res["choice"])
    n_test = {s: int(np.sum(np.asarray(dd["test"]["session_id"]) == s)) for s in meta.sessions}
    for sid, e in res["wheel_speed"]["per_session"].items():  # fitted on train, scored on every test trial
        assert e["n_eval_trials"] == n_test[sid] and e["n_train_trials"] > n_test[sid]
    assert "choice/accuracy" in res["behavior_finetuned"] and "wheel_speed/r2" in res["behavior_finetuned"]
    assert 0.0 <= res["generation_fidelity"]["f1"] <= 1.0
    # variables / modality / ground truth the IBL-like world lacks: not applicable, with the reason
    assert "running_speed" in res["running_speed"]["not_applicable"]
    assert "hand_velocity" in res["hand_velocity"]["not_applicable"]
    assert "calcium" in res["stimulus_direction"]["not_applicable"]
    assert "true_weights" in res["connectivity"]["not_applicable"]
    # files: JSON equal to the returned dict, Markdown summary, figures
    data = json.loads(out.read_text())
    assert data["co_smoothing"]["bps"] == pytest.approx(res["co_smoothing"]["bps"])
    assert data["co_smoothing"]["per_session"].keys() == res["co_smoothing"]["per_session"].keys()
    md = out.with_suffix(".md").read_text()
    assert "| co_smoothing | bps |" in md and "not applicable" in md
    figs = out.parent / "figures"
    for f in ("summary.png", "co_smoothing_per_neuron.png", "generation_fidelity_raster.png", "choice_scores.png"):
        assert is_png(figs / f), f
        assert f"figures/{f}" in md


# --------------------------------------------------------------------------- analytic oracle
def oracle_world(n_trials=40, seed=0):
    """Poisson spikes with known per-bin rates (Hz) that depend on the time in the trial window only."""
    rng = np.random.default_rng(seed)
    N, T, bin_size, window = 6, 100, 0.02, (-0.5, 1.5)
    tau = (np.arange(T) + 0.5) * bin_size
    base = np.array([5.0, 8.0, 12.0, 3.0, 20.0, 6.0])
    freq = np.array([0.5, 1.0, 1.5, 0.7, 2.0, 0.3])
    rates_hz = base * (1 + 0.8 * np.sin(2 * np.pi * freq * tau[:, None] + np.arange(N)))  # (T, N)
    expected = rates_hz * bin_size  # expected counts per bin
    counts = rng.poisson(np.broadcast_to(expected, (n_trials, T, N)))
    stim_on = 1.0 + 3.0 * np.arange(n_trials)
    k, b, u = np.nonzero(counts)
    reps = counts[k, b, u]
    k, b, u = np.repeat(k, reps), np.repeat(b, reps), np.repeat(u, reps)
    t = stim_on[k] + window[0] + (b + rng.uniform(0.05, 0.95, b.size)) * bin_size
    order = np.lexsort((u, t))
    session = Session(
        session_id="oracle-0", subject_id="m0",
        units={"unit_id": np.array([f"u{i}" for i in range(N)]), "region": np.array(["VISp"] * 3 + ["LP"] * 3)},
        trials={"stimOn_times": stim_on, "choice": rng.choice([-1.0, 1.0], n_trials),
                "feedbackType": rng.choice([-1.0, 1.0], n_trials)},
        spike_times=t[order], spike_units=u[order].astype(np.int64), recording_end=float(stim_on[-1] + 3))
    dd, meta = build_dataset([session], window=window, bin_size=bin_size)
    return dd, meta, counts, expected


class RateOracle(Predictor):
    """Predicts the true expected counts per bin, whatever is hidden; records the masks it was given."""

    name = "oracle"

    def __init__(self, expected, meta):
        self.expected = expected
        self.session_n_units = {s: m.n_units for s, m in meta.sessions.items()}
        self.bin_size = meta.bin_size
        self.seen = []

    def predict(self, batch, mask):
        self.seen.append((mask.mode, mask.causal, mask.target[0].numpy().copy(), mask.hidden[0].numpy().copy()))
        B = batch["spikes"].shape[0]
        return np.broadcast_to(self.expected, (B,) + self.expected.shape).copy(), None


def nlb_bps(rates, counts):
    """The NLB formula written out here: null = per-neuron mean count, rates floored at 1e-9."""
    def nll(r):
        r = np.maximum(r, 1e-9)
        return (r - counts * np.log(r) + gammaln(counts + 1)).sum(axis=(0, 1))
    null = np.broadcast_to(counts.mean(axis=(0, 1)), counts.shape)
    diff = nll(null) - nll(np.broadcast_to(rates, counts.shape))
    with np.errstate(divide="ignore", invalid="ignore"):  # per-neuron value of a silent neuron: unused
        return diff.sum() / (counts.sum() * np.log(2)), diff / (counts.sum(axis=(0, 1)) * np.log(2))


def test_perfect_rate_oracle_scores_the_analytic_bits_per_spike(tmp_path):
    dd, meta, counts, expected = oracle_world()
    test_rows = np.asarray(dd["test"]["trial_id"])
    c = counts[test_rows].astype(float)
    oracle = RateOracle(expected, meta)
    res = evaluate(oracle, (dd, meta), tasks="co_smoothing,forward_prediction")
    pooled, per = nlb_bps(expected, c)
    co = res["co_smoothing"]
    assert co["bps"] == pytest.approx(pooled, rel=1e-9, abs=1e-12)
    assert co["bps_neuron_mean"] == pytest.approx(per.mean(), rel=1e-9)
    assert co["per_session"]["oracle-0"]["n_spikes"] == c.sum()
    assert abs(co["null/bps"]) < 1e-12 and co["bps"] > 0.05
    # every unit hidden (and scored) exactly once, in 4 folds, with the neuron prompt
    neuron = [s for s in oracle.seen if s[0] == "neuron"]
    folds = {tuple(np.flatnonzero(s[2][0])) for s in neuron}
    assert len(folds) == 4 and sorted(u for f in folds for u in f) == list(range(6))
    assert all((s[2] == s[3]).all() for s in neuron)
    # forward prediction: the last 200 ms = 10 bins, causal prompt, NLB null over those bins
    fp_pooled, _ = nlb_bps(expected[-10:], c[:, -10:])
    assert res["forward_prediction"]["bps"] == pytest.approx(fp_pooled, rel=1e-9)
    causal = [s for s in oracle.seen if s[0] == "causal"]
    assert causal and all(s[1] for s in causal)
    assert all(s[2][-10:].all() and not s[2][:-10].any() for s in causal)


def test_intra_and_inter_region_masks_hide_the_right_units():
    dd, meta, counts, expected = oracle_world(n_trials=20)
    oracle = RateOracle(expected, meta)
    res = evaluate(oracle, (dd, meta), tasks="intra_region,inter_region",
                   task_overrides={"intra_region": {"baselines": []}, "inter_region": {"baselines": []}})
    c = counts[np.asarray(dd["test"]["trial_id"])].astype(float)
    pooled, _ = nlb_bps(expected, c)
    # the oracle ignores its input, so every unit-mask task scores the same analytic value
    assert res["intra_region"]["bps"] == pytest.approx(pooled, rel=1e-9)
    assert res["inter_region"]["bps"] == pytest.approx(pooled, rel=1e-9)
    region = np.array([0, 0, 0, 1, 1, 1])
    for mode, _, target, hidden in oracle.seen:
        t_units, h_units = np.flatnonzero(target[0]), np.flatnonzero(hidden[0])
        if mode == "inter_region":  # one whole region, predicted from the other
            assert set(t_units) == set(h_units) and len(set(region[t_units])) == 1 and len(t_units) == 3
        else:  # a fold of one region is the target; every unit of the other region is hidden too
            assert mode == "intra_region"
            r = region[t_units[0]]
            assert (region[t_units] == r).all()
            assert set(h_units) == set(t_units) | set(np.flatnonzero(region != r))


# --------------------------------------------------------------------------- errors and not-applicable
def test_neuron_count_mismatch_and_unknown_session_are_clear_errors(ibl):
    dd, meta = ibl
    sids = list(meta.sessions)
    wrong = copy.deepcopy(meta)
    wrong.sessions[sids[0]].n_units += 2
    wrong.sessions[sids[0]].units = {k: v + v[:2] for k, v in wrong.sessions[sids[0]].units.items()}
    n = meta.sessions[sids[0]].n_units
    with pytest.raises(ModelDatasetMismatch, match=rf"session '{sids[0]}'.*{n + 2} units but the dataset has {n}"):
        evaluate(tiny_model(wrong), (dd, meta), tasks="co_smoothing")
    only_second = meta.subset(sids[1:])
    model = tiny_model(only_second)
    with pytest.raises(ModelDatasetMismatch, match=rf"session '{sids[0]}' of the dataset is unknown.*--sessions known"):
        evaluate(model, (dd, meta), tasks="co_smoothing")
    res = evaluate(model, (dd, meta), tasks="co_smoothing", sessions="known",
                   task_overrides={"co_smoothing": {"baselines": ["null"]}})
    assert list(res["co_smoothing"]["per_session"]) == [sids[1]]
    with pytest.raises(ValueError, match="split 'dev'"):
        evaluate(model, (dd, meta), tasks="co_smoothing", split="dev", sessions="known")


def test_mtm_only_model_cannot_generate_and_calcium_scoring(tmp_path):
    cal = make_calcium_world(n_animals=1, n_cells=10, n_trials=30, seed=1)
    dd, meta = build_dataset(cal, window=(-0.5, 1.5), bin_size=0.1)
    model = tiny_model(meta)  # calcium: Gaussian likelihood, MtM only (from_dataset_meta)
    res = evaluate(model, (dd, meta), tasks="co_smoothing,forward_prediction,running_speed,generation_fidelity,"
                                            "connectivity,choice",
                   task_overrides={"running_speed": {"decoder": {"n_splits": 2, "alphas": [1.0]}}},
                   output=tmp_path / "r.json")
    for name in ("co_smoothing", "forward_prediction"):
        r = res[name]
        assert r["null/r2"] == 0.0 and r["null/delta_nll"] == 0.0
        assert np.isfinite(r["r2"]) and np.isfinite(r["gaussian_nll"])
        assert r["delta_nll"] == pytest.approx(r["gaussian_nll_baseline"] - r["gaussian_nll"])
    assert np.isfinite(res["running_speed"]["latents/r2"])
    assert res["running_speed"]["decoder_protocol"] == "train_to_eval"
    assert all(e["n_train_trials"] > e["n_eval_trials"] > 0 for e in res["running_speed"]["per_session"].values())
    assert "spikes" in res["generation_fidelity"]["not_applicable"]
    assert "spikes" in res["connectivity"]["not_applicable"]
    assert "'choice'" in res["choice"]["not_applicable"]
    assert is_png(tmp_path / "figures" / "co_smoothing_per_neuron.png")


# --------------------------------------------------------------------------- connectivity
class GlmOracle(Predictor):
    """log rate_i(t) = b_i + sum_j W[i, j] * (mean visible count of j before t): silencing j moves i iff W[i, j]."""

    name = "glm-oracle"

    def __init__(self, W, meta):
        self.W = W
        self.session_n_units = {s: m.n_units for s, m in meta.sessions.items()}

    def predict(self, batch, mask):
        x = batch["spikes"].numpy().astype(float)
        vis = ~mask.hidden.numpy()
        cs = np.cumsum(x * vis, axis=1) - x * vis  # strictly before t
        cnt = np.cumsum(vis, axis=1) - vis
        h = cs / np.maximum(cnt, 1)
        return 0.05 * np.exp(np.einsum("btj,ij->bti", h, self.W)), None

    def lagged_gradient(self, batch, target_bin, n_lags):
        B = batch["spikes"].shape[0]  # d log rate_i(t) / d x_j(t - l) = W[i, j] / (bins before t), every lag
        return np.broadcast_to(B * self.W / target_bin, (n_lags, *self.W.shape)).copy()


def test_connectivity_perturbation_recovers_a_known_glm_and_real_model_runs(tmp_path):
    session, W = make_hub_network(n_neurons=10, duration=40.0, seed=2)
    dd, meta = build_dataset([session], align_event="start_time", window=(0.0, 2.0), bin_size=0.01)
    res = evaluate(GlmOracle(W, meta), (dd, meta), tasks="connectivity", output=tmp_path / "o" / "r.json")
    c = res["connectivity"]
    assert c["perturbation/auroc"] == 1.0 and c["perturbation/direction_accuracy"] == 1.0
    assert c["perturbation/auprc"] == 1.0
    assert c["gradient/auroc"] == 1.0 and c["gradient/direction_accuracy"] == 1.0 and c["gradient/auprc"] == 1.0
    assert "attention/auroc" not in c  # the oracle exposes no attention
    assert 0.0 <= c["pearson/auroc"] <= 1.0 and c["pearson/direction_accuracy"] == 0.0  # symmetric
    assert c["chance/auprc"] == pytest.approx((W[~np.eye(10, dtype=bool)] != 0).mean())
    assert is_png(tmp_path / "o" / "figures" / "connectivity_hubnet-2.png")
    # the real (untrained) joint model: attention and perturbation matrices go through the same scoring
    res = evaluate(tiny_model(meta), (dd, meta), tasks="connectivity,inter_region")
    c = res["connectivity"]
    for k in ("attention/auroc", "perturbation/auroc", "gradient/auroc", "ccg/auroc", "attention/direction_accuracy"):
        assert 0.0 <= c[k] <= 1.0, k
    assert "single region" in res["inter_region"]["not_applicable"]


# --------------------------------------------------------------------------- recipes
def load_recipe(name):
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", REPO / "recipes" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_evaluate_and_generate_recipes_on_saved_model(ibl, tmp_path, capsys):
    dd, meta = ibl
    model_dir = tmp_path / "model"
    tiny_model(meta).save_pretrained(model_dir)
    save_dataset(dd, meta, model_dir / "dataset")  # where recipes/pretrain.py puts its synthetic dataset
    rc = load_recipe("evaluate").main(["--model", str(model_dir), "--tasks", "co_smoothing,running_speed",
                                       "--task_option", "co_smoothing.baselines=[\"null\"]", "--max_trials", "4"])
    assert rc == 0
    out = model_dir / "evaluation" / "results.json"
    res = json.loads(out.read_text())
    assert res["co_smoothing"]["null/bps"] == 0.0 and "smoothing/bps" not in res["co_smoothing"]
    assert all(e["n_trials"] == 4 for e in res["co_smoothing"]["per_session"].values())
    assert "not_applicable" in res["running_speed"]
    assert "| co_smoothing | bps |" in capsys.readouterr().out
    rc = load_recipe("generate").main(["--model", str(model_dir), "--max_trials", "2", "--prompt_s", "1.0",
                                       "--output_dir", str(tmp_path / "gen")])
    assert rc == 0
    sid = list(meta.sessions)[0]
    with np.load(tmp_path / "gen" / f"{sid}.npz", allow_pickle=False) as z:
        assert z["gen_counts"].shape == z["true_counts"].shape == (2, 50, meta.sessions[sid].n_units)
        assert int(z["start_bin"]) == 50 and (z["gen_event_times"] >= 1.0 - 1e-6).all()
        assert z["gen_counts"].sum() == z["gen_event_times"].size
    assert is_png(tmp_path / "gen" / f"{sid}_raster.png")
    summary = json.loads((tmp_path / "gen" / "generation_summary.json").read_text())
    assert set(summary) == set(meta.sessions)


def test_adapter_for_a_new_animal_is_loaded_and_merged(ibl, tmp_path):
    from nfm import adapters

    dd, meta = ibl
    old, new = list(meta.sessions)
    base_meta = meta.subset([old])
    tiny_model(base_meta).save_pretrained(tmp_path / "base")
    save_dataset(dd, meta, tmp_path / "data")
    spec = adapters.new_sessions_spec(meta, [new])
    peft = adapters.lora_model(NfmForPretraining.from_pretrained(tmp_path / "base"), spec)
    with torch.no_grad():  # stand-in for fine-tuning: a distinctive read-out bias of the new session
        for name, p in peft.named_parameters():
            if "modules_to_save" in name and name.endswith("readout_bias"):
                p.fill_(-1.5)
    adapters.save_adapter(peft, tmp_path / "adapter", spec, base_model=str(tmp_path / "base"))
    argv = ["--model", str(tmp_path / "base"), "--dataset", str(tmp_path / "data"), "--sessions", new,
            "--tasks", "co_smoothing", "--task_option", 'co_smoothing.baselines=["null"]', "--max_trials", "3",
            "--output", str(tmp_path / "ev" / "results.json")]
    evaluate_recipe = load_recipe("evaluate")
    with pytest.raises(ModelDatasetMismatch, match="unknown"):
        evaluate_recipe.main(argv)
    assert evaluate_recipe.main(argv + ["--adapter", str(tmp_path / "adapter")]) == 0
    got = json.loads((tmp_path / "ev" / "results.json").read_text())["co_smoothing"]
    merged = adapters.merge_adapter(peft).eval()
    want = evaluate(merged, (dd, meta), tasks="co_smoothing", sessions=[new], max_trials=3,
                    task_overrides={"co_smoothing": {"baselines": ["null"]}})["co_smoothing"]
    assert got["bps"] == pytest.approx(want["bps"], rel=1e-6)
    assert list(got["per_session"]) == [new]
