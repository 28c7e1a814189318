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
``losses.csv``/``.json`` and TensorBoard logs.
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
    """Fast checks before torch is imported: the base model and the dataset exist."""
    from nfm.cli import UsageError, check_dataset_arg, check_model_arg

    paths = [ns.dataset] if isinstance(ns.dataset, str) else list(ns.dataset or [])
    paths += [ns.datasets] if isinstance(ns.datasets, str) else list(ns.datasets or [])
    if not paths:
        raise UsageError("--dataset", "required: the nfm dataset folder that holds the new animal's sessions (e.g. "
                                      "the one the base was pretrained on, whose held-out animal it never saw)")
    if len(paths) > 1:
        raise UsageError("--dataset", f"fine-tuning adapts to one dataset at a time (got {len(paths)})")
    check_dataset_arg(paths[0])
    check_model_arg(ns.model, "--model")


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
    from nfm.cards import adapter_card, write_card
    from nfm.data.hf import load_dataset
    from nfm.evaluation.summary import compact, end_of_training_summary
    from nfm.training import (
        build_trainer,
        describe_modalities,
        init_sessions_from_data,
        resolve_resume,
        subset_split,
        write_loss_files,
    )

    hf_logging.set_verbosity_warning()
    is_main = training_args.process_index == 0
    set_seed(training_args.seed)
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
    out = Path(training_args.output_dir)
    trainer.save_model(str(out))  # lora: adapter_config.json + adapter_model.safetensors; else the full model
    result_dict = {"model": model, "trainer": trainer, "report": None, "output_dir": out, "sessions": sessions,
                   "spec": spec}
    if not trainer.is_world_process_zero():
        return result_dict
    if ft.mode == "lora":
        write_adapter_meta(out, spec, ft.model, list(model.peft_config), base_fingerprint=base_fp, trainable=summary,
                           dataset=data_args.dataset)
    write_loss_files(trainer.state.log_history, out)
    evaluation = {} if run_args.skip_eval else end_of_training_summary(
        model, dd, new_meta, sessions, split=run_args.eval_split, tasks=run_args.eval_tasks.split(","),
        batch_size=run_args.eval_batch_size, max_trials=run_args.eval_max_trials or None)
    report = {"split": run_args.eval_split, "mode": ft.mode, **evaluation, "trainable": summary,
              "train": {"steps": int(trainer.state.global_step), "train_loss": result.training_loss,
                        "runtime_s": result.metrics.get("train_runtime"), "n_train_trials": len(train_ds)}}
    (out / "eval_summary.json").write_text(json.dumps(report, indent=1))
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    command = "accelerate launch recipes/finetune_lora.py " + shlex.join(argv)
    lora_settings = (f"r={ft.lora_r}, alpha={ft.lora_alpha}, dropout={ft.lora_dropout}, "
                     f"targets={', '.join(ft.lora_targets)}") if ft.mode == "lora" else "none"
    usage = (
        "```python\nimport nfm.models\nfrom transformers import AutoModelForPreTraining\n"
        "from nfm.adapters import load_adapter\n\nnfm.models.register_auto_classes()\n"
        f"base = AutoModelForPreTraining.from_pretrained(\"{ft.model}\")\n"
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
    write_card(out, card)
    if ft.mode == "lora" and ft.merge:
        merged = merge_adapter(copy.deepcopy(model))  # keep the returned PeftModel unmerged
        merged.save_pretrained(str(out / "merged"))
        write_card(out / "merged", card.replace(f"# nfm {ft.mode} adaptation", "# nfm merged LoRA adaptation", 1))
        print(f"merged model written to {out / 'merged'}")
    print(f"{ft.mode} fine-tuning done: {out}")
    co = evaluation.get("tasks", {}).get("co_smoothing", {})
    if co.get("bps") is not None:
        print(f"  co-smoothing bits/spike ({run_args.eval_split}): {co['bps']:.4f}")
    result_dict["report"] = report
    return result_dict


def main(argv=None) -> int:
    finetune(argv)
    return 0


if __name__ == "__main__":
    from nfm.cli import run

    sys.exit(run(main))
