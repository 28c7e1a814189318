"""Issue 17: decoders fitted on the train split and scored on unseen trials (``decoder_protocol``), and one
few-shot draw shared by LoRA adaptation (``subset_split``) and the fine-tuned behaviour heads."""
import json

import numpy as np
import pytest
import torch
from transformers.utils import logging as hf_logging

from nfm.data.fewshot import fewshot_count, fewshot_positions, fewshot_rows
from nfm.data.hf import build_dataset
from nfm.data.sources.synthetic import make_ibl_like_world
from nfm.evaluation.context import EvalContext
from nfm.evaluation.costs import count_work
from nfm.evaluation.predictor import NotApplicable, Predictor, as_predictor
from nfm.evaluation.runner import evaluate
from nfm.evaluation.tasks import load_tasks
from nfm.training import subset_split

hf_logging.set_verbosity_error()
GRID = {"n_splits": 3, "seed": 0}
OVER = {"choice": {"decoder": {**GRID, "Cs": [0.1, 10.0]}, "baselines": []},
        "wheel_speed": {"decoder": {**GRID, "alphas": [1e-3, 1.0, 1e3]}, "baselines": []}}


@pytest.fixture(scope="module")
def world():
    """One session, 400 trials (280 train / 40 validation / 80 test)."""
    return build_dataset(make_ibl_like_world(n_animals=1, n_trials=400, units_per_region=(3, 4), seed=3))


class MemorizingPredictor(Predictor):
    """Latents that carry the choice and the wheel speed of the trials it was trained on -- as a backbone aligned
    with behaviour on its training trials would -- and noise on every other trial."""

    name = "memorizer"

    def __init__(self, dd, meta):
        self.seen = {(str(s), int(t)) for s, t in zip(dd["train"]["session_id"], dd["train"]["trial_id"])}
        self.choice = meta.trial_label_names.index("choice")
        self.wheel = meta.behavior_names.index("wheel_speed")

    def latents(self, batch):
        B, T = batch["spikes"].shape[:2]
        ids = batch["trial_id"].numpy()
        seen = np.array([(s, int(t)) in self.seen for s, t in zip(batch["session_ids"], ids)])
        noise = np.stack([np.random.default_rng([0, int(t)]).normal(size=(T, 2)) for t in ids])
        out = noise.copy()
        label = np.nan_to_num(batch["trial_labels"][:, self.choice].numpy())
        out[seen, :, 0] = label[seen, None] + 0.1 * noise[seen, :, 0]
        out[seen, :, 1] = np.nan_to_num(batch["behavior"][..., self.wheel].numpy())[seen]
        return out


def _run(world, protocol, split="test", output=None):
    dd, meta = world
    over = {t: {**o, "decoder_protocol": protocol, "features": ["latents"]} for t, o in OVER.items()}
    return evaluate(MemorizingPredictor(dd, meta), world, tasks="choice,wheel_speed", split=split,
                    task_overrides=over, output=output)


def test_train_to_eval_sees_through_a_model_that_memorised_its_training_trials(world, tmp_path):
    held = _run(world, "train_to_eval", output=tmp_path / "held" / "results.json")
    pooled = _run(world, "cv_all_splits", output=tmp_path / "pooled" / "results.json")
    # scored on the 80 test trials the "model" never saw: chance (sd 0.056); pooled CV: the 280 train trials
    # (70%) are decoded perfectly, the rest at chance: about 0.85
    assert abs(held["choice"]["latents/accuracy"] - 0.5) < 0.17, held["choice"]
    assert abs(held["choice"]["latents/balanced_accuracy"] - 0.5) < 0.17
    assert pooled["choice"]["latents/accuracy"] > 0.78, pooled["choice"]
    assert pooled["choice"]["latents/accuracy"] > held["choice"]["latents/accuracy"] + 0.15
    assert held["wheel_speed"]["latents/r2"] < 0.05 < 0.5 < pooled["wheel_speed"]["latents/r2"]
    sid = next(iter(held["choice"]["per_session"]))
    e = held["choice"]["per_session"][sid]
    assert e["n_train_trials"] + e["n_eval_trials"] + e["n_trials_excluded"] == 280 + 80
    assert e["n_train_trials"] > 250 and e["n_eval_trials"] > 70
    assert e["latents/best_C"] in (0.1, 10.0) and held["wheel_speed"]["per_session"][sid]["latents/best_alpha"] in (
        1e-3, 1.0, 1e3)
    # chance: the majority class of the TRAIN labels applied to the evaluated trials
    dd, _ = world
    tr, te = np.asarray(dd["train"]["trial_choice"]), np.asarray(dd["test"]["trial_choice"])
    tr, te = tr[np.isfinite(tr) & (tr != 0)], te[np.isfinite(te) & (te != 0)]
    values, counts = np.unique(tr, return_counts=True)
    assert held["choice"]["chance"] == pytest.approx(np.mean(te == values[np.argmax(counts)]))
    # the protocol is in the result and the report; cv_all_splits is labelled as having seen training trials
    for name in ("choice", "wheel_speed"):
        assert held[name]["decoder_protocol"] == "train_to_eval"
        assert pooled[name]["decoder_protocol"] == "cv_all_splits"
    data = json.loads((tmp_path / "pooled" / "results.json").read_text())
    assert data["choice"]["decoder_protocol"] == "cv_all_splits"
    md = (tmp_path / "pooled" / "results.md").read_text()
    assert "the decoder saw training trials" in md and "70% of them from the train split" in md
    md_held = (tmp_path / "held" / "results.md").read_text()
    assert "decoder_protocol train_to_eval" in md_held and "saw training trials" not in md_held


