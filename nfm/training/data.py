"""Training data: the dataset to train on (``--dataset`` or the synthetic default), which sessions, which
trials, and the data-dependent initialisation of each session's read-in / read-out."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from nfm.data.meta import META_FILE, DatasetMeta
from nfm.data.subsets import rows, subset_split  # noqa: F401 (re-exported: nfm.training.rows / subset_split)

from .arguments import DataArguments, read_id_file


def build_synthetic_dataset(path: str | os.PathLike, data_args: DataArguments, overwrite: bool = False) -> Path:
    """Build the default synthetic IBL-like world and save it as an nfm dataset at ``path``."""
    from nfm.data.prepare import prepare

    prepare("synthetic", path, world="ibl_like", seed=data_args.synthetic_seed, overwrite=overwrite,
            source_options=dict(n_animals=data_args.synthetic_animals,
                                sessions_per_animal=data_args.synthetic_sessions_per_animal,
                                n_trials=data_args.synthetic_trials),
            heldout_subjects=[s for s in (data_args.synthetic_heldout_subjects or [])
                              if s in {f"synth-mouse-{a:02d}" for a in range(data_args.synthetic_animals)}])
    return Path(path)


def prepare_training_data(data_args: DataArguments, training_args):
    """Load ``--dataset`` or build the synthetic default into ``<output_dir>/dataset``.

    In a multi-process run the local main process builds, the others wait and
    then read it. Returns ``(DatasetDict, DatasetMeta, dataset_path)``.
    """
    from nfm.data.hf import load_dataset

    if data_args.dataset:
        path = Path(data_args.dataset)
    else:
        path = Path(training_args.output_dir) / "dataset"
        with training_args.main_process_first(desc="building the synthetic dataset"):
            if not (path / META_FILE).is_file():
                build_synthetic_dataset(path, data_args)
    dd, meta = load_dataset(path)
    return dd, meta, path


def prepare_training_datasets(data_args: DataArguments, training_args) -> list[tuple]:
    """Every ``--dataset`` (mixed pretraining), or the synthetic default: ``[(DatasetDict, DatasetMeta, path)]``.

    Several datasets may differ in modality and time grid; their session ids must be unique (checked here, with
    the dataset folders named)."""
    from nfm.data.hf import load_dataset

    paths = list(getattr(data_args, "dataset_paths", None) or [])
    if len(paths) <= 1:
        return [prepare_training_data(data_args, training_args)]
    out, owner = [], {}
    for p in paths:  # one step per dataset
        dd, meta = load_dataset(p)
        for sid in meta.sessions:
            if sid in owner:
                raise ValueError(f"session {sid!r} is in both --dataset {owner[sid]} and {p}: session ids must be "
                                 "unique across the datasets of one model")
            owner[sid] = p
        out.append((dd, meta, Path(p)))
    return out


def select_sessions(meta: DatasetMeta, data_args: DataArguments) -> list[str]:
    """Session ids to train on, in the dataset's order (include list, then exclusions).

    An included id absent from the dataset is an error (nothing is silently
    dropped); an excluded id absent from it is fine (e.g. the MtM held-out list
    against a dataset that holds only the 35 pretraining sessions).  Without
    ``--sessions``, the animals the dataset marks as held out
    (``prepare_data.py --heldout_subjects``) are left out; a dataset that marks
    any replaces ``synthetic_heldout_subjects`` of the config.  An explicit
    ``--sessions`` list is trained as given, held-out animals included (it is
    never cut); naming a session there and excluding it with ``--exclude_*``
    is an error.
    """
    from nfm.cli import UsageError, check_session_ids, dataset_folder_of, did_you_mean

    available = meta.session_ids
    include = list(data_args.sessions or [])
    where = dataset_folder_of(meta)
    check_session_ids(include, available, where, "--sessions")
    if data_args.sessions_file:
        from_file = read_id_file(data_args.sessions_file)
        check_session_ids(from_file, available, f"{where} (listed in {data_args.sessions_file})", "--sessions_file")
        include += from_file
    if include:
        wanted = set(include)
        chosen = [s for s in available if s in wanted]
    else:
        chosen = available
    excluded = set(data_args.exclude_sessions or [])
    if data_args.exclude_sessions_file:
        excluded |= set(read_id_file(data_args.exclude_sessions_file))
    subjects = set(data_args.exclude_subjects or [])
    known_subjects = set(meta.subjects)
    unknown_subjects = sorted(subjects - known_subjects)
    if unknown_subjects:
        raise UsageError("--exclude_subjects", f"subject {unknown_subjects[0]!r} is not in the dataset {where}; "
                                               f"{did_you_mean(unknown_subjects[0], sorted(known_subjects), 'subjects')}")
    from nfm.data.prepare import heldout_sessions

    if include:  # an explicit list is honoured as given: the held-out marks do not cut it
        dropped = [s for s in chosen if s in excluded or meta.sessions[s].subject_id in subjects]
        if dropped:
            s = dropped[0]
            raise ValueError(f"session {s!r} is named by --sessions and excluded by --exclude_* (subject "
                             f"{meta.sessions[s].subject_id!r}); name it in one of them only")
        return chosen
    marked = heldout_sessions(meta)
    if marked:
        excluded |= set(marked)
    elif meta.is_synthetic:
        subjects |= set(data_args.synthetic_heldout_subjects or []) & known_subjects
    chosen = [s for s in chosen if s not in excluded and meta.sessions[s].subject_id not in subjects]
    if not chosen:
        raise ValueError("no session left to train on after --sessions / --exclude_* selection")
    return chosen


def select_sessions_multi(metas: list[DatasetMeta], data_args: DataArguments) -> list[list[str]]:
    """:func:`select_sessions` over several datasets: ``--sessions`` / ``--exclude_*`` lists apply to the union
    (an included id must be in one of them; subjects excluded must exist in one of them)."""
    import copy

    from nfm.cli import UsageError, check_session_ids, dataset_folder_of, did_you_mean

    include = list(data_args.sessions or [])
    every = [s for m in metas for s in m.sessions]
    where = " + ".join(dataset_folder_of(m) for m in metas)
    check_session_ids(include, every, where, "--sessions")
    if data_args.sessions_file:
        from_file = read_id_file(data_args.sessions_file)
        check_session_ids(from_file, every, f"{where} (listed in {data_args.sessions_file})", "--sessions_file")
        include += from_file
    subjects = set(data_args.exclude_subjects or [])
    known = {sub for m in metas for sub in m.subjects}
    if subjects - known:
        bad = sorted(subjects - known)[0]
        raise UsageError("--exclude_subjects", f"subject {bad!r} is in none of the datasets {where}; "
                                               f"{did_you_mean(bad, sorted(known), 'subjects')}")
    out = []
    for m in metas:  # one step per dataset
        args = copy.copy(data_args)
        args.sessions = [s for s in include if s in m.sessions] if include else None
        args.sessions_file = None
        args.exclude_subjects = sorted(subjects & set(m.subjects)) or None
        if include and not args.sessions:
            raise ValueError(f"--sessions selects no session of {m.path}; drop that dataset or name its sessions")
        out.append(select_sessions(m, args))
    return out


def session_statistics(dataset, meta: DatasetMeta, session_ids: Iterable[str] | None = None,
                       bin_size: float | None = None, transform=None) -> dict[str, dict[str, np.ndarray]]:
    """Per-unit statistics of ``dataset`` (e.g. the training split) over its trials and bins, per session.

    Returns ``{session_id: {"mean": (N,), "input_mean": (N,), "input_std": (N,)}}`` (float64) for the
    sessions of ``session_ids`` (default: every session of ``meta``) that have rows in ``dataset``:

    * ``mean``: spikes: expected count per bin [spikes / bin] at ``bin_size`` s (default: the dataset's);
      2-photon: mean activity (NaN bad frames ignored; 0 for a unit never valid);
    * ``input_mean`` / ``input_std``: mean and standard deviation of ``transform(x)`` (a callable on a
      float32 tensor, e.g. the model's ``transform_input``; default identity) over the same entries.

    Spikes are binned with one ``np.bincount`` per session (trials x bins x units), by
    :func:`nfm.data.binning.bin_index`, the collator's rule; each session's rows are read from the (memory-mapped)
    Arrow columns on their own, so memory stays that of the largest session.
    """
    from nfm.data.binning import bin_index

    wanted = list(session_ids) if session_ids is not None else meta.session_ids
    sids = np.asarray(list(dataset["session_id"]), dtype=object).astype(str)
    transform = transform if transform is not None else (lambda t: t)
    window, size, T = meta.grid(bin_size)
    spikes = meta.modality == "spikes"
    if spikes:
        import pyarrow.compute as pc

        arrow = dataset.with_format("arrow").select_columns(["spike_times", "spike_units"])
    out: dict[str, dict[str, np.ndarray]] = {}
    for sid in wanted:  # one step per session: only its rows are read (memory of one session, not the dataset)
        rows = np.flatnonzero(sids == sid)
        if len(rows) == 0:
            continue
        N = int(meta.session(sid).n_units)
        if spikes:
            table = arrow[rows.tolist()]
            lens = pc.list_value_length(table.column("spike_units")).to_numpy(zero_copy_only=False).astype(np.int64)
            units = pc.list_flatten(table.column("spike_units")).to_numpy(zero_copy_only=False).astype(np.int64)
            times = pc.list_flatten(table.column("spike_times")).to_numpy(zero_copy_only=False).astype(np.float64)
            trial = np.repeat(np.arange(len(rows)), lens)
            flat = (trial * T + bin_index(times, size, T, window[0], what="spike")) * N + units
            x = np.bincount(flat, minlength=len(rows) * T * N).reshape(len(rows), T, N).astype(np.float32)
            valid = np.ones_like(x, dtype=bool)
        else:
            group = max(1, int(round(size / meta.bin_size)))  # coarser grid: averages of stored bins
            x = np.full((len(rows), T * group, N), np.nan, dtype=np.float32)
            for i, act in enumerate(dataset.select(rows)["activity"]):  # one step per trial
                a = np.asarray(act, dtype=np.float32)
                x[i, :, : a.shape[1]] = a
            if group > 1:
                g = x.reshape(len(rows), T, group, N)
                n = np.isfinite(g).sum(2)
                x = np.divide(np.nansum(g, 2), n, out=np.full((len(rows), T, N), np.nan, np.float32), where=n > 0)
            valid = np.isfinite(x)
            x = np.where(valid, x, 0.0).astype(np.float32)
        n_valid = valid.sum((0, 1))
        mean = np.where(n_valid > 0, x.sum((0, 1), dtype=np.float64) / np.maximum(n_valid, 1), 0.0)
        tx = transform(torch.from_numpy(x)).double().numpy()
        tx = np.where(valid, tx, 0.0)
        t_mean = tx.sum((0, 1)) / np.maximum(n_valid, 1)
        t_var = np.where(valid, (tx - t_mean) ** 2, 0.0).sum((0, 1)) / np.maximum(n_valid, 1)
        out[sid] = {"mean": mean, "input_mean": t_mean, "input_std": np.sqrt(t_var)}
    return out


def init_sessions_from_data(model, dataset, meta: DatasetMeta, session_ids: Iterable[str] | None = None,
                            standardize_input: bool = True) -> list[str]:
    """Data-dependent read-in/read-out init of the model's sessions from their units' statistics in ``dataset``
    (:func:`session_statistics` on the sessions' time grid in the model, ``config.grid_of``, and the read-in
    transform of their modality, then
    :meth:`~nfm.models.modeling_nfm.NfmPreTrainedModel.init_session_statistics`); returns the sessions set.
    ``standardize_input=False`` sets only the read-out biases."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = base.config
    known = cfg.session_n_units
    wanted = [s for s in (session_ids if session_ids is not None else known) if s in known and s in meta.sessions]
    if not wanted:
        return []
    sizes = {cfg.grid_of(s)[1] for s in wanted}
    if len(sizes) > 1:
        raise ValueError(f"the sessions of {meta.path} have several bin sizes in the model ({sorted(sizes)})")
    modality = cfg.modality_of(wanted[0])
    stats = session_statistics(dataset, meta, wanted, sizes.pop(),
                               transform=lambda t: base.base_model.transform_input(t, modality))
    for sid, st in stats.items():  # one step per session
        if standardize_input:
            base.init_session_statistics(sid, st["mean"], st["input_mean"], st["input_std"])
        else:
            base.init_session_statistics(sid, st["mean"])
    return list(stats)


def describe_modalities(config, meta: DatasetMeta, modality_map: dict[str, str] | None = None) -> str:
    """One line: which of the base model's stimulus / behaviour variables the dataset has (through
    ``modality_map``: base name -> dataset name), which it lacks (fed as missing: masked, not zeros) and which of
    its own the base does not use; plus the modality and time grid of its sessions."""
    mm = dict(modality_map or {})
    have_all = set(meta.stimulus_names) | set(meta.behavior_names)
    parts = []
    for kind, names in (("stimulus", config.stimulus_names), ("behaviour", config.behavior_names)):
        has = [n if mm.get(n, n) == n else f"{n}<-{mm[n]}" for n in names if mm.get(n, n) in have_all]
        lacks = [n for n in names if mm.get(n, n) not in have_all]
        parts.append(f"{kind}: has {has or 'none'}, lacks {lacks or 'none'}")
    used = {mm.get(n, n) for n in list(config.stimulus_names) + list(config.behavior_names)}
    extra = sorted(have_all - used)
    line = (f"base modalities vs dataset {Path(str(meta.path)).parent.name or meta.path} ({meta.modality}): "
            + "; ".join(parts) + (f"; not used by the base: {extra}" if extra else "")
            + " (lacking variables are masked, not fed as zeros)")
    return line
