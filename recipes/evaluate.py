"""Evaluate an nfm model on the tasks of ``tasks/*.yaml``; write JSON, Markdown and PNG figures.

    python recipes/evaluate.py --list_tasks
    python recipes/evaluate.py --model outputs/pretrain --tasks all --quick
    python recipes/evaluate.py --model outputs/pretrain --dataset outputs/pretrain/dataset \
        --split test --tasks co_smoothing forward_prediction choice --output outputs/eval/results.json
    python recipes/evaluate.py --model outputs/pretrain --adapter outputs/lora      # the adapter's sessions
    python recipes/evaluate.py --model org/nfm-base --adapter outputs/lora --dataset data/new_animal \
        --baseline_model outputs/temporal_only --task_option behavior_finetuned.train.max_steps=50

``--model`` is a folder written by ``save_pretrained`` or a Hugging Face Hub id; ``--dataset``
defaults to the dataset the adapter (``--adapter``) or the model was trained on, as its folder records it
(``nfm_training_data.json``: path and content fingerprint; a dataset that is gone or has changed since is
refused), or ``<model>/dataset`` for an older folder; ``--output`` to ``<adapter or model>/evaluation/results.json``, or
``outputs/evaluation/results.json`` for a Hub model.  Beside the JSON: ``results.md`` and ``figures/``,
rewritten after every task (an interrupted run keeps what it finished; ``status`` in results.md).

Sessions: a session of the dataset that the model does not know (or with another unit count) is an error;
``--sessions known`` evaluates only the sessions the model knows (e.g. the default pretraining holds one
animal out for fine-tuning), ``--sessions a b`` (or ``a,b``) the ones named.  Default: the adapter's sessions
with ``--adapter``, ``known`` on the model's own dataset, else ``all``.

Cost: an estimate per task is printed first (``--tasks all`` on the demo model took 5.4 min of CPU on one thread,
about half of it the GLM simulation baseline's fit, which the baseline cache keeps for the next run;
``benchmarks/results_evaluation.md``); ``--quick`` is a first look (2 folds, 2 CV splits, a thinned regularisation
grid, 25 fine-tuning steps, 4 generated and at most 32 evaluated trials per session, the GLM simulation baseline
fitted on 32 training trials; 1.7 min of CPU on the demo model); progress bars run inside each task.

Task options (``--task_option TASK.FIELD[.SUB]=VALUE``, repeatable, values in YAML) adapt a task to a
dataset's own variable names, e.g. an NWB trials column ``direction`` as the grating-direction target and a
PSTH conditioned on it:

    python recipes/evaluate.py --model outputs/run1 --dataset data/nwb --tasks stimulus_direction psth_r2 \
        --task_option stimulus_direction.target.trial_label=direction \
        --task_option stimulus_direction.modality=any --task_option 'psth_r2.conditions=[direction]'

(trial columns are named without their ``trial_`` prefix; ``tasks/README.md`` lists every field).  See
``nfm.evaluation.runner`` for every metric's definition.  ``--debug`` shows tracebacks of input errors.

IBL BrainWideBench (docs/bwb.md): ``--bwb DIR`` writes the model's predictions in the benchmark's format
(``DIR/predictions/<label>/<task>/<recording_id>/seed_<seed>.safetensors``, seeds 43-47) instead of running the
tasks, and prints which BWB tasks were written and which skipped (with the reason); ``--bwb_label`` (default: the
model folder's name), ``--bwb_ground_truth`` (also ``DIR/ground_truth/...`` from the dataset, to score locally),
``--bwb_seeds``.  Then ``python -m ibl_bwb_eval.scoring.ts2 --pred_dir DIR/predictions/<label> --gt_dir
DIR/ground_truth``:

    python recipes/evaluate.py --model outputs/pretrain --bwb outputs/bwb --bwb_ground_truth
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml


def parse_task_options(options: list[str]) -> dict[str, dict]:
    """``["task.key.sub=value", ...]`` -> ``{task: {key: {sub: value}}}`` (values parsed as YAML)."""
    from nfm.cli import UsageError

    out: dict[str, dict] = {}
    for opt in options or []:
        if "=" not in opt or "." not in opt.split("=", 1)[0]:
            raise UsageError("--task_option", f"{opt!r}: expected TASK.FIELD[.SUB]=VALUE")
        path, value = opt.split("=", 1)
        keys = path.split(".")
        d = out.setdefault(keys[0], {})
        for k in keys[1:-1]:
            d = d.setdefault(k, {})
        try:
            d[keys[-1]] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise UsageError("--task_option", f"{opt!r}: the value is not YAML ({err})") from None
    return out


def build_parser():
    from nfm.cli import ArgumentParser

    p = ArgumentParser(prog="evaluate.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model folder or Hugging Face Hub id (required unless --list_tasks)")
    p.add_argument("--adapter", default=None, help="PEFT adapter folder (recipes/finetune_lora.py)")
    p.add_argument("--allow_base_mismatch", action="store_true",
                   help="load --adapter even if --model is not the base it was trained on (fingerprints differ)")
    p.add_argument("--dataset", default=None,
                   help="nfm dataset folder (default: the one the adapter, else the model, was trained on, as its "
                        "nfm_training_data.json records it; else <model>/dataset)")
    p.add_argument("--split", default="test", help="evaluated split (default: test)")
    p.add_argument("--tasks", nargs="+", default=None,
                   help="'all' or task names / YAML files, space- or comma-separated (default: all; the tasks "
                        "to run are listed before anything runs)")
    p.add_argument("--quick", action="store_true",
                   help="a first look: fewer folds, CV splits, steps and trials (scores not comparable)")
    p.add_argument("--output", default=None,
                   help="results JSON path (default: <adapter or model>/evaluation/results.json; "
                        "outputs/evaluation/results.json for a Hub model)")
    p.add_argument("--baseline_model", default=None,
                   help="second model run through the same tasks (e.g. temporal-masking-only)")
    p.add_argument("--sessions", nargs="+", default=None,
                   help="'all' (a session unknown to the model is an error), 'known' (only the sessions the model "
                        "knows) or session ids, space- or comma-separated. Default: the adapter's sessions with "
                        "--adapter; 'known' when the dataset defaults to <model>/dataset; else 'all'")
    p.add_argument("--batch_size", type=int, default=32, help="trials per model call")
    p.add_argument("--max_trials", type=int, default=None, help="cap of evaluated trials per session")
    p.add_argument("--task_dir", default=None, help="folder of task YAML files (default: tasks/)")
    p.add_argument("--task_option", action="append", default=[], metavar="TASK.FIELD=VALUE",
                   help="override a task field, e.g. choice.decoder.n_splits=5 or "
                        "stimulus_direction.target.trial_label=direction (repeatable)")
    p.add_argument("--no_estimate", action="store_true", help="skip the cost estimate printed before starting")
    p.add_argument("--no_baseline_cache", action="store_true",
                   help="refit the data baselines (smoothing) instead of reading them from the cache of earlier runs "
                        "on the same data ($NFM_CACHE_DIR or ~/.cache/nfm; nfm/evaluation/baseline_cache.py)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--list_tasks", action="store_true", help="print the available tasks and exit (no model needed)")
    g = p.add_argument_group("IBL BrainWideBench submission (docs/bwb.md)")
    g.add_argument("--bwb", default=None, metavar="DIR",
                   help="write BrainWideBench predictions under DIR/predictions/<label>/ (instead of running --tasks)")
    g.add_argument("--bwb_label", default=None, help="the model's name in the submission (default: the model "
                                                     "folder's name)")
    g.add_argument("--bwb_ground_truth", action="store_true",
                   help="also write the dataset's ground truth under DIR/ground_truth/ (to score locally)")
    g.add_argument("--bwb_seeds", nargs="+", type=int, default=None,
                   help="seeds the files are written under (default: the benchmark's evaluation seeds 43-47)")
    return p


def check_bwb_args(args) -> None:
    """One-line errors for the --bwb flags, before anything is loaded."""
    from nfm.cli import UsageError

    if args.bwb is None:
        for flag, given in (("--bwb_label", args.bwb_label is not None), ("--bwb_ground_truth", args.bwb_ground_truth),
                            ("--bwb_seeds", args.bwb_seeds is not None)):
            if given:
                raise UsageError(flag, "needs --bwb DIR (the submission folder)")
        return
    if not args.bwb.strip():
        raise UsageError("--bwb", "empty path: give the submission folder")
    out = Path(args.bwb)
    if out.exists() and not out.is_dir():
        raise UsageError("--bwb", f"{out} exists and is not a folder")
    if args.tasks is not None:
        raise UsageError("--tasks", "not used with --bwb (the submission writes every BrainWideBench task the dataset "
                                    "supports); run the tasks in a separate call")


def bwb_label(args) -> str:
    """``--bwb_label``, else the model folder's name (the last part of a Hub id)."""
    if args.bwb_label is not None:
        return args.bwb_label
    return Path(str(args.model).rstrip("/")).name


