"""The training-end summary is a summary (issue 22): bounded by max(10% of the training time, 60 s) by default,
measured here; it says what the bound cut and names the one command of the full evaluation; its numbers are the
evaluation runner's for the same tasks, sessions and trial cap."""
from __future__ import annotations

import importlib.util
import json
import time

import numpy as np
import pytest

from training_fixtures import HELDOUT_SUBJECT, REPO, make_tiny_dataset, tiny_args

import nfm.evaluation.summary as S


def setup_module():
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NFM_CACHE_DIR", str(tmp_path / "cache"))  # a cold baseline cache per test


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("summary") / "ds")


def _recipe():
    spec = importlib.util.spec_from_file_location("nfm_pretrain_recipe_summary", REPO / "recipes" / "pretrain.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_bound_rule():
    assert S.summary_budget(None) == S.summary_budget(0) == 60.0
    assert S.summary_budget(51) == 60.0 and S.summary_budget(600) == 60.0
    assert S.summary_budget(601) == pytest.approx(60.1) and S.summary_budget(3000) == pytest.approx(300.0)
    assert (S.SUMMARY_FRACTION, S.SUMMARY_MIN_S) == (0.10, 60.0)


def test_short_training_run_summary_respects_the_default_bound_and_names_the_full_evaluation(dataset, tmp_path,
                                                                                               capsys, monkeypatch):
    timed = []
    inner = S.end_of_training_summary

    def measured(*args, **kwargs):  # the recipe's call, timed from outside
        t0 = time.perf_counter()
        out = inner(*args, **kwargs)
        timed.append((time.perf_counter() - t0, kwargs))
        return out

    monkeypatch.setattr(S, "end_of_training_summary", measured)
    out = tmp_path / "run"
    assert _recipe().main(tiny_args(dataset, out, max_steps=4, disable_tqdm="true")) == 0
    printed = capsys.readouterr().out
    (took, kwargs), = timed
    summary = json.loads((out / "eval_summary.json").read_text())
    bound, train_s = summary["bound"], summary["train"]["runtime_s"]
    assert kwargs["budget_s"] is None and kwargs["train_seconds"] == pytest.approx(train_s)
    assert bound["budget_s"] == pytest.approx(max(0.1 * train_s, 60.0), abs=0.1)
    assert "10% of" in bound["rule"]
    assert took <= bound["budget_s"], f"summary took {took:.1f} s, bound {bound['budget_s']} s"
    assert bound["elapsed_s"] <= took + 0.01
    # the tiny world fits: every task on both training sessions, nothing cut
    assert bound["cut"] == [] and bound["skipped"] == [] and len(summary["sessions"]) == 2
    assert set(summary["tasks"]) == set(S.SUMMARY_TASKS)
    # progress per task and the one full-evaluation command, printed and recorded
    for name in S.SUMMARY_TASKS:
        assert f"] {name}: " in printed
    cmd = bound["full_evaluation"]
    assert f"recipes/evaluate.py --model {out} --dataset {dataset} --split validation --tasks " in cmd
    assert "--sessions known" in cmd and f"full evaluation: {cmd}" in printed
    assert "summary:" in printed and "nothing cut" in printed


def _trained(dataset, tmp_path):
    from nfm.training import build_model, init_sessions_from_data, parse_args, select_sessions, subset_split
    from nfm.data.hf import load_dataset

    argv = tiny_args(dataset, tmp_path / "m", max_steps=1)
    data_args, model_args, _, _ = parse_args(argv, default_config="synthetic")
    dd, meta = load_dataset(dataset)
    ids = select_sessions(meta, data_args)
    sub = meta.subset(ids)
    model = build_model(sub, model_args)
    init_sessions_from_data(model, subset_split(dd["train"], ids), sub)
    return model.eval(), dd, meta, ids


def test_summary_numbers_are_the_runners_for_what_it_ran(dataset, tmp_path):
    from nfm.evaluation.runner import evaluate

    model, dd, meta, ids = _trained(dataset, tmp_path)
    out = S.end_of_training_summary(model, dd, meta, ids, budget_s=60, log=None)
    b = out["bound"]
    ref = evaluate(model, (dd, meta), tasks=list(S.SUMMARY_TASKS), split="validation", sessions=b["sessions_evaluated"],
                   batch_size=16, max_trials=b["max_trials"])
    assert set(out["tasks"]) == set(ref)
    for task in ref:
        for k, v in S.compact(ref)[task].items():
            got = S.compact(out["tasks"])[task][k]
            assert (got == v) or (isinstance(v, float) and np.isclose(got, v, rtol=1e-9, equal_nan=True)), (task, k)
    assert set(out["generation"]) == {"id_loss", "dt_loss"} and b["generation_trials"][0] == b["generation_trials"][1]
    # budget_s=0: no bound, the same numbers on the whole split
    full = S.end_of_training_summary(model, dd, meta, ids, budget_s=0, log=None)
    assert full["bound"]["budget_s"] is None and full["bound"]["cut"] == []
    assert json.dumps(full["tasks"], sort_keys=True, default=float) == json.dumps(out["tasks"], sort_keys=True,
                                                                                   default=float)


def test_a_bound_that_cuts_work_says_so_and_is_respected(tmp_path, monkeypatch):
    """Six sessions whose tasks are made slow (0.25 s per session and task, which the cost estimate cannot know):
    a 4 s bound must cut sessions or tasks, say so, name the full evaluation and still end within the bound."""
    import dataclasses

    from nfm.evaluation.kinds import TASK_KINDS

    ds = make_tiny_dataset(tmp_path / "six", n_animals=7, n_trials=20, seed=2)
    model, dd, meta, ids = _trained(ds, tmp_path)
    assert len(ids) == 6 and not any(HELDOUT_SUBJECT == meta.sessions[s].subject_id for s in ids)
    slow = TASK_KINDS["masking"].runner()

    def masking(ctx, task):
        time.sleep(0.25 * len(ctx.sessions))
        return slow(ctx, task)

    monkeypatch.setitem(TASK_KINDS, "masking", dataclasses.replace(TASK_KINDS["masking"], run=masking))
    lines = []
    t0 = time.perf_counter()
    out = S.end_of_training_summary(model, dd, meta, ids, budget_s=4.0, log=lines.append,
                                    full_command="recipes/evaluate.py --model X --tasks all")
    took = time.perf_counter() - t0
    b = out["bound"]
    assert took <= 4.0 + 0.3, f"took {took:.2f} s for a 4 s bound"  # (a task in flight is not interrupted)
    assert b["cut"], "the bound cut nothing"
    assert len(b["sessions_evaluated"]) < 6 or b["skipped"]
    assert set(out["tasks"]) == set(S.SUMMARY_TASKS) - set(b["skipped"])
    assert out["sessions"] == b["sessions_evaluated"] and all(
        r.get("n_sessions", len(out["sessions"])) == len(out["sessions"]) for r in out["tasks"].values()
        if isinstance(r, dict) and "n_sessions" in r)
    text = "\n".join(lines)
    assert all(c in text for c in b["cut"])  # every cut is printed
    assert "full evaluation: recipes/evaluate.py --model X --tasks all" in text
    assert b["full_evaluation"] == "recipes/evaluate.py --model X --tasks all"
