"""Model cards: YAML metadata + a Markdown body rendered from ``model_cards/`` templates.

Templates are Markdown with ``$name`` placeholders (:class:`string.Template`);
every placeholder must be given (a missing one raises ``KeyError`` naming
it), so a card never ships with a blank where a fact should be.

The YAML front matter follows the Hugging Face Hub model-card metadata:
``library_name: nfm``, ``license``, ``tags``, ``datasets``, ``metrics``,
``base_model`` (fine-tunes and adapters; a Hub id only -- a local base is left out, the card names its
fingerprint) and a ``model-index`` with the evaluation results, so the Hub shows them in the results widget.

A card holds no absolute local path (:func:`strip_local_paths`): it is meant to be uploaded with the model.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from string import Template
from typing import Any, Mapping, Sequence

from nfm import resources as _resources

#: the card templates shipped with nfm (``nfm/resources/model_cards``, shown in the repository as ``model_cards/``)
TEMPLATE_DIR = _resources.path("model_cards")
MODEL_TEMPLATE = "model_card_template.md"
ADAPTER_TEMPLATE = "adapter_card_template.md"
BASE_TAGS = ("nfm", "neuroscience", "neural-population", "spikes", "mtm", "neuroformer")


def load_template(name: str) -> str:
    """Text of the card template ``name`` (``model_cards/<name>``)."""
    return (TEMPLATE_DIR / name).read_text()


def card_metadata(
    *,
    model_name: str,
    tags: Sequence[str] = (),
    datasets: Sequence[str] = (),
    metrics: Mapping[str, float] | None = None,
    base_model: str | None = None,
    license: str = "mit",
    dataset_type: str = "nfm",
    task: str = "neural-population-modeling",
) -> dict[str, Any]:
    """Hub metadata dict. ``metrics`` maps metric names to values (NaN/None values are left out)."""
    meta: dict[str, Any] = {"library_name": "nfm", "license": license,
                            "tags": list(dict.fromkeys([*BASE_TAGS, *tags]))}
    if datasets:
        meta["datasets"] = list(datasets)
    clean = {k: float(v) for k, v in (metrics or {}).items() if v is not None and math.isfinite(float(v))}
    if clean:
        meta["metrics"] = sorted(clean)
    if base_model and hub_id(base_model):
        meta["base_model"] = base_model
    if clean:
        meta["model-index"] = [{
            "name": model_name,
            "results": [{
                "task": {"type": task, "name": task.replace("-", " ")},
                "dataset": {"name": datasets[0] if datasets else "unknown", "type": dataset_type},
                "metrics": [{"type": k, "value": round(v, 6), "name": k.replace("_", " ")} for k, v in clean.items()],
            }],
        }]
    return meta


def render_card(template: str, metadata: Mapping[str, Any], fields: Mapping[str, Any]) -> str:
    """``---\\n<yaml>---\\n`` + the template with ``fields`` substituted (all placeholders required); absolute
    local paths are shortened to their last part (:func:`strip_local_paths`)."""
    import yaml

    body = Template(template).substitute({k: _fmt(v) for k, v in fields.items()})
    front = yaml.safe_dump(dict(metadata), sort_keys=False, allow_unicode=True)
    return strip_local_paths(f"---\n{front}---\n\n{body}")


#: an absolute POSIX path (not the end of a URL, a unit like spikes/s or a relative path)
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])/(?:[^\s/`'\"|()<>\[\],]+/)+([^\s/`'\"|()<>\[\],]+)")


def strip_local_paths(text: str) -> str:
    """``/home/me/data/ibl`` -> ``.../ibl`` everywhere in ``text``: a card names folders, never where they were
    on the machine that wrote it."""
    return _ABSOLUTE_PATH.sub(lambda m: f".../{m.group(1)}", text)


def hub_id(value: str) -> str | None:
    """``value`` if it is a Hugging Face Hub repo id (``org/name``, not a local folder), else None."""
    from nfm.cli import looks_like_path

    v = str(value)
    return None if looks_like_path(v) or Path(v).expanduser().exists() else v


#: a model folder inside the Hugging Face cache: ``.../models--<org>--<name>/snapshots/<revision>``
_HF_CACHE_SNAPSHOT = re.compile(r"models--([^/]+?)--([^/]+)/snapshots/[^/]+/?$")


def base_hub_id(base_model: str | os.PathLike | None) -> str | None:
    """The Hub id of a base model when it is known: ``base_model`` itself if it is a Hub id, or the id of a
    Hugging Face cache snapshot folder (``.../models--org--name/snapshots/<rev>`` -> ``org/name``); None for
    any other local folder (a card then leaves ``base_model`` out and names the base's fingerprint)."""
    if base_model is None:
        return None
    v = str(base_model)
    m = _HF_CACHE_SNAPSHOT.search(v.replace(os.sep, "/"))
    if m:
        return f"{m.group(1)}/{m.group(2)}"
    return hub_id(v)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v)) if v else "none"
    return str(v)


