"""Closed-loop generation of held-out trials with an nfm model: npz arrays + raster PNGs.

    python recipes/generate.py --model outputs/pretrain --sessions known --output_dir outputs/generated
    python recipes/generate.py --model outputs/pretrain --dataset outputs/pretrain/dataset \
        --prompt_s 0.5 --temperature 1.0 --top_p 0.95 --max_trials 16

For each session of ``--split`` (default test), the first ``--prompt_s`` seconds of each trial are given
(true spikes) and the rest of the trial is generated window by window, each generated window becoming
the past of the next.  Writes ``<session>.npz`` (true and generated counts per bin, event lists),
``<session>_raster.png`` and ``generation_summary.json`` (Neuroformer fidelity metrics) to
``--output_dir`` (default ``<model>/generated``).  See ``nfm.evaluation.runner.generate_to_files``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model folder or Hugging Face Hub id (with an event decoder)")
    p.add_argument("--adapter", default=None, help="PEFT adapter folder (recipes/finetune_lora.py)")
    p.add_argument("--dataset", default=None, help="nfm dataset folder (default: <model>/dataset)")
    p.add_argument("--split", default="test")
    p.add_argument("--sessions", default="all", help="'all', 'known' or comma-separated session ids")
    p.add_argument("--output_dir", default=None, help="default: <model>/generated")
    p.add_argument("--prompt_s", type=float, default=0.5, help="seconds of true data before generation starts")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top_p", type=float, default=0.95)
    p.add_argument("--top_k", type=int, default=0, help="0 = no top-k filtering")
    p.add_argument("--max_trials", type=int, default=16, help="trials per session (0 = all)")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--interval_s", type=float, default=None, help="counting interval of the summary metrics")
    p.add_argument("--device", default=None)
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import torch
    from transformers.utils import logging as hf_logging

    from nfm.evaluation.runner import generate_to_files, load_model

    hf_logging.set_verbosity_error()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model_dir = Path(args.model)
    dataset = args.dataset or str(model_dir / "dataset")
    if not Path(dataset).is_dir():
        raise SystemExit(f"dataset folder {dataset} does not exist; pass --dataset")
    out = args.output_dir or (str(model_dir / "generated") if model_dir.is_dir() else "generated")
    model = load_model(args.model, adapter=args.adapter, device=device)
    summary = generate_to_files(model, dataset, out, split=args.split, sessions=args.sessions,
                                prompt_s=args.prompt_s, temperature=args.temperature, top_p=args.top_p,
                                top_k=args.top_k or None, max_trials=args.max_trials or None,
                                batch_size=args.batch_size, interval_s=args.interval_s, seed=args.seed)
    for sid, s in summary.items():
        print(f"{sid}: {s['n_trials']} trials, {s['generated_spikes']:.0f} generated vs {s['true_spikes']:.0f} true "
              f"spikes, pearson r {s['pearson_r']:.3f}, F1 {s['f1']:.3f} -> {Path(out) / s['npz']}")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
