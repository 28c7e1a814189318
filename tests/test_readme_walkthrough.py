"""README.md's "Using it" walkthrough, run as written on a fresh copy of the repository (small step counts
appended): prepare the demo world, pretrain, LoRA on the held-out animal without naming its sessions, evaluate
the adapter and the base, generate.  Nothing is written outside outputs/, files follow the umask."""
import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from training_fixtures import REPO, TINY_MODEL, subprocess_env

#: what the test appends to each README line (the last value of an option wins): small and fast
SMALL = {
    "prepare_data.py": ["--trials", "12"],
    "pretrain.py": ["--max_steps", "2", "--model_overrides", json.dumps({**TINY_MODEL, "gen_windows_per_step": 1}),
                    "--report_to", "none", "--skip_eval", "--logging_steps", "1", "--dataloader_pin_memory", "false"],
    "finetune_lora.py": ["--max_steps", "2", "--report_to", "none", "--skip_eval", "--logging_steps", "1",
                         "--dataloader_pin_memory", "false"],
    "evaluate.py": ["--tasks", "co_smoothing", "--max_trials", "4", "--batch_size", "8", "--no_estimate",
                    "--task_option", "co_smoothing.smoothing.method=ridge"],
    "generate.py": ["--max_trials", "2", "--batch_size", "2"],
}


def readme_commands() -> list[str]:
    """The lines of the first ```bash block under '## Using it' (comments dropped)."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Using it", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [ln.strip() for ln in block.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def fresh_copy(dst: Path) -> Path:
    """The repository's tracked and untracked-but-not-ignored files (no outputs/, no .venv), links kept."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src, out = REPO / rel, dst / rel
        if not src.exists() and not src.is_symlink():
            continue  # deleted in the working tree
        out.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), out)
        elif src.is_file():
            shutil.copy2(src, out)
    return dst


def to_argv(line: str) -> list[str]:
    argv = shlex.split(line)
    if argv[0] == ".venv/bin/python":
        argv = [sys.executable, *argv[1:]]
    elif argv[:2] == [".venv/bin/accelerate", "launch"]:
        argv = [sys.executable, "-m", "accelerate.commands.launch", *argv[2:]]
    else:
        raise AssertionError(f"README walkthrough line is not a recipe command: {line}")
    script = next(Path(a).name for a in argv if a.endswith(".py"))
    return argv + SMALL[script]


def files_outside_outputs(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.relative_to(root).parts[0] != "outputs"}


@pytest.mark.slow
def test_readme_walkthrough_runs_as_written(tmp_path):
    lines = readme_commands()
    assert [next(Path(a).name for a in shlex.split(ln) if a.endswith(".py")) for ln in lines] == [
        "prepare_data.py", "pretrain.py", "finetune_lora.py", "evaluate.py", "evaluate.py", "generate.py"]
    root = fresh_copy(tmp_path / "nfm")
    before = files_outside_outputs(root)
    env = subprocess_env(PYTHONPATH=str(root), HF_HOME=str(tmp_path / "hf"))
    outs = []
    old = os.umask(0o022)
    try:
        for line in lines:
            res = subprocess.run(to_argv(line), cwd=root, env=env, capture_output=True, text=True, timeout=300)
            assert res.returncode == 0, f"{line}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
            outs.append(res.stdout)
    finally:
        os.umask(old)
    out = root / "outputs"
    # 1. the summary names the held-out animal's sessions
    assert "held out synth-mouse-04: synth-04-00 synth-04-01" in outs[0]
    # 2. pretraining left them out
    assert "held out: synth-04-00, synth-04-01" in outs[1]
    # 3. LoRA found them without --sessions; the split of trainable parameters is reported and recorded
    assert "adapting to the 2 session(s)" in outs[2] and "synth-04-00 synth-04-01" in outs[2]
    assert "lora" in outs[2] and "per-session" in outs[2]
    adapter = json.loads((out / "lora" / "nfm_adapter.json").read_text())
    assert set(adapter["sessions"]) == {"synth-04-00", "synth-04-01"} and len(adapter["base_fingerprint"]) == 64
    summary = json.loads((out / "lora" / "eval_summary.json").read_text())
    assert summary["trainable"]["groups"]["lora"] > 0 and summary["trainable"]["groups"]["per_session"] > 0
    assert "| of which | LoRA" in (out / "lora" / "README.md").read_text()
    # 4. the adapter was evaluated on its own sessions; the base on the sessions it knows
    lora_res = json.loads((out / "lora" / "evaluation" / "results.json").read_text())
    assert set(lora_res["co_smoothing"]["per_session"]) == {"synth-04-00", "synth-04-01"}
    base_res = json.loads((out / "run1" / "evaluation" / "results.json").read_text())
    assert len(base_res["co_smoothing"]["per_session"]) == 8
    # 5. generation on the sessions the model knows
    gen = json.loads((out / "run1" / "generated" / "generation_summary.json").read_text())
    assert len(gen) == 8 and all(v["n_trials"] == 2 for v in gen.values())
    # nothing outside outputs/, and files follow the umask (022: readable by the group)
    assert files_outside_outputs(root) == before
    assert stat.S_IMODE(os.stat(out / "run1" / "model.safetensors").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(out / "data" / "synthetic").st_mode) == 0o755
