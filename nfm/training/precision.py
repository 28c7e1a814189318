"""Training precision: ``--precision {auto,fp32,bf16}`` (and transformers' ``--bf16`` / ``--fp16``) resolved
before ``TrainingArguments`` is built, so a CPU run in bf16 gets ``use_cpu`` (transformers refuses ``--bf16``
on a machine without a bf16 GPU otherwise) and a wrong combination is a one-line error.

The rule (:func:`resolve_precision`):

* ``fp32``: float32 everywhere.
* ``bf16`` (or ``--bf16``): ``torch.autocast(dtype=bfloat16)`` around forward and loss (Accelerate's own
  autocast: ``TrainingArguments(bf16=True)``, with ``use_cpu=True`` on a machine without CUDA); master weights,
  gradients and optimizer state stay float32, and the model computes its likelihoods, read-out log-rates,
  logits and softmax statistics in float32 (:func:`nfm.models.mixed_precision.full_precision`).  On a CPU without
  AMX / AVX512-BF16 it runs, emulated and slower than fp32: a warning says so.
* ``auto`` (default): bf16 only where the hardware has it -- the CPU's ``/proc/cpuinfo`` flags ``amx_bf16`` or
  ``avx512_bf16`` (``torch.cuda.is_bf16_supported()`` on a GPU) -- *and* a start-up probe (:func:`probe`,
  under 2 s: an MLP block at the model's hidden size, forward and backward, fp32 and bf16 autocast alternating,
  median of paired ratios) measures bf16 at least :data:`MIN_SPEEDUP` x faster; fp32 otherwise.  In a
  multi-process launch the probe is skipped (the ranks would time each other and might disagree): the hardware
  flags decide.
* ``--fp16``: CUDA only (a one-line error on a CPU); it contradicts ``--precision bf16``.
* ``accelerate launch --mixed_precision bf16`` (``ACCELERATE_MIXED_PRECISION``) counts as ``--bf16``.

The choice and its reason are printed once (main process) and recorded (:meth:`PrecisionChoice.record`) in
the run's ``eval_summary.json`` (``train.precision``).
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PRECISIONS = ("auto", "fp32", "bf16")
#: bf16 CPU instruction sets (``/proc/cpuinfo`` flags) that make bf16 matmuls fast
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
#: ``auto`` picks bf16 only when the probe measures it at least this much faster than fp32
MIN_SPEEDUP = 1.10
#: wall-clock budget of the start-up probe [s]
PROBE_BUDGET_S = 1.5


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` says."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> set[str]:
    """Every flag of the first ``flags`` line of ``/proc/cpuinfo`` (empty where there is none: not Linux)."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_bf16_flags(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> list[str]:
    """The bf16 instruction-set flags (:data:`BF16_CPU_FLAGS`) this CPU reports, e.g. ``["amx_bf16",
    "avx512_bf16"]`` on a Sapphire Rapids Xeon, ``[]`` on a CPU without them."""
    flags = cpu_flags(cpuinfo)
    return [f for f in BF16_CPU_FLAGS if f in flags]


