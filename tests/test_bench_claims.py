"""The science claims (benchmarks/bench_claims.py): every claim is a run part (trains, adapts and scores through the
recipes and ``nfm.evaluation.evaluate``, writes per-seed CSVs and a run record) and a report part that builds its
RESULTS.md section from those files only, every comparison decided by ``nfm.evaluation.verdict``.

The fast tests check the committed results: the sections are what the report parts make of the committed CSVs and
run records, no report string of the script carries a literal result number, decoding columns scored on training
trials are left out, and README's results block is what ``benchmarks/readme_results.py`` generates.  The slow test
runs every claim's --quick mode (tiny worlds and models: the machinery, not the science)."""
from __future__ import annotations

import ast
import csv
import importlib.util
import json
import math
import re
import shutil
import sys

import pytest

from training_fixtures import REPO

BENCH = REPO / "benchmarks"
RESULTS_DIR = BENCH / "results"
#: a decimal result number in a report string (the rule of the issue: numbers come from the CSVs)
RESULT_NUMBER = re.compile(r"\d\.\d{2,}")


def _load(name):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def _section(text: str, name: str) -> str:
    begin, end = f"<!-- claim:{name}:begin -->", f"<!-- claim:{name}:end -->"
    return text[text.index(begin) + len(begin):text.index(end)].strip("\n")


def _literal_numbers(source: str) -> list[tuple[int, str]]:
    """String literals of ``source`` holding a decimal result number, except the values of named module-level
    constants (``UPPER_CASE = ...``: CLI thresholds, settings) and argparse ``help=`` texts."""
    tree = ast.parse(source)
    allowed: set[int] = set()
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if all(isinstance(t, ast.Name) and t.id.isupper() for t in targets):
                allowed |= {id(n) for n in ast.walk(node)}
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "help":
            allowed |= {id(n) for n in ast.walk(node.value)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in allowed
            and RESULT_NUMBER.search(node.value)]


def test_the_literal_number_scan_catches_a_typed_result_and_allows_named_constants():
    assert _literal_numbers('def report():\n    return "smoothing 0.556 there; the plain model 0.506"\n')
    assert _literal_numbers('def report(x):\n    return f"beats it by {x:.3f} (0.047 short)"\n')
    assert not _literal_numbers('GOAL = 0.05\nHELP = "goal 0.05 bits/spike"\n'
                                'def report(x):\n    return f"{x:.3f} vs {GOAL:g}"\n')
    assert not _literal_numbers('p.add_argument("--x", help="default 0.95")\n')


@pytest.mark.parametrize("script", ["bench_claims.py", "claimlib.py", "readme_results.py", "bench_default.py",
                                    "bench_steinmetz.py"])
def test_report_strings_carry_no_literal_result_number(script):
    found = _literal_numbers((BENCH / script).read_text())
    assert not found, f"{script}: result numbers typed into report text (format them from the CSV): {found}"


def test_results_md_claim_sections_are_the_reports_of_the_committed_csvs():
    """Every claim section of RESULTS.md is exactly what ``--report_only`` builds from the committed CSVs and run
    records (no hand edit survives), and the summary is built from those sections."""
    bench = _load("bench_claims")
    text = (BENCH / "RESULTS.md").read_text()
    present = [n for n in bench.ORDER if f"<!-- claim:{n}:begin -->" in text]
    assert present, "no claim section in RESULTS.md"
    for name in present:
        assert (RESULTS_DIR / f"claim_{name}.json").is_file(), f"{name}: no run record"
        assert _section(text, name) == bench.report(name, RESULTS_DIR).strip("\n"), \
            f"claim {name}: RESULTS.md differs from its report (run bench_claims.py --claim {name} --report_only)"
    assert _section(text, "summary") == bench.summary(BENCH / "RESULTS.md").strip("\n")


def test_run_records_state_the_run():
    bench = _load("bench_claims")
    for name in bench.ORDER:
        path = RESULTS_DIR / f"claim_{name}.json"
        if not path.is_file():
            continue
        rec = json.loads(path.read_text())
        for key in ("date", "command", "reproduce", "budget", "seeds", "steps", "decoder_protocol", "nfm_commit",
                    "machine", "csv"):
            assert key in rec, (name, key)
        assert rec["claim"] == name and f"--claim {name}" in rec["reproduce"]
        assert all((RESULTS_DIR / c).is_file() for c in rec["csv"]), name
        assert all(isinstance(v, int) and v > 0 for v in rec["steps"].values()), name


