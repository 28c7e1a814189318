"""Speed figures of the nfm model family (a benchmark, not a test).

Prints a Markdown table:

* training-step throughput (forward + backward + AdamW step) of the default config on the default synthetic
  world's data: trials/s and (bins x real units)/s, for NfmForPretraining (MtM + generation), MtM only and
  generation only with every window;
* event generation at 256-token windows (``min_events = max_events = 256``) with and without the KV cache,
  events/s, at equal model size;
* parameter counts (shared, per session, event decoder) of the default and MtM-size presets.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/bench_models.py --iters 3
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from nfm.data.collate import NfmCollator
from nfm.data.hf import build_dataset
from nfm.data.sources.synthetic import make_ibl_like_world
from nfm.models import NfmConfig, NfmForMaskedModeling, NfmForPretraining, NfmForSpikeGeneration


def _batch(meta, dd, cfg, batch_size):
    train = dd["train"]
    sids = train["session_id"]
    rows = [train[i] for i in range(len(sids)) if sids[i] == sids[0]][:batch_size]
    return NfmCollator(meta, region_vocab=cfg.region_vocab)(rows)


def _train_rate(model, batch, iters):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def step():
        out = model(**batch)
        opt.zero_grad()
        out.loss.backward()
        opt.step()

    step()  # warm-up
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return statistics.median(times)  # the median resists other jobs on a shared CPU


def _count(module):
    return sum(p.numel() for p in module.parameters())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, default=3, help="timed training steps per row (median reported)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--gen-batch", default="1,8", help="comma-separated numbers of trials generated in parallel")
    ap.add_argument("--gen-repeats", type=int, default=2, help="generation runs per row (best is reported)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--skip-train", action="store_true", help="only generation and parameter counts")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sessions = make_ibl_like_world(n_animals=4, n_trials=40, seed=0)
    dd, meta = build_dataset(sessions)
    cfg = NfmConfig.from_dataset_meta(meta)
    batch = _batch(meta, dd, cfg, args.batch_size)
    B, T, N = batch["spikes"].shape
    real = int(batch["unit_mask"].sum())
    events = int(batch["event_mask"].sum())
    rows = []

    def add(name, value, unit):
        rows.append((name, value, unit))

    for label, model in () if args.skip_train else (
        (f"pretraining (MtM + generation, {cfg.gen_windows_per_step} of {T // cfg.window_bins} windows/step)",
         NfmForPretraining(cfg)),
        ("MtM only (NfmForMaskedModeling)", NfmForMaskedModeling(cfg)),
        ("generation only, every window", NfmForSpikeGeneration(NfmConfig.from_dataset_meta(
            meta, gen_windows_per_step=0))),
    ):
        sec = _train_rate(model, batch, args.iters)
        add(f"train step, {label}", f"{B / sec:.1f}", "trials/s")
        add(f"train step, {label}", f"{B * T * real / B / sec:.3g}", "bins x units / s")

    train_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # per-token decoding is latency bound: one thread, no OpenMP hand-offs
    gen = NfmForSpikeGeneration(cfg).eval()
    kw = dict(start_window=10, n_windows=1, min_events=256, max_events=256, do_sample=True, top_p=0.95)
    for gen_batch in [int(x) for x in args.gen_batch.split(",")]:
        gb = {k: (v[:gen_batch] if hasattr(v, "shape") or isinstance(v, list) else v) for k, v in batch.items()}
        rates = {}
        for use_cache in (True, False):
            gen.generate(**gb, use_cache=use_cache, **{**kw, "min_events": 8, "max_events": 8})  # warm-up
            best = float("inf")
            for _ in range(args.gen_repeats):  # best of a few runs: the least disturbed by other jobs
                t = time.perf_counter()
                out = gen.generate(**gb, use_cache=use_cache, generator=torch.Generator().manual_seed(0), **kw)
                best = min(best, time.perf_counter() - t)
            rates[use_cache] = int(out.n_events.sum()) / best
            add(f"generate one 256-event window, {gen_batch} trials in parallel, KV cache "
                f"{'on' if use_cache else 'off'}", f"{rates[use_cache]:.0f}", "events/s")
        add(f"KV cache speed-up, 256 events, {gen_batch} trials in parallel", f"{rates[True] / rates[False]:.1f}x",
            "(goal >= 5x)")

    pre = NfmForPretraining(cfg)
    per_session = _count(next(iter(pre.nfm.sessions.values())))
    add("parameters, default config: backbone shared (excl. sessions)",
        f"{_count(pre.nfm) - sum(_count(m) for m in pre.nfm.sessions.values()):,}", "")
    add(f"parameters, default config: one session ({next(iter(pre.nfm.sessions.values())).n_units} units)",
        f"{per_session:,}", "")
    add("parameters, default config: event decoder", f"{_count(pre.decoder):,}", "")
    add(f"parameters, default config: total with {len(cfg.session_n_units)} sessions", f"{_count(pre):,}", "")
    mtm = NfmForPretraining(NfmConfig.from_dataset_meta(meta, preset="mtm"))
    add(f"parameters, 'mtm' preset: total with {len(cfg.session_n_units)} sessions", f"{_count(mtm):,}", "")

    print(f"Batch: {B} trials x {T} bins x {real // B} units on average ({events} spike events); "
          f"torch {torch.__version__}, {train_threads} threads for training, 1 for generation, "
          f"{platform.processor() or platform.machine()}")
    print()
    print("| measure | value | unit |")
    print("|---|---:|---|")
    for name, value, unit in rows:
        print(f"| {name} | {value} | {unit} |")


if __name__ == "__main__":
    main()
