"""Issue 21, "the first hour, again": nothing overwritten, a model that remembers its data, modality-aware
defaults, "did you mean" for sessions everywhere, command-line settings that win (or are refused), next steps.

Each test fails on the code before the issue: a second run trained over the first without a word, the final
card and summary were written after the weights (an interrupted summary left the old card beside new weights),
``evaluate.py --model M`` needed ``--dataset`` for a model trained on a folder given by path, a 2-photon dataset
with the default config stopped with a traceback (exit 1), ``--preset mtm`` trained the config's small model."""
import json
import os
import shutil
import signal
from pathlib import Path

import pytest

from training_fixtures import (HELDOUT_SUBJECT, RECIPES, TINY_MODEL, assert_user_error, make_tiny_dataset, run_recipe,
                               tiny_args)


def run(args, cwd=None, env=None, timeout=300):
    return run_recipe(args, cwd=cwd, env=env, timeout=timeout)


#: appended to runs that must be refused: the code before the issue trained them (kept short)
SHORT = ["--max_steps", "1", "--skip_eval", "--report_to", "none", "--dataloader_pin_memory", "false"]


def is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("first_hour_data") / "data")


@pytest.fixture(scope="module")
def base(data, tmp_path_factory):
    """An untrained tiny model of the two pretraining animals (no recipe run): for the fast checks."""
    from nfm.data.meta import DatasetMeta
    from nfm.models import NfmConfig, NfmForPretraining

    meta = DatasetMeta.load(data)
    keep = [s for s in meta.session_ids if meta.sessions[s].subject_id != HELDOUT_SUBJECT]
    out = tmp_path_factory.mktemp("first_hour_base") / "base"
    NfmForPretraining(NfmConfig.from_dataset_meta(meta.subset(keep), **TINY_MODEL)).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``recipes/pretrain.py`` on a dataset folder given by path (2 steps, a short summary): data/ and run/ side
    by side in one folder."""
    root = tmp_path_factory.mktemp("first_hour")
    data = make_tiny_dataset(root / "data")
    out = root / "run"
    res = run([RECIPES / "pretrain.py", *tiny_args(data, out, max_steps=2, eval_max_trials=2,
                                                   eval_tasks="co_smoothing")], cwd=root)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return {"root": root, "data": data, "out": out, "stdout": res.stdout}


def _copy_run(trained, dst: Path) -> dict:
    """data/ and run/ copied together (the model's record names its dataset relative to itself too)."""
    shutil.copytree(trained["data"], dst / "data")
    shutil.copytree(trained["out"], dst / "run")
    return {"data": dst / "data", "out": dst / "run"}


# --------------------------------------------------------------------------- 1. no silent overwrite
def test_training_recipes_refuse_an_output_dir_that_holds_a_model(tmp_path, data, base):
    model_dir = tmp_path / "done"
    model_dir.mkdir()
    (model_dir / "model.safetensors").write_bytes(b"")
    ckpt_dir = tmp_path / "ckpt"
    (ckpt_dir / "checkpoint-7").mkdir(parents=True)
    adapter_dir = tmp_path / "adapter"
    adapter_dir.mkdir()
    (adapter_dir / "adapter_model.safetensors").write_bytes(b"")
    line = assert_user_error(run([RECIPES / "pretrain.py", "--dataset", data, "--output_dir", model_dir, *SHORT]),
                             "--output_dir", str(model_dir), "model.safetensors", "--overwrite_output_dir",
                             "--resume_from_checkpoint")
    assert "already holds a trained model" in line
    assert_user_error(run([RECIPES / "pretrain.py", "--dataset", data, "--output_dir", ckpt_dir, *SHORT]),
                      "--output_dir", "checkpoint-7", "--overwrite_output_dir")
    assert_user_error(run([RECIPES / "finetune_lora.py", "--model", base, "--dataset", data, "--output_dir",
                           adapter_dir, *SHORT]), "--output_dir", "adapter_model.safetensors", "--overwrite_output_dir")
    assert_user_error(run([RECIPES / "pretrain.py", "--dataset", data, "--output_dir", ckpt_dir,
                           "--overwrite_output_dir", "--resume_from_checkpoint", "last", *SHORT]),
                      "--overwrite_output_dir", "--resume_from_checkpoint", "not both")
    assert sorted(p.name for p in model_dir.iterdir()) == ["model.safetensors"]  # nothing was written


def test_final_outputs_are_committed_together(tmp_path, monkeypatch):
    """Killed at any point of the commit, the folder never holds a card or summary of other weights."""
    from nfm.training import trainer as T

    def make(version: str, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("model.safetensors", "config.json", "README.md", "eval_summary.json", "losses.csv"):
            (folder / name).write_text(version)

    real = os.replace
    for fail_at in range(12):
        out = tmp_path / f"out{fail_at}"
        make("old", out)
        staging = T.final_staging_dir(out)
        make("new", staging)
        calls = {"n": 0}

        def flaky(src, dst, _fail=fail_at, _calls=calls):
            _calls["n"] += 1
            if _calls["n"] > _fail:
                raise KeyboardInterrupt("killed")
            return real(src, dst)

        monkeypatch.setattr(T.os, "replace", flaky)
        try:
            T.commit_final_outputs(staging, out)
            done = True
        except KeyboardInterrupt:
            done = False
        finally:
            monkeypatch.setattr(T.os, "replace", real)
        weights = (out / "model.safetensors").read_text()
        for name in ("README.md", "eval_summary.json"):
            if (out / name).exists():
                assert (out / name).read_text() == weights, (fail_at, name)  # describes the weights beside it
        if done:
            assert all((out / n).read_text() == "new" for n in ("model.safetensors", "README.md", "config.json"))
            assert not staging.exists()


@pytest.mark.slow
def test_overwrite_output_dir_replaces_the_previous_run(trained, tmp_path):
    run_dir = _copy_run(trained, tmp_path)["out"]
    old = (run_dir / "model.safetensors").read_bytes()
    assert list(run_dir.glob("checkpoint-*"))
    res = run([RECIPES / "pretrain.py", *tiny_args(trained["data"], run_dir, max_steps=1, skip_eval="true",
                                                   save_steps=1000, seed=3), "--overwrite_output_dir"])
    assert res.returncode == 0, res.stderr[-3000:]
    assert "--overwrite_output_dir: removed the previous run's" in res.stdout and "checkpoint-2" in res.stdout
    assert (run_dir / "model.safetensors").read_bytes() != old
    assert [p.name for p in run_dir.glob("checkpoint-*")] == ["checkpoint-1"]  # the old run's are gone
    assert [r["step"] for r in json.loads((run_dir / "losses.json").read_text()) if "loss" in r] == [1]
    assert not (run_dir / ".partial-final").exists()


@pytest.mark.slow
def test_a_run_killed_during_its_summary_leaves_the_previous_model_and_card(trained, tmp_path):
    run_dir = _copy_run(trained, tmp_path)["out"]
    before = {n: (run_dir / n).read_bytes() for n in ("model.safetensors", "README.md", "eval_summary.json")}
    wrapper = tmp_path / "kill_in_summary.py"
    wrapper.write_text(f"""
import os, signal, sys
sys.path.insert(0, {str(RECIPES)!r})
import nfm.evaluation.summary as S
def _die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
S.end_of_training_summary = _die
import pretrain
sys.exit(pretrain.main(sys.argv[1:]))
""")
    # 2 more steps at a constant rate (the cosine schedule of the 2-step run ends at 0: no change)
    args = tiny_args(trained["data"], run_dir, max_steps=4, eval_max_trials=2, eval_tasks="co_smoothing",
                     lr_scheduler_type="constant")
    res = run([wrapper, *args, "--resume_from_checkpoint", "last"])
    assert res.returncode == -signal.SIGKILL, res.stdout[-2000:] + res.stderr[-3000:]
    for name, content in before.items():  # the new weights were not put beside the old card
        assert (run_dir / name).read_bytes() == content, name
    staged = run_dir / ".partial-final" / "model.safetensors"  # they waited in the staging folder
    assert staged.is_file() and staged.read_bytes() != before["model.safetensors"]
    res = run([RECIPES / "pretrain.py", *args, "--resume_from_checkpoint", "last"])
    assert res.returncode == 0, res.stderr[-3000:]
    assert (run_dir / "model.safetensors").read_bytes() != before["model.safetensors"]
    assert json.loads((run_dir / "eval_summary.json").read_text())["train"]["steps"] >= 4  # the card is new too
    assert (run_dir / "README.md").read_bytes() != before["README.md"]
    assert not (run_dir / ".partial-final").exists()


# --------------------------------------------------------------------------- 2. the model records its data
@pytest.mark.slow
def test_the_model_records_its_training_data_and_the_recipes_use_it(trained, tmp_path):
    rec = json.loads((trained["out"] / "nfm_training_data.json").read_text())
    (entry,) = rec["datasets"]
    assert entry["path"] == str(trained["data"]) and entry["relative_to_model"] == "../data"
    assert entry["sessions"] == ["synth-00-00", "synth-01-00"] and entry["heldout_sessions"] == ["synth-02-00"]
    assert entry["split"] == "train" and len(entry["fingerprint"]) == 64 and entry["n_train_trials"] == 28
    from nfm.training.record import dataset_fingerprint

    assert dataset_fingerprint(trained["data"]) == entry["fingerprint"]

    # data and model moved together: found beside the model; evaluate and generate need no --dataset
    moved = _copy_run(trained, tmp_path / "moved")
    res = run([RECIPES / "evaluate.py", "--model", moved["out"], "--tasks", "co_smoothing", "--max_trials", "2",
               "--no_estimate", "--task_option", "co_smoothing.smoothing.method=ridge"])
    assert res.returncode == 0, res.stderr[-3000:]
    assert "--dataset not given" in res.stdout and "the model was trained on" in res.stdout
    results = json.loads((moved["out"] / "evaluation" / "results.json").read_text())
    assert set(results["co_smoothing"]["per_session"]) == {"synth-00-00", "synth-01-00"}  # the sessions it knows
    res = run([RECIPES / "generate.py", "--model", moved["out"], "--max_trials", "1", "--batch_size", "1"])
    assert res.returncode == 0, res.stderr[-3000:]
    for sid in ("synth-00-00", "synth-01-00"):  # each session's line once (it was printed twice)
        assert sum(sid in ln for ln in res.stdout.splitlines()) == 1, res.stdout

    # from here on the moved copy is the only one the record names (as if it had been trained there)
    record = json.loads((moved["out"] / "nfm_training_data.json").read_text())
    record["datasets"][0].update(path=str(moved["data"]), absolute_path=str(moved["data"]))
    (moved["out"] / "nfm_training_data.json").write_text(json.dumps(record))
    # the dataset re-prepared with other content: refused by every recipe that would default to it
    shutil.rmtree(moved["data"])
    make_tiny_dataset(moved["data"], seed=9)
    for recipe, extra in (("evaluate.py", []), ("generate.py", []),
                          ("finetune_lora.py", ["--output_dir", tmp_path / "ft"])):
        line = assert_user_error(run([RECIPES / recipe, "--model", moved["out"], *extra]), "--dataset", "has changed")
        assert "fingerprint" in line and "pass --dataset" in line
    # the dataset gone: one line naming where it was
    shutil.rmtree(moved["data"])
    assert_user_error(run([RECIPES / "evaluate.py", "--model", moved["out"]]), "--dataset", "is not at")


@pytest.mark.slow
def test_finetune_defaults_to_the_base_dataset_and_prints_the_next_step(trained, tmp_path):
    out = tmp_path / "lora"
    res = run([RECIPES / "finetune_lora.py", "--model", trained["out"], "--output_dir", out, "--max_steps", "2",
               "--report_to", "none", "--skip_eval", "--logging_steps", "1", "--dataloader_pin_memory", "false"])
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"--dataset not given: {trained['data']}" in res.stdout
    assert f"evaluate.py --model {trained['out']} --adapter {out}" in res.stdout
    entry = json.loads((out / "nfm_training_data.json").read_text())["datasets"][0]
    assert entry["sessions"] == ["synth-02-00"] and entry["path"] == str(trained["data"])
    assert is_png(out / "losses.png") and (out / "losses.csv").is_file()
    card = (out / "README.md").read_text()
    assert str(trained["root"]) not in card  # no absolute local path in the card


@pytest.mark.slow
def test_pretrain_ends_with_the_next_commands_and_a_loss_curve(trained):
    out = trained["out"]
    assert f"evaluate.py --model {out} --quick" in trained["stdout"]
    assert f"finetune_lora.py --model {out} --output_dir {out}-lora" in trained["stdout"]  # held-out animal
    assert f"generate.py --model {out}" in trained["stdout"]
    assert is_png(out / "losses.png")
    assert str(trained["root"]) not in (out / "README.md").read_text()


# --------------------------------------------------------------------------- 3. modality-aware defaults
@pytest.mark.slow
def test_a_calcium_dataset_with_the_default_config_trains_mtm(tmp_path):
    from nfm.data.prepare import prepare

    calcium = tmp_path / "calcium"
    prepare("synthetic", calcium, world="calcium", source_options={"n_animals": 2, "n_trials": 20}, progress=False)
    out = tmp_path / "run"
    res = run([RECIPES / "pretrain.py", "--dataset", calcium, "--output_dir", out, "--model_overrides",
               json.dumps(TINY_MODEL), "--max_steps", "1", "--skip_eval", "--report_to", "none",
               "--dataloader_pin_memory", "false"])
    assert res.returncode == 0, res.stderr[-3000:]
    assert "calcium (2-photon) data, so the config's objectives ['mtm', 'generation'] become ['mtm']" in res.stdout
    assert json.loads((out / "config.json").read_text())["objectives"] == ["mtm"]
    assert "generate.py" not in res.stdout  # no generation hint for an MtM-only model
    line = assert_user_error(run([RECIPES / "pretrain.py", "--dataset", calcium, "--output_dir", tmp_path / "r2",
                                  "--objectives", "mtm", "generation", *SHORT]),
                             "--objectives", "--objectives mtm", "2-photon")
    assert "spike events" in line


def test_prepare_data_says_how_it_aligned_and_when_it_cut_windows(tmp_path):
    from test_source_nwb import write_spikes_file

    from nfm.data.prepare import format_summary, prepare

    nwb = tmp_path / "s.nwb"
    write_spikes_file(nwb)
    res = run([RECIPES / "prepare_data.py", "--source", "nwb", "--input", nwb, "--output_dir", tmp_path / "nwb"])
    assert res.returncode == 0, res.stderr[-3000:]
    assert "aligned  on start_time (the nwb default; --align_event NAME to change), window [0, 2] s" in res.stdout
    assert "other time columns of the trials table: stimOn_times, stop_time" in res.stdout
    assert "back-to-back" not in res.stdout
    summary = prepare("synthetic", tmp_path / "drift", world="drift", progress=False,
                      source_options={"n_animals": 2, "duration": 20.0, "units": (5, 8)})
    text = format_summary(summary, tmp_path / "drift")
    assert "2 of 2 recording(s) have no trials table: cut into back-to-back 2 s windows (split contiguous" in text


# --------------------------------------------------------------------------- 4. "did you mean" for sessions
def test_pretrain_and_finetune_say_did_you_mean_for_a_session(tmp_path, data, base):
    assert_user_error(run([RECIPES / "pretrain.py", "--dataset", data, "--sessions", "synth-0-00", "--output_dir",
                           tmp_path / "p", *SHORT]),
                      "--sessions", "'synth-0-00'", "did you mean 'synth-00-00'?")
    assert_user_error(run([RECIPES / "finetune_lora.py", "--model", base, "--dataset", data, "--sessions",
                           "synth-2-00", "--output_dir", tmp_path / "f", *SHORT]),
                      "--sessions", "'synth-2-00'", "did you mean 'synth-02-00'?")


# --------------------------------------------------------------------------- 5. settings given and not used
def test_preset_on_the_command_line_wins_over_the_config(data):
    from nfm.data.meta import DatasetMeta
    from nfm.models import NfmConfig
    from nfm.training.arguments import given_arguments, parse_args, reconcile_model_arguments

    meta = DatasetMeta.load(data)
    argv = ["--preset", "mtm", "--output_dir", "unused"]
    _, model_args, _, _ = parse_args(argv, default_config="synthetic")
    notes = reconcile_model_arguments(model_args, given_arguments(argv), "synthetic")
    cfg = NfmConfig.from_dataset_meta(meta, preset=model_args.preset, **model_args.config_overrides())
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size) == (512, 5, 1024)
    assert cfg.decoder_layers == 1 and cfg.gen_windows_per_step == 1  # what the preset does not set stays
    assert len(notes) == 1 and "hidden_size=128" in notes[0] and "--preset mtm" in notes[0]
    # --model_overrides on the command line sets fields on top of the preset; no note
    argv = ["--preset", "mtm", "--model_overrides", '{"hidden_size": 64}']
    _, model_args, _, _ = parse_args(argv, default_config="synthetic")
    assert reconcile_model_arguments(model_args, given_arguments(argv)) == []
    assert model_args.model_overrides == {"hidden_size": 64}
    # objectives named by --model_overrides on the command line win over the config's objectives:
    argv = ["--model_overrides", '{"objectives": ["mtm"]}']
    _, model_args, _, _ = parse_args(argv, default_config="synthetic")
    reconcile_model_arguments(model_args, given_arguments(argv))
    assert model_args.config_overrides()["objectives"] == ["mtm"]


def test_mask_modes_on_the_command_line_replace_the_configs_mask_mix(data):
    """The default config weighs MtM's four modes (mask_mode_weights); --mask_modes temporal on the command line
    trains temporal masks (uniformly over the given modes, noted) instead of failing on the config's weights."""
    from nfm.data.meta import DatasetMeta
    from nfm.models import NfmConfig
    from nfm.training.arguments import given_arguments, parse_args, reconcile_model_arguments

    meta = DatasetMeta.load(data)
    _, model_args, _, _ = parse_args([], default_config="synthetic")
    assert model_args.model_overrides.get("mask_mode_weights")  # the default's mix (this test's premise)
    argv = ["--mask_modes", "temporal"]
    _, model_args, _, _ = parse_args(argv, default_config="synthetic")
    notes = reconcile_model_arguments(model_args, given_arguments(argv), "synthetic")
    cfg = NfmConfig.from_dataset_meta(meta, preset=model_args.preset, **model_args.config_overrides()).check()
    assert cfg.active_mask_modes == ["temporal"] and cfg.mask_mode_weights is None
    assert cfg.mtm_weight == 5.0 and cfg.hidden_size == 128  # the rest of the config's overrides stay
    assert len(notes) == 1 and "--mask_modes temporal" in notes[0] and "mask_mode_weights" in notes[0]


def test_settings_that_would_not_be_used_are_refused(tmp_path, data, base):
    assert_user_error(run([RECIPES / "pretrain.py", "--init_from", base, "--preset", "mtm", "--dataset", data,
                           "--output_dir", tmp_path / "a", *SHORT]), "--preset", "--init_from", "not used")
    assert_user_error(run([RECIPES / "pretrain.py", "--dataset", data, "--synthetic_trials", "50",
                           "--output_dir", tmp_path / "b", *SHORT]), "--synthetic_trials", "--dataset")
    assert_user_error(run([RECIPES / "finetune_lora.py", "--model", base, "--dataset", data, "--mode", "full",
                           "--lora_r", "4", "--output_dir", tmp_path / "c", *SHORT]), "--lora_r", "--mode full",
                      "not used")


@pytest.mark.slow
def test_pretrain_preset_mtm_trains_the_mtm_size(tmp_path, data):
    out = tmp_path / "mtm"
    res = run([RECIPES / "pretrain.py", "--dataset", data, "--output_dir", out, "--preset", "mtm",
               "--exclude_subjects", HELDOUT_SUBJECT, "--max_steps", "1", "--skip_eval", "--report_to", "none",
               "--per_device_train_batch_size", "2", "--dataloader_pin_memory", "false"])
    assert res.returncode == 0, res.stderr[-3000:]
    assert "--preset mtm (command line) replaces the config's model_overrides hidden_size=128" in res.stdout
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["hidden_dropout"]) == (512, 5, 0.4)
