"""Task kinds are one unit each (nfm.evaluation.kinds): a kind declared in one module (here: this test) validates,
is costed, gets its --quick overrides and runs through ``evaluate`` without any change to tasks.py, costs.py or
runner.py; an unknown ``kind:`` names the file, the field, the value and the known kinds."""
import json
import subprocess

import numpy as np
import pytest
import yaml

from nfm.evaluation.costs import count_work
from nfm.evaluation.kinds import TASK_KINDS, get_kind, register_kind
from nfm.evaluation.kinds.base import NotApplicable, Task, TaskError, TaskKind, number
from nfm.evaluation.runner import EvalContext, evaluate
from nfm.evaluation.tasks import load_task_file, load_tasks
from test_runner import RateOracle, oracle_world
from training_fixtures import python, subprocess_env


# --------------------------------------------------------------------------- a toy kind, in one place
def _validate(spec: dict, src: str) -> tuple[str, ...]:
    number(spec, "scale", 1.0, src, "")
    number(spec, "max_trials", 0, src, "", integer=True, positive=False, minimum=0)
    return ("any",)


def _cost(work, task: Task) -> None:
    ctx = work.ctx
    for sid in ctx.sessions:
        work.collate(sid, [ctx.split])
        work.cost.trial_passes += work.trials(sid, [ctx.split])


def _quick(task: Task) -> dict:
    return {"max_trials": 2}


def _run(ctx, task: Task) -> dict:
    """The mean count per bin of each session (times ``scale``), and how many trials it read."""
    per_session = {}
    for sid in ctx.sessions:
        sd = ctx.session(sid)
        counts = sd.counts[: task.spec["max_trials"] or None]
        if counts.size == 0:
            raise NotApplicable("no trials")
        per_session[sid] = {"mean_count": float(counts.mean()) * task.spec["scale"], "trials": int(counts.shape[0])}
    return {"mean_count": float(np.mean([v["mean_count"] for v in per_session.values()])),
            "per_session": per_session}


TOY = TaskKind(name="toy_mean_count", metrics={"any": ("mean_count",)}, baselines=(), validate=_validate,
               run=_run, cost=_cost, quick=_quick)


@pytest.fixture
def toy_kind():
    register_kind(TOY)
    yield TOY
    TASK_KINDS.pop(TOY.name, None)


def test_a_kind_registered_from_one_module_validates_costs_and_runs(toy_kind, tmp_path):
    dd, meta, counts, expected = oracle_world(n_trials=20)
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "toy.yaml").write_text(yaml.safe_dump({"kind": "toy_mean_count", "scale": 2.0,
                                                                  "description": "mean count x 2"}))
    task = load_tasks("toy", tmp_path / "tasks")[0]
    assert (task.kind, task.primary, task.spec["max_trials"]) == ("toy_mean_count", "mean_count", 0)
    assert load_tasks("toy", tmp_path / "tasks", quick=True)[0].spec["max_trials"] == 2  # the kind's --quick

    oracle = RateOracle(expected, meta)
    out = tmp_path / "eval" / "results.json"
    res = evaluate(oracle, (dd, meta), tasks="toy", task_dir=tmp_path / "tasks", output=out)
    test_rows = np.asarray(dd["test"]["trial_id"])
    assert res["toy"]["mean_count"] == pytest.approx(2.0 * counts[test_rows].mean())
    assert res["toy"]["per_session"]["oracle-0"]["trials"] == len(test_rows)
    assert json.loads(out.read_text())["toy"]["mean_count"] == pytest.approx(res["toy"]["mean_count"])
    assert "toy" in out.with_suffix(".md").read_text()

    ctx = EvalContext(dd, meta, oracle, "test", ["oracle-0"])
    cost = count_work(ctx, task)
    assert cost.trial_passes == len(test_rows) and cost.collate == len(test_rows)

    # the kind's own field errors name the file, the field and the value
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"kind": "toy_mean_count", "scale": -1}))
    with pytest.raises(TaskError) as err:
        load_task_file(bad)
    assert err.value.field == "scale" and str(bad) in str(err.value) and "-1" in str(err.value)


def test_register_kind_refuses_a_second_kind_of_the_same_name(toy_kind):
    assert get_kind("toy_mean_count") is TOY
    with pytest.raises(ValueError, match="already registered"):
        register_kind(TaskKind(name="masking", metrics={}, baselines=(), validate=_validate, run=_run))
    with pytest.raises(KeyError, match="known kinds"):
        get_kind("dance")


def test_unknown_kind_names_file_field_value_and_known_kinds(tmp_path):
    p = tmp_path / "my_task.yaml"
    p.write_text("kind: co_smooth\nmask: {mode: neuron}\n")
    with pytest.raises(TaskError) as err:
        load_task_file(p)
    msg = str(err.value)
    assert err.value.field == "kind" and err.value.source == str(p)
    assert msg.startswith(f"{p}: field 'kind': 'co_smooth'")
    for kind in ("masking", "psth", "decoding", "finetune_decoding", "generation", "connectivity"):
        assert repr(kind) in msg
    assert list(TASK_KINDS) == ["masking", "psth", "decoding", "finetune_decoding", "generation", "connectivity"]


def test_shipped_kinds_name_their_runners_and_validate_without_torch():
    """Every shipped kind's runner resolves; reading and validating every shipped task file (with --quick)
    imports neither torch nor scipy (the runners do, when a task runs)."""
    for kind in TASK_KINDS.values():
        assert callable(kind.runner()), kind.name
    code = ("import sys\nfrom nfm.evaluation.tasks import load_tasks\nload_tasks('all', quick=True)\n"
            "print(sorted(m for m in ('torch', 'scipy', 'transformers') if m in sys.modules))")
    res = subprocess.run([python(), "-c", code], env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "[]", res.stdout + res.stderr
