"""Data larger than memory: pretraining reads sessions from memory-mapped Arrow shards, per-session batches.

Builds a synthetic spike dataset of ``--sessions`` sessions (default 200) and ``--spikes`` spikes in all
(default 20 M; 100 trials per session, 40-160 units, Poisson counts; written as Arrow shards with
``nfm_meta.json``, the format of ``recipes/prepare_data.py``), then, for an increasing number ``n`` of its
sessions, runs in a fresh process what ``recipes/pretrain.py`` runs on them:

* ``load_dataset`` (memory-mapped), the per-session read-in statistics (``init_sessions_from_data``: one
  session's rows at a time), a small joint model (H64, 1+1 layers) of the ``n`` sessions;
* ``--steps`` training steps through ``DataLoader(ArrowRows(ds), batch_sampler=SessionBatchSampler(...,
  sessions_per_block=8), collate_fn=NfmCollator)``: batches of one session, columns read from Arrow.

Reported per ``n``: peak resident memory (``VmHWM``), peak private memory (``RssAnon``, sampled after every
step: what the process holds besides file pages that the kernel can drop), the private memory of model +
AdamW state (grows with the sessions' units, by design), trials/s and spikes/s of the whole loop, and the
data loader alone (no model).  Target: peak private memory flat in ``n`` apart from the model's own growth.

    PYTHONPATH=. python benchmarks/bench_streaming.py [--quick] [--threads 1] [--work /tmp/nfm_stream]

``--quick``: 40 sessions, 2 M spikes, n in (5, 40), 10 steps.  The dataset is built once per size and reused.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

REGIONS = ["CA1", "DG", "LP", "MOs", "PO", "VISp"]


# --------------------------------------------------------------------------- dataset
def build(path: Path, n_sessions: int, n_spikes: int, trials: int = 100, n_bins: int = 100, bin_size: float = 0.02,
          seed: int = 0) -> Path:
    """Write the synthetic dataset (train/validation/test Arrow splits, 8 shards for train, and its meta)."""
    import datasets
    import pyarrow as pa

    from nfm.data.meta import DatasetMeta, SessionMeta

    if (path / "nfm_meta.json").is_file():
        return path
    rng = np.random.default_rng(seed)
    per_trial = n_spikes / (n_sessions * trials)
    dur = n_bins * bin_size
    tables, sessions = [], {}
    for s in range(n_sessions):  # one step per session (vectorised over its trials and spikes)
        sid, N = f"sess-{s:04d}", int(rng.integers(40, 161))
        rates = rng.gamma(2.0, 0.5, N)
        rates *= per_trial / rates.sum()  # expected spikes of each unit per trial
        counts = rng.poisson(np.tile(rates, (trials, 1)))  # (trials, N)
        n_tr = counts.sum(1)
        units = np.concatenate([np.repeat(np.arange(N), c) for c in counts]).astype(np.int32)
        times = rng.uniform(-0.5, -0.5 + dur, int(n_tr.sum())).astype(np.float32)
        trial_of = np.repeat(np.arange(trials), n_tr)
        order = np.lexsort((units, times, trial_of))
        offsets = np.concatenate([[0], np.cumsum(n_tr)]).astype(np.int32)
        split = np.where(np.arange(trials) < int(0.8 * trials), "train",
                         np.where(np.arange(trials) < int(0.9 * trials), "validation", "test"))
        tables.append(pa.table({
            "session_id": pa.array([sid] * trials), "subject_id": pa.array([f"mouse-{s // 2:04d}"] * trials),
            "trial_id": pa.array(np.arange(trials, dtype=np.int32)), "split": pa.array(split),
            "spike_times": pa.ListArray.from_arrays(pa.array(offsets), pa.array(times[order])),
            "spike_units": pa.ListArray.from_arrays(pa.array(offsets), pa.array(units[order])),
            "trial_choice": pa.array(rng.choice([-1.0, 1.0], trials).astype(np.float32)),
        }))
        regions = [REGIONS[i * len(REGIONS) // N] for i in range(N)]
        sessions[sid] = SessionMeta(subject_id=f"mouse-{s // 2:04d}", n_units=N, n_trials=trials,
                                    n_spikes_in_windows=int(n_tr.sum()),
                                    split_counts={k: int((split == k).sum()) for k in ("train", "validation", "test")},
                                    units={"unit_id": [f"{sid}-u{i}" for i in range(N)], "region": regions})
    full = pa.concat_tables(tables)
    split_col = np.asarray(full.column("split").to_pylist())
    dd = datasets.DatasetDict({k: datasets.Dataset(full.filter(pa.array(split_col == k)))
                               for k in ("train", "validation", "test")})
    meta = DatasetMeta(modality="spikes", align_event="stimOn_times", window=(-0.5, -0.5 + dur), bin_size=bin_size,
                       n_bins=n_bins, trial_columns=["choice"], trial_label_names=["choice"], regions=REGIONS,
                       sessions=sessions)
    tmp = path.with_name(path.name + ".tmp")
    dd.save_to_disk(str(tmp), num_shards={"train": 8, "validation": 1, "test": 1})
    meta.save(tmp)
    tmp.rename(path)
    return path


# --------------------------------------------------------------------------- one measurement (child process)
def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def child(path: str, n_sessions: int, steps: int, batch: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    from torch.utils.data import DataLoader

    from nfm.data.collate import ArrowRows, NfmCollator
    from nfm.data.hf import load_dataset
    from nfm.data.sampler import SessionBatchSampler
    from nfm.models import NfmConfig, NfmForPretraining
    from nfm.training.data import init_sessions_from_data, subset_split

    torch.manual_seed(0)
    peak_anon = _status_kb("RssAnon")
    dd, meta = load_dataset(path)
    ids = meta.session_ids[:n_sessions]
    sub = meta.subset(ids)
    ds = subset_split(dd["train"], ids)
    cfg = NfmConfig.from_dataset_meta(sub, hidden_size=64, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=128, decoder_layers=1, gen_windows_per_step=1,
                                      contrastive_dim=16)
    model = NfmForPretraining(cfg)
    t0 = time.perf_counter()
    init_sessions_from_data(model, ds, sub)
    t_stats = time.perf_counter() - t0
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    collator = NfmCollator.for_config(sub, cfg)
    sampler = SessionBatchSampler(list(ds["session_id"]), batch, seed=0, sessions_per_block=8)
    loader = DataLoader(ArrowRows(ds), batch_sampler=sampler, collate_fn=collator)
    after_setup = _status_kb("RssAnon")
    model_bytes = sum(p.numel() * p.element_size() * 3 for p in model.parameters())  # weights + 2 AdamW moments
    trials = spikes = 0
    t0 = time.perf_counter()
    it = iter(loader)
    for _ in range(steps):
        try:
            b = next(it)
        except StopIteration:
            it = iter(loader)
            b = next(it)
        out = model(**b)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        trials += len(b["session_ids"])
        spikes += int(b["event_mask"].sum())
        peak_anon = max(peak_anon, _status_kb("RssAnon"))
    t_train = time.perf_counter() - t0
    n_b, n_sp, t0 = 0, 0, time.perf_counter()  # the data path alone: loader + collator, a pass over many batches
    for i, b in enumerate(loader):
        n_b += len(b["session_ids"])
        n_sp += int(b["event_mask"].sum())
        peak_anon = max(peak_anon, _status_kb("RssAnon"))
        if i + 1 >= 4 * steps:
            break
    t_load = time.perf_counter() - t0
    return dict(sessions=n_sessions, train_trials=len(ds), peak_rss_mb=_status_kb("VmHWM") / 1024,
                peak_anon_mb=peak_anon / 1024, setup_anon_mb=after_setup / 1024, model_opt_mb=model_bytes / 2 ** 20,
                trials_per_s=trials / t_train, spikes_per_s=spikes / t_train, loader_trials_per_s=n_b / t_load,
                loader_spikes_per_s=n_sp / t_load, stats_s=t_stats, steps=steps)


def measure(path: Path, n: int, steps: int, batch: int, threads: int) -> dict:
    code = ("import json, sys; sys.path.insert(0, {b!r}); import bench_streaming as S; "
            "print('RESULT', json.dumps(S.child({p!r}, {n}, {s}, {bs}, {t})))").format(
        b=str(Path(__file__).resolve().parent), p=str(path), n=n, s=steps, bs=batch, t=threads)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    lines = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
    if r.returncode or not lines:
        raise RuntimeError(f"measurement of {n} sessions failed:\n{r.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def run(quick: bool = False, threads: int = 1, work: str = "/tmp/nfm_stream", steps: int | None = None) -> dict:
    n_total, n_spikes = (40, 2_000_000) if quick else (200, 20_000_000)
    sizes = (5, 40) if quick else (10, 50, 200)
    steps = steps or (10 if quick else 30)
    path = Path(work) / f"synthetic_{n_total}s_{n_spikes // 10 ** 6}M"
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    build(path, n_total, n_spikes)
    t_build = time.perf_counter() - t0
    size_mb = sum(f.stat().st_size for f in path.rglob("*.arrow")) / 2 ** 20
    rows = [measure(path, n, steps, 16, threads) for n in sizes]
    return dict(dataset=str(path), sessions=n_total, spikes=n_spikes, arrow_mb=size_mb, build_s=t_build, rows=rows,
                load=os.getloadavg())


def table(res: dict) -> list[str]:
    out = [f"Dataset: {res['sessions']} sessions, {res['spikes'] / 1e6:.0f} M spikes, {res['arrow_mb']:.0f} MB of "
           "Arrow (memory-mapped); batches of 16 trials of one session, sessions in blocks of 8.", "",
           "| sessions trained | train trials | peak RSS MB | peak private MB | model+AdamW MB | private - model MB "
           "| trials/s (step) | spikes/s (step) | loader trials/s | loader spikes/s |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res["rows"]:
        out.append(f"| {r['sessions']} | {r['train_trials']:,} | {r['peak_rss_mb']:.0f} | {r['peak_anon_mb']:.0f} "
                   f"| {r['model_opt_mb']:.1f} | {r['peak_anon_mb'] - r['model_opt_mb']:.0f} | {r['trials_per_s']:.1f} "
                   f"| {r['spikes_per_s']:,.0f} | {r['loader_trials_per_s']:.0f} | {r['loader_spikes_per_s']:,.0f} |")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", default="/tmp/nfm_stream")
    args = ap.parse_args()
    res = run(args.quick, args.threads, args.work)
    print("\n".join(table(res)))


if __name__ == "__main__":
    main()
