"""Run the anchors' own released code next to nfm, for speed ratios measured in one process.

The anchors are MtM (Zhang et al. 2024; ``src/models/ndt1.py::NDT1`` with ``src/models/masker.py::Masker``) and
Neuroformer (Antoniades et al. 2024; ``neuroformer/model_neuroformer.py::Neuroformer``, sampling loop
``neuroformer/simulation.py::generate_spikes``).  Their code is never copied here: each builder imports it at run
time from a checkout given by path (see ``benchmarks/ANCHORS.md``).  nfm is used through its public API only
(``NfmConfig``, ``NfmForMaskedModeling``, ``NfmForPretraining``, ``model(**batch)``, ``model.generate(...)``).

Every builder returns a :class:`Contender`: a zero-argument ``run`` doing one unit of work (one training step, or
one generation call) plus its parameter count, so a benchmark can alternate contenders round by round.  ``run``
returns the number of generated events for generation contenders and ``None`` otherwise.

Shapes and units: ``B`` trials, ``T`` bins of 20 ms (MtM, nfm), ``N`` units.  Neuroformer windows are given in
seconds (current 0.05 s, past 0.15 s, dt resolution 0.01 s, its published setting) and hold at most
``block - 2`` spike tokens (their ``get_interval`` keeps the last ``block - 2`` events, plus SOS and EOS).

Faithfulness notes (also in ANCHORS.md):

* MtM step = ``src/trainer/base.py::Trainer.train_epoch`` for one batch: one mask scheme drawn per batch from
  ``['neuron', 'causal', 'intra-region', 'inter-region']`` (ratio 0.6 for causal), ``loss.backward()``,
  ``AdamW(lr=1e-4, weight_decay=0.01, eps=1e-8)`` step, ``zero_grad``.  The OneCycle LR scheduler step is left out
  (one scalar update).  The masker writes into its input tensor, so each step gets a fresh copy of the batch, as a
  data loader would give it.
* Neuroformer step = ``neuroformer/trainer.py::Trainer.run_epoch`` for one batch: ``model(x, y)``, sum of the
  mean losses, ``zero_grad``, ``backward``, ``clip_grad_norm_(1.0)``, ``configure_optimizers`` AdamW step (the
  settings of ``neuroformer_train.py``: lr 1e-4, weight decay 1.0 on matmul weights, betas (0.9, 0.95)).
* Neuroformer generation calls ``generate_spikes`` itself on a dataset of windows built by their ``NFDataloader``
  (batch 1, one full ``model(x, y)`` per token).  An untrained model samples the special tokens (SOS/EOS/PAD) early
  and SOS would crash their loop, so the builder sets *parameter values* (not code) that give those tokens ~0
  probability: the final block's LayerNorm bias is 1 and the special rows of the heads are shifted by -1, so their
  logits are about ``-n_embd``.  Every window then holds ``block - 1`` events, like nfm's ``min_events``.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import random
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

MTM_SCHEMES = ["neuron", "causal", "intra-region", "inter-region"]  # MtM trainer, masker mode "all"
NF_WINDOW, NF_WINDOW_PREV, NF_DT = 0.05, 0.15, 0.01  # Neuroformer's published windows [s]


@dataclass
class Contender:
    """One side of a comparison: ``run()`` does one unit of work; ``n_params`` counts the model's parameters."""
    name: str
    run: Callable[[], int | None]
    n_params: int
    info: dict = field(default_factory=dict)


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------- importing the anchors
@contextlib.contextmanager
def _anchor_imports(cwd: Path, paths: list[Path]):
    """Run with ``cwd`` as working directory and ``paths`` first on ``sys.path`` (the anchors use bare imports
    such as ``from models.masker import Masker`` and open files relative to the working directory)."""
    old_cwd, old_path = os.getcwd(), list(sys.path)
    os.chdir(cwd)
    sys.path[:0] = [str(p) for p in paths]
    try:
        yield
    finally:
        os.chdir(old_cwd)
        sys.path[:] = old_path


