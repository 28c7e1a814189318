"""prepare_data.py defaults a user expects: --source synthetic builds the demo's world (5 animals x 2 sessions,
synth-mouse-04 held out) and prints the held-out ids; pretraining leaves held-out animals out; --source ibl
--one_cache_dir DIR without eids takes every session of that cache."""
import subprocess

import numpy as np
import pytest

from nfm.data.hf import load_dataset
from nfm.data.prepare import heldout_sessions, prepare
from nfm.training.arguments import DataArguments, load_yaml_config
from nfm.training.data import build_synthetic_dataset, select_sessions
from test_source_ibl import tree  # noqa: F401 (the ALF tree fixture: two sessions in a local ONE cache)
from training_fixtures import RECIPES, python, subprocess_env


def _prepare(args, cwd):
    return subprocess.run([python(), str(RECIPES / "prepare_data.py"), *map(str, args)], cwd=cwd,
                          env=subprocess_env(), capture_output=True, text=True, timeout=300)


def test_synthetic_default_is_the_demo_world_with_its_heldout_animal(tmp_path):
    res = _prepare(["--source", "synthetic", "--trials", "12", "--output_dir", tmp_path / "cli"], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "sessions 10  subjects 5" in res.stdout
    assert "held out synth-mouse-04: synth-04-00 synth-04-01" in res.stdout
    dd, meta = load_dataset(tmp_path / "cli")
    assert heldout_sessions(meta) == ["synth-04-00", "synth-04-01"]
    # what `make demo` builds (recipes/configs/synthetic.yaml), with the same number of trials
    cfg = load_yaml_config("synthetic")
    demo_args = DataArguments(**{k: v for k, v in cfg.items() if k.startswith("synthetic_")})
    demo_args.synthetic_trials = 12
    build_synthetic_dataset(tmp_path / "demo", demo_args)
    dd2, meta2 = load_dataset(tmp_path / "demo")
    assert meta2.sessions.keys() == meta.sessions.keys()
    assert all(meta2.sessions[s].units == meta.sessions[s].units for s in meta.sessions)
    for split in dd:
        assert dd[split]["spike_times"] == dd2[split]["spike_times"]
    assert heldout_sessions(meta2) == heldout_sessions(meta)
    # pretraining leaves the held-out animal out (and only it)
    assert select_sessions(meta, DataArguments()) == [s for s in meta.session_ids if not s.startswith("synth-04")]
    # an explicit list is trained as given, never cut (the 8-animal base of the animals claim trained on 7)
    every = meta.session_ids
    assert select_sessions(meta, DataArguments(sessions=every)) == every
    assert select_sessions(meta, DataArguments(sessions=["synth-04-00", "synth-00-00"])) == ["synth-00-00", "synth-04-00"]
    with pytest.raises(ValueError, match="'synth-04-00' is named by --sessions and excluded"):
        select_sessions(meta, DataArguments(sessions=["synth-04-00"], exclude_subjects=["synth-mouse-04"]))


def test_heldout_subjects_option_and_pretraining_follow_the_dataset(tmp_path):
    summary = prepare("synthetic", tmp_path / "d", world="ibl_like", progress=False,
                      source_options=dict(n_animals=3, sessions_per_animal=1, n_trials=8),
                      heldout_subjects=["synth-mouse-01"])
    assert summary["heldout"] == {"synth-mouse-01": ["synth-01-00"]}
    _, meta = load_dataset(tmp_path / "d")
    # the dataset's mark replaces the config's synthetic_heldout_subjects
    args = DataArguments(synthetic_heldout_subjects=["synth-mouse-02"])
    assert select_sessions(meta, args) == ["synth-00-00", "synth-02-00"]
    assert select_sessions(meta, DataArguments(sessions=["synth-01-00"])) == ["synth-01-00"]  # explicit wins
    with pytest.raises(ValueError, match="synth-mouse-09.*subjects"):
        prepare("synthetic", tmp_path / "e", world="ibl_like", progress=False,
                source_options=dict(n_animals=2, sessions_per_animal=1, n_trials=8), heldout_subjects=["synth-mouse-09"])


def test_no_heldout_says_so(tmp_path):
    res = _prepare(["--source", "synthetic", "--animals", "2", "--sessions_per_animal", "1", "--trials", "8",
                    "--heldout_subjects", "none", "--output_dir", tmp_path / "d"], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "held out none" in res.stdout


def test_ibl_cache_without_eids_takes_every_session(tree, tmp_path):  # noqa: F811
    res = _prepare(["--source", "ibl", "--one_cache_dir", tree["root"], "--output_dir", tmp_path / "ibl"], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "every session of the ONE cache" in res.stdout and "2 session(s)" in res.stdout
    _, meta = load_dataset(tmp_path / "ibl")
    assert sorted(meta.session_ids) == sorted([tree["eid_a"], tree["eid_b"]])
    assert np.all([meta.sessions[s].n_units > 0 for s in meta.session_ids])
