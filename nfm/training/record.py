"""What a model folder records about its training data: ``nfm_training_data.json``.

``recipes/pretrain.py`` and ``recipes/finetune_lora.py`` write it beside the weights: for every dataset trained
on, its folder (as given, absolute, and relative to the model folder), a content fingerprint
(:func:`dataset_fingerprint`), its modality and source, the split trained on, the sessions trained on and the
ones held out, and the ``--train_fraction`` subset.  ``recipes/evaluate.py``, ``recipes/generate.py`` and
``recipes/finetune_lora.py`` read it (:func:`recorded_dataset`) when ``--dataset`` is omitted, and refuse with one
line when that dataset is gone or has changed since (its fingerprint differs).

The fingerprint is cheap (it reads no more than 128 KiB of any data file, whatever the dataset's size) and
ignores what does not change the data (the dataset card ``README.md``, the ``datasets`` library's cache files
and the random ``_fingerprint`` it stores in each split's ``state.json``): a copied or identically re-prepared
dataset keeps its fingerprint; re-preparing it with other sessions, trials, bins, window or split changes it.

Nothing here imports torch or transformers.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

TRAINING_DATA_FILE = "nfm_training_data.json"
FORMAT = 1
_EDGE = 64 * 1024  # bytes read from the start and from the end of each Arrow file
FINGERPRINT_METHOD = ("sha256 over nfm_meta.json, dataset_dict.json, each split's dataset_info.json and state.json "
                      "(without its _fingerprint) and, per data-*.arrow file, its name, size and first and last "
                      "64 KiB (nfm.training.record.dataset_fingerprint)")


def dataset_fingerprint(path: str | os.PathLike) -> str:
    """A content fingerprint (sha256 hex) of the nfm dataset folder ``path``; see the module docstring."""
    root = Path(path)
    h = hashlib.sha256()

    def add(name: str, data: bytes) -> None:
        h.update(name.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)

    for name in ("nfm_meta.json", "dataset_dict.json"):
        f = root / name
        add(name, f.read_bytes() if f.is_file() else b"<missing>")
    for split in sorted(p for p in root.iterdir() if p.is_dir() and (p / "dataset_info.json").is_file()):
        add(f"{split.name}/dataset_info.json", (split / "dataset_info.json").read_bytes())
        state = split / "state.json"
        if state.is_file():
            try:
                st = json.loads(state.read_text())
                st.pop("_fingerprint", None)
                data = json.dumps(st, sort_keys=True).encode()
            except ValueError:
                data = state.read_bytes()
            add(f"{split.name}/state.json", data)
        for f in sorted(split.glob("data-*.arrow")):
            size = f.stat().st_size
            with open(f, "rb") as fh:
                head = fh.read(_EDGE)
                if size > _EDGE:
                    fh.seek(max(_EDGE, size - _EDGE))
                    head += fh.read(_EDGE)
            add(f"{split.name}/{f.name}:{size}", head)
    return h.hexdigest()


def dataset_entry(path: str | os.PathLike, model_dir: str | os.PathLike, meta, *, sessions: Sequence[str],
                  heldout_sessions: Sequence[str] = (), split: str = "train", train_fraction: float = 1.0,
                  train_fraction_seed: int = 0, n_train_trials: int | None = None) -> dict[str, Any]:
    """One dataset's entry of the record (``path``: the dataset folder as given on the command line)."""
    p = Path(path)
    absolute = p.expanduser().resolve()
    model_abs = Path(model_dir).expanduser().resolve()
    return {
        "name": absolute.name, "path": str(path), "absolute_path": str(absolute),
        "relative_to_model": os.path.relpath(absolute, model_abs),
        "fingerprint": dataset_fingerprint(absolute), "fingerprint_method": FINGERPRINT_METHOD,
        "modality": getattr(meta, "modality", None), "source": getattr(meta, "source", None),
        "split": split, "sessions": list(sessions), "heldout_sessions": list(heldout_sessions),
        "train_fraction": float(train_fraction), "train_fraction_seed": int(train_fraction_seed),
        "n_train_trials": None if n_train_trials is None else int(n_train_trials),
    }


def write_training_data(output_dir: str | os.PathLike, datasets: Sequence[dict], **extra) -> Path:
    """Write ``<output_dir>/nfm_training_data.json`` (atomically) from :func:`dataset_entry` entries."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = {"format": FORMAT, "datasets": list(datasets), **extra}
    tmp = out / f".{TRAINING_DATA_FILE}.tmp"
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, out / TRAINING_DATA_FILE)
    return out / TRAINING_DATA_FILE


def read_training_data(model_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The record of a local model / adapter folder, or None (a Hub id, or a folder written before it existed)."""
    f = Path(model_dir).expanduser() / TRAINING_DATA_FILE
    if not f.is_file():
        return None
    from nfm.data.schema import DataError

    try:
        record = json.loads(f.read_text())
    except ValueError as err:
        raise DataError(str(f), "<json>", f"not valid JSON: {err}") from None
    if not isinstance(record, dict) or not isinstance(record.get("datasets"), list):
        raise DataError(str(f), "datasets", "missing: not a training-data record (recipes/pretrain.py writes one)")
    return record


