"""Binning benchmark: a 30 M-spike, 700-unit, 2-hour session into 400 trials x 100 bins.

Reports spikes/s (all 30 M spikes of the session over wall time, one core:
OMP/BLAS threads pinned to 1) and peak traced memory (tracemalloc, which sees
numpy's buffers) for:
  * dense counts: ``nfm.data.binning.bin_trials`` -> (400, 100, 700) int32
  * sparse records: ``nfm.data.records.session_table`` -> Arrow rows (what prepare_data stores)
  * batch binning: ``NfmCollator`` on 32 trials (training-time path), events/s

Run:  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_binning.py
"""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
import time
import tracemalloc

import numpy as np

from nfm.data.binning import bin_trials
from nfm.data.collate import NfmCollator
from nfm.data.hf import build_dataset
from nfm.data.records import assign_splits, session_table
from nfm.data.schema import Session

N_SPIKES, N_UNITS, DURATION, N_TRIALS = 30_000_000, 700, 7200.0, 400


def make_session(seed=0):
    rng = np.random.default_rng(seed)
    times = np.sort(rng.uniform(0, DURATION, N_SPIKES))
    units = rng.integers(0, N_UNITS, N_SPIKES)
    align = np.sort(rng.uniform(10, DURATION - 10, N_TRIALS))
    return Session("bench", "bench-mouse", units={"unit_id": np.arange(N_UNITS).astype(str),
                                                  "region": np.array(["VISp"] * N_UNITS)},
                   trials={"stimOn_times": align}, spike_times=times, spike_units=units,
                   recording_end=DURATION, source="benchmark")


def measure(fn, repeats=3):
    best, peak = np.inf, 0
    for _ in range(repeats):
        tracemalloc.start()
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
        peak = max(peak, tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        best = min(best, dt)
        del out
    return best, peak


def main():
    s = make_session()
    align = s.trials["stimOn_times"]
    rows = []
    t, peak = measure(lambda: bin_trials(s.spike_times, s.spike_units, N_UNITS, align, (-0.5, 1.5), 0.02))
    rows.append(("dense counts (400x100x700)", t, N_SPIKES / t, peak))
    t_val, _ = measure(lambda: s.validate(), repeats=1)
    rows.append(("validate() (sorted/finite/range checks)", t_val, N_SPIKES / t_val, 0))
    split = assign_splits(N_TRIALS)
    t, peak = measure(lambda: session_table(s, align_event="stimOn_times", window=(-0.5, 1.5), bin_size=0.02, split=split))
    rows.append(("sparse Arrow records (prepare_data path)", t, N_SPIKES / t, peak))
    dd, meta = build_dataset([s])
    batch_rows = [dd["train"][i] for i in range(32)]
    n_ev = sum(len(r["spike_times"]) for r in batch_rows)
    coll = NfmCollator(meta)
    t, peak = measure(lambda: coll(batch_rows))
    rows.append((f"collator, 32 trials ({n_ev} events)", t, n_ev / t, peak))
    print("| step | wall s | spikes/s | peak traced MiB |")
    print("| --- | --- | --- | --- |")
    for name, t, rate, peak in rows:
        print(f"| {name} | {t:.3f} | {rate / 1e6:.0f} M | {peak / 2**20:.0f} |")


if __name__ == "__main__":
    main()
