import pytest
"""Training behaviour: a tiny model overfits a tiny batch for every objective; bf16 autocast; gradient
checkpointing; mixed-session batches; the real data pipeline's batch goes straight into the model."""
import torch

from models_fixtures import make_batch, make_meta, setup_module_common, tiny_config
from nfm.models.masking import sample_mask
from nfm.models import (NfmConfig, NfmForBehaviorDecoding, NfmForMaskedModeling, NfmForPretraining,
                        NfmForSpikeGeneration, NfmModel)


def setup_module():
    setup_module_common()


def _fit(model, batch, steps, lr=3e-3, **kw):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        out = model(**batch, **kw)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(float(out.loss.detach()))
    return losses


def _poisson_deviance(log_rates, y, mask):
    """Mean Poisson deviance over masked entries: 0 for a perfect fit (the NLL itself is bounded below by log y!)."""
    r = log_rates.clamp(-20, 20).exp()
    dev = r - y + y * (torch.log(y.clamp_min(1e-9)) - log_rates.clamp(-20, 20))
    return float((dev * mask).sum() / mask.sum())


@pytest.mark.slow
def test_overfit_masked_modeling():
    torch.manual_seed(0)
    meta = make_meta({"sA": ["CA1"] * 4 + ["VISp"] * 4})
    model = NfmForMaskedModeling(tiny_config(meta, hidden_size=64))
    batch = make_batch(meta, ["sA", "sA"], seed=0, rate_hz=60)
    # one fixed mask of each kind: the tiny model must memorise the masked counts of this batch
    for mode in ("temporal", "neuron"):
        mask = sample_mask(mode, batch["unit_mask"], batch["unit_region"], 20, model.config,
                           torch.Generator().manual_seed(1))
        with torch.no_grad():
            first = model.eval()(**batch, mask=mask)
        d0 = _poisson_deviance(first.log_rates, batch["spikes"], first.mask.float())
        _fit(model, batch, 150, lr=5e-3, mask=mask)
        with torch.no_grad():
            last = model.eval()(**batch, mask=mask)
        d1 = _poisson_deviance(last.log_rates, batch["spikes"], last.mask.float())
        assert d1 < d0 / 5, (mode, d0, d1)


@pytest.mark.slow
def test_overfit_spike_generation():
    torch.manual_seed(0)
    meta = make_meta({"sA": ["CA1"] * 3 + ["VISp"] * 3}, n_bins=10)
    model = NfmForSpikeGeneration(tiny_config(meta, hidden_size=64, contrastive_weight=0.0, id_loss_weight=0.5))
    batch = make_batch(meta, ["sA", "sA"], seed=1, rate_hz=25)
    losses = _fit(model, batch, 150, lr=5e-3)
    assert losses[-1] < losses[0] / 5, (losses[0], losses[-1])
    with torch.no_grad():
        out = model.eval()(**batch)
    assert float(out.id_loss) < 0.5 and float(out.dt_loss) < 0.5


@pytest.mark.slow
def test_overfit_pretraining_both_objectives():
    torch.manual_seed(0)
    meta = make_meta({"sA": ["CA1"] * 3 + ["VISp"] * 3}, n_bins=10)
    cfg = tiny_config(meta, hidden_size=64, mask_modes=["neuron"], mtm_weight=1.0, contrastive_weight=0.2,
                      id_loss_weight=0.4)
    model = NfmForPretraining(cfg)
    batch = make_batch(meta, ["sA", "sA"], seed=2, rate_hz=25)
    mask = sample_mask("neuron", batch["unit_mask"], batch["unit_region"], 10, cfg, torch.Generator().manual_seed(3))
    with torch.no_grad():
        first = model.eval()(**batch, mask=mask)
    _fit(model, batch, 150, lr=5e-3, mask=mask)
    model.eval()
    with torch.no_grad():
        last = model(**batch, mask=mask)
    gen0 = 0.4 * first.id_loss + 0.4 * first.dt_loss
    gen1 = 0.4 * last.id_loss + 0.4 * last.dt_loss
    assert gen1 < gen0 / 5, (gen0, gen1)
    assert last.contrastive_loss < first.contrastive_loss / 2, (first.contrastive_loss, last.contrastive_loss)
    d0 = _poisson_deviance(first.log_rates, batch["spikes"], first.mask.float())
    d1 = _poisson_deviance(last.log_rates, batch["spikes"], last.mask.float())
    assert d1 < d0 / 5, (d0, d1)


def test_overfit_behavior_decoding_and_objective_switches():
    torch.manual_seed(0)
    meta = make_meta(trial_label_names=("choice", "probabilityLeft"))
    cfg = tiny_config(meta, trial_label_classes={"choice": [-1, 1]})
    model = NfmForBehaviorDecoding(cfg)
    batch = make_batch(meta, ["sA", "sB", "sA", "sB"], seed=3)
    batch["trial_labels"][:, 1] = torch.tensor([0.2, 0.8, float("nan"), 0.5])
    losses = _fit(model, batch, 120, lr=5e-3)
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])
    out = model.eval()(**batch)
    assert out.trial_logits["choice"].shape == (4, 2) and out.trial_logits["probabilityLeft"].shape == (4,)
    assert (out.trial_logits["choice"].argmax(1) == (batch["trial_labels"][:, 0] > 0).long()).all()
    bad = dict(batch, trial_labels=batch["trial_labels"].clone())
    bad["trial_labels"][0, 0] = 0.5
    try:
        model(**bad)
        raise AssertionError("a choice value outside its classes must raise")
    except ValueError as e:
        assert "choice" in str(e) and "0.5" in str(e)
    # MtM-only and Neuroformer-only baselines come from the config alone
    mtm_only = NfmForPretraining(tiny_config(meta, objectives=["mtm"]))
    assert mtm_only.decoder is None
    out = mtm_only(**batch)
    assert out.id_loss is None and torch.equal(out.loss, out.mtm_loss)
    gen_only = NfmForPretraining(tiny_config(meta, objectives=["generation"]))
    out = gen_only(**batch)
    assert out.mtm_loss is None and out.dt_loss is not None


