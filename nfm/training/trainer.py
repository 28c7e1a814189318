"""The per-session ``transformers.Trainer`` (:class:`NfmTrainer`), its callbacks, and model building.

See :mod:`nfm.training` for the design (per-session batches, atomic checkpoints, no pickles, loss components).
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from nfm.data.collate import NfmCollator, arrow_rows
from nfm.data.meta import DatasetMeta
from nfm.data.sampler import SessionBatchSampler
from nfm.files import apply_umask

from .arguments import RANK_INFO_ENV, ModelArguments

PARTIAL_DIR = ".partial"

class NfmTrainer(Trainer):
    """``transformers.Trainer`` with per-session batches, atomic checkpoints and loss components.

    Extra args: ``rank_info_dir`` (see module docstring).
    """

    def __init__(self, *args, rank_info_dir: str | None = None, dataset_weights=None, sessions_per_block: int = 0,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.dataset_weights = dataset_weights  # mixing weights of a MultiDataset (None: natural shares)
        self.sessions_per_block = int(sessions_per_block)
        self._train_sampler: SessionBatchSampler | None = None
        self._staging_root: str | None = None
        self._components: dict[str, list[float]] = {}
        rank_info_dir = rank_info_dir or os.environ.get(RANK_INFO_ENV)
        self.rank_info: dict[str, Any] | None = None
        self.rank_info_dir = rank_info_dir
        if rank_info_dir:
            self.rank_info = {"batches": [], "param_digest": {}}
            self.add_callback(_RankInfoCallback(self))

    # ---- engine
    def create_accelerator_and_postprocess(self):
        """The Trainer's Accelerator, with FSDP kept on CPU-only multi-process runs.

        Accelerate (1.15) sends CPU processes to its ``MULTI_CPU`` (gloo) path and there silently drops an FSDP
        config (``ACCELERATE_USE_FSDP`` / ``FSDP_*`` set by ``accelerate launch --config_file <fsdp yaml>``), so
        the run would be plain data parallel.  PyTorch's FSDP2 runs on CPU with gloo: when FSDP was asked for,
        the FSDP plugin is installed and the run takes Accelerate's own FSDP path (sharded parameters, gradients
        and optimizer states, sharded checkpoints).  GPU runs are unchanged."""
        super().create_accelerator_and_postprocess()
        from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

        state = self.accelerator.state
        asked = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true" or self.args.fsdp_plugin_args
        if asked and state.distributed_type == DistributedType.MULTI_CPU and getattr(state, "fsdp_plugin", None) is None:
            state.fsdp_plugin = FullyShardedDataParallelPlugin(**(self.args.fsdp_plugin_args or {}))
            state.distributed_type = DistributedType.FSDP
            self.is_fsdp_enabled = True

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """As the Trainer's, but a sharded FSDP2 run also writes the whole model (``model.safetensors``, gathered
        from every rank) when saving outside a checkpoint, so ``from_pretrained`` loads the result; the
        checkpoints stay sharded (``pytorch_model_fsdp_0/``; ``accelerate merge-weights`` makes one whole)."""
        plugin = self.accelerator.state.fsdp_plugin if self.is_fsdp_enabled else None
        if (plugin is not None and plugin.fsdp_version == 2 and "FULL_STATE_DICT" not in str(plugin.state_dict_type)
                and not _internal_call):
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            # a collective (every rank calls it); full tensors on the CPU of rank 0
            state_dict = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True,
                                                                                   cpu_offload=True))
            self._save(output_dir if output_dir is not None else self.args.output_dir, state_dict=state_dict)
            return
        super().save_model(output_dir, _internal_call=_internal_call)

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
        kw = dict(batch_size=self._train_batch_size, num_replicas=self.args.world_size, rank=self.args.process_index,
                  shuffle=True, seed=seed, drop_last=self.args.dataloader_drop_last)
        if hasattr(ds, "make_batch_sampler"):  # several datasets (nfm.data.multi): sampler with mixing weights
            self._train_sampler = ds.make_batch_sampler(weights=self.dataset_weights, **kw)
        else:
            self._train_sampler = SessionBatchSampler(list(ds["session_id"]),
                                                      sessions_per_block=self.sessions_per_block, **kw)
        params = dict(batch_sampler=self._train_sampler, collate_fn=self.data_collator,
                      num_workers=self.args.dataloader_num_workers, pin_memory=self.args.dataloader_pin_memory and torch.cuda.is_available())
        if self.args.dataloader_num_workers > 0:
            params.update(persistent_workers=self.args.dataloader_persistent_workers,
                          prefetch_factor=self.args.dataloader_prefetch_factor)
        # rows reach the collator as one Arrow table per batch (columns to numpy, no Python object per spike)
        loader = self.accelerator.prepare(DataLoader(arrow_rows(ds), **params))
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

    # ---- precision
    def train(self, *args, **kwargs):
        """As the Trainer's.  With ``--bf16`` (``--precision bf16``; on a CPU with ``use_cpu``, which
        :mod:`nfm.training.precision` sets) Accelerate runs forward and loss under bf16 autocast with float32
        master weights and optimizer state, and wraps the model's ``forward`` in that autocast; afterwards the
        wrapper is removed, so the trained model in memory computes as the saved one does (float32), e.g. in the
        training summary or a caller's own forward pass."""
        try:
            return super().train(*args, **kwargs)
        finally:
            if getattr(self.accelerator, "native_amp", False):
                from accelerate.utils import extract_model_from_parallel

                extract_model_from_parallel(self.model, keep_fp32_wrapper=False)

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
            apply_umask(output_dir)  # safetensors writes 0600 files (also a PEFT adapter's): use the umask


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


