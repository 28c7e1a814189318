"""Training library: arguments (:mod:`.arguments`), data selection (:mod:`.data`), the per-session ``Trainer``
and logs (:mod:`.trainer`).

``recipes/pretrain.py`` and ``recipes/finetune_lora.py`` are thin glue over
the functions here, so everything a recipe does can be done from Python:

>>> from nfm.training import parse_args, prepare_training_data, build_model, build_trainer
>>> data_args, model_args, run_args, training_args = parse_args(argv, default_config="recipes/configs/synthetic.yaml")
>>> dd, meta, path = prepare_training_data(data_args, training_args)
>>> model = build_model(meta, model_args, bin_size=data_args.bin_size)  # the time grid goes into the config
>>> trainer = build_trainer(model, training_args, dd["train"], meta)      # the collator reads it back

The evaluation at the end of training is :func:`nfm.evaluation.summary.end_of_training_summary` (the
evaluation runner on a short task list), called by the recipes.

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

* A run's final outputs (weights, config, card, ``eval_summary.json``, logs, the training-data record) are
  written to ``<output_dir>/.partial-final`` and moved into place by :func:`commit_final_outputs`: the old
  card and summary go first, the new ones come last, so no interruption leaves a card beside other weights.
  ``--overwrite_output_dir`` removes an earlier run's outputs first (:func:`clear_previous_run`).
* ``nfm_training_data.json`` (:mod:`.record`): the datasets a model was trained on, with a content
  fingerprint; the recipes default ``--dataset`` to it and refuse a dataset that has changed since.
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

import importlib

#: public names -> the submodule that defines them.  Loaded on first use, so that ``nfm.training.arguments``
#: (what a recipe needs to parse its command line) imports neither torch nor transformers.
_EXPORTS = {
    "arguments": ("RANK_INFO_ENV", "TRAINING_DEFAULTS", "DataArguments", "ModelArguments", "RunArguments",
                  "load_yaml_config", "parse_args", "read_id_file"),
    "data": ("build_synthetic_dataset", "describe_modalities", "init_sessions_from_data", "prepare_training_data",
             "prepare_training_datasets", "rows", "select_sessions", "select_sessions_multi", "session_statistics",
             "subset_split"),
    "trainer": ("PARTIAL_DIR", "LossFileCallback", "NfmTrainer", "build_model", "build_trainer", "count_parameters",
                "parameter_digest", "resolve_resume", "write_loss_files", "plot_losses", "FINAL_STAGING_DIR",
                "DESCRIPTOR_FILES", "RUN_OUTPUTS", "final_staging_dir", "commit_final_outputs", "clear_previous_run"),
    "record": ("TRAINING_DATA_FILE", "dataset_fingerprint", "dataset_entry", "write_training_data",
               "read_training_data", "recorded_dataset", "default_dataset"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [name for names in _EXPORTS.values() for name in names]
