"""Speed-ups are output-equivalent: the fused generation path samples the reference path's tokens, the bucketed
event decoder gives the unbucketed losses and logits, the column-wise collator gives the row-wise batch, and
the MtM forward compiles without graph breaks."""
import pytest
import torch

from models_fixtures import make_batch, make_meta, setup_module_common, tiny_config
from nfm.models import NfmForSpikeGeneration
from nfm.models.generation_fast_paths import FastWindowDecoder


def setup_module():
    setup_module_common()


@pytest.fixture(scope="module")
def gen_model():
    torch.manual_seed(0)
    meta = make_meta()
    model = NfmForSpikeGeneration(tiny_config(meta, decoder_layers=2)).eval()
    for p in model.decoder.parameters():  # move the untrained decoder away from near-ties of its init
        p.data.add_(0.05 * torch.randn_like(p))
    batch = make_batch(meta, ["sA", "sB", "sA"], seed=0, rate_hz=15.0)
    return model, batch


def _generate(model, batch, use_cache, seed, **kw):
    return model.generate(**batch, use_cache=use_cache, generator=torch.Generator().manual_seed(seed), **kw)


@pytest.mark.parametrize("sampling", [dict(do_sample=False), dict(do_sample=True, top_p=0.9),
                                      dict(do_sample=True, top_k=4, temperature=0.7), dict(do_sample=True)])
def test_fast_generation_samples_the_reference_tokens(gen_model, sampling):
    model, batch = gen_model
    kw = dict(start_window=2, n_windows=3, min_events=2, max_events=12, **sampling)
    fast = _generate(model, batch, True, 11, **kw)
    ref = _generate(model, batch, False, 11, **kw)
    assert fast.n_events.sum() > 10
    assert torch.equal(fast.token_units, ref.token_units) and torch.equal(fast.token_dts, ref.token_dts)
    assert torch.equal(fast.spikes, ref.spikes)
    if sampling["do_sample"]:  # the generator matters: another seed gives other tokens
        other = _generate(model, batch, True, 12, **kw)
        assert not torch.equal(other.token_units, fast.token_units)


def test_fast_step_matches_the_decoder_layers(gen_model):
    """One window's per-token states and logits of the fused step equal the decoder run on the whole prefix."""
    model, batch = gen_model
    dec = model.decoder
    with torch.no_grad():
        tables = model.nfm.session_tables(batch["session_ids"], batch["unit_mask"], batch["unit_region"])
        B, N, H = tables.unit_embed.shape
        M = 9
        memory = torch.randn(B, M, H)
        mem_mask = torch.rand(B, M) > 0.3
        mem_mask[:, 0] = True
        unit_tok = dec.unit_tokens(tables)
        L = 7
        g = torch.Generator().manual_seed(0)
        units = torch.stack([torch.randint(0, int(tables.unit_mask[b].sum()), (L,), generator=g) for b in range(B)])
        dts = torch.randint(0, dec.n_dt, (B, L), generator=g).sort(1).values
        units[:, 0], dts[:, 0] = -1, dec.n_dt + 1  # SOS
        fast = FastWindowDecoder(dec, memory, mem_mask, unit_tok, tables, L + 1)
        ref, _, _, _ = dec.run(dec.embed_tokens(units.unsqueeze(1), dts.unsqueeze(1), unit_tok)[:, 0], memory,
                               mem_mask)
        nxt_dt = torch.cat([dts[:, 1:], torch.zeros(B, 1, dtype=torch.long)], 1)
        ref_dt = dec.dt_logits(ref, dts)
        ref_id = dec.id_logits(ref.unsqueeze(1), nxt_dt.unsqueeze(1), units.unsqueeze(1), dts.unsqueeze(1),
                               tables)[:, 0]
        for s in range(L):
            state = fast.step(s, units[:, s], dts[:, s])
            torch.testing.assert_close(state, ref[:, s], rtol=1e-5, atol=1e-5)
            for a, b in ((fast.dt_logits(state, dts[:, s]), ref_dt[:, s]),
                         (fast.id_logits(state, nxt_dt[:, s], units[:, s], dts[:, s]), ref_id[:, s])):
                assert torch.equal(torch.isinf(a), torch.isinf(b))
                torch.testing.assert_close(a.nan_to_num(0, 0, 0), b.nan_to_num(0, 0, 0), rtol=1e-5, atol=1e-5)


