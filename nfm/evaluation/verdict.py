"""One verdict rule for every claim and study: paired by seed, "A beats B" only when A is better in every seed
and by more than the seeds' spread.

A claim compares arms (models, baselines, a fixed goal) on metrics measured in several seeds (model init and data
order; the same seeds and the same data for both arms).  :func:`compare` pairs two arms' per-seed values and
decides with one rule:

    A beats B  <=>  d_s = A_s - B_s > margin for every seed s          (better in every seed)
                    and mean_s(d_s) > max(sd(A), sd(B))                 (by more than the larger seed spread)

(``higher_is_better=False`` flips the sign of ``d``; ``sd`` is the sample standard deviation over seeds, 0 for a
fixed goal given as a number).  With fewer than :data:`MIN_SEEDS` paired seeds the comparison is *not measured*:
no verdict is drawn from one or two seeds.  :func:`claim_verdict` turns a claim's comparisons into ``holds`` (every
comparison won), ``holds partly`` (some), ``does not hold`` (none) or ``not measured``.  Variants of a model are
chosen on the validation split (:func:`choose_on_validation`), never on the test split the verdict reads.

Every sentence a report prints about a comparison comes from :meth:`Comparison.sentence`, so the words follow
the numbers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np

__all__ = ["MIN_SEEDS", "Comparison", "compare", "claim_verdict", "choose_on_validation", "VERDICTS"]

#: paired seeds a comparison needs before it can be decided (the house standard: >= 3 seeds)
MIN_SEEDS = 3
VERDICTS = ("holds", "holds partly", "does not hold", "not measured")


def _finite_by_seed(values: Mapping | float, what: str) -> dict | float:
    if isinstance(values, (int, float, np.floating)):
        v = float(values)
        if not math.isfinite(v):
            raise ValueError(f"{what}: a fixed goal must be finite, got {v}")
        return v
    out = {}
    for seed, v in dict(values).items():
        if v is None:
            continue
        v = float(v)
        if math.isfinite(v):
            out[seed] = v
    return out


def _sd(x: Sequence[float]) -> float:
    return float(np.std(np.asarray(x, dtype=float), ddof=1)) if len(x) > 1 else float("nan")


@dataclass
class Comparison:
    """The paired comparison of arm ``a`` with arm ``b`` on ``metric`` (see the module docstring for the rule).

    ``diffs``: seed -> ``a - b`` (sign-flipped when lower is better, so > 0 always means ``a`` better);
    ``a_values`` / ``b_values``: seed -> value (``b_values`` empty for a fixed goal ``b_goal``).
    """

    a: str
    b: str
    metric: str
    a_values: dict
    b_values: dict
    b_goal: float | None
    diffs: dict
    margin: float = 0.0
    higher_is_better: bool = True
    digits: int = 3
    missing: list = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.diffs)

    @property
    def measured(self) -> bool:
        return self.n >= MIN_SEEDS

    @property
    def mean_a(self) -> float:
        return float(np.mean(list(self.a_values.values()))) if self.a_values else float("nan")

    @property
    def mean_b(self) -> float:
        if self.b_goal is not None:
            return self.b_goal
        return float(np.mean(list(self.b_values.values()))) if self.b_values else float("nan")

    @property
    def mean_diff(self) -> float:
        return float(np.mean(list(self.diffs.values()))) if self.diffs else float("nan")

    @property
    def spread(self) -> float:
        """The larger of the two arms' seed standard deviations (0 for a fixed goal)."""
        sa = _sd([self.a_values[s] for s in self.diffs])
        sb = 0.0 if self.b_goal is not None else _sd([self.b_values[s] for s in self.diffs])
        return float(max(sa, sb))

    @property
    def wins(self) -> int:
        """Seeds in which ``a`` is better than ``b`` by more than ``margin``."""
        return sum(1 for d in self.diffs.values() if d > self.margin)

    @property
    def beats(self) -> bool | None:
        """True when ``a`` beats ``b`` by the rule; None when not measured."""
        if not self.measured:
            return None
        return self.wins == self.n and self.mean_diff > max(self.spread, self.margin)

    def sentence(self) -> str:
        """One sentence, computed from the numbers, saying whether ``a`` beats ``b`` and why."""
        f = f"{{:+.{self.digits}f}}"
        g = f"{{:.{self.digits}f}}"
        versus = (f"the goal {g.format(self.b_goal)}" if self.b_goal is not None else self.b)
        if not self.measured:
            return (f"{self.a} vs {versus} on {self.metric}: not measured ({self.n} paired seed(s); the rule needs "
                    f"{MIN_SEEDS})")
        margin = f" by more than {g.format(self.margin)}" if self.margin > 0 else ""
        per_seed = ", ".join(f.format(d) for _, d in sorted(self.diffs.items(), key=lambda kv: str(kv[0])))
        word = "beats" if self.beats else "does not beat"
        why = []
        if self.wins < self.n:
            why.append(f"better{margin} in {self.wins} of {self.n} seeds")
        else:
            why.append(f"better{margin} in every seed")
        rel = ">" if self.mean_diff > self.spread else "<="
        why.append(f"mean difference {f.format(self.mean_diff)} {rel} seed sd {g.format(self.spread)}")
        lower = "" if self.higher_is_better else " (lower is better; differences sign-flipped)"
        return (f"{self.a} {word} {versus} on {self.metric}{lower}: {'; '.join(why)} (per seed {per_seed})")


