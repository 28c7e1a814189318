"""One call from raw recordings (or a synthetic world) to a saved nfm dataset.

``prepare(source, output_dir, ...)`` is what ``recipes/prepare_data.py``
runs; it loads sessions from the source, aligns and bins them with
:func:`nfm.data.hf.build_dataset`, saves atomically and returns a summary.
Per-source defaults for alignment follow the source's nature (MtM's
-0.5..+1.5 s around ``stimOn_times`` at 20 ms for IBL; back-to-back 2 s
windows on ``start_time`` for recordings without trials); every default can
be overridden.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence


SOURCES = ("ibl", "ibl-mesoscope", "suite2p", "nwb", "binned", "trials", "synthetic")
WORLDS = ("ibl_like", "hub_network", "calcium", "drift")

# (align_event, window (s), bin_size (s)) per source; a bin size of None for 2-photon sources means "the
# imaging frame period" (see calcium_bin_size); "binned" takes the file's own; "trials" (trial-aligned counts)
# takes the files' own bin size and window (0, bins x bin size) on the first bin start (see sources.trials.dataset_grid)
DEFAULTS = {
    "ibl": ("stimOn_times", (-0.5, 1.5), 0.02),
    "ibl-mesoscope": ("stimOn_times", (-0.5, 1.5), None),
    "suite2p": ("start_time", (0.0, 2.0), None),
    "nwb": ("start_time", (0.0, 2.0), 0.02),
    "binned": ("start_time", (0.0, 2.0), None),  # bin size: the file's own
    "trials": ("start_time", None, None),  # window and bin size: the files' own
    "synthetic:ibl_like": ("stimOn_times", (-0.5, 1.5), 0.02),
    "synthetic:hub_network": ("start_time", (0.0, 2.0), 0.01),
    "synthetic:calcium": ("stimOn_times", (-0.5, 1.5), None),
    "synthetic:drift": ("start_time", (0.0, 2.0), 0.02),
}


def calcium_bin_size(sessions, window: tuple[float, float], frames_per_bin: int = 1) -> float:
    """Default bin size [s] of 2-photon sessions: ``frames_per_bin`` x the slowest session's frame period (so
    sessions of different frame rates share the grid by averaging frames, never by interpolating), stretched
    to the nearest length that cuts ``window`` into whole bins (``n = floor(window / (k * period))`` bins; the
    bin is then at most ``1 / n`` longer than k frames, so no bin is ever empty).  Raises ``ValueError`` when
    the window is shorter than one bin."""
    from .binning import frame_period

    k = int(frames_per_bin)
    if k < 1:
        raise ValueError(f"frames_per_bin {frames_per_bin!r} must be a whole number >= 1")
    period = max(frame_period(s.frame_times) for s in sessions)
    length = float(window[1]) - float(window[0])
    n = int(length / (k * period) + 1e-6)
    if n < 1:
        raise ValueError(f"window {list(window)} s is shorter than {k} frame(s) of {period:.4g} s")
    return length / n


def load_source_sessions(
    source: str,
    *,
    eids: Sequence[str] | None = None,
    inputs: Sequence[str] | None = None,
    one_cache_dir: str | None = None,
    world: str = "ibl_like",
    seed: int = 0,
    source_options: dict[str, Any] | None = None,
):
    """Sessions of one source (see :data:`SOURCES`); ``source_options`` go to the source's loader."""
    opts = dict(source_options or {})
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; choose one of {SOURCES}")
    if source in ("ibl", "ibl-mesoscope"):
        if not eids:
            if one_cache_dir is None:
                raise ValueError(f"--source {source} needs --eid / --eids FILE, or --one_cache_dir DIR (every "
                                 "session of that local cache)")
            from .sources.ibl import cache_eids

            eids = cache_eids(one_cache_dir)
            print(f"no --eid/--eids: taking every session of the ONE cache {one_cache_dir}: {len(eids)} "
                  f"session(s)", flush=True)
        if source == "ibl":
            from .sources import ibl as mod
        else:
            from .sources import ibl_mesoscope as mod
        return mod.load_sessions(list(eids), one_cache_dir=one_cache_dir, **opts)
    if source in ("suite2p", "nwb", "binned", "trials"):
        if not inputs:
            raise ValueError(f"--source {source} needs --input PATH ...")
        for p in inputs:
            if not Path(p).exists():
                raise FileNotFoundError(f"--input {p}: no such file or folder")
        if source == "binned":
            from .sources.binned import load_npz

            return [load_npz(p, **opts) for p in inputs]
        if source == "trials":
            from .sources import trials as mod

            return mod.load_sessions(list(inputs), **opts)
        if source == "suite2p":
            from .sources import suite2p as mod
        else:
            from .sources import nwb as mod
        return mod.load_sessions(list(inputs), **opts)
    from .sources import synthetic

    if world == "ibl_like":
        return synthetic.make_ibl_like_world(seed=seed, **opts)
    if world == "hub_network":
        return [synthetic.make_hub_network(seed=seed, **opts)[0]]
    if world == "calcium":
        return synthetic.make_calcium_world(seed=seed, **opts)
    if world == "drift":
        return synthetic.make_drift_world(seed=seed, **opts)
    raise ValueError(f"unknown synthetic world {world!r}; choose one of {WORLDS}")


