"""nfm model family: configuration, backbone, MtM / Neuroformer / pretraining / behaviour heads.

Call :func:`register_auto_classes` (``import nfm`` does it) to make the Auto classes know ``model_type="nfm"``:
``AutoConfig``, ``AutoModel`` (backbone), ``AutoModelForPreTraining`` (:class:`NfmForPretraining`),
``AutoModelForMaskedLM`` (:class:`NfmForMaskedModeling`), ``AutoModelForCausalLM``
(:class:`NfmForSpikeGeneration`) and ``AutoModelForSequenceClassification`` (:class:`NfmForBehaviorDecoding`).
"""
from .configuration_nfm import MASK_MODES, MTM_MODES, PRESETS, PROMPTS, NfmConfig
from .modeling_nfm import (
    NfmBehaviorDecodingOutput,
    NfmForBehaviorDecoding,
    NfmForMaskedModeling,
    NfmForPretraining,
    NfmForSpikeGeneration,
    NfmGenerationOutput,
    NfmMaskedModelingOutput,
    NfmModel,
    NfmModelOutput,
    NfmPreTrainedModel,
    NfmPretrainingOutput,
    NfmSpikeGenerationOutput,
    session_key,
)

#: Auto class name -> nfm class registered for ``model_type="nfm"``.
AUTO_CLASSES = {
    "AutoModel": NfmModel,
    "AutoModelForPreTraining": NfmForPretraining,
    "AutoModelForMaskedLM": NfmForMaskedModeling,
    "AutoModelForCausalLM": NfmForSpikeGeneration,
    "AutoModelForSequenceClassification": NfmForBehaviorDecoding,
}


def register_auto_classes() -> None:
    """Register ``NfmConfig`` and the nfm models with the transformers Auto classes (idempotent).

    In-process registration: after it, ``AutoConfig/AutoModel...from_pretrained(path_or_hub_id)`` resolve
    ``model_type="nfm"`` checkpoints with no ``trust_remote_code`` (the code comes from this package, not from
    the checkpoint).
    """
    import transformers

    transformers.AutoConfig.register("nfm", NfmConfig, exist_ok=True)
    for auto_name, model_cls in AUTO_CLASSES.items():
        getattr(transformers, auto_name).register(NfmConfig, model_cls, exist_ok=True)


__all__ = [
    "NfmConfig", "NfmModel", "NfmPreTrainedModel", "NfmForMaskedModeling", "NfmForSpikeGeneration",
    "NfmForPretraining", "NfmForBehaviorDecoding", "NfmModelOutput", "NfmMaskedModelingOutput",
    "NfmSpikeGenerationOutput", "NfmPretrainingOutput", "NfmBehaviorDecodingOutput", "NfmGenerationOutput",
    "MASK_MODES", "MTM_MODES", "PROMPTS", "PRESETS", "AUTO_CLASSES", "register_auto_classes", "session_key",
]
