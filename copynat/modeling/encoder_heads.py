"""The lecture's other two output kinds on the CopyNat encoder: one label per sequence, one label per position.

This file is part of the Hub remote code: it imports only torch, transformers and its siblings.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput, TokenClassifierOutput

from .configuration_copynat import CopyNatConfig
from .modeling_copynat import CopyNatEncoder, CopyNatPreTrainedModel
from .transformer_blocks import TokenEmbedding, source_padding_mask

__all__ = ["CopyNatEncoderOnlyModel", "CopyNatForSequenceClassification", "CopyNatForTokenClassification"]


class CopyNatEncoderOnlyModel(CopyNatPreTrainedModel):
    """Shared base of the encoder heads: keeps the seq2seq key names (`model.shared`, `model.encoder`), so a trained
    CopyNat checkpoint fine-tunes into a classifier; the decoder is not built."""

    _tied_weights_keys = {"model.encoder.embed_tokens.weight": "model.shared.weight"}
    _ties_ignore_config = True

    def __init__(self, config: CopyNatConfig):
        super().__init__(config)
        scale = math.sqrt(config.d_model) if config.scale_embedding else 1.0
        self.model = nn.Module()
        self.model.shared = TokenEmbedding(config.vocab_size, config.d_model, config.pad_token_id, scale)
        self.model.encoder = CopyNatEncoder(config, self.model.shared)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.d_model, config.num_labels)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.shared

    def get_encoder(self, modality: str | None = None) -> CopyNatEncoder:
        return self.model.encoder

    def encode(self, input_ids, attention_mask, inputs_embeds, output_attentions, output_hidden_states):
        return self.model.encoder(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                                  output_attentions=output_attentions, output_hidden_states=output_hidden_states)


class CopyNatForSequenceClassification(CopyNatEncoderOnlyModel):
    """One label per sequence (sentiment, topic): the mean of the non-pad encoder states -> a linear classifier."""

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, labels=None, output_attentions=None,
                output_hidden_states=None, return_dict=None, **kwargs) -> SequenceClassifierOutput:
        encoded = self.encode(input_ids, attention_mask, inputs_embeds, output_attentions, output_hidden_states)
        mask = source_padding_mask(attention_mask, input_ids, self.config.pad_token_id)
        states = encoded.last_hidden_state
        weights = mask.to(states.dtype)[..., None] if mask is not None else torch.ones_like(states[..., :1])
        pooled = (states * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        logits = self.classifier(self.dropout(pooled))
        loss = None
        if labels is not None:
            problem = self.config.problem_type or (
                "regression" if self.config.num_labels == 1
                else "single_label_classification" if labels.dtype in (torch.long, torch.int) else "multi_label_classification")
            if problem == "regression":
                loss = F.mse_loss(logits.squeeze(-1), labels.float().view(-1))
            elif problem == "single_label_classification":
                loss = F.cross_entropy(logits, labels.view(-1))
            else:
                loss = F.binary_cross_entropy_with_logits(logits, labels.float())
        output = SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=encoded.hidden_states,
                                          attentions=encoded.attentions)
        return output if return_dict is not False else output.to_tuple()


class CopyNatForTokenClassification(CopyNatEncoderOnlyModel):
    """One label per position (tagging, "I saw a saw"): each encoder state -> a linear classifier."""

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, labels=None, output_attentions=None,
                output_hidden_states=None, return_dict=None, **kwargs) -> TokenClassifierOutput:
        encoded = self.encode(input_ids, attention_mask, inputs_embeds, output_attentions, output_hidden_states)
        logits = self.classifier(self.dropout(encoded.last_hidden_state))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
        output = TokenClassifierOutput(loss=loss, logits=logits, hidden_states=encoded.hidden_states,
                                       attentions=encoded.attentions)
        return output if return_dict is not False else output.to_tuple()