# --------------------------------------------------------------------------- the final outputs of a run
#: staging folder of a run's final outputs (``<output_dir>/.partial-final``), moved into place when complete
FINAL_STAGING_DIR = ".partial-final"
#: the files that describe the weights beside them: when a run's final outputs replace an earlier run's, these are
#: removed first and moved in last, so an interruption never leaves a card or a summary beside other weights
DESCRIPTOR_FILES = ("README.md", "eval_summary.json", "nfm_training_data.json")
#: what a training recipe writes into its ``--output_dir`` (``--overwrite_output_dir`` removes these; a synthetic
#: ``dataset/`` built there and anything else is kept)
RUN_OUTPUTS = ("model.safetensors", "config.json", "generation_config.json", "adapter_model.safetensors",
               "adapter_config.json", "nfm_adapter.json", "training_args.json", "losses.csv", "losses.json",
               "losses.png", *DESCRIPTOR_FILES, "merged", "tensorboard", "evaluation", "generated", PARTIAL_DIR,
               FINAL_STAGING_DIR)


def final_staging_dir(output_dir: str | os.PathLike) -> Path:
    """An empty ``<output_dir>/.partial-final`` (leftovers of a killed run removed) for a run's final outputs:
    write the model, card, summary and logs there, then :func:`commit_final_outputs`."""
    staging = Path(output_dir) / FINAL_STAGING_DIR
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def _replace_path(src: Path, dst: Path, trash: Path) -> None:
    if dst.is_dir() and not dst.is_symlink():
        old = trash / f"old-{dst.name}"
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old)
    else:
        os.replace(src, dst)


def commit_final_outputs(staging: str | os.PathLike, output_dir: str | os.PathLike) -> list[str]:
    """Move what :func:`final_staging_dir` holds into ``output_dir``; returns the names moved.

    In three steps, each flushed to disk: (1) the old descriptions of the weights (:data:`DESCRIPTOR_FILES`) are
    removed, (2) the weights, config and logs replace theirs, (3) the new descriptions move in.  A run killed
    before the commit leaves the previous outputs as they were (and a staging folder the next run removes); one
    killed during it leaves weights without a card, never a card or a summary that describes other weights."""
    staging, out = Path(staging), Path(output_dir)
    names = sorted(p.name for p in staging.iterdir() if not p.name.startswith("old-"))
    _fsync_tree(str(staging))
    for name in DESCRIPTOR_FILES:  # 1
        if (out / name).is_file():
            (out / name).unlink()
    _fsync_dir(str(out))
    for name in names:  # 2
        if name not in DESCRIPTOR_FILES:
            _replace_path(staging / name, out / name, staging)
    _fsync_dir(str(out))
    for name in names:  # 3
        if name in DESCRIPTOR_FILES:
            _replace_path(staging / name, out / name, staging)
    _fsync_dir(str(out))
    shutil.rmtree(staging, ignore_errors=True)
    return names


def clear_previous_run(output_dir: str | os.PathLike) -> list[str]:
    """Remove an earlier run's outputs (:data:`RUN_OUTPUTS` and ``checkpoint-N`` folders) from ``output_dir``
    (``--overwrite_output_dir``); returns the names removed.  Other files and a ``dataset/`` folder stay."""
    out = Path(output_dir)
    if not out.is_dir():
        return []
    gone = []
    for p in sorted(out.iterdir()):
        if p.name in RUN_OUTPUTS or (p.is_dir() and p.name.startswith(f"{PREFIX_CHECKPOINT_DIR}-")):
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
            gone.append(p.name)
    return gone


# --------------------------------------------------------------------------- callbacks
class LossFileCallback(TrainerCallback):
    """Write every logged row (``state.log_history``) to ``losses.csv`` and ``losses.json``."""

    def __init__(self, output_dir: str | os.PathLike):
        self.output_dir = Path(output_dir)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero:
            write_loss_files(state.log_history, self.output_dir)


