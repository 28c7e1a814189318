"""Reliability under faults: a killed prepare_data.py leaves no half-written folder and a rerun succeeds; a killed
finetune_lora.py resumes to the bit-identical adapter; corrupt inputs are one-line errors naming the file."""
import json
import signal
import subprocess

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from training_fixtures import (HELDOUT_SUBJECT, RECIPES, TINY_MODEL, kill_in_checkpoint_wrapper, make_tiny_dataset, python,
                               subprocess_env)
from test_cli import assert_user_error


def run(args, env=None, timeout=300, cwd=None):
    return subprocess.run([python(), *map(str, args)], env=env or subprocess_env(), capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


# --------------------------------------------------------------------------- prepare_data.py killed mid-write
KILL_PREPARE = """
import os, signal, sys
sys.path.insert(0, {recipes!r})
import nfm.data.meta as M
def _die(self, folder):  # the Arrow splits are on disk, nfm_meta.json and the card not yet
    os.kill(os.getpid(), signal.SIGKILL)
M.DatasetMeta.save = _die
import prepare_data
sys.exit(prepare_data.main(sys.argv[1:]))
"""


def test_prepare_data_killed_mid_write_leaves_no_folder_and_a_rerun_succeeds(tmp_path):
    out = tmp_path / "data"
    args = ["--source", "synthetic", "--animals", "2", "--sessions_per_animal", "1", "--trials", "10",
            "--output_dir", out]
    wrapper = tmp_path / "kill_prepare.py"
    wrapper.write_text(KILL_PREPARE.format(recipes=str(RECIPES)))
    res = run([wrapper, *args])
    assert res.returncode == -signal.SIGKILL, res.stderr[-2000:]
    assert not out.exists()  # absent, not half-written
    stale = list(tmp_path.glob(".data.tmp-*"))
    assert stale and (stale[0] / "train").is_dir()  # the staging folder of the killed run
    res = run([RECIPES / "prepare_data.py", *args])  # no --overwrite needed
    assert res.returncode == 0, res.stderr[-3000:]
    assert not list(tmp_path.glob(".data.tmp-*"))  # the killed run's leftovers are cleaned up
    from nfm.data.hf import load_dataset

    dd, meta = load_dataset(out)
    assert len(meta.sessions) == 2 and dd["train"].num_rows > 0


# --------------------------------------------------------------------------- finetune_lora.py killed mid-run
@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny pretrained base (random weights) on the tiny world without its held-out animal."""
    from nfm.data.hf import load_dataset
    from nfm.models import NfmConfig, NfmForPretraining

    root = tmp_path_factory.mktemp("faults")
    data = make_tiny_dataset(root / "data")
    _, meta = load_dataset(data)
    keep = [s for s, m in meta.sessions.items() if m.subject_id != HELDOUT_SUBJECT]
    torch.manual_seed(0)
    model = NfmForPretraining(NfmConfig.from_dataset_meta(meta.subset(keep), **TINY_MODEL))
    model.save_pretrained(root / "base")
    return {"root": root, "data": data, "base": root / "base"}


@pytest.mark.slow
def test_finetune_killed_mid_run_resumes_to_the_same_adapter(base, tmp_path):
    common = ["--model", base["base"], "--dataset", base["data"], "--max_steps", "8", "--save_steps", "3",
              "--per_device_train_batch_size", "4", "--logging_steps", "1", "--report_to", "none", "--skip_eval",
              "--seed", "3", "--dataloader_pin_memory", "false"]
    a, b = tmp_path / "a", tmp_path / "b"
    wrapper = tmp_path / "kill_finetune.py"
    wrapper.write_text(kill_in_checkpoint_wrapper("finetune_lora", kill_step=6))
    env = subprocess_env()
    pa = subprocess.Popen([python(), str(RECIPES / "finetune_lora.py"), *map(str, common), "--output_dir", str(a)],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    pb = subprocess.Popen([python(), str(wrapper), *map(str, common), "--output_dir", str(b)],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out_a, out_b = pa.communicate(timeout=400)[0], pb.communicate(timeout=400)[0]
    assert pa.returncode == 0, out_a[-4000:]
    assert pb.returncode == -signal.SIGKILL, out_b[-4000:]
    assert sorted(p.name for p in b.glob("checkpoint-*")) == ["checkpoint-3"]  # checkpoint-6 never completed
    c3 = load_file(b / "checkpoint-3" / "adapter_model.safetensors")
    res = run([RECIPES / "finetune_lora.py", *common, "--output_dir", b, "--resume_from_checkpoint", "last"])
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    wa, wb = load_file(a / "adapter_model.safetensors"), load_file(b / "adapter_model.safetensors")
    assert wa.keys() == wb.keys() and len(wa) > 4
    assert all(torch.equal(wa[k], wb[k]) for k in wa), "resumed adapter differs from the uninterrupted one"
    assert any(not torch.equal(wa[k], c3[k]) for k in wa)  # 5 steps were trained after the resume point
    assert json.loads((a / "nfm_adapter.json").read_text()) == json.loads((b / "nfm_adapter.json").read_text())


# --------------------------------------------------------------------------- corrupt inputs
def _copy_model(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_truncated_weights_are_one_line_naming_the_file(base, tmp_path):
    bad = _copy_model(base["base"], tmp_path / "trunc")
    w = bad / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    assert_user_error(run([RECIPES / "evaluate.py", "--model", bad, "--dataset", base["data"], "--sessions", "known",
                           "--tasks", "co_smoothing", "--no_estimate", "--output", tmp_path / "r.json"]),
                      str(w), "truncated or corrupt")


def test_unknown_model_type_is_one_line_naming_config_json(base, tmp_path):
    bad = _copy_model(base["base"], tmp_path / "badtype")
    cfg = json.loads((bad / "config.json").read_text())
    cfg["model_type"] = "nfmx"
    (bad / "config.json").write_text(json.dumps(cfg))
    for recipe in ("evaluate.py", "generate.py", "finetune_lora.py"):
        args = ["--model", bad, "--dataset", base["data"]]
        assert_user_error(run([RECIPES / recipe, *args]), str(bad / "config.json"), "model_type", "nfmx")


def test_dataset_missing_a_split_is_one_line_naming_it(base, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(base["data"], data)
    shutil.rmtree(data / "validation")
    assert_user_error(run([RECIPES / "finetune_lora.py", "--model", base["base"], "--dataset", data,
                           "--output_dir", tmp_path / "ft", "--report_to", "none"]),
                      str(data / "validation"), "missing")


def test_nwb_without_units_is_one_line_naming_the_file(tmp_path):
    from pynwb import TimeSeries

    from test_source_nwb import _nwbfile, _write

    nwb = _nwbfile("nounits")
    nwb.add_acquisition(TimeSeries(name="speed", data=np.ones(5), unit="m/s", rate=1.0))
    _write(nwb, tmp_path / "nounits.nwb")
    assert_user_error(run([RECIPES / "prepare_data.py", "--source", "nwb", "--input", tmp_path / "nounits.nwb",
                           "--output_dir", tmp_path / "out"]), "nounits.nwb")
    assert not (tmp_path / "out").exists()


def test_suite2p_with_mismatched_lengths_is_one_line_naming_the_file(tmp_path):
    from test_source_suite2p import write_suite2p

    write_suite2p(tmp_path / "rec")
    plane0 = tmp_path / "rec" / "suite2p" / "plane0"
    np.save(plane0 / "iscell.npy", np.ones((4, 2)))  # spks.npy holds 5 ROIs
    line = assert_user_error(run([RECIPES / "prepare_data.py", "--source", "suite2p", "--input", tmp_path / "rec",
                                  "--output_dir", tmp_path / "out"]), str(plane0 / "iscell.npy"))
    assert "(4, 2)" in line and "spks.npy" in line
