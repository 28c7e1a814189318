"""Issue 10, item 1: a base pretrained on the synthetic world (stimulus ``signed_contrast``, behaviour
``wheel_speed`` / ``whisker_motion_energy``) adapted with LoRA to an NWB spike recording that has none of them,
another trial window, then evaluated."""
from __future__ import annotations

import importlib.util
import json
import sys
from datetime import datetime, timezone

import numpy as np
import pytest
from pynwb import NWBHDF5IO, NWBFile
from pynwb.file import Subject

from nfm.data.prepare import prepare
from training_fixtures import RECIPES, make_tiny_dataset, tiny_args


def _recipe(name):
    spec = importlib.util.spec_from_file_location(f"{name}_recipe", RECIPES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def write_spikes_only_nwb(path, n_units=8, n_trials=30, seed=0):
    """An NWB file with sorted units and a trials table only: no stimulus, no behaviour."""
    rng = np.random.default_rng(seed)
    nwb = NWBFile(session_description="spikes only", identifier="nwb-spikes-only",
                  session_start_time=datetime(2024, 5, 6, tzinfo=timezone.utc),
                  subject=Subject(subject_id="other-rig-mouse", species="Mus musculus"))
    dev = nwb.create_device("probe")
    group = nwb.create_electrode_group("shank", description="shank", location="brain", device=dev)
    for loc in ("VISp", "VISp", "LP", "LP"):
        nwb.add_electrode(group=group, location=loc, x=0.0, y=0.0, z=0.0)
    t_end = 2.5 * n_trials + 1.0
    for u in range(n_units):
        rate = rng.uniform(5, 20)
        nwb.add_unit(spike_times=np.sort(rng.uniform(0, t_end, rng.poisson(rate * t_end))), electrodes=[u % 4], id=u)
    for k in range(n_trials):
        nwb.add_trial(start_time=0.5 + 2.5 * k, stop_time=2.5 + 2.5 * k)
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return path


@pytest.mark.slow
def test_lora_on_a_dataset_without_the_base_modalities(tmp_path, capsys):
    from nfm.data.hf import load_dataset
    from nfm.evaluation.predictor import load_model
    from nfm.evaluation.runner import evaluate

    base_dir = tmp_path / "base"
    syn = make_tiny_dataset(tmp_path / "synthetic")
    assert _recipe("pretrain").main(tiny_args(syn, base_dir, max_steps=4, skip_eval="true")) == 0
    nwb = write_spikes_only_nwb(tmp_path / "rec.nwb")
    prepare("nwb", tmp_path / "nwb", inputs=[str(nwb)], progress=False)
    _, meta = load_dataset(tmp_path / "nwb")
    assert not meta.stimulus_names and not meta.behavior_names and meta.window == (0.0, 2.0)
    sid = meta.session_ids[0]
    out = tmp_path / "lora"
    capsys.readouterr()
    res = _recipe("finetune_lora").finetune([
        "--model", str(base_dir), "--dataset", str(tmp_path / "nwb"), "--sessions", sid, "--output_dir", str(out),
        "--max_steps", "3", "--per_device_train_batch_size", "4", "--report_to", "none", "--logging_steps", "1",
        "--dataloader_pin_memory", "false", "--eval_max_trials", "4", "--eval_tasks", "co_smoothing"])
    printed = capsys.readouterr().out
    line = next(ln for ln in printed.splitlines() if ln.startswith("base modalities"))
    assert "stimulus: has none, lacks ['signed_contrast']" in line
    assert "lacks ['wheel_speed', 'whisker_motion_energy']" in line and "masked" in line
    assert np.isfinite(res["report"]["tasks"]["co_smoothing"]["bps"])
    spec = json.loads((out / "nfm_adapter.json").read_text())["sessions"][sid]
    assert spec["modality"] == "spikes" and spec["window"] == [0.0, 2.0] and spec["bin_size"] == 0.02
    model = load_model(str(base_dir), adapter=str(out))
    assert model.config.grid_of(sid) == ((0.0, 2.0), 0.02, 100)  # its own window, the base's bins
    results = evaluate(model, tmp_path / "nwb", tasks="co_smoothing,forward_prediction", split="test",
                       sessions=[sid])
    assert np.isfinite(results["co_smoothing"]["bps"]) and np.isfinite(results["forward_prediction"]["bps"])
    # generation runs on the new animal with no stimulus / behaviour at all
    from nfm.data.collate import NfmCollator
    dd, _ = load_dataset(tmp_path / "nwb")
    batch = NfmCollator.for_config(meta, model.config)(dd["test"].select(range(2)).to_list())
    assert np.isnan(batch["stimulus"].numpy()).all() and batch["stimulus"].shape[2] == 1
    gen = model.generate(**batch, n_windows=1, max_events=8)
    assert gen.spikes.shape == batch["spikes"].shape


def test_modality_map_renames_a_base_variable(tmp_path):
    from nfm.data.collate import NfmCollator
    from nfm.data.hf import build_dataset
    from nfm.data.sources.synthetic import make_ibl_like_world
    from nfm.models import NfmConfig
    from nfm.training import describe_modalities
    from nfm.training.arguments import parse_modality_map

    sessions = make_ibl_like_world(n_animals=1, n_trials=10, units_per_region=(2, 3), seed=3)
    base_dd, base_meta = build_dataset(sessions)
    s = sessions[0]
    s.stimulus = {"contrast": s.stimulus.pop("signed_contrast")}  # another rig's name
    s.behavior.pop("whisker_motion_energy")
    s.behavior_units.pop("whisker_motion_energy")
    s.session_id = "other-rig"
    dd, meta = build_dataset([s])
    cfg = NfmConfig.from_dataset_meta(base_meta)
    mm = parse_modality_map(["signed_contrast=contrast"])
    line = describe_modalities(cfg, meta, mm)
    assert "stimulus: has ['signed_contrast<-contrast'], lacks none" in line
    assert "behaviour: has ['wheel_speed'], lacks ['whisker_motion_energy']" in line
    rows = dd["train"].select(range(2)).to_list()
    b = NfmCollator.for_config(meta, cfg, modality_map=mm)(rows)
    np.testing.assert_allclose(b["stimulus"][..., 0].numpy(), np.asarray([r["stimulus_contrast"] for r in rows]))
    assert np.isnan(b["behavior"][..., 1].numpy()).all()  # whisker energy: absent, NaN (masked)
    with pytest.raises(ValueError, match="has no stimulus variable 'contrst'"):
        NfmCollator.for_config(meta, cfg, modality_map={"signed_contrast": "contrst"})
    with pytest.raises(ValueError, match="expected BASE_NAME=DATASET_NAME"):
        parse_modality_map(["signed_contrast"])