def test_default_config_bf16_autocast_no_nan():
    torch.manual_seed(0)
    meta = make_meta(n_bins=20)
    cfg = NfmConfig.from_dataset_meta(meta)  # the default size
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads) == (128, 4, 4)
    model = NfmForPretraining(cfg)
    batch = make_batch(meta, ["sA", "sB"], seed=5, rate_hz=40)
    batch["spikes"][0, 3, 2] = 60.0  # a burst: large counts must not overflow
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**batch)
    assert torch.isfinite(out.loss) and torch.isfinite(out.log_rates).all()
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        gen = model.generate(**batch, start_window=2, n_windows=2, max_events=8)
    assert torch.isfinite(gen.spikes).all()


def test_gradient_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    meta = make_meta()
    model = NfmForPretraining(tiny_config(meta))
    batch = make_batch(meta, ["sA", "sB"], seed=6)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    model.train()
    model(**batch, generator=g()).loss.backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    assert all(layer.gradient_checkpointing for layer in model.nfm.layers)
    model(**batch, generator=g()).loss.backward()
    for n, p in model.named_parameters():
        if n in ref:
            assert torch.allclose(p.grad, ref[n], atol=1e-6, rtol=1e-4), n


def test_mixed_sessions_and_padding_do_not_interact():
    torch.manual_seed(0)
    meta = make_meta()
    model = NfmModel(tiny_config(meta)).eval()
    mixed = make_batch(meta, ["sA", "sB"], seed=7)
    alone = make_batch(meta, ["sB"], seed=7)
    # trial 1 (sB, 6 units) inside a batch padded to 10 units equals sB alone with the same counts
    alone["spikes"] = mixed["spikes"][1:, :, :6].clone()
    alone["unit_region"] = mixed["unit_region"][1:, :6]
    a = model(**mixed).last_hidden_state[1]
    b = model(**alone).last_hidden_state[0]
    assert torch.allclose(a, b, atol=1e-5)
    # garbage in padded columns changes nothing
    junk = dict(mixed, spikes=mixed["spikes"].clone())
    junk["spikes"][1, :, 6:] = 7.0
    assert torch.equal(model(**junk).last_hidden_state, model(**mixed).last_hidden_state)


def test_real_pipeline_batch_goes_into_the_model():
    from nfm.data.collate import NfmCollator
    from nfm.data.hf import build_dataset
    from nfm.data.sources.synthetic import make_ibl_like_world

    sessions = make_ibl_like_world(n_animals=2, n_trials=12, seed=0)
    dd, meta = build_dataset(sessions)
    cfg = NfmConfig.from_dataset_meta(meta, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=64, decoder_layers=1, gen_windows_per_step=3)
    assert set(cfg.session_n_units) == {s.session_id for s in sessions}
    model = NfmForPretraining(cfg)
    collate = NfmCollator(meta, region_vocab=cfg.region_vocab)
    train = dd["train"]
    sids = train["session_id"]
    rows = [train[i] for i in range(len(sids)) if sids[i] == sids[0]][:2] + \
           [train[i] for i in range(len(sids)) if sids[i] != sids[0]][:2]
    batch = collate(rows)
    out = model(**batch)  # the collator's keys as keyword arguments, unknown ones ignored
    assert torch.isfinite(out.loss) and out.log_rates.shape == batch["spikes"].shape
    out.loss.backward()


def test_transformers_trainer_trains_and_evaluates(tmp_path):
    from transformers import Trainer, TrainingArguments

    from nfm.data.collate import NfmCollator
    from nfm.data.hf import build_dataset
    from nfm.data.sources.synthetic import make_ibl_like_world

    torch.manual_seed(0)
    dd, meta = build_dataset(make_ibl_like_world(n_animals=1, n_trials=12, seed=1))
    cfg = NfmConfig.from_dataset_meta(meta, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=64, decoder_layers=1, gen_windows_per_step=2)
    model = NfmForPretraining(cfg)
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, per_device_eval_batch_size=4,
                             max_steps=2, learning_rate=1e-3, report_to=[], use_cpu=True,
                             remove_unused_columns=False, save_strategy="no", logging_steps=1, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=dd["train"], eval_dataset=dd["validation"],
                      data_collator=NfmCollator(meta, region_vocab=cfg.region_vocab))
    before = model.nfm.readin_fc1.weight.detach().clone()
    result = trainer.train()
    assert result.global_step == 2 and torch.isfinite(torch.tensor(result.training_loss))
    assert not torch.equal(before, model.nfm.readin_fc1.weight)
    metrics = trainer.evaluate()
    assert "eval_loss" in metrics and metrics["eval_loss"] > 0
