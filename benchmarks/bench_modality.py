"""Does mixed-modality pretraining help?  Unseen-animal performance per modality after pretraining on its own
modality, the other modality, or both (issue 12; protocol fixed in issue 17).

World: :func:`nfm.data.sources.synthetic.make_two_modality_world` -- one latent population (VISp, LP, MOs;
grating direction, choice and running speed drive it) recorded as spikes in some animals and as 2-photon dF/F
in others.  Pretraining pools: ``pretrain_animals`` spiking / imaged animals; unseen animals: one of each (train
split for adaptation and for fitting decoders, test split for every score).  Sizes and steps: ``FULL`` / ``QUICK``.

Conditions, for each target modality M (the unseen animal is recorded with M):

* ``own``: base pretrained on the M animals;      * ``other``: base pretrained on the other modality's animals;
* ``both``: one base pretrained on both pools (``--dataset A B``, mixing weights 1:1);
* ``scratch``: no pretraining -- the same architecture trained from a random init on the unseen animal.

Equal compute: every base runs the same number of pretraining steps at the same batch size (the mixed base
therefore sees half as many batches of each modality); every adaptation runs the same number of steps.  The
three bases and the adaptations share the architecture (``MODEL``, MtM only: the generation objective does not
apply to 2-photon sessions).  Adaptation: LoRA (rank ``LORA_R``) + the new session's read-in/out
(``recipes/finetune_lora.py``); scratch: ``--mode scratch``.  Nothing is tuned on the test split: steps,
learning rates and sizes are fixed in this file.

One time grid per target: every arm reads the unseen animal at the animal's own grid (spikes: the dataset's
bins; 2-photon: its frame clock).  A spike base or the mixed base (whose primary dataset is its spike pool)
reads spike sessions at its spike bin size, which is the new spiking animal's; a 2-photon base has no spike
grid (:func:`nfm.adapters.spike_bin_size_of`), so the new spike session gets its own session grid, as the
non-primary datasets of a mixed model do (``predictor.bind``).  The bin size every row was scored at is
recorded in the per-seed CSV and the run asserts that all rows of one target share it, and that the data
baselines beside them (computed on that grid in the same evaluation call) agree across arms.

Metrics of the unseen animal (``recipes/evaluate.py`` tasks, test split): masked activity -- co-smoothing
bits/spike (spikes) or R2 (2-photon); decoding from the adapted model's latents of choice (accuracy), grating
direction (accuracy; the 2-photon rig's column ``direction`` mapped with the task option ``column_map``) and
running speed (per-bin R2), with the tasks' default ``decoder_protocol: train_to_eval``: each decoder is fitted
on the animal's train split (penalty by CV inside it) and scored on the test split, trials neither the decoder
nor the adaptation trained on.  Reference rows: the data baselines of the same tasks (spikes: NLB smoothing;
2-photon: same-frame ridge and PSTH; decoding from smoothed spikes / dF/F directly).

Verdicts: :mod:`nfm.evaluation.verdict` (paired by seed; A beats B only when better in every seed and by more
than the larger seed sd; fewer than ``MIN_SEEDS`` seeds: not measured).  The report is formatted from the
per-seed CSV it writes (numbers, comparisons, the command line and the machine).

    python benchmarks/bench_modality.py --write          # 3 seeds, writes the RESULTS.md section + per-seed CSV
    python benchmarks/bench_modality.py --quick          # a 1-seed smoke run (tests run it)
    python benchmarks/bench_modality.py --from_csv benchmarks/results_modality_seeds.csv --from_summary \
        outputs/bench_modality/summary.json --write     # re-write the section from a finished run's files
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from speedlib import cpu_name  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "RESULTS.md"
SEED_CSV = REPO / "benchmarks" / "results_modality_seeds.csv"
BEGIN, END = "<!-- modality:begin -->", "<!-- modality:end -->"
MODEL = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128}
LORA_R = 8
FULL = dict(pretrain_animals=4, trials=150, pretrain_steps=400, adapt_steps=150, batch=16, seeds=(0, 1, 2),
            decoder={})
QUICK = dict(pretrain_animals=2, trials=40, pretrain_steps=12, adapt_steps=6, batch=8, seeds=(0,),
             decoder={"n_splits": 2, "Cs": [1.0], "alphas": [1.0]})
CONDITIONS = ("own", "other", "both", "scratch")
TARGETS = ("spikes", "calcium")
FIELDS = ["seed", "target", "condition", "metric", "value", "bin_size"]
#: (task, metric key, label) of the table; the first is the masked-activity score of the target modality
METRICS = {
    "spikes": [("co_smoothing", "bps", "co-smoothing bits/spike")],
    "calcium": [("co_smoothing", "r2", "masked-ROI R2 (co-smoothing)")],
}
DECODING = [("choice", "latents/accuracy", "choice acc."), ("stimulus_direction", "latents/accuracy", "direction acc."),
            ("running_speed", "latents/r2", "running R2")]
#: the data baseline of each target's masked-activity metric, and the prefix of its decoding baselines
MASKED_BASELINE = {"spikes": "co_smoothing:smoothing/bps", "calcium": "co_smoothing:ridge/r2"}
DECODING_BASELINE = {"spikes": "spikes", "calcium": "activity"}
#: baselines must agree across the arms of one target (same data, same grid) to this tolerance
BASELINE_TOL = 1e-9


def _recipe(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "recipes" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def arm_name(target: str, cond: str) -> str:
    other = "calcium" if target == "spikes" else "spikes"
    return {"own": f"own ({target})", "other": f"other ({other})", "both": "both (mixed)",
            "scratch": "none (scratch)"}[cond]


def animal_name(target: str) -> str:
    return "spiking" if target == "spikes" else "2-photon"


def baseline_keys(target: str) -> list[str]:
    """The data-baseline metrics of one target, in table-column order (masked activity, then each decoder)."""
    act = DECODING_BASELINE[target]
    return [MASKED_BASELINE[target]] + [f"{t}:{act}/{k.split('/')[1]}" for t, k, _ in DECODING]


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
    """``recipes/finetune_lora.py`` on the unseen animal.  No ``--bin_size``: the recipe reads the new sessions
    at the base's spike bin size, or (a 2-photon base, or 2-photon data) at the dataset's own grid
    (:func:`nfm.adapters.new_sessions_spec`)."""
    from nfm.data.meta import DatasetMeta

    done = out / ("adapter_model.safetensors" if mode == "lora" else "model.safetensors")
    if done.is_file():
        return out
    sids = DatasetMeta.load(dataset).session_ids
    extra = ["--lora_r", str(LORA_R)] if mode == "lora" else []
    _recipe("finetune_lora").finetune([
        "--model", str(base), "--dataset", str(dataset), "--sessions", *sids, "--output_dir", str(out),
        "--mode", mode, "--max_steps", str(cfg["adapt_steps"]), "--seed", str(seed), *extra,
        "--per_device_train_batch_size", str(cfg["batch"]), "--skip_eval", "true", "--report_to", "none",
        "--save_steps", "100000", "--logging_steps", "50", "--dataloader_pin_memory", "false"])
    return out


def scored_bin_size(model, dataset: Path) -> float:
    """The bin size [s] the evaluation reads ``dataset`` at with ``model`` (the same ``predictor.bind`` as
    :func:`nfm.evaluation.runner.evaluate`)."""
    from nfm.data.meta import DatasetMeta
    from nfm.evaluation.predictor import as_predictor

    meta = DatasetMeta.load(dataset)
    return float(as_predictor(model).bind(meta, meta.session_ids).bin_size)


def score(model, dataset: Path, modality: str, cfg: dict) -> dict:
    """The table's metrics of one adapted model on the unseen animal's test split, plus the data baselines of
    the same evaluation (hence of the same grid).  Decoders: the tasks' default protocol (train_to_eval)."""
    from nfm.evaluation.runner import evaluate

    dec = dict(cfg["decoder"])
    over: dict[str, dict] = {t: ({"decoder": {k: v for k, v in dec.items()
                                              if k != ("Cs" if t == "running_speed" else "alphas")}} if dec else {})
                             for t, _, _ in DECODING}
    over["stimulus_direction"]["modality"] = "any"  # the spiking animals saw the same gratings
    if modality == "calcium":
        over["stimulus_direction"]["column_map"] = {"stimulus_direction": "direction"}
    res = evaluate(model, dataset, tasks=["co_smoothing"] + [t for t, _, _ in DECODING], split="test",
                   task_overrides=over)
    out = {}
    for task, key, _ in METRICS[modality] + DECODING:
        r = res[task]
        if "not_applicable" in r:
            raise RuntimeError(f"{task} not applicable on {dataset}: {r['not_applicable']}")
        if task != "co_smoothing" and r.get("decoder_protocol") != "train_to_eval":
            raise RuntimeError(f"{task} was scored with decoder_protocol {r['decoder_protocol']!r}")
        out[f"{task}:{key}"] = float(r[key])
    for key in baseline_keys(modality):
        task, metric = key.split(":")
        out[key] = float(res[task][metric])
    if modality == "calcium":
        out["co_smoothing:psth/r2"] = float(res["co_smoothing"]["psth/r2"])
    return out


