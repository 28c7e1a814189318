"""The speed goals of issue 11, each a measured row: nfm against the anchors' released code (MtM NDT1,
Neuroformer; built by ``benchmarks/anchors.py``), model FLOP utilisation against this machine's measured matmul
peak, end-to-end recipe throughput against the bare model step, and ``torch.compile``.

Rows (timing rules in ``benchmarks/speedlib.py``: 1 thread, contenders alternating round by round, medians of
paired ratios with min-max ranges, the load average with each table):

1. joint pretraining step (``NfmForPretraining``) vs Neuroformer's training step at equal size, 16 trials;
2. generation of one 256-event window, 1 and 8 trials, vs Neuroformer's ``generate_spikes`` (+ events/s);
3. MtM training step vs NDT1 at H128 x 4 and H512 x 5, and nfm's model FLOP utilisation (analytic FLOPs of the
   step / its time / the dense fp32 matmul throughput timed in the same rounds); the H512 x 5 step in fp32 and
   under bf16 autocast with the fp32 *and* bf16 matmul peaks timed in the same rounds, each step's MFU against
   the peak of its own precision, and (``--mtm_repo``) NDT1 as released and under the same autocast; on a CPU
   without AMX / AVX512-BF16 the bf16 rows say it is emulated there; with CUDA, bf16 MFU too;
4. ``recipes/pretrain.py`` (default synthetic config; loader, collation, logging, checkpoints) vs the bare step
   on the same model and batches: trials/s ratio;
5. ``torch.compile`` of the MtM step: graph breaks, compile time, speed-up.

    PYTHONPATH=. python benchmarks/bench_speed.py --mtm_repo ../anchors/mtm --neuroformer_repo ../anchors/neuroformer

``--quick``: 1 round, 32-event windows, small recipe run; ``--only 1,3``: a subset of the rows.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import anchors as A  # noqa: E402
import speedlib as L  # noqa: E402

TARGETS = {"joint": 5.0, "gen1": 15.0, "gen8": 40.0, "mtm": 1.5, "mfu": 0.50, "gpu_mfu": 0.40, "e2e": 0.85}


def row(goal, what, value, target, met, rng="", note="", command=""):
    return dict(goal=goal, what=what, value=value, target=target, met=met, range=rng, note=note, command=command)


# --------------------------------------------------------------------------- FLOPs
def mtm_step_flops(hidden, layers, mlp, n_trials, n_bins, n_units) -> float:
    """Model FLOPs of one nfm MtM training step: 3 x the forward matmul FLOPs (backward = 2 x forward).

    Forward: read-in ``x . unit_embed`` and the hidden-mask rows (2 x 2BTNH), read-in MLP (2 x 2BTH^2), per layer
    on L = T + 2 tokens: q/k/v/o (8BLH^2), MLP (4BLH*I), attention scores and values (4BL^2H), read-out (2BTNH).
    Elementwise work (LayerNorm, GELU, softmax, dropout, AdamW) is not counted, as usual for MFU."""
    B, T, N, H, I = n_trials, n_bins, n_units, hidden, mlp
    Lt = T + 2
    fwd = 4 * B * T * N * H + 4 * B * T * H * H + 2 * B * T * N * H
    fwd += layers * (8 * B * Lt * H * H + 4 * B * Lt * H * I + 4 * B * Lt * Lt * H)
    return 3.0 * fwd


# --------------------------------------------------------------------------- rows
def anchor_rows(args, rounds, quick):
    """Goals 1-3 against the anchors."""
    rows = []
    if args.mtm_repo:
        for h, layers, heads, mlp in ((128, 4, 4, 512), (512, 5, 8, 1024)):
            sizes = dict(hidden=h, layers=layers, heads=heads, mlp=mlp, n_units=69, n_bins=100, batch=16)
            nfm_c, ndt1 = A.nfm_mtm_step(**sizes), A.mtm_ndt1_step(args.mtm_repo, **sizes)
            peak = L.matmul_peak()
            print(f"MtM H{h}x{layers}: nfm vs NDT1 vs fp32 matmul peak", flush=True)
            t = L.interleave({"nfm": nfm_c.run, "ndt1": ndt1.run, "peak": peak}, rounds)
            ratios = [a / n for (n, _), (a, _) in zip(t["nfm"], t["ndt1"])]
            flops = mtm_step_flops(h, layers, mlp, 16, 100, 69)
            peak_gfs = [f / s / 1e9 for s, f in t["peak"]]
            mfu = [flops / n / (f / s) for (n, _), (s, f) in zip(t["nfm"], t["peak"])]
            m, r = L.fmt(ratios)
            cmd = "bench_speed.py --only 3"
            rows.append(row(3, f"MtM step H{h}x{layers} vs NDT1 (16 x 100 bins x 69 units; {nfm_c.n_params:,} vs "
                               f"{ndt1.n_params:,} params)", f"{m}x", f">= {TARGETS['mtm']}x",
                            float(m) >= TARGETS["mtm"], r, command=cmd))
            mm, mr = L.fmt([100 * x for x in mfu], 0)
            pm = L.stats(peak_gfs)[0]
            nfm_gfs = flops / L.stats([n for n, _ in t["nfm"]])[0] / 1e9
            rows.append(row(3, f"MtM step H{h}x{layers}: model FLOP utilisation, fp32 CPU, 1 thread "
                               f"({flops / 1e9:.1f} GFLOP/step, {nfm_gfs:.1f} GFLOP/s vs matmul peak {pm:.1f} GFLOP/s)",
                            f"{mm}%", f">= {100 * TARGETS['mfu']:.0f}% (paper size)" if h == 512 else "-",
                            float(mm) >= 100 * TARGETS["mfu"] if h == 512 else None, f"{mr}%", command=cmd))
    if args.neuroformer_repo:
        repo = args.neuroformer_repo
        batch, meta = A.synthetic_session_batch(n_trials=16)
        joint = A.nfm_joint_model(meta)
        heads = joint.config.num_attention_heads
        wpt = 2 if quick else 10
        _, _, _, (blk, blk_prev) = A.neuroformer_windows(batch, 16, wpt)
        width = A.neuroformer_width_for(repo, A.count_params(joint), batch, n_head=heads, n_trials=1,
                                        windows_per_trial=1, block=blk, block_prev=blk_prev)
        nf_step = A.neuroformer_train_step(repo, batch, n_trials=16, windows_per_trial=wpt, n_embd=width,
                                           n_head=heads, block=blk, block_prev=blk_prev)
        nfm_step = A.nfm_joint_step(joint, batch)
        print("joint step vs Neuroformer step", flush=True)
        t = L.interleave({"nfm": nfm_step.run, "neuroformer": nf_step.run}, rounds)
        m, r = L.fmt([a / n for (n, _), (a, _) in zip(t["nfm"], t["neuroformer"])])
        rows.append(row(1, f"joint pretraining step vs Neuroformer step, equal size ({nfm_step.n_params:,} vs "
                           f"{nf_step.n_params:,} params; 16 trials, nfm {joint.config.gen_windows_per_step} windows "
                           f"of 40 ms per trial in {joint.decoder.length_buckets} length buckets, Neuroformer "
                           f"{nf_step.info['windows']} windows of 50 ms, block {blk})", f"{m}x",
                        f">= {TARGETS['joint']}x", float(m) >= TARGETS["joint"], r, command="bench_speed.py --only 1"))
        gen_model = A.nfm_joint_model(meta)
        _, _, _, (_, gen_prev) = A.neuroformer_windows(batch, 8, 1, [0.45])
        n_events = 32 if quick else 256
        for n_trials in (1, 8):
            a = A.nfm_generate(gen_model, batch, n_trials, n_events=n_events)
            b = A.neuroformer_generate(repo, batch, n_trials, n_events=n_events, n_embd=width, n_head=heads,
                                       block_prev=gen_prev)
            print(f"generate {n_trials} trial(s) vs Neuroformer", flush=True)
            t = L.interleave({"nfm": a.run, "neuroformer": b.run}, rounds if n_trials == 1 else max(1, rounds - 1))
            m, r = L.fmt([bt / at for (at, _), (bt, _) in zip(t["nfm"], t["neuroformer"])])
            ev_n = L.stats([e / s for s, e in t["nfm"]])[0]
            ev_a = L.stats([e / s for s, e in t["neuroformer"]])[0]
            key = "gen1" if n_trials == 1 else "gen8"
            rows.append(row(2, f"cached generation, one {n_events}-event window x {n_trials} trial(s), top-p 0.95 "
                               f"(events/s nfm {ev_n:,.0f}, Neuroformer {ev_a:,.0f})", f"{m}x",
                            f">= {TARGETS[key]}x", float(m) >= TARGETS[key], r, command="bench_speed.py --only 2"))
    return rows


def _autocast(run, device="cpu"):
    """The contender ``run`` under bf16 autocast (forward, loss and backward; float32 master weights and AdamW state,
    as ``--precision bf16`` trains)."""
    def wrapped():
        with torch.autocast(device, dtype=torch.bfloat16):
            return run()
    return wrapped


NO_BF16 = "no AMX/AVX512-BF16 on this CPU: bf16 emulated, not a supported speed path"


def bf16_rows(args, rounds):
    """The MtM step at H512x5 (16 x 100 bins x 69 units) in fp32 and under bf16 autocast, with the fp32 and bf16
    1024^3 matmul peaks timed in the same rounds; each step's MFU against the peak of the precision it ran in;
    with ``--mtm_repo`` also NDT1 as released (fp32) and NDT1 under the same autocast.  On a CPU without AMX /
    AVX512-BF16 (``/proc/cpuinfo``) the rows say bf16 is emulated there."""
    sys.path.insert(0, str(REPO))
    from nfm.training.precision import cpu_bf16_flags

    flags = cpu_bf16_flags()
    cpu = f"{L.cpu_name()}, flags: {', '.join(flags) if flags else 'no amx_bf16 / avx512_bf16'}"
    note = "" if flags else NO_BF16
    h, layers, heads, mlp = 512, 5, 8, 1024
    sizes = dict(hidden=h, layers=layers, heads=heads, mlp=mlp, n_units=69, n_bins=100, batch=16)
    contenders = {"nfm fp32": A.nfm_mtm_step(**sizes).run, "nfm bf16": _autocast(A.nfm_mtm_step(**sizes).run),
                  "peak fp32": L.matmul_peak(1024, 4, torch.float32),
                  "peak bf16": L.matmul_peak(1024, 4 if flags else 1, torch.bfloat16)}
    if args.mtm_repo:
        contenders["ndt1 fp32"] = A.mtm_ndt1_step(args.mtm_repo, **sizes).run
        contenders["ndt1 bf16"] = _autocast(A.mtm_ndt1_step(args.mtm_repo, **sizes).run)
    n_rounds = rounds if flags else 1  # emulated bf16 is ~15x slower than fp32 here: one round says enough
    print(f"MtM H{h}x{layers}: fp32 vs bf16 autocast, with both matmul peaks ({cpu}; {n_rounds} round(s))", flush=True)
    t = L.interleave(contenders, n_rounds)
    sec = {k: [x for x, _ in v] for k, v in t.items()}
    gfs = {k: [f / x / 1e9 for x, f in t[k]] for k in ("peak fp32", "peak bf16")}
    flops = mtm_step_flops(h, layers, mlp, 16, 100, 69)
    cmd = "bench_speed.py --only 3"
    out = []
    m, r = L.fmt([a / b for a, b in zip(sec["nfm fp32"], sec["nfm bf16"])])
    out.append(row(3, f"MtM step H{h}x{layers}, bf16 autocast vs fp32 (16 x 100 bins x 69 units; {cpu})", f"{m}x",
                   ">= 2x on AMX CPUs", float(m) >= 2.0 if flags else None, r, note=note, command=cmd))
    pf, pb = L.stats(gfs["peak fp32"])[0], L.stats(gfs["peak bf16"])[0]
    pm, pr = L.fmt([b / a for a, b in zip(gfs["peak fp32"], gfs["peak bf16"])])
    out.append(row(3, f"1024^3 matmul peak, 1 thread: bf16 {pb:.1f} vs fp32 {pf:.1f} GFLOP/s ({cpu})", f"{pm}x",
                   "-", None, pr, note=note, command=cmd))
    for prec in ("fp32", "bf16"):
        mfu = [flops / n / (g * 1e9) for n, g in zip(sec[f"nfm {prec}"], gfs[f"peak {prec}"])]
        mm, mr = L.fmt([100 * x for x in mfu], 0)
        step_gfs = flops / L.stats(sec[f"nfm {prec}"])[0] / 1e9
        emulated = prec == "bf16" and not flags  # no bf16 peak to speak of: the 1024^3 bf16 matmul is emulated too
        out.append(row(3, f"MtM step H{h}x{layers} in {prec}: MFU against the {prec} matmul peak ({flops / 1e9:.1f} "
                          f"GFLOP/step, {step_gfs:.1f} GFLOP/s vs {L.stats(gfs[f'peak {prec}'])[0]:.1f} GFLOP/s)",
                       "n/a" if emulated else f"{mm}%", "-", None, "" if emulated else f"{mr}%",
                       note=note if prec == "bf16" else "", command=cmd))
    if args.mtm_repo:
        for other, label in (("ndt1 fp32", "NDT1 as released (fp32)"), ("ndt1 bf16", "NDT1 under the same autocast")):
            m, r = L.fmt([b / a for a, b in zip(sec["nfm bf16"], sec[other])])
            goal = other == "ndt1 fp32"
            out.append(row(3, f"MtM step H{h}x{layers}: nfm in bf16 vs {label}", f"{m}x",
                           f">= {TARGETS['mtm']}x on AMX CPUs" if goal else "-",
                           (float(m) >= TARGETS["mtm"] if flags else None) if goal else None, r, note=note,
                           command=cmd))
    return out


def gpu_rows(rounds):
    """bf16 MFU of the MtM step at the paper size on a CUDA device (SDPA flash attention, fused AdamW, autocast)."""
    if not torch.cuda.is_available():
        return [row(3, "MtM step H512x5: bf16 model FLOP utilisation on a GPU", "not measured", f">= "
                    f"{100 * TARGETS['gpu_mfu']:.0f}% (H100/H200)", None,
                    note="no GPU on this machine; the script measures it when CUDA is present (untested here)",
                    command="bench_speed.py --only 3")]
    from nfm.models import NfmConfig, NfmForMaskedModeling

    B, T, N, h, layers, heads, mlp = 64, 100, 69, 512, 5, 8, 1024
    spikes, regions = A.poisson_batch(B, T, N)
    vocab = ["unknown"] + sorted(set(regions))
    cfg = NfmConfig(session_n_units={"s0": N}, region_vocab=vocab, n_bins=T, hidden_size=h, num_hidden_layers=layers,
                    num_attention_heads=heads, intermediate_size=mlp, hidden_dropout=0.4, objectives=["mtm"])
    model = NfmForMaskedModeling(cfg).cuda()
    index = {r: i for i, r in enumerate(vocab)}
    batch = {"spikes": spikes.cuda(), "unit_mask": torch.ones(B, N, dtype=torch.bool, device="cuda"),
             "unit_region": torch.tensor([index[r] for r in regions], device="cuda").expand(B, N).contiguous(),
             "session_ids": ["s0"] * B}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(**batch, mask_mode="neuron")
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()

    t = L.interleave({"nfm": step, "peak": L.matmul_peak(8192, 4, torch.bfloat16, "cuda")}, rounds)
    flops = mtm_step_flops(h, layers, mlp, B, T, N)
    mfu = [flops / n / (f / s) for (n, _), (s, f) in zip(t["nfm"], t["peak"])]
    m, r = L.fmt([100 * x for x in mfu], 0)
    return [row(3, f"MtM step H512x5, {B} trials: bf16 MFU on {torch.cuda.get_device_name()}", f"{m}%",
                f">= {100 * TARGETS['gpu_mfu']:.0f}%", float(m) >= 100 * TARGETS["gpu_mfu"], f"{r}%",
                command="bench_speed.py --only 3")]


def _load_recipe():
    spec = importlib.util.spec_from_file_location("nfm_pretrain_recipe", REPO / "recipes" / "pretrain.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def e2e_rows(rounds, quick, work):
    """recipes/pretrain.py (in this process) vs the bare step on the same model, batch size and batches."""
    from nfm.data.collate import NfmCollator
    from nfm.data.sampler import SessionBatchSampler
    from nfm.training import (build_model, build_synthetic_dataset, init_sessions_from_data, parse_args,
                              prepare_training_data, select_sessions, subset_split)
    from transformers.utils import logging as hf_logging

    steps = 40 if quick else 200
    data = Path(work) / "synthetic"
    if not (data / "nfm_meta.json").is_file():
        args0 = parse_args(["--output_dir", str(Path(work) / "x")], default_config="synthetic")
        build_synthetic_dataset(data, args0[0])
    common = ["--dataset", str(data), "--max_steps", str(steps), "--logging_steps", "10",
              "--save_steps", str(steps // 2), "--save_total_limit", "1", "--skip_eval", "true",
              "--report_to", "tensorboard", "--dataloader_pin_memory", "false", "--disable_tqdm", "true", "--overwrite_output_dir"]
    recipe = _load_recipe()
    runs = {"n": 0}

    def recipe_run():
        runs["n"] += 1
        out = Path(work) / f"recipe{runs['n']}"
        assert recipe.main(common + ["--output_dir", str(out)]) == 0
        train = json.loads((out / "eval_summary.json").read_text())["train"]
        return train["steps"] * 8 / train["runtime_s"]  # trials/s of the training loop (per-device batch 8)

    data_args, model_args, run_args, targs = parse_args(common + ["--output_dir", str(Path(work) / "bare")],
                                                        default_config="synthetic")
    dd, meta, _ = prepare_training_data(data_args, targs)
    ids = select_sessions(meta, data_args)
    sub = meta.subset(ids)
    ds = subset_split(dd["train"], ids)
    model = build_model(sub, model_args)
    init_sessions_from_data(model, ds, sub)
    collator = NfmCollator.for_config(sub, model.config)
    sampler = SessionBatchSampler(list(ds["session_id"]), targs.per_device_train_batch_size, seed=targs.seed)
    batches = []
    while len(batches) < steps:
        batches += [collator([ds[i] for i in idx]) for idx in sampler]
    batches = batches[:steps]
    from transformers import Trainer

    opt_cls, opt_kwargs = Trainer.get_optimizer_cls_and_kwargs(targs, model)  # the Trainer's optimizer (fused AdamW)
    opt = opt_cls(model.parameters(), **opt_kwargs)

    def bare():
        model.train()
        n = 0
        t0 = time.perf_counter()
        for b in batches:
            out = model(**b)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), targs.max_grad_norm)
            opt.step()
            opt.zero_grad()
            n += len(b["session_ids"])
        return n / (time.perf_counter() - t0)

    hf_logging.set_verbosity_error()
    print(f"recipes/pretrain.py ({steps} steps) vs bare step", flush=True)
    t = L.interleave({"recipe": recipe_run, "bare": bare}, rounds)
    ratio = [r / b for (_, r), (_, b) in zip(t["recipe"], t["bare"])]
    m, r = L.fmt(ratio)
    tr = L.stats([x for _, x in t["recipe"]])[0]
    tb = L.stats([x for _, x in t["bare"]])[0]
    return [row(4, f"end to end: recipes/pretrain.py training loop (default synthetic config, batch 8, {steps} steps, "
                   f"logging every 10, 2 checkpoints, TensorBoard) vs the bare step on the same batches "
                   f"({tr:.1f} vs {tb:.1f} trials/s)", f"{m}", f">= {TARGETS['e2e']} (within 15%)",
                float(m) >= TARGETS["e2e"], r, command="bench_speed.py --only 4")]


def compile_rows(rounds):
    """torch.compile of the MtM step (inductor): graph breaks, compile time, speed vs eager."""
    import torch._dynamo

    from nfm.models import NfmConfig, NfmForMaskedModeling

    spikes, regions = A.poisson_batch(16, 100, 69)
    vocab = ["unknown"] + sorted(set(regions))
    cfg = NfmConfig(session_n_units={"s0": 69}, region_vocab=vocab, n_bins=100, objectives=["mtm"])
    index = {r: i for i, r in enumerate(vocab)}
    batch = {"spikes": spikes, "unit_mask": torch.ones(16, 69, dtype=torch.bool),
             "unit_region": torch.tensor([index[r] for r in regions]).expand(16, 69).contiguous(),
             "session_ids": ["s0"] * 16, "mask_mode": "neuron"}
    torch.manual_seed(0)
    eager = NfmForMaskedModeling(cfg).train()
    comp = NfmForMaskedModeling(cfg).train()
    comp.load_state_dict(eager.state_dict())
    torch._dynamo.reset()
    ex = torch._dynamo.explain(comp)(**batch)
    compiled = torch.compile(comp)

    def stepper(m, fwd):
        opt = torch.optim.AdamW(m.parameters(), lr=1e-4)

        def run():
            out = fwd(**batch)
            out.loss.backward()
            opt.step()
            opt.zero_grad()
        return run

    t0 = time.perf_counter()
    c_run = stepper(comp, compiled)
    c_run()
    t_compile = time.perf_counter() - t0
    print("MtM step: eager vs torch.compile", flush=True)
    t = L.interleave({"eager": stepper(eager, eager), "compiled": c_run}, rounds)
    m, r = L.fmt([e / c for (e, _), (c, _) in zip(t["eager"], t["compiled"])])
    return [row(5, f"torch.compile (inductor) of the MtM step, H128x4, 16 x 100 x 69: {ex.graph_count} graph(s), "
                   f"{ex.graph_break_count} graph breaks; first call (compile) {t_compile:.0f} s", f"{m}x",
                "no graph break; speed-up reported", ex.graph_break_count == 0, r,
                note="compiled / eager step speed (> 1: compile helps)", command="bench_speed.py --only 5")]


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rounds = args.rounds or (1 if args.quick else 3)
    only = {int(x) for x in args.only.split(",")} if args.only else {1, 2, 3, 4, 5}
    load_start, t_start = L.load(), time.time()
    rows = []
    if only & {1, 2, 3}:
        a = argparse.Namespace(**vars(args))
        a.mtm_repo = args.mtm_repo if 3 in only else None
        a.neuroformer_repo = args.neuroformer_repo if only & {1, 2} else None
        rows += anchor_rows(a, rounds, args.quick)
        rows = [r for r in rows if r["goal"] in only]
    if 3 in only:
        rows += bf16_rows(args, rounds)
        rows += gpu_rows(rounds)
    if 4 in only:
        with tempfile.TemporaryDirectory() as work:
            rows += e2e_rows(rounds, args.quick, args.work or work)
    if 5 in only:
        rows += compile_rows(max(rounds, 3))
    return dict(rows=sorted(rows, key=lambda r: r["goal"]), rounds=rounds, load_start=load_start, load_end=L.load(),
                minutes=(time.time() - t_start) / 60, machine=L.machine(), threads=args.threads,
                anchors=", ".join(f"{n} {A.anchor_commit(p)}" for n, p in (("MtM", args.mtm_repo),
                                                                          ("Neuroformer", args.neuroformer_repo)) if p))


def table(res) -> list[str]:
    out = ["| goal | measure | value | target | met | range (min-max over rounds) |", "|---:|---|---:|---|:---:|---|"]
    for r in res["rows"]:
        met = "-" if r["met"] is None else ("yes" if r["met"] else "**no**")
        note = f" ({r['note']})" if r["note"] else ""
        out.append(f"| {r['goal']} | {r['what']}{note} | {r['value']} | {r['target']} | {met} | {r['range']} |")
    return out


def add_args(ap):
    ap.add_argument("--mtm_repo", default=os.environ.get("NFM_MTM_REPO"), help="MtM checkout (env NFM_MTM_REPO)")
    ap.add_argument("--neuroformer_repo", default=os.environ.get("NFM_NEUROFORMER_REPO"),
                    help="Neuroformer checkout (env NFM_NEUROFORMER_REPO)")
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds (default 3; 1 with --quick)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 round, small windows and recipe run")
    ap.add_argument("--only", default="", help="comma-separated goals to run (1..5)")
    ap.add_argument("--work", default=None, help="folder for the recipe runs (default: a temporary one)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_args(ap)
    args = ap.parse_args()
    res = run(args)
    print(f"\nLoad average {res['load_start']} -> {res['load_end']}; {res['machine']}")
    print("\n".join(table(res)))


if __name__ == "__main__":
    main()
