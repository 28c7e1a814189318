"""Does mixed-modality pretraining help?  Unseen-animal performance per modality after pretraining on its own
modality, the other modality, or both (issue 12).

World: :func:`nfm.data.sources.synthetic.make_two_modality_world` -- one latent population (VISp, LP, MOs;
grating direction, choice and running speed drive it) recorded as spikes in some animals and as 2-photon dF/F
(10 Hz frames) in others.  Pretraining pools: 4 spiking animals / 4 imaged animals (150 trials each); unseen
animals: one of each (150 trials; train split for adaptation, test split for masked scores).

Conditions, for each target modality M (the unseen animal is recorded with M):

* ``own``: base pretrained on the M animals;      * ``other``: base pretrained on the other modality's animals;
* ``both``: one base pretrained on both pools (``--dataset A B``, mixing weights 1:1);
* ``scratch``: no pretraining -- the same architecture trained from a random init on the unseen animal.

Equal compute: every base runs the same number of pretraining steps at the same batch size (the mixed base
therefore sees half as many batches of each modality); every adaptation runs the same number of steps.  The
three bases and the adaptations share the architecture (hidden 64, 2 layers, MtM only: the generation
objective does not apply to 2-photon sessions).  Adaptation: LoRA (r 8) + the new session's read-in/out
(``recipes/finetune_lora.py``); scratch: ``--mode scratch``.  Nothing is tuned on the test split: steps,
learning rates and sizes are fixed in this file; decoders choose their penalty by nested CV.

Metrics of the unseen animal (``recipes/evaluate.py`` tasks): masked activity -- co-smoothing bits/spike
(spikes) or R2 (2-photon, test split); decoding from the adapted model's latents (nested 4-fold CV over the
animal's trials, ``decoder_splits: all`` -- the self-supervised model never saw the labels) of choice
(accuracy), grating direction (accuracy; the 2-photon rig's column ``direction`` mapped with the task option
``column_map``) and running speed (per-bin R2).  Reference rows: the data baselines of the same tasks
(spikes: NLB smoothing; 2-photon: same-frame ridge; decoding from smoothed spikes / dF/F directly).

    python benchmarks/bench_modality.py --write          # 3 seeds, writes the RESULTS.md section + per-seed CSV
    python benchmarks/bench_modality.py --quick          # a 1-seed smoke run in about a minute (tests run it)
"""
from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "RESULTS.md"
SEED_CSV = REPO / "benchmarks" / "results_modality_seeds.csv"
BEGIN, END = "<!-- modality:begin -->", "<!-- modality:end -->"
MODEL = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128}
FULL = dict(pretrain_animals=4, trials=150, pretrain_steps=400, adapt_steps=150, batch=16, seeds=(0, 1, 2),
            decoder={})
QUICK = dict(pretrain_animals=2, trials=40, pretrain_steps=12, adapt_steps=6, batch=8, seeds=(0,),
             decoder={"n_splits": 2, "Cs": [1.0], "alphas": [1.0]})
CONDITIONS = ("own", "other", "both", "scratch")
TARGETS = ("spikes", "calcium")
#: (task, metric key, label) of the table; the first is the masked-activity score of the target modality
METRICS = {
    "spikes": [("co_smoothing", "bps", "co-smoothing bits/spike")],
    "calcium": [("co_smoothing", "r2", "masked-ROI R2 (co-smoothing)")],
}
DECODING = [("choice", "latents/accuracy", "choice acc."), ("stimulus_direction", "latents/accuracy", "direction acc."),
            ("running_speed", "latents/r2", "running R2")]