def write_loss_files(history: list[dict], output_dir: str | os.PathLike, plot: bool = False) -> None:
    """``losses.json`` (the rows as logged) and ``losses.csv`` (one column per key, blanks where absent);
    ``plot``: also ``losses.png``, the training loss and its components against the step (:func:`plot_losses`)."""
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
    if plot:
        plot_losses(rows, out / "losses.png")


def plot_losses(history: list[dict], path: str | os.PathLike) -> Path | None:
    """``losses.png``: ``loss`` and every ``*_loss`` component of the logged rows against the step (one panel
    each, log scale where positive); None (nothing written) when no row holds a loss."""
    series = {}
    for r in history:
        for k, v in r.items():
            if (k == "loss" or k.endswith("_loss")) and k != "train_loss" and isinstance(v, (int, float)) \
                    and "step" in r and np.isfinite(v):
                series.setdefault(k, []).append((int(r["step"]), float(v)))
    if not series:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = ["loss"] * ("loss" in series) + sorted(k for k in series if k != "loss")
    fig = Figure(figsize=(4.0 * min(len(names), 3), 3.0 * ((len(names) + 2) // 3)), dpi=100)
    FigureCanvasAgg(fig)
    for i, name in enumerate(names):
        ax = fig.add_subplot((len(names) + 2) // 3, min(len(names), 3), i + 1)
        steps, values = zip(*series[name])
        ax.plot(steps, values, color="C0" if name == "loss" else "C1", lw=1.2)
        if min(values) > 0 and max(values) / min(values) > 10:
            ax.set_yscale("log")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = Path(path).with_name(f".{Path(path).name}.tmp")
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)
    return Path(path)


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
    meta: DatasetMeta,
    eval_dataset=None,
    collator: NfmCollator | None = None,
    callbacks: Sequence[TrainerCallback] = (),
    rank_info_dir: str | None = None,
    dataset_weights: Sequence[float] | None = None,
    modality_map: dict[str, str] | None = None,
    sessions_per_block: int = 0,
) -> NfmTrainer:
    """An :class:`NfmTrainer` with the model's collator (``NfmCollator.for_config``: the model's time grid and
    region vocabulary), the per-session sampler and loss files.

    Several datasets: ``train_dataset`` a :class:`nfm.data.multi.MultiDataset`, ``collator`` a
    :class:`nfm.data.multi.MultiCollator`, ``dataset_weights`` the share of batches drawn from each.
    ``modality_map``: the model's variable names -> the dataset's (``--modality_map``).

    ``remove_unused_columns`` is forced to False (the collator needs the raw
    spike lists), and TensorBoard logs go to ``<output_dir>/tensorboard``
    unless ``TENSORBOARD_LOGGING_DIR`` is set.
    """
    training_args.remove_unused_columns = False
    cfg = model.config
    # a compiled forward cannot draw the mask mode without a graph break: the collator draws it per batch
    draw = cfg.active_mask_modes if training_args.torch_compile and "mtm" in cfg.objectives else None
    probs = cfg.mask_mode_probabilities if draw and cfg.mask_mode_weights else None
    collator = collator or NfmCollator.for_config(meta, cfg, modality_map=modality_map, draw_mask_mode=draw,
                                                  draw_mask_probs=probs, seed=training_args.seed)
    trainer = NfmTrainer(
        model=model, args=training_args, train_dataset=train_dataset, eval_dataset=eval_dataset,
        data_collator=collator, callbacks=[LossFileCallback(training_args.output_dir), *callbacks],
        rank_info_dir=rank_info_dir, dataset_weights=dataset_weights,
        sessions_per_block=sessions_per_block)
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


# --------------------------------------------------------------------------- model
def build_model(meta: DatasetMeta | Sequence[DatasetMeta], model_args: ModelArguments, model_class=None,
                bin_size: float | None = None):
    """A fresh model (random init) from the dataset meta on the time grid ``meta.grid(bin_size)`` (a list of
    metas: one model over several datasets, :meth:`NfmConfig.from_dataset_metas`), or ``--init_from`` a
    pretrained one (its own grid; a ``bin_size`` that differs from it raises)."""
    from nfm.models import NfmConfig, NfmForPretraining

    cls = model_class or NfmForPretraining
    if model_args.init_from:
        model = cls.from_pretrained(model_args.init_from)
        if bin_size is not None and abs(float(bin_size) - float(model.config.bin_size)) > 1e-12:
            raise ValueError(f"--bin_size {bin_size} s differs from the bin size {model.config.bin_size} s of "
                             f"--init_from {model_args.init_from}")
        return model
    if isinstance(meta, (list, tuple)):
        config = NfmConfig.from_dataset_metas(list(meta), preset=model_args.preset, bin_size=bin_size,
                                              **model_args.config_overrides())
    else:
        config = NfmConfig.from_dataset_meta(meta, preset=model_args.preset, bin_size=bin_size,
                                             **model_args.config_overrides())
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
