"""nfm against the anchors' own released code (MtM's NDT1, Neuroformer), timed side by side in one process.

Rows (each: an nfm contender and the anchor's contender, see ``benchmarks/anchors.py``):

* MtM training step, NDT1 vs ``NfmForMaskedModeling``, 16 trials x 100 bins x 69 units (Poisson data), at
  H128 x 4 layers (4 heads, MLP 512) and at the MtM paper size H512 x 5 layers (8 heads, MLP 1024).
* Neuroformer training step at (nearly) equal total parameters vs nfm's joint pretraining step
  (``NfmForPretraining``: MtM + generation + contrastive) on the same 16 synthetic trials.
* Generation of one 256-event window for 1 trial and for 8 trials: nfm batches the trials in one
  ``model.generate`` call (KV cache); Neuroformer's ``generate_spikes`` runs the windows one after the other.

The contenders alternate round by round (the order flips every round); each row reports the median over rounds
of the paired ratio anchor time / nfm time ("nfm speed-up x", > 1 = nfm faster) and its min-max range.

Usage::

    PYTHONPATH=. .venv/bin/python benchmarks/bench_anchors.py --mtm_repo ../anchors/mtm \\
        --neuroformer_repo ../anchors/neuroformer --rounds 5

(or set ``NFM_MTM_REPO`` / ``NFM_NEUROFORMER_REPO``).  Rows of an anchor whose checkout is not given are skipped.
``--quick`` is a smoke test (1 round, 32-event windows, 2 windows per trial for Neuroformer's step) that writes
no file unless ``--output`` is given.
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import anchors as A  # noqa: E402
from speedlib import cpu_name  # noqa: E402

DEFAULT_OUTPUT = "benchmarks/results_anchors.md"


def build_rows(args):
    """-> list of dicts: label, kind ('step' or 'gen'), nfm and anchor Contenders, note."""
    rows = []
    quick = args.quick
    n_events = 32 if quick else 256
    if args.mtm_repo:
        for h, layers, heads, mlp in ((128, 4, 4, 512), (512, 5, 8, 1024)):
            sizes = dict(hidden=h, layers=layers, heads=heads, mlp=mlp, n_units=69, n_bins=100, batch=16)
            rows.append(dict(label=f"MtM training step, H{h} x {layers} layers", kind="step",
                             nfm=A.nfm_mtm_step(**sizes), anchor=A.mtm_ndt1_step(args.mtm_repo, **sizes),
                             note=f"{heads} heads, MLP {mlp}; 16 trials x 100 bins x 69 units"))
    if args.neuroformer_repo:
        repo = args.neuroformer_repo
        batch, meta = A.synthetic_session_batch(n_trials=16)
        joint = A.nfm_joint_model(meta)
        heads = joint.config.num_attention_heads
        wpt = 2 if quick else 10
        _, _, _, (blk, blk_prev) = A.neuroformer_windows(batch, 16, wpt)
        blk, blk_prev = args.nf_block or blk, args.nf_block_prev or blk_prev
        width = A.neuroformer_width_for(repo, A.count_params(joint), batch, n_head=heads, n_trials=1,
                                        windows_per_trial=1, block=blk, block_prev=blk_prev)
        nf_step = A.neuroformer_train_step(repo, batch, n_trials=16, windows_per_trial=wpt, n_embd=width,
                                           n_head=heads, block=blk, block_prev=blk_prev)
        rows.append(dict(label="joint / Neuroformer training step, equal size", kind="step",
                         nfm=A.nfm_joint_step(joint, batch), anchor=nf_step,
                         note=f"nfm: 16 trials, {joint.config.gen_windows_per_step} windows of "
                              f"{joint.config.gen_window * 1000:.0f} ms per trial decoded; Neuroformer: "
                              f"{nf_step.info['windows']} windows (50 ms current, 150 ms past) of the same trials "
                              f"in one batch, blocks {blk} / {blk_prev} tokens, width {width}, {heads} heads"))
        gen_model = A.nfm_joint_model(meta)  # a separate copy: the joint row trains its model
        _, _, _, (_, gen_prev) = A.neuroformer_windows(batch, 8, 1, [0.45])
        for n_trials in (1, 8):
            rows.append(dict(label=f"generate one {n_events}-event window, {n_trials} trial{'s' * (n_trials > 1)}",
                             kind="gen", nfm=A.nfm_generate(gen_model, batch, n_trials, n_events=n_events),
                             anchor=A.neuroformer_generate(repo, batch, n_trials, n_events=n_events,
                                                           n_embd=width, n_head=heads, block_prev=gen_prev),
                             note="top-p 0.95, temperature 1; nfm batched with KV cache, Neuroformer "
                                  f"{'1 window' if n_trials == 1 else f'{n_trials} windows in sequence'}, "
                                  "batch 1, a full forward per token"))
    return rows


def time_rows(rows, rounds):
    """Alternate the contenders of every row round by round; returns per-row lists of (t_nfm, t_anchor, ev_nfm,
    ev_anchor)."""
    for row in rows:  # warm-up (allocator, lazy init), not timed
        row["nfm"].run()
        row["anchor"].run()
        row["times"] = []
    for r in range(rounds):
        for row in rows:
            order = ("nfm", "anchor") if r % 2 == 0 else ("anchor", "nfm")
            t, ev = {}, {}
            for side in order:
                t0 = time.perf_counter()
                ev[side] = row[side].run()
                t[side] = time.perf_counter() - t0
            row["times"].append((t["nfm"], t["anchor"], ev["nfm"], ev["anchor"]))
            print(f"round {r + 1}/{rounds} {row['label']}: nfm {t['nfm']:.3f} s, anchor {t['anchor']:.3f} s",
                  flush=True)
    return rows


def table(rows) -> list[str]:
    out = ["| comparison | nfm params | anchor params | nfm s | anchor s | events/s nfm / anchor "
           "| nfm speed-up x (median) | range |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        tn = [x[0] for x in row["times"]]
        ta = [x[1] for x in row["times"]]
        ratios = [a / n for n, a, _, _ in row["times"]]
        evs = "-"
        if row["kind"] == "gen":
            en = statistics.median(x[2] / x[0] for x in row["times"])
            ea = statistics.median(x[3] / x[1] for x in row["times"])
            evs = f"{en:,.0f} / {ea:,.0f}"
        out.append(f"| {row['label']} ({row['anchor'].name}) | {row['nfm'].n_params:,} | {row['anchor'].n_params:,} "
                   f"| {statistics.median(tn):.3g} | {statistics.median(ta):.3g} | {evs} "
                   f"| **{statistics.median(ratios):.2f}** | {min(ratios):.2f}-{max(ratios):.2f} |")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mtm_repo", default=os.environ.get("NFM_MTM_REPO"),
                    help="checkout of colehurwitz/IBL_foundation_model (env NFM_MTM_REPO)")
    ap.add_argument("--neuroformer_repo", default=os.environ.get("NFM_NEUROFORMER_REPO"),
                    help="checkout of a-antoniades/Neuroformer (env NFM_NEUROFORMER_REPO)")
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds per row (default 5; 1 with --quick)")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    ap.add_argument("--quick", action="store_true", help="smoke test: small windows, 1 round, no file")
    ap.add_argument("--nf_block", type=int, default=None,
                    help="Neuroformer training block of the current window (default: fitted to the windows)")
    ap.add_argument("--nf_block_prev", type=int, default=None,
                    help="Neuroformer training block of the past window (default: fitted to the windows)")
    ap.add_argument("--output", default=None, help=f"Markdown file (default {DEFAULT_OUTPUT}; none with --quick)")
    args = ap.parse_args()
    if not (args.mtm_repo or args.neuroformer_repo):
        ap.error("give --mtm_repo and/or --neuroformer_repo (or NFM_MTM_REPO / NFM_NEUROFORMER_REPO)")
    for name in ("mtm_repo", "neuroformer_repo"):
        if getattr(args, name) and not Path(getattr(args, name)).is_dir():
            ap.error(f"--{name} {getattr(args, name)!r} is not a directory")
    rounds = args.rounds or (1 if args.quick else 5)
    output = args.output or (None if args.quick else DEFAULT_OUTPUT)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load_start = os.getloadavg()
    t_start = time.time()
    rows = time_rows(build_rows(args), rounds)
    load_end = os.getloadavg()

    command = "PYTHONPATH=. python " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:])
    commits = ", ".join(f"{label} {A.anchor_commit(repo)}" for label, repo in
                        (("MtM", args.mtm_repo), ("Neuroformer", args.neuroformer_repo)) if repo)
    lines = [
        "# nfm vs the anchors' released code (`benchmarks/bench_anchors.py`)", "",
        f"Command: `{command}`", "",
        f"Date: {datetime.date.today().isoformat()}; total {(time.time() - t_start) / 60:.1f} min. "
        f"Machine: {cpu_name()}, {os.cpu_count()} cores (shared with other jobs), torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch thread(s). Load average (1/5/15 min) at start "
        f"{'/'.join(f'{x:.2f}' for x in load_start)}, at end {'/'.join(f'{x:.2f}' for x in load_end)}.",
        f"Anchors' commits: {commits}. {rounds} rounds, contenders alternating (order flipped every round), "
        "one untimed warm-up call each; times are medians over rounds; the speed-up is the median over rounds of "
        "the paired ratio anchor time / nfm time (> 1: nfm is faster).", "",
    ] + table(rows) + ["", "Rows:", ""] + [f"* {r['label']}: {r['note']}." for r in rows] + [""]
    text = "\n".join(lines)
    print()
    print(text)
    if output:
        Path(output).write_text(text)
        print(f"wrote {output}")


if __name__ == "__main__":
    main()