def default_output(model: str, adapter: str | None = None) -> str:
    """``<adapter>/evaluation/results.json``, else ``<model>/evaluation/results.json`` for a local model, else
    ``outputs/evaluation/results.json`` (never the working directory itself)."""
    if adapter:
        return str(Path(adapter) / "evaluation" / "results.json")
    if Path(model).is_dir():
        return str(Path(model) / "evaluation" / "results.json")
    return str(Path("outputs") / "evaluation" / "results.json")


def task_plan(task_list, modality: str, *, default: bool, quick: bool) -> str:
    """What an evaluation will run, said before it starts: how many tasks and which (``default``: the default
    ``--tasks all``), which of them do not apply to ``modality`` data, and the mode (``--quick`` or full), with
    how to run fewer."""
    run = [t.name for t in task_list if t.applies_to(modality)]
    skip = [t.name for t in task_list if not t.applies_to(modality)]
    head = f"tasks: {len(run)}" + (" (the default --tasks all)" if default else "") + ": " + (", ".join(run) or "none")
    lines = [head]
    if skip:
        lines.append(f"  not applicable to {modality} data (skipped): {', '.join(skip)}")
    if quick:
        lines.append("  mode: --quick (fewer folds, CV splits, steps and trials: a first look, not comparable to a "
                     "full run)")
    else:
        lines.append("  mode: full (every evaluated trial, full CV grids)" + (
            "; --quick for a first look, --tasks NAME ... for fewer tasks" if len(run) > 1 else ""))
    return "\n".join(lines)


