"""Pretrain an nfm model (MtM masking and/or Neuroformer generation) with transformers.Trainer.

    accelerate launch -q --config_file recipes/accelerate/single_process.yaml recipes/pretrain.py   # = make demo
    python recipes/pretrain.py          # the same, one process: ~7.5 CPU-min (benchmarks/results_timing.md)
    accelerate launch recipes/pretrain.py --config recipes/configs/mtm_only.yaml --max_steps 1000
    accelerate launch --multi_gpu --num_processes 8 recipes/pretrain.py \
        --config recipes/configs/ibl_repeated_site.yaml --dataset data/ibl_repeated_site --bf16
    accelerate launch recipes/pretrain.py --output_dir outputs/pretrain --resume_from_checkpoint last
    accelerate launch recipes/pretrain.py --dataset data/ibl data/mesoscope --dataset_weights 0.5 0.5  # mixed
    python recipes/pretrain.py --precision bf16   # bf16 autocast, on a CPU too (default auto: bf16 only where the
                                                  # CPU has AMX/AVX512-BF16 and a start-up probe finds it faster)

The training-end summary (``eval_summary.json``) is bounded by max(10% of the training time, 60 s)
(``--eval_budget_s``); it says what the bound cut and prints the recipes/evaluate.py command of the full
evaluation.

Every argument can be set in the YAML config (``--config``, default
``recipes/configs/synthetic.yaml``) and overridden on the command line; see
``--help`` (the data, model and run arguments of ``nfm.training`` and all of
``transformers.TrainingArguments``).  A command-line setting wins over the config: ``--preset mtm`` replaces
the config's ``model_overrides`` sizes (one line says which); a setting that would not be used (``--preset``
with ``--init_from``, ``--synthetic_*`` with ``--dataset``) is a one-line error.  On 2-photon (calcium) data
only, the config's ``generation`` objective (spike events) is dropped with one line; asked for on the command
line it is an error naming ``--objectives mtm``.

Writes to ``--output_dir``: ``config.json`` + ``model.safetensors``, ``README.md``
(model card), ``tensorboard/``, ``losses.csv``/``losses.json``/``losses.png``,
``eval_summary.json``, ``nfm_training_data.json`` (the datasets trained on, with content fingerprints:
``evaluate.py``, ``generate.py`` and ``finetune_lora.py`` default to it), ``checkpoint-N/`` (atomic) and,
when no ``--dataset`` is given, the synthetic ``dataset/`` it built.  The final model, card, summary and
record are written to ``<output_dir>/.partial-final`` and moved into place together, so an interrupted run
never leaves a card beside weights it does not describe.  An ``--output_dir`` that holds an earlier run's model
or checkpoints is refused unless ``--overwrite_output_dir`` (that run's outputs are removed first; a synthetic
``dataset/`` stays) or ``--resume_from_checkpoint``.  The run ends with the commands to run next.
"""
from __future__ import annotations

import sys
from pathlib import Path

DEFAULT_CONFIG = "synthetic"  # recipes/configs/synthetic.yaml (shipped in nfm/resources/configs)


