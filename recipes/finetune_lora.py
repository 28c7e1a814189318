"""Adapt a pretrained nfm model to a new animal: LoRA (default), full fine-tune or from scratch.

    accelerate launch recipes/finetune_lora.py --model outputs/pretrain --dataset outputs/pretrain/dataset \
        --sessions synth-04-00 synth-04-01 --output_dir outputs/lora-mouse-04 [--mode lora|full|scratch] \
        [--max_steps N] [--train_fraction 0.1] [--merge]

* ``lora``: the new sessions get fresh read-in/read-out parameters (trained in full,
  PEFT ``modules_to_save``), LoRA (rank ``--lora_r``) on the attention and MLP
  projections, everything else frozen. Writes a standard PEFT adapter folder
  (``adapter_config.json``, ``adapter_model.safetensors``) + ``nfm_adapter.json``
  + ``README.md``; ``--merge`` also writes the merged full model to
  ``<output_dir>/merged`` (loads with ``AutoModel``/``AutoModelForPreTraining``).
* ``full``: the same model, every weight trained (baseline).
* ``scratch``: the same architecture from a random init, trained on the new sessions only (baseline).

All three share this code path (same data, sampler, Trainer, evaluation); the
output folder also holds ``eval_summary.json`` (``--eval_split``, default
``test``: masked losses and co-smoothing bits/spike on the new sessions),
``losses.csv``/``.json``/``.png``, TensorBoard logs and ``nfm_training_data.json`` (the dataset, with its
content fingerprint, and the sessions adapted to: ``evaluate.py`` / ``generate.py --adapter`` default to it).

Without ``--dataset``, the dataset the base was pretrained on (the base's ``nfm_training_data.json``; refused
when it is gone or has changed since), whose held-out animal it never saw.  As in ``pretrain.py``: the final
outputs are moved into place together, an ``--output_dir`` holding an earlier run is refused unless
``--overwrite_output_dir`` or ``--resume_from_checkpoint``, and the run ends with the commands to run next.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from nfm.adapters import LORA_TARGETS  # light: nfm.adapters imports torch and peft only when used


@dataclass
class FinetuneArguments:
    model: str = field(default="outputs/pretrain", metadata={"help": "pretrained nfm model: folder or Hub id"})
    mode: str = field(default="lora", metadata={"help": "lora | full | scratch"})
    merge: bool = field(default=False, metadata={"help": "lora: also write the merged model to <output_dir>/merged"})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha (scale = alpha / r)"})
    lora_dropout: float = field(default=0.0, metadata={"help": "dropout on the LoRA path"})
    lora_targets: list[str] = field(default_factory=lambda: list(LORA_TARGETS), metadata={
        "help": "module-name suffixes that get LoRA (attention and MLP projections)"})
    scratch_seed: int = field(default=0, metadata={"help": "scratch: seed of the random init"})

    def __post_init__(self):
        if self.mode not in ("lora", "full", "scratch"):
            raise ValueError(f"--mode {self.mode!r} must be lora, full or scratch")


FINETUNE_DEFAULTS = dict(output_dir="outputs/finetune", max_steps=200, learning_rate=3e-3, save_steps=100,
                         logging_steps=10, per_device_train_batch_size=16, warmup_steps=0.05, eval_split="test")


def load_base(model_id: str):
    import nfm.models as models
    from nfm.evaluation.predictor import from_pretrained_checked

    models.register_auto_classes()
    from transformers import AutoModelForPreTraining

    return from_pretrained_checked(AutoModelForPreTraining, model_id)


def _check_paths(ns) -> None:
    """Fast checks before torch is imported: the base model and the dataset exist (without ``--dataset``: the
    base's recorded training data, unchanged), and ``--output_dir`` holds no earlier run."""
    from nfm.cli import check_dataset_arg, check_model_arg, check_output_dir

    paths = [ns.dataset] if isinstance(ns.dataset, str) else list(ns.dataset or [])
    paths += [ns.datasets] if isinstance(ns.datasets, str) else list(ns.datasets or [])
    if paths:
        dataset_of(ns.model, paths)
        check_dataset_arg(paths[0])
        check_model_arg(ns.model, "--model")
    else:
        check_model_arg(ns.model, "--model")
        check_dataset_arg(dataset_of(ns.model, paths))
    check_output_dir(ns.output_dir, overwrite=ns.overwrite_output_dir, resume=ns.resume_from_checkpoint)


def _check_mode_settings(ft, argv) -> None:
    """LoRA settings given on the command line with ``--mode full`` / ``scratch`` would not be used: refused."""
    from nfm.cli import UsageError
    from nfm.training.arguments import TRAINING_ARGUMENTS, DataArguments, RunArguments, given_arguments

    if ft.mode == "lora":
        return
    given = given_arguments(argv, (FinetuneArguments, DataArguments, RunArguments, TRAINING_ARGUMENTS))
    unused = [n for n in ("lora_r", "lora_alpha", "lora_dropout", "lora_targets", "merge") if n in given]
    if unused:
        raise UsageError(f"--{unused[0]}", f"not used with --mode {ft.mode} (it applies to --mode lora only); drop "
                                           "one of them")


def dataset_of(model: str, paths: list[str]) -> str:
    """The dataset to adapt on: ``--dataset`` (one), else the one the base ``model`` was pretrained on (its
    ``nfm_training_data.json``: it holds the animals the base has not seen)."""
    from nfm.cli import UsageError

    if len(paths) > 1:
        raise UsageError("--dataset", f"fine-tuning adapts to one dataset at a time (got {len(paths)})")
    if paths:
        return paths[0]
    from pathlib import Path as _Path

    from nfm.training.record import recorded_dataset

    found = recorded_dataset(model, "--dataset", what=f"the base {model}") if _Path(model).is_dir() else None
    if found is None:
        raise UsageError("--dataset", f"required: the nfm dataset folder that holds the new animal's sessions ({model} "
                                      "records no training data to default to)")
    return found[0]


def choose_sessions(meta, data_args, known: dict, base_name: str, verbose: bool = True) -> list[str]:
    """The sessions to adapt to: ``--sessions`` / ``--sessions_file`` if given, else every session of the dataset
    the base does not know (printed)."""
    from nfm.cli import UsageError
    from nfm.training import select_sessions

    if data_args.sessions or data_args.sessions_file:
        return select_sessions(meta, data_args)
    sessions = [s for s in meta.session_ids if s not in known]
    if not sessions:
        raise UsageError("--sessions", f"the base {base_name} knows every session of {data_args.dataset} "
                                       f"({len(meta.session_ids)}); name the ones to fine-tune on with --sessions")
    subjects = sorted({meta.sessions[s].subject_id for s in sessions})
    if verbose:
        print(f"--sessions not given: adapting to the {len(sessions)} session(s) of {data_args.dataset} that "
              f"{base_name} does not know ({', '.join(subjects)}): {' '.join(sessions)}", flush=True)
    return sessions


def finetune(argv=None) -> dict:
    """Run the recipe; returns ``{"model", "trainer", "report", "output_dir", "sessions", "spec"}``."""
    from nfm.training.arguments import TRAINING_ARGUMENTS, DataArguments, RunArguments, parse_args

    argv = list(sys.argv[1:] if argv is None else argv)
    ft, data_args, run_args, training_args = parse_args(
        argv, dataclass_types=(FinetuneArguments, DataArguments, RunArguments, TRAINING_ARGUMENTS),
        defaults=FINETUNE_DEFAULTS, description=__doc__, prog="finetune_lora.py", check=_check_paths)
    _check_mode_settings(ft, argv)
    import copy
    import json
    import shlex

    from transformers import set_seed
    from transformers.utils import logging as hf_logging

    from nfm.adapters import (
        add_animal,
        format_trainable,
        lora_model,
        merge_adapter,
        new_sessions_spec,
        remember_base_fingerprint,
        scratch_like,
        trainable_summary,
        write_adapter_meta,
    )
    from nfm.cards import adapter_card, base_hub_id, write_card
    from nfm.data.hf import load_dataset
    from nfm.evaluation.summary import compact, end_of_training_summary, full_evaluation_command
    from nfm.training import (
        FINAL_STAGING_DIR,
        build_trainer,
        clear_previous_run,
        commit_final_outputs,
        dataset_entry,
        describe_modalities,
        final_staging_dir,
        write_training_data,
        init_sessions_from_data,
        resolve_resume,
        subset_split,
        write_loss_files,
    )

    hf_logging.set_verbosity_warning()
    is_main = training_args.process_index == 0
    set_seed(training_args.seed)
    if not data_args.dataset_paths:
        data_args.dataset = dataset_of(ft.model, [])
        data_args.dataset_paths = [data_args.dataset]
        if is_main:
            print(f"--dataset not given: {data_args.dataset}, the dataset {ft.model} was pretrained on", flush=True)
    out = Path(training_args.output_dir)
    if run_args.overwrite_output_dir:
        with training_args.main_process_first(desc="removing the previous run"):
            gone = clear_previous_run(out) if is_main else []
        if gone:
            print(f"--overwrite_output_dir: removed the previous run's {', '.join(gone)} from {out}", flush=True)
    dd, meta = load_dataset(data_args.dataset)
    model = load_base(ft.model)
    base_fp = remember_base_fingerprint(model)  # recorded in nfm_adapter.json: the adapter fits this base only
    sessions = choose_sessions(meta, data_args, dict(model.config.session_n_units), ft.model, verbose=is_main)
    spec = new_sessions_spec(meta, sessions, config=model.config)  # modality and time grid of the new sessions
    new_meta = meta.subset(sessions)
    train_ds = subset_split(dd["train"], sessions, data_args.train_fraction, data_args.train_fraction_seed)

    if ft.mode == "scratch":
        model = scratch_like(model, seed=ft.scratch_seed)
    new = [s for s in sessions if s not in model.config.session_n_units]
    add_animal(model, spec)
    # the new sessions' read-in standardisation and read-out biases from their training trials (the base was
    # pretrained with the same data-dependent init of its own sessions)
    if data_args.bin_size is not None and abs(data_args.bin_size - model.config.bin_size) > 1e-12:
        raise ValueError(f"--bin_size {data_args.bin_size} s differs from the base model's {model.config.bin_size} s"
                         " (the adapted model keeps the base's time grid)")
    init_sessions_from_data(model, train_ds, new_meta, session_ids=new)
    if ft.mode == "lora":
        model = lora_model(model, spec, r=ft.lora_r, alpha=ft.lora_alpha, dropout=ft.lora_dropout,
                           targets=ft.lora_targets)
    else:
        model.requires_grad_(True)
    summary = trainable_summary(model)
    if is_main:
        print(f"nfm {ft.mode} fine-tuning of {ft.model} on {', '.join(sessions)} "
              f"({len(train_ds)} training trials)\n{format_trainable(summary)}", flush=True)
        print(describe_modalities(model.config, new_meta, data_args.modality_map), flush=True)

    trainer = build_trainer(model, training_args, train_ds, new_meta, rank_info_dir=run_args.rank_info_dir,
                            modality_map=data_args.modality_map)
    resume = resolve_resume(training_args.resume_from_checkpoint, training_args.output_dir)
    result = trainer.train(resume_from_checkpoint=resume)
    # the final outputs go to <output_dir>/.partial-final first and are moved into place together (an
    # interrupted run never leaves a card or a summary beside weights it does not describe)
    staging = final_staging_dir(out) if trainer.is_world_process_zero() else None
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(out / FINAL_STAGING_DIR))  # lora: adapter_config.json + adapter_model.safetensors
    result_dict = {"model": model, "trainer": trainer, "report": None, "output_dir": out, "sessions": sessions,
                   "spec": spec}
    if not trainer.is_world_process_zero():
        return result_dict
    if ft.mode == "lora":
        write_adapter_meta(staging, spec, ft.model, list(model.peft_config), base_fingerprint=base_fp,
                           trainable=summary, dataset=data_args.dataset)
    write_loss_files(trainer.state.log_history, staging, plot=True)  # + losses.png
    entry = dataset_entry(data_args.dataset, out, meta, sessions=sessions,
                          heldout_sessions=[s for s in meta.session_ids if s not in set(sessions)], split="train",
                          train_fraction=data_args.train_fraction, train_fraction_seed=data_args.train_fraction_seed,
                          n_train_trials=len(train_ds))
    write_training_data(staging, [entry], eval_split=run_args.eval_split, base_model=str(ft.model), mode=ft.mode)
    # bounded: max(10% of the training time, 60 s) unless --eval_budget_s (nfm/evaluation/summary.py)
    evaluation = {} if run_args.skip_eval else end_of_training_summary(
        model, dd, new_meta, sessions, split=run_args.eval_split, tasks=run_args.eval_tasks.split(","),
        batch_size=run_args.eval_batch_size, max_trials=run_args.eval_max_trials or None,
        budget_s=run_args.eval_budget_s, train_seconds=result.metrics.get("train_runtime"),
        full_command=full_evaluation_command(
            ft.model if ft.mode == "lora" else out, run_args.eval_split, run_args.eval_tasks.split(","),
            adapter=out if ft.mode == "lora" else None, dataset=data_args.dataset,
            sessions=None if ft.mode == "lora" else ",".join(sessions)))
    report = {"split": run_args.eval_split, "mode": ft.mode, **evaluation, "trainable": summary,
              "train": {"steps": int(trainer.state.global_step), "train_loss": result.training_loss,
                        "runtime_s": result.metrics.get("train_runtime"), "n_train_trials": len(train_ds)}}
    report["train"]["precision"] = run_args.precision_record  # --precision: what ran and why
    (staging / "eval_summary.json").write_text(json.dumps(report, indent=1))
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    command = "accelerate launch recipes/finetune_lora.py " + shlex.join(argv)
    lora_settings = (f"r={ft.lora_r}, alpha={ft.lora_alpha}, dropout={ft.lora_dropout}, "
                     f"targets={', '.join(ft.lora_targets)}") if ft.mode == "lora" else "none"
    usage = (
        "```python\nimport nfm.models\nfrom transformers import AutoModelForPreTraining\n"
        "from nfm.adapters import load_adapter\n\nnfm.models.register_auto_classes()\n"
        f"base = AutoModelForPreTraining.from_pretrained(\"{base_hub_id(ft.model) or 'path/to/the/base'}\")"
        f"{'' if base_hub_id(ft.model) else '  # the base this adapter was trained on (fingerprint in the table)'}\n"
        "model = load_adapter(base, \"path/to/this/folder\")  # adds the new sessions, then PeftModel.from_pretrained\n"
        "```" if ft.mode == "lora" else
        "```python\nimport nfm.models\nfrom transformers import AutoModelForPreTraining\n\n"
        "nfm.models.register_auto_classes()\nmodel = AutoModelForPreTraining.from_pretrained(\"path/to/this/folder\")\n```")
    card = adapter_card(
        base_model=ft.model, mode=ft.mode, sessions=sessions, trainable=summary["trainable"], total=summary["total"],
        dataset_name=Path(data_args.dataset).name, lora_settings=lora_settings,
        eval_summary=compact(evaluation.get("tasks", {})) or None,
        train_info=dict(steps=trainer.state.global_step, batch_size=training_args.per_device_train_batch_size,
                        learning_rate=training_args.learning_rate, n_train_trials=len(train_ds),
                        final_loss=f"{losses[-1]:.4f}" if losses else "?", eval_split=run_args.eval_split),
        command=command, usage=usage, trainable_groups=summary["groups"],
        base_fingerprint=base_fp if ft.mode == "lora" else None)
    write_card(staging, card)
    if ft.mode == "lora" and ft.merge:
        merged = merge_adapter(copy.deepcopy(model))  # keep the returned PeftModel unmerged
        merged.save_pretrained(str(staging / "merged"))
        write_card(staging / "merged", card.replace(f"# nfm {ft.mode} adaptation", "# nfm merged LoRA adaptation", 1))
        write_training_data(staging / "merged", [dataset_entry(data_args.dataset, out / "merged", meta, **{
            k: entry[k] for k in ("sessions", "heldout_sessions", "split", "train_fraction", "train_fraction_seed",
                                  "n_train_trials")})], eval_split=run_args.eval_split, base_model=str(ft.model),
            mode="merged lora")
    commit_final_outputs(staging, out)
    if ft.mode == "lora" and ft.merge:
        print(f"merged model written to {out / 'merged'}")
    print(f"{ft.mode} fine-tuning done: {out}")
    co = evaluation.get("tasks", {}).get("co_smoothing", {})
    if co.get("bps") is not None:
        print(f"  co-smoothing bits/spike ({run_args.eval_split}): {co['bps']:.4f}")
    if is_main:
        print(next_steps(ft, out, sessions, list(getattr(model.config, "objectives", []))))
    result_dict["report"] = report
    return result_dict


def next_steps(ft, out: Path, sessions, objectives=()) -> str:
    """The commands to run next on what was just written (the dataset is read from its record)."""
    from nfm.cli import recipe_command

    here = Path(__file__).resolve().parent
    ev, gen = recipe_command("evaluate.py", here), recipe_command("generate.py", here)
    target = (f"--model {ft.model} --adapter {out}" if ft.mode == "lora"  # the adapter's own sessions
              else f"--model {out} --sessions {','.join(sessions)}")
    lines = ["next (the dataset is read from nfm_training_data.json):",
             f"  {ev} {target} --quick    # a first look at every task, on the adapted sessions"]
    if ft.mode == "lora" and ft.merge:
        lines.append(f"  {ev} --model {out / 'merged'} --quick    # the merged model, as a plain model folder")
    if "generation" in objectives:
        lines.append(f"  {gen} {target} --max_trials 2    # closed-loop generation of the adapted sessions")
    return "\n".join(lines)


def main(argv=None) -> int:
    finetune(argv)
    return 0


if __name__ == "__main__":
    from nfm.cli import run

    sys.exit(run(main))
