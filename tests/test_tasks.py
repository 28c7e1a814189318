"""Task YAML files: the shipped tasks load; bad files raise errors naming file, field and value."""
from pathlib import Path

import pytest
import yaml

from nfm.evaluation.tasks import (
    DEFAULT_TASK_DIR,
    TaskError,
    available_tasks,
    load_task_file,
    load_tasks,
    validate_task,
)

SHIPPED = {
    "co_smoothing": "masking", "forward_prediction": "masking", "intra_region": "masking",
    "inter_region": "masking", "psth_r2": "psth", "choice": "decoding", "block": "decoding",
    "wheel_speed": "decoding", "whisker_motion_energy": "decoding", "running_speed": "decoding",
    "hand_velocity": "decoding", "stimulus_direction": "decoding", "behavior_finetuned": "finetune_decoding",
    "generation_fidelity": "generation", "generation_simulation": "generation", "connectivity": "connectivity",
}


def test_shipped_tasks_load_with_their_kinds():
    tasks = available_tasks()
    assert {n: t.kind for n, t in tasks.items()} == SHIPPED
    assert not (DEFAULT_TASK_DIR / "__init__.py").exists()  # tasks/ must never be a package
    co = tasks["co_smoothing"]
    assert co.spec["mask"] == {"mode": "neuron", "held_out_folds": 4, "seed": 0}
    assert co.metrics["spikes"][:3] == ["bps", "bps_neuron_mean", "bps_session_mean"]
    assert "poisson_d2" in co.metrics["spikes"]  # IBL BrainWideBench's deviance explained, beside NLB's bps
    assert "r2" in co.metrics["calcium"] and "gaussian_nll" in co.metrics["calcium"]
    assert co.baselines == ["null", "smoothing", "ridge", "psth", "baseline_model"]
    fp = tasks["forward_prediction"]
    assert fp.spec["mask"]["forward_s"] == pytest.approx(0.2)
    assert tasks["choice"].spec["decoder"]["Cs"][0] == pytest.approx(1e-4)
    assert tasks["choice"].spec["decoder"]["Cs"][-1] == pytest.approx(1e4)
    assert tasks["stimulus_direction"].modality == "calcium"


def write(tmp_path: Path, name: str, spec) -> Path:
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(spec) if not isinstance(spec, str) else spec)
    return p


@pytest.mark.parametrize("spec, field, needle", [
    ({"kind": "dance"}, "kind", "'dance'"),
    ({"kind": "masking", "mask": {"mode": "sideways"}}, "mask.mode", "'sideways'"),
    ({"kind": "masking", "mask": {"mode": "neuron", "held_out_folds": 1}}, "mask.held_out_folds", ">= 2"),
    ({"kind": "masking", "mask": {"mode": "neuron"}, "metrics": ["bps", "accuracy"]}, "metrics", "'accuracy'"),
    ({"kind": "masking", "mask": {"mode": "forward"}, "baselines": ["smoothing"]}, "baselines", "forward"),
    ({"kind": "decoding"}, "target", "missing"),
    ({"kind": "decoding", "target": {"trial_label": "choice", "behavior": "x"}}, "target", "exactly one"),
    ({"kind": "decoding", "target": {"behavior": "wheel_speed"}, "decoder": {"type": "logistic"}},
     "decoder.type", "'logistic'"),
    ({"kind": "decoding", "target": {"trial_label": "choice"}, "decoder": {"Cs": [0.0, 1.0]}}, "decoder.Cs", "> 0"),
    ({"kind": "decoding", "target": {"trial_label": "choice"}, "decoder_protocol": "cv_eval"},
     "decoder_protocol", "'cv_eval' is not one of ['train_to_eval', 'cv_all_splits']"),
    ({"kind": "decoding", "target": {"trial_label": "choice"}, "decoder_splits": "all"},
     "decoder_splits", "decoder_protocol: cv_all_splits"),
    ({"kind": "decoding", "target": {"behavior": "wheel_speed"}, "decoder_splits": "eval"},
     "decoder_splits", "decoder_protocol: train_to_eval"),
    ({"kind": "psth", "mask": {"mode": "forward"}, "conditions": ["choice"]}, "mask.mode", "forward"),
    ({"kind": "masking", "mask": {"mode": "neuron"}, "primary": "r2_of_nothing"}, "primary", "r2_of_nothing"),
])
def test_bad_task_files_name_file_field_and_value(tmp_path, spec, field, needle):
    p = write(tmp_path, "bad", spec)
    with pytest.raises(TaskError) as err:
        load_task_file(p)
    assert err.value.field == field
    assert str(p) in str(err.value) and needle in str(err.value)