def _candidates(entry: dict, model_dir: Path) -> list[Path]:
    """Where the recorded dataset may be now, in order: beside the model as it was (moved together), where it
    was (absolute), as it was given (relative to the working directory); only dataset folders, each once."""
    out: list[Path] = []
    for key, root in (("relative_to_model", model_dir), ("absolute_path", None), ("path", None)):
        raw = str(entry.get(key) or "")
        if not raw:
            continue
        cand = root / raw if root is not None else Path(raw)
        if (cand / "nfm_meta.json").is_file() and all(cand.resolve() != c.resolve() for c in out):
            out.append(cand)
    return out


def _locate(entry: dict, model_dir: Path) -> Path | None:
    """The first candidate (:func:`_candidates`) whose content matches the recorded fingerprint, else the first
    one there (then :func:`recorded_dataset` says it has changed), else None."""
    cands = _candidates(entry, model_dir)
    for cand in cands:
        if dataset_fingerprint(cand) == entry.get("fingerprint"):
            return cand
    return cands[0] if cands else None


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it, else absolute."""
    absolute = path.resolve()
    try:
        return str(absolute.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(absolute)


def recorded_dataset(model_dir: str | os.PathLike, flag: str = "--dataset", what: str | None = None
                     ) -> tuple[str, dict] | None:
    """``(dataset folder, its entry)`` that the model / adapter folder ``model_dir`` was trained on, checked
    against its recorded fingerprint; None when the folder has no record (a Hub model, an older folder).

    A one-line :class:`~nfm.errors.UsageError` on ``flag`` when the record names several datasets (name one), or when
    the dataset is not there any more, or when its content has changed since (the fingerprint differs)."""
    from nfm.errors import UsageError

    model_dir = Path(model_dir)
    what = what or str(model_dir)
    record = read_training_data(model_dir)
    if record is None or not record["datasets"]:
        return None
    entries = record["datasets"]
    if len(entries) > 1:
        names = ", ".join(_shown(_locate(e, model_dir) or Path(str(e.get("absolute_path")))) for e in entries)
        raise UsageError(flag, f"required: {what} was trained on {len(entries)} datasets ({names}); name the one "
                               f"to use")
    entry = entries[0]
    found = _locate(entry, model_dir)
    if found is None:
        raise UsageError(flag, f"not given, and the dataset {what} was trained on is not at "
                               f"{entry.get('absolute_path')} any more ({TRAINING_DATA_FILE}); pass --dataset with "
                               "its new place")
    now = dataset_fingerprint(found)
    if now != entry.get("fingerprint"):
        raise UsageError(flag, f"not given, and the dataset {what} was trained on, {_shown(found)}, has changed "
                               f"since (fingerprint {str(entry.get('fingerprint'))[:12]} in {TRAINING_DATA_FILE}, "
                               f"{now[:12]} now: re-prepared or edited); pass --dataset {_shown(found)} to use it as "
                               "it is now")
    return _shown(found), entry


def default_dataset(model: str, adapter: str | None = None, adapter_meta: dict | None = None,
                    flag: str = "--dataset") -> tuple[str, str]:
    """``(dataset folder, "adapter" | "model")`` for a recipe whose ``--dataset`` was omitted.

    In order: the adapter folder's record (:func:`recorded_dataset`), the dataset its ``nfm_adapter.json``
    names, the model folder's record, ``<model>/dataset`` (the synthetic default of an older folder).  A recorded
    dataset that is gone or has changed is a one-line error (never a silent fall-through to another one)."""
    from nfm.errors import UsageError

    if adapter:
        found = recorded_dataset(adapter, flag, what=f"the adapter {adapter}") if Path(adapter).is_dir() else None
        if found is not None:
            return found[0], "adapter"
        named = (adapter_meta or {}).get("dataset")
        if named and (Path(named) / "nfm_meta.json").is_file():
            return str(named), "adapter"
    model_dir = Path(model)
    if model_dir.is_dir():
        found = recorded_dataset(model_dir, flag)
        if found is not None:
            return found[0], "model"
        if (model_dir / "dataset" / "nfm_meta.json").is_file():
            return str(model_dir / "dataset"), "model"
        raise UsageError(flag, f"required: {model} records no training data ({TRAINING_DATA_FILE}) and "
                               f"{model_dir / 'dataset'} does not exist; name the nfm dataset folder")
    raise UsageError(flag, f"required for the Hub model {model}: name a local nfm dataset folder")


__all__ = ["TRAINING_DATA_FILE", "FINGERPRINT_METHOD", "dataset_fingerprint", "dataset_entry", "write_training_data",
           "read_training_data", "recorded_dataset", "default_dataset"]
