"""Evaluation and generation as a user runs them: --list_tasks without a model, --quick, the cost estimate,
progress inside tasks and per generated trial, partial results of an interrupted run, task options for a
dataset's own variable names, generate's default sessions, figure labels."""
import dataclasses
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers.utils import logging as hf_logging

from nfm.data.hf import build_dataset
from nfm.data.sources.synthetic import make_ibl_like_world
from nfm.evaluation.costs import calibrate, estimate_costs, format_costs
from nfm.evaluation.generation_tasks import generate_to_files
from nfm.evaluation.kinds import TASK_KINDS
from nfm.evaluation.runner import EvalContext, as_predictor, evaluate
from nfm.evaluation.tasks import QUICK_MAX_TRIALS, load_tasks
from nfm.models import NfmConfig, NfmForPretraining
from training_fixtures import RECIPES, python, subprocess_env

hf_logging.set_verbosity_error()
TINY = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, decoder_layers=1,
            gen_max_events=24)


@pytest.fixture(scope="module")
def world():
    """2 animals x 1 session, with a trials column ``direction`` (a dataset's own name for the grating
    direction); the model knows the first session only."""
    sessions = make_ibl_like_world(n_animals=2, n_trials=24, units_per_region=(3, 4), seed=3)
    for s in sessions:  # two directions, alternating: enough trials of each for nested 2-fold CV
        s.trials["direction"] = np.tile([0.0, 180.0], s.n_trials // 2 + 1)[: s.n_trials]
    dd, meta = build_dataset(sessions)
    torch.manual_seed(0)
    model = NfmForPretraining(NfmConfig.from_dataset_meta(meta.subset([meta.session_ids[0]]), **TINY)).eval()
    return dd, meta, model


def test_list_tasks_needs_no_model():
    res = subprocess.run([python(), str(RECIPES / "evaluate.py"), "--list_tasks"], env=subprocess_env(),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    names = [ln.split()[0] for ln in res.stdout.splitlines()]
    assert {"co_smoothing", "choice", "generation_fidelity"} <= set(names)


def test_quick_overrides():
    full = {t.name: t for t in load_tasks("all")}
    quick = {t.name: t for t in load_tasks("all", quick=True)}
    assert quick["co_smoothing"].spec["mask"]["held_out_folds"] == 2 < full["co_smoothing"].spec["mask"]["held_out_folds"]
    assert quick["choice"].spec["decoder"]["n_splits"] == 2
    assert quick["choice"].spec["decoder"]["Cs"] == full["choice"].spec["decoder"]["Cs"][::2]
    assert quick["behavior_finetuned"].spec["train"]["max_steps"] == 25
    assert quick["generation_fidelity"].spec["max_trials"] == 4
    assert "held_out_folds" not in quick["forward_prediction"].spec["mask"]
    # a user override wins over --quick
    mine = load_tasks("choice", overrides={"choice": {"decoder": {"n_splits": 3}}}, quick=True)[0]
    assert mine.spec["decoder"]["n_splits"] == 3 and mine.spec["decoder"]["Cs"] == quick["choice"].spec["decoder"]["Cs"]


def test_unknown_task_did_you_mean():
    with pytest.raises(KeyError, match="did you mean 'co_smoothing'"):
        load_tasks("co_smothing")


def test_cost_estimate_counts_the_work(world):
    dd, meta, model = world
    sid = meta.session_ids[0]
    ctx = EvalContext(dd, meta, as_predictor(model), "test", [sid], batch_size=8)
    tasks = load_tasks("co_smoothing,psth_r2,forward_prediction,choice,generation_fidelity")
    by = {c.task: c for c in estimate_costs(ctx, tasks)}
    n_test = int((np.asarray(dd["test"]["session_id"]) == sid).sum())
    n_all = sum(int((np.asarray(dd[s]["session_id"]) == sid).sum()) for s in ("train", "validation", "test"))
    folds = min(4, meta.sessions[sid].n_units)
    assert by["co_smoothing"].trial_passes == folds * n_test
    # one fit per fold + the CV: 3 widths x 3 folds x (1 + 3 warm-started penalties at half a fit) x 2/3 of the trials
    assert by["co_smoothing"].glm == pytest.approx(folds + 3 * 3 * (1 + 0.5 * 3) * 2 / 3)
    assert by["psth_r2"].trial_passes == 0  # shares co-smoothing's masks (cached predictions)
    assert by["forward_prediction"].trial_passes == n_test
    n_train = int((np.asarray(dd["train"]["session_id"]) == sid).sum())
    assert by["choice"].trial_passes == 2 * (n_train + n_test)  # latents + rates, train (decoder fit) and test
    assert by["choice"].fits == 3 * (4 * 9 + 1)  # 3 sources x (4 CV folds on train x 9 Cs + the refit)
    w = int(model.config.window_bins)
    windows = meta.n_bins // w - int(np.ceil(0.5 / (w * meta.bin_size) - 1e-6))
    assert by["generation_fidelity"].windows == int(np.ceil(min(n_test, 32) / 8)) * windows
    timing = calibrate(ctx, tasks)
    assert {"collate", "trial_pass", "window", "fit", "ridge", "glm", "step", "score"} <= set(timing)
    # scored entries: model, null and smoothing baseline, each over the whole split (trials x bins x units)
    assert by["co_smoothing"].scored == 3 * n_test * meta.n_bins * meta.sessions[sid].n_units
    assert by["forward_prediction"].scored == 2 * n_test * meta.n_bins * meta.sessions[sid].n_units
    costs = estimate_costs(ctx, tasks, timing)
    c = costs[0]
    assert c.seconds == pytest.approx(c.trial_passes * timing["trial_pass"] + c.glm * timing["glm"]
                                      + c.scored * timing["score"] + c.collate * timing["collate"])
    text = format_costs(costs, timing)
    assert "co_smoothing" in text and "total" in text and "measured on this machine" in text


def test_progress_inside_tasks_and_partial_results(world, tmp_path, capsys, monkeypatch):
    dd, meta, model = world
    sid = meta.session_ids[0]
    calls = []
    original = TASK_KINDS["masking"].runner()

    def interrupted(ctx, task):  # the second masking task is interrupted (Ctrl-C)
        calls.append(task.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(ctx, task)

    monkeypatch.setitem(TASK_KINDS, "masking", dataclasses.replace(TASK_KINDS["masking"], run=interrupted))
    out = tmp_path / "eval" / "results.json"
    with pytest.raises(KeyboardInterrupt):
        evaluate(model, (dd, meta), tasks="co_smoothing,forward_prediction", sessions=[sid], output=out,
                 progress=True, task_overrides={"co_smoothing": {"smoothing": {"method": "ridge"}}})
    results = json.loads(out.read_text())
    assert list(results) == ["co_smoothing"] and results["co_smoothing"]["bps"] is not None
    md = out.with_suffix(".md").read_text()
    assert "status: partial: 1 of 2 tasks done; not yet run: forward_prediction" in md
    err = capsys.readouterr().err
    assert "co_smoothing" in err and "session" in err  # the bar inside the task (sessions done, ETA)


def test_quick_run_caps_trials_and_says_so(world, tmp_path):
    dd, meta, model = world
    sid = meta.session_ids[0]
    out = tmp_path / "q" / "results.json"
    res = evaluate(model, (dd, meta), tasks="co_smoothing", sessions=[sid], output=out, quick=True)
    assert res["co_smoothing"]["bps"] is not None
    md = out.with_suffix(".md").read_text()
    assert "quick: yes" in md and f"at most {QUICK_MAX_TRIALS}" in md and "status: complete" in md


def test_task_option_maps_a_datasets_own_variable_name(world, tmp_path):
    """An NWB-style trials column 'direction' as the grating-direction target, and as PSTH condition."""
    dd, meta, model = world
    sid = meta.session_ids[0]
    over = {"stimulus_direction": {"target": {"trial_label": "direction"}, "modality": "any",
                                   "decoder": {"n_splits": 2, "Cs": [1.0]}},
            "psth_r2": {"conditions": ["direction"], "smoothing": {"method": "ridge"}}}
    res = evaluate(model, (dd, meta), tasks="stimulus_direction,psth_r2", sessions=[sid], task_overrides=over)
    assert "not_applicable" not in res["stimulus_direction"], res["stimulus_direction"]
    assert 0.0 <= res["stimulus_direction"]["latents/accuracy"] <= 1.0
    assert "not_applicable" not in res["psth_r2"], res["psth_r2"]
    # the same on the command line: --task_option values are YAML
    import importlib.util

    spec = importlib.util.spec_from_file_location("evaluate_recipe", RECIPES / "evaluate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.parse_task_options(["stimulus_direction.target.trial_label=direction",
                                   "psth_r2.conditions=[direction]"]) == {
        "stimulus_direction": {"target": {"trial_label": "direction"}}, "psth_r2": {"conditions": ["direction"]}}


def test_generate_defaults_to_known_sessions_and_shows_per_trial_progress(world, tmp_path, capsys, monkeypatch):
    from nfm.evaluation import generation_tasks

    dd, meta, model = world
    make_bar = generation_tasks._trial_bar

    def eager_bar(*args, **kwargs):  # print every update: the bar's 0.5 s refresh hides them when generation is fast
        bar = make_bar(*args, **kwargs)
        if bar is not None:
            bar.mininterval, bar.miniters, bar.dynamic_miniters = 0, 0, False
        return bar

    monkeypatch.setattr(generation_tasks, "_trial_bar", eager_bar)
    summary = generate_to_files(model, (dd, meta), tmp_path / "gen", max_trials=3, batch_size=2, progress=True)
    assert list(summary) == [meta.session_ids[0]]  # the session the model knows; the other is not an error
    assert summary[meta.session_ids[0]]["n_trials"] == 3
    err = capsys.readouterr().err
    assert "generating" in err and "/3 trials" in err
    # fractional progress: the bar advances after each generated window, not only per batch
    assert any(f"{x:.1f}/3" in err for x in np.arange(0.1, 3.0, 0.1) if abs(x - round(x)) > 0.05)
    assert (tmp_path / "gen" / f"{meta.session_ids[0]}_raster.png").is_file()


def test_summary_figure_labels_and_visible_zero_bars(tmp_path):

    from nfm.evaluation import plots

    captured = {}
    original = plots._save

    def grab(fig, path):
        captured["fig"] = fig
        return original(fig, path)

    plots._save = grab
    try:
        plots.plot_summary({"co_smoothing": {"model": 0.3, "null": 0.0, "smoothing": 0.25}}, tmp_path / "s.png",
                           metrics={"co_smoothing": "bps"})
        ax = captured["fig"].axes[0]
        assert ax.get_ylabel() == "bps" and "bps" in ax.get_title()
        assert any(abs(ln.get_ydata()[0]) < 1e-12 and ln.get_linewidth() >= 3 for ln in ax.lines)  # the 0 stub
        assert {t.get_text() for t in ax.texts} >= {"0.3", "0", "0.25"}
        c = np.array([0, 0, 1, 1])
        plots.plot_psth_examples(np.ones((4, 5, 2)), np.ones((4, 5, 2)), c, tmp_path / "p.png", bin_size=0.02,
                                 condition_labels=["choice=-1", "choice=1"])
        legend = captured["fig"].legends[0]
        labels = [t.get_text() for t in legend.get_texts()]
        assert labels[:2] == ["choice=-1 (n=2)", "choice=1 (n=2)"] and "true" in labels and "predicted" in labels
        from nfm.evaluation.generation_metrics import plot_rasters

        path = plot_rasters((np.array([0.1, 0.9]), np.array([0, 1])), (np.array([0.1, 0.8]), np.array([0, 1])),
                            tmp_path / "r.png", n_units=2, prompt_end=0.5)
        assert Path(path).read_bytes()[:4] == b"\x89PNG"
    finally:
        plots._save = original
