"""bf16 on CPU as a supported path (issue 22): the precision rule, the start-up probe, float32 where precision
matters under autocast, the recipe's one-line errors and record, bf16-vs-fp32 parity of the masked-loss curve
over seeds, and generation's grammar masks under bf16."""
from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from models_fixtures import make_batch, make_meta, setup_module_common, tiny_config
from training_fixtures import REPO, make_tiny_dataset, tiny_args

from nfm.cli import UsageError
from nfm.training.precision import MIN_SPEEDUP, cpu_bf16_flags, cpu_flags, probe, resolve_precision


def setup_module():
    setup_module_common()
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("precision") / "ds")


def _recipe():
    spec = importlib.util.spec_from_file_location("nfm_pretrain_recipe_precision", REPO / "recipes" / "pretrain.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# --------------------------------------------------------------------------- detection and the rule
def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    amx = tmp_path / "amx"
    amx.write_text("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
                   "flags\t\t: fpu sse avx512f avx512_bf16 amx_bf16 amx_tile\n")
    assert cpu_bf16_flags(amx) == ["amx_bf16", "avx512_bf16"]
    zen4 = tmp_path / "zen4"
    zen4.write_text("flags\t\t: fpu avx2 avx512f avx512_bf16\n")
    assert cpu_bf16_flags(zen4) == ["avx512_bf16"]
    none = tmp_path / "none"
    none.write_text("flags\t\t: fpu sse avx avx2 fma\n")
    assert cpu_bf16_flags(none) == [] and cpu_bf16_flags(tmp_path / "missing") == []
    # this machine: what /proc/cpuinfo says, parsed independently
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "flags: ")
    here = set(line.split(":", 1)[1].split())
    assert cpu_flags() == here
    assert cpu_bf16_flags() == [f for f in ("amx_bf16", "avx512_bf16") if f in here]


def _fake_probe(speedup):
    calls = []

    def fn(h, i, device):
        calls.append((h, i, device))
        return {"hidden_size": h, "intermediate_size": i, "tokens": 1024, "rounds": 5, "fp32_ms": 10.0,
                "bf16_ms": 10.0 / speedup, "speedup": speedup, "seconds": 0.5}
    return fn, calls


def test_precision_rule_on_cpus_with_and_without_bf16():
    # no AMX / AVX512-BF16: auto is fp32 and no probe runs
    fn, calls = _fake_probe(3.0)
    c = resolve_precision("auto", cuda_available=False, bf16_flags=[], probe_fn=fn)
    assert (c.precision, c.training_arguments, calls) == ("fp32", {"bf16": False, "fp16": False}, [])
    assert "no AMX/AVX512-BF16" in c.reason and "emulated" in c.reason
    # AMX and a probe that measures bf16 faster: bf16, on the CPU through use_cpu
    fn, calls = _fake_probe(2.0)
    c = resolve_precision("auto", cuda_available=False, bf16_flags=["amx_bf16", "avx512_bf16"], hidden_size=512,
                          intermediate_size=1024, probe_fn=fn)
    assert c.precision == "bf16" and c.training_arguments == {"bf16": True, "fp16": False, "use_cpu": True}
    assert calls == [(512, 1024, "cpu")] and c.probe["speedup"] == 2.0 and "2.00x" in c.reason
    # the flag but a probe that does not show it faster (overhead-bound small model): fp32
    fn, _ = _fake_probe(MIN_SPEEDUP - 0.05)
    c = resolve_precision("auto", cuda_available=False, bf16_flags=["avx512_bf16"], probe_fn=fn)
    assert c.precision == "fp32" and c.probe is not None and "under the" in c.reason
    # several processes: no probe (ranks would time each other), the hardware decides
    fn, calls = _fake_probe(0.5)
    c = resolve_precision("auto", cuda_available=False, bf16_flags=["amx_bf16"], world_size=2, probe_fn=fn)
    assert c.precision == "bf16" and calls == [] and "2-process" in c.reason
    # asked for explicitly on a CPU without bf16: allowed, with a warning that it is slow
    for kw in ({"requested": "bf16"}, {"bf16": True}):
        c = resolve_precision(cuda_available=False, bf16_flags=[], **kw)
        assert c.precision == "bf16" and c.training_arguments["use_cpu"] is True
        assert c.warning and "emulated" in c.warning and "slower than fp32" in c.warning
    assert resolve_precision("bf16", cuda_available=False, bf16_flags=["amx_bf16"]).warning is None
    # the record is JSON
    json.dumps(c.record())


