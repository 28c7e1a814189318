"""Files shipped inside the package: evaluation tasks, recipe configs, model-card templates, session manifests.

The repository shows them at their user-facing places (``tasks/``, ``recipes/configs/``, ``model_cards/``,
``datasets/ibl_repeated_site/*.txt`` are links into this folder), and a wheel install has them too, so nothing
in nfm reaches repository folders by relative path.  Find them with :func:`path`.
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

#: resource folders: ``tasks`` (``*.yaml`` evaluation tasks), ``configs`` (recipe YAMLs), ``model_cards``
#: (card templates), ``manifests`` (session-id lists, e.g. ``ibl_repeated_site/mtm_40_eids.txt``)
KINDS = ("tasks", "configs", "model_cards", "manifests")


def path(kind: str) -> Path:
    """Folder of the ``kind`` resources (a real directory: wheels install unzipped)."""
    if kind not in KINDS:
        raise ValueError(f"unknown resource kind {kind!r}; known: {KINDS}")
    return Path(str(resources.files(__name__) / kind))


def find_file(name: str | os.PathLike, kind: str) -> Path | None:
    """Resolve a file a user or a config names: as given (relative to the working directory), else inside the
    ``kind`` folder (also with a ``.yaml`` suffix added, and for manifests with a leading ``datasets/`` dropped,
    the path the repository shows them at).  None if not found."""
    p = Path(name)
    if p.is_file():
        return p
    if p.is_absolute():
        return None
    root = path(kind)
    parts = p.parts[1:] if kind == "manifests" and p.parts[:1] == ("datasets",) else p.parts
    for candidate in (root.joinpath(*parts), root.joinpath(*parts[:-1], parts[-1] + ".yaml") if parts else root):
        if candidate.is_file():
            return candidate
    return None


__all__ = ["KINDS", "path", "find_file"]
