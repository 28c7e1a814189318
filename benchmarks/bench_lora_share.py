"""Trainable share of a LoRA adaptation, split into LoRA / per-session / shared, for the released model sizes.

    .venv/bin/python benchmarks/bench_lora_share.py

The promise "LoRA trains < 10% of the model" depends on the base's size and on the new animal: the LoRA
matrices are a fixed share of the base, but each new session brings its own read-in/read-out (unit embedding
and read-out row per unit: ``2 x hidden + 2`` parameters per unit, plus a session token), so a small base and a
large animal pass 10%.  For each size (the demo config ``recipes/configs/synthetic.yaml`` and the
``NfmConfig`` presets ``default``, ``mtm``, ``neuroformer``, all with the joint objective), a base with 8
pretraining sessions of 100 units gets a new animal with 2 sessions of N units (N = 100, 208, 676: MtM's mean
unit count per IBL session is about 676) and LoRA r = 8 (the recipe's default) on the attention and MLP
projections; the table reports what ``nfm.adapters.trainable_summary`` reports.  No training: counts only.
"""
from __future__ import annotations

import sys

import torch
import yaml

from nfm import resources
from nfm.adapters import lora_model, trainable_summary
from nfm.data.meta import DatasetMeta, SessionMeta
from nfm.models import NfmConfig, NfmForPretraining

REGIONS = ["CA1", "LP", "MOs", "PO", "VISp"]


def meta_with(sessions: dict[str, int]) -> DatasetMeta:
    return DatasetMeta(modality="spikes", window=(-0.5, 1.5), bin_size=0.02, regions=REGIONS,
                       sessions={sid: SessionMeta(subject_id=sid.rsplit("-", 1)[0], n_units=n,
                                                  units={"unit_id": [f"{sid}-{i}" for i in range(n)],
                                                         "region": [REGIONS[i % 5] for i in range(n)]})
                                 for sid, n in sessions.items()})


def sizes() -> dict[str, dict]:
    cfg = yaml.safe_load(resources.find_file("synthetic", "configs").read_text())
    demo = dict(cfg["model_overrides"])
    demo.pop("gen_windows_per_step", None)
    demo.pop("hidden_dropout", None)
    return {"demo (recipes/configs/synthetic.yaml)": {"preset": "default", **demo},
            "preset default": {"preset": "default"}, "preset mtm": {"preset": "mtm"},
            "preset neuroformer": {"preset": "neuroformer"}}


def main() -> int:
    torch.manual_seed(0)
    base_sessions = {f"old{a}-00": 100 for a in range(8)}
    print("| base | base parameters | new animal | trainable | share | LoRA | per-session | shared |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, kw in sizes().items():
        kw = dict(kw)
        preset = kw.pop("preset")
        for n_units in (100, 208, 676):
            meta = meta_with({**base_sessions, "new-00": n_units, "new-01": n_units})
            cfg = NfmConfig.from_dataset_meta(meta.subset(list(base_sessions)), preset=preset,
                                              objectives=["mtm", "generation"], **kw)
            base = NfmForPretraining(cfg)
            n_base = sum(p.numel() for p in base.parameters())
            spec = {s: {"n_units": n_units, "regions": meta.sessions[s].regions} for s in ("new-00", "new-01")}
            s = trainable_summary(lora_model(base, spec, r=8))
            g, total = s["groups"], s["total"]
            print(f"| {name} | {n_base:,} | 2 sessions x {n_units} units | {s['trainable']:,} | "
                  f"{100 * s['share']:.1f}% | {g['lora']:,} ({100 * g['lora'] / total:.1f}%) | "
                  f"{g['per_session']:,} ({100 * g['per_session'] / total:.1f}%) | {g['shared']:,} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
