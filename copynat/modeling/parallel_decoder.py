"""The NAT side of the one decoder: how long the output is (the length predictor), what the decoder reads in place of
the tokens it has not emitted (`<mask>` tokens, or source embeddings copied onto the target length), how training
hides targets (conditional masked LM), and one parallel pass through the decoder without its causal mask.

`ParallelDecoder` holds the methods; `CopyNatForConditionalGeneration` inherits them (its `length_predictor` is a
`LengthPredictor`). This file is part of the Hub remote code: it imports only torch, transformers and its siblings.
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers.cache_utils import EncoderDecoderCache

from .configuration_copynat import CopyNatConfig

__all__ = ["LengthPredictor", "ParallelDecoder"]


class LengthPredictor(nn.Module):
    """NAT length predictor: mean of the non-pad encoder states -> a classifier over target lengths, absolute or as
    an offset from the source length (fairseq's --pred-length-offset)."""

    def __init__(self, config: CopyNatConfig):
        super().__init__()
        self.classifier = nn.Linear(config.d_model, config.length_classes)
        self.offset = config.length_prediction == "offset"
        self.num_classes = config.length_classes

    def forward(self, encoder_states: torch.Tensor, source_mask: torch.Tensor | None) -> torch.Tensor:
        if source_mask is None:
            pooled = encoder_states.mean(dim=1)
        else:
            weights = source_mask.to(encoder_states.dtype)[..., None]
            pooled = (encoder_states * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return self.classifier(pooled)

    def length_to_class(self, target_lengths: torch.Tensor, source_lengths: torch.Tensor) -> torch.Tensor:
        classes = target_lengths - source_lengths + self.num_classes // 2 if self.offset else target_lengths
        return classes.clamp(0, self.num_classes - 1)

    def class_to_length(self, classes: torch.Tensor, source_lengths: torch.Tensor) -> torch.Tensor:
        lengths = classes - self.num_classes // 2 + source_lengths if self.offset else classes
        return lengths.clamp_min(1)


class ParallelDecoder:
    """The parallel decoding methods (a mixin of `CopyNatForConditionalGeneration`)."""

    def nat_decoder_inputs(self, tokens: torch.Tensor, target_mask: torch.Tensor, source_ids, source_mask) -> torch.Tensor:
        """Embeddings the NAT decoder reads: the (partly `<mask>`ed) target tokens, or with
        nat_decoder_inputs="copy_source" the source embeddings copied uniformly onto the target length (Gu et al.)."""
        if self.config.nat_decoder_inputs == "mask":
            return self.model.shared(tokens)
        source_embeds = self.model.shared(source_ids)
        src_len = (source_mask.sum(1) if source_mask is not None else torch.full_like(source_ids[:, 0], source_ids.shape[1]))
        tgt_len = target_mask.sum(1)
        step = (src_len - 1).float() / (tgt_len - 1).clamp_min(1).float()
        index = (torch.arange(tokens.shape[1], device=tokens.device)[None, :] * step[:, None]).round().long()
        index = index.clamp(max=(src_len - 1)[:, None].clamp_min(0))
        return source_embeds.gather(1, index[..., None].expand(-1, -1, source_embeds.shape[-1]))

    def nat_pass(self, tokens, target_mask, encoder_states, source_ids, source_mask, mixture=True, positions=None,
                 cross_attention_cache: EncoderDecoderCache | None = None):
        """One parallel decoder pass: the same decoder without the causal mask, the same output head. With
        `positions` [batch, n] the head reads only those target positions (it works position by position, so their
        outputs are the full pass's): mask-predict re-predicts only the tokens it hid again. A `cross_attention_cache`
        (an empty EncoderDecoderCache on the first pass) keeps the cross-attention keys and values for later passes
        over the same encoder states."""
        embeds = self.nat_decoder_inputs(tokens, target_mask, source_ids, source_mask)
        decoded = self.model.decoder(inputs_embeds=embeds, encoder_hidden_states=encoder_states,
                                     encoder_padding_mask=source_mask, decoder_padding_mask=target_mask, causal=False,
                                     past_key_values=cross_attention_cache, use_cache=False).last_hidden_state
        if positions is not None:
            index = positions[..., None].expand(-1, -1, decoded.shape[-1])
            decoded, embeds = decoded.gather(1, index), embeds.gather(1, index)
        return self.output_head(decoded, embeds, encoder_states, source_ids, source_mask, mixture=mixture)

    def nat_training_tokens(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Conditional masked LM (Mask-Predict): hide a uniformly random number (1..length) of target tokens behind
        `<mask>`; the loss is on the hidden ones. With copy_source inputs every position is predicted."""
        target_mask = labels != -100
        tokens = labels.masked_fill(~target_mask, self.config.pad_token_id)
        if self.config.nat_decoder_inputs != "mask":
            return tokens, target_mask
        lengths = target_mask.sum(1)
        num_masked = (torch.rand(lengths.shape, device=labels.device) * lengths).long() + 1
        scores = torch.rand(labels.shape, device=labels.device).masked_fill(~target_mask, 2.0)
        ranks = scores.argsort(dim=1).argsort(dim=1)
        masked = (ranks < num_masked[:, None]) & target_mask
        return tokens.masked_fill(masked, self.config.mask_token_id), masked

    def glancing_tokens(self, labels: torch.Tensor, encoder_states, source_ids, source_mask,
                        ratio: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Glancing training (GLAT, Qian et al. 2021): decode every position at once from `<mask>` inputs (no
        gradient), count each sentence's wrong tokens, show `ratio` x that many reference tokens (at random positions)
        as decoder inputs, and learn the others. A sentence the model gets right is learned with little help, one it
        gets wrong with much. Returns (decoder input tokens, positions to predict)."""
        target_mask = labels != -100
        tokens = labels.masked_fill(~target_mask, self.config.pad_token_id)
        with torch.no_grad():
            head = self.nat_pass(tokens.masked_fill(target_mask, self.config.mask_token_id), target_mask,
                                 encoder_states, source_ids, source_mask, mixture=False)
            _, guess = self.most_likely_tokens(head, source_ids, overwrite_logits=True)
        wrong = ((guess != tokens) & target_mask).sum(1)
        shown = (wrong.float() * ratio).long()
        ranks = torch.rand(labels.shape, device=labels.device).masked_fill(~target_mask, 2.0).argsort(1).argsort(1)
        revealed = (ranks < shown[:, None]) & target_mask
        predicted = target_mask & ~revealed
        return tokens.masked_fill(predicted, self.config.mask_token_id), predicted

    def ctc_slots(self, source_ids: torch.Tensor, source_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """CTC's decoder positions: `ctc_upsample_ratio` per source token (at most max_position_embeddings), as
        (`<mask>` input tokens [batch, slots], target mask [batch, slots])."""
        source_lengths = source_mask.sum(1) if source_mask is not None else torch.full_like(source_ids[:, 0],
                                                                                            source_ids.shape[1])
        lengths = (source_lengths * self.config.ctc_upsample_ratio).clamp(1, self.config.max_position_embeddings)
        target_mask = torch.arange(int(lengths.max()), device=source_ids.device)[None, :] < lengths[:, None]
        tokens = torch.full_like(target_mask, self.config.mask_token_id, dtype=torch.long)
        return tokens.masked_fill(~target_mask, self.config.pad_token_id), target_mask

    def ctc_loss(self, labels, encoder_states, source_ids, source_mask, mixture=True):
        """(the pass's HeadOutput, {"nat_loss"}): CTC (Graves et al. 2006) of the targets over the upsampled parallel
        pass, the `<mask>` id as the blank, summed over alignments, a mean over target tokens. A target longer than
        its slots allow (repeats need a blank between them) costs nothing rather than inf."""
        tokens, slots = self.ctc_slots(source_ids, source_mask)
        head = self.nat_pass(tokens, slots, encoder_states, source_ids, source_mask, mixture=True)
        log_probs = self.log_probs(head.logits).float().transpose(0, 1)  # [slots, batch, vocab]
        target_lengths = (labels != -100).sum(1)
        loss = F.ctc_loss(log_probs, labels.clamp_min(0), slots.sum(1), target_lengths,
                          blank=self.config.mask_token_id, reduction="sum", zero_infinity=True)
        if not mixture:
            head = head._replace(logits=None)
        return head, {"nat_loss": loss / target_lengths.sum().clamp_min(1)}

    def nat_losses(self, labels, length_logits, encoder_states, source_ids, source_mask, mixture=True):
        """(the pass's HeadOutput, {"nat_loss", "length_loss"}): the cross-entropy of the hidden targets (a mean over
        them) and of the target length (a mean over the batch). The hidden targets: conditional masked LM, or with
        `nat_training="glancing"` what glancing leaves unseen. With `nat_training="ctc"`, `ctc_loss`."""
        if self.config.nat_training == "ctc":
            return self.ctc_loss(labels, encoder_states, source_ids, source_mask, mixture=mixture)
        if self.config.nat_training == "glancing":
            tokens, predicted = self.glancing_tokens(labels, encoder_states, source_ids, source_mask,
                                                     self.config.glancing_ratio)
        else:
            tokens, predicted = self.nat_training_tokens(labels)
        head = self.nat_pass(tokens, labels != -100, encoder_states, source_ids, source_mask, mixture=mixture)
        nat_loss = self.token_loss(head, labels.masked_fill(~predicted, -100), source_ids, source_mask)
        source_lengths = source_mask.sum(1) if source_mask is not None else torch.full_like(labels[:, 0],
                                                                                            source_ids.shape[1])
        length_targets = self.length_predictor.length_to_class((labels != -100).sum(1), source_lengths)
        return head, {"nat_loss": nat_loss / predicted.sum().clamp_min(1),
                      "length_loss": F.cross_entropy(length_logits.float(), length_targets)}
