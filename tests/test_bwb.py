"""IBL BrainWideBench submissions (issue 19): nfm writes predictions (and ground truth) in the contract's format
through the real ``ibl_bwb_eval`` package (no mock), the package's own scorer reads them, and its numbers equal
nfm's own Poisson D2 and BWB bits/spike of the same predictions; ids follow the contract (IBL eid, cluster uuids
where the dataset has them), a mis-aligned id makes the scorer fail, and the recipe's --bwb errors are one line."""
import subprocess
import uuid

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers.utils import logging as hf_logging

from nfm.data.hf import build_dataset
from nfm.data.sources.synthetic import make_ibl_like_world
from nfm.evaluation import metrics as mt
from nfm.evaluation.bwb import held_out_units, write_bwb
from nfm.evaluation.context import EvalContext
from nfm.evaluation.predictor import NfmPredictor, Predictor
from nfm.models import NfmConfig, NfmForPretraining
from training_fixtures import RECIPES, assert_user_error, python, subprocess_env

import ibl_bwb_eval as bwb  # noqa: E402  (installed by the Makefile: pip install --no-deps ibl-bwb-eval)
from ibl_bwb_eval.entity_ids import decode_entity_ids  # noqa: E402
from ibl_bwb_eval.scoring import ts2 as ts2_scoring  # noqa: E402

hf_logging.set_verbosity_error()
TINY = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, decoder_layers=1)
EID = str(uuid.UUID(int=0x1234_5678_9ABC_4DEF_8123_456789ABCDEF))


@pytest.fixture(scope="module")
def world():
    """2 animals x 1 session x 20 trials (window -0.5..1.5 s, 20 ms bins); the second session carries IBL ids
    (an eid, units ``probe00/<cluster uuid>``) as the IBL source writes them; a tiny untrained model."""
    sessions = make_ibl_like_world(n_animals=2, n_trials=20, units_per_region=(4, 6), seed=5)
    s = sessions[1]
    s.extra["eid"] = EID
    s.extra["trial_filter"] = {"alf_trial_index": (2 * np.arange(s.n_trials) + 1).tolist()}  # rows of the ALF table
    rng = np.random.default_rng(0)
    s.units["unit_id"] = np.array([f"probe00/{uuid.UUID(int=int(rng.integers(2**62)) << 60 | i)}"
                                   for i in range(len(s.units["unit_id"]))])
    dd, meta = build_dataset(sessions)
    torch.manual_seed(0)
    model = NfmForPretraining(NfmConfig.from_dataset_meta(meta, **TINY)).eval()
    return dd, meta, model


@pytest.fixture(scope="module")
def submission(world, tmp_path_factory):
    dd, meta, model = world
    out = tmp_path_factory.mktemp("bwb")
    report = write_bwb(model, (dd, meta), out, label="tiny-nfm", ground_truth=True)
    return out, report


def _session_data(world, sid):
    dd, meta, model = world
    pred = NfmPredictor(model)
    ctx = EvalContext(dd, meta, pred, "test", [sid])
    return ctx, ctx.session(sid)