def probe(hidden_size: int, intermediate_size: int | None = None, device: str = "cpu",
          budget_s: float = PROBE_BUDGET_S, tokens: int = 1024, rounds: int = 5) -> dict[str, Any]:
    """Time one MLP block (``tokens`` x H -> I -> H, GELU, forward + backward) in float32 and under bf16 autocast,
    alternating, after one untimed call each; at most ``rounds`` pairs and about ``budget_s`` seconds (the token
    count grows from 32 to ``tokens`` while one fp32 + one bf16 call take under a tenth of the budget).  Returns ``{"hidden_size",
    "intermediate_size", "tokens", "rounds", "fp32_ms", "bf16_ms", "speedup"}`` (``speedup``: median over
    rounds of fp32 time / bf16 time; > 1: bf16 is faster) and ``seconds`` (the probe's own wall time)."""
    import torch
    import torch.nn.functional as F

    t_start = time.perf_counter()
    H = int(hidden_size)
    inter = int(intermediate_size or 4 * H)
    gen = torch.Generator(device="cpu").manual_seed(0)
    w1 = (torch.randn(inter, H, generator=gen) / H ** 0.5).to(device).requires_grad_(True)
    w2 = (torch.randn(H, inter, generator=gen) / inter ** 0.5).to(device).requires_grad_(True)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def make(n):
        x = torch.randn(n, H, generator=gen).to(device)

        def run(bf16: bool):
            with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
                y = F.linear(F.gelu(F.linear(x, w1)), w2)
            y.float().square().mean().backward()
            w1.grad = w2.grad = None
            sync()
        return run

    n = 32
    run = make(n)
    run(False)
    run(True)  # warm-up of both paths
    while n < int(tokens):  # grow the token count while one fp32 + one bf16 call stay under a tenth of the budget
        t = time.perf_counter()
        run(False)
        run(True)
        if time.perf_counter() - t > budget_s / 10:
            break
        n *= 2
        run = make(n)
    fp32, bf16 = [], []
    for r in range(int(rounds)):
        for is_bf16 in ((False, True) if r % 2 == 0 else (True, False)):
            t = time.perf_counter()
            run(is_bf16)
            (bf16 if is_bf16 else fp32).append(time.perf_counter() - t)
        if time.perf_counter() - t_start + fp32[-1] + bf16[-1] > budget_s:  # the next pair would end past it
            break
    ratios = [a / b for a, b in zip(fp32, bf16)]
    return {"hidden_size": H, "intermediate_size": inter, "tokens": n, "rounds": len(ratios),
            "fp32_ms": round(1e3 * statistics.median(fp32), 3), "bf16_ms": round(1e3 * statistics.median(bf16), 3),
            "speedup": round(statistics.median(ratios), 3), "seconds": round(time.perf_counter() - t_start, 3)}


@dataclass
class PrecisionChoice:
    """What :func:`resolve_precision` decided: ``precision`` (``fp32`` | ``bf16`` | ``fp16``), what was
    ``requested``, the ``device`` kind, the hardware seen, the probe's figures (or None) and the ``reason``;
    ``training_arguments``: the ``TrainingArguments`` fields that carry it out; ``warning``: a line to print
    (bf16 asked for on hardware that emulates it)."""

    precision: str
    requested: str
    reason: str
    device: str
    hardware: str
    bf16_hardware: bool
    cpu_bf16_flags: list[str] = field(default_factory=list)
    probe: dict[str, Any] | None = None
    warning: str | None = None
    training_arguments: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """The JSON record written into the run's outputs."""
        out = asdict(self)
        out.pop("training_arguments")
        return out

    def line(self) -> str:
        """The line printed at start-up."""
        return f"precision: {self.precision} ({self.reason})"


def _usage_error(flag: str, message: str):
    from nfm.errors import UsageError

    return UsageError(flag, message)


