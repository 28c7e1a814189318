"""Scaling of one training step: time and peak memory as units, bins and sessions grow, MtM path and event decoder.

Each point runs in a fresh process (its own peak memory), 1 torch thread by default: one warm-up step, then the
median of ``--steps`` steps (forward + backward + AdamW).  Default model (H128, 4 layers, 4 heads, MLP 512, 2
decoder layers, 40 ms windows, 10 windows per step); Poisson spikes at 5 Hz per unit, so the events of one
decoder window grow with units x rate (0.2 per unit).  Curves:

* MtM (``NfmForMaskedModeling``, neuron masking), 16 trials: units 100..3000 at 100 bins; bins 100..1000 at
  100 units; sessions 1..200 in the model (100 units each, a batch of one session).
* event decoder (``NfmForSpikeGeneration``), 4 trials: the same three axes.

Memory: the process's peak resident memory during the steps minus its resident memory before the first step
(model, optimizer and data already built).  The exponent column is the least-squares slope of log(time) vs
log(size) over the curve (1 = linear).

    PYTHONPATH=. python benchmarks/bench_scaling.py [--quick] [--threads 1] [--steps 3]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
RATE_HZ = 5.0


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def make_batch(n_trials: int, n_bins: int, n_units: int, bin_size: float = 0.02, seed: int = 0):
    """A collated batch of one session ``s0``: Poisson spikes at RATE_HZ per unit (events and binned counts)."""
    import torch

    rng = np.random.default_rng(seed)
    dur = n_bins * bin_size
    counts = rng.poisson(RATE_HZ * dur, (n_trials, n_units))
    E = int(counts.sum(1).max())
    ev_t = np.zeros((n_trials, E), np.float32)
    ev_u = np.zeros((n_trials, E), np.int64)
    ev_m = np.zeros((n_trials, E), bool)
    spikes = np.zeros((n_trials, n_bins, n_units), np.float32)
    for b in range(n_trials):  # one step per trial
        u = np.repeat(np.arange(n_units), counts[b])
        t = rng.uniform(0, dur, len(u))
        order = np.lexsort((u, t))
        t, u = t[order], u[order]
        ev_t[b, :len(t)], ev_u[b, :len(u)], ev_m[b, :len(u)] = t, u, True
        np.add.at(spikes[b], (np.minimum((t / bin_size).astype(int), n_bins - 1), u), 1)
    regions = torch.tensor([1 + i * 4 // n_units for i in range(n_units)]).expand(n_trials, n_units).contiguous()
    return {"spikes": torch.from_numpy(spikes), "unit_mask": torch.ones(n_trials, n_units, dtype=torch.bool),
            "unit_region": regions, "session_ids": ["s0"] * n_trials, "event_times": torch.from_numpy(ev_t),
            "event_units": torch.from_numpy(ev_u), "event_mask": torch.from_numpy(ev_m)}


def child(path: str, n_units: int, n_bins: int, n_sessions: int, steps: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    from nfm.models import NfmConfig, NfmForMaskedModeling, NfmForSpikeGeneration

    torch.manual_seed(0)
    mtm = path == "mtm"
    B = 16 if mtm else 4
    sessions = {"s0": n_units, **{f"s{i}": 100 for i in range(1, n_sessions)}}
    cfg = NfmConfig(session_n_units=sessions, region_vocab=["unknown", "R0", "R1", "R2", "R3"], n_bins=n_bins,
                    window=[0.0, n_bins * 0.02], objectives=["mtm"] if mtm else ["generation"])
    model = (NfmForMaskedModeling if mtm else NfmForSpikeGeneration)(cfg).train()
    batch = make_batch(B, n_bins, n_units)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    kw = {"mask_mode": "neuron"} if mtm else {}

    def step():
        out = model(**batch, **kw)
        out.loss.backward()
        opt.step()
        opt.zero_grad()

    base = _status_kb("VmRSS")
    step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    events = int(batch["event_mask"].sum())
    return dict(path=path, units=n_units, bins=n_bins, sessions=n_sessions, trials=B, step_s=statistics.median(times),
                min_s=min(times), max_s=max(times), peak_mb=(_status_kb("VmHWM") - base) / 1024,
                events_per_window=events / B / (n_bins // cfg.window_bins))


def measure(path, units, bins, sessions, steps, threads) -> dict:
    code = ("import json, sys; sys.path.insert(0, {b!r}); import bench_scaling as S; "
            "print('RESULT', json.dumps(S.child({p!r}, {u}, {t}, {s}, {k}, {th})))").format(
        b=str(Path(__file__).resolve().parent), p=path, u=units, t=bins, s=sessions, k=steps, th=threads)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    lines = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
    if r.returncode or not lines:
        raise RuntimeError(f"{path} units={units} bins={bins} sessions={sessions} failed:\n{r.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def curves(quick: bool):
    if quick:
        return {"units": [100, 300, 1000], "bins": [100, 300], "sessions": [1, 50]}
    return {"units": [100, 300, 1000, 3000], "bins": [100, 300, 1000], "sessions": [1, 20, 200]}


def run(quick=False, threads=1, steps=None) -> dict:
    steps = steps or (2 if quick else 3)
    c = curves(quick)
    rows = []
    for path in ("mtm", "decoder"):
        for axis, values in c.items():
            for v in values:
                units, bins, sessions = (v if axis == "units" else 100, v if axis == "bins" else 100,
                                         v if axis == "sessions" else 1)
                r = measure(path, units, bins, sessions, steps, threads)
                r["axis"] = axis
                rows.append(r)
                print(f"{path} {axis}={v}: {r['step_s']:.3f} s, +{r['peak_mb']:.0f} MB", flush=True)
    return dict(rows=rows, steps=steps, load=os.getloadavg())


def exponent(xs, ys) -> float:
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0]) if len(xs) > 1 else float("nan")


def table(res: dict) -> list[str]:
    out = ["| path | axis | sizes | step s (median) | peak memory MB (step) | decoder events / window | time exponent "
           "| memory exponent |", "|---|---|---|---|---|---|---:|---:|"]
    rows = res["rows"]
    for path in ("mtm", "decoder"):
        for axis in ("units", "bins", "sessions"):
            rs = [r for r in rows if r["path"] == path and r["axis"] == axis]
            if not rs:
                continue
            xs = [r[axis] for r in rs]
            name = "MtM (16 trials)" if path == "mtm" else "event decoder (4 trials)"
            ev = " / ".join(f"{r['events_per_window']:.0f}" for r in rs) if path == "decoder" else "-"
            times = " / ".join(f"{r['step_s']:.3g}" for r in rs)
            mem = " / ".join(f"{max(r['peak_mb'], 0.1):.0f}" for r in rs)
            t_exp = exponent(xs, [r["step_s"] for r in rs])
            m_exp = exponent(xs, [max(r["peak_mb"], 1.0) for r in rs])
            out.append(f"| {name} | {axis} | {' / '.join(map(str, xs))} | {times} | {mem} | {ev} | {t_exp:.2f} "
                       f"| {m_exp:.2f} |")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=None)
    args = ap.parse_args()
    res = run(args.quick, args.threads, args.steps)
    print("\n".join(table(res)))


if __name__ == "__main__":
    main()