def test_decoding_columns_scored_on_training_trials_are_left_out(tmp_path):
    """A run record whose decoder protocol is not train_to_eval: the decoding columns of claims 1, 4 and 7 are left
    out of tables and comparisons with the reason, and claim 4 (its verdict rests on decoding) is not measured;
    the same CSVs under a train_to_eval record bring the columns and claim 4's comparisons back."""
    bench = _load("bench_claims")
    cl = sys.modules["claimlib"]
    for name in ("mtm", "contrastive", "joint"):
        rec = cl.read_record(RESULTS_DIR, name)
        if rec["decoder_protocol"] == cl.HELD_OUT_PROTOCOL:
            continue
        text = bench.report(name, RESULTS_DIR)
        assert cl.DECODING_DROPPED in text, name
        tables = [ln for ln in text.splitlines() if ln.startswith("| ")]
        assert not any(c in ln for ln in tables for c in cl.DECODING_COLUMNS), name
        assert not any(c in ln for ln in text.splitlines() if ln.startswith("- ") for c in cl.DECODING_COLUMNS)
        if name == "contrastive":
            assert "**Verdict:** **not measured**" in text
    # the same CSVs, declared held-out: the columns and claim 4's decoding comparisons are back
    for f in ("claim_objectives.csv", "claim_mtm_synthetic.csv"):
        shutil.copy(RESULTS_DIR / f, tmp_path / f)
    for name in ("contrastive", "mtm"):
        rec = cl.read_record(RESULTS_DIR, name)
        cl.write_record(tmp_path, name, {**{k: v for k, v in rec.items() if k != "claim"},
                                         "decoder_protocol": cl.HELD_OUT_PROTOCOL})
    text = bench.report("contrastive", tmp_path)
    assert cl.DECODING_DROPPED not in text and "| variant | choice acc | wheel R2 |" in text
    assert "on choice acc" in text and "**Verdict:** **not measured**" not in text
    assert "block acc" in bench.report("mtm", tmp_path)


def test_verdicts_come_from_the_one_rule():
    """claimlib has no verdict rule of its own; a section's verdict word is claim_verdict of its comparisons."""
    bench = _load("bench_claims")
    cl = sys.modules["claimlib"]
    assert not hasattr(cl, "verdict") and not hasattr(cl, "paired")
    from nfm.evaluation.verdict import compare

    win = compare({0: 2.0, 1: 2.1, 2: 2.2}, {0: 1.0, 1: 1.1, 2: 1.0}, a_name="a", b_name="b", metric="m")
    loss = compare({0: 1.0, 1: 1.1, 2: 1.0}, {0: 2.0, 1: 2.1, 2: 2.2}, a_name="a", b_name="b", metric="n")
    lines = cl.verdict_block([win, loss])
    assert lines[-1] == "**Verdict:** **holds partly** — 1 of 2 comparisons won; not won: a vs b (n)."
    assert win.sentence() in "\n".join(lines) and loss.sentence() in "\n".join(lines)
    # non-inferiority: won when the single-objective arm does not beat the joint one
    assert cl.verdict_block([cl.NotBeaten(loss)])[-1].startswith("**Verdict:** **holds**")
    assert cl.verdict_block([cl.NotBeaten(win)])[-1].startswith("**Verdict:** **does not hold**")
    assert cl.verdict_block([])[-1].startswith("**Verdict:** **not measured**")
    one_seed = compare({0: 2.0}, {0: 1.0}, a_name="a", b_name="b", metric="m")
    assert cl.verdict_block([one_seed])[-1] == ("**Verdict:** **not measured** — none of the 1 comparisons could be "
                                                "decided (fewer than 3 paired seeds): a vs b (m).")
    # the drift verdict reads the variant fixed in advance, whatever the test scores say
    assert bench.DRIFT_VARIANT == "plain"


def test_scoring_overrides_are_valid_tasks_and_ask_for_held_out_decoders():
    bench = _load("bench_claims")
    from nfm.evaluation.tasks import load_tasks

    for quick in (False, True):
        over = bench._overrides(bench.SYN_TASKS, quick)
        tasks = {t.name: t for t in load_tasks(list(bench.SYN_TASKS), overrides=over)}
        for name in ("choice", "block", "wheel_speed"):
            assert "decoder_splits" not in over.get(name, {})
            assert tasks[name].spec["decoder_protocol"] == "train_to_eval"