def _recipe(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "recipes" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


# --------------------------------------------------------------------------- data
def build_world(root: Path, cfg: dict) -> dict[str, Path]:
    """Four datasets: pretraining pools and unseen animals of each modality (spikes 20 ms bins; 2-photon at
    the frame clock)."""
    from nfm.data.hf import build_dataset, save_dataset
    from nfm.data.prepare import calcium_bin_size
    from nfm.data.sources.synthetic import make_two_modality_world

    n = cfg["pretrain_animals"]
    paths = {k: root / k for k in ("spk_pre", "cal_pre", "spk_new", "cal_new")}
    if all((p / "nfm_meta.json").is_file() for p in paths.values()):
        return paths
    sessions = make_two_modality_world(n_spike_animals=n + 1, n_calcium_animals=n + 1, n_trials=cfg["trials"],
                                       seed=0)
    spk = [s for s in sessions if s.modality == "spikes"]
    cal = [s for s in sessions if s.modality == "calcium"]
    window = (-0.5, 1.5)
    groups = {"spk_pre": spk[:n], "spk_new": spk[n:], "cal_pre": cal[:n], "cal_new": cal[n:]}
    for name, group in groups.items():
        size = 0.02 if group[0].modality == "spikes" else calcium_bin_size(group, window)
        dd, meta = build_dataset(group, align_event="stimOn_times", window=window, bin_size=size)
        meta.source = "synthetic:two_modality"
        save_dataset(dd, meta, paths[name], overwrite=True)
    return paths


# --------------------------------------------------------------------------- runs
def pretrain(datasets: list[Path], out: Path, seed: int, cfg: dict) -> Path:
    if (out / "model.safetensors").is_file():
        return out
    args = ["--dataset", *map(str, datasets), "--output_dir", str(out), "--max_steps", str(cfg["pretrain_steps"]),
            "--seed", str(seed), "--model_overrides", json.dumps(MODEL), "--objectives", "mtm",
            "--per_device_train_batch_size", str(cfg["batch"]), "--learning_rate", "1e-3", "--skip_eval", "true",
            "--report_to", "none", "--save_steps", "100000", "--logging_steps", "50",
            "--dataloader_pin_memory", "false"]
    if len(datasets) > 1:
        args += ["--dataset_weights", *(["1"] * len(datasets))]
    _recipe("pretrain").main(args)
    return out


def adapt(base: Path, dataset: Path, out: Path, mode: str, seed: int, cfg: dict) -> Path:
    from nfm.data.meta import DatasetMeta

    done = out / ("adapter_model.safetensors" if mode == "lora" else "model.safetensors")
    if done.is_file():
        return out
    sids = DatasetMeta.load(dataset).session_ids
    _recipe("finetune_lora").finetune([
        "--model", str(base), "--dataset", str(dataset), "--sessions", *sids, "--output_dir", str(out),
        "--mode", mode, "--max_steps", str(cfg["adapt_steps"]), "--seed", str(seed),
        "--per_device_train_batch_size", str(cfg["batch"]), "--skip_eval", "true", "--report_to", "none",
        "--save_steps", "100000", "--logging_steps", "50", "--dataloader_pin_memory", "false"])
    return out


def score(model, dataset: Path, modality: str, cfg: dict) -> dict:
    """The table's metrics of one adapted model on the unseen animal, plus the data baselines."""
    from nfm.evaluation.runner import evaluate

    dec = dict(cfg["decoder"])
    over = {t: {"decoder_splits": "all", **({"decoder": {k: v for k, v in dec.items()
                                                         if k != ("Cs" if t == "running_speed" else "alphas")}}
                                             if dec else {})}
            for t, _, _ in DECODING}
    over["stimulus_direction"]["modality"] = "any"  # the spiking animals saw the same gratings
    if modality == "calcium":
        over["stimulus_direction"]["column_map"] = {"stimulus_direction": "direction"}
    res = evaluate(model, dataset, tasks=["co_smoothing"] + [t for t, _, _ in DECODING], split="test",
                   task_overrides=over)
    out = {}
    for task, key, _ in METRICS[modality] + DECODING:  # decoders read every split (decoder_splits: all)
        r = res[task]
        if "not_applicable" in r:
            raise RuntimeError(f"{task} not applicable on {dataset}: {r['not_applicable']}")
        out[f"{task}:{key}"] = float(r[key])
    co = res["co_smoothing"]
    base = "smoothing/bps" if modality == "spikes" else "ridge/r2"
    out[f"co_smoothing:{base}"] = float(co[base])
    if modality == "calcium":
        out["co_smoothing:psth/r2"] = float(co["psth/r2"])
    act = "spikes" if modality == "spikes" else "activity"
    for task, key, _ in DECODING:
        out[f"{task}:{act}/{key.split('/')[1]}"] = float(res[task][f"{act}/{key.split('/')[1]}"])
    return out


def run(root: Path, cfg: dict, seeds) -> list[dict]:
    from nfm.evaluation.predictor import load_model

    paths = build_world(root / "data", cfg)
    rows = []
    for seed in seeds:  # one set of bases and adaptations per seed
        bases = {"spikes": pretrain([paths["spk_pre"]], root / f"s{seed}" / "base_spikes", seed, cfg),
                 "calcium": pretrain([paths["cal_pre"]], root / f"s{seed}" / "base_calcium", seed, cfg),
                 "both": pretrain([paths["spk_pre"], paths["cal_pre"]], root / f"s{seed}" / "base_both", seed, cfg)}
        for target in TARGETS:
            other = "calcium" if target == "spikes" else "spikes"
            new = paths["spk_new" if target == "spikes" else "cal_new"]
            for cond in CONDITIONS:
                base = bases[{"own": target, "other": other, "both": "both", "scratch": target}[cond]]
                out = root / f"s{seed}" / f"{target}_{cond}"
                t0 = time.time()
                adapt(base, new, out, "scratch" if cond == "scratch" else "lora", seed, cfg)
                model = load_model(str(out)) if cond == "scratch" else load_model(str(base), adapter=str(out))
                metrics = score(model, new, target, cfg)
                for k, v in metrics.items():
                    rows.append({"seed": seed, "target": target, "condition": cond, "metric": k, "value": v})
                print(f"seed {seed} {target:7s} {cond:7s} " + ", ".join(
                    f"{k.split(':')[1]} {v:.3f}" for k, v in metrics.items() if "latents" in k or k.endswith(
                        (":bps", ":r2"))) + f"  ({time.time() - t0:.0f} s)", flush=True)
    return rows


# --------------------------------------------------------------------------- report
def summarise(rows: list[dict]) -> dict:
    """{(target, condition, metric): (mean, sd, n)} over seeds (sd with ddof=1; 0 for one seed)."""
    acc: dict[tuple, list[float]] = {}
    for r in rows:
        acc.setdefault((r["target"], r["condition"], r["metric"]), []).append(float(r["value"]))
    return {k: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, len(v)) for k, v in acc.items()}