def test_precision_rule_on_cuda_and_wrong_combinations():
    c = resolve_precision("auto", cuda_available=True, cuda_bf16=True, probe_fn=_fake_probe(4.0)[0])
    assert c.precision == "bf16" and c.device == "cuda" and "use_cpu" not in c.training_arguments
    c = resolve_precision("auto", cuda_available=True, cuda_bf16=False, probe_fn=_fake_probe(4.0)[0])
    assert c.precision == "fp32" and "does not support bf16" in c.reason
    assert resolve_precision("auto", fp16=True, cuda_available=True, cuda_bf16=True).training_arguments["fp16"]
    # --use_cpu on a GPU machine: the CPU's flags decide
    c = resolve_precision("auto", use_cpu=True, cuda_available=True, cuda_bf16=True, bf16_flags=[])
    assert c.device == "cpu" and c.precision == "fp32"
    cases = [(dict(fp16=True, cuda_available=False), "--fp16", "CUDA"),
             (dict(requested="fp32", bf16=True, cuda_available=False), "--precision", "contradicts --bf16"),
             (dict(requested="bf16", fp16=True, cuda_available=True), "--precision", "contradicts --fp16"),
             (dict(bf16=True, fp16=True, cuda_available=True), "--fp16", "both"),
             (dict(requested="fp16", cuda_available=False), "--precision", "not one of")]
    for kw, flag, words in cases:
        with pytest.raises(UsageError) as err:
            resolve_precision(**kw)
        assert err.value.field == flag and words in str(err.value) and "\n" not in str(err.value)


def test_probe_is_short_and_measures_both_precisions():
    t0 = time.perf_counter()
    res = probe(128, 512)
    wall = time.perf_counter() - t0
    assert wall < 2.0, f"the start-up probe took {wall:.2f} s"
    assert res["rounds"] >= 1 and res["fp32_ms"] > 0 and res["bf16_ms"] > 0 and res["tokens"] >= 32
    assert res["speedup"] == pytest.approx(res["fp32_ms"] / res["bf16_ms"], rel=1.0)  # a median of paired ratios
    if not cpu_bf16_flags():  # emulated bf16 (this AMD EPYC: about 0.1x) is never "faster"
        assert res["speedup"] < MIN_SPEEDUP


