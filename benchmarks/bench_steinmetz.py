"""Real multi-animal Neuropixels (Steinmetz et al. 2019): leave one mouse out.

Issue 20, goals 1 and 2 on real data. ``../shared/data/steinmetz_2019`` holds 11 sessions of 3 mice (read in place
through ``--source trials``, 20 ms bins, 0-0.4 s after stimulus onset, the dataset's own random 70/10/20 trial
split per session). For every held-out mouse M and seed:

* ``2 mice + LoRA``: MtM pretrained on the sessions of the two other mice, then LoRA (``recipes/finetune_lora.py
  --mode lora``: the new sessions' read-in/out + rank-8 adapters) on M's training trials;
* ``1 mouse + LoRA`` (``--arms one``): the same with a base pretrained on one other mouse only, at the same total
  steps (every other mouse in turn as that one mouse; the row averages the two);
* ``scratch``: the same model trained on M's training trials alone (``--mode scratch``) for the adaptation steps;

all scored on M's **test** trials: co-smoothing (4 folds of held-out neurons; NLB smoothing + Poisson GLM, its
kernel width and penalty by CV on M's training trials, held-in units above 64 on their principal components),
forward prediction, intra- and inter-region bits/spike (against the null model: each unit's training-trial mean
rate). The model's training data never include a test trial; the baselines are fitted on training trials only.

Run (CSV ``benchmarks/results/steinmetz_lomo.csv``, section "Steinmetz 2019" of RESULTS.md)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_steinmetz.py
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_steinmetz.py --report_only
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import claimlib as cl  # noqa: E402

DATA = cl.REPO.parent / "shared" / "data" / "steinmetz_2019"
TASKS = ("co_smoothing", "forward_prediction", "intra_region", "inter_region")
COLS = {"co-bps": ("co_smoothing", "bps"), "smoothing co-bps": ("co_smoothing", "smoothing/bps"),
        "fp-bps": ("forward_prediction", "bps"), "intra-bps": ("intra_region", "bps"),
        "inter-bps": ("inter_region", "bps")}
#: intra/inter region against the null model only (their smoothing fits: one CV grid per region and session)
OVERRIDES = {"intra_region": {"baselines": ["null"]}, "inter_region": {"baselines": ["null"]}}
CSV = "steinmetz_lomo.csv"
ARMS = {"two": "2 mice + LoRA", "one": "1 mouse + LoRA", "scratch": "scratch"}
MARGIN = 0.05


def dataset(work: Path, bin_size: float) -> Path:
    from nfm.data.prepare import prepare

    files = sorted(DATA.glob("session*.npz"))
    if not files:
        raise FileNotFoundError(f"{DATA}: no session*.npz (the shared real-data folder)")
    out = work / f"steinmetz_{int(round(bin_size * 1000))}ms"
    with cl._Lock(out):
        if not (out / "nfm_meta.json").is_file():
            prepare("trials", out, inputs=[str(f) for f in files], bin_size=bin_size, heldout_subjects=[],
                    progress=False)
    return out


def sessions_by_mouse(data: Path) -> dict[str, list[str]]:
    meta = json.loads((data / "nfm_meta.json").read_text())
    out: dict[str, list[str]] = {}
    for sid, s in sorted(meta["sessions"].items()):
        out.setdefault(s["subject_id"], []).append(sid)
    return out


def base(args, data, mice: list[str], seed: int) -> Path:
    """MtM pretrained on the sessions of ``mice`` (the default config's size; ``--model_overrides`` on top).
    With ``--base_seed`` every adaptation seed starts from the one base of that seed."""
    by = sessions_by_mouse(data)
    sessions = [s for m in mice for s in by[m]]
    seed = seed if args.base_seed is None else args.base_seed
    return cl.pretrain(data, args.work / "steinmetz_runs" / f"base_{'+'.join(mice)}_{_tag(args)}_s{seed}",
                       seed=seed, steps=args.pretrain_steps, overrides=dict(args.model_overrides),
                       lr=args.pretrain_lr,
                       extra=["--objectives", "mtm", "--mask_modes", "all", "--sessions", *sessions])


def _tag(args) -> str:
    """Run folders differ by recipe: steps, learning rates and overrides (several recipes share --work)."""
    over = "".join(c for c in json.dumps(args.model_overrides, sort_keys=True) if c.isalnum()) or "default"
    return f"p{args.pretrain_steps}_lr{args.pretrain_lr:g}_{over}"


def run(args) -> None:
    data = dataset(args.work, args.bin_size)
    by = sessions_by_mouse(data)
    path = args.csv_dir / CSV
    _write_record(args)  # first: an interrupted run still has its recipe on record for --report_only
    for mouse in args.mice:
        others = [m for m in by if m != mouse]
        for seed in args.seeds:
            todo = []  # (arm, detail, model dir, adapter)
            if "two" in args.arms:
                b = base(args, data, others, seed)
                todo.append(("two", "+".join(others), b, cl.adapt(
                    b, data, by[mouse], b.parent / f"lora_{mouse}_from_{b.name}_a{args.adapt_steps}_s{seed}",
                    mode="lora", seed=seed, steps=args.adapt_steps, lr=args.adapt_lr)))
            if "one" in args.arms:
                for other in others:
                    b = base(args, data, [other], seed)
                    todo.append(("one", other, b, cl.adapt(
                        b, data, by[mouse], b.parent / f"lora_{mouse}_from_{b.name}_a{args.adapt_steps}_s{seed}",
                        mode="lora", seed=seed, steps=args.adapt_steps, lr=args.adapt_lr)))
            if "scratch" in args.arms:
                b = base(args, data, others, seed)  # only its config (size, masks) is used: weights are re-drawn
                todo.append(("scratch", "-", cl.adapt(b, data, by[mouse],
                                                       b.parent / f"scratch_{mouse}_{_tag(args)}_a{args.adapt_steps}_s{seed}",
                                                       mode="scratch", seed=seed, steps=args.adapt_steps,
                                                       lr=args.adapt_lr), None))
            for arm, detail, model, adapter in todo:
                recipe = f"{_tag(args)}_a{args.adapt_steps}"
                key = (recipe, mouse, arm, detail, seed)
                if key in _done(path):
                    continue
                res = cl.score(model, data, TASKS, sessions=by[mouse], adapter=adapter, overrides=OVERRIDES,
                               output=(adapter or model) / "eval_test_steinmetz.json")
                with cl._Lock(path):  # another process may have scored the same run meanwhile: one row each
                    table = _read(path)
                    table.rows = [r for r in table.rows
                                  if (r["recipe"], r["mouse"], r["arm"], r["base"], int(r["seed"])) != key]
                    table.add(recipe=recipe, mouse=mouse, arm=arm, base=detail, seed=seed,
                              **{c: cl.metric(res, *k) for c, k in COLS.items()})
                    table.write_csv(path)


def _write_record(args) -> None:
    from nfm.training.precision import cpu_name

    record = {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "commit": cl.git_commit(),
              "pretrain_steps": args.pretrain_steps, "adapt_steps": args.adapt_steps, "bin_size": args.bin_size,
              "pretrain_lr": args.pretrain_lr, "adapt_lr": args.adapt_lr, "base_seed": args.base_seed,
              "recipe": f"{_tag(args)}_a{args.adapt_steps}", "argv": " ".join(args.argv),
              "seeds": args.seeds, "model_overrides": args.model_overrides,
              "machine": f"{cpu_name()}, {cl.machine_line()}"}
    (args.csv_dir / "steinmetz_lomo.json").write_text(json.dumps(record, indent=1))


#: the one-session study (``--single_session``): (mask modes, steps, learning rate) trained on one session's
#: training trials and scored on its test trials: what a model needs to beat smoothing on this data at all
SINGLE = [("all", 400, 2e-3), ("neuron", 400, 2e-3), ("neuron", 400, 5e-4), ("neuron", 1200, 5e-4)]
SINGLE_CSV = "steinmetz_single_session.csv"


def single_session(args, sid: str) -> None:
    """MtM on one session alone for each of :data:`SINGLE` (seed 0: a diagnosis, not a claim), co-smoothing on
    its test trials against the null model and smoothing; rows in ``SINGLE_CSV``."""
    data = dataset(args.work, args.bin_size)
    path = args.csv_dir / SINGLE_CSV
    for modes, steps, lr in SINGLE:
        out = cl.pretrain(data, args.work / "steinmetz_single" / f"{sid}_{modes}_{steps}_lr{lr:g}", seed=0,
                          steps=steps, lr=lr, extra=["--objectives", "mtm", "--mask_modes", modes, "--sessions", sid])
        res = cl.score(out, data, ("co_smoothing",), sessions=[sid])
        with cl._Lock(path):
            table = (cl.read_table(path, "single", ["co-bps", "smoothing co-bps"],
                                   labels=("session", "mask modes")) if path.is_file()
                     else cl.Table("single", ["co-bps", "smoothing co-bps"]))
            table.rows = [r for r in table.rows if (r["session"], r["mask modes"], int(r["steps"]), float(r["lr"]))
                          != (sid, modes, steps, lr)]
            table.add(session=sid, **{"mask modes": modes}, steps=steps, lr=lr, seed=0,
                      **{"co-bps": cl.metric(res, "co_smoothing", "bps"),
                         "smoothing co-bps": cl.metric(res, "co_smoothing", "smoothing/bps")})
            table.write_csv(path)


def single_session_report(csv_dir: Path) -> list[str]:
    path = csv_dir / SINGLE_CSV
    if not path.is_file():
        return []
    rows = cl.read_table(path, "single", ["co-bps", "smoothing co-bps"], labels=("session", "mask modes")).rows
    lines = ["### One session alone: what the model needs on this data", "",
             "A diagnosis, not a claim (seed 0 only): MtM trained on one session's training trials alone (the demo "
             "model size, batch 8), co-smoothing on its test trials. Command: `OMP_NUM_THREADS=1 .venv/bin/python "
             "benchmarks/bench_steinmetz.py --single_session SESSION` (CSV `benchmarks/results/"
             f"{SINGLE_CSV}`).", "",
             "| session | mask modes | steps | learning rate | co-bps | smoothing co-bps | model - smoothing |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['session']} | {r['mask modes']} | {int(r['steps'])} | {r['lr']:g} | {r['co-bps']:.3f} | "
              f"{r['smoothing co-bps']:.3f} | {r['co-bps'] - r['smoothing co-bps']:+.3f} |" for r in rows]
    return lines + [""]


def _read(path: Path):
    return (cl.read_table(path, "steinmetz", list(COLS), labels=("recipe", "mouse", "arm", "base")) if path.is_file()
            else cl.Table("steinmetz", list(COLS)))


def _done(path: Path) -> set:
    return {(r["recipe"], r["mouse"], r["arm"], r["base"], int(r["seed"])) for r in _read(path).rows}


def _by_seed(table, column: str, **where) -> dict:
    """seed -> value (the mean over the rows of a seed: the ``one`` arm has one row per other mouse)."""
    vals: dict[int, list[float]] = {}
    for r in table.rows:
        if all(r[k] == v for k, v in where.items()) and math.isfinite(float(r[column])):
            vals.setdefault(int(r["seed"]), []).append(float(r[column]))
    return {s: sum(v) / len(v) for s, v in vals.items()}


def _mean_sd(d: dict) -> str:
    import numpy as np

    a = np.asarray(list(d.values()), dtype=float)
    if not a.size:
        return "—"
    return f"{a.mean():.3f} ± {a.std(ddof=1):.3f}" if a.size > 1 else f"{a.mean():.3f}"


def report(args) -> str:
    """The section: the recipe of the last run (its run record) with its verdicts; earlier recipes of the CSV as
    "tried" rows (their numbers, no verdict)."""
    from nfm.evaluation.verdict import claim_verdict, compare

    full = _read(args.csv_dir / CSV)
    rec = json.loads((args.csv_dir / "steinmetz_lomo.json").read_text())
    table = cl.where(full, recipe=rec["recipe"])
    mice = list(dict.fromkeys(r["mouse"] for r in table.rows))
    arms = [a for a in ARMS if any(r["arm"] == a for r in table.rows)]
    base_seeds = (f"one base per held-out mouse (seed {rec['base_seed']}) shared by the adaptation seeds"
                  if rec.get("base_seed") is not None else "a base per seed")
    lines = ["## Steinmetz 2019: leave one mouse out (real multi-region Neuropixels)", "",
             f"Issue 20, goals 1-2 on real data. 11 sessions of 3 mice (`../shared/data/steinmetz_2019`, read in "
             f"place), {rec['bin_size'] * 1000:g} ms bins, 0-0.4 s after stimulus onset. For each held-out mouse: "
             f"MtM pretrained {rec['pretrain_steps']} steps (learning rate {rec['pretrain_lr']:g}) on the other mice "
             f"(the demo model size; config overrides `{json.dumps(rec['model_overrides'])}`; {base_seeds}), LoRA "
             f"{rec['adapt_steps']} steps on the held-out mouse's training trials; scratch = the same model trained "
             f"{rec['adapt_steps']} steps on those trials alone. Scored on the held-out mouse's test trials; "
             "bits/spike pooled over its neurons and sessions (NLB); smoothing = NLB smoothing + Poisson GLM "
             "CV-tuned on its training trials; intra/inter-region against the null model (their smoothing fits were "
             "not run: one CV grid per region and session). "
             f"mean ± sd over seeds {', '.join(map(str, rec['seeds']))}.", "",
             "| held-out mouse | arm | " + " | ".join(COLS) + " | seeds |", "| --- | --- |" + " --- |" * (len(COLS) + 1)]
    for m in mice:
        for a in arms:
            sub = {c: _by_seed(table, c, mouse=m, arm=a) for c in COLS}
            if sub["co-bps"]:
                lines.append(f"| {m} | {ARMS[a]} | " + " | ".join(_mean_sd(sub[c]) for c in COLS)
                             + f" | {len(sub['co-bps'])} |")
    comps, side = [], []
    for m in mice:
        two = {c: _by_seed(table, c, mouse=m, arm="two") for c in COLS}
        if two["co-bps"]:
            comps.append(compare(two["co-bps"], two["smoothing co-bps"], a_name="2 mice + LoRA", b_name="smoothing",
                                 metric=f"co-bps, held-out {m}", margin=MARGIN))
            for c in ("co-bps", "fp-bps", "intra-bps", "inter-bps"):
                side.append(compare(two[c], 0.0, a_name="2 mice + LoRA", b_name="the null model",
                                    metric=f"{c}, held-out {m}"))
        sc = _by_seed(table, "co-bps", mouse=m, arm="scratch")
        if two["co-bps"] and sc:
            comps.append(compare(two["co-bps"], sc, a_name="2 mice + LoRA", b_name="scratch",
                                 metric=f"co-bps, held-out {m}", margin=MARGIN))
        one = _by_seed(table, "co-bps", mouse=m, arm="one")
        if two["co-bps"] and one:
            comps.append(compare(two["co-bps"], one, a_name="2 mice + LoRA", b_name="1 mouse + LoRA",
                                 metric=f"co-bps, held-out {m}"))
    lines += ["", cl.RULE, "", "Comparisons (goal 1: beat smoothing by "
              f"{MARGIN:g} bits/spike; goal 2: pretrained beats scratch by {MARGIN:g}, 2 mice beat 1):", ""]
    lines += [f"- {c.sentence()}" for c in comps]
    lines += ["", "Above the null model (goal 1's floor; not part of the verdict):", ""]
    lines += [f"- {c.sentence()}" for c in side]
    lines += ["", f"**Verdict:** **{claim_verdict(comps)}**" if comps else "**Verdict:** not measured", ""]
    lines += single_session_report(args.csv_dir)
    tried = [r for r in full.rows if r["recipe"] != rec["recipe"]]
    if tried:
        lines += ["Other recipes in the CSV (tried before this one; numbers only, no verdict):", "",
                  "| recipe | held-out mouse | arm | seed | co-bps | smoothing co-bps | fp-bps |", "|" + " --- |" * 7]
        lines += [f"| `{r['recipe']}` | {r['mouse']} | {ARMS[r['arm']]} | {r['seed']} | {r['co-bps']:.3f} | "
                  f"{r['smoothing co-bps']:.3f} | {r['fp-bps']:.3f} |" for r in tried]
        lines.append("")
    lines += [f"Command: `OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_steinmetz.py {rec.get('argv', '')}` · "
              f"CSV: `benchmarks/results/{CSV}` · run record: `benchmarks/results/steinmetz_lomo.json` (dated "
              f"{rec['date']}, nfm {rec['commit']}) · {rec['machine']}"]
    return "\n".join(lines)


def _command(argv) -> list[str]:
    """The recipe's command-line arguments as the section quotes them, JSON quoted; left out: ``--mice`` (which
    animals a process ran), ``--no_report`` and the ``--work`` / ``--csv_dir`` folders."""
    out, skip = [], False
    for a in argv:
        if a.startswith("--"):
            skip = a in ("--mice", "--no_report", "--work", "--csv_dir")
        if not skip:
            out.append(a if a.replace(".", "").replace("-", "").replace("_", "").isalnum() else f"'{a}'")
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mice", nargs="+", default=None, help="held-out mice (default: every mouse in turn)")
    p.add_argument("--arms", nargs="+", default=["two", "scratch"], choices=list(ARMS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--pretrain_steps", type=int, default=1500)
    p.add_argument("--adapt_steps", type=int, default=300)
    p.add_argument("--pretrain_lr", type=float, default=2e-3)
    p.add_argument("--adapt_lr", type=float, default=None, help="default: claimlib's (LoRA 3e-3, scratch 2e-3)")
    p.add_argument("--base_seed", type=int, default=None,
                   help="one base per held-out mouse, of this seed, for every adaptation seed (compute)")
    p.add_argument("--bin_size", type=float, default=0.02, help="seconds (a whole multiple of the files' 10 ms)")
    p.add_argument("--model_overrides", type=json.loads, default={},
                   help="JSON config overrides on top of claimlib's demo size (e.g. the mask mix)")
    p.add_argument("--work", type=Path, default=cl.REPO / "outputs" / "claims")
    p.add_argument("--csv_dir", type=Path, default=cl.REPO / "benchmarks" / "results")
    p.add_argument("--single_session", default=None, metavar="SESSION",
                   help="the one-session study (SINGLE) on this session instead of leave-one-mouse-out")
    p.add_argument("--report_only", action="store_true")
    p.add_argument("--no_report", action="store_true")
    args = p.parse_args(argv)
    args.argv = _command(sys.argv[1:] if argv is None else argv)
    if args.single_session:
        single_session(args, args.single_session)
    elif not args.report_only:
        if args.mice is None:
            args.mice = list(sessions_by_mouse(dataset(args.work, args.bin_size)))
        run(args)
    if not args.no_report:
        cl.write_section("steinmetz", report(args))


if __name__ == "__main__":
    main()
