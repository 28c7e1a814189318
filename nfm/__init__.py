"""nfm: Hugging Face-native foundation models for cellular-resolution neural population data.

``import nfm`` registers the model family with the transformers Auto classes, so
``AutoModel.from_pretrained(folder_or_hub_id)`` loads nfm checkpoints without
``trust_remote_code``.
"""
__version__ = "0.1.0"

from .models import register_auto_classes as _register_auto_classes

_register_auto_classes()
