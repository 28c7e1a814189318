"""Model quality on the embedded synthetic world: pretrain, then score with the evaluation runner.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_quality.py --output_dir /tmp/q/default
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_quality.py --output_dir /tmp/q/long -- --max_steps 4000

Runs ``recipes/pretrain.py`` (the README default; arguments after ``--`` are passed on), times it, then
``recipes/evaluate.py --tasks co_smoothing,forward_prediction,inter_region,intra_region`` on the pretraining's
own dataset (test split, the animals it trained on), and prints one Markdown row per task: the model's
bits/spike (pooled over held-out neurons and sessions, NLB), the null (0 by definition) and the NLB
smoothing + Poisson GLM baseline fitted on the train split with the same held-out neurons, plus the smallest
per-session value of model and smoothing. Results: ``benchmarks/results_quality.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TASKS = ("co_smoothing", "forward_prediction", "inter_region", "intra_region")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output_dir", required=True)
    p.add_argument("--skip_training", action="store_true", help="only evaluate an existing --output_dir")
    p.add_argument("pretrain_args", nargs="*", help="extra recipes/pretrain.py arguments (after --)")
    args = p.parse_args(argv)
    out = Path(args.output_dir)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    seconds = None
    if not args.skip_training:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, str(REPO / "recipes" / "pretrain.py"), "--output_dir", str(out),
                        *args.pretrain_args], check=True, env=env, cwd=REPO)
        seconds = time.perf_counter() - t0
    result = out / "evaluation" / "quality.json"
    subprocess.run([sys.executable, str(REPO / "recipes" / "evaluate.py"), "--model", str(out),
                    "--tasks", ",".join(TASKS), "--output", str(result)], check=True, env=env, cwd=REPO)
    res = json.loads(result.read_text())
    if seconds is not None:
        print(f"pretraining wall time: {seconds:.0f} s")
    print("| task | model bps | null | smoothing bps | model min session | smoothing min session |")
    print("| --- | --- | --- | --- | --- | --- |")
    for task in TASKS:
        r = res[task]
        per = r.get("per_session", {})
        mins = [min((v.get(k, float("nan")) for v in per.values()), default=float("nan"))
                for k in ("bps", "smoothing/bps")]
        print(f"| {task} | {r['bps']:.3f} | {r.get('null/bps', 0.0):.0f} | {r.get('smoothing/bps', float('nan')):.3f} "
              f"| {mins[0]:.3f} | {mins[1]:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
