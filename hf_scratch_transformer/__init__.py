"""hf-scratch-transformer: the "Attention Is All You Need" Transformer, written from scratch as a Hugging Face model.

Importing the package registers the model with the Auto classes, so that `AutoConfig`, `AutoModel`,
`AutoModelForSeq2SeqLM` and `AutoModelForSequenceClassification` build and load it, and tells the classes to
write `auto_map` into saved configs, so that a Python without this package loads them with
`trust_remote_code=True`.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
)

from .configuration_scratch_transformer import ScratchTransformerConfig
from .modeling_scratch_transformer import (
    ScratchTransformerForConditionalGeneration,
    ScratchTransformerForSequenceClassification,
    ScratchTransformerModel,
    ScratchTransformerPreTrainedModel,
)

__version__ = "0.1.0"

AutoConfig.register(ScratchTransformerConfig.model_type, ScratchTransformerConfig, exist_ok=True)
AutoModel.register(ScratchTransformerConfig, ScratchTransformerModel, exist_ok=True)
AutoModelForSeq2SeqLM.register(ScratchTransformerConfig, ScratchTransformerForConditionalGeneration, exist_ok=True)
AutoModelForSequenceClassification.register(
    ScratchTransformerConfig, ScratchTransformerForSequenceClassification, exist_ok=True
)

# `register_for_auto_class` makes `save_pretrained` write `auto_map` and copy the configuration and modeling
# files next to the weights: what `trust_remote_code=True` needs.
ScratchTransformerConfig.register_for_auto_class()
ScratchTransformerModel.register_for_auto_class("AutoModel")
ScratchTransformerForConditionalGeneration.register_for_auto_class("AutoModelForSeq2SeqLM")
ScratchTransformerForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")

__all__ = [
    "ScratchTransformerConfig",
    "ScratchTransformerPreTrainedModel",
    "ScratchTransformerModel",
    "ScratchTransformerForConditionalGeneration",
    "ScratchTransformerForSequenceClassification",
]
