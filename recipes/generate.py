"""Closed-loop generation of held-out trials with an nfm model: npz arrays + raster PNGs.

    python recipes/generate.py --model outputs/pretrain --output_dir outputs/generated
    python recipes/generate.py --model outputs/pretrain --dataset outputs/pretrain/dataset \
        --sessions synth-00-00 synth-01-00 --prompt_s 0.5 --temperature 1.0 --top_p 0.95 --max_trials 8

For each session of ``--split`` (default test; ``--sessions known``, the default, takes the sessions the
model knows), the first ``--prompt_s`` seconds of each trial are given (true spikes) and the rest of the
trial is generated window by window, each generated window becoming the past of the next.  A session's trials
are generated together, ``--batch_size`` at a time; a progress bar counts generated trials (it advances after
every window) and shows the ETA.  Cost: on 2 CPU cores the demo model needs of the order of a minute per
batch of 16 trials; start with ``--max_trials 2``.

Writes ``<session>.npz`` (true and generated counts per bin, event lists), ``<session>_raster.png`` (the
prompt's end marked) and ``generation_summary.json`` (Neuroformer fidelity metrics) to ``--output_dir``
(default ``<model>/generated``, or ``outputs/generated`` for a Hub model).  See
``nfm.evaluation.generation_tasks.generate_to_files``.  Without ``--dataset``, the dataset the adapter or the model
was trained on (its ``nfm_training_data.json``; refused when it is gone or has changed since).  ``--debug`` shows tracebacks of input errors.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser():
    from nfm.cli import ArgumentParser

    p = ArgumentParser(prog="generate.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model folder or Hugging Face Hub id (with an event decoder)")
    p.add_argument("--adapter", default=None, help="PEFT adapter folder (recipes/finetune_lora.py)")
    p.add_argument("--allow_base_mismatch", action="store_true",
                   help="load --adapter even if --model is not the base it was trained on")
    p.add_argument("--dataset", default=None, help="nfm dataset folder (default: the one the adapter, else the "
                   "model, was trained on, as its nfm_training_data.json records it; else <model>/dataset)")
    p.add_argument("--split", default="test")
    p.add_argument("--sessions", nargs="+", default=None,
                   help="'known' (default: the sessions the model knows; with --adapter, the adapter's), 'all' or "
                        "session ids, space- or comma-separated")
    p.add_argument("--output_dir", default=None, help="default: <model>/generated (outputs/generated for a Hub id)")
    p.add_argument("--prompt_s", type=float, default=0.5, help="seconds of true data before generation starts")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top_p", type=float, default=0.95)
    p.add_argument("--top_k", type=int, default=0, help="0 = no top-k filtering")
    p.add_argument("--max_trials", type=int, default=16, help="trials per session (0 = all)")
    p.add_argument("--batch_size", type=int, default=16, help="trials generated together (one closed loop)")
    p.add_argument("--interval_s", type=float, default=None, help="counting interval of the summary metrics")
    p.add_argument("--device", default=None)
    p.add_argument("--seed", type=int, default=0)
    return p


def default_output_dir(model: str) -> str:
    """``<model>/generated`` for a local model, else ``outputs/generated`` (never the working directory)."""
    return str(Path(model) / "generated") if Path(model).is_dir() else str(Path("outputs") / "generated")


def main(argv=None) -> int:
    from nfm.cli import UsageError, check_dataset_arg, check_model_arg, check_session_ids, split_ids

    args = build_parser().parse_args(argv)
    check_model_arg(args.model, "--model")
    adapter_meta = None
    if args.adapter:
        from nfm.adapters import read_adapter_meta

        if not Path(args.adapter).is_dir():
            raise UsageError("--adapter", f"no adapter folder at {args.adapter}")
        adapter_meta = read_adapter_meta(args.adapter)
    dataset = args.dataset
    if dataset is None:  # the dataset the adapter / model was trained on (its nfm_training_data.json)
        from nfm.training.record import default_dataset

        dataset, owner = default_dataset(args.model, args.adapter, adapter_meta)
        print(f"--dataset not given: {dataset}, the dataset the {owner} was trained on", flush=True)
    check_dataset_arg(dataset)
    from nfm.data.meta import DatasetMeta

    meta = DatasetMeta.load(dataset)
    ids = split_ids(args.sessions)
    if not ids:
        sessions = [s for s in adapter_meta["sessions"] if s in meta.sessions] if adapter_meta else "known"
    elif ids in (["all"], ["known"]):
        sessions = ids[0]
    else:
        check_session_ids(ids, meta.session_ids, dataset)
        sessions = ids
    out = args.output_dir or default_output_dir(args.model)

    import torch
    from transformers.utils import logging as hf_logging

    from nfm.data.hf import load_dataset
    from nfm.evaluation.runner import generate_to_files, load_model

    hf_logging.set_verbosity_error()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_model(args.model, adapter=args.adapter, device=device, allow_base_mismatch=args.allow_base_mismatch)
    summary = generate_to_files(model, load_dataset(dataset), out, split=args.split, sessions=sessions,
                                prompt_s=args.prompt_s, temperature=args.temperature, top_p=args.top_p,
                                top_k=args.top_k or None, max_trials=args.max_trials or None,
                                batch_size=args.batch_size, interval_s=args.interval_s, seed=args.seed, progress=True)
    # each session's line was printed as it finished (above the progress bar): here only the fidelity over all
    import numpy as np

    r = [s["pearson_r"] for s in summary.values() if s.get("pearson_r") is not None]
    f1 = [s["f1"] for s in summary.values() if s.get("f1") is not None]
    print(f"{len(summary)} session(s), {sum(s['n_trials'] for s in summary.values())} trials: pearson r "
          f"{np.nanmean(r) if r else float('nan'):.3f}, F1 {np.nanmean(f1) if f1 else float('nan'):.3f} (means over "
          f"sessions; per session in {Path(out) / 'generation_summary.json'}, rasters *_raster.png)")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    from nfm.cli import run

    sys.exit(run(main))