def test_layout_metadata_and_ids(world, submission):
    dd, meta, _ = world
    out, report = submission
    assert report.tasks_written() == ["ts2-co_smoothing", "ts2-forecasting", "ts1-choice", "ts1-reward",
                                      "ts1-stimulus_contrast", "ts3-unit_cosmos"]
    sid_plain, sid_ibl = meta.session_ids
    for task in ("ts2-co_smoothing", "ts2-forecasting"):
        for sid, rid in ((sid_plain, sid_plain), (sid_ibl, EID)):
            files = sorted((out / "predictions" / "tiny-nfm" / task / rid).glob("seed_*.safetensors"))
            assert [f.name for f in files] == [f"seed_{s}.safetensors" for s in bwb.EVAL_SEEDS]
            with safe_open(str(files[0]), framework="pt") as f:
                md = f.metadata()
            assert md["label"] == "tiny-nfm" and md["task"] == task and md["seed"] == "43"
            assert md["recording_id"] == rid and md["ibl_bwb_eval_version"] == bwb.__version__
            assert md["ids"] == ("ibl" if sid == sid_ibl else "dataset")
            p, gt = load_file(str(files[0])), load_file(str(out / "ground_truth" / task / rid / "ground_truth.safetensors"))
            assert p["window_timestamps"].dtype == torch.float64 and p["predictions"].dtype == torch.float32
            assert torch.equal(p["window_timestamps"], gt["window_timestamps"])
            assert p["predictions"].shape == gt["targets"].shape
            # the window start in the recording's clock: align event (stimOn_times) + window[0]
            _, sd = _session_data(world, sid)
            expected = sd.trial_columns["stimOn_times"].astype(np.float64) + meta.window[0]
            np.testing.assert_array_equal(p["window_timestamps"].numpy(), expected)
            units = np.asarray(meta.session(sid).units["unit_id"]).astype(str)
            ids = decode_entity_ids(p["entity_ids"])
            if task == "ts2-co_smoothing":
                held = held_out_units(rid, len(units))
                assert len(held) == int(np.ceil(0.1 * len(units))) and p["predictions"].shape[1] == 50  # last 1 s
                units = units[held]
            else:
                assert p["predictions"].shape[1:] == (5, len(units))  # last 0.1 s, every unit
            want = [u.split("/", 1)[1] for u in units] if sid == sid_ibl else list(units)
            assert list(ids) == want
    assert any("without IBL ids" in n for n in report.notes)
    assert "ts1-wheel_speed" in dict(report.skipped) and "ts1-licking_rate" in dict(report.skipped)


def test_held_out_units_are_fixed_per_recording():
    a = held_out_units("rec-a", 40)
    assert np.array_equal(a, held_out_units("rec-a", 40)) and len(a) == 4
    assert not np.array_equal(a, held_out_units("rec-b", 40))
    assert len(held_out_units("x", 3)) == 1 and len(held_out_units("x", 2)) == 1
    with pytest.raises(ValueError, match="needs >= 2 units"):
        held_out_units("x", 1)


