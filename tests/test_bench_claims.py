"""The science claims (benchmarks/bench_claims.py) in their --quick mode: every claim trains, adapts and scores
through the recipes and ``nfm.evaluation.evaluate``, writes its per-seed CSV and its RESULTS.md section with a
verdict, and the summary table collects the verdicts.  Tiny worlds and models: this checks the machinery, not
the science (the full run's tables are in benchmarks/RESULTS.md)."""
from __future__ import annotations

import csv
import importlib.util
import math
import sys

import pytest

from training_fixtures import REPO


def _load(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_bench_claims_quick_all(tmp_path):
    sys.path.insert(0, str(REPO / "benchmarks"))
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
        assert "**Verdict:** **" in section and f"--claim {name} --quick" in section, name
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