def check_grids(rows: list[dict]) -> dict[str, float]:
    """Every row of one target modality was scored on one bin size, and its data baselines (computed on that
    grid) agree across arms and seeds; returns ``{target: bin_size}``."""
    sizes: dict[str, set] = {}
    for r in rows:
        if r.get("bin_size") in (None, ""):
            raise ValueError(f"row {r} has no bin_size: the per-seed CSV predates the one-grid protocol; rerun")
        sizes.setdefault(r["target"], set()).add(round(float(r["bin_size"]), 12))
    for target, s in sizes.items():
        assert len(s) == 1, f"the rows of target {target} were scored on different bin sizes {sorted(s)} s"
    for target in sizes:
        for key in baseline_keys(target) + (["co_smoothing:psth/r2"] if target == "calcium" else []):
            vals = [float(r["value"]) for r in rows if r["target"] == target and r["metric"] == key]
            if vals:
                assert max(vals) - min(vals) <= BASELINE_TOL, (
                    f"{target} {key}: the data baseline differs across arms ({min(vals)} .. {max(vals)}): not one grid")
    return {t: next(iter(s)) for t, s in sizes.items()}


def run(root: Path, cfg: dict, seeds) -> tuple[list[dict], dict]:
    """Train and score every arm; returns the per-seed rows and the stage timings [s]."""
    from nfm.data.meta import DatasetMeta
    from nfm.evaluation.predictor import load_model

    timings: dict[str, dict] = {"world": {}, "pretrain": {}, "adapt": {}, "score": {}}
    t0 = time.time()
    paths = build_world(root / "data", cfg)
    timings["world"]["all"] = time.time() - t0
    own_grid = {"spikes": DatasetMeta.load(paths["spk_new"]).bin_size,
                "calcium": DatasetMeta.load(paths["cal_new"]).bin_size}
    rows = []
    for seed in seeds:  # one set of bases and adaptations per seed
        bases = {}
        for name, data in (("spikes", [paths["spk_pre"]]), ("calcium", [paths["cal_pre"]]),
                           ("both", [paths["spk_pre"], paths["cal_pre"]])):
            t0 = time.time()
            bases[name] = pretrain(data, root / f"s{seed}" / f"base_{name}", seed, cfg)
            timings["pretrain"][f"s{seed}/{name}"] = time.time() - t0
        for target in TARGETS:
            other = "calcium" if target == "spikes" else "spikes"
            new = paths["spk_new" if target == "spikes" else "cal_new"]
            for cond in CONDITIONS:
                base = bases[{"own": target, "other": other, "both": "both", "scratch": target}[cond]]
                out = root / f"s{seed}" / f"{target}_{cond}"
                t0 = time.time()
                adapt(base, new, out, "scratch" if cond == "scratch" else "lora", seed, cfg)
                t1 = time.time()
                model = load_model(str(out)) if cond == "scratch" else load_model(str(base), adapter=str(out))
                size = scored_bin_size(model, new)
                assert abs(size - own_grid[target]) <= 1e-12, (
                    f"{target} {cond}: scored at {size} s bins, not the unseen animal's own {own_grid[target]} s")
                metrics = score(model, new, target, cfg)
                timings["adapt"][f"s{seed}/{target}_{cond}"] = t1 - t0
                timings["score"][f"s{seed}/{target}_{cond}"] = time.time() - t1
                for k, v in metrics.items():
                    rows.append({"seed": seed, "target": target, "condition": cond, "metric": k, "value": v,
                                 "bin_size": size})
                print(f"seed {seed} {target:7s} {cond:7s} [{size * 1e3:g} ms bins] " + ", ".join(
                    f"{k.split(':')[1]} {v:.3f}" for k, v in metrics.items() if "latents" in k or k.endswith(
                        (":bps", ":r2"))) + f"  (adapt {t1 - t0:.0f} s, score {time.time() - t1:.0f} s)", flush=True)
            check_grids([r for r in rows if r["target"] == target])  # fail early, not after the last seed
    check_grids(rows)
    return rows, timings