def test_fast_generation_through_lora_adapters(gen_model):
    """Wrapped projections (peft LoRA) are folded, not bypassed: the adapted model's fast path = its reference."""
    from peft import LoraConfig, get_peft_model  # installed by the README (nfm[all]): no skip

    model, batch = gen_model
    lora = NfmForSpikeGeneration(model.config)
    lora.load_state_dict(model.state_dict())
    peft_model = get_peft_model(lora, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj",
                                                                                       "o_proj", "fc1", "fc2"]))
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.2)
    peft_model.eval()
    kw = dict(start_window=1, n_windows=2, min_events=3, max_events=10, do_sample=True, top_p=0.95)
    fast = _generate(peft_model, batch, True, 5, **kw)
    ref = _generate(peft_model, batch, False, 5, **kw)
    plain = _generate(model, batch, True, 5, **kw)
    assert torch.equal(fast.token_units, ref.token_units) and torch.equal(fast.token_dts, ref.token_dts)
    assert not torch.equal(fast.token_units, plain.token_units)  # the adapters are in the fast path


@pytest.mark.parametrize("n_buckets", [2, 4, 7])
def test_bucketed_decoder_equals_the_padded_pass(n_buckets):
    """Length buckets + per-bucket memory trimming: the same losses, logits at target positions and gradients as
    every (trial, window) sequence padded to the longest one."""
    from nfm.models import NfmForPretraining
    from nfm.models.modeling_nfm_generation import spike_generation

    torch.manual_seed(0)
    meta = make_meta()
    model = NfmForPretraining(tiny_config(meta, gen_windows_per_step=6, gen_past_events=0.08)).train()
    batch = make_batch(meta, ["sA", "sB", "sA", "sA"], seed=4, rate_hz=40.0)
    keys = ("unit_mask", "unit_region", "session_ids", "event_times", "event_units", "event_mask", "stimulus",
            "behavior")
    runs = []
    for nb in (1, n_buckets):
        torch.manual_seed(1)  # the same windows drawn
        out = spike_generation(model.nfm, model.decoder, batch["spikes"], length_buckets=nb,
                               **{k: batch[k] for k in keys})
        model.zero_grad()
        out.loss.backward()
        runs.append((out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (a, ga), (b, gb) = runs
    lens = a.target_mask.sum(-1)
    assert lens.min() < lens.max() - 3  # sequences of different lengths: buckets differ from the padded pass
    for name in ("loss", "dt_loss", "id_loss", "contrastive_loss"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=1e-5, atol=1e-6)
    v = a.target_mask
    for name in ("dt_logits", "id_logits"):
        x, y = getattr(a, name)[v], getattr(b, name)[v]
        assert torch.equal(torch.isinf(x), torch.isinf(y))
        torch.testing.assert_close(x.nan_to_num(0, 0, 0), y.nan_to_num(0, 0, 0), rtol=1e-5, atol=1e-5)
    assert ga.keys() == gb.keys()
    for n in ga:
        torch.testing.assert_close(ga[n], gb[n], rtol=1e-4, atol=1e-6, msg=n)


MTM_MODES = ("neuron", "causal", "temporal", "intra_region", "inter_region", "random_token")


@pytest.mark.slow
def test_mtm_forward_compiles_without_graph_breaks():
    """``torch.compile(fullgraph=True)`` traces the whole MtM forward and backward (session tables, every mask
    mode, read-out, loss): no graph break, the same loss and gradients as eager; value checks stay available
    eagerly through ``validate``."""
    import torch._dynamo

    from nfm.models import NfmForMaskedModeling
    from nfm.models.masking import sample_mask

    torch.manual_seed(0)
    meta = make_meta()
    model = NfmForMaskedModeling(tiny_config(meta, mask_modes=list(MTM_MODES))).train()
    batch = make_batch(meta, ["sA", "sA", "sA"], seed=0)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)  # fullgraph: any break raises
    for mode in MTM_MODES:
        assert compiled(**batch, mask_mode=mode).loss.isfinite()
    mask = sample_mask("intra_region", batch["unit_mask"], batch["unit_region"], 20, model.config,
                       torch.Generator().manual_seed(0))
    grads = []
    for m in (model, compiled):
        model.zero_grad()
        torch.manual_seed(3)  # dropout
        loss = m(**batch, mask=mask).loss
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-5, atol=1e-6)
    for a, b in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    bad = dict(batch, unit_region=batch["unit_region"] + 99)
    with pytest.raises(ValueError, match="unit_region"):
        model(**bad, mask_mode="neuron")  # eager forward still checks
    with pytest.raises(ValueError, match="unit_region"):
        model.validate(**bad)  # the check a compiled run does outside its graph
    torch._dynamo.reset()


