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


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v)) if v else "none"
    return str(v)


def eval_table(summary: Mapping[str, Any] | None) -> str:
    """Markdown table of a flat ``{metric: value}`` mapping (nested dicts become ``a / b`` rows)."""
    if not summary:
        return "No evaluation was run."
    rows = []

    def walk(prefix: str, obj: Any):
        if isinstance(obj, Mapping):
            for k, v in obj.items():
                walk(f"{prefix} / {k}" if prefix else str(k), v)
        elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
            rows.append((prefix, f"{obj:.4f}" if isinstance(obj, float) else str(obj)))
        elif isinstance(obj, str):
            rows.append((prefix, obj))

    walk("", summary)
    if not rows:
        return "No evaluation was run."
    return "\n".join(["| metric | value |", "| --- | --- |", *[f"| {k} | {v} |" for k, v in rows]])


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
                             datasets=[dataset_name], metrics=metrics, base_model=base_model)
    n_params = sum(p.numel() for p in model.parameters())
    fields = dict(
        title=f"nfm {type(model).__name__} ({dataset_name})",
        summary=(f"Pretrained on {len(train_sessions)} sessions of {len(subjects)} animals "
                 f"({meta.modality})."),
        architecture=type(model).__name__,
        objectives=objectives or "none",
        mask_modes=list(getattr(cfg, "active_mask_modes", getattr(cfg, "mask_modes", []))) if "mtm" in objectives else "none",
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
    metadata = card_metadata(model_name=f"nfm-{mode}-{sessions[0] if sessions else 'adapter'}", tags=tags,
                             datasets=[dataset_name], metrics=metrics, base_model=base_model)
    sentence = {
        "lora": "Only the new sessions' read-in/read-out and low-rank adapters on the attention and MLP "
                "projections were trained; the base weights are frozen and shared.",
        "full": "Every weight of the base model was fine-tuned (baseline).",
        "scratch": "Same architecture trained from a random initialisation on the new sessions only (baseline).",
    }.get(mode, "")
    fields = dict(
        title=f"nfm {mode} adaptation: {_short(sessions)}",
        summary=f"Adapts `{base_model}` to {len(sessions)} new session(s).",
        mode=mode, base_model=base_model, adapter_sentence=sentence,
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
