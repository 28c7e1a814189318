"""How long `make demo` and `make test` take on this machine: the figures the README quotes.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_demo.py [--demo] [--tests] [--fast_tests]

``--demo`` runs exactly the command of ``make demo`` (``accelerate launch -q --config_file
recipes/accelerate/single_process.yaml recipes/pretrain.py``: the default config, 2000 steps, plus its
end-of-training evaluation) into a temporary output folder; ``--tests`` runs ``pytest -q tests`` (``make
test``), ``--fast_tests`` ``pytest -q -m "not slow" tests`` (``make test-fast``).  For each: wall time, CPU time
of the process tree (``os.times`` of the children), and the 1-minute load average sampled every 10 s while it ran (the machine
is shared: the load says how much of it the run had).  The demo also reports the Trainer's own
``train_runtime`` and the co-smoothing bits/spike of its summary.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def timed(cmd: list[str], env: dict, cwd: Path = REPO) -> dict:
    loads, stop = [], threading.Event()

    def sample():
        while not stop.wait(10.0):
            loads.append(os.getloadavg()[0])

    threading.Thread(target=sample, daemon=True).start()
    load0 = os.getloadavg()[0]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = proc.communicate()
    wall = time.perf_counter() - t
    stop.set()
    return {"rc": proc.returncode, "wall_s": wall, "load_start": load0, "out": out, "load_median": statistics.median(loads) if loads else load0,
            "load_max": max(loads) if loads else load0, "tail": out[-1500:]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo", action="store_true")
    p.add_argument("--tests", action="store_true")
    p.add_argument("--fast_tests", action="store_true")
    p.add_argument("--log", default=None, help="also write each run's whole output to LOG.<run>.txt")
    args = p.parse_args(argv)
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), HF_HUB_OFFLINE="1",
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    print(f"machine: {os.cpu_count()} CPU cores; OMP_NUM_THREADS={env['OMP_NUM_THREADS']}; python "
          f"{sys.version.split()[0]}; {time.strftime('%Y-%m-%d %H:%M')}\n")
    print("| run | wall | CPU (all processes) | load average (1 min): start / median / max | notes |")
    print("| --- | --- | --- | --- | --- |")
    rows = []
    if args.demo:
        tmp = Path(tempfile.mkdtemp(prefix="nfm-demo-"))
        cpu0 = os.times()
        r = timed([str(BIN / "accelerate"), "launch", "-q", "--config_file",
                   str(REPO / "recipes/accelerate/single_process.yaml"), str(REPO / "recipes/pretrain.py"),
                   "--output_dir", str(tmp / "pretrain")], env)
        cpu1 = os.times()
        r["cpu_s"] = (cpu1.children_user + cpu1.children_system) - (cpu0.children_user + cpu0.children_system)
        note = f"rc {r['rc']}"
        summary = tmp / "pretrain" / "eval_summary.json"
        if summary.is_file():
            s = json.loads(summary.read_text())
            note += (f"; train_runtime {s['train']['runtime_s']:.0f} s for {s['train']['steps']} steps; "
                     f"co-smoothing {s['tasks']['co_smoothing']['bps']:.3f} bits/spike (validation)")
        else:
            note += "; " + r["tail"].replace("\n", " ")[-300:]
        rows.append(("`make demo` (accelerate launch recipes/pretrain.py, default config)", r, note))
        shutil.rmtree(tmp, ignore_errors=True)
    for flag, name, extra in (("fast_tests", "`make test-fast` (pytest -m 'not slow')", ["-m", "not slow"]),
                              ("tests", "`make test` (pytest, every test)", [])):
        if not getattr(args, flag):
            continue
        cpu0 = os.times()
        r = timed([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra, "tests"], env)
        cpu1 = os.times()
        r["cpu_s"] = (cpu1.children_user + cpu1.children_system) - (cpu0.children_user + cpu0.children_system)
        last = [ln for ln in r["tail"].splitlines() if ln.strip()][-1:] or [""]
        rows.append((name, r, f"rc {r['rc']}; {last[0].strip('= ')}"))
        if args.log:
            Path(f"{args.log}.{flag}.txt").write_text(r["out"])
    for name, r, note in rows:
        print(f"| {name} | {r['wall_s'] / 60:.1f} min | {r['cpu_s'] / 60:.1f} min | {r['load_start']:.1f} / "
              f"{r['load_median']:.1f} / {r['load_max']:.1f} | {note} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