#: result keys that are bookkeeping, not scores (left out of a card's table)
_NOT_SCORES = ("n_sessions", "best_C", "best_alpha", "chance")


def _is_score(key: str, value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))
            and not any(key == n or key.endswith("/" + n) or key.split("/")[-1].startswith(n + "_")
                        for n in _NOT_SCORES))


def _task_rows(name: str, res: Mapping[str, Any], primary: str) -> list[str]:
    """Rows of one task: the primary metric (model, its references) first, then the model's other scores
    beside their best baseline; a null model that is 0 by definition (``null/bps``) is not a row of its own."""
    from nfm.evaluation import flags

    metrics = [primary] + [m for m in dict.fromkeys(k.split("/")[-1] for k, v in res.items()
                                                  if not flags.is_reference_key(k) and _is_score(k, v))
                           if m != primary]
    rows = []
    for m in metrics:
        keys = [k for k in flags.model_keys(res, m) if _is_score(k, res[k])]
        if not keys:
            continue
        refs = []
        null = flags.null_reference(res, m) if m == primary else None
        if null is not None and not (null[0] == "null" and null[1] == 0.0):
            refs.append(f"{null[0]} {null[1]:.4g}")
        best = flags.best_baseline(res, m)
        if best is not None:
            refs.append(f"{best[0]} {best[1]:.4g} (best baseline)")
        bad = {f.key for f in flags.task_flags(name, res, m)} if m == primary else set()
        for k in keys:
            rows.append(f"| {name} | {k} | {res[k]:.4g}{' ⚠' if k in bad else ''} | {', '.join(refs) or '–'} |")
    return rows


def eval_table(summary: Mapping[str, Any] | None) -> str:
    """Markdown of an evaluation summary for a card: only informative rows.

    Runner results (``{task: {metric: value}}`` of a shipped task) become one table, ``task | score | model |
    reference``: the task's primary metric with its null model / chance (left out when it is 0 by definition,
    like ``null/bps``) and best baseline, then the model's other scores beside their best baseline; below it one
    line for each score under its null model, chance or best baseline (:mod:`nfm.evaluation.flags`).  Other
    entries (e.g. the generation losses) become a ``metric | value`` table of their numeric leaves (nested
    dicts as ``a / b``).  NaN, bookkeeping (``n_sessions``, ``best_C``) and not-applicable tasks are left out.
    """
    from nfm.evaluation import flags

    if not summary:
        return "No evaluation was run."
    task_rows, other, warn, not_applicable = [], [], [], []

    def walk(prefix: str, obj: Any):
        if isinstance(obj, Mapping):
            for k, v in obj.items():
                walk(f"{prefix} / {k}" if prefix else str(k), v)
        elif _is_score(prefix.split(" / ")[-1], obj) and not flags.is_reference_key(prefix.split(" / ")[-1]):
            other.append((prefix, f"{obj:.4f}" if isinstance(obj, float) else str(obj)))

    for name, res in summary.items():
        if isinstance(res, Mapping) and "not_applicable" in res:
            not_applicable.append(name)
            continue
        primary = flags.default_primary(name, res) if isinstance(res, Mapping) else None
        if primary is None:
            walk(name, res)
            continue
        task_rows += _task_rows(name, res, primary)
        warn += flags.flag_lines({name: flags.task_flags(name, res, primary)})
    parts = []
    if task_rows:
        parts.append("\n".join(["| task | score | model | reference |", "| --- | --- | --- | --- |", *task_rows]))
    if warn:
        parts.append("\n".join(f"- ⚠ {w}" for w in warn))
    if other:
        parts.append("\n".join(["| metric | value |", "| --- | --- |", *[f"| {k} | {v} |" for k, v in other]]))
    if not_applicable:
        parts.append("Not applicable to this model or data: " + ", ".join(not_applicable) + ".")
    return "\n\n".join(parts) if parts else "No evaluation was run."