@contextlib.contextmanager
def _stubs(spec: dict[str, dict]):
    """While importing an anchor, put an empty module in ``sys.modules`` for each name of ``spec`` (with the given
    attributes) that cannot be imported; removed again afterwards, so other libraries still see them missing.
    Only for imports an anchor makes at import time but the timed code never calls (torchvision's r3d_18 video
    backbone and image transforms, timm's ViT frame encoder)."""
    missing = {n.split(".")[0] for n in spec if n.split(".")[0] not in sys.modules
               and importlib.util.find_spec(n.split(".")[0]) is None}
    added = []
    for name, attrs in spec.items():
        if name.split(".")[0] not in missing:
            continue
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            sub = ".".join(parts[:i])
            if sub not in sys.modules:
                sys.modules[sub] = types.ModuleType(sub)
                added.append(sub)
                if i > 1:
                    setattr(sys.modules[".".join(parts[:i - 1])], parts[i - 1], sys.modules[sub])
        for k, v in attrs.items():
            setattr(sys.modules[name], k, v)
    try:
        yield
    finally:
        for sub in added:
            sys.modules.pop(sub, None)


def _unavailable(what):
    def f(*a, **k):
        raise RuntimeError(f"{what} is stubbed by benchmarks/anchors.py (not installed, not used by the benchmark)")
    return f


def _clear_modules(names):
    """Forget bare-named anchor modules (``utils``, ``models``...) so the other anchor's same names can load."""
    for n in list(sys.modules):
        if n.split(".")[0] in names:
            del sys.modules[n]


# --------------------------------------------------------------------------- data
def poisson_batch(batch: int, n_bins: int, n_units: int, n_regions: int = 5, seed: int = 0):
    """Fixed random data: counts (B, T, N) float32 ~ Poisson(rate_n) with per-unit rates of 0.05-1 spikes/bin,
    and region names (N,) assigning units to ``n_regions`` contiguous regions."""
    g = torch.Generator().manual_seed(seed)
    rates = 0.05 + 0.95 * torch.rand(n_units, generator=g)
    spikes = torch.poisson(rates.expand(batch, n_bins, n_units).contiguous(), generator=g)
    regions = np.array([f"R{i * n_regions // n_units}" for i in range(n_units)])
    return spikes, regions


# --------------------------------------------------------------------------- MtM (NDT1)
def mtm_ndt1_step(repo, hidden=128, layers=4, heads=4, mlp=512, n_units=69, n_bins=100, batch=16, seed=0,
                  stitching=False) -> Contender:
    """One MtM training step of the released NDT1 (masker + prompt token + session token) on fixed Poisson data
    (B=batch, T=n_bins, N=n_units).  Config: ``src/configs/ndt1.yaml`` updated by ``ndt1_prompting.yaml``
    (masker mode "all", prompt token) with ``use_session: true`` and the given transformer size.  With
    ``stitching`` the read-in is their per-session stitcher (``ndt1_stitching_prompting.yaml``: N -> 668 -> 1336
    -> H) instead of N -> 2N -> H."""
    repo = Path(repo).resolve()
    _clear_modules({"models", "utils", "loader", "trainer"})
    with _anchor_imports(repo, [repo / "src"]):
        from models.ndt1 import NDT1  # reads data/target_eids.txt relative to the working directory
        from utils.config_utils import update_config
        cfg = update_config("src/configs/ndt1.yaml", "src/configs/ndt1_stitching_prompting.yaml" if stitching
                            else "src/configs/ndt1_prompting.yaml")
        enc = cfg["encoder"]
        enc["embedder"].update(use_prompt=True, use_session=True, max_F=n_bins)
        enc["transformer"].update(hidden_size=hidden, n_layers=layers, n_heads=heads, inter_size=mlp)
        torch.manual_seed(seed)
        model = NDT1(cfg, method_name="ssl", use_lograte=True, loss="poisson_nll", output_size=2, clf=False,
                     reg=False, num_neurons=[n_units])  # model_kwargs of src/configs/ssl_sessions_trainer.yaml
        eid = model.encoder.embedder.eid_lookup[0]
    spikes, regions = poisson_batch(batch, n_bins, n_units, seed=seed)
    neuron_regions = np.broadcast_to(regions, (batch, n_units))  # (B, N) region names, as their loader gives
    time_mask = torch.ones(batch, n_bins, dtype=torch.int64)
    timestamps = torch.arange(n_bins).expand(batch, n_bins)
    space_mask = torch.ones(batch, n_units, dtype=torch.int64)  # unused by NDT1, passed as their trainer does
    spacestamps = torch.arange(n_units).expand(batch, n_units)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, eps=1e-8)
    base_ratio = model.encoder.masker.ratio
    rng = random.Random(seed)
    model.train()

    def run():  # src/trainer/base.py::Trainer.train_epoch, one batch
        mode = rng.sample(MTM_SCHEMES, 1)[0]
        model.encoder.masker.ratio = 0.6 if mode == "causal" else base_ratio
        out = model(spikes.clone(), time_attn_mask=time_mask, space_attn_mask=space_mask,
                    spikes_timestamps=timestamps, spikes_spacestamps=spacestamps, targets=None,
                    neuron_regions=neuron_regions, masking_mode=mode, spike_augmentation=False,
                    num_neuron=n_units, eid=eid)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        out.loss.item()

    return Contender(f"MtM NDT1 H{hidden}x{layers}", run, count_params(model),
                     dict(stitching=stitching, heads=heads, mlp=mlp))


