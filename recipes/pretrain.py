"""Pretrain an nfm model (MtM masking and/or Neuroformer generation) with transformers.Trainer.

    accelerate launch -q --config_file recipes/accelerate/single_process.yaml recipes/pretrain.py   # = make demo
    python recipes/pretrain.py          # the same, one process: ~7.5 CPU-min (benchmarks/results_timing.md)
    accelerate launch recipes/pretrain.py --config recipes/configs/mtm_only.yaml --max_steps 1000
    accelerate launch --multi_gpu --num_processes 8 recipes/pretrain.py \
        --config recipes/configs/ibl_repeated_site.yaml --dataset data/ibl_repeated_site --bf16
    accelerate launch recipes/pretrain.py --output_dir outputs/pretrain --resume_from_checkpoint last
    accelerate launch recipes/pretrain.py --dataset data/ibl data/mesoscope --dataset_weights 0.5 0.5  # mixed

Every argument can be set in the YAML config (``--config``, default
``recipes/configs/synthetic.yaml``) and overridden on the command line; see
``--help`` (the data, model and run arguments of ``nfm.training`` and all of
``transformers.TrainingArguments``).

Writes to ``--output_dir``: ``config.json`` + ``model.safetensors``, ``README.md``
(model card), ``tensorboard/``, ``losses.csv``/``losses.json``,
``eval_summary.json``, ``checkpoint-N/`` (atomic) and, when no ``--dataset``
is given, the synthetic ``dataset/`` it built.
"""
from __future__ import annotations

import sys
from pathlib import Path

DEFAULT_CONFIG = "synthetic"  # recipes/configs/synthetic.yaml (shipped in nfm/resources/configs)


