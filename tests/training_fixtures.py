"""Tiny on-disk dataset and model settings shared by the training and LoRA tests."""
from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RECIPES = REPO / "recipes"
#: animals of the tiny world: synth-mouse-00/01 pretrain, 02 is the new animal
HELDOUT_SUBJECT = "synth-mouse-02"
#: a very small model: fast on one CPU thread
TINY_MODEL = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
              "decoder_layers": 1, "gen_windows_per_step": 2, "contrastive_dim": 8}


def make_tiny_dataset(path: Path, n_animals: int = 3, n_trials: int = 20, seed: int = 1) -> Path:
    """3 animals x 1 session x 20 trials, 3-5 units per region, saved as an nfm dataset."""
    from nfm.data.hf import build_dataset, save_dataset
    from nfm.data.sources.synthetic import make_ibl_like_world

    sessions = make_ibl_like_world(n_animals=n_animals, sessions_per_animal=1, n_trials=n_trials,
                                   units_per_region=(3, 5), seed=seed)
    dd, meta = build_dataset(sessions)
    save_dataset(dd, meta, path)
    return path


def tiny_args(dataset: Path, output_dir: Path, **extra) -> list[str]:
    """Command-line of recipes/pretrain.py for a tiny run (TensorBoard off for speed unless asked)."""
    args = {"dataset": str(dataset), "output_dir": str(output_dir), "exclude_subjects": HELDOUT_SUBJECT,
            "model_overrides": json.dumps(TINY_MODEL), "per_device_train_batch_size": "4",
            "logging_steps": "1", "save_steps": "1000", "report_to": "none", "eval_batch_size": "8",
            "dataloader_pin_memory": "false"}
    args.update({k: str(v) for k, v in extra.items()})
    out = []
    for k, v in args.items():
        out += [f"--{k}", v]
    return out


def subprocess_env(**extra) -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1",
               PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""), PYTHONUNBUFFERED="1")
    env.pop("NFM_RANK_INFO_DIR", None)
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def python() -> str:
    return sys.executable


def run_recipe(args, cwd=None, env=None, timeout=300):
    """Run ``python <args>`` (a recipe and its flags) as a user would: captured output, the test environment."""
    import subprocess

    return subprocess.run([python(), *map(str, args)], cwd=cwd, env=env or subprocess_env(), capture_output=True,
                          text=True, timeout=timeout)


def assert_user_error(res, *needles):
    """Exit status 2, no traceback, exactly one ``error:`` line, which names every needle."""
    assert res.returncode == 2, (res.returncode, res.stdout[-2000:], res.stderr[-3000:])
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, res.stderr[-3000:]
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]



def kill_in_checkpoint_wrapper(recipe: str, kill_step: int) -> str:
    """Source of a script that runs ``recipes/<recipe>.py`` and SIGKILLs itself inside the save of
    checkpoint-<kill_step>: the model and optimizer files are already written, the RNG states and
    trainer_state.json not yet -- the worst moment for a non-atomic checkpoint."""
    return f"""
import os, signal, sys
sys.path.insert(0, {str(RECIPES)!r})
import nfm.training as T
_orig = T.NfmTrainer._save_rng_state
def _die(self, output_dir):
    if self.state.global_step == {int(kill_step)}:
        os.kill(os.getpid(), signal.SIGKILL)
    return _orig(self, output_dir)
T.NfmTrainer._save_rng_state = _die
import {recipe}
sys.exit({recipe}.main(sys.argv[1:]))
"""
