"""README's 2-photon recipe (issue 21), run as written on suite2p folders the test writes (small step counts
appended): prepare_data from suite2p folders -> pretrain (MtM) -> evaluate, with the dataset read from the
model's record.  The NWB line is checked against prepare_data's parser (no NWB file with a trials table here)."""
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from test_readme_walkthrough import SMALL as WALKTHROUGH_SMALL
from test_source_suite2p import write_suite2p
from training_fixtures import REPO, subprocess_env

#: appended to each line: the walkthrough's small settings (prepare_data: none, its --trials is synthetic only)
SMALL = {**WALKTHROUGH_SMALL, "prepare_data.py": []}


def readme_2p_commands() -> list[str]:
    """The lines of the ```bash block under '### 2-photon recordings' (comments dropped)."""
    text = (REPO / "README.md").read_text()
    section = text.split("### 2-photon recordings", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [ln.strip() for ln in block.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def to_argv(line: str, inputs: list[str]) -> list[str]:
    argv = shlex.split(line)
    if argv[0] == ".venv/bin/python":
        argv = [sys.executable, *argv[1:]]
    elif argv[:2] == [".venv/bin/accelerate", "launch"]:
        argv = [sys.executable, "-m", "accelerate.commands.launch", *argv[2:]]
    argv = [str(REPO / a) if a.startswith("recipes/") else a for a in argv]
    if "--input" in argv and "suite2p" in argv:  # the user's folders -> the test's
        i = argv.index("--input")
        j = next(k for k in range(i + 1, len(argv)) if argv[k].startswith("--"))
        argv[i + 1:j] = inputs
    script = next(Path(a).name for a in argv if a.endswith(".py"))
    return argv + SMALL[script]


def test_readme_2p_lines_are_the_recipe():
    lines = readme_2p_commands()
    assert [next(Path(a).name for a in shlex.split(ln) if a.endswith(".py")) for ln in lines] == [
        "prepare_data.py", "prepare_data.py", "pretrain.py", "evaluate.py"]
    sys.path.insert(0, str(REPO / "recipes"))
    try:
        import prepare_data
    finally:
        sys.path.pop(0)
    for line in lines[:2]:  # both data lines parse (the NWB one cannot run here: no NWB file)
        args = prepare_data.build_parser().parse_args(shlex.split(line)[2:])
        assert args.source in ("suite2p", "nwb")
    nwb = prepare_data.build_parser().parse_args(shlex.split(lines[1])[2:])
    assert nwb.align_event == "stim_on_time" and list(nwb.window) == [-0.5, 1.5]
    assert "--objectives mtm" in lines[2]


@pytest.mark.slow
def test_readme_2p_recipe_runs_on_suite2p_folders(tmp_path):
    lines = readme_2p_commands()
    inputs = []
    for k in range(2):  # 2 recordings of 60 s at 10 Hz, 2 planes
        write_suite2p(tmp_path / "rec" / f"mouse{k}", n_frames=(600, 600), n_rois=(8, 6), seed=k)
        inputs.append(str(tmp_path / "rec" / f"mouse{k}" / "suite2p"))
    env = subprocess_env(PYTHONPATH=str(REPO), HF_HOME=str(tmp_path / "hf"), NFM_CACHE_DIR=str(tmp_path / "cache"))
    outs = []
    for line in (lines[0], lines[2], lines[3]):
        res = subprocess.run(to_argv(line, inputs), cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=600)
        assert res.returncode == 0, f"{line}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
        outs.append(res.stdout)
    assert "back-to-back" in outs[0]  # no trials table: prepare_data says it cut windows
    run = tmp_path / "outputs" / "run2p"
    assert json.loads((run / "config.json").read_text())["objectives"] == ["mtm"]
    assert "Neuroformer" not in (run / "README.md").read_text()  # an MtM-only card claims no generation
    res = json.loads((run / "evaluation" / "results.json").read_text())
    assert "r2" in res["co_smoothing"] and "ridge/r2" in res["co_smoothing"]
    md = (run / "evaluation" / "results.md").read_text()
    assert "| co_smoothing | r2 |" in md
    assert ("### Warnings" in md) != ("No score is below its null model, chance or best baseline." in md)