def nfm_mtm_step(hidden=128, layers=4, heads=4, mlp=512, n_units=69, n_bins=100, batch=16, seed=0,
                 dropout=0.4) -> Contender:
    """One nfm MtM training step (``NfmForMaskedModeling``, one mask mode per batch drawn from MtM's four, prompt
    and session token) on the same Poisson data as :func:`mtm_ndt1_step`; AdamW(1e-4, weight decay 0.01)."""
    from nfm.models import NfmConfig, NfmForMaskedModeling

    spikes, regions = poisson_batch(batch, n_bins, n_units, seed=seed)
    vocab = ["unknown"] + sorted(set(regions))
    cfg = NfmConfig(session_n_units={"s0": n_units}, region_vocab=vocab, n_bins=n_bins, hidden_size=hidden,
                    num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=mlp,
                    hidden_dropout=dropout, objectives=["mtm"])
    torch.manual_seed(seed)
    model = NfmForMaskedModeling(cfg)
    index = {r: i for i, r in enumerate(vocab)}
    batch_dict = {  # the keys of nfm.data.collate.NfmCollator that MtM reads
        "spikes": spikes, "unit_mask": torch.ones(batch, n_units, dtype=torch.bool),
        "unit_region": torch.tensor([index[r] for r in regions]).expand(batch, n_units).contiguous(),
        "session_ids": ["s0"] * batch,
    }
    return Contender(f"nfm MtM H{hidden}x{layers}", _train_step(model, batch_dict), count_params(model))


def _train_step(model, batch_dict, lr=1e-4, weight_decay=0.01):
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)

    def run():
        model.train()
        out = model(**batch_dict)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        out.loss.item()
    return run


# --------------------------------------------------------------------------- nfm joint model and its data
def synthetic_session_batch(n_trials=16, seed=0):
    """A collated nfm batch of ``n_trials`` trials of the first session of the default synthetic world
    (``make_ibl_like_world(n_animals=4, n_trials=40, seed)``: 100 bins of 20 ms, 69 units) and the dataset meta."""
    from nfm.data.collate import NfmCollator
    from nfm.data.hf import build_dataset
    from nfm.data.sources.synthetic import make_ibl_like_world

    dd, meta = build_dataset(make_ibl_like_world(n_animals=4, n_trials=40, seed=seed))
    train = dd["train"]
    sids = train["session_id"]
    rows = [train[i] for i in range(len(sids)) if sids[i] == sids[0]][:n_trials]
    return NfmCollator(meta)(rows), meta