def main(argv=None) -> int:
    from nfm.training.arguments import parse_args  # light: --help and argument errors need no torch

    argv = list(sys.argv[1:] if argv is None else argv)
    data_args, model_args, run_args, training_args = parse_args(argv, default_config=DEFAULT_CONFIG,
                                                                description=__doc__, prog="pretrain.py",
                                                                check=_check_paths)
    import json
    import shlex

    from transformers import set_seed
    from transformers.utils import logging as hf_logging

    from nfm.cards import pretrained_model_card, write_card
    from nfm.data.collate import NfmCollator
    from nfm.data.multi import MultiCollator, MultiDataset
    from nfm.evaluation.summary import compact, end_of_training_summary
    from nfm.training import (
        build_model,
        build_trainer,
        count_parameters,
        init_sessions_from_data,
        prepare_training_datasets,
        resolve_resume,
        select_sessions,
        select_sessions_multi,
        subset_split,
        write_loss_files,
    )

    hf_logging.set_verbosity_warning()
    is_main = training_args.process_index == 0
    set_seed(training_args.seed)

    loaded = prepare_training_datasets(data_args, training_args)
    metas = [m for _, m, _ in loaded]
    ids_per = [select_sessions(metas[0], data_args)] if len(loaded) == 1 else select_sessions_multi(metas, data_args)
    train_metas = [m.subset(ids) for m, ids in zip(metas, ids_per)]
    parts = [subset_split(dd["train"], ids, data_args.train_fraction, data_args.train_fraction_seed)
             for (dd, _, _), ids in zip(loaded, ids_per)]
    names = [Path(p).name for _, _, p in loaded]
    dd, meta, dataset_path = loaded[0]
    train_ids = [s for ids in ids_per for s in ids]
    heldout = [s for m in metas for s in m.sessions if s not in set(train_ids)]
    train_meta = train_metas[0]
    # the time grid (one per dataset) lives in the config
    model = build_model(train_metas if len(loaded) > 1 else train_meta, model_args, bin_size=data_args.bin_size)
    if not model_args.init_from:  # read-out biases at each unit's mean rate (see init_session_statistics)
        for part, tm in zip(parts, train_metas):
            init_sessions_from_data(model, part, tm)
    collator = None
    if len(loaded) > 1:
        train_ds = MultiDataset(parts, names)
        collator = MultiCollator([NfmCollator.for_config(tm, model.config) for tm in train_metas])
    else:
        train_ds = parts[0]
    trainable, total = count_parameters(model)
    if is_main:
        print(f"nfm pretraining: {type(model).__name__}, {total:,} parameters ({trainable:,} trainable); "
              f"{len(train_ids)} sessions, {len(train_ds)} training trials, {model.config.n_bins} bins of "
              f"{model.config.bin_size} s; "
              f"held out: {', '.join(heldout) or 'none'}; world size {training_args.world_size}", flush=True)
        if len(loaded) > 1:
            sampler = train_ds.make_batch_sampler(training_args.per_device_train_batch_size,
                                                  weights=data_args.dataset_weights)
            for name, tm in zip(names, train_metas):
                (w0, w1), size, n = model.config.grid_of(next(iter(tm.sessions)))
                print(f"  {name}: {tm.modality}, {len(tm.sessions)} sessions, {n} bins of {size:.4g} s over "
                      f"[{w0:g}, {w1:g}] s", flush=True)
            print(f"  mixing per epoch: {sampler.describe(names)}; objectives {model.config.objectives} "
                  "(generation on spike sessions only)", flush=True)

    trainer = build_trainer(model, training_args, train_ds, train_meta, collator=collator,
                            rank_info_dir=run_args.rank_info_dir, dataset_weights=data_args.dataset_weights,
                            sessions_per_block=data_args.sessions_per_block)
    resume = resolve_resume(training_args.resume_from_checkpoint, training_args.output_dir)
    result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(training_args.output_dir)  # config.json + model.safetensors (+ training_args.json)
    if not trainer.is_world_process_zero():
        return 0

    out = Path(training_args.output_dir)
    write_loss_files(trainer.state.log_history, out)
    summaries = [{} if run_args.skip_eval else end_of_training_summary(
        model, dd_k, tm, list(tm.sessions), split=run_args.eval_split, tasks=run_args.eval_tasks.split(","),
        batch_size=run_args.eval_batch_size, max_trials=run_args.eval_max_trials or None)
        for (dd_k, _, _), tm in zip(loaded, train_metas)]
    summary = dict(summaries[0])
    if len(loaded) > 1:  # one summary per dataset; the top-level one is the first (primary) dataset's
        summary["datasets"] = dict(zip(names, summaries))
    summary["train"] = {"steps": int(trainer.state.global_step), "train_loss": result.training_loss,
                        "runtime_s": result.metrics.get("train_runtime"),
                        "samples_per_second": result.metrics.get("train_samples_per_second"),
                        "world_size": int(training_args.world_size)}
    (out / "eval_summary.json").write_text(json.dumps(summary, indent=1))
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    card_meta = meta
    if len(metas) > 1:  # the card lists every dataset's sessions and regions
        import copy

        card_meta = copy.copy(meta)
        card_meta.sessions = {s: m.sessions[s] for m in metas for s in m.sessions}
        card_meta.regions = sorted({r for m in metas for r in m.regions})
    card = pretrained_model_card(
        model, card_meta, train_sessions=train_ids, heldout_sessions=heldout,
        dataset_name=_dataset_name(data_args, dataset_path),
        eval_summary={**compact(summary.get("tasks", {})), **({"generation": summary["generation"]}
                                                              if "generation" in summary else {})},
        train_info=dict(steps=trainer.state.global_step, batch_size=training_args.per_device_train_batch_size,
                        world_size=training_args.world_size, learning_rate=training_args.learning_rate,
                        final_loss=f"{losses[-1]:.4f}" if losses else "?", eval_split=run_args.eval_split),
        repo_id=str(out), command="accelerate launch recipes/pretrain.py " + shlex.join(argv))
    write_card(out, card)
    print(f"model, card, logs and eval_summary.json written to {out}")
    for name, summ in (summary.get("datasets") or {"": summary}).items():
        for task, res in compact(summ.get("tasks", {})).items():
            print(f"  {name + ': ' if name else ''}{task}: " + ", ".join(
                f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in res.items()))
    if "generation" in summary:
        print(f"  generation: {summary['generation']}")
    return 0


def _check_paths(ns) -> None:
    """Fast checks before torch is imported: the dataset and the model to start from exist."""
    from nfm.cli import check_dataset_arg, check_model_arg

    for path in ([ns.dataset] if isinstance(ns.dataset, str) else list(ns.dataset or [])) + \
            ([ns.datasets] if isinstance(ns.datasets, str) else list(ns.datasets or [])):
        check_dataset_arg(path)
    if ns.init_from:
        check_model_arg(ns.init_from, "--init_from")


def _dataset_name(data_args, path) -> str:
    if data_args.dataset_paths:
        return " + ".join(Path(p).name for p in data_args.dataset_paths)
    return (f"nfm-synthetic-ibl-like-{data_args.synthetic_animals}x{data_args.synthetic_sessions_per_animal}"
            f"-seed{data_args.synthetic_seed}")


if __name__ == "__main__":
    from nfm.cli import run

    sys.exit(run(main))
