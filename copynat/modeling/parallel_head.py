"""The NAT side of the one decoder: how long the output is (the length predictor, or CTC's upsampled slots), what the
decoder reads in place of the tokens it has not emitted (`<mask>` tokens, or source embeddings copied onto the target
length), which targets training hides (conditional masked LM, glancing), and the NAT losses.

The decoder pass itself is the model's (`CopyNatForConditionalGeneration.nat_pass`: the same decoder without its
causal mask, the same output head). This file is part of the Hub remote code: it imports only torch, transformers
and its siblings.
"""

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_copynat import CopyNatConfig
from .output_head import HeadOutput, OutputHead

__all__ = ["LengthPredictor", "ParallelHead", "source_lengths"]


def source_lengths(source_ids: torch.Tensor, source_mask: torch.Tensor | None) -> torch.Tensor:
    """[batch]: real tokens of each source row."""
    if source_mask is None:
        return torch.full_like(source_ids[:, 0], source_ids.shape[1])
    return source_mask.sum(1)


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


class ParallelHead(nn.Module):
    """The parallel decoder's head: the length predictor (none for CTC, whose length is `ctc_upsample_ratio` x the
    source's), the inputs of a parallel pass, the training targets it hides, and the NAT losses."""

    def __init__(self, config: CopyNatConfig):
        super().__init__()
        self.config = config
        self.is_ctc = config.nat_training == "ctc"
        self.length_predictor = None if self.is_ctc else LengthPredictor(config)

    def length_logits(self, encoder_states: torch.Tensor, source_mask: torch.Tensor | None) -> torch.Tensor | None:
        """[batch, length_classes] scores of the target length, or None for CTC."""
        return None if self.length_predictor is None else self.length_predictor(encoder_states, source_mask)

    def decoder_inputs(self, embed_tokens: nn.Module, tokens: torch.Tensor, target_mask: torch.Tensor,
                       source_ids: torch.Tensor, source_mask: torch.Tensor | None) -> torch.Tensor:
        """Embeddings the NAT decoder reads: the (partly `<mask>`ed) target tokens, or with
        nat_decoder_inputs="copy_source" the source embeddings copied uniformly onto the target length (Gu et al.)."""
        if self.config.nat_decoder_inputs == "mask":
            return embed_tokens(tokens)
        source_embeds = embed_tokens(source_ids)
        src_len, tgt_len = source_lengths(source_ids, source_mask), target_mask.sum(1)
        step = (src_len - 1).float() / (tgt_len - 1).clamp_min(1).float()
        index = (torch.arange(tokens.shape[1], device=tokens.device)[None, :] * step[:, None]).round().long()
        index = index.clamp(max=(src_len - 1)[:, None].clamp_min(0))
        return source_embeds.gather(1, index[..., None].expand(-1, -1, source_embeds.shape[-1]))

    def ctc_slots(self, source_ids: torch.Tensor, source_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """CTC's decoder positions: `ctc_upsample_ratio` per source token (at most max_position_embeddings), as
        (`<mask>` input tokens [batch, slots], target mask [batch, slots])."""
        lengths = (source_lengths(source_ids, source_mask) * self.config.ctc_upsample_ratio).clamp(
            1, self.config.max_position_embeddings)
        target_mask = torch.arange(int(lengths.max()), device=source_ids.device)[None, :] < lengths[:, None]
        tokens = torch.full_like(target_mask, self.config.mask_token_id, dtype=torch.long)
        return tokens.masked_fill(~target_mask, self.config.pad_token_id), target_mask

    def masked_targets(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Conditional masked LM (Mask-Predict): hide a uniformly random number (1..length) of target tokens behind
        `<mask>`; the loss is on the hidden ones. With copy_source inputs every position is predicted.
        Returns (decoder input tokens, positions to predict)."""
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

    def glanced_targets(self, labels: torch.Tensor, guess: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Glancing training (GLAT, Qian et al. 2021): given the model's `guess` of every position from `<mask>`
        inputs, count each sentence's wrong tokens, show `glancing_ratio` x that many reference tokens (at random
        positions) as decoder inputs, and learn the others. A sentence the model gets right is learned with little
        help, one it gets wrong with much. Returns (decoder input tokens, positions to predict)."""
        target_mask = labels != -100
        tokens = labels.masked_fill(~target_mask, self.config.pad_token_id)
        wrong = ((guess != tokens) & target_mask).sum(1)
        shown = (wrong.float() * self.config.glancing_ratio).long()
        ranks = torch.rand(labels.shape, device=labels.device).masked_fill(~target_mask, 2.0).argsort(1).argsort(1)
        revealed = (ranks < shown[:, None]) & target_mask
        predicted = target_mask & ~revealed
        return tokens.masked_fill(predicted, self.config.mask_token_id), predicted

    def ctc_loss(self, head: HeadOutput, output_head: OutputHead, labels: torch.Tensor,
                 slots: torch.Tensor) -> torch.Tensor:
        """CTC (Graves et al. 2006) of the targets over the upsampled pass, the `<mask>` id as the blank, summed over
        alignments, a mean over target tokens. A target longer than its slots allow (repeats need a blank between
        them) costs nothing rather than inf.

        CTC reads a slot's log-probability of the blank and of the row's target tokens only, so those are all it gets
        (`OutputHead.class_log_probs`): row b's classes are the blank and its labels in order, a label equal to the
        one before it sharing that one's class (so a repeat still needs a blank between). The [batch, slots, vocab]
        distribution is never built."""
        valid = labels != -100
        targets = labels.clamp_min(0)
        fresh = torch.ones_like(valid)
        fresh[:, 1:] = targets[:, 1:] != targets[:, :-1]
        # 1.. per new label, 0 the blank; padding points at a last class of its own (CTC reads no target past a
        # row's length, and no padding overwrites a label's class)
        class_index = torch.cumsum(fresh & valid, dim=1).masked_fill(~valid, labels.shape[1] + 1)
        classes = torch.full((labels.shape[0], labels.shape[1] + 2), self.config.mask_token_id, device=labels.device)
        classes.scatter_(1, class_index, targets.masked_fill(~valid, self.config.mask_token_id))
        log_probs = output_head.class_log_probs(head, classes).transpose(0, 1)  # [slots, batch, classes]
        target_lengths = valid.sum(1)
        per_row = F.ctc_loss(log_probs, class_index, slots.sum(1), target_lengths, blank=0, reduction="none",
                             zero_infinity=True)
        # torch's CTC backward assumes each slot's log-probs are a whole log-softmax and adds exp(log_probs) to their
        # gradient (which a softmax's backward then cancels); here they are a few of the vocabulary's, so that term
        # is taken out again, for the slots and rows torch gives a gradient (a row zeroed as infinite gets none).
        counted = (per_row != 0)[None, :, None] & slots.t()[:, :, None]
        spurious = (log_probs.exp() * counted).sum()
        return (per_row.sum() - spurious + spurious.detach()) / target_lengths.sum().clamp_min(1)

    def losses(self, head: HeadOutput, output_head: OutputHead, labels: torch.Tensor, predicted: torch.Tensor,
               length_logits: torch.Tensor | None, source_ids: torch.Tensor,
               source_mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """{"nat_loss"[, "length_loss"]} of a training pass: CTC over the slots (`predicted` is then the slot mask),
        or the cross-entropy of the `predicted` targets (a mean over them) and of the target length (a mean over the
        batch)."""
        if self.is_ctc:
            return {"nat_loss": self.ctc_loss(head, output_head, labels, predicted)}
        nat_loss = output_head.token_loss(head, labels.masked_fill(~predicted, -100)) / predicted.sum().clamp_min(1)
        targets = self.length_predictor.length_to_class((labels != -100).sum(1), source_lengths(source_ids, source_mask))
        return {"nat_loss": nat_loss, "length_loss": F.cross_entropy(length_logits.float(), targets)}
