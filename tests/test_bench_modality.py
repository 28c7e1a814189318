"""The mixed-modality study (benchmarks/bench_modality.py) in its --quick mode: every condition runs end to end
(pretraining on spikes / 2-photon / both, LoRA and scratch adaptation, evaluation) and the report is written
between its markers."""
from __future__ import annotations

import csv
import importlib.util
import sys

import pytest

from training_fixtures import REPO


@pytest.mark.slow
def test_bench_modality_quick(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_modality", REPO / "benchmarks" / "bench_modality.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    md, seeds = tmp_path / "RESULTS.md", tmp_path / "seeds.csv"
    md.write_text(f"# results\n\nother section\n\n{mod.BEGIN}\nOLD-SECTION-TEXT\n{mod.END}\n\ntail\n")
    assert mod.main(["--quick", "--out_dir", str(tmp_path / "run"), "--write", "--results_md", str(md),
                     "--seed_csv", str(seeds)]) == 0
    text = md.read_text()
    assert text.count(mod.BEGIN) == 1 and "OLD-SECTION-TEXT" not in text and text.endswith("tail\n")
    for needle in ("Unseen spiking animal", "Unseen 2-photon animal", "both (mixed)", "none (scratch)",
                   "Verdict rule", "python benchmarks/bench_modality.py --quick"):
        assert needle in text
    rows = list(csv.DictReader(open(seeds)))
    assert {(r["target"], r["condition"]) for r in rows} == {(t, c) for t in mod.TARGETS for c in mod.CONDITIONS}
    assert all(r["value"] not in ("", "nan") for r in rows)
