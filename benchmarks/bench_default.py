"""Which configuration should `make demo` train? Candidates at the demo's budget, chosen on validation.

Issue 20, goal 1: the default model must beat NLB smoothing + Poisson GLM on co-smoothing by ``MARGIN`` bits/spike in
every seed, at the demo's CPU budget or less.  Every candidate here trains with the demo's size, batch, learning
rate and steps on the demo's world (5 animals x 2 sessions x 120 trials, animal 4 held out), through
``recipes/pretrain.py``; each is scored on the **validation** split of the trained sessions (the choice) and on
the **test** split (the claim).  The chosen default is the candidate with the best mean validation co-bps among
those whose validation forward-prediction, intra- and inter-region bits/spike are above the null model (> 0) in
every seed: a default that wins co-smoothing by forgetting the other masks is not one.

Run (CSV ``benchmarks/results/default_config.csv``, section "The default configuration" of RESULTS.md)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_default.py --candidates all
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_default.py --report_only

Several processes may share ``--work`` (lock files): e.g. one per candidate list on a 2-core machine.
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

#: name -> (label, objectives, mask modes, config overrides)
CANDIDATES = {
    "joint_all": ("joint, MtM's four masks uniform (v0.2 default)", ["mtm", "generation"], ["all"], {}),
    "joint_neuron3": ("joint, four masks, neuron x3 (neuron half of the batches)", ["mtm", "generation"], ["all"],
                      {"mask_mode_weights": {"neuron": 3.0}}),
    "joint_neuron6": ("joint, four masks, neuron x6 (neuron 2/3 of the batches)", ["mtm", "generation"], ["all"],
                      {"mask_mode_weights": {"neuron": 6.0}}),
    "joint_neuron": ("joint, neuron mask only", ["mtm", "generation"], ["neuron"], {}),
    # the masked Poisson NLL (~0.25 nats per entry) is ~10x smaller than the generation loss (~2.4 nats per
    # token): with mtm_weight 1 the shared backbone's gradient is mostly generation's
    "joint_neuron3_mtm5": ("joint, four masks, neuron x3, mtm_weight 5", ["mtm", "generation"], ["all"],
                           {"mask_mode_weights": {"neuron": 3.0}, "mtm_weight": 5.0}),
    "joint_neuron6_mtm5": ("joint, four masks, neuron x6, mtm_weight 5", ["mtm", "generation"], ["all"],
                           {"mask_mode_weights": {"neuron": 6.0}, "mtm_weight": 5.0}),
    "joint_all_mtm5": ("joint, four masks uniform, mtm_weight 5", ["mtm", "generation"], ["all"],
                       {"mtm_weight": 5.0}),
    "mtm_neuron3": ("MtM only, four masks, neuron x3", ["mtm"], ["all"], {"mask_mode_weights": {"neuron": 3.0}}),
    "joint_neuron3_noprompt": ("joint, four masks, neuron x3, no prompt token", ["mtm", "generation"], ["all"],
                               {"mask_mode_weights": {"neuron": 3.0}, "use_prompt_token": False}),
}
TASKS = ("co_smoothing", "forward_prediction", "intra_region", "inter_region")
COLS = {"co-bps": ("co_smoothing", "bps"), "smoothing co-bps": ("co_smoothing", "smoothing/bps"),
        "fp-bps": ("forward_prediction", "bps"), "intra-bps": ("intra_region", "bps"),
        "inter-bps": ("inter_region", "bps")}
#: intra/inter region against the null model only (their smoothing fits are not part of this choice)
OVERRIDES = {"intra_region": {"baselines": ["null"]}, "inter_region": {"baselines": ["null"]}}
MARGIN = 0.05
CSV = "default_config.csv"


def world(work: Path) -> Path:
    """The demo's world (``recipes/configs/synthetic.yaml``: 5 animals x 2 sessions x 120 trials, seed 0)."""
    return cl.synthetic(work / "synthetic", n_animals=5, sessions_per_animal=2, n_trials=120)


