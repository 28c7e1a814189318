"""Adapting a pretrained nfm model to a new animal with PEFT (LoRA).

A new animal brings new recordings: new units, so new per-session read-in /
read-out parameters (:class:`nfm.models.modeling_nfm.NfmSessionParameters`:
unit embeddings, read-out rows and biases, id-logit bias, session token).
Everything else (region embeddings, read-in MLP, transformer, event decoder)
is shared. Adaptation therefore is:

1. :func:`add_animal` -- create the new sessions' small parameters
   (``model.add_session``; old outputs are unchanged);
2. :func:`lora_model` -- wrap with ``peft``: LoRA on the attention (``q_proj``,
   ``k_proj``, ``v_proj``, ``o_proj``) and MLP (``fc1``, ``fc2``) projections
   of the backbone and of the event decoder, the new sessions' parameter
   modules in ``modules_to_save`` (fully trainable, saved with the adapter),
   everything else frozen;
3. train (``recipes/finetune_lora.py`` runs the Trainer of :mod:`nfm.training`);
4. :func:`save_adapter` -- a standard PEFT folder (``adapter_config.json``,
   ``adapter_model.safetensors``) plus ``nfm_adapter.json`` (the new
   sessions' unit counts and regions, so the base can be given the same
   empty slots before loading) and a model card.

Loading: ``base = AutoModelForPreTraining.from_pretrained(base_id)``, then
:func:`load_adapter` (``add_animal`` from ``nfm_adapter.json``, then
``PeftModel.from_pretrained(base, folder)``).  An adapter only makes sense on the
base it was trained on: ``nfm_adapter.json`` records a fingerprint of that base
(:func:`base_fingerprint`: SHA-256 of its configuration and of its shared
weights), and :func:`load_adapter` refuses another base
(:class:`AdapterBaseMismatch`, naming both) unless ``allow_base_mismatch=True``. Several animals' adapters live
beside one base: :func:`load_adapter` on a ``PeftModel`` adds another named
adapter, and ``model.set_adapter(name)`` switches between them without
reloading the base. :func:`merge_adapter` folds LoRA into the weights and
returns a plain nfm model that ``save_pretrained`` writes and ``AutoModel``
loads.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

ADAPTER_META_FILE = "nfm_adapter.json"
#: Module-name suffixes LoRA is applied to: attention and MLP projections (backbone and event decoder).
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2")


def _nfm_model(model):
    """The nfm ``PreTrainedModel`` inside ``model`` (itself, or the one a ``PeftModel`` wraps)."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        return model.get_base_model()
    return model


def spike_bin_size_of(config) -> float | None:
    """The bin size [s] at which a model with ``config`` reads spike sessions: its primary ``bin_size`` when its
    primary modality is spikes (a mixed-modality model's primary dataset is its first spike dataset), else None:
    a base pretrained on 2-photon data only has a frame clock, not a spike grid, so new spike sessions keep the
    dataset's own bins (they then get their own ``session_grid``, as every non-primary dataset of a mixed
    model does)."""
    if config is None or getattr(config, "modality", "spikes") != "spikes":
        return None
    return float(config.bin_size)


def new_sessions_spec(meta, session_ids: Iterable[str], config=None) -> dict[str, dict[str, Any]]:
    """``{session_id: {"n_units", "regions", "subject_id", "modality", "window", "bin_size"}}`` of
    ``session_ids`` from a dataset's :class:`~nfm.data.meta.DatasetMeta`.

    The time grid the model will read them at: with the base's ``config``, spike sessions are re-binned at its
    spike bin size (:func:`spike_bin_size_of`; a 2-photon-only base has none: the dataset's own grid) when the
    dataset allows it (:meth:`DatasetMeta.grid`), in their own trial window; 2-photon sessions keep their frame
    clock.  Without ``config``: the dataset's own grid."""
    out = {}
    spike_bin = spike_bin_size_of(config)
    for sid in session_ids:
        if sid not in meta.sessions:
            known = meta.session_ids
            raise ValueError(f"session {sid!r} is not in the dataset (it has {known[:8]}{' ...' if len(known) > 8 else ''})")
        m = meta.sessions[sid]
        window, size, _ = meta.grid(None)
        if spike_bin is not None and meta.modality == "spikes":
            try:
                window, size, _ = meta.grid(spike_bin)
            except ValueError:
                pass  # per-bin behaviour not on a multiple of the base's bins: the dataset's own grid
        out[sid] = {"n_units": int(m.n_units), "regions": m.regions, "subject_id": m.subject_id,
                    "modality": meta.modality, "window": [float(window[0]), float(window[1])], "bin_size": size}
    return out