def compare(a: Mapping | Iterable, b: Mapping | Iterable | float, *, a_name: str = "A", b_name: str = "B",
            metric: str = "", higher_is_better: bool = True, margin: float = 0.0, digits: int = 3) -> Comparison:
    """Pair ``a`` and ``b`` by seed and apply the one rule (module docstring).

    Args:
        a: seed -> value (a mapping; non-finite values count as missing).
        b: seed -> value, or a number: a fixed goal (its spread is 0).
        margin: the difference every seed must exceed (e.g. 0.05 bits/spike for "beats smoothing by 0.05").
        higher_is_better: False for losses and NLLs.
    Seeds present in only one arm are listed in ``missing`` and not used.
    """
    av = _finite_by_seed(a, a_name)
    bv = _finite_by_seed(b, b_name)
    if not isinstance(av, dict):
        raise ValueError(f"{a_name}: per-seed values are required for the compared arm, got a number")
    sign = 1.0 if higher_is_better else -1.0
    if isinstance(bv, dict):
        common = [s for s in av if s in bv]
        missing = sorted({*av, *bv} - set(common), key=str)
        diffs = {s: sign * (av[s] - bv[s]) for s in common}
        goal = None
        bvals = bv
    else:
        diffs = {s: sign * (v - bv) for s, v in av.items()}
        missing, goal, bvals = [], bv, {}
    return Comparison(a_name, b_name, metric, {s: av[s] for s in diffs}, {s: bvals[s] for s in diffs if s in bvals},
                      goal, diffs, margin=float(margin), higher_is_better=higher_is_better, digits=digits,
                      missing=missing)


def claim_verdict(comparisons: Sequence[Comparison]) -> str:
    """``holds`` when every measured comparison is won, ``holds partly`` when some are, ``does not hold`` when
    none is, ``not measured`` when none could be decided.  (Comparisons that could not be decided are listed by
    the caller: :meth:`Comparison.sentence` says so.)"""
    decided = [c.beats for c in comparisons if c.beats is not None]
    if not decided:
        return "not measured"
    if all(decided):
        return "holds" if len(decided) == len(comparisons) else "holds partly"
    return "holds partly" if any(decided) else "does not hold"


def choose_on_validation(validation: Mapping[str, Mapping], *, higher_is_better: bool = True) -> str:
    """The variant with the best mean over seeds of its **validation** score (``{variant: {seed: value}}``);
    ties go to the first listed.  The test split is never read here."""
    best, best_v = None, None
    for name, vals in validation.items():
        v = [float(x) for x in dict(vals).values() if x is not None and math.isfinite(float(x))]
        if not v:
            continue
        m = float(np.mean(v)) * (1.0 if higher_is_better else -1.0)
        if best_v is None or m > best_v:
            best, best_v = name, m
    if best is None:
        raise ValueError(f"no variant has a finite validation score: {list(validation)}")
    return best
