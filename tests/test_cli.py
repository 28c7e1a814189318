"""The recipes' command line: one-line user errors (exit 2, the field named, no traceback), --debug, list
arguments, model arguments that are paths or Hub ids, and --help / argument errors without torch."""
import json
import subprocess
import sys

import pytest

from training_fixtures import (RECIPES, TINY_MODEL, assert_user_error, free_port, make_tiny_dataset, python, run_recipe,
                               subprocess_env)

from nfm import cli


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny dataset and a tiny pretrained model that knows every session of it."""
    from nfm.data.hf import load_dataset
    from nfm.models import NfmConfig, NfmForPretraining

    root = tmp_path_factory.mktemp("cli")
    data = make_tiny_dataset(root / "data")
    _, meta = load_dataset(data)
    model = NfmForPretraining(NfmConfig.from_dataset_meta(meta, **TINY_MODEL))
    model.save_pretrained(root / "model")
    (root / "outputs").mkdir()
    return {"root": root, "data": data, "model": root / "model", "sessions": meta.session_ids}


def run(args, cwd=None, env=None, timeout=240):
    return run_recipe(args, cwd=cwd, env=env, timeout=timeout)


# --------------------------------------------------------------------------- each user error: one line, exit 2
def test_wrong_dataset_path(world):
    line = assert_user_error(run([RECIPES / "evaluate.py", "--model", world["model"], "--dataset", "no/such/data"]),
                             "--dataset", "no/such/data")
    assert "no dataset folder" in line
    assert_user_error(run([RECIPES / "pretrain.py", "--dataset", world["root"] / "nope"]), "--dataset")
    assert_user_error(run([RECIPES / "finetune_lora.py", "--model", world["model"], "--dataset",
                           world["root"] / "nope"]), "--dataset")


def test_unknown_task_says_did_you_mean(world):
    assert_user_error(run([RECIPES / "evaluate.py", "--model", world["model"], "--dataset", world["data"],
                           "--tasks", "co_smothing"]), "--tasks", "co_smothing", "did you mean 'co_smoothing'")


def test_wrong_session_id(world):
    assert_user_error(run([RECIPES / "evaluate.py", "--model", world["model"], "--dataset", world["data"],
                           "--sessions", "synth-00-01"]), "--sessions", "synth-00-01", "did you mean")
    assert_user_error(run([RECIPES / "generate.py", "--model", world["model"], "--dataset", world["data"],
                           "--sessions", "synth-09-00"]), "--sessions", "synth-09-00")


def test_mistyped_model_folder_is_not_sent_to_the_hub(world):
    res = run([RECIPES / "evaluate.py", "--model", "outputs/ru1", "--dataset", world["data"]], cwd=world["root"])
    assert_user_error(res, "--model", "no model folder at outputs/ru1")
    assert "huggingface.co" not in res.stderr
    assert_user_error(run([RECIPES / "finetune_lora.py", "--model", "./ru1", "--dataset", world["data"]],
                          cwd=world["root"]), "--model", "no model folder at ./ru1")
    assert_user_error(run([RECIPES / "evaluate.py", "--model", world["data"]]), "--model", "without config.json")


def test_hub_id_without_network_mentions_hf_hub_offline(world):
    offline = run([RECIPES / "evaluate.py", "--model", "someorg/nfm-base", "--dataset", world["data"]],
                  env=subprocess_env(HF_HUB_OFFLINE="1", HF_HOME=str(world["root"] / "hf")))
    assert_user_error(offline, "--model", "someorg/nfm-base", "HF_HUB_OFFLINE")
    # a network that refuses connections (nothing listens on the port): no download is attempted anywhere else
    env = subprocess_env(HF_HUB_OFFLINE="0", HF_ENDPOINT=f"http://127.0.0.1:{free_port()}",
                         HF_HOME=str(world["root"] / "hf"), HF_HUB_ETAG_TIMEOUT="2", HF_HUB_DOWNLOAD_TIMEOUT="2")
    line = assert_user_error(run([RECIPES / "evaluate.py", "--model", "someorg/nfm-base", "--dataset",
                                  world["data"]], env=env), "--model", "someorg/nfm-base", "HF_HUB_OFFLINE")
    assert "could not be reached" in line


def test_finetune_without_sessions_when_the_base_knows_them_all(world):
    line = assert_user_error(run([RECIPES / "finetune_lora.py", "--model", world["model"], "--dataset", world["data"],
                                  "--output_dir", world["root"] / "ft", "--report_to", "none"]), "--sessions")
    assert "knows every session" in line


def test_prepare_data_errors(world, tmp_path):
    assert_user_error(run([RECIPES / "prepare_data.py", "--source", "nwb", "--input", tmp_path / "missing.nwb",
                           "--output_dir", tmp_path / "out"]), "--input", "missing.nwb")
    assert_user_error(run([RECIPES / "prepare_data.py", "--source", "synthetic", "--output_dir", world["data"]]),
                      "--output_dir", "--overwrite")
    assert_user_error(run([RECIPES / "prepare_data.py", "--source", "nwb", "--trials", "3", "--input", world["data"],
                           "--output_dir", tmp_path / "o"]), "only for --source synthetic")


def test_argument_errors_are_one_line_with_did_you_mean(world):
    line = assert_user_error(run([RECIPES / "evaluate.py", "--model", world["model"], "--taks", "all"]),
                             "unrecognized arguments: --taks", "did you mean '--tasks'")
    assert "usage:" not in line
    assert_user_error(run([RECIPES / "pretrain.py", "--max_steps", "abc"]), "--max_steps", "abc")
    assert_user_error(run([RECIPES / "pretrain.py", "--train_fraction", "2"]), "--train_fraction")
    assert_user_error(run([RECIPES / "finetune_lora.py", "--mode", "lorra", "--dataset", world["data"]]), "--mode")
    assert_user_error(run([RECIPES / "evaluate.py"]), "--model", "required")


def test_debug_shows_the_traceback(world):
    res = run([RECIPES / "evaluate.py", "--model", world["model"], "--dataset", "no/such/data", "--debug"])
    assert res.returncode == 1 and "Traceback" in res.stderr and "UsageError" in res.stderr
    res = run([RECIPES / "evaluate.py", "--model", world["model"], "--dataset", "no/such/data"],
              env=subprocess_env(NFM_DEBUG="1"))
    assert res.returncode == 1 and "Traceback" in res.stderr


def test_bugs_keep_their_traceback(capsys, monkeypatch):
    def bug(argv):
        return 1 // 0

    with pytest.raises(ZeroDivisionError):
        cli.run(bug, [])

    def library_value_error(argv):  # raised inside a library, not by an nfm check: a bug
        import numpy as np

        np.zeros(3).reshape(2, 2)

    with pytest.raises(ValueError):
        cli.run(library_value_error, [])

    def user_error(argv):
        raise cli.UsageError("--x", "bad value 3")

    assert cli.run(user_error, []) == 2
    assert capsys.readouterr().err.startswith("error: --x: bad value 3")
    monkeypatch.setenv("RANK", "1")  # a non-main rank of a multi-process launch: silent, same exit status
    assert cli.run(user_error, []) == 2
    assert capsys.readouterr().err == ""


@pytest.mark.slow
def test_one_message_under_accelerate_launch(world):
    """accelerate launch: our line once (no traceback of the recipe); -q keeps accelerate's own traceback of the
    failed subprocess out too.  Two CPU ranks: the line still appears once (the main rank prints it)."""
    cmd = [python(), "-m", "accelerate.commands.launch", "-q", "--num_processes", "1", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", RECIPES / "pretrain.py", "--dataset", "no/such/data"]
    res = subprocess.run(list(map(str, cmd)), env=subprocess_env(), capture_output=True, text=True, timeout=240)
    assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr[-3000:]
    assert sum(ln.startswith("error: --dataset") for ln in res.stderr.splitlines()) == 1, res.stderr[-3000:]
    cmd = [python(), "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", free_port(),
           RECIPES / "pretrain.py", "--dataset", "no/such/data"]
    res = subprocess.run(list(map(str, cmd)), env=subprocess_env(ACCELERATE_USE_CPU="1"), capture_output=True,
                         text=True, timeout=240)
    assert res.returncode != 0
    assert sum(ln.startswith("error: --dataset") for ln in res.stderr.splitlines()) == 1, res.stderr[-3000:]
    assert "recipes/pretrain.py\", line" not in res.stderr  # no traceback through the recipe


# --------------------------------------------------------------------------- --help and errors without torch
@pytest.mark.parametrize("recipe", ["prepare_data", "pretrain", "finetune_lora", "evaluate", "generate"])
def test_help_imports_neither_torch_nor_transformers(recipe):
    res = subprocess.run([python(), "-X", "importtime", str(RECIPES / f"{recipe}.py"), "--help"],
                         env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "usage:" in res.stdout
    imported = {ln.rsplit("|", 1)[-1].strip() for ln in res.stderr.splitlines() if ln.startswith("import time:")}
    heavy = sorted(m for m in imported if m.split(".")[0] in ("torch", "transformers", "datasets", "peft", "scipy",
                                                               "sklearn", "pyarrow"))
    assert not heavy, heavy


def test_argument_error_imports_no_torch():
    res = subprocess.run([python(), "-X", "importtime", str(RECIPES / "finetune_lora.py"), "--lora_r", "x"],
                         env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    imported = {ln.rsplit("|", 1)[-1].strip() for ln in res.stderr.splitlines() if ln.startswith("import time:")}
    assert not {m for m in imported if m.split(".")[0] in ("torch", "transformers")}


def test_import_nfm_is_light():
    res = subprocess.run([python(), "-c", "import sys, nfm, nfm.cli, nfm.training.arguments, nfm.evaluation.tasks, "
                          "nfm.adapters, nfm.data.prepare; print(sorted(m for m in ('torch', 'transformers', 'scipy', "
                          "'pyarrow') if m in sys.modules))"], env=subprocess_env(), capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "[]", res.stdout + res.stderr


# --------------------------------------------------------------------------- pieces
def test_split_ids():
    assert cli.split_ids(["a", "b,c", "a"]) == ["a", "b", "c"]
    assert cli.split_ids("a, b") == ["a", "b"]
    assert cli.split_ids(["synth-04-00 synth-04-01"]) == ["synth-04-00", "synth-04-01"]
    assert cli.split_ids(None) == []


def test_looks_like_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()
    assert cli.looks_like_path("outputs/ru1") and cli.looks_like_path("./x") and cli.looks_like_path("/abs/x")
    assert cli.looks_like_path("ru1") and cli.looks_like_path("a/b/c") and cli.looks_like_path("org/")
    assert not cli.looks_like_path("org/nfm-base") and not cli.looks_like_path("org/nfm-v0.1")


def test_sessions_space_or_comma_separated_everywhere(world):
    from nfm.training.arguments import DataArguments, parse_args

    a = parse_args(["--sessions", "synth-00-00,synth-01-00"], dataclass_types=(DataArguments,))[0]
    b = parse_args(["--sessions", "synth-00-00", "synth-01-00"], dataclass_types=(DataArguments,))[0]
    assert a.sessions == b.sessions == ["synth-00-00", "synth-01-00"]
    sys.path.insert(0, str(RECIPES))
    try:
        import evaluate as ev
        from nfm.data.meta import DatasetMeta

        meta = DatasetMeta.load(world["data"])
        p = ev.build_parser()
        for argv in (["--sessions", "synth-00-00,synth-01-00"], ["--sessions", "synth-00-00", "synth-01-00"]):
            assert ev.resolve_sessions(p.parse_args(["--model", "m", *argv]).sessions, meta, "all") == \
                ["synth-00-00", "synth-01-00"]
        assert ev.resolve_sessions(None, meta, "known") == "known"
    finally:
        sys.path.remove(str(RECIPES))


def test_light_parser_has_the_options_of_hf_argument_parser():
    """The light parser (no transformers import) accepts exactly the options HfArgumentParser builds, with the
    same nargs / constants / destinations / numeric types / choices, and both parse a command line alike."""
    from transformers import HfArgumentParser, TrainingArguments

    from nfm.training.arguments import DataArguments, ModelArguments, RunArguments, light_parser

    light = light_parser()
    hf = HfArgumentParser([DataArguments, ModelArguments, RunArguments, TrainingArguments])

    def spec(parser):
        return {s: (a.nargs, a.const, a.dest, type(a).__name__) for a in parser._actions for s in a.option_strings}

    assert spec(light) == spec(hf)
    la, ha = {a.dest: a for a in light._actions}, {a.dest: a for a in hf._actions}
    for dest, h in ha.items():
        if h.type in (int, float):
            assert la[dest].type is h.type, dest
        if h.choices is not None and dest not in ("log_level", "log_level_replica"):  # non-literal in the source
            assert list(la[dest].choices) == list(h.choices), dest
    argv = ["--sessions", "a", "b", "--max_steps", "7", "--skip_eval", "--no_remove_unused_columns", "--preset", "mtm",
            "--report_to", "none", "--output_dir", "x"]
    nl, nh = vars(light.parse_args(argv)), vars(hf.parse_args(argv))
    for key in ("sessions", "max_steps", "skip_eval", "remove_unused_columns", "preset", "report_to", "output_dir"):
        assert nl[key] == nh[key], key


def test_model_arg_checks(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs" / "run1").mkdir(parents=True)
    (tmp_path / "outputs" / "run1" / "config.json").write_text(json.dumps({"model_type": "nfm"}))
    cli.check_model_arg("outputs/run1")
    with pytest.raises(cli.UsageError, match="no model folder at outputs/ru1; model folders in outputs: did you mean "
                                             "'run1'"):
        cli.check_model_arg("outputs/ru1")