# --------------------------------------------------------------------------- report
def read_rows(path: Path) -> list[dict]:
    """The per-seed CSV as rows (seed int, value and bin_size float)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [{**r, "seed": int(r["seed"]), "value": float(r["value"]),
             "bin_size": float(r["bin_size"]) if r.get("bin_size") not in (None, "") else None} for r in rows]


def by_seed(rows: list[dict], target: str, cond: str, metric: str) -> dict[int, float]:
    return {int(r["seed"]): float(r["value"]) for r in rows
            if r["target"] == target and r["condition"] == cond and r["metric"] == metric}


def summarise(rows: list[dict]) -> dict:
    """{(target, condition, metric): (mean, sd, n)} over seeds (sd with ddof=1; 0 for one seed)."""
    acc: dict[tuple, list[float]] = {}
    for r in rows:
        acc.setdefault((r["target"], r["condition"], r["metric"]), []).append(float(r["value"]))
    return {k: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, len(v)) for k, v in acc.items()}


def comparisons(rows: list[dict]) -> dict[str, dict[str, list]]:
    """By target: the claim's comparisons (``mixed``: both vs own, and ``mixed_lost``: own vs both, per metric),
    ``pretraining`` (own vs scratch, other vs scratch, per metric) and ``baseline`` (own and both vs the data
    baseline of the masked-activity metric, paired by seed), all by :func:`nfm.evaluation.verdict.compare`."""
    from nfm.evaluation.verdict import compare

    out = {}
    for target in TARGETS:
        cols = METRICS[target] + DECODING
        c = {"mixed": [], "mixed_lost": [], "pretraining": [], "baseline": []}
        for task, key, label in cols:
            m = f"{task}:{key}"
            arm = {cond: by_seed(rows, target, cond, m) for cond in CONDITIONS}
            c["mixed"].append(compare(arm["both"], arm["own"], a_name=arm_name(target, "both"),
                                      b_name=arm_name(target, "own"), metric=label))
            c["mixed_lost"].append(compare(arm["own"], arm["both"], a_name=arm_name(target, "own"),
                                           b_name=arm_name(target, "both"), metric=label))
            for cond in ("own", "other"):
                c["pretraining"].append(compare(arm[cond], arm["scratch"], a_name=arm_name(target, cond),
                                                b_name=arm_name(target, "scratch"), metric=label))
        task, key, label = METRICS[target][0]
        base = by_seed(rows, target, "own", MASKED_BASELINE[target])
        for cond in ("own", "both"):
            c["baseline"].append(compare(by_seed(rows, target, cond, f"{task}:{key}"), base,
                                         a_name=arm_name(target, cond), b_name="the data baseline", metric=label))
        out[target] = c
    return out


def table(summ: dict, grids: dict[str, float]) -> str:
    lines = []
    for target in TARGETS:
        cols = METRICS[target] + DECODING
        n = max((v[2] for k, v in summ.items() if k[0] == target), default=0)
        lines += [f"**Unseen {animal_name(target)} animal** (every row scored at {grids[target] * 1e3:g} ms bins, the "
                  f"animal's own grid; mean ± sd over {n} seed(s))", "",
                  "| pretrained on | " + " | ".join(lbl for _, _, lbl in cols) + " |",
                  "| --- |" + " --- |" * len(cols)]
        for cond in CONDITIONS:
            cells = []
            for task, key, _ in cols:
                m = summ.get((target, cond, f"{task}:{key}"))
                cells.append("" if m is None else f"{m[0]:.3f} ± {m[1]:.3f}")
            lines.append(f"| {arm_name(target, cond)} | " + " | ".join(cells) + " |")
        ref = [summ.get((target, "own", k)) for k in baseline_keys(target)]
        label = ("data baseline (smoothing GLM; decoders on smoothed spikes)" if target == "spikes" else
                 "data baseline (same-frame ridge; decoders on dF/F)")
        lines.append(f"| {label} | " + " | ".join("" if m is None else f"{m[0]:.3f}" for m in ref) + " |")
        if target == "calcium" and (target, "own", "co_smoothing:psth/r2") in summ:
            lines.append(f"| PSTH-by-direction baseline (masked R2) | "
                         f"{summ[(target, 'own', 'co_smoothing:psth/r2')][0]:.3f} |" + " |" * len(DECODING))
        lines.append("")
    return "\n".join(lines)


def overall(rows: list[dict], cfg: dict, timings: dict | None = None) -> list[str]:
    """The answer in a few sentences, every one from :mod:`nfm.evaluation.verdict` on the per-seed rows, plus the
    limits of the design (true whatever the numbers)."""
    from nfm.evaluation.verdict import claim_verdict

    comps = comparisons(rows)
    out = []
    for target in TARGETS:
        c = comps[target]
        verdict = claim_verdict(c["mixed"])
        won = sum(1 for x in c["mixed"] if x.beats)
        lost = sum(1 for x in c["mixed_lost"] if x.beats)
        undecided = sum(1 for x in c["mixed"] if x.beats is None)
        line = f"**Unseen {animal_name(target)} animal: the claim {verdict}.**"
        if undecided < len(c["mixed"]):
            line += (f" Mixed pretraining beats own-modality pretraining on {won} of {len(c['mixed'])} metrics; "
                     f"own-modality pretraining beats mixed on {lost}; no difference is claimed on the rest.")
        out.append(line)
        out.append("")
        out += [f"- {x.sentence()}" for x in c["mixed"]]
        out.append("")
    pooled = claim_verdict([x for t in TARGETS for x in comps[t]["mixed"]])
    out.append(f"**Over both modalities: the claim {pooled}.**")
    out.append("")
    out.append("Does pretraining of either kind help (adapted bases vs the same architecture from scratch):")
    out.append("")
    out += [f"- {x.sentence()}" for t in TARGETS for x in comps[t]["pretraining"]]
    out.append("")
    out.append("Masked activity against the data baseline of the same grid:")
    out.append("")
    out += [f"- {x.sentence()}" for t in TARGETS for x in comps[t]["baseline"]]
    out.append("")
    n = cfg["pretrain_animals"]
    per_base = ""
    if timings and timings.get("pretrain"):
        t = float(np.median(list(timings["pretrain"].values())))
        per_base = f" ({t / 60:.1f} CPU min per base)" if t >= 60 else f" ({t:.0f} CPU s per base)"
    out.append(f"Limits: one synthetic world (one world seed), one unseen animal per modality, seeds vary "
               f"initialisation and data order only; tiny models and short runs{per_base}; the mixed base sees "
               f"more animals ({2 * n} vs {n}) for the same number of steps, which is the premise of mixing but "
               "not a control for diversity vs modality. A 2-photon base reads the spiking animal at the animal's "
               "own bins, a bin duration its backbone never saw in pretraining (the continuous-time bin "
               "embedding); that is part of what the other-modality arm measures.")
    return out


def section(rows: list[dict], cfg: dict, command: str, runtime_s: float, machine: str,
            timings: dict | None = None) -> str:
    """The RESULTS.md section, formatted from the per-seed ``rows`` (as read back from the CSV) and ``cfg``."""
    from nfm.evaluation.verdict import MIN_SEEDS

    grids = check_grids(rows)
    summ = summarise(rows)
    seeds = sorted({int(r["seed"]) for r in rows})
    n = cfg["pretrain_animals"]
    model = f"hidden {MODEL['hidden_size']} x {MODEL['num_hidden_layers']} layers"
    stages = ""
    if timings:
        med = {k: float(np.median(list(v.values()))) for k, v in timings.items() if v}
        stages = (" Stage medians: " + ", ".join(f"{k} {med[k]:.0f} s" for k in ("pretrain", "adapt", "score")
                                                   if k in med) + " (per base / per arm).")
    return "\n".join([
        BEGIN,
        "## Mixed-modality pretraining (spikes + 2-photon): does it help an unseen animal?",
        "",
        "**Claim tested.** Pretraining one nfm model on spiking *and* 2-photon animals (shared backbone and "
        "region embeddings, Poisson read-out for spike sessions, Gaussian for 2-photon sessions, each dataset at "
        "its own clock) helps a new animal of either modality more than pretraining on its own modality alone.",
        "",
        f"Setup: `make_two_modality_world` (one latent population, VISp/LP/MOs; spiking animals and dF/F animals), "
        f"{n} pretraining animals per modality, one unseen animal per modality ({cfg['trials']} trials each). Equal "
        f"compute: every base {cfg['pretrain_steps']} steps x {cfg['batch']} trials (the mixed base: half its "
        f"batches per modality), every adaptation {cfg['adapt_steps']} steps (LoRA r {LORA_R} + new read-in/out; "
        f"scratch: all weights from a random init), {model}, MtM only. One grid per target: every arm reads the "
        f"unseen spiking animal at {grids['spikes'] * 1e3:g} ms bins and the 2-photon animal at its frame clock "
        f"({grids['calcium'] * 1e3:g} ms bins), the bin size of every row is in the CSV. Scores on the unseen "
        "animal's test split; decoders from the adapted model's latents, fitted on its train split (penalty by CV "
        "inside it) and scored on the test split (`decoder_protocol: train_to_eval`). Seeds "
        f"{', '.join(map(str, seeds))}. Per-seed values: `benchmarks/results_modality_seeds.csv`.",
        "",
        table(summ, grids),
        f"Verdict rule (`nfm.evaluation.verdict`): A beats B when A is better in every paired seed and the mean "
        f"difference exceeds the larger seed sd of the two; with fewer than {MIN_SEEDS} seeds a comparison is not "
        "measured. A claim holds when every comparison is won, holds partly when some are.",
        "",
        *overall(rows, cfg, timings),
        "",
        f"Machine: {machine}; wall time {runtime_s / 60:.1f} min.{stages} Command: `{command}`",
        END,
    ])


def write_results(rows: list[dict], cfg: dict, command: str, runtime_s: float, machine: str,
                  timings: dict | None = None, results: Path = RESULTS, seed_csv: Path = SEED_CSV) -> None:
    """Write the per-seed CSV, then the section (formatted from the CSV read back) between the markers of
    ``results`` (appended when absent)."""
    check_grids(rows)
    with open(seed_csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows({k: r[k] for k in FIELDS} for r in rows)
    text_section = section(read_rows(seed_csv), cfg, command, runtime_s, machine, timings)
    text = results.read_text() if results.exists() else "# nfm benchmark results\n\n"
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + text_section + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + text_section + "\n"
    results.write_text(text)


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
        rows, cfg = saved["rows"], saved.get("cfg", FULL)
        print(table(summarise(rows), check_grids(rows)))
        if args.write:
            write_results(rows, cfg, saved["command"], saved["runtime_s"], saved.get("machine", "?"),
                          saved.get("timings"), Path(args.results_md), Path(args.seed_csv))
        return 0
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(1)
    hf_logging.set_verbosity_error()
    cfg = dict(QUICK if args.quick else FULL)
    if args.seeds:
        cfg["seeds"] = tuple(args.seeds)
    t0 = time.time()
    rows, timings = run(Path(args.out_dir) / ("quick" if args.quick else "full"), cfg, cfg["seeds"])
    runtime = time.time() - t0
    machine = (f"{cpu_name()}, {os.cpu_count()} cores (shared with other jobs), {torch.get_num_threads()} torch "
               f"thread(s), torch {torch.__version__}")
    print(table(summarise(rows), check_grids(rows)))
    for line in overall(rows, cfg, timings):
        print(line)
    print(f"runtime {runtime:.0f} s")
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/bench_modality.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    (Path(args.out_dir) / ("summary_quick.json" if args.quick else "summary.json")).write_text(json.dumps(
        {"rows": rows, "cfg": cfg, "runtime_s": runtime, "command": command, "machine": machine,
         "timings": timings}, indent=1))
    if args.write:
        write_results(rows, cfg, command, runtime, machine, timings, Path(args.results_md), Path(args.seed_csv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