def nfm_joint_model(meta, seed=0, **overrides):
    """``NfmForPretraining`` (MtM + generation + contrastive) with the default config of the dataset."""
    from nfm.models import NfmConfig, NfmForPretraining

    torch.manual_seed(seed)
    return NfmForPretraining(NfmConfig.from_dataset_meta(meta, **overrides))


def nfm_joint_step(model, batch) -> Contender:
    """One joint pretraining step of nfm (``model(**batch)``, backward, AdamW(1e-4, wd 0.01))."""
    cfg = model.config
    return Contender("nfm joint step", _train_step(model, batch), count_params(model),
                     dict(windows_per_trial=cfg.gen_windows_per_step, gen_window_s=cfg.gen_window))


def nfm_generate(model, batch, n_trials=1, n_events=256, start_window=10, seed=0) -> Contender:
    """Generate one window of exactly ``n_events`` events for each of the first ``n_trials`` trials, in one
    batched ``model.generate`` call (KV cache, top-p 0.95, temperature 1)."""
    gb = {k: (v[:n_trials] if isinstance(v, (torch.Tensor, list)) else v) for k, v in batch.items()}
    g = torch.Generator().manual_seed(seed)

    def run():
        model.eval()
        out = model.generate(**gb, start_window=start_window, n_windows=1, min_events=n_events,
                             max_events=n_events, do_sample=True, top_p=0.95, temperature=1.0, use_cache=True,
                             generator=g)
        return int(out.n_events.sum())
    return Contender(f"nfm generate x{n_trials}", run, count_params(model))


# --------------------------------------------------------------------------- Neuroformer
_NF_MODULES: dict = {}


def _import_neuroformer(repo: Path):
    """Import Neuroformer's modules (model, data, sampling).  Stubbed imports, none used by the timed code:
    ``torchvision`` (r3d_18 video backbone, image transforms) and ``timm`` (ViT frame encoder)."""
    if str(repo) in _NF_MODULES:
        return _NF_MODULES[str(repo)]
    import torchmetrics  # noqa: F401  (their dependency; imported before the stubs, which it probes for)

    stubs = {"torchvision.models.video": {"r3d_18": _unavailable("torchvision r3d_18")},
             "torchvision.transforms": {}, "timm": {"create_model": _unavailable("timm.create_model")}}
    _clear_modules({"models", "utils", "modules", "simulation", "data_utils", "model_neuroformer", "neuroformer"})
    with _anchor_imports(repo, [repo, repo / "neuroformer"]), _stubs(stubs), \
            contextlib.redirect_stdout(io.StringIO()):
        import model_neuroformer
        import simulation
        import data_utils
        import utils
    _NF_MODULES[str(repo)] = model_neuroformer, simulation, data_utils, utils
    return _NF_MODULES[str(repo)]


def events_to_bins(batch, n_trials, bin_size=NF_DT):
    """nfm batch events -> {trial (1-based, as their loader wants): counts (N, n_bins at ``bin_size`` s)}."""
    times, units, mask = batch["event_times"], batch["event_units"], batch["event_mask"]
    N = batch["spikes"].shape[2]
    duration = batch["spikes"].shape[1] * 0.02
    nb = int(round(duration / bin_size))
    out = {}
    for b in range(n_trials):
        t, u = times[b][mask[b]].numpy(), units[b][mask[b]].numpy()
        idx = np.clip((t / bin_size + 1e-6).astype(int), 0, nb - 1)
        counts = np.zeros((N, nb))
        np.add.at(counts, (u, idx), 1)
        out[b + 1] = counts
    return out, N, duration