def add_animal(model, sessions: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Give ``model`` empty per-session parameters for new sessions; return their module names.

    Args:
        model: an nfm model (or a ``PeftModel`` around one).
        sessions: ``{session_id: {"n_units": int, "regions": [acronym per unit] (optional), "modality",
            "window", "bin_size" (optional: the session's modality and time grid)}}``, e.g. from
            :func:`new_sessions_spec`. A session the model already has is checked (same unit count)
            and kept as is.
    Returns:
        module names (``"nfm.sessions.<key>"``) of the sessions' parameter modules, for ``modules_to_save``.
    """
    base = _nfm_model(model)
    names = []
    for sid, spec in sessions.items():
        n = int(spec["n_units"])
        have = base.config.session_n_units.get(sid)
        if have is None:
            grid = (spec["window"], spec["bin_size"]) if "window" in spec and "bin_size" in spec else None
            base.add_session(sid, n, spec.get("regions"), modality=spec.get("modality"), grid=grid)
        elif int(have) != n:
            raise ValueError(f"session {sid!r} is already in the model with {have} units, not {n}")
        names.append(session_module_name(base, sid))
    return names


def session_module_name(model, session_id: str) -> str:
    """Qualified name of a session's parameter module inside ``model`` (e.g. ``nfm.sessions.s_x_1a2b3c4d``)."""
    from .models import session_key

    base = _nfm_model(model)
    key = session_key(session_id)
    prefix = base.base_model_prefix
    backbone = getattr(base, prefix, base)
    if key not in backbone.sessions:
        raise ValueError(f"session {session_id!r} is not in the model; call add_animal first")
    return f"{prefix}.sessions.{key}" if backbone is not base else f"sessions.{key}"


def lora_config(
    module_names: Sequence[str],
    r: int = 8,
    alpha: int = 16,
    dropout: float = 0.0,
    targets: Sequence[str] = LORA_TARGETS,
):
    """``peft.LoraConfig``: LoRA on ``targets`` (name suffixes), ``module_names`` fully trained and saved."""
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets),
                      modules_to_save=list(module_names), bias="none")


def lora_model(
    model,
    sessions: Mapping[str, Mapping[str, Any]],
    r: int = 8,
    alpha: int = 16,
    dropout: float = 0.0,
    targets: Sequence[str] = LORA_TARGETS,
    adapter_name: str = "default",
):
    """:func:`add_animal` + ``peft.get_peft_model``: only LoRA and the new sessions' parameters train.

    ``get_peft_model`` wraps (and mutates) ``model``; the returned ``PeftModel`` is what to train.
    """
    from peft import get_peft_model

    if getattr(_nfm_model(model), "_nfm_base_fingerprint", None) is None:
        remember_base_fingerprint(model)  # of the base as loaded, before the new sessions are added
    names = add_animal(model, sessions)
    with _quiet_peft():
        peft_model = get_peft_model(model, lora_config(names, r, alpha, dropout, targets), adapter_name=adapter_name)
    install_session_guard(peft_model)
    return peft_model


@contextmanager
def _quiet_peft():
    """peft 0.21 reads ``model.is_gradient_checkpointing`` when it wraps a model, an attribute transformers 5
    deprecated (``FutureWarning`` on every LoRA run, nothing for a user to change).  Only that warning is
    silenced, only while peft wraps."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def install_session_guard(peft_model) -> None:
    """Refuse a forward pass on a session whose read-in/read-out belongs to an adapter that is not active.

    Without it ``peft`` silently falls back to the untrained copy of that session's parameters (the one
    created by :func:`add_animal`), i.e. a wrong output with no error. Installed by :func:`lora_model` and
    :func:`load_adapter` (a ``PeftModel.from_pretrained`` made by hand has no guard).
    """
    from .models import session_key

    base = peft_model.get_base_model()
    if getattr(base, "_nfm_session_guard", None) is not None:
        return

    def owners() -> dict[str, str]:
        out = {}
        for name, cfg in peft_model.peft_config.items():
            for module in getattr(cfg, "modules_to_save", None) or []:
                out[module.rsplit(".", 1)[-1]] = name
        return out

    def guard(module, args, kwargs):
        sids = kwargs.get("session_ids")
        if sids is None:
            return None
        active = peft_model.active_adapter
        own = owners()
        for sid in dict.fromkeys([sids] if isinstance(sids, str) else list(sids)):
            owner = own.get(session_key(sid))
            if owner is not None and owner != active:
                raise ValueError(f"session {sid!r} belongs to adapter {owner!r} but adapter {active!r} is active; "
                                 f"call model.set_adapter({owner!r}) first")
        return None

    base._nfm_session_guard = base.register_forward_pre_hook(guard, with_kwargs=True)


def trainable_summary(model) -> dict[str, Any]:
    """``{"trainable", "total", "share", "groups"}``: trainable / all parameters (LoRA matrices and
    ``modules_to_save`` copies included in ``total``, as ``peft``'s ``print_trainable_parameters``), and the
    trainable ones split into ``groups``: ``lora`` (the low-rank matrices), ``per_session`` (the sessions'
    read-in/read-out: unit embeddings, read-out rows and biases, session tokens; they grow with the animal's
    unit count) and ``shared`` (backbone, event decoder and heads: trained only in ``full`` / ``scratch`` mode).
    """
    from peft import PeftModel

    if isinstance(model, PeftModel):
        trainable, total = model.get_nb_trainable_parameters()
    else:
        total = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    groups = {"lora": 0, "per_session": 0, "shared": 0}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        key = "lora" if "lora_" in name else ("per_session" if ".sessions." in f".{name}" else "shared")
        groups[key] += int(p.numel())
    return {"trainable": int(trainable), "total": int(total), "share": trainable / max(total, 1), "groups": groups}


def format_trainable(summary: Mapping[str, Any]) -> str:
    """One line: trainable / total and the split by group (see :func:`trainable_summary`)."""
    line = (f"trainable params: {summary['trainable']:,} || all params: {summary['total']:,} || "
            f"trainable%: {100.0 * summary['share']:.4f}")
    groups = summary.get("groups")
    if groups:
        total = max(int(summary["total"]), 1)
        line += " || " + ", ".join(f"{k.replace('_', '-')} {v:,} ({100.0 * v / total:.2f}%)" for k, v in groups.items())
    return line


# --------------------------------------------------------------------------- base fingerprint
class AdapterBaseMismatch(ValueError):
    """An adapter loaded onto a base model other than the one it was trained on."""


#: config fields left out of the fingerprint: they change when sessions are added or the file is re-saved
_FINGERPRINT_SKIP = ("session_n_units", "_name_or_path", "name_or_path", "transformers_version",
                     "architectures", "dtype", "torch_dtype", "_attn_implementation_autoset", "auto_map")


def base_fingerprint(model) -> str:
    """SHA-256 (hex, 16 characters shown in messages) of a base model's configuration and shared weights.

    Shared weights: every parameter and buffer except the per-session ones (``*.sessions.*``, with
    ``config.session_n_units``); LoRA matrices and ``modules_to_save`` copies of a ``PeftModel`` are skipped and
    wrapped layers read through.  Same weights and configuration, same fingerprint, wherever the base is loaded
    from (folder, Hub id, a copy).  Take it from the base as loaded: adding an animal with new regions grows the
    shared region tables (:func:`lora_model` and :func:`load_adapter` remember it before they add sessions).
    """
    import torch

    base = _nfm_model(model)
    cached = getattr(base, "_nfm_base_fingerprint", None)
    if cached is not None:
        return cached
    cfg = {k: v for k, v in base.config.to_dict().items() if k not in _FINGERPRINT_SKIP}
    h = hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode())
    state = {}
    for key, t in base.state_dict().items():
        if "lora_" in key or ".modules_to_save." in key or ".sessions." in f".{key}":
            continue
        state[key.replace(".base_layer.", ".").replace(".original_module.", ".")] = t
    for key in sorted(state):
        t = state[key].detach().to("cpu").contiguous()
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def remember_base_fingerprint(model) -> str:
    """Compute :func:`base_fingerprint` of a pristine base and keep it on the model (so a later check is not
    disturbed by merged weights); returns it."""
    base = _nfm_model(model)
    fp = base_fingerprint(base)
    base._nfm_base_fingerprint = fp
    return fp


def check_base(model, adapter_dir: str | os.PathLike, meta: Mapping[str, Any] | None = None,
               base_name: str | None = None, allow_base_mismatch: bool = False) -> str | None:
    """Raise :class:`AdapterBaseMismatch` unless ``model`` is the base the adapter was trained on.

    Returns None when they match, else (with ``allow_base_mismatch``, or for an adapter written before
    fingerprints were recorded) a warning text, also issued as a ``UserWarning``."""
    meta = meta if meta is not None else read_adapter_meta(adapter_dir)
    want = meta.get("base_fingerprint")
    name = base_name or getattr(_nfm_model(model), "name_or_path", None) or "the given base"
    if not want:
        text = (f"adapter {adapter_dir} records no base fingerprint (written by an older nfm); it cannot be "
                f"checked against {name}")
        warnings.warn(text, stacklevel=3)
        return text
    have = base_fingerprint(model)
    if have == want:
        return None
    text = (f"adapter {adapter_dir} was trained on base {meta.get('base_model', '?')} (fingerprint {want[:16]}), "
            f"not on {name} (fingerprint {have[:16]})")
    if not allow_base_mismatch:
        raise AdapterBaseMismatch(text + "; load it onto its own base, or pass --allow_base_mismatch "
                                         "(allow_base_mismatch=True) to load it anyway")
    warnings.warn(text + " (allowed by allow_base_mismatch)", stacklevel=3)
    return text


def save_adapter(peft_model, output_dir: str | os.PathLike, sessions: Mapping[str, Mapping[str, Any]],
                 base_model: str, is_main_process: bool = True, base_fingerprint: str | None = None) -> Path:
    """Standard PEFT folder + ``nfm_adapter.json``. Returns the folder.

    ``base_fingerprint``: of the base before adaptation (default: the one :func:`lora_model` remembered)."""
    from .files import apply_umask

    out = Path(output_dir)
    peft_model.save_pretrained(str(out), is_main_process=is_main_process)
    if is_main_process:
        apply_umask(out)  # safetensors writes adapter_model.safetensors 0600
        fp = base_fingerprint or getattr(_nfm_model(peft_model), "_nfm_base_fingerprint", None)
        write_adapter_meta(out, sessions, base_model, list(peft_model.peft_config), base_fingerprint=fp)
    return out


def write_adapter_meta(output_dir: str | os.PathLike, sessions: Mapping[str, Mapping[str, Any]], base_model: str,
                       adapter_names: Sequence[str] = ("default",), base_fingerprint: str | None = None,
                       trainable: Mapping[str, Any] | None = None, dataset: str | None = None) -> None:
    """Write ``nfm_adapter.json``: base model name and fingerprint, adapter names, the new sessions' specs
    (unit counts, regions, subject), the dataset it was trained on (as given: evaluate.py's default) and
    optionally the trainable-parameter split."""
    meta = {"base_model": str(base_model), "base_fingerprint": base_fingerprint, "dataset": dataset,
            "adapter_names": list(adapter_names), "sessions": {sid: dict(spec) for sid, spec in sessions.items()}}
    if trainable is not None:
        meta["trainable"] = dict(trainable)
    Path(output_dir, ADAPTER_META_FILE).write_text(json.dumps(meta, indent=1))


def read_adapter_meta(adapter_dir: str | os.PathLike) -> dict[str, Any]:
    """Content of ``nfm_adapter.json`` (a local folder or a Hub repo id)."""
    path = Path(adapter_dir)
    if path.is_dir():
        f = path / ADAPTER_META_FILE
        if not f.is_file():
            raise FileNotFoundError(f"{adapter_dir}: no {ADAPTER_META_FILE}; not an nfm adapter folder "
                                    f"(recipes/finetune_lora.py writes one)")
    else:
        from huggingface_hub import hf_hub_download

        f = Path(hf_hub_download(str(adapter_dir), ADAPTER_META_FILE))
    return json.loads(f.read_text())


def load_adapter(model, adapter_dir: str | os.PathLike, adapter_name: str = "default", is_trainable: bool = False,
                 allow_base_mismatch: bool = False, base_name: str | None = None):
    """Load an nfm adapter onto ``model`` (an nfm model, or a ``PeftModel`` that already holds adapters).

    The base is checked against the fingerprint the adapter recorded (:func:`check_base`; a different base
    raises :class:`AdapterBaseMismatch` unless ``allow_base_mismatch``); then the new sessions named in
    ``nfm_adapter.json`` are added to the base and the adapter is loaded with ``PeftModel.from_pretrained``
    (or ``PeftModel.load_adapter`` for a further adapter) and made active. Returns the ``PeftModel``.
    """
    from peft import PeftModel

    meta = read_adapter_meta(adapter_dir)
    if getattr(_nfm_model(model), "_nfm_base_fingerprint", None) is None and not isinstance(model, PeftModel):
        remember_base_fingerprint(model)  # before sessions are added
    check_base(model, adapter_dir, meta, base_name=base_name, allow_base_mismatch=allow_base_mismatch)
    add_animal(model, meta["sessions"])
    if isinstance(model, PeftModel):
        if adapter_name in model.peft_config:
            raise ValueError(f"adapter {adapter_name!r} is already loaded; pick another adapter_name")
        model.load_adapter(str(adapter_dir), adapter_name=adapter_name, is_trainable=is_trainable)
        model.set_adapter(adapter_name)
        install_session_guard(model)
        return model
    with _quiet_peft():
        peft_model = PeftModel.from_pretrained(model, str(adapter_dir), adapter_name=adapter_name,
                                               is_trainable=is_trainable)
    install_session_guard(peft_model)
    return peft_model


def merge_adapter(peft_model):
    """Fold the active LoRA adapter into the weights; return the plain nfm model (new sessions included).

    Its weights are no longer the base's, so the base fingerprint remembered by :func:`load_adapter` is dropped.
    """
    merged = peft_model.merge_and_unload()
    merged._nfm_base_fingerprint = None
    return merged


def scratch_like(model, seed: int | None = None):
    """The 'scratch' baseline: a new model of the same class and architecture, randomly initialised, with no
    sessions (add the new animal with :func:`add_animal`). ``from_pretrained`` marks loaded weights as
    initialised, so re-running ``_init_weights`` on a loaded model would not re-initialise them."""
    import copy

    import torch

    base = _nfm_model(model)
    config = copy.deepcopy(base.config)
    config.session_n_units = {}
    if seed is not None:
        torch.manual_seed(seed)
    return type(base)(config)