def resolve_sessions(arg: list[str] | None, meta, default: str) -> str | list[str]:
    """``--sessions`` -> ``"all"``, ``"known"`` or a list of ids of the dataset (unknown ids: one-line error)."""
    from nfm.cli import check_session_ids, dataset_folder_of, split_ids

    ids = split_ids(arg)
    if not ids:
        return default
    if ids in (["all"], ["known"]):
        return ids[0]
    check_session_ids(ids, meta.session_ids, dataset_folder_of(meta))
    return ids


def main(argv=None) -> int:
    from nfm.cli import UsageError, check_dataset_arg, check_model_arg, split_ids

    args = build_parser().parse_args(argv)
    from nfm.evaluation.tasks import available_tasks, load_tasks

    if args.list_tasks:
        for name, t in available_tasks(args.task_dir).items():
            print(f"{name:24s} {t.kind:18s} {t.modality:8s} {t.description}")
        return 0
    check_bwb_args(args)
    if not args.model:
        raise UsageError("--model", "required: a model folder (e.g. outputs/pretrain) or a Hugging Face Hub id")
    overrides = parse_task_options(args.task_option)
    tasks = split_ids(args.tasks or ["all"])
    try:  # the task names and options, before anything heavy is loaded
        task_list = load_tasks(tasks, args.task_dir, overrides, quick=args.quick)
    except KeyError as err:
        raise UsageError("--tasks" if "unknown task" in str(err.args[0]) else "--task_option", err.args[0]) from None
    check_model_arg(args.model, "--model")
    if args.baseline_model:
        check_model_arg(args.baseline_model, "--baseline_model")
    adapter_meta = None
    if args.adapter:
        from nfm.adapters import read_adapter_meta

        if not Path(args.adapter).is_dir():
            raise UsageError("--adapter", f"no adapter folder at {args.adapter}")
        adapter_meta = read_adapter_meta(args.adapter)
    dataset, default_sessions = args.dataset, "all"
    if dataset is None:  # the dataset the adapter / model was trained on (its nfm_training_data.json)
        from nfm.training.record import default_dataset

        dataset, owner = default_dataset(args.model, args.adapter, adapter_meta)
        if owner == "model":
            default_sessions = "known"
        print(f"--dataset not given: {dataset}, the dataset the {owner} was trained on", flush=True)
    check_dataset_arg(dataset)
    from nfm.data.meta import DatasetMeta

    meta = DatasetMeta.load(dataset)
    if adapter_meta is not None and args.sessions is None:
        default_sessions = [s for s in adapter_meta["sessions"] if s in meta.sessions]
        if not default_sessions:
            raise UsageError("--sessions", f"none of the adapter's sessions ({', '.join(adapter_meta['sessions'])}) is "
                                           f"in {dataset}; pass --dataset with the adapted animal's data")
        print(f"--sessions not given: evaluating the adapter's sessions {' '.join(default_sessions)}")
    sessions = resolve_sessions(args.sessions, meta, default_sessions)
    output = args.output or default_output(args.model, args.adapter)
    if args.bwb is None:
        print(task_plan(task_list, meta.modality, default=args.tasks is None, quick=args.quick), flush=True)

    import torch
    from transformers.utils import logging as hf_logging

    from nfm.evaluation.runner import evaluate, load_model

    hf_logging.set_verbosity_error()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_model(args.model, adapter=args.adapter, device=device, allow_base_mismatch=args.allow_base_mismatch)
    if args.bwb is not None:
        from nfm.evaluation.bwb import write_bwb

        report = write_bwb(model, dataset, args.bwb, label=bwb_label(args), split=args.split, sessions=sessions,
                           seeds=args.bwb_seeds, ground_truth=args.bwb_ground_truth, batch_size=args.batch_size,
                           max_trials=args.max_trials)
        print(report.format())
        return 0
    baseline = load_model(args.baseline_model, device=device) if args.baseline_model else None
    results = evaluate(model, dataset, tasks=tasks, split=args.split, baseline_model=baseline, output=output,
                       sessions=sessions, batch_size=args.batch_size, max_trials=args.max_trials,
                       task_dir=args.task_dir, task_overrides=overrides, seed=args.seed, progress=True,
                       quick=args.quick, show_costs=not args.no_estimate, baseline_cache=not args.no_baseline_cache,
                       info={"model": args.model, "adapter": args.adapter, "baseline_model": args.baseline_model})
    md = Path(output).with_suffix(".md").read_text()
    head, rest = md.split("## Summary", 1)
    print(head.rstrip() + "\n\n## Summary" + rest.split("\n## ", 1)[0].rstrip())
    n_na = sum("not_applicable" in v for v in results.values())
    print(f"\n{len(results) - n_na} task(s) scored, {n_na} not applicable; written to {output}, "
          f"{Path(output).with_suffix('.md')} and {Path(output).parent / 'figures'}")
    return 0


if __name__ == "__main__":
    from nfm.cli import run

    sys.exit(run(main))