def main(argv=None) -> int:
    from nfm.training.arguments import given_arguments, parse_args, reconcile_model_arguments  # light

    argv = list(sys.argv[1:] if argv is None else argv)
    data_args, model_args, run_args, training_args = parse_args(argv, default_config=DEFAULT_CONFIG,
                                                                description=__doc__, prog="pretrain.py",
                                                                check=_check_paths)
    given = given_arguments(argv)  # what the command line set: it wins over the YAML config, or is refused
    _check_synthetic_arguments(data_args, training_args, given)
    notes = reconcile_model_arguments(model_args, given, run_args.config)
    import json
    import shlex

    from transformers import set_seed
    from transformers.utils import logging as hf_logging

    from nfm.cards import pretrained_model_card, write_card
    from nfm.data.collate import NfmCollator
    from nfm.data.multi import MultiCollator, MultiDataset
    from nfm.evaluation.summary import compact, end_of_training_summary, full_evaluation_command
    from nfm.training import (
        FINAL_STAGING_DIR,
        build_model,
        build_trainer,
        clear_previous_run,
        commit_final_outputs,
        count_parameters,
        dataset_entry,
        final_staging_dir,
        init_sessions_from_data,
        prepare_training_datasets,
        resolve_resume,
        select_sessions,
        select_sessions_multi,
        subset_split,
        write_loss_files,
        write_training_data,
    )

    hf_logging.set_verbosity_warning()
    is_main = training_args.process_index == 0
    set_seed(training_args.seed)
    out = Path(training_args.output_dir)
    if run_args.overwrite_output_dir:
        with training_args.main_process_first(desc="removing the previous run"):
            gone = clear_previous_run(out) if is_main else []
        if gone:
            print(f"--overwrite_output_dir: removed the previous run's {', '.join(gone)} from {out}"
                  f"{' (kept dataset/)' if (out / 'dataset').is_dir() else ''}", flush=True)
    if is_main:
        for note in notes:
            print(note, flush=True)

    loaded = prepare_training_datasets(data_args, training_args)
    metas = [m for _, m, _ in loaded]
    note = _objectives_for_modality(metas, model_args, given, [p for _, _, p in loaded])
    if note and is_main:
        print(note, flush=True)
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
    # the final outputs are written into <output_dir>/.partial-final, then moved into place together (an
    # interrupted run never leaves a card or a summary beside weights it does not describe)
    staging = final_staging_dir(out) if trainer.is_world_process_zero() else None
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(out / FINAL_STAGING_DIR))  # config.json + model.safetensors (+ training_args.json)
    if not trainer.is_world_process_zero():
        return 0

    write_loss_files(trainer.state.log_history, staging, plot=True)  # + losses.png
    # bounded: max(10% of the training time, 60 s) unless --eval_budget_s (nfm/evaluation/summary.py)
    summaries = [{} if run_args.skip_eval else end_of_training_summary(
        model, dd_k, tm, list(tm.sessions), split=run_args.eval_split, tasks=run_args.eval_tasks.split(","),
        batch_size=run_args.eval_batch_size, max_trials=run_args.eval_max_trials or None,
        budget_s=run_args.eval_budget_s, train_seconds=result.metrics.get("train_runtime"), parts=len(loaded),
        full_command=full_evaluation_command(out, run_args.eval_split, run_args.eval_tasks.split(","),
                                             dataset=str(p_k), sessions="known"))
        for (dd_k, _, p_k), tm in zip(loaded, train_metas)]
    summary = dict(summaries[0])
    if len(loaded) > 1:  # one summary per dataset; the top-level one is the first (primary) dataset's
        summary["datasets"] = dict(zip(names, summaries))
    summary["train"] = {"steps": int(trainer.state.global_step), "train_loss": result.training_loss,
                        "runtime_s": result.metrics.get("train_runtime"),
                        "samples_per_second": result.metrics.get("train_samples_per_second"),
                        "world_size": int(training_args.world_size)}
    summary["train"]["precision"] = run_args.precision_record  # --precision: what ran and why
    (staging / "eval_summary.json").write_text(json.dumps(summary, indent=1))
    write_training_data(staging, [
        dataset_entry(p, out, m, sessions=ids, heldout_sessions=[s for s in m.sessions if s not in set(ids)],
                      split="train", train_fraction=data_args.train_fraction,
                      train_fraction_seed=data_args.train_fraction_seed, n_train_trials=len(part))
        for (_, m, p), ids, part in zip(loaded, ids_per, parts)], eval_split=run_args.eval_split)
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
    write_card(staging, card)
    commit_final_outputs(staging, out)
    print(f"model, card, logs, eval_summary.json and nfm_training_data.json written to {out}")
    for name, summ in (summary.get("datasets") or {"": summary}).items():
        for task, res in compact(summ.get("tasks", {})).items():
            print(f"  {name + ': ' if name else ''}{task}: " + ", ".join(
                f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in res.items()))
    if "generation" in summary:
        print(f"  generation: {summary['generation']}")
    print(next_steps(out, model.config, heldout, [p for _, _, p in loaded]))
    return 0


