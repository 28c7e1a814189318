"""A cache of data baselines (the co-smoothing smoothing baseline): fitted once per data, split and protocol.

The smoothing baseline does not depend on the evaluated model, only on the data it is fitted on and scored on,
the masks (which units are hidden and which are predicted) and the CV grid; yet it costs more than the model's
own predictions.  :class:`BaselineCache` keeps its predicted rates in one ``.npz`` file per
(session, split, protocol), keyed by a content fingerprint:

* the training and evaluated counts themselves (:func:`array_fingerprint`: BLAKE2b of their bytes, shape, dtype),
  so a changed dataset, another split, a trial cap or another bin size never reads a stale file;
* the mask plan (hidden and target units of every pass), the task's baseline spec (kernel widths, penalties,
  CV folds, method, feature cap, solver), the CV seed and :data:`CACHE_VERSION` (bumped when the fit changes).

Files are written atomically (a temporary file in the same folder, then ``os.replace``) and checked on read:
the stored key must equal the wanted one, the rates must have the expected shape and match their stored
checksum; anything else is reported as corrupt and refitted (the caller writes the new file over it).  Nothing is
unpickled (``np.load(..., allow_pickle=False)``).

Where: ``$NFM_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/nfm`` or ``~/.cache/nfm``, sub-folder ``baselines/``
(content-keyed, so copies of one dataset share entries).  ``recipes/evaluate.py --no_baseline_cache`` refits.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CACHE_VERSION", "BaselineCache", "array_fingerprint", "default_cache_dir"]

#: bump when a cached baseline's fit or prediction changes (old files then never match)
CACHE_VERSION = 2


def default_cache_dir() -> Path:
    """``$NFM_CACHE_DIR``, else ``$XDG_CACHE_HOME/nfm``, else ``~/.cache/nfm``."""
    if os.environ.get("NFM_CACHE_DIR"):
        return Path(os.environ["NFM_CACHE_DIR"])
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "nfm"


def array_fingerprint(a: np.ndarray) -> str:
    """BLAKE2b (128 bit) of an array's dtype, shape and C-ordered bytes."""
    a = np.ascontiguousarray(a)
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.view(np.uint8).reshape(-1) if a.size else b"")
    return h.hexdigest()


def _key_text(parts: dict[str, Any]) -> str:
    return json.dumps({"version": CACHE_VERSION, **parts}, sort_keys=True, default=str)


class BaselineCache:
    """Predicted rates of a data baseline, stored under ``root`` (see the module docstring)."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_cache_dir() / "baselines"
        #: what happened on the last :meth:`load`: ``hit``, ``miss`` or ``corrupt: <reason>``
        self.last_status = ""

    def path(self, name: str, parts: dict[str, Any]) -> Path:
        digest = hashlib.blake2b(_key_text(parts).encode(), digest_size=16).hexdigest()
        stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        return self.root / f"{stem}-{digest}.npz"

    def load(self, name: str, parts: dict[str, Any], shape: tuple[int, ...]) -> tuple[np.ndarray, dict] | None:
        """``(rates, info)`` of a valid entry, else None (``last_status`` says why)."""
        path = self.path(name, parts)
        if not path.is_file():
            self.last_status = "miss"
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                key, rates = str(z["key"]), np.asarray(z["rates"])
                checksum, info = str(z["checksum"]), json.loads(str(z["info"]))
        except Exception as err:  # a truncated or foreign file: refit
            self.last_status = f"corrupt: {path} could not be read ({type(err).__name__}: {err})"
            return None
        reason = None
        if key != _key_text(parts):
            reason = "its key differs from the data and protocol asked for"
        elif tuple(rates.shape) != tuple(shape):
            reason = f"rates of shape {tuple(rates.shape)}, expected {tuple(shape)}"
        elif array_fingerprint(rates) != checksum:
            reason = "its rates do not match their checksum"
        if reason:
            self.last_status = f"corrupt: {path}: {reason}"
            return None
        self.last_status = "hit"
        return rates, info

    def save(self, name: str, parts: dict[str, Any], rates: np.ndarray, info: dict | None = None) -> Path:
        """Write an entry atomically; returns its path."""
        path = self.path(name, parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        rates = np.ascontiguousarray(rates, dtype=np.float64)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp.npz")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, rates=rates, key=np.array(_key_text(parts)), checksum=np.array(array_fingerprint(rates)),
                         info=np.array(json.dumps(info or {})))
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path
