"""nfm: Hugging Face-native foundation models for cellular-resolution neural population data.

``import nfm`` is light (no torch, no transformers): the model classes are loaded on first use
(``from nfm import NfmConfig, NfmForPretraining``), and the transformers Auto classes learn
``model_type="nfm"`` as soon as transformers' Auto modules are imported, so
``AutoModel.from_pretrained(folder_or_hub_id)`` loads nfm checkpoints without ``trust_remote_code``.

How the Auto registration is deferred: ``import nfm`` adds a small import hook (:mod:`nfm._auto`) that runs
:func:`nfm.models.register_config` right after ``transformers.models.auto.configuration_auto`` is imported and
:func:`nfm.models.register_auto_classes` right after ``transformers.models.auto.modeling_auto`` is; when those
modules are already imported, it registers at once.  :func:`register_auto_classes` does the same explicitly.
"""
from __future__ import annotations

__version__ = "0.1.0"

from . import _auto

_MODEL_NAMES = (
    "NfmConfig", "NfmModel", "NfmPreTrainedModel", "NfmForMaskedModeling", "NfmForSpikeGeneration",
    "NfmForPretraining", "NfmForBehaviorDecoding", "NfmModelOutput", "NfmMaskedModelingOutput",
    "NfmSpikeGenerationOutput", "NfmPretrainingOutput", "NfmBehaviorDecodingOutput", "NfmGenerationOutput",
    "NfmMaskedPrediction", "MASK_MODES", "MTM_MODES", "PROMPTS", "PRESETS", "AUTO_CLASSES", "session_key",
)


def __getattr__(name: str):
    if name in _MODEL_NAMES:
        from . import models

        return getattr(models, name)
    raise AttributeError(f"module 'nfm' has no attribute {name!r}")


def register_auto_classes() -> None:
    """Register the nfm config and models with the transformers Auto classes now (idempotent)."""
    from .models import register_auto_classes as register

    register()


_auto.install()

__all__ = [*_MODEL_NAMES, "register_auto_classes", "__version__"]
