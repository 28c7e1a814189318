"""The package as a user installs it: a wheel, installed into a fresh environment outside the repository, has
its tasks, configs, card templates and manifests, and evaluates a model."""
import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

SCRIPT = r"""
import json, sys
from pathlib import Path
import nfm
assert Path(nfm.__file__).resolve().is_relative_to(Path(sys.argv[1]).resolve()), nfm.__file__
from nfm import resources
from nfm.evaluation.tasks import available_tasks
from nfm.cards import MODEL_TEMPLATE, load_template
from nfm.training import load_yaml_config, read_id_file, DataArguments, ModelArguments, RunArguments
from transformers import TrainingArguments
tasks = available_tasks()
cfg = load_yaml_config("synthetic", (DataArguments, ModelArguments, RunArguments, TrainingArguments))
ids = read_id_file("datasets/ibl_repeated_site/mtm_heldout_5_eids.txt")
assert "$title" in load_template(MODEL_TEMPLATE)
import torch
from nfm import NfmConfig, NfmForPretraining
from nfm.data.hf import build_dataset
from nfm.data.sources.synthetic import make_ibl_like_world
from nfm.evaluation.runner import evaluate
dd, meta = build_dataset(make_ibl_like_world(n_animals=1, sessions_per_animal=1, n_trials=10, units_per_region=(3, 4), seed=0))
torch.manual_seed(0)
model = NfmForPretraining(NfmConfig.from_dataset_meta(meta, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                                      intermediate_size=32, decoder_layers=1))
res = evaluate(model, (dd, meta), tasks="co_smoothing,forward_prediction", split="test")
print(json.dumps({"n_tasks": len(tasks), "max_steps": cfg["max_steps"], "n_ids": len(ids),
                  "bps": res["co_smoothing"]["bps"], "fp": res["forward_prediction"]["bps"]}))
"""


@pytest.mark.slow
def test_wheel_installs_outside_the_repository_and_evaluates(tmp_path):
    # build from a clean copy of the sources (an in-tree build/ folder would keep files deleted since)
    src = tmp_path / "src"
    shutil.copytree(REPO, src, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "outputs", "runs", "__pycache__", "*.egg-info", ".pytest_cache"))
    wheels = tmp_path / "wheels"
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                          str(wheels), str(src)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    (wheel,) = wheels.glob("nfm-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()"
                                "['purelib'])"], capture_output=True, text=True, check=True).stdout.strip())
    # the wheel goes into the fresh environment; its dependencies come from this one (a path entry, so this
    # environment's editable install of nfm is not picked up)
    res = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target",
                          str(site), str(wheel)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    (site / "_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "HOME": str(tmp_path)}
    res = subprocess.run([str(venv / "bin" / "python"), "-c", SCRIPT, str(site)], capture_output=True, text=True,
                         timeout=600, cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["n_tasks"] >= 15 and out["max_steps"] == 2000 and out["n_ids"] == 5
    assert isinstance(out["bps"], float) and isinstance(out["fp"], float)
