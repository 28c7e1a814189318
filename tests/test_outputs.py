"""What nfm writes: with the process umask (not private 0600/0700), under outputs/ by default (ignored by git),
and loading a pretraining checkpoint as a backbone is quiet."""
import os
import stat

import pytest
import torch

from nfm.adapters import lora_model, new_sessions_spec, save_adapter
from nfm.data.hf import build_dataset, load_dataset, save_dataset
from nfm.data.sources.synthetic import make_ibl_like_world
from nfm.files import apply_umask, process_umask
from nfm.models import NfmConfig, NfmForPretraining, register_auto_classes
from training_fixtures import REPO, TINY_MODEL


def mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


@pytest.fixture
def umask():
    old = os.umask(0o022)
    try:
        yield lambda m: os.umask(m)
    finally:
        os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_saved_files_follow_the_umask(tmp_path, umask, mask):
    umask(mask)
    assert process_umask() == mask
    f, d = 0o666 & ~mask, 0o777 & ~mask
    sessions = make_ibl_like_world(n_animals=2, n_trials=8, units_per_region=(3, 4), seed=1)
    dd, meta = build_dataset(sessions)
    out = save_dataset(dd, meta, tmp_path / "data")
    assert mode(out) == d  # was 0700 (tempfile.mkdtemp)
    for p in out.rglob("*"):
        assert mode(p) == (d if p.is_dir() else f), p
    _, meta = load_dataset(out)
    torch.manual_seed(0)
    model = NfmForPretraining(NfmConfig.from_dataset_meta(meta.subset([meta.session_ids[0]]), **TINY_MODEL))
    model.save_pretrained(tmp_path / "model")
    assert mode(tmp_path / "model" / "model.safetensors") == f  # safetensors 0.8 writes 0600
    assert mode(tmp_path / "model" / "config.json") == f
    peft = lora_model(model, new_sessions_spec(meta, [meta.session_ids[1]]), r=2)
    save_adapter(peft, tmp_path / "lora", new_sessions_spec(meta, [meta.session_ids[1]]), base_model="m")
    assert mode(tmp_path / "lora" / "adapter_model.safetensors") == f


def test_apply_umask_leaves_deliberate_modes_alone(tmp_path, umask):
    p = tmp_path / "x"
    p.write_text("x")
    os.chmod(p, 0o640)
    q = tmp_path / "y"
    q.write_text("y")
    os.chmod(q, 0o600)
    apply_umask(tmp_path)
    assert mode(p) == 0o640 and mode(q) == 0o644


def test_loading_a_pretraining_checkpoint_as_a_backbone_is_quiet(tmp_path, capfd):
    """The event decoder of a pretraining checkpoint is not part of AutoModel (NfmModel): declared as ignored on
    load (``_keys_to_ignore_on_load_unexpected``), so there is no 'UNEXPECTED keys' report."""
    from transformers import AutoModel, AutoModelForPreTraining
    from transformers.utils import logging as hf_logging

    register_auto_classes()
    sessions = make_ibl_like_world(n_animals=1, n_trials=6, units_per_region=(3, 4), seed=1)
    _, meta = build_dataset(sessions)
    NfmForPretraining(NfmConfig.from_dataset_meta(meta, **TINY_MODEL)).save_pretrained(tmp_path / "pt")
    capfd.readouterr()
    old = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()  # the default a user has
    try:
        backbone = AutoModel.from_pretrained(tmp_path / "pt")
        full = AutoModelForPreTraining.from_pretrained(tmp_path / "pt")
    finally:
        hf_logging.set_verbosity(old)
    out = capfd.readouterr()
    text = (out.out + out.err).lower()
    assert "unexpected" not in text and "missing" not in text and "decoder." not in text, text[-2000:]
    assert type(backbone).__name__ == "NfmModel" and type(full).__name__ == "NfmForPretraining"


def test_default_outputs_are_under_outputs_and_ignored():
    ignored = (REPO / ".gitignore").read_text().splitlines()
    assert "/outputs/" in ignored and "/data/" in ignored
    import importlib.util

    mods = {}
    for recipe in ("evaluate", "generate"):
        spec = importlib.util.spec_from_file_location(f"r_{recipe}", REPO / "recipes" / f"{recipe}.py")
        mods[recipe] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mods[recipe])
    assert mods["evaluate"].default_output("someorg/nfm-base") == "outputs/evaluation/results.json"
    assert mods["evaluate"].default_output("someorg/nfm-base", "outputs/lora") == "outputs/lora/evaluation/results.json"
    assert mods["generate"].default_output_dir("someorg/nfm-base") == "outputs/generated"
    from nfm.training.arguments import TRAINING_DEFAULTS

    assert TRAINING_DEFAULTS["output_dir"].startswith("outputs/")
