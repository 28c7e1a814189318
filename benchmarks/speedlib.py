"""Timing rules shared by the speed benchmarks (``benchmarks/run_all.py`` and the ``bench_*.py`` it runs).

* 1 torch thread unless asked (``--threads``): on a shared machine more threads measured slower and noisier.
* Contenders of one comparison run in the same process, alternating round by round (the order rotates every
  round), after one untimed warm-up call each; a comparison reports the median over rounds of the *paired*
  ratio and its min-max range, never a lone absolute time.
* Every table is printed with the load average at its start and end.
"""
from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import torch

from nfm.training.precision import cpu_name  # noqa: F401 (the benchmarks' CPU name)


def load() -> str:
    """The 1/5/15-minute load average as ``a/b/c``."""
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def machine() -> str:
    dev = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"
    return (f"{cpu_name()}, {os.cpu_count()} cores (shared with other jobs){dev}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} torch thread(s)")


def interleave(contenders: dict[str, Callable[[], object]], rounds: int, warmup: bool = True,
               log: Callable[[str], None] | None = print) -> dict[str, list[tuple[float, object]]]:
    """Run every contender once per round, the order rotating each round -> {name: [(seconds, result), ...]}."""
    names = list(contenders)
    if warmup:
        for n in names:
            contenders[n]()
    out: dict[str, list[tuple[float, object]]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        if r % 2:
            order = order[::-1]
        for n in order:
            t0 = time.perf_counter()
            res = contenders[n]()
            out[n].append((time.perf_counter() - t0, res))
        if log:
            log(f"  round {r + 1}/{rounds}: " + ", ".join(f"{n} {out[n][-1][0]:.3f} s" for n in names))
    return out


def stats(values) -> tuple[float, float, float]:
    """(median, min, max)."""
    values = list(values)
    return statistics.median(values), min(values), max(values)


def fmt(values, digits: int = 2) -> tuple[str, str]:
    """('median', 'min-max') strings."""
    m, lo, hi = stats(values)
    return f"{m:.{digits}f}", f"{lo:.{digits}f}-{hi:.{digits}f}"


def matmul_peak(n: int = 1024, reps: int = 4, dtype=torch.float32, device: str = "cpu") -> Callable[[], float]:
    """A contender measuring dense-matmul throughput: ``reps`` products of (n x n) @ (n x n); returns its FLOPs."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)

    def run():
        for _ in range(reps):
            c = a @ b
        if device != "cpu":
            torch.cuda.synchronize()
        del c
        return 2.0 * n ** 3 * reps
    return run