def resolve_precision(requested: str = "auto", *, bf16: bool = False, fp16: bool = False, use_cpu: bool = False,
                      hidden_size: int = 128, intermediate_size: int | None = None, world_size: int = 1,
                      cuda_available: bool | None = None, cuda_bf16: bool | None = None,
                      bf16_flags: list[str] | None = None, probe_fn=None) -> PrecisionChoice:
    """Resolve ``--precision`` with transformers' ``--bf16`` / ``--fp16`` into one :class:`PrecisionChoice` (the
    rule is in the module docstring).  ``cuda_available`` / ``cuda_bf16`` / ``bf16_flags`` / ``probe_fn``
    (``probe_fn(hidden_size, intermediate_size, device) -> probe dict``): detected when None (tests pass them).

    Raises :class:`nfm.errors.UsageError` (one line, exit 2 in a recipe) for ``--fp16`` on a CPU, and for
    ``--precision fp32`` with ``--bf16`` / ``--fp16``, or ``--precision bf16`` with ``--fp16``.
    """
    if requested not in PRECISIONS:
        raise _usage_error("--precision", f"{requested!r} is not one of {', '.join(PRECISIONS)}")
    if bf16 and fp16:
        raise _usage_error("--fp16", "and --bf16 are both set; give one precision (--precision bf16 or fp32)")
    if requested == "fp32" and (bf16 or fp16):
        which = "bf16" if bf16 else "fp16"
        raise _usage_error("--precision", f"fp32 contradicts --{which} true (or accelerate's --mixed_precision "
                                          f"{which}); give one of them")
    if requested == "bf16" and fp16:
        raise _usage_error("--precision", "bf16 contradicts --fp16 true; give one of them")
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()
    on_cuda = bool(cuda_available) and not use_cpu
    if on_cuda:
        import torch

        if cuda_bf16 is None:
            cuda_bf16 = bool(torch.cuda.is_bf16_supported())
        try:
            gpu = torch.cuda.get_device_name()
        except (RuntimeError, AssertionError):  # no usable device (e.g. a test passing cuda_available=True)
            gpu = "(unnamed)"
        device, hardware = "cuda", f"GPU {gpu}"
        has_bf16, flags = bool(cuda_bf16), []
        missing = f"{hardware} does not support bf16"
    else:
        flags = cpu_bf16_flags() if bf16_flags is None else list(bf16_flags)
        device, hardware = "cpu", f"CPU {cpu_name()}"
        has_bf16 = bool(flags)
        missing = f"no AMX/AVX512-BF16 on this CPU ({cpu_name()}): bf16 is emulated, not a supported speed path"
    if fp16:
        if not on_cuda:
            raise _usage_error("--fp16", "fp16 mixed precision needs a CUDA GPU and this run is on the CPU; use "
                                         "--precision bf16 (or fp32)")
        return PrecisionChoice("fp16", "fp16", "--fp16 asked for", device, hardware, has_bf16, flags,
                               training_arguments={"fp16": True, "bf16": False})
    overrides_bf16 = {"bf16": True, "fp16": False, **({} if on_cuda else {"use_cpu": True})}
    overrides_fp32 = {"bf16": False, "fp16": False}
    have = ", ".join(flags) if flags else ("bf16 support" if on_cuda else "")
    if requested == "bf16" or bf16:
        asked = "--precision bf16" if requested == "bf16" else "--bf16"
        warning = None if has_bf16 else f"warning: {asked}: {missing}; it will be slower than fp32"
        reason = f"{asked} asked for; {hardware} " + (f"has {have}" if has_bf16 else "has no bf16 hardware")
        return PrecisionChoice("bf16", "bf16", reason, device, hardware, has_bf16, flags, warning=warning,
                               training_arguments=overrides_bf16)
    if requested == "fp32":
        return PrecisionChoice("fp32", "fp32", "--precision fp32 asked for", device, hardware, has_bf16, flags,
                               training_arguments=overrides_fp32)
    # auto
    if not has_bf16:
        return PrecisionChoice("fp32", "auto", f"auto: {missing}", device, hardware, False, flags,
                               training_arguments=overrides_fp32)
    if world_size > 1:
        return PrecisionChoice("bf16", "auto", f"auto: {hardware} has {have}; probe skipped in a {world_size}-process "
                               "launch (the hardware decides, the same on every rank)", device, hardware, True, flags,
                               training_arguments=overrides_bf16)
    measured = (probe_fn or probe)(hidden_size, intermediate_size, device)
    fast = measured["speedup"] >= MIN_SPEEDUP
    reason = (f"auto: {hardware} has {have}; probe at H{measured['hidden_size']}: bf16 {measured['speedup']:.2f}x "
              f"fp32 ({measured['bf16_ms']:.1f} vs {measured['fp32_ms']:.1f} ms per MLP step), "
              + ("faster" if fast else f"under the {MIN_SPEEDUP:.2f}x needed"))
    return PrecisionChoice("bf16" if fast else "fp32", "auto", reason, device, hardware, True, flags, probe=measured,
                           training_arguments=overrides_bf16 if fast else overrides_fp32)