def write_card(output_dir: str | os.PathLike, text: str) -> Path:
    """Write ``README.md`` in ``output_dir`` (atomically) and return its path."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".README.md.tmp"
    tmp.write_text(text)
    os.replace(tmp, out / "README.md")
    return out / "README.md"


def flat_metrics(summary: Mapping[str, Any] | None) -> dict[str, float]:
    """Numeric leaves of an evaluation summary as ``a_b_c`` names (for the card's metadata)."""
    out: dict[str, float] = {}

    def walk(prefix: str, obj: Any):
        if isinstance(obj, Mapping):
            for k, v in obj.items():
                walk(f"{prefix}_{k}" if prefix else str(k), v)
        elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
            out[prefix] = float(obj)

    walk("", summary or {})
    return out


def pretrained_model_card(
    model,
    meta,
    *,
    train_sessions: Sequence[str],
    heldout_sessions: Sequence[str] = (),
    dataset_name: str,
    eval_summary: Mapping[str, Any] | None = None,
    train_info: Mapping[str, Any] | None = None,
    repo_id: str = "path/to/this/folder",
    command: str = "accelerate launch recipes/pretrain.py",
    base_model: str | None = None,
) -> str:
    """Card of a pretrained nfm model (``model_cards/model_card_template.md``); ``meta``: the dataset's
    :class:`~nfm.data.meta.DatasetMeta`; the time grid shown is the model's (``config.bin_size``, ``window``)."""
    cfg = model.config
    info = dict(train_info or {})
    subjects = sorted({meta.sessions[s].subject_id for s in train_sessions if s in meta.sessions})
    metrics = _card_metrics(eval_summary)
    objectives = list(getattr(cfg, "objectives", []))
    tags = ["mtm" if "mtm" in objectives else "", "generation" if "generation" in objectives else "",
            getattr(cfg, "modality", "spikes")]
    metadata = card_metadata(model_name=Path(str(repo_id)).name or "nfm", tags=[t for t in tags if t],
                             datasets=[dataset_name], metrics=metrics, base_model=base_hub_id(base_model))
    if Path(str(repo_id)).is_absolute():  # a card names no local path: the use snippet gets a placeholder
        repo_id = "path/to/this/folder"
    n_params = sum(p.numel() for p in model.parameters())
    fields = dict(
        capabilities=capabilities(objectives, mask_modes=list(getattr(cfg, "active_mask_modes",
                                                                       getattr(cfg, "mask_modes", [])))),
        heads=" + ".join(["backbone"] + (["masked read-out"] if "mtm" in objectives else [])
                         + (["event decoder"] if "generation" in objectives else [])),
        title=f"nfm {type(model).__name__} ({dataset_name})",
        summary=(f"Pretrained on {len(train_sessions)} sessions of {len(subjects)} animals "
                 f"({meta.modality})."),
        architecture=type(model).__name__,
        objectives=objectives or "none",
        mask_modes=mask_mix(cfg) if "mtm" in objectives else "none",
        hidden_size=cfg.hidden_size, num_layers=cfg.num_hidden_layers, num_heads=cfg.num_attention_heads,
        intermediate_size=cfg.intermediate_size,
        n_parameters=f"{n_params:,}",
        modality=meta.modality, bin_size=cfg.bin_size, window=list(cfg.window), align_event=meta.align_event,
        n_sessions=len(train_sessions), n_subjects=len(subjects),
        regions=list(meta.regions),
        dataset=dataset_name,
        sessions=_short(train_sessions),
        heldout=_short(heldout_sessions) if heldout_sessions else "none",
        steps=info.get("steps", "?"), batch_size=info.get("batch_size", "?"), world_size=info.get("world_size", 1),
        learning_rate=info.get("learning_rate", "?"),
        final_loss=info.get("final_loss", "?"),
        command=command,
        eval_split=info.get("eval_split", "validation"),
        eval_table=eval_table(eval_summary),
        repo_id=repo_id,
        limitations=info.get("limitations", _LIMITATIONS),
    )
    return render_card(load_template(MODEL_TEMPLATE), metadata, fields)


#: what each objective lets a user do with the model (a card lists only its model's)
CAPABILITIES = {
    "mtm": ("MtM multi-task masking: predict masked activity of held-out units, future bins and regions "
            "(mask modes: {modes}; a prompt token names the mask) -- `recipes/evaluate.py` co-smoothing, forward "
            "prediction, intra-/inter-region tasks"),
    "generation": ("Neuroformer-style autoregressive spike generation: sample the next window's spikes as "
                   "(unit, dt) events, conditioned on past activity and on stimulus/behaviour -- "
                   "`recipes/generate.py`, the generation tasks"),
}


def mask_mix(cfg) -> str:
    """The MtM mask modes of a config and how often each is drawn, e.g. ``neuron 0.67, causal 0.11, ...`` (one
    mode per batch; ``config.mask_mode_probabilities``)."""
    modes = list(getattr(cfg, "active_mask_modes", getattr(cfg, "mask_modes", [])))
    probs = getattr(cfg, "mask_mode_probabilities", None)
    if not probs or len(probs) != len(modes):
        return ", ".join(modes)
    return ", ".join(f"{m} {p:.2f}" for m, p in zip(modes, probs))


def capabilities(objectives: Sequence[str], mask_modes: Sequence[str] = ()) -> str:
    """Markdown bullets of what a model trained with ``objectives`` can do (:data:`CAPABILITIES`); a model
    without the ``generation`` objective is not said to generate, one without ``mtm`` not said to in-fill.
    Every model also gives latents (bin states) for decoding."""
    lines = [f"- {CAPABILITIES[o].format(modes=', '.join(mask_modes) or 'default')}" for o in objectives
             if o in CAPABILITIES]
    lines.append("- latent states (one vector per time bin) for decoding behaviour or stimuli "
                 "(the decoding tasks of `recipes/evaluate.py`)")
    if "generation" not in objectives:
        lines.append("- not: spike generation (no `generation` objective, no event decoder)")
    return "\n".join(lines)


def adapter_card(
    *,
    base_model: str,
    mode: str,
    sessions: Sequence[str],
    trainable: int,
    total: int,
    dataset_name: str,
    lora_settings: str = "none",
    eval_summary: Mapping[str, Any] | None = None,
    train_info: Mapping[str, Any] | None = None,
    command: str = "accelerate launch recipes/finetune_lora.py",
    usage: str = "",
    trainable_groups: Mapping[str, int] | None = None,
    base_fingerprint: str | None = None,
) -> str:
    """Card of a LoRA adapter (or a full / scratch fine-tune) for a new animal.

    ``trainable_groups``: the trainable parameters split as :func:`nfm.adapters.trainable_summary` reports them
    (``lora``, ``per_session``, ``shared``); ``base_fingerprint``: the base's (:func:`nfm.adapters.base_fingerprint`).
    """
    info = dict(train_info or {})
    metrics = _card_metrics(eval_summary)
    tags = ["lora", "peft"] if mode == "lora" else [f"{mode}-finetune"]
    hub = base_hub_id(base_model)
    metadata = card_metadata(model_name=f"nfm-{mode}-{sessions[0] if sessions else 'adapter'}", tags=tags,
                             datasets=[dataset_name], metrics=metrics, base_model=hub)
    shown = f"`{hub}`" if hub else (
        f"`{Path(str(base_model)).name}` (a local folder, not a Hub id: `base_model` is left out of this card's "
        "metadata; once the base is on the Hub, set `base_model: <its Hub id>`. The base fingerprint below "
        "identifies it)")
    sentence = {
        "lora": "Only the new sessions' read-in/read-out and low-rank adapters on the attention and MLP "
                "projections were trained; the base weights are frozen and shared.",
        "full": "Every weight of the base model was fine-tuned (baseline).",
        "scratch": "Same architecture trained from a random initialisation on the new sessions only (baseline).",
    }.get(mode, "")
    fields = dict(
        title=f"nfm {mode} adaptation: {_short(sessions)}",
        summary=f"Adapts {shown} to {len(sessions)} new session(s).",
        mode=mode, base_model=shown, adapter_sentence=sentence,
        sessions=_short(sessions), trainable=f"{trainable:,}", total=f"{total:,}",
        trainable_share=f"{100.0 * trainable / max(total, 1):.2f}%",
        trainable_split=_trainable_split(trainable_groups, total),
        base_fingerprint=f"`{base_fingerprint[:16]}`" if base_fingerprint else "not recorded",
        lora_settings=lora_settings,
        steps=info.get("steps", "?"), batch_size=info.get("batch_size", "?"),
        learning_rate=info.get("learning_rate", "?"), n_train_trials=info.get("n_train_trials", "?"),
        final_loss=info.get("final_loss", "?"), command=command,
        eval_split=info.get("eval_split", "validation"), eval_table=eval_table(eval_summary),
        usage=usage or "See `nfm.adapters.load_adapter`.",
        limitations=info.get("limitations", _LIMITATIONS),
    )
    return render_card(load_template(ADAPTER_TEMPLATE), metadata, fields)


def _card_metrics(summary) -> dict[str, float]:
    """Aggregate metrics for the card metadata (the model's pooled bits/spike, R2 and generation losses; no
    baselines, nothing per session)."""
    keep = ("_bps", "_r2", "_loss")
    return {k: v for k, v in flat_metrics(summary).items()
            if "per_session" not in k and "/" not in k and k.endswith(keep)}


def _trainable_split(groups: Mapping[str, int] | None, total: int) -> str:
    """``LoRA 9,792 (0.93%), per-session 107,616 (10.2%), shared 0 (0%)`` with what the share depends on."""
    if not groups:
        return "not recorded"
    names = {"lora": "LoRA", "per_session": "per-session read-in/read-out", "shared": "shared backbone and heads"}
    parts = [f"{names.get(k, k)} {int(v):,} ({100.0 * int(v) / max(total, 1):.2f}%)" for k, v in groups.items()]
    return "; ".join(parts)


def _short(ids: Sequence[str], n: int = 12) -> str:
    ids = list(ids)
    if not ids:
        return "none"
    return ", ".join(ids[:n]) + (f" ... ({len(ids)} in all)" if len(ids) > n else "")


_LIMITATIONS = ("Trained on the data named above only; per-session read-in/read-out exist only for the "
                "sessions listed, so a new recording needs `add_animal` + fine-tuning (LoRA). Scores on "
                "synthetic data say nothing about real recordings.")
