"""Evaluate an nfm model on the tasks of ``tasks/*.yaml``; write JSON, Markdown and PNG figures.

    python recipes/evaluate.py --model outputs/pretrain --tasks all --sessions known
    python recipes/evaluate.py --model outputs/pretrain --dataset outputs/pretrain/dataset \
        --split test --tasks co_smoothing,forward_prediction,choice --output outputs/eval/results.json
    python recipes/evaluate.py --model org/nfm-base --adapter outputs/lora --dataset data/new_animal \
        --baseline_model outputs/temporal_only --task_option behavior_finetuned.train.max_steps=50

``--model`` is a folder written by ``save_pretrained`` or a Hugging Face Hub id; ``--dataset``
defaults to ``<model>/dataset`` (where ``recipes/pretrain.py`` builds the synthetic default) and
``--output`` to ``<model>/evaluation/results.json``.  Beside the JSON: ``results.md`` and ``figures/``.
A session of the dataset that the model does not know (or with another unit count) is an error;
``--sessions known`` evaluates only the sessions the model knows (e.g. the default pretraining holds
one animal out for fine-tuning).  See ``nfm.evaluation.runner`` for every metric's definition.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml


def parse_task_options(options: list[str]) -> dict[str, dict]:
    """``["task.key.sub=value", ...]`` -> ``{task: {key: {sub: value}}}`` (values parsed as YAML)."""
    out: dict[str, dict] = {}
    for opt in options or []:
        if "=" not in opt or "." not in opt.split("=", 1)[0]:
            raise SystemExit(f"--task_option {opt!r}: expected TASK.FIELD[.SUB]=VALUE")
        path, value = opt.split("=", 1)
        keys = path.split(".")
        d = out.setdefault(keys[0], {})
        for k in keys[1:-1]:
            d = d.setdefault(k, {})
        d[keys[-1]] = yaml.safe_load(value)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model folder or Hugging Face Hub id")
    p.add_argument("--adapter", default=None, help="PEFT adapter folder (recipes/finetune_lora.py)")
    p.add_argument("--dataset", default=None, help="nfm dataset folder (default: <model>/dataset)")
    p.add_argument("--split", default="test", help="evaluated split (default: test)")
    p.add_argument("--tasks", default="all", help="'all' or comma-separated task names / YAML files")
    p.add_argument("--output", default=None, help="results JSON path (default: <model>/evaluation/results.json)")
    p.add_argument("--baseline_model", default=None,
                   help="second model run through the same tasks (e.g. temporal-masking-only)")
    p.add_argument("--sessions", default=None,
                   help="'all' (a session unknown to the model is an error), 'known' (only the sessions the model "
                        "knows) or ids a,b. Default: 'all' with --dataset; 'known' when the dataset defaults to "
                        "<model>/dataset (the pretraining's own dataset, whose held-out animals the model never saw)")
    p.add_argument("--batch_size", type=int, default=32, help="trials per model call")
    p.add_argument("--max_trials", type=int, default=None, help="cap of evaluated trials per session")
    p.add_argument("--task_dir", default=None, help="folder of task YAML files (default: tasks/)")
    p.add_argument("--task_option", action="append", default=[], metavar="TASK.FIELD=VALUE",
                   help="override a task field, e.g. choice.decoder.n_splits=5 (repeatable)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--list_tasks", action="store_true", help="print the available tasks and exit")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from transformers.utils import logging as hf_logging

    from nfm.evaluation.runner import evaluate, load_model
    from nfm.evaluation.tasks import available_tasks

    if args.list_tasks:
        for name, t in available_tasks(args.task_dir).items():
            print(f"{name:24s} {t.kind:18s} {t.modality:8s} {t.description}")
        return 0
    hf_logging.set_verbosity_error()
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model_dir = Path(args.model)
    dataset = args.dataset
    sessions = args.sessions or "all"
    if dataset is None:
        if not (model_dir / "dataset").is_dir():
            raise SystemExit(f"--dataset is required ({model_dir / 'dataset'} does not exist)")
        dataset = str(model_dir / "dataset")
        sessions = args.sessions or "known"
    output = args.output or (str(model_dir / "evaluation" / "results.json") if model_dir.is_dir()
                             else "results.json")
    model = load_model(args.model, adapter=args.adapter, device=device)
    baseline = load_model(args.baseline_model, device=device) if args.baseline_model else None
    results = evaluate(model, dataset, tasks=args.tasks, split=args.split, baseline_model=baseline, output=output,
                       sessions=sessions, batch_size=args.batch_size, max_trials=args.max_trials,
                       task_dir=args.task_dir, task_overrides=parse_task_options(args.task_option),
                       seed=args.seed, progress=True,
                       info={"model": args.model, "adapter": args.adapter, "baseline_model": args.baseline_model})
    md = Path(output).with_suffix(".md").read_text()
    head, rest = md.split("## Summary", 1)
    print(head.rstrip() + "\n\n## Summary" + rest.split("\n## ", 1)[0].rstrip())
    n_na = sum("not_applicable" in v for v in results.values())
    print(f"\n{len(results) - n_na} task(s) scored, {n_na} not applicable; written to {output}, "
          f"{Path(output).with_suffix('.md')} and {Path(output).parent / 'figures'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