def neuroformer_windows(batch, n_trials=16, windows_per_trial=10, ends=None):
    """Windows of ``n_trials`` trials of an nfm batch, in the form of their ``load_V1AL``: spike counts per trial at
    0.01 s, an ``intervals`` array of rows ``(window end [s], trial)`` (current window = the 0.05 s before the end,
    past = the 0.15 s before that) and the block sizes that hold the most events of any current / past window plus
    SOS and EOS.  ``ends`` [s] defaults to ``windows_per_trial`` ends evenly spaced from 0.2 s to the trial end."""
    spikes, N, duration = events_to_bins(batch, n_trials)
    if ends is None:
        ends = np.round(np.linspace(0.2, duration, windows_per_trial) / NF_WINDOW) * NF_WINDOW
    intervals = np.array([[e, tr] for tr in spikes for e in ends])

    def count(tr, t0, t1):  # events of trial tr in [t0, t1) s
        return spikes[int(tr)][:, round(t0 / NF_DT):round(t1 / NF_DT)].sum()
    cur = max(count(tr, e - NF_WINDOW, e) for e, tr in intervals)
    prev = max(count(tr, e - NF_WINDOW - NF_WINDOW_PREV, e - NF_WINDOW) for e, tr in intervals)
    return spikes, N, intervals, (int(cur) + 2, int(prev) + 2)


@dataclass
class NeuroformerSetup:
    """A built Neuroformer (its config/tokenizer/classes) and an ``NFDataloader`` over chosen windows."""
    model: torch.nn.Module
    config: object
    tokenizer: object
    dataset: object
    mods: tuple


def neuroformer_setup(repo, batch, n_trials=16, windows_per_trial=10, ends=None, n_embd=128, n_head=4,
                      layers_state=2, layers_history=2, block=None, block_prev=None, seed=0) -> NeuroformerSetup:
    """Build the released Neuroformer and their ``NFDataloader`` on the events of ``batch``.

    Config: ``configs/V1AL/mconf.yaml`` with no stimulus (``layers.stimulus = 0``, ``vit_encoder`` off), no
    contrastive loss, the given width/heads, ``layers.state`` self-attention blocks (used twice by their code:
    feature encoder and final causal blocks) and ``layers.state_history`` cross-attention blocks to the past
    window; ID blocks of ``block`` (current window) and ``block_prev`` (past window) tokens, by default fitted to
    the windows (see :func:`neuroformer_windows`, which also says which windows)."""
    repo = Path(repo).resolve()
    nf, sim, du, ut = _import_neuroformer(repo)
    spikes, N, intervals, fitted = neuroformer_windows(batch, n_trials, windows_per_trial, ends)
    block, block_prev = block or fitted[0], block_prev or fitted[1]
    with contextlib.redirect_stdout(io.StringIO()):
        config = ut.load_config(str(repo / "configs/V1AL/mconf.yaml"))
    config.n_embd, config.n_head = n_embd, n_head
    config.block_size.id, config.block_size.prev_id = block, block_prev
    config.layers.state, config.layers.state_history, config.layers.stimulus = layers_state, layers_history, 0
    config.contrastive.contrastive = False
    config.vit_encoder = False  # no frame encoder blocks (their FeatureEncoder needs frames when it has them)
    config.window.curr, config.window.prev, config.resolution.dt = NF_WINDOW, NF_WINDOW_PREV, NF_DT

    max_window = max(NF_WINDOW, NF_WINDOW_PREV)  # as configure_token_types in neuroformer_train.py
    n_dt = [du.round_n(x, NF_DT) for x in np.arange(0, max_window + NF_DT, NF_DT)]
    spikes_dict = {"ID": spikes, "Frames": None, "Interval": intervals, "dt": NF_DT, "id_block_size": block,
                   "prev_id_block_size": block_prev, "frame_block_size": 0, "window": NF_WINDOW,
                   "window_prev": NF_WINDOW_PREV, "frame_window": 0.2}
    with contextlib.redirect_stdout(io.StringIO()):
        tokenizer = du.Tokenizer({"ID": {"tokens": list(range(N))}, "dt": {"tokens": n_dt, "resolution": NF_DT}})
        config.id_vocab_size = tokenizer.ID_vocab_size
        dataset = du.NFDataloader(spikes_dict, tokenizer, config, dataset="V1AL", frames=None,
                                  intervals=intervals, modalities=None)
        torch.manual_seed(seed)
        model = nf.Neuroformer(config, tokenizer)
    return NeuroformerSetup(model, config, tokenizer, dataset, (nf, sim, du, ut))