# --------------------------------------------------------------------------- from a recipe's command line
def model_sizes(ns) -> tuple[int, int | None]:
    """(hidden_size, intermediate_size) of the model a recipe's namespace describes: ``--model_overrides``, the
    ``--preset``, or the ``config.json`` of ``--init_from`` / ``--model`` (a local folder); the NfmConfig default
    (128) where none says."""
    for attr in ("init_from", "model"):
        value = getattr(ns, attr, None)
        if value and (Path(str(value)) / "config.json").is_file():
            try:
                cfg = json.loads((Path(str(value)) / "config.json").read_text())
                return int(cfg.get("hidden_size", 128)), cfg.get("intermediate_size")
            except (ValueError, TypeError):
                break
    overrides = getattr(ns, "model_overrides", None)
    if isinstance(overrides, str):
        try:
            overrides = json.loads(overrides)
        except ValueError:
            overrides = None
    overrides = overrides if isinstance(overrides, dict) else {}
    preset = {}
    if getattr(ns, "preset", None):
        from nfm.models.configuration_nfm import PRESETS

        preset = dict(PRESETS.get(ns.preset, {}))
    sizes = {"hidden_size": 128, "intermediate_size": 512, **preset, **overrides}
    return int(sizes["hidden_size"]), sizes.get("intermediate_size")


def _truthy(v) -> bool:
    return v is True or (isinstance(v, str) and v.lower() in ("true", "1", "yes", "y", "t"))


def resolve_from_namespace(ns) -> PrecisionChoice:
    """:func:`resolve_precision` for a recipe's light-parsed namespace (``precision``, ``bf16``, ``fp16``,
    ``use_cpu``; the model's sizes from :func:`model_sizes`; the world size from ``WORLD_SIZE``).

    ``accelerate launch --mixed_precision bf16`` (or a config file saying so: ``ACCELERATE_MIXED_PRECISION``)
    counts as ``--bf16`` (``fp16`` as ``--fp16``): transformers would train in it whatever ``--bf16`` says."""
    use_cpu = _truthy(getattr(ns, "use_cpu", False)) or os.environ.get("ACCELERATE_USE_CPU", "").lower() in (
        "1", "true", "yes")
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower()
    requested = getattr(ns, "precision", "auto") or "auto"
    resumed = resumed_precision(ns) if requested == "auto" else None
    if resumed is not None:  # a resumed run keeps its checkpoint's precision: a new probe could pick the other
        requested = resumed
    hidden, inter = model_sizes(ns)
    choice = resolve_precision(requested,
                             bf16=_truthy(getattr(ns, "bf16", False)) or launcher == "bf16",
                             fp16=_truthy(getattr(ns, "fp16", False)) or launcher == "fp16", use_cpu=use_cpu,
                             hidden_size=hidden, intermediate_size=inter,
                             world_size=int(os.environ.get("WORLD_SIZE", "1") or 1))
    if resumed is not None:
        choice.requested = "auto"
        choice.reason = f"auto: resumed run, the precision of its checkpoint ({resumed})"
    return choice


def resumed_precision(ns) -> str | None:
    """``"bf16"`` / ``"fp32"``: the precision the checkpoint that ``--resume_from_checkpoint`` names (a folder, or
    ``true``/``last``/``latest`` for the newest ``checkpoint-N`` of ``--output_dir``) was trained in, read from its
    ``training_args.json``; None when the run is not resumed or the checkpoint records none.  Resuming under
    another precision than the first part of the run changes the numbers silently."""
    value = getattr(ns, "resume_from_checkpoint", None)
    if value is None or str(value).strip().lower() in ("", "false", "no", "none"):
        return None
    folder = Path(str(value))
    if str(value).lower() in ("true", "last", "latest"):
        out = Path(str(getattr(ns, "output_dir", "") or ""))
        steps = [(int(p.name.split("-")[1]), p) for p in out.glob("checkpoint-*")
                 if p.is_dir() and p.name.split("-")[1].isdigit()] if out.is_dir() else []
        if not steps:
            return None
        folder = max(steps)[1]
    record = folder / "training_args.json"
    if not record.is_file():
        return None
    try:
        return "bf16" if json.loads(record.read_text()).get("bf16") else "fp32"
    except (ValueError, AttributeError):
        return None


__all__ = ["PRECISIONS", "BF16_CPU_FLAGS", "MIN_SPEEDUP", "PrecisionChoice", "cpu_bf16_flags", "cpu_flags",
           "cpu_name", "probe", "resolve_precision", "resolve_from_namespace", "resumed_precision", "model_sizes"]