def train(work: Path, name: str, seed: int, steps: int) -> Path:
    _, objectives, modes, over = CANDIDATES[name]
    return cl.pretrain(world(work), work / "default_runs" / f"{name}_s{seed}", seed=seed, steps=steps,
                       overrides=over, extra=["--objectives", *objectives, "--mask_modes", *modes])


def _cpu() -> str:
    from nfm.training.precision import cpu_name

    return cpu_name()


def _read(path: Path):
    return (cl.read_table(path, "default", list(COLS), labels=("candidate", "split")) if path.is_file()
            else cl.Table("default", list(COLS)))


def _mean_sd(values) -> str:
    import numpy as np

    a = np.asarray(values, dtype=float)
    return f"{a.mean():.3f} ± {a.std(ddof=1):.3f}" if a.size > 1 else f"{a.mean():.3f}"


def run(args) -> None:
    rows_path = args.csv_dir / CSV
    table = _read(rows_path)
    done = {(r["candidate"], r["split"], int(r["seed"])) for r in table.rows}
    for name in args.candidates:
        for seed in args.seeds:
            out = train(args.work, name, seed, args.steps)
            for split in ("validation", "test"):
                if (name, split, seed) in done:
                    continue
                res = cl.score(out, world(args.work), TASKS, split=split, overrides=OVERRIDES)
                with cl._Lock(rows_path):  # other processes may have added rows meanwhile
                    table = _read(rows_path)
                    table.rows = [r for r in table.rows
                                  if (r["candidate"], r["split"], int(r["seed"])) != (name, split, seed)]
                    table.add(candidate=name, split=split, seed=seed,
                              **{c: cl.metric(res, *k) for c, k in COLS.items()})
                    table.write_csv(rows_path)
                done.add((name, split, seed))
    precisions = sorted({("bf16" if json.loads(f.read_text()).get("bf16") else "fp32")
                         for f in (args.work / "default_runs").glob("*_s*/training_args.json")})
    record = {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "commit": cl.git_commit(),
              "steps": args.steps, "seeds": args.seeds, "precision": precisions,
              "machine": f"{_cpu()}, {cl.machine_line()}"}
    (args.csv_dir / "default_config.json").write_text(json.dumps(record, indent=1))


def _by_seed(table, column: str, **where) -> dict:
    return {int(r["seed"]): float(r[column]) for r in table.rows
            if all(r[k] == v for k, v in where.items()) and math.isfinite(float(r[column]))}


def choose(table) -> tuple[str | None, dict]:
    """The default (module docstring) and why each candidate was or was not eligible."""
    from nfm.evaluation.verdict import choose_on_validation

    names = list(dict.fromkeys(r["candidate"] for r in table.rows))
    eligible, why = {}, {}
    for n in names:
        val = {c: _by_seed(table, c, candidate=n, split="validation") for c in ("fp-bps", "intra-bps", "inter-bps")}
        below = [f"{c} {v:+.3f} (seed {s})" for c, d in val.items() for s, v in d.items() if not v > 0]
        co = _by_seed(table, "co-bps", candidate=n, split="validation")
        if len(co) < 3:
            why[n] = f"{len(co)} validation seed(s): not eligible (3 needed)"
        elif below:
            why[n] = "below the null model on validation: " + ", ".join(below)
        else:
            eligible[n] = co
            why[n] = "eligible"
    return (choose_on_validation(eligible) if eligible else None), why


