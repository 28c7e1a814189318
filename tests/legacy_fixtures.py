"""Single-modality checkpoints written by nfm before per-session modality (commit 164e5e7), and the outputs
they gave then: ``tests/data/legacy_v0/{spikes,calcium}/`` (config.json, model.safetensors, expected.json).

``python tests/legacy_fixtures.py`` re-writes them with the code of the working tree; it was run once at
164e5e7 (the last single-modality commit) and the files are committed, so the test
``test_modality.py::test_legacy_checkpoints_load`` checks that today's code loads a checkpoint of that code
and gives the same outputs.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

LEGACY_DIR = Path(__file__).resolve().parent / "data" / "legacy_v0"
TINY = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, decoder_layers=1,
            hidden_dropout=0.0, contrastive_dim=8, gen_windows_per_step=0)


def legacy_batch(modality: str):
    """The deterministic batch the expected outputs were computed on, and its meta."""
    from models_fixtures import make_batch, make_meta

    if modality == "spikes":
        meta = make_meta(n_bins=10)
        return meta, make_batch(meta, ["sA", "sA", "sB"], seed=3)
    meta = make_meta(n_bins=10, bin_size=0.1, modality="calcium", behavior_names=("running_speed",),
                     stimulus_names=(), trial_label_names=("stimulus_direction",))
    batch = make_batch(meta, ["sA", "sB"], seed=4)
    g = torch.Generator().manual_seed(5)
    batch["spikes"] = torch.rand(batch["spikes"].shape, generator=g) * batch["unit_mask"][:, None, :]
    batch["valid_mask"] = torch.ones_like(batch["spikes"], dtype=torch.bool)
    return meta, batch


def outputs(model, modality: str) -> dict:
    """The outputs compared across versions: masked predictions under a fixed neuron mask (and, for the
    spike model, the teacher-forced generation losses)."""
    from nfm.models.masking import sample_mask

    _, batch = legacy_batch(modality)
    base = model.nfm
    tables = base.session_tables(batch["session_ids"], batch["unit_mask"], batch["unit_region"])
    mask = sample_mask("neuron", tables.unit_mask, tables.unit_region, batch["spikes"].shape[1], model.config,
                       torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad():
        pred = base.predict_masked(batch["spikes"], mask=mask, unit_mask=batch["unit_mask"],
                                   unit_region=batch["unit_region"], session_ids=batch["session_ids"])
        out = {"prediction": pred.prediction.tolist(),
               "log_variance": None if pred.log_variance is None else pred.log_variance.tolist()}
        if getattr(model, "decoder", None) is not None:
            g = model.generation_outputs(**{k: v for k, v in batch.items() if k != "valid_mask"})
            out.update(id_loss=float(g.id_loss), dt_loss=float(g.dt_loss),
                       contrastive_loss=float(g.contrastive_loss))
    return out


def write(root: Path = LEGACY_DIR) -> None:
    from models_fixtures import setup_module_common

    from nfm.models import NfmConfig, NfmForMaskedModeling, NfmForPretraining

    setup_module_common()
    for modality, cls in (("spikes", NfmForPretraining), ("calcium", NfmForMaskedModeling)):
        meta, _ = legacy_batch(modality)
        torch.manual_seed(0)
        model = cls(NfmConfig.from_dataset_meta(meta, **TINY))
        with torch.no_grad():  # non-trivial per-session statistics and variances
            for sid in model.config.session_n_units:
                m = model.nfm.session_module(sid)
                m.readout_bias.uniform_(-1, 1)
                m.input_mean.uniform_(0, 1)
                m.input_scale.uniform_(0.5, 2)
                if m.log_var is not None:
                    m.log_var.uniform_(-1, 1)
        out = root / modality
        model.save_pretrained(out)
        (out / "expected.json").write_text(json.dumps(outputs(model, modality)))
        print("wrote", out)


if __name__ == "__main__":
    write()