# --------------------------------------------------------------------------- float32 where precision matters
def test_likelihood_logits_and_softmax_statistics_stay_float32_under_autocast():
    from nfm.models import NfmForPretraining
    from nfm.models.modeling_nfm import masked_nll

    torch.manual_seed(0)
    meta = make_meta(n_bins=20)
    model = NfmForPretraining(tiny_config(meta, gen_windows_per_step=2, hidden_size=64)).eval()
    batch = make_batch(meta, ["sA", "sB"], seed=3, rate_hz=30)
    backbone, decoder = model.nfm, model.decoder
    with torch.no_grad():
        tables = backbone.session_tables(batch["session_ids"], batch["unit_mask"], batch["unit_region"])
    B, T, N = batch["spikes"].shape
    states = torch.randn(B, T, 64).bfloat16()  # what the transformer hands the heads under autocast
    with torch.no_grad():
        ref_rates = backbone.readout(states.float(), tables)  # float32 reference, no autocast
        cur = torch.zeros(B, 1, 3, dtype=torch.long)
        nxt = torch.tensor([[[0, 1, 2]]]).expand(B, 1, 3)
        units = torch.zeros(B, 1, 3, dtype=torch.long)
        st = states[:, :3].unsqueeze(1)
        ref_dt = decoder.dt_logits(st.float(), cur)
        ref_id = decoder.id_logits(st.float(), nxt, units, cur, tables)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            rates = backbone.readout(states, tables)
            dt = decoder.dt_logits(st, cur)
            idl = decoder.id_logits(st, nxt, units, cur, tables)
            naive = torch.einsum("bth,bnh->btn", states, tables.readout)  # what autocast alone would give
    assert rates.dtype == dt.dtype == idl.dtype == torch.float32
    assert torch.allclose(rates, ref_rates, atol=1e-5, rtol=1e-5)
    assert torch.allclose(dt, ref_dt, atol=1e-5) and torch.equal(torch.isinf(idl), torch.isinf(ref_id))
    fin = torch.isfinite(ref_id)
    assert torch.allclose(idl[fin], ref_id[fin], atol=1e-5)
    # the check can fail: a bf16 matmul of the same inputs is off by far more than the tolerance
    assert naive.dtype == torch.bfloat16
    assert float((naive.float() - (ref_rates - tables.readout_bias.unsqueeze(1)) * tables.unit_mask.unsqueeze(1)
                  ).abs().max()) > 1e-3
    # the whole objective under autocast: float32 losses, finite, close to the float32 pass
    torch.manual_seed(1)
    with torch.no_grad():
        full = model(**batch)
    torch.manual_seed(1)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        half = model(**batch)
    for key in ("loss", "mtm_loss", "id_loss", "dt_loss", "contrastive_loss"):
        a, b = getattr(full, key), getattr(half, key)
        assert b.dtype == torch.float32 and torch.isfinite(b), key
        assert abs(float(a - b)) < 2e-2 * abs(float(a)) + 1e-3, (key, float(a), float(b))
    assert half.log_rates.dtype == torch.float32
    pred = backbone.predict_masked(batch["spikes"], mask=_neuron_mask(backbone, batch, tables), tables=tables)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        nll = masked_nll(pred, batch["spikes"])
    assert nll.dtype == torch.float32 and torch.isclose(nll, masked_nll(pred, batch["spikes"]))


def _neuron_mask(backbone, batch, tables):
    from nfm.models.masking import sample_mask

    return sample_mask("neuron", tables.unit_mask, tables.unit_region, batch["spikes"].shape[1], backbone.config,
                       torch.Generator().manual_seed(0))


# --------------------------------------------------------------------------- the recipe
def test_recipe_precision_errors_are_one_line(dataset, tmp_path, capsys):
    from nfm.cli import run

    recipe = _recipe()
    for extra, words in ((["--fp16"], "--fp16: fp16 mixed precision needs a CUDA GPU"),
                         (["--precision", "fp32", "--bf16"], "--precision: fp32 contradicts --bf16 true"),
                         (["--precision", "half"], "invalid choice: 'half'")):
        if torch.cuda.is_available() and extra == ["--fp16"]:
            continue
        argv = tiny_args(dataset, tmp_path / "err", max_steps=1) + extra
        try:
            code = run(recipe.main, argv)
        except SystemExit as ex:  # argparse's own check (the light parser) exits itself
            code = ex.code
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and words in err[0], (extra, err)
        assert not (tmp_path / "err" / "model.safetensors").exists()