def test_train_to_eval_refuses_to_score_the_train_split(world):
    res = _run(world, "train_to_eval", split="train")
    for name in ("choice", "wheel_speed"):
        assert "scored on the trials it was fitted on" in res[name]["not_applicable"]
    pooled = _run(world, "cv_all_splits", split="train")  # the labelled option still runs
    assert pooled["choice"]["decoder_protocol"] == "cv_all_splits"


def test_a_class_only_in_the_evaluated_split_is_named_with_counts(world):
    dd, meta = world
    test = dd["test"].map(lambda r, i: {"trial_choice": 5.0 if i < 3 else r["trial_choice"]}, with_indices=True)
    dd2 = type(dd)({"train": dd["train"], "validation": dd["validation"], "test": test})
    res = evaluate(MemorizingPredictor(dd2, meta), (dd2, meta), tasks="choice",
                   task_overrides={"choice": {**OVER["choice"], "features": ["latents"]}})
    msg = res["choice"]["not_applicable"]
    sid = meta.session_ids[0]
    assert f"session {sid}" in msg and "[5.0] occur only in the test split" in msg and "5.0: 3" in msg


def test_costs_count_train_and_evaluated_trials(world):
    dd, meta = world
    tasks = {t.name: t for t in load_tasks("choice,wheel_speed", overrides={
        "choice": {"decoder": {"n_splits": 3, "Cs": [0.1, 10.0]}, "features": ["latents"], "baselines": []},
        "wheel_speed": {"decoder_protocol": "cv_all_splits", "features": ["latents"], "baselines": [],
                        "decoder": {"n_splits": 3, "alphas": [1.0, 2.0]}}})}
    pred = MemorizingPredictor(dd, meta)
    ctx = EvalContext(dd, meta, pred, "test", meta.session_ids, max_trials=10)
    held = count_work(ctx, tasks["choice"])
    assert held.trial_passes == 280 + 10  # every train trial (fit) + the capped evaluated trials (score)
    assert held.fits == 3 * 2 + 1  # CV folds x grid + one refit, one feature source
    pooled = count_work(ctx, tasks["wheel_speed"])
    assert pooled.trial_passes == 280 + 40 + 10 and pooled.ridge == 3 * (3 * 2 + 1)  # nested CV
    ctx_train = EvalContext(dd, meta, pred, "train", meta.session_ids)
    assert "not applicable" in count_work(ctx_train, tasks["choice"]).notes[0]


# --------------------------------------------------------------------------- few-shot: one draw for both arms
def test_fewshot_positions_count_order_invariance_and_errors():
    ids = np.arange(100, 140)
    pos = fewshot_positions("s1", ids, 0.1, seed=2)
    assert pos.size == 4 and np.all(np.diff(pos) > 0)
    perm = np.random.default_rng(0).permutation(40)  # rows in another order: the same trial ids
    assert set(ids[perm][fewshot_positions("s1", ids[perm], 0.1, seed=2)]) == set(ids[pos])
    assert set(ids[fewshot_positions("s1", ids, 0.1, seed=3)]) != set(ids[pos])
    assert set(ids[fewshot_positions("s2", ids, 0.1, seed=2)]) != set(ids[pos])
    assert fewshot_count(10, 0.3) == 3 and fewshot_count(14, 0.1) == 2 and fewshot_count(5, 0.01) == 1
    assert np.array_equal(fewshot_positions("s1", ids, 1.0), np.arange(40))
    with pytest.raises(ValueError, match=r"fraction 0.0 must be in \(0, 1\]"):
        fewshot_positions("s1", ids, 0.0)
    with pytest.raises(ValueError, match="session 's1': trial id 3 appears more than once"):
        fewshot_positions("s1", np.array([1, 3, 3, 4]), 0.5)
    rows = fewshot_rows(["a", "b", "a", "b", "a"], [0, 0, 1, 1, 2], ["a"], 0.5, seed=1)
    assert rows.size == 2 and set(rows) <= {0, 2, 4}


@pytest.fixture(scope="module")
def tiny_saved(tmp_path_factory):
    from nfm.data.hf import load_dataset
    from training_fixtures import make_tiny_dataset

    return load_dataset(make_tiny_dataset(tmp_path_factory.mktemp("fewshot") / "tiny"))