# --------------------------------------------------------------------------- collator: Arrow columns == rows
def _reference_collate(c, rows):
    """The row-by-row collator as it was before the Arrow path (main at 856827b), frozen here as the reference."""
    import numpy as np

    from nfm.data.binning import bin_index, mean_bins

    B, T = len(rows), c.n_bins
    sids = [r["session_id"] for r in rows]
    n_units = np.array([c.n_units[s] for s in sids])
    N = int(n_units.max())
    unit_mask = np.arange(N)[None, :] < n_units[:, None]
    unit_region = np.zeros((B, N), dtype=np.int64)
    for b, s in enumerate(sids):
        unit_region[b, : n_units[b]] = c.session_regions[s]
    batch = {"session_ids": sids, "unit_mask": torch.from_numpy(unit_mask), "unit_region": torch.from_numpy(unit_region)}
    if c.meta.modality == "spikes":
        times = [np.asarray(r["spike_times"], dtype=np.float64) for r in rows]
        units = [np.asarray(r["spike_units"], dtype=np.int64) for r in rows]
        lengths = np.array([len(t) for t in times])
        E = int(lengths.max())
        t_all, u_all = np.concatenate(times), np.concatenate(units)
        row_of = np.repeat(np.arange(B), lengths)
        flat = (row_of * T + bin_index(t_all, c.bin_size, T, c.window[0], what="spike")) * N + u_all
        counts = np.bincount(flat, minlength=B * T * N).reshape(B, T, N).astype(np.float32)
        pos = np.arange(len(t_all)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        ev_t, ev_u, ev_m = np.zeros((B, E), np.float32), np.zeros((B, E), np.int64), np.zeros((B, E), bool)
        ev_t[row_of, pos] = t_all - c.window[0]
        ev_u[row_of, pos] = u_all
        ev_m[row_of, pos] = True
        batch.update(spikes=torch.from_numpy(counts), event_times=torch.from_numpy(ev_t),
                     event_units=torch.from_numpy(ev_u), event_mask=torch.from_numpy(ev_m))
    else:
        act = np.zeros((B, T * c.group, N), dtype=np.float32)
        for b, r in enumerate(rows):
            a = np.asarray(r["activity"], dtype=np.float32)
            act[b, :, : a.shape[1]] = a
        if c.group > 1:
            g = act.reshape(B, T, c.group, N)
            n = np.isfinite(g).sum(2)
            act = np.divide(np.nansum(g, 2), n, out=np.full((B, T, N), np.nan, np.float32), where=n > 0)
        valid = np.isfinite(act)
        act[~valid] = 0.0
        batch.update(spikes=torch.from_numpy(act), valid_mask=torch.from_numpy(valid),
                     event_times=torch.zeros((B, 0)), event_units=torch.zeros((B, 0), dtype=torch.long),
                     event_mask=torch.zeros((B, 0), dtype=torch.bool))

    def per_bin(prefix, names, fill):
        out = np.full((B, T * c.group, len(names)), fill, dtype=np.float32)
        for k, name in enumerate(names):
            for b, r in enumerate(rows):
                v = r.get(prefix + c.modality_map.get(name, name))
                if v is not None:
                    out[b, :, k] = v
        return mean_bins(out, c.group)

    batch["behavior"] = torch.from_numpy(per_bin("behavior_", c.behavior_names, np.nan))
    batch["stimulus"] = torch.from_numpy(per_bin("stimulus_", c.stimulus_names, np.nan))
    labels = np.array([[r.get(f"trial_{n}", np.nan) for n in c.trial_label_names] for r in rows], dtype=np.float32)
    batch["trial_labels"] = torch.from_numpy(labels.reshape(B, len(c.trial_label_names)))
    batch["trial_id"] = torch.tensor([int(r["trial_id"]) for r in rows], dtype=torch.long)
    batch["bin_size"] = c.bin_size
    return batch


def _assert_same_batch(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
            assert torch.equal(a[k].nan_to_num(-7.0), b[k].nan_to_num(-7.0)), k  # NaN where NaN, equal elsewhere
        else:
            assert a[k] == b[k], k


@pytest.fixture(scope="module")
def datasets_for_collation():
    from nfm.data.hf import build_dataset
    from nfm.data.sources import synthetic

    spikes = build_dataset(synthetic.make_ibl_like_world(n_animals=3, n_trials=30, seed=3))
    calcium = build_dataset(synthetic.make_calcium_world(n_animals=2, n_cells=10, n_trials=20, seed=2),
                            bin_size=0.1)
    return {"spikes": spikes, "calcium": calcium}


@pytest.mark.parametrize("kind,bin_size", [("spikes", None), ("spikes", 0.04), ("calcium", None), ("calcium", 0.2)])
def test_arrow_collation_equals_the_row_collator(datasets_for_collation, kind, bin_size):
    """Spikes, events, behaviour, stimulus, labels, unit masks/regions and bin sizes: the Arrow-column path
    (a table from ArrowRows, or one-row tables) gives the batch of the row-by-row collator."""
    from nfm.data.collate import ArrowRows, NfmCollator

    dd, meta = datasets_for_collation[kind]
    assert meta.behavior_names or kind == "calcium"
    ds = dd["train"].select(list(range(len(dd["train"]) - 1, -1, -3)))  # an indices mapping, mixed sessions
    collator = NfmCollator(meta, bin_size=bin_size)
    idx = list(range(0, len(ds), 2))[:12]
    py_rows = [ds[i] for i in idx]
    assert len({r["session_id"] for r in py_rows}) > 1  # units padded across sessions
    ref = _reference_collate(collator, py_rows)
    table = ArrowRows(ds).__getitems__(idx)
    _assert_same_batch(ref, collator(table))
    _assert_same_batch(ref, collator(py_rows))
    _assert_same_batch(ref, collator([ArrowRows(ds)[i] for i in idx]))
    if kind == "spikes":
        assert ref["event_mask"].sum() > 100 and torch.isfinite(ref["behavior"]).any()
        assert ref["spikes"].shape[1] == (50 if bin_size == 0.04 else 100)


def test_length_buckets_minimise_the_padded_area():
    """The bucket split is the exact optimum of sum(size x longest) over contiguous splits (brute force)."""
    import itertools

    import numpy as np

    from nfm.models.generation_fast_paths import length_buckets

    rng = np.random.default_rng(0)
    for _ in range(30):
        lens = np.sort(rng.integers(1, 60, rng.integers(1, 9)))
        k = int(rng.integers(1, 5))

        def area(ends):
            starts = [0] + ends[:-1]
            return sum((e - s) * lens[e - 1] for s, e in zip(starts, ends))

        best = min(area(list(c) + [len(lens)]) for r in range(min(k, len(lens)))
                   for c in itertools.combinations(range(1, len(lens)), r))
        ends = length_buckets(lens.tolist(), k)
        assert ends[-1] == len(lens) and len(ends) <= k and ends == sorted(set(ends))
        assert area(ends) == best
