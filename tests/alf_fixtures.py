"""Builders of small synthetic ALF trees on disk, for tests that read them through ONE.

Nothing here is mocked: the files follow the ALF layout that the IBL releases use
(``<root>/<lab>/Subjects/<subject>/<yyyy-mm-dd>/<nnn>/<collection>/[#revision#/]
<namespace><object>.<attribute>.<ext>``), :func:`make_one` indexes them with
``one.alf.cache.make_parquet_db`` and returns a real ``One`` in local mode, and
the loaders under test read them with the real ONE / brainbox code.

Typical use::

    ses = make_alf_session(tmp_path, "cortexlab", "KS001", "2024-01-02", 1)
    write_probe(ses, "probe00", spike_times=..., spike_clusters=..., ...)
    write_trials(ses, trials_dict)
    write_wheel(ses, timestamps, position)
    one = make_one(tmp_path)
    eid = str(one.path2eid(ses))

Units follow ALF: times in seconds, wheel position in radians, channel
``mlapdv`` in µm from bregma, ``localCoordinates`` in µm on the probe
(x lateral, y axial from the tip), cluster depths in µm.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

__all__ = [
    "make_alf_session",
    "write_alf_object",
    "write_probe",
    "random_probe",
    "write_trials",
    "ibl_trials",
    "write_wheel",
    "write_camera",
    "write_cache",
    "make_one",
]


def make_alf_session(root, lab: str = "cortexlab", subject: str = "SUB001",
                     date: str = "2024-01-02", number: int = 1) -> Path:
    """Create (empty) ``root/lab/Subjects/subject/date/nnn`` and return that session path."""
    session_path = Path(root) / lab / "Subjects" / subject / date / f"{int(number):03d}"
    session_path.mkdir(parents=True, exist_ok=True)
    return session_path


def _collection_dir(session_path, collection: str, revision: str | None) -> Path:
    folder = Path(session_path) / collection
    if revision:
        folder = folder / f"#{revision}#"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_alf_object(session_path, collection: str, obj: str, attributes: Mapping[str, object],
                     *, namespace: str = "", revision: str | None = None) -> list[Path]:
    """Write one ALF object: ``attributes`` name -> array (``.npy``) or DataFrame (``.pqt``).

    A name that already has an extension (``"uuids.csv"``) is written as given:
    a DataFrame to CSV.  Returns the written file paths.
    """
    folder = _collection_dir(session_path, collection, revision)
    prefix = f"_{namespace.strip('_')}_" if namespace else ""
    paths = []
    for attr, value in attributes.items():
        stem = f"{prefix}{obj}.{attr}"
        if attr.endswith(".csv"):
            path = folder / stem
            pd.DataFrame(value).to_csv(path, index=False)
        elif isinstance(value, pd.DataFrame):
            path = folder / f"{stem}.pqt"
            value.to_parquet(path)
        else:
            path = folder / f"{stem}.npy"
            np.save(path, np.asarray(value))
        paths.append(path)
    return paths


def random_probe(rng: np.random.Generator, n_clusters: int = 8, n_spikes: int = 1500,
                 t_stop: float = 100.0, n_channels: int = 16,
                 atlas_ids=(593, 821, 382, 463, 1047, 997, 0)) -> dict[str, np.ndarray]:
    """Arrays of one synthetic probe, keyed like the arguments of :func:`write_probe`.

    Spike times (S,) uniform in [0, t_stop) seconds, sorted; spike clusters (S,)
    in 0..n_clusters-1; every cluster gets at least one spike.  Channel Allen
    ids cycle through ``atlas_ids`` (default: VISp1, VISp2/3, CA1, CA3, SSp-bfd4,
    root, void; Beryl: VISp, VISp, CA1, CA3, SSp-bfd, root, void).
    """
    times = np.sort(rng.uniform(0.0, t_stop, n_spikes))
    clusters = rng.integers(0, n_clusters, n_spikes)
    clusters[:n_clusters] = np.arange(n_clusters)  # no empty cluster
    cluster_channels = rng.integers(0, n_channels, n_clusters)
    local = np.c_[np.tile([16.0, 48.0], n_channels)[:n_channels], 20.0 * np.arange(n_channels)]
    return dict(
        spike_times=times,
        spike_clusters=clusters,
        cluster_channels=cluster_channels,
        cluster_depths=local[cluster_channels, 1],
        labels=rng.choice([0.0, 1 / 3, 2 / 3, 1.0], n_clusters),
        channel_atlas_ids=np.resize(np.asarray(atlas_ids, dtype=np.int64), n_channels),
        channel_mlapdv=np.c_[np.full(n_channels, -2000.0), np.full(n_channels, -3000.0),
                             -200.0 - local[:, 1]],
        channel_local_coordinates=local,
    )


def write_probe(session_path, pname: str, *, spike_times, spike_clusters, cluster_channels,
                cluster_depths=None, labels=None, channel_atlas_ids=None, channel_mlapdv=None,
                channel_local_coordinates=None, spike_amps=None, spike_depths=None,
                cluster_uuids=None, sorter: str | None = "pykilosort", revision: str | None = None,
                write_spikes: bool = True) -> Path:
    """Write one probe's spike sorting into ``alf/<pname>/<sorter>/[#revision#/]``.

    Shapes: spike_* (S,), cluster_* and labels (C,), channel_atlas_ids (K,),
    channel_mlapdv (K, 3) µm, channel_local_coordinates (K, 2) µm.  ``labels``
    go to ``clusters.metrics.pqt`` (column ``label``, 1 = good); histology is
    written only when ``channel_atlas_ids`` is given.  ``cluster_uuids`` go to
    ``clusters.uuids.csv``.  ``write_spikes=False`` leaves out the ``spikes``
    object (for missing-data tests).  Returns the collection folder.
    """
    collection = f"alf/{pname}" + (f"/{sorter}" if sorter else "")
    spike_times = np.asarray(spike_times, dtype=np.float64)
    n_clusters = len(cluster_channels)
    if write_spikes:
        spikes = {"times": spike_times, "clusters": np.asarray(spike_clusters)}
        spikes["amps"] = np.full(len(spike_times), 1e-4) if spike_amps is None else spike_amps
        spikes["depths"] = (np.zeros(len(spike_times)) if spike_depths is None else spike_depths)
        write_alf_object(session_path, collection, "spikes", spikes, revision=revision)
    clusters = {"channels": np.asarray(cluster_channels, dtype=np.int64)}
    clusters["depths"] = (np.zeros(n_clusters) if cluster_depths is None
                          else np.asarray(cluster_depths, dtype=np.float64))
    if labels is not None:
        clusters["metrics"] = pd.DataFrame({"cluster_id": np.arange(n_clusters),
                                            "label": np.asarray(labels, dtype=np.float64)})
    if cluster_uuids is not None:
        clusters["uuids.csv"] = {"uuids": list(cluster_uuids)}
    write_alf_object(session_path, collection, "clusters", clusters, revision=revision)
    if channel_atlas_ids is not None:
        channels = {
            "brainLocationIds_ccf_2017": np.asarray(channel_atlas_ids, dtype=np.int64),
            "mlapdv": np.asarray(channel_mlapdv, dtype=np.float64),
            "localCoordinates": np.asarray(channel_local_coordinates, dtype=np.float64),
        }
        write_alf_object(session_path, collection, "channels", channels, revision=revision)
    elif channel_local_coordinates is not None:
        write_alf_object(session_path, collection, "channels",
                         {"localCoordinates": np.asarray(channel_local_coordinates, dtype=np.float64)},
                         revision=revision)
    return _collection_dir(session_path, collection, revision)


def ibl_trials(n_trials: int, rng: np.random.Generator, t0: float = 2.0,
               spacing: float = 4.0) -> dict[str, np.ndarray]:
    """A clean IBL-style trials table (every trial passes the MtM filters).

    Trials start every ``spacing`` s from ``t0``; goCue and stimOn at start + 0.1 s,
    first movement 0.2-0.6 s after stimOn (reaction time in [0.08, 2] s),
    feedback 0.3 s after movement, choice in {-1, 1}, contrasts with NaN on the
    side without a stimulus, as in the IBL tables.
    """
    start = t0 + spacing * np.arange(n_trials)
    stim_on = start + 0.1
    first_move = stim_on + rng.uniform(0.2, 0.6, n_trials)
    feedback = first_move + 0.3
    side = rng.choice([-1, 1], n_trials)
    contrast = rng.choice([0.0, 0.0625, 0.125, 0.25, 1.0], n_trials)
    return dict(
        intervals=np.c_[start, start + spacing - 0.5],
        goCue_times=stim_on.copy(),
        stimOn_times=stim_on,
        firstMovement_times=first_move,
        response_times=first_move + 0.1,
        feedback_times=feedback,
        choice=rng.choice([-1.0, 1.0], n_trials),
        feedbackType=rng.choice([-1.0, 1.0], n_trials),
        contrastLeft=np.where(side < 0, contrast, np.nan),
        contrastRight=np.where(side > 0, contrast, np.nan),
        probabilityLeft=rng.choice([0.2, 0.5, 0.8], n_trials),
        rewardVolume=np.full(n_trials, 1.5),
    )


def write_trials(session_path, trials: Mapping[str, np.ndarray], collection: str = "alf",
                 as_table: bool = True, revision: str | None = None) -> list[Path]:
    """Write a trials object as the IBL does: ``_ibl_trials.table.pqt`` (2-D columns
    such as ``intervals`` split into ``intervals_0``/``intervals_1``), or one
    ``_ibl_trials.<attr>.npy`` per column with ``as_table=False``."""
    if not as_table:
        return write_alf_object(session_path, collection, "trials", dict(trials),
                                namespace="ibl", revision=revision)
    columns = {}
    for key, value in trials.items():
        value = np.asarray(value)
        if value.ndim == 2:
            for j in range(value.shape[1]):
                columns[f"{key}_{j}"] = value[:, j]
        else:
            columns[key] = value
    return write_alf_object(session_path, collection, "trials", {"table": pd.DataFrame(columns)},
                            namespace="ibl", revision=revision)


def write_wheel(session_path, timestamps, position, collection: str = "alf") -> list[Path]:
    """``_ibl_wheel.timestamps.npy`` (s) and ``_ibl_wheel.position.npy`` (rad)."""
    return write_alf_object(session_path, collection, "wheel",
                            {"timestamps": np.asarray(timestamps, dtype=np.float64),
                             "position": np.asarray(position, dtype=np.float64)},
                            namespace="ibl")


def write_camera(session_path, label: str, times, motion_energy, collection: str = "alf") -> list[Path]:
    """``_ibl_<label>Camera.times.npy`` (s) and ``<label>Camera.ROIMotionEnergy.npy``
    (arbitrary units) for ``label`` in {"left", "right", "body"}."""
    paths = write_alf_object(session_path, collection, f"{label}Camera",
                             {"times": np.asarray(times, dtype=np.float64)}, namespace="ibl")
    paths += write_alf_object(session_path, collection, f"{label}Camera",
                              {"ROIMotionEnergy": np.asarray(motion_energy, dtype=np.float64)})
    return paths


def write_cache(root) -> tuple[Path, Path]:
    """Index ``root`` into ``sessions.pqt``/``datasets.pqt`` for ONE local mode.

    Uses ``one.alf.cache.make_parquet_db(root, hash_ids=True, hash_files=False)``,
    then sets each dataset's ``hash`` to None (no md5 check, no mismatch warning)
    and adds ``default_revision``: True on the latest revision of each dataset
    (lexical order; the unrevisioned copy counts as the oldest), as Alyx does.
    """
    from iblutil.io import parquet
    from one.alf.cache import make_parquet_db

    fn_ses, fn_dsets = make_parquet_db(root, hash_ids=True, hash_files=False)
    datasets, meta = parquet.load(fn_dsets)
    rel = datasets["rel_path"].astype(str)
    revision = rel.str.extract(r"#([^#]+)#/", expand=False).fillna("")
    plain = rel.str.replace(r"#[^#]+#/", "", regex=True)
    eid = datasets.index.get_level_values(0) if isinstance(datasets.index, pd.MultiIndex) \
        else datasets["eid"]
    key = pd.Series(np.asarray(eid).astype(str), index=datasets.index) + "/" + plain
    latest = revision.groupby(key).transform("max")
    datasets["hash"] = None
    datasets["default_revision"] = (revision == latest).to_numpy()
    parquet.save(fn_dsets, datasets, meta)
    return fn_ses, fn_dsets


def make_one(root):
    """Build the cache tables of ``root`` and return ``One(cache_dir=root, mode='local')``."""
    from one.api import One

    write_cache(root)
    return One(cache_dir=str(root), mode="local")
