"""Start-up cost of the command line: `import nfm`, every recipe's --help and an argument error.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_startup.py [--rounds 5] [--before REV]

Each command runs in a fresh Python process; the figure is the CPU time of that process (user + sys, from
``os.wait4``; wall time is reported too but on a shared machine it mostly measures the other tenants).  With
``--before REV`` the same commands also run on a checkout of REV (``git worktree``-free: ``git archive`` into a
temporary folder), alternating new / old command by command in every round (paired runs), and the table gives
both medians and the median of the per-round ratios.  ``-X importtime`` of ``import nfm`` is summarised too.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COMMANDS = {
    "import nfm": ["-c", "import nfm"],
    "prepare_data.py --help": ["recipes/prepare_data.py", "--help"],
    "pretrain.py --help": ["recipes/pretrain.py", "--help"],
    "finetune_lora.py --help": ["recipes/finetune_lora.py", "--help"],
    "evaluate.py --help": ["recipes/evaluate.py", "--help"],
    "generate.py --help": ["recipes/generate.py", "--help"],
    "pretrain.py --max_steps abc (argument error)": ["recipes/pretrain.py", "--max_steps", "abc"],
}


def cpu_time(root: Path, args: list[str]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of ``python args`` run in ``root`` with ``root`` first on the path."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(root), HF_HUB_OFFLINE="1")
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, *args], cwd=root, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    _, _, usage = os.wait4(proc.pid, 0)
    return usage.ru_utime + usage.ru_stime, time.perf_counter() - t


def importtime(root: Path, top: int = 6) -> list[tuple[str, float]]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(root))
    res = subprocess.run([sys.executable, "-X", "importtime", "-c", "import nfm"], cwd=root, env=env,
                         capture_output=True, text=True)
    rows = []
    for line in res.stderr.splitlines():
        if line.startswith("import time:") and "|" in line and "cumulative" not in line:
            _, cum, name = line[len("import time:"):].split("|")
            rows.append((name.strip(), int(cum) / 1e6))
    return sorted(rows, key=lambda r: -r[1])[:top]


def checkout(rev: str) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix="nfm-before-"))
    data = subprocess.run(["git", "archive", rev], cwd=REPO, capture_output=True, check=True).stdout
    tar = tmp / "src.tar"
    tar.write_bytes(data)
    with tarfile.open(tar) as tf:
        tf.extractall(tmp / "src", filter="tar")
    return tmp / "src"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--before", default=None, help="git revision to compare with (paired, alternating runs)")
    args = p.parse_args(argv)
    roots = {"now": REPO}
    if args.before:
        roots["before"] = checkout(args.before)
    load0 = os.getloadavg()
    times = {(k, c): [] for k in roots for c in COMMANDS}
    walls = {(k, c): [] for k in roots for c in COMMANDS}
    for r in range(args.rounds):
        for name, cmd in COMMANDS.items():
            order = list(roots) if r % 2 == 0 else list(roots)[::-1]
            for k in order:
                c, w = cpu_time(roots[k], cmd)
                times[(k, name)].append(c)
                walls[(k, name)].append(w)
    load1 = os.getloadavg()
    print(f"python {sys.version.split()[0]}, {args.rounds} rounds, OMP_NUM_THREADS=1; load average "
          f"{load0[0]:.2f} at the start, {load1[0]:.2f} at the end (1 min)\n")
    if "before" in roots:
        print("| command | CPU s now (median) | wall s now | CPU s before | wall s before | before / now (median of "
              "paired ratios) |")
        print("| --- | --- | --- | --- | --- | --- |")
    else:
        print("| command | CPU s (median) | wall s (median) |")
        print("| --- | --- | --- |")
    for name in COMMANDS:
        now, wnow = statistics.median(times[("now", name)]), statistics.median(walls[("now", name)])
        if "before" in roots:
            bef, wbef = statistics.median(times[("before", name)]), statistics.median(walls[("before", name)])
            ratio = statistics.median(b / a for a, b in zip(times[("now", name)], times[("before", name)]))
            print(f"| `{name}` | {now:.2f} | {wnow:.2f} | {bef:.2f} | {wbef:.2f} | {ratio:.1f}x |")
        else:
            print(f"| `{name}` | {now:.2f} | {wnow:.2f} |")
    print("\n`python -X importtime -c 'import nfm'`, largest cumulative imports (s):\n")
    for name, s in importtime(REPO):
        print(f"- {name}: {s:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