@pytest.mark.parametrize("fraction, seed", [(0.1, 0), (0.25, 5), (0.5, 11)])
def test_lora_subset_and_finetuned_heads_pick_the_same_trials(tiny_saved, fraction, seed):
    dd, meta = tiny_saved
    sids = meta.session_ids
    lora = subset_split(dd["train"], sids, fraction, seed)
    ctx = EvalContext(dd, meta, MemorizingPredictor.__new__(MemorizingPredictor), "test", sids)
    for sid in sids:
        lora_ids = sorted(int(t) for s, t in zip(lora["session_id"], lora["trial_id"]) if s == sid)
        heads = ctx.session(sid, "train", cap=False, batch_size=4, fraction=fraction, seed=seed)
        assert sorted(heads.trial_ids.tolist()) == lora_ids, sid
        n = int(np.sum(np.asarray(dd["train"]["session_id"]) == sid))
        assert len(lora_ids) == fewshot_count(n, fraction) < n
    # the same trial ids from a train split stored in another row order
    shuffled = dd["train"].select(np.random.default_rng(1).permutation(len(dd["train"])))
    again = subset_split(shuffled, sids, fraction, seed)
    assert sorted(zip(again["session_id"], again["trial_id"])) == sorted(zip(lora["session_id"], lora["trial_id"]))


def test_finetuned_heads_train_on_the_lora_subset(tiny_saved):
    """Through the task runner itself: the few-shot training set run_finetune_decoding collates is the
    subset_split of the same fraction and seed."""
    from nfm.evaluation.decoding_tasks import run_finetune_decoding
    from nfm.models import NfmConfig, NfmForPretraining

    dd, meta = tiny_saved
    torch.manual_seed(0)
    model = NfmForPretraining(NfmConfig.from_dataset_meta(meta, hidden_size=16, num_hidden_layers=1,
                                                          num_attention_heads=2, intermediate_size=32,
                                                          decoder_layers=1)).eval()
    task = load_tasks("behavior_finetuned", overrides={"behavior_finetuned": {
        "train": {"max_steps": 1, "fraction": 0.25, "seed": 4, "batch_size": 4}}})[0]
    ctx = EvalContext(dd, meta, as_predictor(model), "test", meta.session_ids)
    out = run_finetune_decoding(ctx, task)
    lora = subset_split(dd["train"], meta.session_ids, 0.25, 4)
    assert out["train_trials"] == len(lora)
    used = {k: sd for k, sd in ctx._sessions.items() if k[1] == ("train",) and k[4] == 0.25 and k[5] == 4}
    assert len(used) == len(meta.session_ids)
    got = sorted((k[0], int(t)) for k, sd in used.items() for t in sd.trial_ids)
    assert got == sorted((str(s), int(t)) for s, t in zip(lora["session_id"], lora["trial_id"]))
    assert any("nfm.data.fewshot" in n for n in ctx.notes["behavior_finetuned"])


def test_eval_context_refuses_a_bad_fraction(tiny_saved):
    dd, meta = tiny_saved
    ctx = EvalContext(dd, meta, MemorizingPredictor.__new__(MemorizingPredictor), "test", meta.session_ids)
    with pytest.raises(ValueError, match="fraction 1.5 must be in"):
        ctx.session(meta.session_ids[0], "train", cap=False, fraction=1.5)
    with pytest.raises(NotApplicable):
        ctx.session("nope", "train", cap=False, fraction=0.5)


def test_a_label_with_one_class_in_a_tiny_share_is_left_out_and_the_behaviours_still_scored(tiny_saved):
    """1% of a session's trials may hold one choice: the choice head is not trained (said so), the rest is."""
    from nfm.evaluation.decoding_tasks import run_finetune_decoding
    from nfm.models import NfmConfig, NfmForPretraining

    dd, meta = tiny_saved
    assert meta.behavior_names, "the tiny dataset must carry a behaviour channel (wheel_speed)"
    torch.manual_seed(0)
    model = NfmForPretraining(NfmConfig.from_dataset_meta(meta, hidden_size=16, num_hidden_layers=1,
                                                          num_attention_heads=2, intermediate_size=32,
                                                          decoder_layers=1)).eval()
    task = load_tasks("behavior_finetuned", overrides={"behavior_finetuned": {
        "targets": [{"trial_label": "choice"}, {"behavior": meta.behavior_names[0]}],
        "train": {"max_steps": 1, "fraction": 0.01, "seed": 0, "batch_size": 4}}})[0]
    sid = meta.session_ids[0]
    ctx = EvalContext(dd, meta, as_predictor(model), "test", [sid])
    out = run_finetune_decoding(ctx, task)
    assert out["train_trials"] == 1  # one trial of one session: one choice value
    assert f"{meta.behavior_names[0]}/r2" in out and not any(k.startswith("choice/") for k in out)
    assert any("label 'choice': fewer than 2 classes" in n for n in ctx.notes["behavior_finetuned"])