def verdict(summ: dict, target: str, metric: str) -> str:
    """Rule: a condition is better than another when its mean exceeds the other's by more than the larger
    of the two seed standard deviations (and worse symmetrically); else no difference is claimed."""
    def cmp(a, b):
        (ma, sa, na), (mb, sb, nb) = summ[(target, a, metric)], summ[(target, b, metric)]
        if min(na, nb) < 2:
            return "(1 seed: no claim) vs"
        gap = max(sa, sb)
        return "better than" if ma - mb > gap else "worse than" if mb - ma > gap else "no different from"

    return (f"both {cmp('both', 'own')} own; other {cmp('other', 'scratch')} scratch; "
            f"own {cmp('own', 'scratch')} scratch")


def table(summ: dict) -> str:
    lines = []
    for target in TARGETS:
        cols = METRICS[target] + DECODING
        lines += [f"**Unseen {'spiking' if target == 'spikes' else '2-photon'} animal** (mean ± sd over seeds)", "",
                  "| pretrained on | " + " | ".join(lbl for _, _, lbl in cols) + " |",
                  "| --- |" + " --- |" * len(cols)]
        names = {"own": f"own ({target})", "other": f"other ({'calcium' if target == 'spikes' else 'spikes'})",
                 "both": "both (mixed)", "scratch": "none (scratch)"}
        for cond in CONDITIONS:
            cells = []
            for task, key, _ in cols:
                m = summ.get((target, cond, f"{task}:{key}"))
                cells.append("" if m is None else f"{m[0]:.3f} ± {m[1]:.3f}")
            lines.append(f"| {names[cond]} | " + " | ".join(cells) + " |")
        base_key = "smoothing/bps" if target == "spikes" else "ridge/r2"
        act = "spikes" if target == "spikes" else "activity"
        ref = [summ.get((target, "own", f"co_smoothing:{base_key}"))]
        ref += [summ.get((target, "own", f"{t}:{act}/{k.split('/')[1]}")) for t, k, _ in DECODING]
        label = ("data baseline (smoothing GLM; decoders on smoothed spikes)" if target == "spikes" else
                 "data baseline (same-frame ridge; decoders on dF/F)")
        lines.append(f"| {label} | " + " | ".join("" if m is None else f"{m[0]:.3f}" for m in ref) + " |")
        if target == "calcium" and (target, "own", "co_smoothing:psth/r2") in summ:
            lines.append(f"| PSTH-by-direction baseline (masked R2) | "
                         f"{summ[(target, 'own', 'co_smoothing:psth/r2')][0]:.3f} |" + " |" * len(DECODING))
        lines.append("")
    return "\n".join(lines)


def write_results(summ: dict, rows: list[dict], command: str, runtime_s: float, verdicts: dict[str, str],
                  results: Path = RESULTS, seed_csv: Path = SEED_CSV) -> None:
    """Write the per-seed CSV and the section between the markers of ``results`` (appended when absent)."""
    with open(seed_csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["seed", "target", "condition", "metric", "value"])
        w.writeheader()
        w.writerows(rows)
    section = "\n".join([
        BEGIN,
        "## Mixed-modality pretraining (spikes + 2-photon): does it help an unseen animal?",
        "",
        "**Claim tested.** Pretraining one nfm model on spiking *and* 2-photon animals (shared backbone and "
        "region embeddings, Poisson read-out for spike sessions, Gaussian for 2-photon sessions, each dataset at "
        "its own clock) helps a new animal of either modality more than pretraining on its own modality alone.",
        "",
        "Setup: `make_two_modality_world` (one latent population, VISp/LP/MOs; spiking animals and 10 Hz dF/F "
        "animals), 4 pretraining animals per modality, one unseen animal per modality (150 trials each). Equal "
        "compute: every base 400 steps x 16 trials (the mixed base: half its batches per modality), every "
        "adaptation 150 steps (LoRA r 8 + new read-in/out; scratch: all weights from a random init), hidden 64 x 2 "
        "layers, MtM only. Masked scores on the unseen animal's test split; decoders from the adapted model's "
        "latents, nested 4-fold CV over the animal's trials. Per-seed values: `benchmarks/results_modality_seeds.csv`.",
        "",
        table(summ),
        "Verdict rule: A is better than B when mean(A) - mean(B) exceeds the larger seed sd of the two.",
        "",
        *[f"- {v}" for v in verdicts.values()],
        "",
        *[f"{line}\n" for line in overall(summ)],
        "",
        f"Command (2 shared CPU cores, {runtime_s / 60:.0f} min): `{command}`",
        END,
    ])
    text = results.read_text() if results.exists() else "# nfm benchmark results\n\n"
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + section + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    results.write_text(text)