def next_steps(out: Path, config, heldout, dataset_paths) -> str:
    """The commands to run next on the model just written (the dataset is read from its record)."""
    from nfm.cli import recipe_command

    here = Path(__file__).resolve().parent
    lines = ["next (the dataset is read from the model's nfm_training_data.json):",
             f"  {recipe_command('evaluate.py', here)} --model {out} --quick    # a first look at every task"]
    if heldout and len(dataset_paths) == 1:
        lines.append(f"  {recipe_command('finetune_lora.py', here)} --model {out} --output_dir {out}-lora    # LoRA on "
                     f"the held-out {', '.join(list(heldout)[:4])}{' ...' if len(heldout) > 4 else ''}")
    if "generation" in config.objectives:
        lines.append(f"  {recipe_command('generate.py', here)} --model {out} --max_trials 2    # closed-loop generation")
    return "\n".join(lines)


def _check_synthetic_arguments(data_args, training_args, given: set[str]) -> None:
    """``--synthetic_*`` on the command line must build the world it describes: not with ``--dataset``, and not
    when ``<output_dir>/dataset`` (reused) holds another one."""
    from nfm.cli import UsageError

    flags = [n for n in ("synthetic_animals", "synthetic_sessions_per_animal", "synthetic_trials", "synthetic_seed")
             if n in given]
    if not flags:
        return
    if data_args.dataset_paths:
        raise UsageError(f"--{flags[0]}", "describes the synthetic default, which is not built when --dataset is "
                                          "given; drop one of them")
    built = Path(training_args.output_dir) / "dataset"
    if (built / "nfm_meta.json").is_file():
        from nfm.data.meta import DatasetMeta

        meta = DatasetMeta.load(built)
        want = data_args.synthetic_animals * data_args.synthetic_sessions_per_animal
        trials = {s.n_trials for s in meta.sessions.values()}
        if len(meta.sessions) != want or trials != {data_args.synthetic_trials}:
            raise UsageError(f"--{flags[0]}", f"{built} holds a synthetic world of {len(meta.sessions)} sessions x "
                                              f"{'/'.join(map(str, sorted(trials)))} trials, which is reused, not "
                                              f"the one asked for; remove it or choose another --output_dir")


def _objectives_for_modality(metas, model_args, given: set[str], paths) -> str | None:
    """2-photon (calcium) data only: the config's 'generation' objective (spike events) is dropped -- MtM is
    trained -- with one line saying so; asked for on the command line it is a one-line error naming
    ``--objectives mtm``."""
    from nfm.cli import UsageError

    if model_args.init_from or any(m.modality == "spikes" for m in metas):
        return None
    overrides = dict(model_args.model_overrides or {})
    objectives = model_args.objectives if model_args.objectives is not None else overrides.get("objectives")
    if not objectives or "generation" not in objectives:
        return None
    names = ", ".join(str(p) for p in paths)
    if "objectives" in given or ("model_overrides" in given and "objectives" in overrides):
        raise UsageError("--objectives", f"{list(objectives)} includes 'generation', which needs spike events; "
                                         f"{names} holds {metas[0].modality} (2-photon) data: pass --objectives mtm")
    kept = [o for o in objectives if o != "generation"] or ["mtm"]
    model_args.objectives = kept
    overrides.pop("objectives", None)
    model_args.model_overrides = overrides
    return (f"{names}: {metas[0].modality} (2-photon) data, so the config's objectives {list(objectives)} become "
            f"{kept} (generation needs spike events; --objectives mtm says so explicitly)")


def _check_paths(ns) -> None:
    """Fast checks before torch is imported: the dataset and the model to start from exist."""
    from nfm.cli import check_dataset_arg, check_model_arg

    from nfm.cli import check_output_dir

    for path in ([ns.dataset] if isinstance(ns.dataset, str) else list(ns.dataset or [])) + \
            ([ns.datasets] if isinstance(ns.datasets, str) else list(ns.datasets or [])):
        check_dataset_arg(path)
    if ns.init_from:
        check_model_arg(ns.init_from, "--init_from")
    check_output_dir(ns.output_dir, overwrite=ns.overwrite_output_dir, resume=ns.resume_from_checkpoint)


def _dataset_name(data_args, path) -> str:
    if data_args.dataset_paths:
        return " + ".join(Path(p).name for p in data_args.dataset_paths)
    return (f"nfm-synthetic-ibl-like-{data_args.synthetic_animals}x{data_args.synthetic_sessions_per_animal}"
            f"-seed{data_args.synthetic_seed}")


if __name__ == "__main__":
    from nfm.cli import run

    sys.exit(run(main))