def _is_back_to_back(trials: dict) -> bool:
    """True for a trials table made by ``consecutive_windows`` (only start/stop, each window ends where the next starts)."""
    import numpy as np

    if set(trials) != {"start_time", "stop_time"}:
        return False
    return bool(np.allclose(trials["stop_time"][:-1], trials["start_time"][1:]))


def read_eids(path: str | Path) -> list[str]:
    """Experiment ids from a manifest: one per line, ``#`` comments and blank lines ignored."""
    lines = Path(path).read_text().splitlines()
    return [ln.split("#", 1)[0].strip() for ln in lines if ln.split("#", 1)[0].strip()]


def prepare(
    source: str,
    output_dir: str | Path,
    *,
    eids: Sequence[str] | None = None,
    inputs: Sequence[str] | None = None,
    one_cache_dir: str | None = None,
    world: str = "ibl_like",
    seed: int = 0,
    align_event: str | None = None,
    window: tuple[float, float] | None = None,
    bin_size: float | None = None,
    split: tuple[float, float, float] = (0.7, 0.1, 0.2),
    split_seed: int = 42,
    split_mode: str | None = None,
    frames_per_bin: int = 1,
    calcium_interpolate: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    source_options: dict[str, Any] | None = None,
    heldout_subjects: Sequence[str] | None = None,
) -> dict:
    """Load, align, bin and save; return the summary dict (sessions, subjects, units, trials, spikes, held out).

    ``heldout_subjects``: animals marked as kept out of pretraining (``extra["heldout"]`` of their sessions):
    ``recipes/pretrain.py`` leaves them out and ``recipes/finetune_lora.py`` adapts to them by default.  An
    unknown subject id is an error naming the dataset's subjects.

    2-photon data are binned at their own clock: the default ``bin_size`` is ``frames_per_bin`` x the slowest
    session's imaging frame period (:func:`calcium_bin_size`), each bin the mean of its frames; a ``bin_size``
    finer than a session's frame period raises (naming the frame rate) unless ``calcium_interpolate=True``
    asks for linear interpolation between frames (then temporally masked bins leak; see
    :mod:`nfm.data.records`).

    ``split_mode`` defaults to ``"random"`` for trial-structured data and to
    ``"contiguous"`` when every session's trials are back-to-back windows cut
    from a continuous recording, where shuffled neighbours would leak into the
    test set.
    """
    from .hf import build_dataset, save_dataset, summarize

    key = f"synthetic:{world}" if source == "synthetic" else source
    d_align, d_window, d_bin = DEFAULTS.get(key, DEFAULTS["nwb"])
    sessions = load_source_sessions(source, eids=eids, inputs=inputs, one_cache_dir=one_cache_dir,
                                    world=world, seed=seed, source_options=source_options)
    if source == "trials":  # the files' own grid; a finer, off-grid or out-of-trial request is refused
        from .sources.trials import dataset_grid

        given_window = window is not None
        window, bin_size = dataset_grid(sessions, tuple(window) if window else None, bin_size or None)
    else:
        given_window = window is not None
    window = tuple(window or d_window)
    calcium = bool(sessions) and all(s.modality == "calcium" for s in sessions)
    if not bin_size and calcium:
        bin_size = calcium_bin_size(sessions, window, frames_per_bin)
    elif not bin_size and d_bin is None and source != "binned":
        bin_size = DEFAULTS["nwb"][2]
    mark_heldout(sessions, heldout_subjects)
    bin_size = bin_size or d_bin or sessions[0].extra["source_bin_size"]
    if split_mode is None:  # windows cut from a continuous recording: keep time order
        split_mode = "contiguous" if all(_is_back_to_back(s.trials) for s in sessions) else "random"
    alignment = _alignment(sessions, key, align_event, d_align, window, given_window, split_mode)
    dd, meta = build_dataset(sessions, align_event=align_event or d_align, window=window,
                             bin_size=bin_size, split=split, seed=split_seed, progress=progress,
                             split_mode=split_mode,
                             calcium_binning="interpolate" if calcium_interpolate else "frames")
    meta.source = key
    save_dataset(dd, meta, output_dir, overwrite=overwrite)
    out = summarize(dd, meta)
    held: dict[str, list[str]] = {}
    for sid in heldout_sessions(meta):
        held.setdefault(meta.sessions[sid].subject_id, []).append(sid)
    out["heldout"] = held
    out["alignment"] = alignment
    return out


