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
``PeftModel.from_pretrained(base, folder)``). Several animals' adapters live
beside one base: :func:`load_adapter` on a ``PeftModel`` adds another named
adapter, and ``model.set_adapter(name)`` switches between them without
reloading the base. :func:`merge_adapter` folds LoRA into the weights and
returns a plain nfm model that ``save_pretrained`` writes and ``AutoModel``
loads.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch

ADAPTER_META_FILE = "nfm_adapter.json"
#: Module-name suffixes LoRA is applied to: attention and MLP projections (backbone and event decoder).
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2")


def _nfm_model(model):
    """The nfm ``PreTrainedModel`` inside ``model`` (itself, or the one a ``PeftModel`` wraps)."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        return model.get_base_model()
    return model


def new_sessions_spec(meta, session_ids: Iterable[str], config=None) -> dict[str, dict[str, Any]]:
    """``{session_id: {"n_units", "regions", "subject_id", "modality", "window", "bin_size"}}`` of
    ``session_ids`` from a dataset's :class:`~nfm.data.meta.DatasetMeta`.

    The time grid the model will read them at: with the base's ``config``, spike sessions are re-binned at its
    ``bin_size`` when the dataset allows it (:meth:`DatasetMeta.grid`), in their own trial window; 2-photon
    sessions keep their frame clock.  Without ``config``: the dataset's own grid."""
    out = {}
    for sid in session_ids:
        if sid not in meta.sessions:
            known = meta.session_ids
            raise ValueError(f"session {sid!r} is not in the dataset (it has {known[:8]}{' ...' if len(known) > 8 else ''})")
        m = meta.sessions[sid]
        window, size, _ = meta.grid(None)
        if config is not None and meta.modality == "spikes":
            try:
                window, size, _ = meta.grid(float(config.bin_size))
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

    names = add_animal(model, sessions)
    peft_model = get_peft_model(model, lora_config(names, r, alpha, dropout, targets), adapter_name=adapter_name)
    install_session_guard(peft_model)
    return peft_model


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
    """``{"trainable", "total", "share"}``: trainable / all parameters (LoRA matrices and
    ``modules_to_save`` copies included in ``total``, as ``peft``'s ``print_trainable_parameters``)."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        trainable, total = model.get_nb_trainable_parameters()
    else:
        total = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable": int(trainable), "total": int(total), "share": trainable / max(total, 1)}


def format_trainable(summary: Mapping[str, Any]) -> str:
    return (f"trainable params: {summary['trainable']:,} || all params: {summary['total']:,} || "
            f"trainable%: {100.0 * summary['share']:.4f}")


def save_adapter(peft_model, output_dir: str | os.PathLike, sessions: Mapping[str, Mapping[str, Any]],
                 base_model: str, is_main_process: bool = True) -> Path:
    """Standard PEFT folder + ``nfm_adapter.json``. Returns the folder."""
    out = Path(output_dir)
    peft_model.save_pretrained(str(out), is_main_process=is_main_process)
    if is_main_process:
        write_adapter_meta(out, sessions, base_model, list(peft_model.peft_config))
    return out


def write_adapter_meta(output_dir: str | os.PathLike, sessions: Mapping[str, Mapping[str, Any]], base_model: str,
                       adapter_names: Sequence[str] = ("default",)) -> None:
    meta = {"base_model": str(base_model), "adapter_names": list(adapter_names),
            "sessions": {sid: dict(spec) for sid, spec in sessions.items()}}
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


def load_adapter(model, adapter_dir: str | os.PathLike, adapter_name: str = "default", is_trainable: bool = False):
    """Load an nfm adapter onto ``model`` (an nfm model, or a ``PeftModel`` that already holds adapters).

    The new sessions named in ``nfm_adapter.json`` are added to the base first, then the adapter is
    loaded with ``PeftModel.from_pretrained`` (or ``PeftModel.load_adapter`` for a further adapter) and made
    active. Returns the ``PeftModel``.
    """
    from peft import PeftModel

    meta = read_adapter_meta(adapter_dir)
    add_animal(model, meta["sessions"])
    if isinstance(model, PeftModel):
        if adapter_name in model.peft_config:
            raise ValueError(f"adapter {adapter_name!r} is already loaded; pick another adapter_name")
        model.load_adapter(str(adapter_dir), adapter_name=adapter_name, is_trainable=is_trainable)
        model.set_adapter(adapter_name)
        install_session_guard(model)
        return model
    peft_model = PeftModel.from_pretrained(model, str(adapter_dir), adapter_name=adapter_name,
                                           is_trainable=is_trainable)
    install_session_guard(peft_model)
    return peft_model


def merge_adapter(peft_model):
    """Fold the active LoRA adapter into the weights; return the plain nfm model (new sessions included)."""
    merged = peft_model.merge_and_unload()
    return merged


def scratch_like(model, seed: int | None = None):
    """The 'scratch' baseline: a new model of the same class and architecture, randomly initialised, with no
    sessions (add the new animal with :func:`add_animal`). ``from_pretrained`` marks loaded weights as
    initialised, so re-running ``_init_weights`` on a loaded model would not re-initialise them."""
    import copy

    base = _nfm_model(model)
    config = copy.deepcopy(base.config)
    config.session_n_units = {}
    if seed is not None:
        torch.manual_seed(seed)
    return type(base)(config)