def test_bare_yaml_null_baseline_is_explained(tmp_path):
    p = write(tmp_path, "nullish", "kind: masking\nmask: {mode: neuron}\nbaselines: [null, smoothing]\n")
    with pytest.raises(TaskError, match="quotes"):
        load_task_file(p)


def test_user_task_folder_and_overrides(tmp_path):
    write(tmp_path, "my_cosmooth", {"kind": "masking", "description": "half the units held out",
                                    "mask": {"mode": "neuron", "held_out_folds": 2}, "baselines": ["null"]})
    (tmp_path / "notes.txt").write_text("not a task")
    tasks = load_tasks("all", tmp_path)
    assert [t.name for t in tasks] == ["my_cosmooth"]
    assert tasks[0].primary == "bps"  # first metric by default
    over = load_tasks("my_cosmooth", tmp_path, {"my_cosmooth": {"mask": {"held_out_folds": 3}}})[0]
    assert over.spec["mask"] == {"mode": "neuron", "held_out_folds": 3, "seed": 0}
    with pytest.raises(TaskError, match="held_out_folds"):
        load_tasks("my_cosmooth", tmp_path, {"my_cosmooth": {"mask": {"held_out_folds": 0}}})
    with pytest.raises(KeyError, match="unknown task 'nope'"):
        load_tasks("nope", tmp_path)
    with pytest.raises(KeyError, match="not selected"):
        load_tasks("my_cosmooth", tmp_path, {"other": {}})
    # a file path works as a task name too
    assert load_tasks([str(tmp_path / "my_cosmooth.yaml")])[0].name == "my_cosmooth"


def test_duplicate_task_names_in_a_folder(tmp_path):
    write(tmp_path, "a", {"name": "same", "kind": "masking", "mask": {"mode": "neuron"}})
    write(tmp_path, "b", {"name": "same", "kind": "masking", "mask": {"mode": "neuron"}})
    with pytest.raises(TaskError, match="also defined"):
        available_tasks(tmp_path)


def test_validate_fills_defaults():
    t = validate_task({"kind": "generation"}, default_name="gen")
    assert t.modality == "spikes" and t.spec["prompt_s"] == 0.5 and t.spec["top_p"] == 0.95
    assert t.metrics["spikes"][0] == "pearson_r"
    t = validate_task({"kind": "decoding", "target": {"behavior_prefix": "hand_velocity"}}, default_name="hv")
    assert t.spec["decoder"]["type"] == "ridge" and t.metrics_for("regression") == ["r2"]
    assert t.spec["decoder_protocol"] == "train_to_eval"
    t = validate_task({"kind": "decoding", "target": {"trial_label": "choice"}, "decoder_protocol": "cv_all_splits"},
                      default_name="c")
    assert t.spec["decoder_protocol"] == "cv_all_splits"


def test_every_shipped_decoding_task_scores_unseen_trials():
    """The shipped decoders are fitted on train and scored on the evaluated split (issue 17); none still
    names the removed decoder_splits field."""
    decoding = {n: t for n, t in available_tasks().items() if t.kind == "decoding"}
    assert set(decoding) == {n for n, k in SHIPPED.items() if k == "decoding"}
    for name, t in decoding.items():
        assert t.spec["decoder_protocol"] == "train_to_eval", name
        assert "decoder_splits" not in Path(t.source).read_text(), name