def _time_columns(trials: dict) -> list[str]:
    """Columns of a trials table that hold times (``*_time`` / ``*_times`` / ``*Time*``)."""
    return [k for k in trials if k.lower().endswith(("_time", "_times")) or "time" in k.lower()]


def _alignment(sessions, key: str, align_event, d_align: str, window, given_window: bool, split_mode: str) -> dict:
    """What the summary says about the alignment: the column and window used (given or the source's default),
    the trials table's other time columns, and the recordings cut into back-to-back windows."""
    align = align_event or d_align
    cut = [s for s in sessions if (s.extra or {}).get("trials_source") == "consecutive_windows"
           or _is_back_to_back(s.trials)]
    tables = [s for s in sessions if s not in cut]
    others = sorted({c for s in tables for c in _time_columns(s.trials)} - {align})
    return {"align_event": align, "align_given": bool(align_event), "window": [float(w) for w in window],
            "window_given": bool(given_window), "source": key, "other_time_columns": others,
            "back_to_back": [s.session_id for s in cut], "n_sessions": len(sessions), "split_mode": split_mode}


HELDOUT_KEY = "heldout"


def mark_heldout(sessions, subjects: Sequence[str] | None) -> None:
    """Mark the sessions of ``subjects`` as held out of pretraining (``session.extra["heldout"] = True``)."""
    subjects = list(subjects or [])
    if not subjects:
        return
    have = list(dict.fromkeys(s.subject_id for s in sessions))
    unknown = [s for s in subjects if s not in have]
    if unknown:
        raise ValueError(f"--heldout_subjects: subject {unknown[0]!r} is not in the data (subjects: {have})")
    for s in sessions:
        if s.subject_id in subjects:
            s.extra = {**dict(s.extra or {}), HELDOUT_KEY: True}


def heldout_sessions(meta) -> list[str]:
    """Session ids the dataset marks as held out of pretraining (see :func:`mark_heldout`)."""
    return [sid for sid, m in meta.sessions.items() if isinstance(m.extra, dict) and m.extra.get(HELDOUT_KEY)]


def format_summary(summary: dict, output_dir: str | Path) -> str:
    """The one-screen summary printed by ``recipes/prepare_data.py`` (held-out animals and their session ids
    included: the ids a LoRA adaptation takes)."""
    t = summary["trials"]
    regions = ", ".join(f"{r} {n}" for r, n in summary["units_per_region"].items())
    lines = [
        f"nfm dataset written to {output_dir}",
        f"  sessions {summary['sessions']}  subjects {summary['subjects']}  units {summary['units']}",
        f"  trials   train {t.get('train', 0)}  validation {t.get('validation', 0)}  test {t.get('test', 0)}",
        (f"  spikes   {summary['spikes_in_windows']} inside trial windows" if not summary.get("clock")
         else f"  clock    {summary['clock']}"),
        f"  bins     {summary.get('n_bins')} of {summary.get('bin_size', 0):.4g} s",
        f"  regions  {regions}",
    ]
    a = summary.get("alignment")
    if a:
        w0, w1 = a["window"]
        how = "--align_event" if a["align_given"] else f"the {a['source']} default; --align_event NAME to change"
        win = "--window" if a["window_given"] else "default; --window START END to change"
        lines.append(f"  aligned  on {a['align_event']} ({how}), window [{w0:g}, {w1:g}] s ({win})")
        if a["other_time_columns"]:
            shown = ", ".join(a["other_time_columns"][:12]) + (" ..." if len(a["other_time_columns"]) > 12 else "")
            lines.append(f"           other time columns of the trials table: {shown}")
        if a["back_to_back"]:
            order = "in time order" if a["split_mode"] == "contiguous" else "shuffled"
            lines.append(f"  windows  {len(a['back_to_back'])} of {a['n_sessions']} recording(s) have no trials "
                         f"table: cut into back-to-back {w1 - w0:g} s windows (split {a['split_mode']}, {order})")
    held = summary.get("heldout") or {}
    if held:
        for subject, ids in held.items():
            lines.append(f"  held out {subject}: {' '.join(ids)}  (recipes/pretrain.py leaves it out; "
                         "recipes/finetune_lora.py adapts to it)")
    else:
        lines.append("  held out none (every animal is pretrained on; --heldout_subjects keeps animals out)")
    return "\n".join(lines)
