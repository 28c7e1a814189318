"""recipes/pretrain.py end to end: two real processes, SIGKILL mid-checkpoint + resume, outputs, configs."""
import json
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from training_fixtures import RECIPES, kill_in_checkpoint_wrapper, make_tiny_dataset, python, subprocess_env, free_port, tiny_args


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("data") / "tiny")


def _run(cmd, env, timeout=300):
    return subprocess.run([str(c) for c in cmd], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_two_real_processes_shard_data_and_keep_parameters_identical(dataset, tmp_path):
    # 2 sessions x 14 training trials in batches of 4 -> 8 batches per epoch (each session's last one holds 2
    # trials), 4 per rank; 5 steps cross into the second epoch
    info = tmp_path / "ranks"
    cmd = [python(), "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", free_port(),
           RECIPES / "pretrain.py", *tiny_args(dataset, tmp_path / "out", max_steps=5, rank_info_dir=info,
                                               skip_eval=True)]
    r = _run(cmd, subprocess_env(ACCELERATE_USE_CPU="1", HF_HOME=str(tmp_path / "hf")), timeout=240)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    ranks = [json.loads((info / f"rank{i}.json").read_text()) for i in range(2)]
    for i, rk in enumerate(ranks):
        assert rk["process_index"] == i
        assert rk["world_size"] == 2 and rk["torch_world_size"] == 2 and rk["torch_distributed"]
        assert len(rk["batches"]) == 5
        assert all(len(set(b["session_ids"])) == 1 for b in rk["batches"])  # one session per batch
    assert ranks[0]["pid"] != ranks[1]["pid"]
    epoch0 = [[(s, t) for b in rk["batches"][:4] for s, t in zip(b["session_ids"], b["trial_ids"])] for rk in ranks]
    assert set(epoch0[0]).isdisjoint(epoch0[1])  # each rank its own shard ...
    both = epoch0[0] + epoch0[1]
    assert len(both) == len(set(both)) == 28  # ... and together every training trial once (short batches kept)
    assert sorted(len(b["trial_ids"]) for rk in ranks for b in rk["batches"][:4]) == [2, 2] + [4] * 6
    d0, d1 = ranks[0]["param_digest"], ranks[1]["param_digest"]
    assert sorted(d0) == sorted(d1) == ["1", "2", "3", "4", "5"]
    assert all(d0[s] == d1[s] for s in d0)  # bit-identical weights on both ranks after every step
    assert len(set(d0.values())) == 5  # and they changed at every step
    assert (tmp_path / "out" / "model.safetensors").is_file()


@pytest.mark.slow
def test_sigkill_mid_checkpoint_then_resume_equals_uninterrupted_run(dataset, tmp_path):
    common = dict(max_steps=18, save_steps=5, save_total_limit=2, seed=7)
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    env = subprocess_env()
    wrapper = tmp_path / "kill_wrapper.py"
    wrapper.write_text(kill_in_checkpoint_wrapper("pretrain", kill_step=15))
    # the uninterrupted run (also checks every output of the recipe) and the killed run, side by side
    pa = subprocess.Popen([python(), str(RECIPES / "pretrain.py"),
                           *tiny_args(dataset, a_dir, report_to="tensorboard", **common)],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    pb = subprocess.Popen([python(), str(wrapper), *tiny_args(dataset, b_dir, skip_eval=True, **common)],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out_a, out_b = pa.communicate(timeout=300)[0], pb.communicate(timeout=300)[0]
    assert pa.returncode == 0, out_a[-4000:]
    assert pb.returncode == -signal.SIGKILL, out_b[-4000:]
    # the killed save left only a staging folder: no checkpoint-15 that would load with stale files
    assert sorted(p.name for p in b_dir.glob("checkpoint-*")) == ["checkpoint-10", "checkpoint-5"]
    partial = b_dir / ".partial" / "checkpoint-15"
    assert (partial / "model.safetensors").is_file() and not (partial / "trainer_state.json").exists()
    assert not (b_dir / "checkpoint-10" / "training_args.bin").exists()  # no pickle written
    c10 = load_file(b_dir / "checkpoint-10" / "model.safetensors")
    r = _run([python(), RECIPES / "pretrain.py",
              *tiny_args(dataset, b_dir, skip_eval=True, resume_from_checkpoint="last", **common)], env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert not (b_dir / ".partial").exists()
    a, b = load_file(a_dir / "model.safetensors"), load_file(b_dir / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed run differs from the uninterrupted one"
    assert any(not torch.equal(a[k], c10[k]) for k in a)  # and 8 steps were trained after the resume point
    _check_recipe_outputs(a_dir, max_steps=18)


def _check_recipe_outputs(out: Path, max_steps: int):
    from huggingface_hub import ModelCard

    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "nfm" and len(cfg["session_n_units"]) == 2  # the held-out animal is not in it
    assert (out / "training_args.json").is_file() and not (out / "training_args.bin").exists()
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "nfm"
    assert "nfm" in card.data.tags and card.data.datasets == ["tiny"]
    assert "co_smoothing_bps" in card.data.metrics and "co_smoothing_smoothing/bps" not in card.data.metrics
    assert "synth-02-00" in card.text  # held-out session named in the card
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    rows = json.loads((out / "losses.json").read_text())
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps == list(range(1, max_steps + 1))
    header = (out / "losses.csv").read_text().splitlines()[0].split(",")
    assert {"step", "loss", "mtm_loss", "id_loss", "dt_loss", "learning_rate"} <= set(header)
    summary = json.loads((out / "eval_summary.json").read_text())
    assert set(summary["tasks"]) == {"co_smoothing", "forward_prediction", "intra_region", "inter_region"}
    assert set(summary["tasks"]["co_smoothing"]["per_session"]) == {"synth-00-00", "synth-01-00"}
    assert all(0 < v < 10 for v in summary["generation"].values())
    assert summary["train"]["steps"] == max_steps


@pytest.mark.slow
def test_pretrain_at_another_bin_size_then_evaluate_agrees_with_the_training_summary(dataset, tmp_path):
    """--bin_size reaches the config (generation on: its windows follow the new grid), the collator and the
    evaluation read it back, and eval_summary.json equals recipes/evaluate.py on the same tasks to 1e-6."""
    out = tmp_path / "coarse"
    env = subprocess_env()
    res = _run([python(), RECIPES / "pretrain.py", *tiny_args(dataset, out, max_steps=4, bin_size=0.04,
                                                               eval_batch_size=4)], env)
    assert res.returncode == 0, res.stderr[-3000:]
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["bin_size"], cfg["n_bins"]) == (0.04, 50) and "generation" in cfg["objectives"]
    assert abs(cfg["gen_window"] / cfg["bin_size"] - round(cfg["gen_window"] / cfg["bin_size"])) < 1e-9
    summary = json.loads((out / "eval_summary.json").read_text())
    tasks = sorted(summary["tasks"])
    res = _run([python(), RECIPES / "evaluate.py", "--model", out, "--dataset", dataset, "--split", "validation",
                "--sessions", "known", "--tasks", ",".join(tasks), "--batch_size", "4",
                "--output", tmp_path / "eval" / "results.json"], env)
    assert res.returncode == 0, res.stderr[-3000:]
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    compared = 0
    for task in tasks:
        for key, value in summary["tasks"][task].items():
            if isinstance(value, float):
                assert results[task][key] == pytest.approx(value, rel=1e-6, abs=1e-9), (task, key)
                compared += 1
    assert compared >= 8 and summary["tasks"]["co_smoothing"]["bps"] is not None
