"""Training library: arguments, data selection, the per-session ``Trainer``, logs.

``recipes/pretrain.py`` and ``recipes/finetune_lora.py`` are thin glue over
the functions here, so everything a recipe does can be done from Python:

>>> from nfm.training import parse_args, prepare_training_data, build_model, build_trainer
>>> data_args, model_args, run_args, training_args = parse_args(argv, default_config="recipes/configs/synthetic.yaml")
>>> dd, meta, path = prepare_training_data(data_args, training_args)
>>> ...

Design
------
* Training runs on :class:`transformers.Trainer` (so on Accelerate: DDP, FSDP,
  DeepSpeed, mixed precision, checkpoint/resume, trackers). :class:`NfmTrainer`
  changes four things only:

  1. the training dataloader draws each batch from ONE session with the
     rank-aware :class:`nfm.data.sampler.SessionBatchSampler` (Accelerate's own
     batch sharding is made a pass-through so batches are not sharded twice),
     and the sampler's epoch is set at the start of every epoch, including the
     epoch a resumed run restarts in (Accelerate does not forward
     ``set_epoch`` through its ``SkipBatchSampler`` wrapper);
  2. checkpoints are written **atomically**: into ``<output_dir>/.partial/
     checkpoint-N`` first, then, once every rank has written its part, renamed
     to ``<output_dir>/checkpoint-N`` (``transformers`` 5.23 writes straight
     into ``checkpoint-N``, so a kill mid-write leaves a folder that
     ``get_last_checkpoint`` picks up and that loads with missing or stale
     files);
  3. ``training_args.bin`` (a pickle) is replaced by ``training_args.json``;
  4. the loss components a model output carries (``*_loss`` fields, e.g. the
     masked and the generation losses of :class:`NfmForPretraining`) are
     averaged between logging steps and logged next to ``loss``. They are the
     main process's values (not averaged over ranks); ``loss`` itself is the
     Trainer's all-rank mean.

* Logs: TensorBoard (``report_to=["tensorboard"]``, written to
  ``<output_dir>/tensorboard`` unless ``TENSORBOARD_LOGGING_DIR`` is set),
  plus ``losses.csv`` / ``losses.json`` (every logged row of the run, rewritten
  at each log so a killed run keeps its history).
* Optional per-rank record (``--rank_info_dir DIR`` or the environment
  variable ``NFM_RANK_INFO_DIR``): ``DIR/rank{r}.json`` with the world size,
  the (session, trial) ids of every training batch the rank saw and a SHA-256
  of all parameters after every optimizer step. The multi-process test reads it.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import inspect
import json
import math
import os
import shutil
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from transformers import HfArgumentParser, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from .data.collate import NfmCollator
from .data.sampler import SessionBatchSampler

PARTIAL_DIR = ".partial"
RANK_INFO_ENV = "NFM_RANK_INFO_DIR"
REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "recipes" / "configs"


# --------------------------------------------------------------------------- arguments
@dataclass
class DataArguments:
    """Which data to train on."""

    dataset: str | None = field(default=None, metadata={
        "help": "nfm dataset folder (recipes/prepare_data.py). Default: build the synthetic world into "
                "<output_dir>/dataset (reused when it exists)."})
    synthetic_animals: int = field(default=5, metadata={"help": "synthetic default: number of animals"})
    synthetic_sessions_per_animal: int = field(default=2, metadata={"help": "synthetic default: sessions per animal"})
    synthetic_trials: int = field(default=120, metadata={"help": "synthetic default: trials per session"})
    synthetic_seed: int = field(default=0, metadata={"help": "synthetic default: world seed"})
    sessions: list[str] | None = field(default=None, metadata={
        "help": "train on these session ids only (default: every session of the dataset)"})
    sessions_file: str | None = field(default=None, metadata={
        "help": "file with session ids (one per line, # comments), added to --sessions"})
    exclude_subjects: list[str] | None = field(default=None, metadata={
        "help": "animals (subject ids) left out of training, e.g. kept for LoRA adaptation"})
    synthetic_heldout_subjects: list[str] | None = field(default=None, metadata={
        "help": "synthetic worlds only: animals left out of training (kept for the LoRA demo); ignored for "
                "datasets from other sources, so a config made for the synthetic default works on real data"})
    exclude_sessions: list[str] | None = field(default=None, metadata={"help": "session ids left out of training"})
    exclude_sessions_file: str | None = field(default=None, metadata={
        "help": "file with session ids left out (e.g. datasets/ibl_repeated_site/mtm_heldout_5_eids.txt)"})
    train_fraction: float = field(default=1.0, metadata={
        "help": "share of each session's training trials used (few-shot runs); at least one trial per session"})
    train_fraction_seed: int = field(default=0, metadata={"help": "seed of the --train_fraction subset"})
    bin_size: float | None = field(default=None, metadata={
        "help": "re-bin spike data at this bin size [s] (must divide the window); default: the dataset's"})

    def __post_init__(self):
        if not 0 < self.train_fraction <= 1:
            raise ValueError(f"--train_fraction {self.train_fraction!r} must be in (0, 1]")


@dataclass
class ModelArguments:
    """Which model to build (config fields of :class:`nfm.models.NfmConfig`)."""

    preset: str = field(default="default", metadata={"help": "NfmConfig size preset: default | mtm | neuroformer"})
    objectives: list[str] | None = field(default=None, metadata={
        "help": "objectives of NfmForPretraining: mtm and/or generation (default: the config's)"})
    mask_modes: list[str] | None = field(default=None, metadata={
        "help": "MtM mask modes sampled per batch (all | neuron causal temporal intra_region inter_region random_token)"})
    model_overrides: dict | str | None = field(default=None, metadata={
        "help": "any other NfmConfig fields, as a YAML mapping in the config file or a JSON string, "
                "e.g. '{\"hidden_size\": 64, \"num_hidden_layers\": 2}'"})
    init_from: str | None = field(default=None, metadata={
        "help": "start from this pretrained model (folder or Hub id) instead of a random init"})

    def __post_init__(self):
        if isinstance(self.model_overrides, str):
            try:
                self.model_overrides = json.loads(self.model_overrides)
            except json.JSONDecodeError as err:
                raise ValueError(f"--model_overrides {self.model_overrides!r} is not a JSON object: {err}") from None
        if self.model_overrides is not None and not isinstance(self.model_overrides, dict):
            raise ValueError(f"--model_overrides must be a mapping, got {self.model_overrides!r}")

    def config_overrides(self) -> dict[str, Any]:
        out = dict(self.model_overrides or {})
        if self.objectives is not None:
            out["objectives"] = list(self.objectives)
        if self.mask_modes is not None:
            out["mask_modes"] = list(self.mask_modes)
        return out


@dataclass
class RunArguments:
    """Recipe-level switches."""

    config: str | None = field(default=None, metadata={
        "help": "YAML file whose keys are any of these arguments (command-line values override it)"})
    rank_info_dir: str | None = field(default=None, metadata={
        "help": f"write DIR/rank<r>.json per process (batches seen, parameter hashes); also env {RANK_INFO_ENV}"})
    eval_batch_size: int = field(default=16, metadata={"help": "trials per batch in the final evaluation"})
    eval_max_batches: int = field(default=0, metadata={"help": "cap on evaluation batches (0 = whole split)"})
    eval_split: str = field(default="validation", metadata={"help": "split of the final evaluation summary"})
    skip_eval: bool = field(default=False, metadata={"help": "skip the final evaluation summary"})


#: TrainingArguments defaults of the nfm recipes (a YAML config or the command line overrides them).
TRAINING_DEFAULTS: dict[str, Any] = dict(
    output_dir="outputs/pretrain",
    per_device_train_batch_size=16,
    per_device_eval_batch_size=16,
    learning_rate=1e-3,
    weight_decay=0.01,
    warmup_steps=0.05,
    lr_scheduler_type="cosine",
    max_steps=300,
    logging_steps=10,
    logging_first_step=True,
    save_strategy="steps",
    save_steps=100,
    save_total_limit=2,
    report_to=["tensorboard"],
    remove_unused_columns=False,
    dataloader_num_workers=0,
    ddp_find_unused_parameters=True,
    seed=42,
    max_grad_norm=1.0,
)


def read_id_file(path: str | os.PathLike) -> list[str]:
    """Ids from a manifest: one per line; ``#`` comments and blank lines ignored."""
    p = Path(path)
    if not p.is_file() and not p.is_absolute() and (REPO_ROOT / p).is_file():
        p = REPO_ROOT / p  # configs name repository files relative to its root
    if not p.is_file():
        raise FileNotFoundError(f"session id file {path} does not exist")
    out = []
    for line in p.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(line)
    return out


