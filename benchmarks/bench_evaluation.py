"""What a user waits for at evaluation: CPU seconds of ``recipes/evaluate.py`` on a demo-config model.

Runs the recipe as a user does (a subprocess, 1 thread), each command with an empty baseline cache (cold) and
again with the cache the first run left (warm), and reports CPU seconds (user + system of the child, which the
load of a shared machine inflates far less than wall time) beside wall seconds and the load average.  Goals of
issue 22: ``--tasks co_smoothing`` under 30 s CPU warm and 2 min cold; ``--tasks all --quick`` under 2 min;
``--tasks all`` under 10 min.  Writes ``benchmarks/results_evaluation.md``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_evaluation.py --model outputs/pretrain \\
        --dataset outputs/data/synthetic [--skip_all]
"""
from __future__ import annotations

import argparse
import datetime
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import speedlib  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "benchmarks" / "results_evaluation.md"
#: (label, evaluate.py arguments, goal in CPU seconds or None)
RUNS = [
    ("co_smoothing, cold cache", ["--tasks", "co_smoothing"], 120.0, True),
    ("co_smoothing, warm cache", ["--tasks", "co_smoothing"], 30.0, False),
    ("all tasks --quick", ["--tasks", "all", "--quick"], 120.0, False),
    ("all tasks", ["--tasks", "all"], 600.0, False),
]


def child_cpu(cmd: list[str], env: dict) -> tuple[float, float, str]:
    """(CPU seconds of the finished child, wall seconds, output tail)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall, res.stdout[-2000:]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a model trained with the demo config")
    p.add_argument("--dataset", required=True)
    p.add_argument("--sessions", default="known")
    p.add_argument("--skip_all", action="store_true", help="leave out the full `--tasks all` run")
    p.add_argument("--no_write", action="store_true")
    args = p.parse_args(argv)
    cache = Path(tempfile.mkdtemp(prefix="nfm_bench_cache_"))
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", NFM_CACHE_DIR=str(cache), HF_HUB_OFFLINE="1")
    rows = []
    load0 = speedlib.load()
    for label, extra, goal, cold in RUNS:
        if args.skip_all and extra == ["--tasks", "all"]:
            continue
        if cold:
            for f in cache.rglob("*.npz"):
                f.unlink()
        out = Path(tempfile.mkdtemp(prefix="nfm_bench_eval_")) / "results.json"
        cmd = [sys.executable, "recipes/evaluate.py", "--model", args.model, "--dataset", args.dataset,
               "--sessions", args.sessions, "--output", str(out), *extra]
        print(f"== {label}: {' '.join(cmd)}", flush=True)
        cpu, wall, _ = child_cpu(cmd, env)
        rows.append((label, extra, goal, cpu, wall))
        print(f"   {cpu:.1f} s CPU, {wall:.1f} s wall", flush=True)
    load1 = speedlib.load()
    lines = [
        "# Evaluation: what a user waits for",
        "",
        f"Command: `OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_evaluation.py --model {args.model} "
        f"--dataset {args.dataset}{' --skip_all' if args.skip_all else ''}` · {datetime.date.today().isoformat()} · "
        f"{speedlib.cpu_name()}, {os.cpu_count()} cores shared with other jobs, 1 thread · load {load0} at start, "
        f"{load1} at end.",
        "",
        "Each row is one run of `recipes/evaluate.py` (with its cost estimate) on the model's known sessions, test "
        "split; CPU seconds are the child's user + system time (one measurement each). Cold: an empty baseline "
        "cache; warm: the cache the cold run left (the smoothing baseline is read, not refitted).",
        "",
        "| run | arguments | CPU s | wall s | goal (CPU s) | met |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for label, extra, goal, cpu, wall in rows:
        lines.append(f"| {label} | `{' '.join(extra)}` | {cpu:.1f} | {wall:.1f} | {goal:.0f} | "
                     f"{'yes' if cpu <= goal else 'no'} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
