"""CopyNat modeling code. Flat sibling files with same-folder imports only, so that it also runs as Hub remote code."""

from .configuration_copynat import CopyNatConfig
from .encoder_heads import CopyNatForSequenceClassification, CopyNatForTokenClassification
from .modeling_copynat import (
    CopyNatEncoderOutput,
    CopyNatForConditionalGeneration,
    CopyNatModel,
    CopyNatPreTrainedModel,
    CopyNatSeq2SeqLMOutput,
    shift_tokens_right,
)

__all__ = [
    "CopyNatConfig",
    "CopyNatEncoderOutput",
    "CopyNatForConditionalGeneration",
    "CopyNatForSequenceClassification",
    "CopyNatForTokenClassification",
    "CopyNatModel",
    "CopyNatPreTrainedModel",
    "CopyNatSeq2SeqLMOutput",
    "shift_tokens_right",
]