def test_recipe_bf16_on_this_cpu_trains_and_records_the_choice(dataset, tmp_path, capsys):
    recipe = _recipe()
    out = tmp_path / "bf16"
    assert recipe.main(tiny_args(dataset, out, max_steps=3, skip_eval="true", disable_tqdm="true")
                       + ["--bf16"]) == 0
    printed = capsys.readouterr().out
    lines = [ln for ln in printed.splitlines() if ln.startswith("precision:")]
    assert len(lines) == 1 and lines[0].startswith("precision: bf16")  # printed once
    rec = json.loads((out / "eval_summary.json").read_text())["train"]["precision"]
    assert rec["precision"] == "bf16" and rec["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    targs = json.loads((out / "training_args.json").read_text())
    assert targs["bf16"] is True and (targs["use_cpu"] is True or torch.cuda.is_available())
    flags = cpu_bf16_flags()
    assert rec["cpu_bf16_flags"] == flags and rec["bf16_hardware"] == bool(flags)
    if not flags and not torch.cuda.is_available():
        assert "warning: --bf16" in printed and "emulated" in printed
    losses = json.loads((out / "losses.json").read_text())
    assert all(np.isfinite(r["loss"]) for r in losses if "loss" in r)
    # auto (the default) on this machine: the rule applied to what the CPU reports
    out2 = tmp_path / "auto"
    assert recipe.main(tiny_args(dataset, out2, max_steps=1, skip_eval="true", disable_tqdm="true")) == 0
    rec = json.loads((out2 / "eval_summary.json").read_text())["train"]["precision"]
    assert rec["requested"] == "auto"
    if not flags and not torch.cuda.is_available():
        assert rec["precision"] == "fp32" and rec["probe"] is None and "no AMX/AVX512-BF16" in rec["reason"]
        assert json.loads((out2 / "training_args.json").read_text())["bf16"] is False


# --------------------------------------------------------------------------- parity
def _train_curve(dataset, out, seed, precision, steps):
    from transformers import set_seed

    from nfm.training import (build_model, build_trainer, init_sessions_from_data, parse_args,
                              prepare_training_data, select_sessions, subset_split)

    argv = tiny_args(dataset, out, max_steps=steps, seed=seed, objectives="mtm", precision=precision,
                     disable_tqdm="true", save_strategy="no", learning_rate="0.003", warmup_steps="0",
                     use_cpu="true")
    data_args, model_args, _, targs = parse_args(argv, default_config="synthetic")
    dd, meta, _ = prepare_training_data(data_args, targs)
    ids = select_sessions(meta, data_args)
    sub, ds = meta.subset(ids), subset_split(dd["train"], ids)
    set_seed(seed)
    model = build_model(sub, model_args)
    init_sessions_from_data(model, ds, sub)
    seen = []
    hook = model.nfm.layers[0].mlp.fc1.register_forward_hook(
        lambda mod, i, o: seen.append((torch.is_autocast_enabled("cpu"), o.dtype)) if model.training else None)
    trainer = build_trainer(model, targs, ds, sub)
    trainer.train()
    hook.remove()
    curve = [r["mtm_loss"] for r in trainer.state.log_history if "mtm_loss" in r]
    state_dtypes = {v.dtype for st in trainer.optimizer.state.values() for v in st.values()
                    if torch.is_tensor(v) and v.is_floating_point()}
    return dict(curve=np.array(curve), seen=set(seen), params={p.dtype for p in model.parameters()},
                opt=state_dtypes, own_forward=getattr(model.forward, "__func__", None) is type(model).forward, model=model, dd=dd, meta=sub)


def test_bf16_masked_loss_curve_stays_within_the_fp32_seed_spread(dataset, tmp_path):
    """3 seeds x (fp32, bf16 autocast), 40 steps of the tiny model on the tiny world (same seed: same init, batches
    and masks).  Tolerance from the seeds: over each window of 10 steps, a bf16 run may differ from its fp32 twin
    by at most half the fp32 seeds' standard deviation of that window's mean loss, and the bf16 seeds' mean must
    lie inside the fp32 seeds' range; validation masked NLL (float32 scoring) the same way."""
    steps, w = 40, 10  # on the CPU even where a GPU is present (_train_curve: --use_cpu): CPU autocast parity
    runs = {(p, s): _train_curve(dataset, tmp_path / f"{p}-{s}", s, p, steps) for s in (0, 1, 2)
            for p in ("fp32", "bf16")}
    f32 = np.stack([runs["fp32", s]["curve"] for s in range(3)])
    b16 = np.stack([runs["bf16", s]["curve"] for s in range(3)])
    assert f32.shape == b16.shape == (3, steps)
    assert np.isfinite(f32).all() and np.isfinite(b16).all()
    for s in range(3):  # bf16 really ran: autocast on in training, bf16 matmuls; float32 masters and state
        r = runs["bf16", s]
        assert r["seen"] == {(True, torch.bfloat16)} and runs["fp32", s]["seen"] == {(False, torch.float32)}
        assert r["params"] == {torch.float32} and r["opt"] == {torch.float32} and r["own_forward"]
    assert not np.array_equal(f32, b16)  # rounding differs: bf16 was not silently fp32
    fw, bw = f32.reshape(3, -1, w).mean(2), b16.reshape(3, -1, w).mean(2)
    spread = fw.std(0, ddof=1)  # the fp32 seeds' spread of each window's mean loss
    paired = np.abs(bw - fw)
    assert (paired <= 0.5 * spread).all(), f"paired |bf16 - fp32| {paired.max(0)} vs half seed sd {0.5 * spread}"
    mean_b = bw.mean(0)
    assert ((mean_b >= fw.min(0)) & (mean_b <= fw.max(0))).all()
    # evaluation of both in float32: validation masked NLL under one fixed neuron mask per session
    val = {k: _validation_nll(r) for k, r in runs.items()}
    vf = np.array([val["fp32", s] for s in range(3)])
    vb = np.array([val["bf16", s] for s in range(3)])
    assert np.isfinite(vb).all() and (np.abs(vb - vf) <= 0.5 * vf.std(ddof=1)).all(), (vf, vb)


@torch.no_grad()
def _validation_nll(run) -> float:
    from nfm.data.collate import NfmCollator
    from nfm.training import rows, subset_split

    model, dd, meta = run["model"], run["dd"], run["meta"]
    model.eval()
    ds = subset_split(dd["validation"], list(meta.sessions))
    collator = NfmCollator.for_config(meta, model.config)
    total = []
    for sid in meta.sessions:
        idx = [i for i, s in enumerate(ds["session_id"]) if s == sid]
        batch = collator(rows(ds, idx))
        out = model(**batch, mask_mode="neuron", generator=torch.Generator().manual_seed(0))
        total.append(float(out.mtm_loss))
    return float(np.mean(total))


# --------------------------------------------------------------------------- generation grammar under bf16
def grammar_violations(token_units, token_dts, n_units, n_dt: int, min_events: int, max_events: int) -> list[str]:
    """Every way generated tokens break the event grammar: dt classes in [0, n_dt) before EOS and PAD after it,
    non-decreasing dt within a window, units ascending (non-decreasing) within one dt class, units inside the
    trial's session (no padding unit), unit -1 after EOS, and min_events <= events <= max_events."""
    out = []
    B, K, L = token_units.shape
    for b in range(B):
        for k in range(K):
            u, d = token_units[b, k].tolist(), token_dts[b, k].tolist()
            n = sum(1 for x in d if x < n_dt)
            if not min_events <= n <= max_events:
                out.append(f"trial {b} window {k}: {n} events")
            if any(x < n_dt for x in d[n:]) or any(x >= 0 for x in u[n:]):
                out.append(f"trial {b} window {k}: tokens after the end")
            for i in range(n):
                if not 0 <= u[i] < int(n_units[b]):
                    out.append(f"trial {b} window {k} token {i}: unit {u[i]} outside 0..{int(n_units[b]) - 1}")
                if i and d[i] < d[i - 1]:
                    out.append(f"trial {b} window {k} token {i}: dt {d[i]} after {d[i - 1]}")
                if i and d[i] == d[i - 1] and u[i] < u[i - 1]:
                    out.append(f"trial {b} window {k} token {i}: unit {u[i]} after {u[i - 1]} in one dt class")
    return out


def test_generation_under_bf16_keeps_the_grammar_masks_exact():
    from nfm.models import NfmForSpikeGeneration

    torch.manual_seed(0)
    meta = make_meta()  # sA 10 units, sB 6: sB's trials carry 4 padding units the masks must exclude
    model = NfmForSpikeGeneration(tiny_config(meta)).eval()
    batch = make_batch(meta, ["sA", "sB", "sB", "sA"], seed=0, rate_hz=15.0)
    n_units = batch["unit_mask"].sum(1)
    n_dt = model.decoder.n_dt
    kw = dict(start_window=2, n_windows=3, min_events=2, max_events=12, temperature=3.0, top_p=1.0)
    outs = {}
    for precision in ("fp32", "bf16"):
        for use_cache in (True, False):  # the fused fast path and the reference path
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                g = model.generate(**batch, use_cache=use_cache, generator=torch.Generator().manual_seed(5), **kw)
            bad = grammar_violations(g.token_units, g.token_dts, n_units, n_dt, kw["min_events"], kw["max_events"])
            assert bad == [], (precision, use_cache, bad[:5])
            outs[precision, use_cache] = g
    g = outs["bf16", True]
    n_events = int(g.n_events.sum())
    assert n_events >= 2 * 4 * 3  # hot sampling: many tokens, each one a chance to break the grammar
    assert int((g.token_units[1:3] >= 0).sum()) > 0  # the 6-unit session generated too (padding units 6-9 masked)
    # the checker is able to fail: a swapped pair, a padding unit, a decreasing dt
    tu, td = g.token_units.clone(), g.token_dts.clone()
    tu[1, 0, 0] = 8  # a padding unit of an sB trial
    assert grammar_violations(tu, td, n_units, n_dt, 2, 12)
    tu, td = g.token_units.clone(), g.token_dts.clone()
    i = int(torch.nonzero(td[0, 0] < n_dt).max())
    td[0, 0, 0], td[0, 0, i] = td[0, 0, i].clone(), td[0, 0, 0].clone()
    if int(td[0, 0, 0]) != int(td[0, 0, i]):
        assert grammar_violations(tu, td, n_units, n_dt, 2, 12)


def test_accelerate_mixed_precision_counts_as_asking(monkeypatch):
    """``accelerate launch --mixed_precision bf16`` sets ACCELERATE_MIXED_PRECISION, which transformers trains in
    whatever --bf16 says: the choice and its record follow it."""
    import argparse

    from nfm.training.precision import resolve_from_namespace

    ns = argparse.Namespace(precision="auto", bf16=False, fp16=False, use_cpu=False, model_overrides=None,
                            preset="default", init_from=None)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")
    c = resolve_from_namespace(ns)
    assert c.precision == "bf16" and c.requested == "bf16" and c.training_arguments["bf16"] is True
    ns.precision = "fp32"
    with pytest.raises(UsageError, match="mixed_precision bf16"):
        resolve_from_namespace(ns)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    assert resolve_from_namespace(ns).precision == "fp32"


def test_a_resumed_run_keeps_its_checkpoints_precision(tmp_path):
    """--precision auto on --resume_from_checkpoint takes the checkpoint's precision (training_args.json), no new
    probe: on a CPU with AVX512-BF16 a probe under another load could pick the other precision and the resumed
    run would silently differ from the uninterrupted one."""
    import json
    import types

    from nfm.training.precision import resolve_from_namespace, resumed_precision

    out = tmp_path / "run"
    for step, bf16 in ((3, False), (6, True)):
        (out / f"checkpoint-{step}").mkdir(parents=True)
        (out / f"checkpoint-{step}" / "training_args.json").write_text(json.dumps({"bf16": bf16}))
    ns = lambda **kw: types.SimpleNamespace(precision="auto", output_dir=str(out), bf16=False, fp16=False,  # noqa
                                            use_cpu=False, **kw)
    assert resumed_precision(ns(resume_from_checkpoint="last")) == "bf16"  # the newest, checkpoint-6
    assert resumed_precision(ns(resume_from_checkpoint=str(out / "checkpoint-3"))) == "fp32"
    assert resumed_precision(ns(resume_from_checkpoint=None)) is None
    assert resumed_precision(ns(resume_from_checkpoint=str(tmp_path / "missing"))) is None
    choice = resolve_from_namespace(ns(resume_from_checkpoint=str(out / "checkpoint-3")))
    assert choice.precision == "fp32" and "resumed run" in choice.reason and choice.probe is None
    choice = resolve_from_namespace(ns(resume_from_checkpoint="last"))
    assert choice.precision == "bf16" and "resumed run" in choice.reason
