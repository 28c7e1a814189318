"""Real-data check on data no one here wrote: macaque M1 (Stevenson et al. 2011).

171 units, 50 ms bins, one continuous ~777 s reaching session (read from
``../shared/data/m1_stevenson_2011``, never copied into the repo). The
recording is cut into back-to-back 2 s windows and split **contiguously in
time** (first 70% train, next 10% validation, last 20% test), so no test
window has a shuffled neighbour in training.

Steps (each the project's own recipe):
  1. ``recipes/prepare_data.py --source binned`` -> Arrow dataset (50 ms bins)
  2. ``recipes/pretrain.py`` MtM-only (neuron, causal, temporal masks; one
     region, so no region masks)
  3. ``recipes/evaluate.py`` co_smoothing, forward_prediction, hand_velocity
     -> model vs null vs NLB smoothing baseline in one table.

Run:  OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_m1_real.py [--max_steps 1500] [--work DIR]
Writes ``<work>/results.json`` / ``results.md``; copy the table into
``benchmarks/results_m1_real.md`` by hand with the command and date.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "m1_stevenson_2011" / "m1_stevenson_2011.npz"


def run(cmd: list[str]) -> float:
    print("+", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--work", default="outputs/bench_m1")
    p.add_argument("--max_steps", type=int, default=1500)
    p.add_argument("--data", default=str(DATA))
    args = p.parse_args()
    work = (ROOT / args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    ds, model = work / "dataset", work / "model"
    if not ds.exists():
        run([py, "recipes/prepare_data.py", "--source", "binned", "--input", args.data, "--output_dir", str(ds)])
    t_train = run([py, "recipes/pretrain.py", "--dataset", str(ds), "--output_dir", str(model),
                   "--objectives", "mtm", "--mask_modes", "neuron", "causal", "temporal",
                   "--max_steps", str(args.max_steps), "--save_steps", str(10 * args.max_steps), "--skip_eval"])
    run([py, "recipes/evaluate.py", "--model", str(model), "--dataset", str(ds), "--split", "test",
         "--tasks", "co_smoothing,forward_prediction,hand_velocity", "--output", str(work / "results.json")])
    results = json.loads((work / "results.json").read_text())
    print(f"\ntraining wall time: {t_train:.0f} s ({args.max_steps} steps)")
    print((work / "results.md").read_text())
    json.dump({"train_seconds": t_train, "max_steps": args.max_steps}, open(work / "timing.json", "w"))
    del results


if __name__ == "__main__":
    main()