def report(args) -> str:
    from nfm.evaluation.verdict import claim_verdict, compare

    table = _read(args.csv_dir / CSV)
    record = json.loads((args.csv_dir / "default_config.json").read_text())
    chosen, why = choose(table)
    names = list(dict.fromkeys(r["candidate"] for r in table.rows))
    seeds = sorted({int(r["seed"]) for r in table.rows})
    lines = ["## The default configuration: candidates at the demo's budget, chosen on validation", "",
             f"Issue 20, goal 1. Every candidate trains like `make demo` (hidden 128, 2 layers, batch 8, learning "
             f"rate 2e-3, {record['steps']} steps, the demo's world with animal 4 held out) and is scored on the "
             "validation and test splits of the trained sessions (bits/spike pooled over neurons and sessions, "
             "NLB; co-smoothing over 4 folds of held-out neurons against the smoothing baseline CV-tuned on the "
             "train split). The default is the candidate with the best mean **validation** co-bps among those "
             "whose validation forward-prediction, intra- and inter-region bits/spike are above the null model in "
             "every seed, with 3 seeds (seed = model init and data order); the test split is read only for the "
             "verdict. The search ran in two stages: every candidate on seed 0, then seeds 1 and 2 for the "
             "candidates with the best seed-0 validation co-bps (a candidate with one seed is screened only). "
             "Every candidate costs the same CPU: the demo's steps, batch and size (the mask mix and the loss "
             "weight change no step's cost); trained at the recipe's `--precision auto`, which chose "
             f"{' / '.join(record.get('precision') or ['(not recorded)'])} on this CPU. mean ± sd over the seeds of each row ({', '.join(map(str, seeds))} in "
             "all).", ""]
    for split in ("validation", "test"):
        sub = cl.where(table, split=split)
        lines += [f"**{split}**", "", "| candidate | " + " | ".join(COLS) + " | seeds |",
                  "| --- |" + " --- |" * (len(COLS) + 1)]
        for n in names:
            cells = []
            for c in COLS:
                d = _by_seed(sub, c, candidate=n)
                cells.append(_mean_sd(list(d.values())) if d else "—")
            lines.append(f"| {CANDIDATES[n][0] if n in CANDIDATES else n} | " + " | ".join(cells)
                         + f" | {len(_by_seed(sub, 'co-bps', candidate=n))} |")
        lines.append("")
    lines += ["Eligibility on validation:", ""]
    lines += [f"- {CANDIDATES.get(n, (n,))[0]}: {why[n]}" for n in names]
    lines.append("")
    if chosen is None:
        lines += ["**Chosen:** none (no candidate eligible with 3 seeds).", ""]
    else:
        test = cl.where(table, split="test")
        c1 = compare(_by_seed(test, "co-bps", candidate=chosen), _by_seed(test, "smoothing co-bps", candidate=chosen),
                     a_name=CANDIDATES[chosen][0], b_name="smoothing", metric="co-bps, test", margin=MARGIN)
        comps = [c1]
        if chosen != "joint_all" and _by_seed(test, "co-bps", candidate="joint_all"):
            comps.append(compare(_by_seed(test, "co-bps", candidate=chosen),
                                 _by_seed(test, "co-bps", candidate="joint_all"), a_name=CANDIDATES[chosen][0],
                                 b_name=CANDIDATES["joint_all"][0], metric="co-bps, test"))
        lines += [f"**Chosen:** {CANDIDATES[chosen][0]} (`{chosen}`).", "", cl.RULE, "",
                  "Comparisons (test split):", ""]
        lines += [f"- {c.sentence()}" for c in comps]
        lines += ["", f"**Verdict** (the chosen default beats smoothing by {MARGIN:g} bits/spike in every seed): "
                      f"**{claim_verdict(comps[:1])}**", ""]
    lines += [f"Command: `OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_default.py --candidates "
              f"{' '.join(names)}` · CSV: `benchmarks/results/{CSV}` · run record: "
              f"`benchmarks/results/default_config.json` (dated {record['date']}, nfm {record['commit']}) · "
              f"{record['machine']}"]
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--candidates", nargs="+", default=["all"], help=f"of {list(CANDIDATES)} or 'all'")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=2000, help="training steps (the demo's: 2000)")
    p.add_argument("--work", type=Path, default=cl.REPO / "outputs" / "claims")
    p.add_argument("--csv_dir", type=Path, default=cl.REPO / "benchmarks" / "results")
    p.add_argument("--report_only", action="store_true")
    p.add_argument("--no_report", action="store_true", help="run only (another process writes the section)")
    args = p.parse_args(argv)
    args.candidates = list(CANDIDATES) if args.candidates == ["all"] else args.candidates
    for n in args.candidates:
        if n not in CANDIDATES:
            p.error(f"--candidates: unknown {n!r}; known: {list(CANDIDATES)}")
    if not args.report_only:
        run(args)
    if not args.no_report:
        cl.write_section("default", report(args))


if __name__ == "__main__":
    main()