def test_official_scorer_equals_nfm_metrics(world, submission):
    """The package's own scorer (in process and as ``python -m``) on nfm's files = nfm's poisson_d2 and
    bits_per_spike_bwb of the same predictions and counts, taken from the dataset and the model directly."""
    dd, meta, model = world
    out, report = submission
    raw = ts2_scoring.score_dir(out / "predictions" / "tiny-nfm", out / "ground_truth")
    assert len(raw) == 2 * 2 * len(bwb.EVAL_SEEDS)  # ts1 files are not the ts2 scorer's
    for (label, task, rid, seed), scores in raw.items():
        assert label == "tiny-nfm" and np.isfinite(scores["poisson_d2"]) and np.isfinite(scores["bps"])
        w = next(w for w in report.written if w["task"] == task and w["recording_id"] == rid)
        ctx, sd = _session_data(world, w["session_id"])
        n = sd.counts.shape[1]
        from nfm.evaluation.bwb import _ts2_plan

        mask, bins, units = _ts2_plan(task.split("-", 1)[1], n, ctx.bin_size, sd.n_units, rid)
        rates, _, _ = ctx.masked_predictions(ctx.predictor, sd, [mask], "check")
        rates, counts = rates[:, bins][:, :, units], sd.counts[:, bins][:, :, units]
        assert abs(scores["poisson_d2"] - mt.poisson_d2(rates, counts)) < 1e-5, (task, rid)
        assert abs(scores["bps"] - mt.bits_per_spike_bwb(rates, counts)) < 1e-5, (task, rid)
    res = subprocess.run([python(), "-m", "ibl_bwb_eval.scoring.ts2", "--pred_dir", str(out / "predictions" / "tiny-nfm"),
                          "--gt_dir", str(out / "ground_truth")], env=subprocess_env(COLUMNS="200"),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Error" not in res.stdout and "GT not found" not in res.stdout, res.stdout
    assert res.stdout.count("tiny-nfm") == 4 and EID in res.stdout


def test_ts1_classification_ids_labels_and_scores(world, submission):
    """TS1 choice / reward / stimulus_contrast: trial ids are the ALF trials-table rows where the dataset has them,
    the ground truth the dataset's labels, and the package's own TS1 scorer's balanced accuracy equals the one
    computed here from the written log-probabilities (torchmetrics' macro accuracy: the mean recall over the
    classes that occur in the targets or the predictions; nfm's balanced accuracy where both agree)."""
    from ibl_bwb_eval.scoring import ts1 as ts1_scoring

    from nfm.evaluation.bwb import ts1_classes

    dd, meta, _ = world
    out, report = submission
    raw = ts1_scoring.score_dir(out / "predictions" / "tiny-nfm", out / "ground_truth")
    assert {k[1] for k in raw} == {"ts1-choice", "ts1-reward", "ts1-stimulus_contrast"}
    assert len(raw) == 3 * 2 * len(bwb.EVAL_SEEDS)
    for w in (w for w in report.written if w["task"].startswith("ts1-")):
        task = w["task"].split("-", 1)[1]
        _, sd = _session_data(world, w["session_id"])
        y, keep = ts1_classes(task, sd.trial_columns, w["session_id"])
        p, gt = load_file(w["files"][0]), load_file(w["ground_truth"])
        ibl = w["recording_id"] == EID
        want_ids = (2 * sd.trial_ids + 1) if ibl else sd.trial_ids
        np.testing.assert_array_equal(p["trial_id"].numpy(), want_ids[keep])
        np.testing.assert_array_equal(gt["values"][:, 0].numpy(), y[keep])
        dim = 5 if task == "stimulus_contrast" else 2
        assert p["predictions"].shape == (int(keep.sum()), 1, dim)
        pred = p["predictions"][:, 0].argmax(-1).numpy()
        classes = np.union1d(y[keep], pred)
        expected = np.mean([np.mean(pred[y[keep] == c] == c) if (y[keep] == c).any() else 0.0 for c in classes])
        scores = raw[("tiny-nfm", w["task"], w["recording_id"], 43)]
        assert abs(scores["bacc"] - expected) < 1e-6, (w["task"], scores, expected)
        if set(pred) <= set(y[keep]):
            assert abs(scores["bacc"] - mt._balanced_accuracy(y[keep], pred)) < 1e-6
    # a shifted trial index no longer aligns: the scorer finds no common trial and fails on the empty arrays
    w = next(w for w in report.written if w["task"] == "ts1-choice" and w["recording_id"] == EID)
    gt = load_file(w["ground_truth"])
    bad = out / "bad_gt" / "ts1-choice" / EID / "ground_truth.safetensors"
    bad.parent.mkdir(parents=True)
    save_file({**gt, "trial_id": gt["trial_id"] + 1}, str(bad))
    assert np.intersect1d(gt["trial_id"] + 1, load_file(w["files"][0])["trial_id"]).size == 0
    assert ts1_scoring.score_dir(out / "predictions" / "tiny-nfm" / "ts1-choice" / EID, out / "bad_gt") == {}


def test_oracle_scores_positive_and_model_scores_differ(world, tmp_path):
    """A predictor of the true rates beats the null in the scorer's numbers (a sign that the scored entries are the
    predicted ones), and the scorer tells it from the untrained model."""
    dd, meta, model = world

    class CountOracle(Predictor):  # predicts each trial's smoothed observed counts: far better than the mean
        name = "oracle"

        def __init__(self):
            self.session_n_units = {s: m.n_units for s, m in meta.sessions.items()}

        def predict(self, batch, mask):
            x = batch["spikes"].double().numpy()
            k = np.ones(5) / 5
            sm = np.apply_along_axis(lambda v: np.convolve(v, k, mode="same"), 1, x)
            return 0.8 * sm + 0.2 * x + 1e-3, None

    write_bwb(CountOracle(), (dd, meta), tmp_path, label="oracle", ground_truth=True, seeds=[43])
    write_bwb(model, (dd, meta), tmp_path, label="tiny", seeds=[43])
    raw = ts2_scoring.score_dir(tmp_path / "predictions", tmp_path / "ground_truth")
    for task in ("ts2-co_smoothing", "ts2-forecasting"):
        for rid in (meta.session_ids[0], EID):
            assert raw[("oracle", task, rid, 43)]["poisson_d2"] > 0.2
            assert raw[("oracle", task, rid, 43)]["poisson_d2"] > raw[("tiny", task, rid, 43)]["poisson_d2"]


def test_misaligned_ids_fail_in_the_scorer(world, submission, tmp_path):
    """Ground truth whose window starts are shifted (a trial index off by one would do the same) no longer
    aligns: the scorer reports an error and scores nothing for that recording."""
    out, report = submission
    w = next(w for w in report.written if w["task"] == "ts2-co_smoothing" and w["recording_id"] == EID)
    gt = load_file(w["ground_truth"])
    bad = tmp_path / "gt" / "ts2-co_smoothing" / EID / "ground_truth.safetensors"
    bad.parent.mkdir(parents=True)
    save_file({**gt, "window_timestamps": gt["window_timestamps"] + 0.5}, str(bad))
    with pytest.raises(ValueError, match="No overlapping windows"):
        ts2_scoring.score_file(w["files"][0], bad)
    assert ts2_scoring.score_dir(out / "predictions" / "tiny-nfm" / "ts2-co_smoothing" / EID, tmp_path / "gt") == {}
    # one window missing from the predictions: the scorer scores the others only (so counts are compared too)
    p = load_file(w["files"][0])
    cut = tmp_path / "cut" / "seed_43.safetensors"
    cut.parent.mkdir()
    with safe_open(w["files"][0], framework="pt") as f:
        md = f.metadata()
    save_file({k: v[1:].contiguous() if k != "entity_ids" else v for k, v in p.items()}, str(cut), metadata=md)
    full, part = ts2_scoring.score_file(w["files"][0], w["ground_truth"]), ts2_scoring.score_file(cut, w["ground_truth"])
    assert full["poisson_d2"] != part["poisson_d2"]


def test_models_that_cannot_predict_masked_activity_are_skipped_with_the_reason(world, tmp_path):
    dd, meta, _ = world

    class NoMtm(Predictor):
        name = "latent-only"

    report = write_bwb(NoMtm(), (dd, meta), tmp_path, label="x", seeds=[43])
    assert report.written == []
    skipped = dict(report.skipped)
    assert "does not implement predict()" in skipped["ts2-co_smoothing"]
    assert "skipped ts2-forecasting: latent-only does not implement predict()" in report.format()


def test_bad_label_is_a_one_line_error(world, tmp_path):
    dd, meta, model = world
    from nfm.errors import UsageError

    with pytest.raises(UsageError, match=r"--bwb_label: label 'a/b'"):
        write_bwb(model, (dd, meta), tmp_path, label="a/b")


def test_recipe_bwb_argument_errors_are_one_line(tmp_path):
    f = tmp_path / "a_file"
    f.write_text("x")
    res = subprocess.run([python(), str(RECIPES / "evaluate.py"), "--model", str(tmp_path), "--bwb", str(f)],
                         env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert_user_error(res, "--bwb", str(f))
    res = subprocess.run([python(), str(RECIPES / "evaluate.py"), "--bwb_label", "x"], env=subprocess_env(),
                         capture_output=True, text=True, timeout=120)
    assert_user_error(res, "--bwb_label", "--bwb")


def test_recipe_writes_a_submission_the_scorer_reads(world, tmp_path):
    """``evaluate.py --model M --dataset D --bwb DIR --bwb_ground_truth``: label = the model folder's name, the
    written and skipped tasks printed, and the scorer's command runs on the folder."""
    from nfm.data.hf import save_dataset

    dd, meta, model = world
    model.save_pretrained(tmp_path / "my-model")
    save_dataset(dd, meta, tmp_path / "data")
    out = tmp_path / "sub"
    res = subprocess.run([python(), str(RECIPES / "evaluate.py"), "--model", str(tmp_path / "my-model"), "--dataset",
                          str(tmp_path / "data"), "--bwb", str(out), "--bwb_ground_truth", "--bwb_seeds", "43", "44"],
                         env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "written ts2-co_smoothing: 2 recording(s)" in res.stdout and "written ts2-forecasting" in res.stdout
    assert "written ts1-choice: 2 recording(s)" in res.stdout and "skipped ts1-wheel_speed: " in res.stdout
    assert "written ts3-unit_cosmos: " in res.stdout and "score: python -m ibl_bwb_eval.scoring.ts3" in res.stdout
    files = sorted(p.relative_to(out).as_posix() for p in (out / "predictions").rglob("*.safetensors"))
    assert len(files) == 5 * 2 * 2 + 2 and all(f.startswith("predictions/my-model/ts") for f in files), files
    raw = ts2_scoring.score_dir(out / "predictions", out / "ground_truth")
    assert len(raw) == 8 and all(np.isfinite(v["poisson_d2"]) for v in raw.values())


def test_ts3_unit_cosmos_labels_ids_and_macro_f1(world, submission):
    """TS3: ground truth = each unit's region mapped to Cosmos by iblatlas (COSMOS_LABELS order), entity ids the
    cluster uuids (IBL) or ``<session>/<unit id>``, and the package's TS3 scorer's macro F1 equals sklearn's on the
    written probabilities exactly; a unit uuid missing from the predictions makes the scorer fail."""
    from ibl_bwb_eval.entity_ids import encode_entity_ids
    from ibl_bwb_eval.scoring import ts3 as ts3_scoring
    from sklearn.metrics import f1_score

    from nfm.evaluation.bwb import cosmos_of

    dd, meta, _ = world
    out, report = submission
    w = next(w for w in report.written if w["task"] == "ts3-unit_cosmos")
    p, gt = load_file(w["files"][0]), load_file(w["ground_truth"])
    want_ids, want_y = [], []
    for sid in meta.session_ids:
        cos = cosmos_of(meta.session(sid).regions)
        units = np.asarray(meta.session(sid).units["unit_id"]).astype(str)
        keep = np.isin(cos, bwb.COSMOS_LABELS)
        want_ids += [u.split("/", 1)[1] if sid == meta.session_ids[1] else f"{sid}/{u}" for u in units[keep]]
        want_y += [bwb.COSMOS_LABELS.index(c) for c in cos[keep]]
    assert list(decode_entity_ids(gt["entity_ids"])) == want_ids and gt["targets"].tolist() == want_y
    assert p["pred_proba"].shape == (len(want_ids), 10)
    np.testing.assert_allclose(p["pred_proba"].sum(1).numpy(), 1.0, atol=1e-5)
    raw = ts3_scoring.score_dir(out / "predictions" / "tiny-nfm", out / "ground_truth")
    assert sorted(raw) == [("tiny-nfm", s) for s in bwb.EVAL_SEEDS]
    pred = p["pred_proba"].argmax(1).numpy()
    labels = list(bwb.COSMOS_LABELS)
    f1 = f1_score([labels[i] for i in want_y], [labels[i] for i in pred], labels=labels, average="macro",
                  zero_division=0)
    assert raw[("tiny-nfm", 43)]["macro/f1-score"] == pytest.approx(f1, abs=1e-12)
    # a unit missing from the predictions: the scorer refuses the file
    with safe_open(w["files"][0], framework="pt") as f:
        md = f.metadata()
    cut = out / "ts3_cut.safetensors"
    save_file({"pred_proba": p["pred_proba"][1:].contiguous(),
               "entity_ids": encode_entity_ids(np.asarray(want_ids[1:]))}, str(cut), metadata=md)
    with pytest.raises(ValueError, match="not found in predictions"):
        ts3_scoring.score_file(cut, w["ground_truth"])


def test_cosmos_mapping_and_one_recording_skips_ts3(world, tmp_path):
    from nfm.evaluation.bwb import cosmos_of

    assert list(cosmos_of(["CA1", "LP", "VISp", "CP", "not-a-region", "root"])) == \
        ["HPF", "TH", "Isocortex", "CNU", "", "root"]
    dd, meta, model = world
    report = write_bwb(model, (dd, meta), tmp_path, label="one", seeds=[43], sessions=[meta.session_ids[0]])
    assert "needs >= 2" in dict(report.skipped)["ts3-unit_cosmos"]


def test_official_aggregation_ranks_the_submission(submission):
    """``python -m ibl_bwb_eval.scoring.aggregation`` reads the whole folder (TS1, TS2 and TS3) without an error."""
    out, report = submission
    res = subprocess.run([python(), "-m", "ibl_bwb_eval.scoring.aggregation", "--pred_dir", str(out / "predictions"),
                          "--gt_dir", str(out / "ground_truth")], env=subprocess_env(COLUMNS="250"),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Error scoring" not in res.stdout and "GT not found" not in res.stdout, res.stdout
    table = res.stdout.split("Aggregated Scores", 1)[1].split("Benchmark Ranking", 1)[0]
    for task in report.tasks_written():
        assert task in table, (task, table)
    assert "tiny-nfm" in table