def load_yaml_config(path: str | os.PathLike, dataclass_types: Sequence[type]) -> dict[str, Any]:
    """Read a recipe YAML (a flat mapping of argument names) and check every key is an argument."""
    import yaml

    p = Path(path)
    if not p.is_file():
        candidate = CONFIG_DIR / p
        if candidate.is_file():
            p = candidate
        elif (CONFIG_DIR / f"{p}.yaml").is_file():
            p = CONFIG_DIR / f"{p}.yaml"
        else:
            raise FileNotFoundError(f"config {path} not found (nor in {CONFIG_DIR})")
    values = yaml.safe_load(p.read_text()) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{p}: a recipe config must be a mapping of argument names, got {type(values).__name__}")
    known = {f.name for dt in dataclass_types for f in fields(dt)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{p}: unknown argument(s) {unknown}; see --help for the list")
    return values


def parse_args(
    argv: Sequence[str] | None = None,
    default_config: str | os.PathLike | None = None,
    dataclass_types: Sequence[type] = (DataArguments, ModelArguments, RunArguments, TrainingArguments),
    defaults: dict[str, Any] | None = None,
):
    """Parse ``--config YAML`` + command-line overrides into the given dataclasses.

    Precedence: command line > YAML config (``--config`` or ``default_config``)
    > ``defaults`` > :data:`TRAINING_DEFAULTS` > dataclass defaults.
    """
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    parser = HfArgumentParser(list(dataclass_types))
    names = {f.name for dt in dataclass_types for f in fields(dt)}
    base = {k: v for k, v in TRAINING_DEFAULTS.items() if k in names}
    base.update(defaults or {})
    config_path = known.config or default_config
    if config_path:
        base.update(load_yaml_config(config_path, dataclass_types))
        if "config" in names:
            base["config"] = str(config_path)
    parser.set_defaults(**base)
    return parser.parse_args_into_dataclasses(args=list(argv) if argv is not None else None,
                                              look_for_args_file=False)


# --------------------------------------------------------------------------- data
def build_synthetic_dataset(path: str | os.PathLike, data_args: DataArguments, overwrite: bool = False) -> Path:
    """Build the default synthetic IBL-like world and save it as an nfm dataset at ``path``."""
    from .data.prepare import prepare

    prepare("synthetic", path, world="ibl_like", seed=data_args.synthetic_seed, overwrite=overwrite,
            source_options=dict(n_animals=data_args.synthetic_animals,
                                sessions_per_animal=data_args.synthetic_sessions_per_animal,
                                n_trials=data_args.synthetic_trials))
    return Path(path)


def prepare_training_data(data_args: DataArguments, training_args: TrainingArguments):
    """Load ``--dataset`` or build the synthetic default into ``<output_dir>/dataset``.

    In a multi-process run the local main process builds, the others wait and
    then read it. Returns ``(DatasetDict, meta, dataset_path)``.
    """
    from .data.hf import META_FILE, load_dataset

    if data_args.dataset:
        path = Path(data_args.dataset)
    else:
        path = Path(training_args.output_dir) / "dataset"
        with training_args.main_process_first(desc="building the synthetic dataset"):
            if not (path / META_FILE).is_file():
                build_synthetic_dataset(path, data_args)
    dd, meta = load_dataset(path)
    return dd, meta, path


def select_sessions(meta: dict, data_args: DataArguments) -> list[str]:
    """Session ids to train on, in the dataset's order (include list, then exclusions).

    An included id absent from the dataset is an error (nothing is silently
    dropped); an excluded id absent from it is fine (e.g. the MtM held-out list
    against a dataset that holds only the 35 pretraining sessions).
    """
    available = list(meta["sessions"])
    include = list(data_args.sessions or [])
    if data_args.sessions_file:
        include += read_id_file(data_args.sessions_file)
    if include:
        missing = [s for s in include if s not in meta["sessions"]]
        if missing:
            raise ValueError(f"session {missing[0]!r} (of {len(missing)} requested ids) is not in the dataset; "
                             f"it has {available[:10]}{' ...' if len(available) > 10 else ''}")
        wanted = set(include)
        chosen = [s for s in available if s in wanted]
    else:
        chosen = available
    excluded = set(data_args.exclude_sessions or [])
    if data_args.exclude_sessions_file:
        excluded |= set(read_id_file(data_args.exclude_sessions_file))
    subjects = set(data_args.exclude_subjects or [])
    known_subjects = {m["subject_id"] for m in meta["sessions"].values()}
    unknown_subjects = subjects - known_subjects
    if unknown_subjects:
        raise ValueError(f"--exclude_subjects {sorted(unknown_subjects)} not in the dataset "
                         f"(subjects: {sorted(known_subjects)})")
    if str(meta.get("source", "")).startswith("synthetic"):
        subjects |= set(data_args.synthetic_heldout_subjects or []) & known_subjects
    chosen = [s for s in chosen if s not in excluded and meta["sessions"][s]["subject_id"] not in subjects]
    if not chosen:
        raise ValueError("no session left to train on after --sessions / --exclude_* selection")
    return chosen


def subset_meta(meta: dict, session_ids: Iterable[str]) -> dict:
    """Copy of ``meta`` restricted to ``session_ids``; the region list is kept whole
    (so the region vocabulary, shared across animals, covers animals added later)."""
    ids = list(session_ids)
    out = dict(meta)
    out["sessions"] = {s: meta["sessions"][s] for s in ids}
    return out


def subset_split(ds, session_ids: Iterable[str], fraction: float = 1.0, seed: int = 0):
    """Rows of ``ds`` whose session is in ``session_ids``; with ``fraction < 1`` a
    seeded random ``ceil(fraction * n)`` of each session's rows (at least one)."""
    wanted = list(session_ids)
    sids = np.asarray(list(ds["session_id"]), dtype=object).astype(str)
    keep = np.isin(sids, wanted)
    if fraction < 1.0:
        rng = np.random.default_rng(seed)
        sub = np.zeros_like(keep)
        for s in wanted:  # one step per session
            rows = np.flatnonzero(sids == s)
            if len(rows) == 0:
                continue
            k = max(1, int(math.ceil(fraction * len(rows))))
            sub[rng.permutation(rows)[:k]] = True
        keep &= sub
    return ds.select(np.flatnonzero(keep))


def make_collator(meta: dict, config=None, bin_size: float | None = None) -> NfmCollator:
    """Collator whose region indices follow the model config's vocabulary."""
    vocab = getattr(config, "region_vocab", None) if config is not None else None
    return NfmCollator(meta, region_vocab=vocab, bin_size=bin_size)


def session_statistics(dataset, meta: dict, session_ids: Iterable[str] | None = None,
                       bin_size: float | None = None, transform=None) -> dict[str, dict[str, np.ndarray]]:
    """Per-unit statistics of ``dataset`` (e.g. the training split) over its trials and bins, per session.

    Returns ``{session_id: {"mean": (N,), "input_mean": (N,), "input_std": (N,)}}`` (float64) for the
    sessions of ``session_ids`` (default: every session of ``meta``) that have rows in ``dataset``:

    * ``mean``: spikes: expected count per bin [spikes / bin] at ``bin_size`` s (default: the dataset's);
      2-photon: mean activity (NaN bad frames ignored; 0 for a unit never valid);
    * ``input_mean`` / ``input_std``: mean and standard deviation of ``transform(x)`` (a callable on a
      float32 tensor, e.g. the model's ``transform_input``; default identity) over the same entries.

    Spikes are binned with one ``np.bincount`` per session (trials x bins x units).
    """
    from .data.binning import bin_index, n_bins_for

    wanted = list(session_ids) if session_ids is not None else list(meta["sessions"])
    sids = np.asarray(list(dataset["session_id"]), dtype=object).astype(str)
    transform = transform if transform is not None else (lambda t: t)
    spikes = meta.get("modality", "spikes") == "spikes"
    if spikes:
        import pyarrow.compute as pc

        window = (float(meta["window"][0]), float(meta["window"][1]))
        size = float(bin_size or meta["bin_size"])
        T = n_bins_for(window, size)
        table = dataset.with_format("arrow")[:]
        lengths = pc.list_value_length(table.column("spike_units")).to_numpy(zero_copy_only=False).astype(np.int64)
        all_units = pc.list_flatten(table.column("spike_units")).to_numpy(zero_copy_only=False).astype(np.int64)
        all_times = pc.list_flatten(table.column("spike_times")).to_numpy(zero_copy_only=False).astype(np.float64)
        starts = np.concatenate([[0], np.cumsum(lengths)])
    out: dict[str, dict[str, np.ndarray]] = {}
    for sid in wanted:  # one step per session
        rows = np.flatnonzero(sids == sid)
        if len(rows) == 0:
            continue
        N = int(meta["sessions"][sid]["n_units"])
        if spikes:
            take = np.concatenate([np.arange(starts[r], starts[r + 1]) for r in rows]) if len(rows) else np.zeros(0, int)
            trial = np.repeat(np.arange(len(rows)), lengths[rows])
            flat = (trial * T + bin_index(all_times[take], window, size, T)) * N + all_units[take]
            x = np.bincount(flat, minlength=len(rows) * T * N).reshape(len(rows), T, N).astype(np.float32)
            valid = np.ones_like(x, dtype=bool)
        else:
            x = np.full((len(rows), int(meta["n_bins"]), N), np.nan, dtype=np.float32)
            for i, act in enumerate(dataset.select(rows)["activity"]):  # one step per trial
                a = np.asarray(act, dtype=np.float32)
                x[i, :, : a.shape[1]] = a
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


def init_sessions_from_data(model, dataset, meta: dict, session_ids: Iterable[str] | None = None,
                            bin_size: float | None = None, standardize_input: bool = True) -> list[str]:
    """Data-dependent read-in/read-out init of the model's sessions from their units' statistics in ``dataset``
    (:func:`session_statistics`, then
    :meth:`~nfm.models.modeling_nfm.NfmPreTrainedModel.init_session_statistics`); returns the sessions set.
    ``standardize_input=False`` sets only the read-out biases."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    known = base.config.session_n_units
    wanted = [s for s in (session_ids if session_ids is not None else known) if s in known and s in meta["sessions"]]
    stats = session_statistics(dataset, meta, wanted, bin_size, transform=base.base_model.transform_input)
    for sid, st in stats.items():  # one step per session
        if standardize_input:
            base.init_session_statistics(sid, st["mean"], st["input_mean"], st["input_std"])
        else:
            base.init_session_statistics(sid, st["mean"])
    return list(stats)


# --------------------------------------------------------------------------- model
def build_model(meta: dict, model_args: ModelArguments, model_class=None):
    """A fresh model (random init) from the dataset meta, or ``--init_from`` a pretrained one."""
    from .models import NfmConfig, NfmForPretraining

    cls = model_class or NfmForPretraining
    if model_args.init_from:
        return cls.from_pretrained(model_args.init_from)
    config = NfmConfig.from_dataset_meta(meta, preset=model_args.preset, **model_args.config_overrides())
    return cls(config)


def count_parameters(model) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


def parameter_digest(model) -> str:
    """SHA-256 of every parameter (name order, float32 bytes): equal digests = bit-identical weights."""
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        h.update(name.encode())
        h.update(p.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- trainer
class NfmTrainer(Trainer):
    """``transformers.Trainer`` with per-session batches, atomic checkpoints and loss components.

    Extra args: ``rank_info_dir`` (see module docstring).
    """

    def __init__(self, *args, rank_info_dir: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._train_sampler: SessionBatchSampler | None = None
        self._staging_root: str | None = None
        self._components: dict[str, list[float]] = {}
        rank_info_dir = rank_info_dir or os.environ.get(RANK_INFO_ENV)
        self.rank_info: dict[str, Any] | None = None
        self.rank_info_dir = rank_info_dir
        if rank_info_dir:
            self.rank_info = {"batches": [], "param_digest": {}}
            self.add_callback(_RankInfoCallback(self))

    # ---- data
    def get_train_dataloader(self):
        """DataLoader over :class:`SessionBatchSampler` (one session per batch, one shard per rank)."""
        from torch.utils.data import DataLoader

        if self.train_dataset is None:
            raise ValueError("NfmTrainer: training requires a train_dataset")
        ds = self.train_dataset
        if isinstance(ds, torch.utils.data.IterableDataset) or not hasattr(ds, "__len__"):
            # streaming: no per-session batches; Accelerate splits the stream's shards across ranks and the
            # collator pads units across sessions
            return super().get_train_dataloader()
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        self._train_sampler = SessionBatchSampler(
            list(ds["session_id"]), batch_size=self._train_batch_size,
            num_replicas=self.args.world_size, rank=self.args.process_index,
            shuffle=True, seed=seed, drop_last=self.args.dataloader_drop_last)
        params = dict(batch_sampler=self._train_sampler, collate_fn=self.data_collator,
                      num_workers=self.args.dataloader_num_workers, pin_memory=self.args.dataloader_pin_memory and torch.cuda.is_available())
        if self.args.dataloader_num_workers > 0:
            params.update(persistent_workers=self.args.dataloader_persistent_workers,
                          prefetch_factor=self.args.dataloader_prefetch_factor)
        loader = self.accelerator.prepare(DataLoader(ds, **params))
        # our sampler is already rank-aware: make Accelerate's BatchSamplerShard a pass-through. Its
        # ``batch_size`` must go too: with it set, the shard silently drops every batch shorter than
        # ``batch_size`` (each session's last one), a different number on each rank -> unequal step
        # counts -> a hang at the end of training.
        shard = getattr(loader, "batch_sampler", None)
        if shard is not None and getattr(shard, "batch_sampler", None) is self._train_sampler:
            shard.num_processes = 1
            shard.process_index = 0
            shard.batch_size = None
        return loader

    def _run_epoch(self, *args, **kwargs):
        epoch = kwargs["epoch"] if "epoch" in kwargs else args[1]
        if self._train_sampler is not None:
            self._train_sampler.set_epoch(epoch)
        return super()._run_epoch(*args, **kwargs)

    # ---- loss
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.rank_info is not None and model.training:
            self.rank_info["batches"].append({
                "step": int(self.state.global_step),
                "session_ids": list(inputs["session_ids"]),
                "trial_ids": [int(x) for x in inputs["trial_id"].tolist()],
            })
        outputs = model(**inputs)
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs[0]
        if loss is None:
            raise ValueError("the model returned no loss; check its objectives and the batch keys")
        if model.training:
            for key, value in outputs.items():
                if key != "loss" and key.endswith("loss") and isinstance(value, torch.Tensor) and value.numel() == 1:
                    self._components.setdefault(key, []).append(float(value.detach()))
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs and self._components:
            for key, values in self._components.items():
                logs[key] = round(float(np.mean(values)), 6)
            self._components = {}
        super().log(logs, *args, **kwargs)

    # ---- checkpoints
    def _get_output_dir(self, trial) -> str:
        if self._staging_root is not None:
            return self._staging_root
        return super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial) -> None:
        """Write ``checkpoint-N`` atomically: to ``<run_dir>/.partial`` first, rename when complete."""
        run_dir = super()._get_output_dir(trial)
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staging_root = os.path.join(run_dir, PARTIAL_DIR)
        writer = self.args.should_save
        if writer:
            shutil.rmtree(staging_root, ignore_errors=True)  # leftovers of a killed run
            os.makedirs(staging_root, exist_ok=True)
        self.accelerator.wait_for_everyone()
        push = self.args.push_to_hub
        self._staging_root = staging_root
        try:
            self.args.push_to_hub = False
            super()._save_checkpoint(model, trial)
        finally:
            self._staging_root = None
            self.args.push_to_hub = push
        self.accelerator.wait_for_everyone()
        final = os.path.join(run_dir, name)
        staged = os.path.join(staging_root, name)
        if writer:
            best = self.state.best_model_checkpoint
            if best and best.startswith(staging_root):
                self.state.best_model_checkpoint = os.path.join(run_dir, os.path.basename(best))
                self.state.save_to_json(os.path.join(staged, "trainer_state.json"))
            _fsync_tree(staged)
            if os.path.exists(final):  # e.g. re-saving a step after a resume
                old = os.path.join(staging_root, f"old-{name}")
                os.replace(final, old)
                os.replace(staged, final)
                shutil.rmtree(old)
            else:
                os.replace(staged, final)
            _fsync_dir(run_dir)
            shutil.rmtree(staging_root, ignore_errors=True)
            rotate_checkpoints(output_dir=run_dir, save_total_limit=self.args.save_total_limit,
                               best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=False)
        self.accelerator.wait_for_everyone()
        if push:
            self._push_from_checkpoint(final)

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        super()._save(output_dir, state_dict=state_dict)
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if self.args.should_save:
            pickled = os.path.join(output_dir, "training_args.bin")
            if os.path.exists(pickled):
                os.remove(pickled)
            Path(output_dir, "training_args.json").write_text(self.args.to_json_string())


def _fsync_tree(root: str) -> None:
    for dirpath, _, filenames in os.walk(root):
        for fn in filenames:
            fd = os.open(os.path.join(dirpath, fn), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(dirpath)


def _fsync_dir(path: str) -> None:
    with contextlib.suppress(OSError):  # some filesystems refuse fsync on directories
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# --------------------------------------------------------------------------- callbacks
class LossFileCallback(TrainerCallback):
    """Write every logged row (``state.log_history``) to ``losses.csv`` and ``losses.json``."""

    def __init__(self, output_dir: str | os.PathLike):
        self.output_dir = Path(output_dir)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero:
            write_loss_files(state.log_history, self.output_dir)


def write_loss_files(history: list[dict], output_dir: str | os.PathLike) -> None:
    """``losses.json`` (the rows as logged) and ``losses.csv`` (one column per key, blanks where absent)."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [dict(r) for r in history]
    tmp = out / ".losses.json.tmp"
    tmp.write_text(json.dumps(rows, indent=1))
    os.replace(tmp, out / "losses.json")
    keys = ["step", "epoch"] + sorted({k for r in rows for k in r} - {"step", "epoch"})
    tmp = out / ".losses.csv.tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in keys})
    os.replace(tmp, out / "losses.csv")


class _RankInfoCallback(TrainerCallback):
    """Per-rank record for the multi-process test (see module docstring)."""

    def __init__(self, trainer: NfmTrainer):
        self.trainer = trainer

    def _write(self, args):
        info = self.trainer.rank_info
        info.update(
            world_size=int(args.world_size),
            process_index=int(args.process_index),
            torch_distributed=bool(torch.distributed.is_available() and torch.distributed.is_initialized()),
            torch_world_size=(torch.distributed.get_world_size()
                              if torch.distributed.is_available() and torch.distributed.is_initialized() else 1),
            env_world_size=os.environ.get("WORLD_SIZE"),
            pid=os.getpid(),
        )
        d = Path(self.trainer.rank_info_dir)
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f".rank{args.process_index}.json.tmp"
        tmp.write_text(json.dumps(info, indent=1))
        os.replace(tmp, d / f"rank{args.process_index}.json")

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.trainer.rank_info["param_digest"][str(state.global_step)] = parameter_digest(model)
        self._write(args)

    def on_train_end(self, args, state, control, **kwargs):
        self._write(args)


def build_trainer(
    model,
    training_args: TrainingArguments,
    train_dataset,
    meta: dict,
    eval_dataset=None,
    collator: NfmCollator | None = None,
    callbacks: Sequence[TrainerCallback] = (),
    rank_info_dir: str | None = None,
    bin_size: float | None = None,
) -> NfmTrainer:
    """An :class:`NfmTrainer` with the nfm collator, per-session sampler and loss files.

    ``remove_unused_columns`` is forced to False (the collator needs the raw
    spike lists), and TensorBoard logs go to ``<output_dir>/tensorboard``
    unless ``TENSORBOARD_LOGGING_DIR`` is set.
    """
    training_args.remove_unused_columns = False
    collator = collator or make_collator(meta, getattr(model, "config", None), bin_size=bin_size)
    trainer = NfmTrainer(
        model=model, args=training_args, train_dataset=train_dataset, eval_dataset=eval_dataset,
        data_collator=collator, callbacks=[LossFileCallback(training_args.output_dir), *callbacks],
        rank_info_dir=rank_info_dir)
    if not os.environ.get("TENSORBOARD_LOGGING_DIR"):
        from transformers.integrations import TensorBoardCallback

        for cb in trainer.callback_handler.callbacks:
            if isinstance(cb, TensorBoardCallback) and cb.logging_dir is None:
                cb.logging_dir = str(Path(training_args.output_dir) / "tensorboard")
    return trainer


def resolve_resume(value: str | None, output_dir: str) -> str | bool | None:
    """``--resume_from_checkpoint``: a folder, or ``true``/``last`` for the newest checkpoint in ``output_dir``."""
    from transformers.trainer_utils import get_last_checkpoint

    if value is None or value == "" or str(value).lower() in ("false", "no", "none"):
        return None
    if str(value).lower() in ("true", "last", "latest"):
        last = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
        if last is None:
            raise FileNotFoundError(f"--resume_from_checkpoint {value}: no checkpoint-N folder in {output_dir}")
        return last
    if not os.path.isdir(value):
        raise FileNotFoundError(f"--resume_from_checkpoint {value}: no such folder")
    return value


# --------------------------------------------------------------------------- evaluation summary
#: masking tasks of the evaluation summary (every model is scored on all of them, whatever it trained on)
EVAL_MASK_MODES = ("neuron", "causal", "intra_region", "inter_region", "temporal")


def heldout_units(n_units: int, fraction: float, seed: int, session_id: str) -> np.ndarray:
    """Fixed co-smoothing held-out units of a session: ``max(1, round(fraction * n))`` indices, seeded by
    (seed, session id) so every model is scored on the same units."""
    digest = int(hashlib.sha1(session_id.encode()).hexdigest()[:8], 16)
    rng = np.random.default_rng([seed, digest])
    k = min(n_units, max(1, int(round(fraction * n_units))))
    return np.sort(rng.choice(n_units, k, replace=False))


def _session_batches(dataset, batch_size: int, max_batches: int) -> list[list[int]]:
    sampler = SessionBatchSampler(list(dataset["session_id"]), batch_size=batch_size, shuffle=False)
    batches = list(sampler)
    return batches[:max_batches] if max_batches > 0 else batches


def end_of_training_summary(model, dd, meta: dict, session_ids, run_args, data_args, training_args) -> dict[str, Any]:
    """:func:`evaluate_summary` on ``run_args.eval_split`` of ``session_ids`` as the recipes run it after
    training; ``{}`` with ``--skip_eval``."""
    if run_args.skip_eval:
        return {}
    eval_ds = subset_split(dd[run_args.eval_split], session_ids)
    return evaluate_summary(model, eval_ds, meta, batch_size=run_args.eval_batch_size,
                            max_batches=run_args.eval_max_batches, seed=training_args.seed,
                            bin_size=data_args.bin_size)


@torch.no_grad()
def evaluate_summary(
    model,
    dataset,
    meta: dict,
    batch_size: int = 16,
    max_batches: int = 0,
    seed: int = 0,
    bin_size: float | None = None,
    heldout_fraction: float = 0.25,
    mask_modes: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Short evaluation of a trained model on one split (trials of the model's sessions).

    Returns a JSON-ready dict:

    * ``masked_loss``: ``{mode: NLL}`` for each of :data:`EVAL_MASK_MODES`
      (whatever the model trained on, so MtM, temporal-only and other
      variants are compared on the same tasks), each the mean NLL per masked
      entry (nats per bin x unit) over the split, masks drawn from a generator
      seeded with ``seed`` (the same masks for every model of equal data). The
      prompt token is the task's mode when the model trained on it, else the
      model's first trained mode (``masked_loss_prompts`` says which);
    * ``co_smoothing_bits_per_spike``: NLB co-bps (:func:`nfm.evaluation.metrics.co_bps`,
      pooled over the held-out neurons of a session; null = each neuron's mean
      over the evaluated trials and bins) with a fixed ``heldout_fraction`` of
      each session's units held out (hidden in the input, predicted from the
      others under the ``neuron`` prompt), averaged over sessions, plus
      ``per_session``;
    * ``generation``: mean ``id_loss`` / ``dt_loss`` (cross-entropies, nats per
      token) when the model has the generation objective.

    Spike data (Poisson likelihood) only for bits/spike; the masked losses are
    reported for either likelihood.
    """
    from .evaluation.metrics import co_bps
    from .models.masking import MaskSample, held_out_units_mask, sample_mask

    cfg = model.config
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    collator = make_collator(meta, cfg, bin_size=bin_size)
    batches = _session_batches(dataset, batch_size, max_batches)
    objectives = list(getattr(cfg, "objectives", ["mtm"]))
    # NfmForPretraining runs a subset of its objectives per call (no generation pass in masked scoring)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    takes_objectives = "objectives" in inspect.signature(base.forward).parameters

    def only(objs: list[str]) -> dict:
        return {"objectives": objs} if takes_objectives else {}

    summary: dict[str, Any] = {"n_trials": int(sum(len(b) for b in batches))}
    try:
        if "mtm" in objectives:
            modes = list(mask_modes) if mask_modes is not None else list(EVAL_MASK_MODES)
            trained = list(cfg.active_mask_modes)
            prompts = {m: (m if m in trained else trained[0]) for m in modes}
            losses = {}
            for mode in modes:
                gen = torch.Generator().manual_seed(seed)
                total, count = 0.0, 0.0
                for rows in batches:
                    batch = _to_device(collator(_rows(dataset, rows)), device)
                    task = sample_mask(mode, batch["unit_mask"], batch["unit_region"], batch["spikes"].shape[1],
                                       cfg, gen)
                    # the task's mask, under the prompt of a mode the model was trained on
                    sample = MaskSample(task.target, task.hidden, prompts[mode], causal=task.causal)
                    out = model(**batch, mask=sample, **only(["mtm"]))
                    loss = out["mtm_loss"] if "mtm_loss" in out else out["loss"]
                    n = float(out["mask"].sum())
                    total += float(loss) * n
                    count += n
                losses[mode] = total / max(count, 1.0)
            summary["masked_loss"] = losses
            summary["masked_loss_prompts"] = prompts
            if cfg.likelihood == "poisson":
                summary.update(_co_smoothing(model, dataset, batches, collator, device, seed, heldout_fraction,
                                             co_bps, held_out_units_mask, prompts.get("neuron", trained[0]),
                                             only(["mtm"])))
        if "generation" in objectives:
            ids, dts = [], []
            for rows in batches:
                batch = _to_device(collator(_rows(dataset, rows)), device)
                out = model(**batch, **only(["generation"]))
                if out.get("id_loss") is not None:
                    ids.append(float(out["id_loss"]))
                    dts.append(float(out["dt_loss"]))
            if ids:
                summary["generation"] = {"id_loss": float(np.mean(ids)), "dt_loss": float(np.mean(dts))}
    finally:
        model.train(was_training)
    return summary


def _co_smoothing(model, dataset, batches, collator, device, seed, fraction, co_bps, held_out_units_mask,
                  prompt: str = "neuron", forward_kwargs: dict | None = None):
    rates: dict[str, list[np.ndarray]] = {}
    counts: dict[str, list[np.ndarray]] = {}
    held: dict[str, np.ndarray] = {}
    for rows in batches:  # one step per batch; each batch holds one session
        batch = _to_device(collator(_rows(dataset, rows)), device)
        sid = batch["session_ids"][0]
        n = int(batch["unit_mask"][0].sum())
        if sid not in held:
            held[sid] = heldout_units(n, fraction, seed, sid)
        ho = torch.zeros_like(batch["unit_mask"])
        ho[:, torch.as_tensor(held[sid], device=ho.device)] = True
        T = batch["spikes"].shape[1]
        sample = held_out_units_mask(batch["unit_mask"], ho, T)
        sample.mode = prompt  # the neuron prompt, or the one a single-mode model was trained with
        out = model(**batch, mask=sample, **(forward_kwargs or {}))
        log_rates = out["log_rates"].float().clamp(max=float(model.config.max_log_rate))
        rates.setdefault(sid, []).append(torch.exp(log_rates)[..., :n].cpu().numpy())
        counts.setdefault(sid, []).append(batch["spikes"][..., :n].float().cpu().numpy())
    per_session = {}
    for sid in rates:
        r, c = np.concatenate(rates[sid]), np.concatenate(counts[sid])
        try:
            per_session[sid] = float(co_bps(r, c, held[sid]))
        except ValueError:  # no spike in the held-out units of this split
            per_session[sid] = float("nan")
    valid = [v for v in per_session.values() if np.isfinite(v)]
    return {"co_smoothing_bits_per_spike": float(np.mean(valid)) if valid else float("nan"),
            "co_smoothing_per_session": per_session, "co_smoothing_heldout_fraction": fraction,
            "co_smoothing_prompt": prompt}


def _rows(dataset, idx: list[int]) -> list[dict]:
    """Rows ``idx`` of a datasets.Dataset as a list of dicts (one columnar read)."""
    cols = dataset[list(idx)]
    return [dict(zip(cols, values)) for values in zip(*cols.values())]


def _to_device(batch: dict, device) -> dict:
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
