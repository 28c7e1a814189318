"""File permissions of what nfm writes: the process umask, like other tools.

Two writers nfm relies on create private files: ``tempfile.mkdtemp`` (the atomic staging folders of
:func:`nfm.data.hf.save_dataset`, mode 0700) and ``safetensors`` 0.8 (``model.safetensors`` /
``adapter_model.safetensors``, mode 0600, written through a private temporary file).  On a shared filesystem
that locks teammates out.  :func:`apply_umask` gives such files and folders the mode a plain ``open()`` /
``mkdir()`` would have had under the process umask (``0o666 & ~umask`` / ``0o777 & ~umask``); a file whose mode
is anything else (set on purpose) is left alone.
"""
from __future__ import annotations

import os
from pathlib import Path

#: modes of files / folders created private by mkstemp / mkdtemp / safetensors
_PRIVATE_FILE, _PRIVATE_DIR = 0o600, 0o700


def process_umask() -> int:
    """The umask of this process (read from ``/proc/self/status`` where it exists, else set and restored)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path: str | os.PathLike, recursive: bool = True) -> None:
    """Give ``path`` (and, for a folder, everything under it) the umask's default mode where it is private
    (file 0600 -> ``0o666 & ~umask``, folder 0700 -> ``0o777 & ~umask``).  Missing paths are ignored."""
    mask = process_umask()
    file_mode, dir_mode = 0o666 & ~mask, 0o777 & ~mask
    root = Path(path)
    if not root.exists():
        return
    todo = [root]
    if recursive and root.is_dir():
        todo += list(root.rglob("*"))
    for p in todo:
        try:
            st = p.lstat()
        except OSError:
            continue
        if p.is_symlink():
            continue
        mode = st.st_mode & 0o777
        if p.is_dir() and mode == _PRIVATE_DIR and dir_mode != _PRIVATE_DIR:
            os.chmod(p, dir_mode)
        elif p.is_file() and mode == _PRIVATE_FILE and file_mode != _PRIVATE_FILE:
            os.chmod(p, file_mode)


__all__ = ["process_umask", "apply_umask"]