def neuroformer_width_for(repo, target_params, batch, n_head=4, **kw) -> int:
    """The Neuroformer width (a multiple of 2 * n_head) whose total parameter count is closest to
    ``target_params``; ``kw`` as :func:`neuroformer_setup` (pass the blocks: they hold parameters)."""
    best = None
    for d in range(8 * n_head, 1025, 2 * n_head):
        n = count_params(neuroformer_setup(repo, batch, n_embd=d, n_head=n_head, **kw).model)
        if best is None or abs(n - target_params) < abs(best[1] - target_params):
            best = (d, n)
        if n > target_params:
            break
    return best[0]


def neuroformer_train_step(repo, batch, n_trials=16, windows_per_trial=10, **kw) -> Contender:
    """One Neuroformer training step on ``n_trials * windows_per_trial`` windows in one batch (their
    ``neuroformer_train.py`` batch is 160 windows).  ``kw``: sizes, see :func:`neuroformer_setup`."""
    s = neuroformer_setup(repo, batch, n_trials, windows_per_trial, **kw)
    model = s.model
    loader = torch.utils.data.DataLoader(s.dataset, batch_size=len(s.dataset), shuffle=False)
    x, y = next(iter(loader))
    tconf = types.SimpleNamespace(decay_weights=True, weight_decay=1.0, learning_rate=1e-4, betas=(0.9, 0.95))
    with contextlib.redirect_stdout(io.StringIO()):
        optimizer = model.configure_optimizers(tconf)
    model.train()

    def run():  # neuroformer/trainer.py::Trainer.run_epoch, one batch
        _preds, _features, loss = model(x, y)
        total_loss = 0
        for key, value in loss.items():
            value = value.mean()
            loss[key] = value
            total_loss += value
            value.item()
        model.zero_grad()
        total_loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    n_tokens = int((x["id"] != s.tokenizer.stoi["ID"]["PAD"]).sum())
    return Contender("Neuroformer step", run, count_params(model),
                     dict(windows=len(s.dataset), block=s.config.block_size.id, n_embd=s.config.n_embd,
                          real_tokens=n_tokens))


def neuroformer_generate(repo, batch, n_trials=1, n_events=256, window_end=0.45, **kw) -> Contender:
    """Neuroformer's released ``generate_spikes`` over one window (ending at ``window_end`` s) of each of
    ``n_trials`` trials: their loop cannot batch, so the windows run one after the other, batch 1, one full
    forward of the whole block per token; top-p 0.95 for ids and dts, temperature 1, ``true_past=True`` (each
    window's past is that trial's recorded past).  The current-window block is ``n_events + 1`` tokens and every
    window gets ``n_events`` events (special tokens made ~impossible by parameter values, see the module
    docstring).  ``kw``: sizes, see :func:`neuroformer_setup`."""
    s = neuroformer_setup(repo, batch, n_trials=n_trials, windows_per_trial=1, ends=[window_end],
                          block=n_events + 1, **kw)
    model, sim = s.model, s.mods[1]
    stoi, stoi_dt = s.tokenizer.stoi["ID"], s.tokenizer.stoi["dt"]
    with torch.no_grad():
        model.neural_visual_transformer.neural_state_blocks[-1].ln_f.bias.fill_(1.0)
        for name in ("SOS", "EOS", "PAD"):
            model.head_id.weight[stoi[name]] -= 1.0
            model.head_dt.weight[stoi_dt[name]] -= 1.0
    gen_kw = dict(sample=True, top_p=0.95, top_p_t=0.95, temp=1, temp_t=1, true_past=True, p_bar=True)

    def run():
        data = sim.generate_spikes(model, s.dataset, NF_WINDOW, NF_WINDOW_PREV, s.tokenizer, **gen_kw)
        return len(data["ID"])
    return Contender(f"Neuroformer generate x{n_trials}", run, count_params(model),
                     dict(block=s.config.block_size.id, n_embd=s.config.n_embd))


def anchor_commit(repo) -> str:
    """The checked-out commit of an anchor (``git rev-parse HEAD``), or ``"unknown"``."""
    import subprocess
    try:
        return subprocess.run(["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except Exception:
        return "unknown"
