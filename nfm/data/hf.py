"""Sessions -> Hugging Face ``DatasetDict`` (Arrow), saved atomically, with a card.

Columns of every split (one row = one trial):

==================  ==========================  ==================================
column              type                        meaning
==================  ==========================  ==================================
session_id          string                      session (recording) id
subject_id          string                      animal id (split by animal on it)
trial_id            int32                       row of the session's trials table
split               string                      train / validation / test
spike_times         list<float32>               s relative to the align event,
                                                in [window start, window stop)
spike_units         list<int32>                 unit row in the session's unit table
activity            list<list<float32>>         2-photon only: (n_bins, n_units)
trial_<col>         float32                     trials-table column (NaN if absent)
behavior_<name>     list<float32> (n_bins)      behaviour at bin centres (NaN if absent)
stimulus_<name>     list<float32> (n_bins)      stimulus feature at bin centres
==================  ==========================  ==================================

Next to the Arrow splits, ``nfm_meta.json`` holds what every row shares
(:class:`nfm.data.meta.DatasetMeta`): bin size, window, align event,
modality, behaviour names and units, the region vocabulary, and each
session's unit table (ids, Beryl regions, depth, quality), subject, source
and trial-filter counts. ``README.md`` is the generated dataset card.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa

from ..files import apply_umask
from .binning import frame_period, n_bins_for
from .meta import FORMAT_VERSION, META_FILE, DatasetMeta, SessionMeta
from .records import SPLITS, assign_splits, session_table
from .schema import DataError, Session

TIME_SUFFIXES = ("_times", "_time")


def _is_label(col: str) -> bool:
    """Trial columns that are labels (choice, block, contrast...) rather than event times."""
    return not (col.endswith(TIME_SUFFIXES) or col.startswith("intervals"))


def _fill_missing(table: pa.Table, columns: dict[str, pa.DataType], n_bins: int) -> pa.Table:
    n = table.num_rows
    for col, typ in columns.items():
        if col in table.column_names:
            continue
        if pa.types.is_list(typ):  # behaviour / stimulus absent in this session: NaN per bin
            values = np.full(n * n_bins, np.nan, dtype=np.float32)
            arr = pa.ListArray.from_arrays(pa.array((np.arange(n + 1) * n_bins).astype(np.int32)), pa.array(values))
        else:
            arr = pa.array(np.full(n, np.nan, dtype=np.float32))
        table = table.append_column(col, arr)
    return table.select(sorted(table.column_names, key=_column_order))


def _column_order(col: str) -> tuple[int, str]:
    fixed = ["session_id", "subject_id", "trial_id", "split", "spike_times", "spike_units", "activity"]
    if col in fixed:
        return (fixed.index(col), "")
    for i, p in enumerate(("trial_", "behavior_", "stimulus_")):
        if col.startswith(p):
            return (10 + i, col)
    return (20, col)


def build_dataset(
    sessions: Sequence[Session],
    align_event: str = "stimOn_times",
    window: tuple[float, float] = (-0.5, 1.5),
    bin_size: float = 0.02,
    split: tuple[float, float, float] = (0.7, 0.1, 0.2),
    seed: int = 42,
    progress: bool = False,
    split_mode: str = "random",
    calcium_binning: str = "frames",
):
    """Trial-aligned ``DatasetDict`` (train/validation/test by trial) and its meta.

    Args:
        sessions: validated or not (``validate()`` is called on each).
        align_event: trials column that each window is aligned to (seconds).
        window: (start, stop) seconds relative to the align event.
        bin_size: seconds; the window must hold a whole number of bins.
        split: train/validation/test fractions of each session's trials.
        seed: shuffling seed of the per-session split (the same for every session).
        split_mode: ``"random"`` (shuffled trials) or ``"contiguous"`` (time order; see ``assign_splits``).
        calcium_binning: 2-photon only: ``"frames"`` (each bin the mean of its frames; ``bin_size`` must be at
            least every session's frame period, so sessions of different frame rates share a grid by averaging
            to the slowest) or ``"interpolate"`` (explicit opt-in; see :func:`nfm.data.records.session_table`).

    Returns: ``(datasets.DatasetDict, DatasetMeta)``; see the module docstring.
    """
    import datasets
    from tqdm.auto import tqdm

    if not sessions:
        raise ValueError("build_dataset: no sessions given")
    window = (float(window[0]), float(window[1]))
    T = n_bins_for(window, bin_size)
    modalities = {s.modality for s in sessions}
    if len(modalities) != 1:
        raise ValueError(f"sessions mix modalities {sorted(modalities)}; build one dataset per modality")
    seen = Counter(s.session_id for s in sessions)
    dup = [k for k, c in seen.items() if c > 1]
    if dup:
        raise ValueError(f"session id {dup[0]!r} appears {seen[dup[0]]} times")
    tables, meta_sessions = [], {}
    behavior_units: dict[str, str] = {}
    for s in tqdm(sessions, desc="sessions", disable=not progress):
        s.validate()
        labels = assign_splits(s.n_trials, split, seed, mode=split_mode)
        tables.append(session_table(s, align_event=align_event, window=window, bin_size=bin_size, split=labels,
                                    calcium_binning=calcium_binning))
        for name, unit in s.behavior_units.items():
            if behavior_units.setdefault(name, unit) != unit:
                raise DataError(s.source, f"behavior.{name}", f"unit {unit!r} differs from {behavior_units[name]!r} in other sessions")
        meta_sessions[s.session_id] = SessionMeta(
            subject_id=s.subject_id,
            n_units=s.n_units,
            n_trials=s.n_trials,
            n_spikes_in_windows=_n_events(tables[-1]) if s.modality == "spikes" else None,
            split_counts={name: int((labels == i).sum()) for i, name in enumerate(SPLITS)},
            units=s.unit_table(),
            source=s.source,
            extra=_jsonable({**s.extra, **({"frame_period_s": frame_period(s.frame_times)}
                                           if s.modality == "calcium" else {})}),
        )
    columns: dict[str, pa.DataType] = {}
    for t in tables:
        for f in t.schema:
            columns.setdefault(f.name, f.type)
    tables = [_fill_missing(t, columns, T) for t in tables]
    full = pa.concat_tables(tables, promote_options="none")
    split_col = np.asarray(full.column("split").to_pylist())
    dd = datasets.DatasetDict({
        name: datasets.Dataset(full.filter(pa.array(split_col == name))) for name in SPLITS
    })
    regions = sorted({r for m in meta_sessions.values() for r in m.regions})
    trial_columns = sorted(c[len("trial_"):] for c in columns if c.startswith("trial_") and c != "trial_id")
    meta = DatasetMeta(
        format_version=FORMAT_VERSION,
        modality=modalities.pop(),
        align_event=align_event,
        window=window,
        bin_size=float(bin_size),
        n_bins=T,
        split_fractions=tuple(split),
        split_mode=split_mode,
        seed=seed,
        behavior_names=sorted(c[len("behavior_"):] for c in columns if c.startswith("behavior_")),
        behavior_units=behavior_units,
        stimulus_names=sorted(c[len("stimulus_"):] for c in columns if c.startswith("stimulus_")),
        trial_columns=trial_columns,
        trial_label_names=[c for c in trial_columns if _is_label(c)],
        regions=regions,
        sessions=meta_sessions,
    )
    if meta.modality == "calcium":
        meta.frame_period = max(float(m.extra["frame_period_s"]) for m in meta_sessions.values())
        meta.calcium_binning = calcium_binning
    return dd, meta


def _n_events(table: pa.Table) -> int:
    """Number of spike events in a table's ``spike_units`` lists."""
    import pyarrow.compute as pc

    total = pc.sum(pc.list_value_length(table.column("spike_units"))).as_py()
    return int(total or 0)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def save_dataset(dd, meta: DatasetMeta, output_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write splits + ``nfm_meta.json`` + card atomically (temp folder, then rename).

    A crash mid-write leaves no half-written ``output_dir``. An existing
    folder is replaced only with ``overwrite=True``.
    """
    out = Path(output_dir)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
    try:
        dd.save_to_disk(str(tmp / "data"))
        for name in os.listdir(tmp / "data"):
            os.replace(tmp / "data" / name, tmp / name)
        os.rmdir(tmp / "data")
        meta.save(tmp)
        (tmp / "README.md").write_text(render_card(dd, meta))
        apply_umask(tmp)  # mkdtemp made the folder 0700: give it the process umask's mode, like the files in it
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _remove_stale_staging(out: Path) -> None:
    """Remove the staging folders (``.<name>.tmp-<pid>-*``) that a killed :func:`save_dataset` left beside
    ``out``; a folder of a process still running is left alone."""
    for p in out.parent.glob(f".{out.name}.tmp-*"):
        pid = p.name[len(f".{out.name}.tmp-"):].split("-", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
            alive = int(pid) != os.getpid()
        except ProcessLookupError:
            alive = False
        except PermissionError:
            alive = True
        if not alive:
            shutil.rmtree(p, ignore_errors=True)


def load_dataset(path: str | os.PathLike):
    """Read ``(DatasetDict, DatasetMeta)`` written by :func:`save_dataset` (no pickle involved).

    Raises ``FileNotFoundError`` for a folder that is not an nfm dataset and :class:`DataError` naming the file
    for a bad ``nfm_meta.json`` or a missing split."""
    import datasets

    path = Path(path)
    meta = DatasetMeta.load(path)
    index = path / "dataset_dict.json"
    try:
        listed = json.loads(index.read_text())["splits"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(str(index), "splits", f"unreadable split index ({type(err).__name__}: {err})") from None
    for name in SPLITS:
        if name not in listed or not (path / name / "dataset_info.json").is_file():
            raise DataError(str(path / name), "splits", f"split {name!r} is missing (the folder lists {listed}); "
                                                       "re-run recipes/prepare_data.py")
    dd = datasets.load_from_disk(str(path))
    return dd, meta


def push_dataset_to_hub(path: str | os.PathLike, repo_id: str, private: bool = True, token: str | None = None):
    """Upload a saved dataset folder (Arrow splits, ``nfm_meta.json``, card) to the Hub."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    dd, _ = load_dataset(path)
    dd.push_to_hub(repo_id, private=private, token=token)
    api.upload_file(path_or_fileobj=str(Path(path) / META_FILE), path_in_repo=META_FILE, repo_id=repo_id, repo_type="dataset")
    api.upload_file(path_or_fileobj=str(Path(path) / "README.md"), path_in_repo="README.md", repo_id=repo_id, repo_type="dataset")


def summarize(dd, meta: DatasetMeta) -> dict:
    """Counts for the one-screen summary and the card."""
    sessions = meta.sessions
    region_units = Counter(r for m in sessions.values() for r in m.regions)
    n_spikes = 0
    if meta.modality == "spikes":
        n_spikes = sum(_n_events(dd[s].data.table) for s in dd)
    return {
        "sessions": len(sessions),
        "subjects": len({m.subject_id for m in sessions.values()}),
        "units": sum(m.n_units for m in sessions.values()),
        "trials": {s: dd[s].num_rows for s in dd},
        "spikes_in_windows": n_spikes,
        "units_per_region": dict(sorted(region_units.items())),
        "modality": meta.modality,
        "bin_size": meta.bin_size,
        "n_bins": meta.n_bins,
        "clock": _clock(meta),
    }


def _clock(meta: DatasetMeta) -> str:
    """One line on how 2-photon frames became bins ("" for spike data)."""
    if meta.modality != "calcium":
        return ""
    if meta.calcium_binning is None or meta.frame_period is None:
        return "2-photon activity interpolated at bin centres (dataset written before frame clocks were recorded)"
    fp = float(meta.frame_period)
    if meta.calcium_binning == "interpolate":
        return (f"2-photon activity interpolated at {meta.bin_size:g} s bin centres between frames of "
                f"{fp:.4g} s ({1 / fp:.4g} Hz; explicit --calcium_interpolate: temporal masks leak)")
    return (f"2-photon activity at its own clock: {meta.bin_size:.4g} s bins = {meta.bin_size / fp:.3g} x the "
            f"slowest frame period {fp:.4g} s ({1 / fp:.4g} Hz), frames averaged per bin")


def render_card(dd, meta: DatasetMeta) -> str:
    """Markdown dataset card with YAML front matter; source files are named by their last path part
    (``.../spks.npy``), never by an absolute local path."""
    s = summarize(dd, meta)
    lines = [
        "---",
        "tags: [neuroscience, neural-population, nfm]",
        f"modality: {meta.modality}",
        "---",
        "# nfm dataset",
        "",
        f"- sessions: {s['sessions']}, subjects: {s['subjects']}, units: {s['units']}",
        "- trials: " + ", ".join(f"{k} {v}" for k, v in s["trials"].items()),
        f"- spikes inside trial windows: {s['spikes_in_windows']}" if meta.modality == "spikes" else f"- {_clock(meta)}",
        f"- alignment: `{meta.align_event}`, window {meta.window[0]} s to {meta.window[1]} s, bin size {meta.bin_size} s ({meta.n_bins} bins)",
        f"- split: {list(meta.split_fractions)} of each session's trials ({meta.split_mode}), seed {meta.seed}",
        "- behaviour: " + (", ".join(f"{n} ({meta.behavior_units.get(n, '?')})" for n in meta.behavior_names) or "none"),
        "- stimulus features: " + (", ".join(meta.stimulus_names) or "none"),
        "",
        "## Sessions",
        "",
        "| session | subject | units | trials | source | filters |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for sid, m in meta.sessions.items():
        filt = m.extra.get("trial_filter", "") if isinstance(m.extra, dict) else ""
        lines.append(f"| {sid} | {m.subject_id} | {m.n_units} | {m.n_trials} | {m.source} | {filt} |")
    from nfm.cards import strip_local_paths  # a card names no local path (sources: .../<last part>)

    lines += ["", "## Units per region (Beryl)", "", "| region | units |", "| --- | --- |"]
    lines += [f"| {r} | {n} |" for r, n in s["units_per_region"].items()]
    lines += ["", "Load with `nfm.data.hf.load_dataset(path)` (Arrow splits + `nfm_meta.json`)."]
    return strip_local_paths("\n".join(lines) + "\n")