def test_a_cached_decoding_score_of_the_old_protocol_is_scored_again():
    _load("bench_claims")
    cl = sys.modules["claimlib"]
    cached = {"choice": {"latents/accuracy": 0.9}, "block": {"latents/accuracy": 0.7, "decoder_protocol":
                                                             "train_to_eval"}, "co_smoothing": {"bps": 0.3}}
    assert cl._stale_decoding(cached, ["choice", "block", "co_smoothing"], {}) == ["choice"]
    assert cl._stale_decoding(cached, ["block"], {"block": {"decoder_protocol": "cv_all_splits"}}) == ["block"]


def test_readme_results_block_is_generated_from_results_md():
    readme_results = _load("readme_results")
    readme = (REPO / "README.md").read_text()
    assert readme_results.block(readme) == readme_results.generate(BENCH / "RESULTS.md"), \
        "README.md's results block differs from benchmarks/RESULTS.md: run benchmarks/readme_results.py"


@pytest.mark.slow
def test_bench_claims_quick_all(tmp_path):
    bench = _load("bench_claims")
    work = tmp_path / "claims"
    work.mkdir()
    (work / "RESULTS.md").write_text("# results\n\n<!-- claim:mtm:begin -->\nOLD-TEXT\n<!-- claim:mtm:end -->\n")
    assert bench.main(["--claim", "all", "--quick", "--seeds", "0", "--work", str(work)]) == 0
    text = (work / "RESULTS.md").read_text()
    assert "OLD-TEXT" not in text
    for name in bench.ORDER:
        begin, end = f"<!-- claim:{name}:begin -->", f"<!-- claim:{name}:end -->"
        assert text.count(begin) == 1 and text.count(end) == 1, name
        section = text[text.index(begin):text.index(end)]
        assert "**Verdict:** **not measured**" in section and f"--claim {name} --quick" in section, name
        rec = json.loads((work / "csv" / f"claim_{name}.json").read_text())
        assert rec["seeds"] == [0] and rec["quick"] is True and rec["steps"], name
        assert "--quick" in rec["command"] and rec["nfm_commit"], name
        if name in ("mtm", "contrastive", "joint"):
            assert rec["decoder_protocol"] == "train_to_eval", name
    # the summary table sits at the top and has one row per claim
    summary = text[text.index("<!-- claim:summary:begin -->"):text.index("<!-- claim:summary:end -->")]
    assert text.index("<!-- claim:summary:begin -->") < text.index("<!-- claim:mtm:begin -->")
    assert sum(1 for ln in summary.splitlines() if ln.startswith("| Claim") or ln.startswith("| Recordings")) \
        == len(bench.ORDER)
    # per-seed CSVs: one row per (condition, seed), the scored columns finite where the task applies
    csvs = {p.name: list(csv.DictReader(open(p))) for p in (work / "csv").glob("*.csv")}
    for name in ("claim_mtm_synthetic.csv", "claim_animals.csv", "claim_fewshot.csv", "claim_objectives.csv",
                 "claim_connectivity.csv", "claim_simulation.csv", "claim_smoothing.csv", "claim_drift.csv"):
        assert csvs.get(name), name
        assert all(r["seed"] == "0" for r in csvs[name]), name
    co = [float(r["co-bps"]) for r in csvs["claim_mtm_synthetic.csv"]]
    assert all(math.isfinite(x) for x in co)
    smooth = csvs["claim_smoothing.csv"]
    assert all(math.isclose(float(r["model - smoothing"]), float(r["model co-bps"]) - float(r["smoothing co-bps"]),
                            abs_tol=1e-4) for r in smooth)
    assert (work / "claim_animals.png").stat().st_size > 0
    # the held-out decoders are in the tables (the run record says train_to_eval)
    assert "choice acc" in _section(text, "mtm")
    # --report_only rebuilds the same sections from the CSVs and records, without training
    before = text
    assert bench.main(["--claim", "all", "--quick", "--report_only", "--seeds", "0", "--work", str(work)]) == 0
    assert (work / "RESULTS.md").read_text() == before
