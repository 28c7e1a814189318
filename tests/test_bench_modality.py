"""The mixed-modality study (benchmarks/bench_modality.py): in its --quick mode every condition runs end to end
(pretraining on spikes / 2-photon / both, LoRA and scratch adaptation, evaluation) on one grid per target and the
report is written between its markers; the report logic (one verdict rule, numbers from the per-seed CSV, one
bin size per target) on rows made up here."""
from __future__ import annotations

import csv
import importlib.util
import sys

import pytest

from training_fixtures import REPO


@pytest.fixture(scope="module")
def mod():
    spec = importlib.util.spec_from_file_location("bench_modality", REPO / "benchmarks" / "bench_modality.py")
    m = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = m
    spec.loader.exec_module(m)
    return m


@pytest.mark.slow
def test_bench_modality_quick(tmp_path, mod):
    md, seeds = tmp_path / "RESULTS.md", tmp_path / "seeds.csv"
    md.write_text(f"# results\n\nother section\n\n{mod.BEGIN}\nOLD-SECTION-TEXT\n{mod.END}\n\ntail\n")
    assert mod.main(["--quick", "--out_dir", str(tmp_path / "run"), "--write", "--results_md", str(md),
                     "--seed_csv", str(seeds)]) == 0
    text = md.read_text()
    assert text.count(mod.BEGIN) == 1 and "OLD-SECTION-TEXT" not in text and text.endswith("tail\n")
    for needle in ("Unseen spiking animal", "Unseen 2-photon animal", "both (mixed)", "none (scratch)",
                   "Verdict rule (`nfm.evaluation.verdict`)", "decoder_protocol: train_to_eval",
                   "not measured (1 paired seed(s)",  # one seed: the verdict rule draws no conclusion
                   "python benchmarks/bench_modality.py --quick --out_dir"):
        assert needle in text
    rows = list(csv.DictReader(open(seeds)))
    assert {(r["target"], r["condition"]) for r in rows} == {(t, c) for t in mod.TARGETS for c in mod.CONDITIONS}
    assert all(r["value"] not in ("", "nan") for r in rows)
    # one grid per target, the unseen animal's own: the 2-photon base reads the spiking animal at its 20 ms bins
    grids = {t: {float(r["bin_size"]) for r in rows if r["target"] == t} for t in mod.TARGETS}
    assert grids["spikes"] == {0.02} and len(grids["calcium"]) == 1 and grids["calcium"] != {0.02}
    assert "every row scored at 20 ms bins" in text


def _rows(mod, gain: float, seeds=(0, 1, 2), bins=None):
    """Made-up per-seed rows: ``both`` = ``own`` + gain on every metric (own varies by seed), baselines fixed."""
    rows = []
    for target in mod.TARGETS:
        size = (bins or {"spikes": 0.02, "calcium": 0.1})[target]
        for seed in seeds:
            for cond in mod.CONDITIONS:
                vals = {f"{t}:{k}": 0.5 + 0.01 * seed + (gain if cond == "both" else 0.0)
                        - (0.2 if cond == "scratch" else 0.0) for t, k, _ in mod.METRICS[target] + mod.DECODING}
                vals.update({k: 0.7 for k in mod.baseline_keys(target)})
                if target == "calcium":
                    vals["co_smoothing:psth/r2"] = 0.3
                rows += [{"seed": seed, "target": target, "condition": cond, "metric": k, "value": v,
                          "bin_size": size} for k, v in vals.items()]
    return rows


def test_report_uses_the_one_verdict_rule_and_the_csv(tmp_path, mod):
    md, seeds = tmp_path / "RESULTS.md", tmp_path / "seeds.csv"
    cfg = dict(mod.FULL, pretrain_steps=1234, adapt_steps=567)
    mod.write_results(_rows(mod, gain=0.1), cfg, "python benchmarks/bench_modality.py --write", 60.0, "CPU X",
                      None, md, seeds)
    text = md.read_text()
    assert "Unseen spiking animal: the claim holds." in text and "Over both modalities: the claim holds." in text
    assert "both (mixed) beats own (spikes) on co-smoothing bits/spike: better in every seed" in text
    assert "1234 steps" in text and "567 steps" in text  # the setup is formatted from the run's settings
    assert "Machine: CPU X" in text and "`python benchmarks/bench_modality.py --write`" in text
    assert "| both (mixed) | 0.610 ± 0.010 |" in text  # both = own + 0.1, own = 0.50, 0.51, 0.52
    assert [r["bin_size"] for r in csv.DictReader(open(seeds))][:1] == ["0.02"]
    # a gain within the seed spread: no win either way -> the claim does not hold
    mod.write_results(_rows(mod, gain=0.001), cfg, "c", 60.0, "CPU X", None, md, seeds)
    text = md.read_text()
    assert "the claim does not hold" in text and "does not beat" in text
    # too few seeds: not measured
    mod.write_results(_rows(mod, gain=0.1, seeds=(0, 1)), cfg, "c", 60.0, "CPU X", None, md, seeds)
    assert "the claim not measured" in md.read_text()


def test_rows_of_one_target_on_two_grids_are_refused(mod):
    rows = _rows(mod, gain=0.1)
    rows[0] = {**rows[0], "bin_size": 0.1}
    with pytest.raises(AssertionError, match="different bin sizes"):
        mod.check_grids(rows)
    rows = _rows(mod, gain=0.1)
    i = next(i for i, r in enumerate(rows) if r["metric"] == mod.MASKED_BASELINE["spikes"])
    rows[i] = {**rows[i], "value": 0.6}
    with pytest.raises(AssertionError, match="baseline differs across arms"):
        mod.check_grids(rows)
    with pytest.raises(ValueError, match="no bin_size"):
        mod.check_grids([{**_rows(mod, gain=0.1)[0], "bin_size": None}])


def test_no_decoder_splits_override(mod):
    assert "decoder_splits" not in (REPO / "benchmarks" / "bench_modality.py").read_text()
