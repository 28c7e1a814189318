"""The default-configuration study's choice rule (benchmarks/bench_default.py): validation only, every masked task
above the null model in every seed, 3 seeds; the test split never decides."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import bench_default as bd  # noqa: E402
import claimlib as cl  # noqa: E402


def _table(rows):
    t = cl.Table("default", list(bd.COLS))
    for cand, split, seed, co, fp, intra, inter in rows:
        t.add(candidate=cand, split=split, seed=seed, **{"co-bps": co, "smoothing co-bps": 0.5, "fp-bps": fp,
                                                         "intra-bps": intra, "inter-bps": inter})
    return t


def _rows(cand, split, co, fp=0.2, intra=0.3, inter=0.1, seeds=(0, 1, 2)):
    return [(cand, split, s, co + 0.001 * s, fp, intra, inter) for s in seeds]


def test_choice_is_made_on_validation_not_test():
    t = _table(_rows("a", "validation", 0.60) + _rows("a", "test", 0.50)
               + _rows("b", "validation", 0.55) + _rows("b", "test", 0.70))
    chosen, why = bd.choose(t)
    assert chosen == "a" and why == {"a": "eligible", "b": "eligible"}


def test_a_candidate_below_the_null_model_on_another_task_is_not_eligible():
    bad = _rows("b", "validation", 0.70)
    bad[1] = ("b", "validation", 1, 0.70, 0.2, 0.3, -0.01)  # inter-region below null in seed 1
    t = _table(_rows("a", "validation", 0.60) + bad)
    chosen, why = bd.choose(t)
    assert chosen == "a"
    assert "below the null model" in why["b"] and "inter-bps -0.010 (seed 1)" in why["b"]


def test_fewer_than_three_seeds_is_not_eligible_and_nothing_eligible_chooses_none():
    t = _table(_rows("a", "validation", 0.60, seeds=(0,)))
    chosen, why = bd.choose(t)
    assert chosen is None and "1 validation seed(s)" in why["a"]


def test_every_candidate_is_a_valid_config():
    from nfm import NfmConfig

    for name, (_, objectives, modes, over) in bd.CANDIDATES.items():
        NfmConfig(objectives=objectives, mask_modes=modes, **over).check()


def test_the_shipped_default_is_a_studied_candidate():
    """The default config trains the objective mix of a studied candidate (recipes/configs/synthetic.yaml), and
    the claims that train "the demo configuration" read that mix from it."""
    import yaml

    import bench_claims as bc

    cfg = yaml.safe_load((cl.REPO / "recipes" / "configs" / "synthetic.yaml").read_text())
    mix = {k: v for k, v in (cfg.get("model_overrides") or {}).items() if k in bc.MIX_FIELDS}
    studied = [(c[1], c[2], c[3]) for c in bd.CANDIDATES.values()]
    assert (cfg["objectives"], cfg["mask_modes"], mix) in studied
    assert bc.SYN_RUNS["joint"][2] == mix
