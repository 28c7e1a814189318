"""LoRA adaptation to an animal excluded from pretraining: adapter folder, reload, merge, switching, baselines."""
import importlib.util
import json
import re
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from nfm.adapters import add_animal, load_adapter, new_sessions_spec
from nfm.data.hf import load_dataset
from nfm.models import NfmConfig, NfmForPretraining, register_auto_classes
from nfm.data.collate import NfmCollator
from nfm.training import rows as dataset_rows
from nfm.training import subset_split
from training_fixtures import RECIPES, make_tiny_dataset

#: the dimensions of the default synthetic model (recipes/configs/synthetic.yaml), 1 layer for speed
BASE_DIMS = dict(hidden_size=128, num_hidden_layers=1, num_attention_heads=4, intermediate_size=512,
                 decoder_layers=1, gen_windows_per_step=2)


def _load_recipe():
    spec = importlib.util.spec_from_file_location("finetune_lora", RECIPES / "finetune_lora.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


finetune = _load_recipe().finetune


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Tiny dataset + a base model that knows only synth-00-00 (a few AdamW steps on it), saved."""
    root = tmp_path_factory.mktemp("lora")
    ds_dir = make_tiny_dataset(root / "data")
    dd, meta = load_dataset(ds_dir)
    torch.manual_seed(0)
    base_meta = meta.subset(["synth-00-00"])
    model = NfmForPretraining(NfmConfig.from_dataset_meta(base_meta, **BASE_DIMS))
    collator = NfmCollator.for_config(base_meta, model.config)
    train = subset_split(dd["train"], ["synth-00-00"])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for start in (0, 7):
        model(**collator(dataset_rows(train, list(range(start, start + 7))))).loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(root / "base")
    register_auto_classes()
    return {"dataset": ds_dir, "meta": meta, "dd": dd, "base": root / "base"}


def _args(world, out, sessions, **extra):
    args = ["--model", str(world["base"]), "--dataset", str(world["dataset"]), "--sessions", *sessions,
            "--output_dir", str(out), "--per_device_train_batch_size", "4", "--logging_steps", "1",
            "--report_to", "none", "--learning_rate", "0.01", "--dataloader_pin_memory", "false"]
    for k, v in extra.items():
        args += [f"--{k}", str(v)]
    return args


def _outputs(model, world, session):
    """Deterministic forward on the session's test trials: eval mode, fixed neuron mask."""
    model.eval()
    rows = subset_split(world["dd"]["test"], [session])
    batch = NfmCollator.for_config(world["meta"], model.config)(dataset_rows(rows, list(range(len(rows)))))
    with torch.no_grad():
        out = model(**batch, mask_mode="neuron", generator=torch.Generator().manual_seed(0))
    return out.loss, out.log_rates, out.id_loss


def _base_weight_name(key: str) -> str | None:
    """Key of the base model that a PEFT state-dict key wraps (None for LoRA / new-session weights)."""
    if "lora_" in key or "modules_to_save" in key or "original_module" in key:
        return None
    return key.replace(".base_layer.", ".")


def test_lora_adapter_saved_reloaded_merged(world, tmp_path, capsys):
    from huggingface_hub import ModelCard
    from peft import PeftModel
    from transformers import AutoModel, AutoModelForPreTraining

    out = tmp_path / "lora"
    res = finetune(_args(world, out, ["synth-02-00"], max_steps=4, merge=True))
    printed = capsys.readouterr().out
    share = float(re.search(r"trainable%: ([0-9.]+)", printed).group(1))
    assert 0 < share < 10, printed
    model = res["model"]
    assert isinstance(model, PeftModel)

    # a standard PEFT folder + our sessions file + a card naming the base
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and set(cfg["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj",
                                                                         "fc1", "fc2"}
    assert len(cfg["modules_to_save"]) == 1 and cfg["modules_to_save"][0].startswith("nfm.sessions.s_synth_02_00")
    adapter = load_file(out / "adapter_model.safetensors")
    assert any("lora_B" in k for k in adapter) and any("sessions" in k for k in adapter)
    assert all(("lora_" in k) or ("sessions" in k) for k in adapter)  # nothing of the frozen base
    assert json.loads((out / "nfm_adapter.json").read_text())["sessions"]["synth-02-00"]["n_units"] == 16
    card = ModelCard.load(out / "README.md")
    # a local base is no Hub id: no base_model in the metadata (its fingerprint is in the card), no local path
    assert card.data.library_name == "nfm" and card.data.base_model is None
    assert str(world["base"]) not in card.content and "base fingerprint" in card.text.lower()
    assert "lora" in card.data.tags
    summary = json.loads((out / "eval_summary.json").read_text())
    assert summary["mode"] == "lora" and summary["sessions"] == ["synth-02-00"]
    assert np.isfinite(summary["tasks"]["co_smoothing"]["bps"])

    # only LoRA and the new animal's read-in/read-out moved; every base weight is bit-identical
    base_sd = load_file(world["base"] / "model.safetensors")
    trained = model.get_base_model().state_dict()
    checked = 0
    for key, value in trained.items():
        name = _base_weight_name(key)
        if name is not None and name in base_sd:
            assert torch.equal(value, base_sd[name]), key
            checked += 1
    assert checked >= len(base_sd) - 1
    assert any(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)  # the adapter did train

    ref = _outputs(model, world, "synth-02-00")
    base2 = AutoModelForPreTraining.from_pretrained(world["base"])
    add_animal(base2, new_sessions_spec(world["meta"], ["synth-02-00"]))
    reloaded = PeftModel.from_pretrained(base2, str(out))
    got = _outputs(reloaded, world, "synth-02-00")
    assert all(torch.equal(a, b) for a, b in zip(ref, got)), "reloaded adapter gives different outputs"

    merged = AutoModelForPreTraining.from_pretrained(out / "merged")
    assert "synth-02-00" in merged.config.session_n_units and "synth-00-00" in merged.config.session_n_units
    m_out = _outputs(merged, world, "synth-02-00")
    torch.testing.assert_close(m_out[1], ref[1], atol=2e-4, rtol=1e-4)  # W + sBA vs W x + sBAx rounding
    backbone, info = AutoModel.from_pretrained(out / "merged", output_loading_info=True)
    assert type(backbone).__name__ == "NfmModel" and not info["missing_keys"]
    assert "synth-02-00" in backbone.config.session_n_units


def test_two_animals_adapters_switch_without_reloading_the_base(world, tmp_path):
    from transformers import AutoModelForPreTraining

    runs = {}
    for sid in ("synth-01-00", "synth-02-00"):
        res = finetune(_args(world, tmp_path / sid, [sid], max_steps=3, skip_eval=True))
        runs[sid] = (res["output_dir"], _outputs(res["model"], world, sid))
    base = AutoModelForPreTraining.from_pretrained(world["base"])
    model = load_adapter(base, runs["synth-01-00"][0], adapter_name="mouse01")
    model = load_adapter(model, runs["synth-02-00"][0], adapter_name="mouse02")
    assert model.get_base_model() is base  # one base in memory
    for name, sid in (("mouse01", "synth-01-00"), ("mouse02", "synth-02-00"), ("mouse01", "synth-01-00")):
        model.set_adapter(name)
        got = _outputs(model, world, sid)
        assert all(torch.equal(a, b) for a, b in zip(runs[sid][1], got)), (name, sid)
    # animal 02's read-in/read-out live in its own adapter: using it under animal 01's is an error, not a
    # silent fall-back to the untrained copy
    model.set_adapter("mouse01")
    with pytest.raises(ValueError, match="belongs to adapter 'mouse02'"):
        _outputs(model, world, "synth-02-00")


def test_full_and_scratch_baselines_share_the_code_path(world, tmp_path):
    from transformers import AutoModelForPreTraining

    base = load_file(world["base"] / "model.safetensors")
    moved = {}
    for mode in ("full", "scratch"):
        res = finetune(_args(world, tmp_path / mode, ["synth-02-00"], mode=mode, max_steps=2, skip_eval=True,
                             learning_rate=1e-4))
        model = res["model"]
        assert all(p.requires_grad for p in model.parameters())
        assert (tmp_path / mode / "model.safetensors").is_file()
        loaded = AutoModelForPreTraining.from_pretrained(tmp_path / mode)
        assert "synth-02-00" in loaded.config.session_n_units
        sd = load_file(tmp_path / mode / "model.safetensors")
        key = "nfm.layers.0.attn.q_proj.weight"
        moved[mode] = float((sd[key] - base[key]).abs().max())
    assert moved["full"] < 0.01 < moved["scratch"]  # fine-tuned from the base vs re-initialised