def overall(summ: dict) -> list[str]:
    """The honest answer in a few sentences, derived from the table with the verdict rule, plus the limits of
    the design (true whatever the numbers)."""
    out = []
    for target in TARGETS:
        metrics = [f"{t}:{k}" for t, k, _ in METRICS[target] + DECODING]
        words = [verdict(summ, target, m).split(";")[0].replace("both ", "").replace(" own", "") for m in metrics]
        n_better, n_worse = words.count("better than"), words.count("worse than")
        name = "spiking" if target == "spikes" else "2-photon"
        if "(1 seed" in " ".join(words):
            out.append(f"Unseen {name} animal: one seed, no claim.")
            continue
        answer = ("yes" if n_better and not n_worse else "no" if not n_better else "mixed")
        m0 = metrics[0]
        base = summ.get((target, "own", "co_smoothing:" + ("smoothing/bps" if target == "spikes" else "ridge/r2")))
        best = max(summ[(target, c, m0)][0] for c in CONDITIONS)
        line = (f"**Unseen {name} animal: {answer}.** Mixed pretraining beats own-modality pretraining on {n_better} "
                f"of {len(metrics)} metrics, is worse on {n_worse}, and within the seed spread on the rest.")
        if base is not None:
            line += (f" Masked activity: the best adapted model ({best:.3f}) is "
                     f"{'below' if best < base[0] else 'above'} the data baseline ({base[0]:.3f}) at this budget.")
        out.append(line)
    out.append("Limits: one synthetic world (one world seed), one unseen animal per modality, seeds vary "
               "initialisation and data order only; tiny models and short runs (one to two CPU minutes per base); the "
               "mixed base sees more animals (8 vs 4) for the same number of steps, which is the premise of "
               "mixing but not a control for diversity vs modality. The verdict rule is a spread rule, not a "
               "significance test.")
    return out


def verdict_lines(summ: dict) -> dict[str, str]:
    out = {}
    for target in TARGETS:
        for task, key, label in METRICS[target] + DECODING:
            out[f"{target}:{task}"] = f"unseen {target} animal, {label}: {verdict(summ, target, f'{task}:{key}')}"
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny world, few steps, 1 seed (a smoke run)")
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--out_dir", default="outputs/bench_modality")
    p.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md and the per-seed CSV")
    p.add_argument("--results_md", default=str(RESULTS), help="the RESULTS.md to update (with --write)")
    p.add_argument("--seed_csv", default=str(SEED_CSV), help="the per-seed CSV (with --write)")
    p.add_argument("--from_summary", default=None,
                   help="write the report (with --write) from the summary.json of an earlier run instead of running")
    args = p.parse_args(argv)
    if args.from_summary:
        saved = json.loads(Path(args.from_summary).read_text())
        summ = summarise(saved["rows"])
        print(table(summ))
        if args.write:
            write_results(summ, saved["rows"], saved.get("command", "python benchmarks/bench_modality.py --write"),
                          saved["runtime_s"], verdict_lines(summ), Path(args.results_md), Path(args.seed_csv))
        return 0
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(1)
    hf_logging.set_verbosity_error()
    cfg = QUICK if args.quick else FULL
    seeds = tuple(args.seeds) if args.seeds else cfg["seeds"]
    t0 = time.time()
    rows = run(Path(args.out_dir) / ("quick" if args.quick else "full"), cfg, seeds)
    summ = summarise(rows)
    verdicts = verdict_lines(summ)
    print(table(summ))
    for v in verdicts.values():
        print("-", v)
    runtime = time.time() - t0
    print(f"runtime {runtime:.0f} s")
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/bench_modality.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    (Path(args.out_dir) / ("summary_quick.json" if args.quick else "summary.json")).write_text(json.dumps(
        {"rows": rows, "verdicts": verdicts, "runtime_s": runtime, "command": command}, indent=1))
    if args.write:
        write_results(summ, rows, command, runtime, verdicts, Path(args.results_md), Path(args.seed_csv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
