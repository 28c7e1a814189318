"""Shared machinery of the science benchmarks (``bench_claims.py``): worlds, training through the recipes,
scoring through ``nfm.evaluation.evaluate``, seeds, tables and the ``RESULTS.md`` sections.

Every number comes from the code a user runs: models are trained by ``recipes/pretrain.py`` and adapted by
``recipes/finetune_lora.py`` (subprocesses, 1 thread), and scored by :func:`nfm.evaluation.runner.evaluate`
on the **test** split (never used for any choice: early stopping is not used, every hyper-parameter is fixed
before the run or chosen by CV on training data, e.g. the smoothing baseline).

A claim run leaves per-seed CSVs and a run record (``claim_<name>.json``: date, command, budget, seeds, steps,
decoder protocol, commit, machine); a report reads them back (:func:`read_table`, :func:`read_record`), decides
every comparison with :func:`nfm.evaluation.verdict.compare` and prints them with :func:`verdict_block` (no rule
of its own here).
"""
from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "RESULTS.md"
M1_NPZ = REPO.parent / "shared" / "data" / "m1_stevenson_2011" / "m1_stevenson_2011.npz"


def env(threads: int = 1) -> dict:
    """Subprocess environment: ``threads`` intra-op threads, offline, this checkout first on the path."""
    out = dict(os.environ)
    out.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(REPO) + os.pathsep + out.get("PYTHONPATH", ""))
    return out


def run(cmd: Sequence, log: Path | None = None, threads: int = 1) -> float:
    """Run a command (the recipes), raise with its output tail on failure; return the wall time [s]."""
    t0 = time.perf_counter()
    res = subprocess.run([str(c) for c in cmd], env=env(threads), cwd=REPO, capture_output=True, text=True)
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(res.stdout + "\n--- stderr ---\n" + res.stderr)
    if res.returncode != 0:
        raise RuntimeError(f"command failed ({res.returncode}): {' '.join(map(str, cmd))}\n{res.stderr[-4000:]}")
    return time.perf_counter() - t0


# --------------------------------------------------------------------------- data
def synthetic(out: Path, world: str = "ibl_like", seed: int = 0, **options) -> Path:
    """A synthetic world saved as an nfm dataset (reused when it exists); ``options`` go to the world."""
    from nfm.data.prepare import prepare

    with _Lock(out):
        if not (out / "nfm_meta.json").is_file():
            prepare("synthetic", out, world=world, seed=seed, source_options=options or None, progress=False)
    return out


def m1(out: Path) -> Path:
    """The real macaque M1 recording (shared data, read in place) as 2 s windows split contiguously in time."""
    from nfm.data.prepare import prepare

    if not M1_NPZ.is_file():
        raise FileNotFoundError(f"{M1_NPZ} not found (the shared real-data folder)")
    with _Lock(out):
        if not (out / "nfm_meta.json").is_file():
            prepare("binned", out, inputs=[str(M1_NPZ)], progress=False)
    return out


