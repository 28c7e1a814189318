"""Training benchmark: pretraining throughput under ``accelerate launch`` (1 and 2 CPU processes) and
adaptation to an unseen synthetic animal (LoRA vs full fine-tune vs from scratch at 10% and 100% of its
training trials, co-smoothing bits/spike on its test trials).

    .venv/bin/python benchmarks/bench_training.py [--base outputs/pretrain] [--work /tmp/nfm_bench]

``--base`` is a pretrained model folder holding ``dataset/`` (what ``accelerate launch
recipes/pretrain.py`` writes); if it does not exist the default pretraining runs first. The table is
written to ``benchmarks/results_training.md`` and the raw numbers to ``<work>/results.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
HELDOUT = ["synth-04-00", "synth-04-01"]
#: learning rate per adaptation mode (LoRA and scratch as pretraining-like rates, full fine-tune lower)
MODE_LR = {"lora": 3e-3, "full": 1e-3, "scratch": 2e-3}


def env(threads: int) -> dict:
    e = dict(os.environ)
    e.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONPATH=str(REPO),
             HF_HUB_OFFLINE="1", ACCELERATE_USE_CPU="1")
    return e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd, threads=1, log=None):
    t = time.time()
    r = subprocess.run([str(c) for c in cmd], env=env(threads), capture_output=True, text=True)
    if log:
        Path(log).write_text(r.stdout + r.stderr)
    if r.returncode:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{r.stderr[-3000:]}")
    return time.time() - t


def throughput(base: Path, work: Path, steps: int) -> list[dict]:
    rows = []
    launch = [PY, "-m", "accelerate.commands.launch", "--num_machines", "1", "--mixed_precision", "no",
              "--dynamo_backend", "no"]
    for procs, threads in ((1, 1), (1, 2), (2, 1)):
        out = work / f"tp_{procs}x{threads}"
        shutil.rmtree(out, ignore_errors=True)
        dist = ["--multi_gpu", "--num_processes", "2", "--main_process_port", free_port()] if procs == 2 else \
            ["--num_processes", "1"]
        wall = run([*launch, *dist, REPO / "recipes" / "pretrain.py", "--dataset", base / "dataset",
                    "--output_dir", out, "--max_steps", steps, "--save_steps", 100000, "--skip_eval", "true",
                    "--report_to", "none", "--logging_steps", 10, "--disable_tqdm", "true"],
                   threads=threads, log=work / f"tp_{procs}x{threads}.log")
        train = json.loads((out / "eval_summary.json").read_text())["train"]
        rows.append({"processes": procs, "threads_per_process": threads, "steps": steps,
                     "global_batch": 16 * procs, "train_runtime_s": train["runtime_s"],
                     "trials_per_s": train["samples_per_second"], "wall_s": wall,
                     "load_avg_1min_after": os.getloadavg()[0]})
        print(rows[-1], flush=True)
    return rows


def adaptation(base: Path, work: Path, steps: int) -> list[dict]:
    jobs = []
    for fraction in (0.1, 1.0):
        for mode in ("lora", "full", "scratch"):
            out = work / f"ft_{mode}_{int(fraction * 100)}"
            cmd = [PY, REPO / "recipes" / "finetune_lora.py", "--model", base, "--dataset", base / "dataset",
                   "--sessions", *HELDOUT, "--output_dir", out, "--mode", mode, "--train_fraction", fraction,
                   "--max_steps", steps, "--learning_rate", MODE_LR[mode], "--save_steps", 100000,
                   "--report_to", "none", "--disable_tqdm", "true", "--eval_split", "test", "--overwrite_output_dir"]
            jobs.append((mode, fraction, out, cmd))
    rows = []
    # two at a time (one thread each) on the 2-core box
    for i in range(0, len(jobs), 2):
        procs = []
        for mode, fraction, out, cmd in jobs[i:i + 2]:
            procs.append((mode, fraction, out, time.time(),
                          subprocess.Popen([str(c) for c in cmd], env=env(1), stdout=subprocess.PIPE,
                                           stderr=subprocess.STDOUT, text=True)))
        for mode, fraction, out, t0, p in procs:
            log = p.communicate()[0]
            (work / f"{out.name}.log").write_text(log)
            if p.returncode:
                raise RuntimeError(f"{mode} {fraction} failed:\n{log[-3000:]}")
            s = json.loads((out / "eval_summary.json").read_text())
            rows.append({"mode": mode, "train_fraction": fraction, "n_train_trials": s["train"]["n_train_trials"],
                         "steps": s["train"]["steps"], "trainable": s["trainable"]["trainable"],
                         "trainable_share": s["trainable"]["share"],
                         "co_bps": s["co_smoothing_bits_per_spike"], "co_bps_per_session": s["co_smoothing_per_session"],
                         "masked_loss": s["masked_loss"], "runtime_s": s["train"]["runtime_s"],
                         "wall_s": time.time() - t0})
            print({k: v for k, v in rows[-1].items() if k not in ("co_bps_per_session", "masked_loss")}, flush=True)
    return rows


def write_table(tp, ad, base, steps_tp, steps_ad, total_s, path: Path):
    import torch

    lines = [
        "# Training benchmark",
        "",
        f"Command: `.venv/bin/python benchmarks/bench_training.py --base {base}` (total {total_s / 60:.1f} min)",
        f"Machine: {os.cpu_count()}-core CPU box shared with other jobs ({platform.machine()}), torch "
        f"{torch.__version__}, no GPU. Timings are wall-clock on a shared machine: compare within the table.",
        "",
        "## Pretraining throughput (`accelerate launch recipes/pretrain.py`, default synthetic config)",
        "",
        f"Default model (hidden 128, 2 layers, MLP 512, 1 decoder layer; joint MtM + generation objective), "
        f"16 trials per process per step, {steps_tp} steps, no evaluation. Two processes: "
        "`ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2` (gloo DDP).",
        "",
        "| processes | threads / process | global batch | train s | trials/s | steps/s | 1-min load after |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in tp:
        lines.append(f"| {r['processes']} | {r['threads_per_process']} | {r['global_batch']} | "
                     f"{r['train_runtime_s']:.1f} | {r['trials_per_s']:.1f} | {r['steps'] / r['train_runtime_s']:.2f} | "
                     f"{r.get('load_avg_1min_after', float('nan')):.1f} |")
    lines += [
        "",
        "## Adaptation to an unseen animal (synth-mouse-04, left out of pretraining)",
        "",
        f"`recipes/finetune_lora.py --sessions {' '.join(HELDOUT)} --mode {{lora,full,scratch}} "
        f"--train_fraction {{0.1,1.0}} --max_steps {steps_ad}`; learning rate lora {MODE_LR['lora']}, full "
        f"{MODE_LR['full']}, scratch {MODE_LR['scratch']}; batch 16. Score: co-smoothing bits/spike "
        "(NLB, pooled over the held-out neurons of a session, 25% of each session's units held out, "
        "null = each neuron's mean over the evaluated trials) on the animal's **test** trials, mean of its 2 "
        "sessions; higher is better, 0 = the per-neuron mean rate.",
        "",
        "| mode | training trials | trainable params | trainable share | co-bps (test) | masked NLL neuron | train s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in ad:
        lines.append(f"| {r['mode']} | {r['n_train_trials']} ({int(r['train_fraction'] * 100)}%) | "
                     f"{r['trainable']:,} | {100 * r['trainable_share']:.2f}% | {r['co_bps']:.4f} | "
                     f"{r['masked_loss']['neuron']:.4f} | {r['runtime_s']:.0f} |")
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default=str(REPO / "outputs" / "pretrain"))
    p.add_argument("--work", default="/tmp/nfm_bench_training")
    p.add_argument("--throughput_steps", type=int, default=40)
    p.add_argument("--adapt_steps", type=int, default=100)
    p.add_argument("--output", default=str(REPO / "benchmarks" / "results_training.md"))
    p.add_argument("--reuse", action="store_true", help="reuse <work>/results.json parts instead of re-running")
    p.add_argument("--only", choices=("throughput", "adaptation"), help="re-run one part (needs --reuse for the other)")
    args = p.parse_args(argv)
    t0 = time.time()
    base, work = Path(args.base), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if not (base / "model.safetensors").is_file():
        print(f"no pretrained model at {base}: running the default pretraining first", flush=True)
        run([PY, REPO / "recipes" / "pretrain.py", "--output_dir", base], threads=2, log=work / "pretrain.log")
    old = json.loads((work / "results.json").read_text()) if args.reuse and (work / "results.json").is_file() else {}
    tp = old["throughput"] if args.only == "adaptation" and "throughput" in old else \
        throughput(base, work, args.throughput_steps)
    ad = old["adaptation"] if args.only == "throughput" and "adaptation" in old else \
        adaptation(base, work, args.adapt_steps)
    total = time.time() - t0
    (work / "results.json").write_text(json.dumps({"throughput": tp, "adaptation": ad}, indent=1))
    write_table(tp, ad, args.base, args.throughput_steps, args.adapt_steps, total, Path(args.output))
    print(Path(args.output).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
