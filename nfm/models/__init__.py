"""nfm model family: configuration, backbone, MtM / Neuroformer / pretraining / behaviour heads.

Names are imported on first use (``from nfm.models import NfmForPretraining`` loads torch and transformers then,
not at ``import nfm``).  :func:`register_auto_classes` makes the transformers Auto classes know
``model_type="nfm"``: ``AutoConfig``, ``AutoModel`` (:class:`NfmModel`), ``AutoModelForPreTraining``
(:class:`NfmForPretraining`), ``AutoModelForMaskedLM`` (:class:`NfmForMaskedModeling`), ``AutoModelForCausalLM``
(:class:`NfmForSpikeGeneration`) and ``AutoModelForSequenceClassification`` (:class:`NfmForBehaviorDecoding`).
``import nfm`` arranges for it to run as soon as transformers' Auto classes are imported (see :mod:`nfm`).
"""
from __future__ import annotations

import importlib

_CONFIG = ("NfmConfig", "MASK_MODES", "MTM_MODES", "PRESETS", "PROMPTS")
_MODELING = ("NfmModel", "NfmPreTrainedModel", "NfmForMaskedModeling", "NfmModelOutput", "NfmMaskedPrediction",
             "NfmMaskedModelingOutput", "session_key")
_BEHAVIOR = ("NfmForBehaviorDecoding", "NfmBehaviorHead", "NfmBehaviorDecodingOutput")
_GENERATION = ("NfmForSpikeGeneration", "NfmForPretraining", "NfmEventDecoder", "NfmSpikeGenerationOutput",
               "NfmPretrainingOutput", "NfmGenerationOutput")
_EXPORTS = {**{n: "configuration_nfm" for n in _CONFIG}, **{n: "modeling_nfm" for n in _MODELING},
            **{n: "modeling_nfm_behavior" for n in _BEHAVIOR}, **{n: "modeling_nfm_generation" for n in _GENERATION}}

#: Auto class name -> name of the nfm class registered for ``model_type="nfm"``.
AUTO_CLASS_NAMES = {
    "AutoModel": "NfmModel",
    "AutoModelForPreTraining": "NfmForPretraining",
    "AutoModelForMaskedLM": "NfmForMaskedModeling",
    "AutoModelForCausalLM": "NfmForSpikeGeneration",
    "AutoModelForSequenceClassification": "NfmForBehaviorDecoding",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    if name == "AUTO_CLASSES":  # Auto class name -> nfm class
        return {auto: __getattr__(cls) for auto, cls in AUTO_CLASS_NAMES.items()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def register_config() -> None:
    """``AutoConfig.register("nfm", NfmConfig)`` (idempotent)."""
    import transformers

    transformers.AutoConfig.register("nfm", __getattr__("NfmConfig"), exist_ok=True)


def register_auto_classes() -> None:
    """Register ``NfmConfig`` and the nfm models with the transformers Auto classes (idempotent).

    In-process registration: after it, ``AutoConfig/AutoModel...from_pretrained(path_or_hub_id)`` resolve
    ``model_type="nfm"`` checkpoints with no ``trust_remote_code`` (the code comes from this package, not from
    the checkpoint).
    """
    import transformers

    register_config()
    config = __getattr__("NfmConfig")
    for auto_name, cls_name in AUTO_CLASS_NAMES.items():
        getattr(transformers, auto_name).register(config, __getattr__(cls_name), exist_ok=True)


__all__ = [*_EXPORTS, "AUTO_CLASSES", "AUTO_CLASS_NAMES", "register_auto_classes", "register_config"]