# --------------------------------------------------------------------------- training
class _Lock:
    """An exclusive lock file ``<path>.lock``: several claim runs (processes) share trained models and scores;
    the second one waits for the first and then finds the result instead of training it again."""

    def __init__(self, path: Path):
        self.path = path.with_name(path.name + ".lock")

    def __enter__(self):
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.f = open(self.path, "w")
        fcntl.flock(self.f, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        self.f.close()


def pretrain(dataset: Path, out: Path, *, seed: int, steps: int, overrides: dict | None = None,
             extra: Sequence[str] = (), batch_size: int = 8, lr: float = 2e-3) -> Path:
    """``recipes/pretrain.py`` on ``dataset`` (the synthetic config's model size unless ``overrides`` says
    otherwise); skipped when ``out`` already holds a model.  Seed = model init and data order."""
    with _Lock(out):
        if not (out / "model.safetensors").is_file():
            _pretrain(dataset, out, seed=seed, steps=steps, overrides=overrides, extra=extra,
                      batch_size=batch_size, lr=lr)
    return out


def _pretrain(dataset, out, *, seed, steps, overrides, extra, batch_size, lr):
    model = {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 512,
             "decoder_layers": 1, "gen_windows_per_step": 1, **(overrides or {})}
    cmd = [sys.executable, REPO / "recipes" / "pretrain.py", "--dataset", dataset, "--output_dir", out,
           "--seed", seed, "--max_steps", steps, "--per_device_train_batch_size", batch_size,
           "--learning_rate", lr, "--save_steps", 10 * steps + 1, "--logging_steps", max(1, steps // 10),
           "--report_to", "none", "--skip_eval", "true", "--model_overrides", json.dumps(model), *extra]
    run(cmd, out / "train.log")


def adapt(base: Path, dataset: Path, sessions: Sequence[str], out: Path, *, mode: str, seed: int, steps: int,
          fraction: float = 1.0, lr: float | None = None, extra: Sequence[str] = ()) -> Path:
    """``recipes/finetune_lora.py`` (``mode`` lora | full | scratch) on ``sessions``; skipped when done."""
    with _Lock(out):
        if not ((out / "adapter_config.json").is_file() or (out / "model.safetensors").is_file()):
            _adapt(base, dataset, sessions, out, mode=mode, seed=seed, steps=steps, fraction=fraction, lr=lr,
                   extra=extra)
    return out


def _adapt(base, dataset, sessions, out, *, mode, seed, steps, fraction, lr, extra):
    lr = lr if lr is not None else {"lora": 3e-3, "full": 1e-3, "scratch": 2e-3}[mode]
    cmd = [sys.executable, REPO / "recipes" / "finetune_lora.py", "--model", base, "--dataset", dataset,
           "--sessions", *sessions, "--output_dir", out, "--mode", mode, "--seed", seed, "--scratch_seed", seed,
           "--max_steps", steps, "--learning_rate", lr, "--train_fraction", fraction, "--train_fraction_seed", seed,
           "--save_steps", 10 * steps + 1, "--logging_steps", max(1, steps // 10), "--report_to", "none",
           "--skip_eval", "true", *extra]
    run(cmd, out / "train.log")


# --------------------------------------------------------------------------- scoring
def score(model_dir: Path, dataset: Path, tasks: Sequence[str], *, sessions="known", adapter: Path | None = None,
          split: str = "test", overrides: dict | None = None, output: Path | None = None,
          max_trials: int | None = None) -> dict:
    """``nfm.evaluation.evaluate`` of a saved model (merged with its adapter) on ``split``; cached in
    ``output`` (default ``<model>/eval_<tasks>.json``).  A cached decoding result scored under another
    ``decoder_protocol`` than the one asked for (the task's default unless ``overrides`` say otherwise; a result
    without the key came from the old nested CV over every split) is scored again."""
    import torch

    from nfm.evaluation.runner import evaluate, load_model

    output = output or (model_dir / f"eval_{split}_{'_'.join(tasks)}.json"[:200])
    with _Lock(output):
        cached = json.loads(output.read_text()) if output.is_file() else {}
        for t in _stale_decoding(cached, tasks, overrides or {}):
            cached.pop(t)
        missing = [t for t in tasks if t not in cached]  # an interrupted evaluation keeps the tasks it finished
        if not missing:
            return cached
        torch.set_num_threads(1)
        model = load_model(str(model_dir), adapter=str(adapter) if adapter else None)
        part = output.with_name(output.stem + ".part.json")
        over = {t: v for t, v in (overrides or {}).items() if t in missing} or None
        res = evaluate(model, str(dataset), tasks=missing, split=split, sessions=sessions,
                       task_overrides=over, max_trials=max_trials, output=part)
        res = json.loads(part.read_text()) if part.is_file() else res
        merged = {**cached, **{t: res[t] for t in missing if t in res}}
        output.write_text(json.dumps(merged, indent=1, default=str))
        part.unlink(missing_ok=True)
        part.with_suffix(".md").unlink(missing_ok=True)
        return merged


def _stale_decoding(cached: dict, tasks: Sequence[str], overrides: dict) -> list[str]:
    """Cached decoding results (of ``tasks``) whose ``decoder_protocol`` is not the one this scoring asks for."""
    from nfm.evaluation.tasks import load_tasks

    scored = [t for t in tasks if isinstance(cached.get(t), dict)
              and any(isinstance(v, float) for v in cached[t].values())]
    if not scored:
        return []
    stale = []
    for task in load_tasks(scored):
        if task.kind != "decoding":
            continue
        wanted = (overrides.get(task.name) or {}).get("decoder_protocol", task.spec["decoder_protocol"])
        if cached[task.name].get("decoder_protocol", "cv_all_splits") != wanted:
            stale.append(task.name)
    return stale


def metric(res: dict, task: str, key: str) -> float:
    """One number of a result dict (NaN when the task was not applicable or the key is absent)."""
    v = res.get(task, {}).get(key)
    return float(v) if isinstance(v, (int, float)) and v is not None else float("nan")


# --------------------------------------------------------------------------- tables
@dataclass
class Table:
    """Per-seed rows -> CSV beside the results and a Markdown table of mean ± sd over seeds."""

    name: str
    columns: list[str]
    rows: list[dict] = field(default_factory=list)

    def add(self, **row):
        self.rows.append(row)

    def write_csv(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        keys = list(dict.fromkeys(k for r in self.rows for k in r))
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            for r in self.rows:
                w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
        return path

    def summary(self, group: Sequence[str]) -> list[dict]:
        """Rows grouped by ``group`` columns with ``(mean, sd, n)`` of every metric column."""
        out: dict[tuple, dict] = {}
        for r in self.rows:
            key = tuple(r[g] for g in group)
            out.setdefault(key, {g: r[g] for g in group} | {"_vals": {}})
            for c in self.columns:
                if c in r:
                    out[key]["_vals"].setdefault(c, []).append(r[c])
        rows = []
        for entry in out.values():
            vals = entry.pop("_vals")
            for c, v in vals.items():
                a = np.asarray([x for x in v if x is not None and np.isfinite(x)], dtype=float)
                entry[c] = (float(a.mean()) if a.size else float("nan"),
                            float(a.std(ddof=1)) if a.size > 1 else float("nan"), int(a.size))
            rows.append(entry)
        return rows

    def markdown(self, group: Sequence[str], digits: int = 3, labels: dict | None = None) -> str:
        labels = labels or {}
        rows = self.summary(group)
        head = [*group, *[labels.get(c, c) for c in self.columns]]
        lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
        for r in rows:
            cells = [str(r[g]) for g in group]
            for c in self.columns:
                m, s, n = r.get(c, (float("nan"), float("nan"), 0))
                cells.append("–" if not math.isfinite(m) else
                             f"{m:.{digits}f} ± {s:.{digits}f}" if math.isfinite(s) else f"{m:.{digits}f}")
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)


def seeds_note(seeds: Sequence[int]) -> str:
    return f"mean ± sd over {len(seeds)} seeds ({', '.join(map(str, seeds))}: model init and data order)"


def machine_line() -> str:
    import platform

    import torch

    load = os.getloadavg()
    return (f"{os.cpu_count()} CPU cores ({platform.machine()}), torch {torch.__version__}, 1 thread per run, "
            f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at writing")


def write_section(claim: str, text: str, results: Path = RESULTS, top: bool = False) -> None:
    """Replace the section between ``<!-- claim:<name>:begin -->`` and ``...:end -->``, or add it (at the end,
    or after the title line with ``top``).  Holds a lock file beside ``results``: several claim runs may write
    to one file."""
    import fcntl

    begin, end = f"<!-- claim:{claim}:begin -->", f"<!-- claim:{claim}:end -->"
    block = f"{begin}\n{text.rstrip()}\n{end}\n"
    results.parent.mkdir(parents=True, exist_ok=True)
    with open(results.with_name(results.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        old = results.read_text() if results.is_file() else "# nfm results\n\n"
        if begin in old and end in old:
            a, b = old.index(begin), old.index(end) + len(end)
            new = old[:a] + block.rstrip("\n") + old[b:]
        elif top:
            head, _, rest = old.partition("\n")
            new = head + "\n\n" + block + "\n" + rest.lstrip("\n")
        else:
            new = old.rstrip("\n") + "\n\n" + block
        results.write_text(new)


def verdict_lines(results: Path, claims: Sequence[str]) -> list[tuple[str, str, str]]:
    """``(claim, section title, verdict line)`` of each claim section present in ``results``."""
    text = results.read_text() if results.is_file() else ""
    out = []
    for c in claims:
        begin, end = f"<!-- claim:{c}:begin -->", f"<!-- claim:{c}:end -->"
        if begin not in text or end not in text:
            continue
        body = text[text.index(begin) + len(begin):text.index(end)]
        title = next((ln.lstrip("# ").strip() for ln in body.splitlines() if ln.startswith("## ")), c)
        line = next((ln.strip() for ln in body.splitlines() if ln.startswith("**Verdict:**")), "")
        out.append((c, title, line.removeprefix("**Verdict:**").strip()))
    return out


def mean_of(table: Table, column: str, **where) -> float:
    """Mean over the rows matching ``where`` of ``column`` (finite values only; NaN when none)."""
    vals = [r[column] for r in table.rows if all(r.get(k) == v for k, v in where.items())
            and column in r and np.isfinite(r[column])]
    return float(np.mean(vals)) if vals else float("nan")


def by_seed(table: Table, column: str, **where) -> dict:
    """``{seed: value}`` of ``column`` over the rows matching ``where`` (non-finite values left out), the input
    of :func:`nfm.evaluation.verdict.compare`."""
    out = {}
    for r in table.rows:
        if all(r.get(k) == v for k, v in where.items()) and column in r:
            v = r[column]
            if isinstance(v, (int, float)) and math.isfinite(v):
                out[r["seed"]] = float(v)
    return out


# --------------------------------------------------------------------------- reading a run back
def read_table(path: Path, name: str, columns: Sequence[str], labels: Sequence[str]) -> Table:
    """A per-seed CSV written by :meth:`Table.write_csv` read back: ``labels`` columns stay strings, ``seed`` is an
    int, every other column a float (NaN for an empty cell).  ``columns``: the metric columns of the table."""
    rows = []
    with open(path, newline="") as f:
        for raw in csv.DictReader(f):
            row = {}
            for k, v in raw.items():
                if k in labels:
                    row[k] = v
                elif k == "seed":
                    row[k] = int(v)
                else:
                    row[k] = float(v) if v not in ("", None) else float("nan")
            rows.append(row)
    return Table(name, [c for c in columns], rows)


def without(table: Table, columns: Sequence[str]) -> Table:
    """The table with ``columns`` left out of its displayed metric columns."""
    return Table(table.name, [c for c in table.columns if c not in columns], table.rows)


def where(table: Table, **match) -> Table:
    """The rows of ``table`` whose label columns take the given values (a value may be a tuple of allowed ones)."""
    ok = lambda r: all(r.get(k) in (v if isinstance(v, tuple) else (v,)) for k, v in match.items())  # noqa: E731
    return Table(table.name, table.columns, [r for r in table.rows if ok(r)])


# --------------------------------------------------------------------------- run records
#: the decoder protocol every claim run uses now (decoders fitted on the train split, scored on the test split)
HELD_OUT_PROTOCOL = "train_to_eval"
#: the result columns of the claims that come from linear decoders (dropped from a report whose run record does
#: not say :data:`HELD_OUT_PROTOCOL`)
DECODING_COLUMNS = ("choice acc", "block acc", "wheel R2")
DECODING_DROPPED = ("decoders of this run were scored on trials the model trained on; rerun for held-out scores")


def git_commit() -> str:
    """This checkout's commit (``+dirty`` when tracked files under nfm/, recipes/ or benchmarks/ differ)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "nfm", "recipes",
                                "benchmarks"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def protocols_seen(results: Sequence[dict], tasks: Sequence[str] = ("choice", "block", "wheel_speed")) -> set:
    """The ``decoder_protocol`` of every scored decoding task in ``results`` (a scored result without the key
    came from the old evaluation: nested CV over every split, ``cv_all_splits``)."""
    seen = set()
    for res in results:
        for t in tasks:
            r = res.get(t)
            if isinstance(r, dict) and any(isinstance(v, float) for v in r.values()):
                seen.add(r.get("decoder_protocol", "cv_all_splits"))
    return seen


def protocol_of(seen: set) -> str | None:
    """One protocol name for a run record: the protocol when every decoding task used it, ``mixed: a, b`` when
    they differ, None when the claim scored no decoding task."""
    if not seen:
        return None
    return next(iter(seen)) if len(seen) == 1 else "mixed: " + ", ".join(sorted(seen))


def record_path(csv_dir: Path, claim: str) -> Path:
    return Path(csv_dir) / f"claim_{claim}.json"


def write_record(csv_dir: Path, claim: str, record: dict) -> Path:
    path = record_path(csv_dir, claim)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"claim": claim, **record}, indent=1) + "\n")
    return path


def read_record(csv_dir: Path, claim: str) -> dict:
    path = record_path(csv_dir, claim)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no run record of claim {claim!r} (run the claim first)")
    return json.loads(path.read_text())


def decoding_ok(record: dict) -> bool:
    """Whether the run's decoders were scored on held-out trials (decoder protocol :data:`HELD_OUT_PROTOCOL`)."""
    return record.get("decoder_protocol") == HELD_OUT_PROTOCOL


def decoding_dropped_why(record: dict) -> str | None:
    """Why a report leaves its decoding columns out (None when the decoders were scored on held-out trials)."""
    if decoding_ok(record):
        return None
    if record.get("decoder_protocol") is None:
        return "no decoding task was scored in this run"
    return DECODING_DROPPED


# --------------------------------------------------------------------------- verdicts (nfm.evaluation.verdict)
class NotBeaten:
    """A non-inferiority comparison: won when ``comparison.a`` does **not** beat ``comparison.b`` by the one rule
    (so :func:`nfm.evaluation.verdict.claim_verdict` counts it as won); undecided when the comparison is."""

    def __init__(self, comparison):
        self.comparison = comparison

    @property
    def beats(self) -> bool | None:
        b = self.comparison.beats
        return None if b is None else not b

    def sentence(self) -> str:
        c = self.comparison
        kept = {None: "undecided", True: "kept", False: "lost"}[self.beats]
        return f"{c.sentence()} — non-inferiority of {c.b}: {kept}"


def _pair(c) -> tuple[str, str]:
    """``(arms, metric)`` of a comparison (or of a :class:`NotBeaten`)."""
    if isinstance(c, NotBeaten):
        return f"{c.comparison.a} not better than {c.comparison.b}", c.comparison.metric
    versus = f"the goal {c.b_goal:g}" if c.b_goal is not None else c.b
    return f"{c.a} vs {versus}" + (f" by {c.margin:g}" if c.margin > 0 else ""), c.metric


def label(c) -> str:
    """A short name of a comparison for the verdict line."""
    arms, metric = _pair(c)
    return f"{arms} ({metric})"


def _grouped(comparisons: Sequence) -> str:
    """Labels of ``comparisons``, those between the same arms joined: ``A vs B (m1 / m2); C vs D (m3)``."""
    groups: dict[str, list[str]] = {}
    for c in comparisons:
        arms, metric = _pair(c)
        groups.setdefault(arms, []).append(metric)
    return "; ".join(f"{arms} ({' / '.join(ms)})" for arms, ms in groups.items())


RULE = ("One rule for every claim (`nfm.evaluation.verdict`): A beats B when, paired by seed, A is better in every "
        "seed (by more than the margin, where one is stated) and the mean paired difference exceeds the larger of "
        "the two arms' seed standard deviations; with fewer than 3 paired seeds a comparison is not measured.")


def verdict_block(comparisons: Sequence, *, unmeasured_why: str | None = None, intro: str = "Comparisons:",
                  extra: Sequence = (), extra_intro: str = "") -> list[str]:
    """The comparison sentences (each from :meth:`Comparison.sentence`), the rule, and the verdict line
    ``**Verdict:** **<claim_verdict>** — ...`` (read back by :func:`verdict_lines`).  ``extra``: comparisons shown
    under ``extra_intro`` that are not part of the verdict (ablations)."""
    from nfm.evaluation.verdict import MIN_SEEDS, claim_verdict

    lines = [RULE, "", intro, ""] + [f"- {c.sentence()}" for c in comparisons]
    if not comparisons:
        lines.append(f"- none measured: {unmeasured_why or 'no comparison could be made'}")
    if extra:
        lines += ["", extra_intro, ""] + [f"- {c.sentence()}" for c in extra]
    v = claim_verdict(list(comparisons))
    won = [c for c in comparisons if c.beats is True]
    lost = [c for c in comparisons if c.beats is False]
    undecided = [c for c in comparisons if c.beats is None]
    if not comparisons:
        why = f"no comparison measured ({unmeasured_why or 'none could be made'})"
    elif len(undecided) == len(comparisons):
        why = (f"none of the {len(comparisons)} comparisons could be decided (fewer than {MIN_SEEDS} paired seeds): "
               + _grouped(undecided))
    else:
        why = f"{len(won)} of {len(comparisons)} comparisons won"
        if lost:
            why += "; not won: " + _grouped(lost)
        if undecided:
            why += "; not measured: " + _grouped(undecided)
    lines += ["", f"**Verdict:** **{v}** — {why}."]
    return lines


def footer(record: dict, csvs: str) -> str:
    """The section's last line: command, CSV, run date, commit, machine (from the run record)."""
    commit = str(record.get("nfm_commit", "unknown"))
    short = commit[:12] + ("+dirty" if commit.endswith("+dirty") else "")
    return (f"Command: `{record['reproduce']}` · CSV: `{csvs}` · run record: `benchmarks/results/claim_"
            f"{record['claim']}.json` (dated {record['date']}, nfm {short}, decoders: "
            f"{record.get('decoder_protocol') or 'none'}) · {record['machine']}")


__all__ = ["REPO", "RESULTS", "Table", "adapt", "env", "m1", "metric", "pretrain", "run", "score", "seeds_note",
           "synthetic", "verdict_lines", "write_section", "machine_line", "mean_of", "by_seed", "read_table",
           "without", "where", "write_record", "read_record", "record_path", "decoding_ok", "decoding_dropped_why",
           "protocols_seen", "protocol_of", "git_commit", "NotBeaten", "label", "verdict_block", "footer",
           "HELD_OUT_PROTOCOL", "DECODING_COLUMNS", "DECODING_DROPPED", "RULE"]
