"""An adapter records its base (fingerprint of config + shared weights): another base is refused with one line
naming both, unless explicitly allowed; the trainable parameters are reported split into LoRA / per-session /
shared, in the run summary, nfm_adapter.json and the card."""
import json
import subprocess
import warnings

import pytest
import torch

from nfm.adapters import (
    AdapterBaseMismatch,
    base_fingerprint,
    format_trainable,
    load_adapter,
    lora_model,
    new_sessions_spec,
    save_adapter,
    trainable_summary,
)
from nfm.data.hf import load_dataset
from nfm.models import NfmConfig, NfmForPretraining, register_auto_classes
from training_fixtures import HELDOUT_SUBJECT, RECIPES, TINY_MODEL, make_tiny_dataset, python, subprocess_env
from test_cli import assert_user_error


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Two bases of the same architecture (different random weights) and an adapter trained on the first."""
    register_auto_classes()
    root = tmp_path_factory.mktemp("adapter_base")
    data = make_tiny_dataset(root / "data")
    _, meta = load_dataset(data)
    keep = [s for s, m in meta.sessions.items() if m.subject_id != HELDOUT_SUBJECT]
    new = [s for s in meta.session_ids if s not in keep]
    for name, seed in (("base_a", 0), ("base_b", 1)):
        torch.manual_seed(seed)
        NfmForPretraining(NfmConfig.from_dataset_meta(meta.subset(keep), **TINY_MODEL)).save_pretrained(root / name)
    spec = new_sessions_spec(meta, new)
    model = lora_model(NfmForPretraining.from_pretrained(root / "base_a"), spec, r=4)
    with torch.no_grad():  # a trained-looking adapter
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.1)
    save_adapter(model, root / "lora", spec, base_model=str(root / "base_a"))
    return {"root": root, "data": data, "meta": meta, "new": new, "spec": spec, "model": model}


def test_fingerprint_is_recorded_and_stable(world):
    meta = json.loads((world["root"] / "lora" / "nfm_adapter.json").read_text())
    a = NfmForPretraining.from_pretrained(world["root"] / "base_a")
    b = NfmForPretraining.from_pretrained(world["root"] / "base_b")
    assert meta["base_fingerprint"] == base_fingerprint(a) != base_fingerprint(b)
    assert len(meta["base_fingerprint"]) == 64
    # the same weights from a copy of the folder: the same fingerprint; one weight changed: another
    a2 = NfmForPretraining.from_pretrained(world["root"] / "base_a")
    assert base_fingerprint(a2) == base_fingerprint(a)
    with torch.no_grad():
        next(p for n, p in a2.named_parameters() if "encoder" in n or "layers" in n).add_(1e-3)
    assert base_fingerprint(a2) != base_fingerprint(a)


def test_adapter_loads_on_its_base(world):
    base = NfmForPretraining.from_pretrained(world["root"] / "base_a")
    model = load_adapter(base, world["root"] / "lora")
    assert set(world["new"]) <= set(model.get_base_model().config.session_n_units)


def test_adapter_on_another_base_is_refused_naming_both(world):
    base_b = NfmForPretraining.from_pretrained(world["root"] / "base_b")
    with pytest.raises(AdapterBaseMismatch) as err:
        load_adapter(base_b, world["root"] / "lora", base_name="other-base")
    msg = str(err.value)
    want = json.loads((world["root"] / "lora" / "nfm_adapter.json").read_text())["base_fingerprint"]
    assert str(world["root"] / "base_a") in msg and "other-base" in msg
    assert want[:16] in msg and base_fingerprint(NfmForPretraining.from_pretrained(world["root"] / "base_b"))[:16] in msg
    assert "allow_base_mismatch" in msg
    assert "synth-02-00" not in base_b.config.session_n_units  # refused before anything was added
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = load_adapter(base_b, world["root"] / "lora", allow_base_mismatch=True)
    assert any("was trained on base" in str(w.message) for w in caught)
    assert set(world["new"]) <= set(model.get_base_model().config.session_n_units)


def test_evaluate_refuses_a_mismatched_base_and_allows_the_override(world, tmp_path):
    common = ["--adapter", world["root"] / "lora", "--dataset", world["data"], "--tasks", "co_smoothing",
              "--no_estimate", "--batch_size", "8"]
    res = subprocess.run([python(), str(RECIPES / "evaluate.py"), "--model", str(world["root"] / "base_b"),
                          *map(str, common), "--output", str(tmp_path / "a" / "r.json")], env=subprocess_env(),
                         capture_output=True, text=True, timeout=300)
    assert_user_error(res, "base_a", "base_b", "--allow_base_mismatch")
    assert not (tmp_path / "a" / "r.json").exists()
    res = subprocess.run([python(), str(RECIPES / "evaluate.py"), "--model", str(world["root"] / "base_b"),
                          *map(str, common), "--allow_base_mismatch", "--output", str(tmp_path / "b" / "r.json")],
                         env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    results = json.loads((tmp_path / "b" / "r.json").read_text())
    assert set(results["co_smoothing"]["per_session"]) == set(world["new"])  # the adapter's sessions by default


def test_trainable_split(world):
    s = trainable_summary(world["model"])
    g = s["groups"]
    assert g["lora"] > 0 and g["per_session"] > 0 and g["shared"] == 0
    assert g["lora"] + g["per_session"] + g["shared"] == s["trainable"]
    hidden = TINY_MODEL["hidden_size"]
    n_units = sum(world["spec"][sid]["n_units"] for sid in world["new"])
    assert g["per_session"] == n_units * (2 * hidden + 2) + len(world["new"]) * hidden  # read-in/out, biases, token
    line = format_trainable(s)
    assert "lora" in line and "per-session" in line and "shared 0" in line
    full = NfmForPretraining.from_pretrained(world["root"] / "base_a")
    fs = trainable_summary(full)
    assert fs["groups"]["shared"] > 0 and fs["groups"]["lora"] == 0


def test_no_gradient_checkpointing_future_warning_on_lora(world):
    base = NfmForPretraining.from_pretrained(world["root"] / "base_a")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lora_model(base, world["spec"], r=4)
        load_adapter(NfmForPretraining.from_pretrained(world["root"] / "base_a"), world["root"] / "lora")
    assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)]
