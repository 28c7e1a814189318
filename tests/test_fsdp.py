"""FSDP through Accelerate, for real: ``accelerate launch --config_file recipes/accelerate/fsdp_cpu.yaml`` runs
recipes/pretrain.py on 2 CPU processes (gloo, PyTorch FSDP2): sharded checkpoints, SIGKILL, resume to the
parameters of an uninterrupted run, and a whole ``model.safetensors`` that ``from_pretrained`` loads."""
import subprocess

import pytest
import torch
from safetensors.torch import load_file

from training_fixtures import REPO, RECIPES, free_port, make_tiny_dataset, python, subprocess_env, tiny_args

FSDP_CONFIG = REPO / "recipes" / "accelerate" / "fsdp_cpu.yaml"

# SIGKILL a rank right after optimizer step <kill_step> (the run saved checkpoint-3 before): torchrun then
# tears the other rank down, as when a node is lost
KILL_WRAPPER = """
import os, signal, sys
sys.path.insert(0, {recipes!r})
from transformers import TrainerCallback
import nfm.training as T

class _Die(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == {kill_step} and args.process_index == 1:
            os.kill(os.getpid(), signal.SIGKILL)

_init = T.NfmTrainer.__init__
def _init_with_kill(self, *a, **k):
    _init(self, *a, **k)
    self.add_callback(_Die())
T.NfmTrainer.__init__ = _init_with_kill
import pretrain
sys.exit(pretrain.main(sys.argv[1:]))
"""


def _launch(script, out, dataset, tmp_path, **extra):
    cmd = [python(), "-m", "accelerate.commands.launch", "--config_file", FSDP_CONFIG,
           "--main_process_port", free_port(), script,
           *tiny_args(dataset, out, skip_eval=True, max_steps=6, save_steps=3, seed=3, **extra)]
    env = subprocess_env(ACCELERATE_USE_CPU="1", HF_HOME=str(tmp_path / "hf"))
    return subprocess.Popen([str(c) for c in cmd], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


@pytest.mark.slow
def test_fsdp_two_cpu_processes_sharded_checkpoint_kill_resume_export(tmp_path):
    dataset = make_tiny_dataset(tmp_path / "tiny")
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    wrapper = tmp_path / "kill_wrapper.py"
    wrapper.write_text(KILL_WRAPPER.format(recipes=str(RECIPES), kill_step=5))
    pa = _launch(RECIPES / "pretrain.py", a_dir, dataset, tmp_path)  # uninterrupted, side by side with ...
    pb = _launch(wrapper, b_dir, dataset, tmp_path)  # ... the run killed at step 5
    out_a, out_b = pa.communicate(timeout=400)[0], pb.communicate(timeout=400)[0]
    assert pa.returncode == 0, out_a[-5000:]
    assert pb.returncode != 0 and "SIGKILL" in out_b, out_b[-3000:]
    assert "world size 2" in out_a
    # checkpoints are sharded: one distributed-checkpoint file per rank for the model and the optimizer
    ckpt = b_dir / "checkpoint-3"
    for part in ("pytorch_model_fsdp_0", "optimizer_0"):
        assert sorted(p.name for p in (ckpt / part).glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    assert not (ckpt / "model.safetensors").exists() and not (b_dir / "checkpoint-6").exists()
    pr = _launch(RECIPES / "pretrain.py", b_dir, dataset, tmp_path, resume_from_checkpoint="last")
    out_r = pr.communicate(timeout=400)[0]
    assert pr.returncode == 0, out_r[-5000:]
    # the exported whole model: every parameter, equal to the uninterrupted run's
    a, b = load_file(a_dir / "model.safetensors"), load_file(b_dir / "model.safetensors")
    assert a.keys() == b.keys() and len(a) > 50
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    import nfm  # noqa: F401  (registers the Auto classes)
    from transformers import AutoModelForPreTraining

    model = AutoModelForPreTraining.from_pretrained(b_dir)
    state = model.state_dict()
    assert state.keys() == b.keys() and all(torch.equal(state[k], b[k]) for k in b)  # parameters and buffers
