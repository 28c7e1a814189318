"""Recipe configs (YAML -> dataclasses, command-line overrides) and session selection."""
import json

import numpy as np
import pytest

from nfm.models import NfmConfig
from nfm.training import (
    DataArguments,
    ModelArguments,
    parse_args,
    read_id_file,
    select_sessions,
    subset_split,
)
from training_fixtures import REPO, make_tiny_dataset

CONFIGS = sorted((REPO / "recipes" / "configs").glob("*.yaml"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from nfm.data.hf import load_dataset

    return load_dataset(make_tiny_dataset(tmp_path_factory.mktemp("data") / "tiny"))


def test_no_arguments_gives_the_synthetic_default():
    data, model, run, train = parse_args([], default_config=REPO / "recipes" / "configs" / "synthetic.yaml")
    assert data.dataset is None and data.synthetic_heldout_subjects == ["synth-mouse-04"]
    assert train.output_dir == "outputs/pretrain" and train.report_to == ["tensorboard"]
    assert train.remove_unused_columns is False
    assert model.objectives == ["mtm", "generation"] and model.model_overrides["hidden_size"] == 128


def test_yaml_then_command_line_override(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("max_steps: 11\nlearning_rate: 0.01\nmodel_overrides: {hidden_size: 48}\nmask_modes: [temporal]\n")
    data, model, run, train = parse_args(["--config", str(cfg), "--max_steps", "7",
                                          "--model_overrides", json.dumps({"hidden_size": 16})])
    assert train.max_steps == 7 and train.learning_rate == 0.01
    assert model.model_overrides == {"hidden_size": 16} and model.mask_modes == ["temporal"]
    assert model.config_overrides() == {"hidden_size": 16, "mask_modes": ["temporal"]}
    assert run.config == str(cfg)


def test_unknown_yaml_key_is_an_error(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("max_stepz: 3\n")
    with pytest.raises(ValueError, match=r"bad.yaml.*max_stepz"):
        parse_args(["--config", str(cfg)])
    with pytest.raises(ValueError, match="not a JSON object"):
        ModelArguments(model_overrides="{hidden: 3")


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_config_parses_and_builds_a_model_config(path, tiny):
    _, meta = tiny
    data, model, run, train = parse_args(["--config", str(path)])
    cfg = NfmConfig.from_dataset_meta(meta, preset=model.preset, **model.config_overrides())
    assert cfg.objectives and cfg.active_mask_modes


def test_variant_configs_set_their_objectives():
    want = {"mtm_only": (["mtm"], ["all"]), "temporal_only": (["mtm"], ["temporal"]),
            "neuroformer_only": (["generation"], None), "joint": (["mtm", "generation"], ["all"])}
    for name, (objectives, modes) in want.items():
        _, model, _, _ = parse_args(["--config", str(REPO / "recipes" / "configs" / f"{name}.yaml")])
        assert model.objectives == objectives and model.mask_modes == modes, name


def test_ibl_config_holds_out_mtm_sessions():
    data, model, _, _ = parse_args(["--config", str(REPO / "recipes" / "configs" / "ibl_repeated_site.yaml")])
    assert model.preset == "mtm" and model.objectives == ["mtm"]
    assert data.exclude_sessions_file.endswith("mtm_heldout_5_eids.txt")
    heldout = read_id_file(data.exclude_sessions_file)  # repository-relative path resolves from any cwd
    all40 = read_id_file(REPO / "datasets" / "ibl_repeated_site" / "mtm_40_eids.txt")
    assert len(heldout) == 5 and set(heldout) <= set(all40) and len(set(all40) - set(heldout)) == 35


def test_session_selection(tiny, tmp_path):
    dd, meta = tiny
    assert select_sessions(meta, DataArguments()) == ["synth-00-00", "synth-01-00", "synth-02-00"]
    assert select_sessions(meta, DataArguments(exclude_subjects=["synth-mouse-02"])) == ["synth-00-00", "synth-01-00"]
    ids = tmp_path / "ids.txt"
    ids.write_text("# pretraining\nsynth-01-00\n\nsynth-02-00  # new animal\n")
    assert select_sessions(meta, DataArguments(sessions_file=str(ids))) == ["synth-01-00", "synth-02-00"]
    assert select_sessions(meta, DataArguments(exclude_sessions_file=str(ids))) == ["synth-00-00"]
    with pytest.raises(ValueError, match="'nope' .* not in the dataset"):
        select_sessions(meta, DataArguments(sessions=["nope"]))
    with pytest.raises(ValueError, match="exclude_subjects"):
        select_sessions(meta, DataArguments(exclude_subjects=["mouse-x"]))
    # the synthetic default's held-out animal applies to synthetic datasets only
    args = DataArguments(synthetic_heldout_subjects=["synth-mouse-02"])
    import dataclasses

    assert "synth-02-00" not in select_sessions(dataclasses.replace(meta, source="synthetic:ibl_like"), args)
    assert "synth-02-00" in select_sessions(dataclasses.replace(meta, source="nwb"), args)
    with pytest.raises(ValueError, match="'synth-00-00' is named by --sessions and excluded"):
        select_sessions(meta, DataArguments(sessions=["synth-00-00"], exclude_sessions=["synth-00-00"]))
    with pytest.raises(ValueError, match="no session left"):
        select_sessions(meta, DataArguments(exclude_subjects=sorted(meta.subjects)))
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        select_sessions(meta, DataArguments(sessions_file=str(tmp_path / "missing.txt")))
    sub = meta.subset(["synth-01-00"])
    assert list(sub.sessions) == ["synth-01-00"] and sub.regions == meta.regions


def test_train_fraction_subset(tiny):
    dd, meta = tiny
    full = subset_split(dd["train"], ["synth-00-00", "synth-01-00"])
    assert set(full["session_id"]) == {"synth-00-00", "synth-01-00"} and len(full) == 28
    few = subset_split(dd["train"], ["synth-00-00", "synth-01-00"], fraction=0.1, seed=3)
    sids = np.asarray(list(few["session_id"]))
    assert (sids == "synth-00-00").sum() == 2 and (sids == "synth-01-00").sum() == 2  # ceil(0.1 * 14)
    again = subset_split(dd["train"], ["synth-00-00", "synth-01-00"], fraction=0.1, seed=3)
    assert list(again["trial_id"]) == list(few["trial_id"])
    with pytest.raises(ValueError, match="train_fraction"):
        DataArguments(train_fraction=0.0)
