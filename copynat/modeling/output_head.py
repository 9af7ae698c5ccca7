"""The one output head, shared by AT and NAT: each target position's decoder state -> the vocabulary projection with
the copy mechanism mixed in, its loss, and its most likely token.

`OutputHead` holds the methods; `CopyNatForConditionalGeneration` inherits them and builds the parts they use
(`lm_head`, `copy_generator`, the `byte_token_classes`, `byte_token_bounds` and `word_piece_classes` buffers).
This file is part of the Hub remote code: it imports only torch, transformers and its siblings.
"""

from typing import NamedTuple

import torch
import torch.nn.functional as F
from transformers.cache_utils import Cache

from .copy_completion import word_piece_classes
from .copy_generator import CopyNatCache, CopyOutput, copy_runs
from .generation_copynat import max_over_last_dim
from .utf8_validity import byte_token_bounds, byte_token_classes

__all__ = ["HeadOutput", "OutputHead", "whole_characters"]


class HeadOutput(NamedTuple):
    """The output head's view of each target position (a tuple: `logits, p_gen, copy_attention, ... = ...`)."""

    logits: torch.Tensor | None  # vocabulary logits; with the copy mechanism log p_mix (None when mixture=False)
    p_gen: torch.Tensor | None  # [batch, tgt] generation probability (copy mechanism only)
    copy_attention: torch.Tensor | None  # [batch, tgt, src] copy distribution over source positions
    vocab_logits: torch.Tensor  # the generation logits before the copy mixture
    copy: CopyOutput | None = None  # everything the copy head computed (its slots, the coverage loss)


def whole_characters(vocab_size: int) -> torch.Tensor:
    """`byte_token_classes` of a vocabulary whose pieces are all whole characters (nothing to constrain)."""
    return torch.tensor([[0, 0, 0, 1]], dtype=torch.int8).repeat(vocab_size, 1)


class OutputHead:
    """The output head's methods (a mixin of `CopyNatForConditionalGeneration`)."""

    def set_vocabulary(self, vocab: dict[str, int]) -> None:
        """What the model needs to know of its tokenizer's pieces (`tokenizer.get_vocab()`), kept with its weights:
        which pieces are the same text with and without a leading space (the copy head's respacing), and how each
        byte-level piece begins and ends a UTF-8 character (so generate() never breaks one), and which pieces begin
        or carry on a word (so generate() copies a source word whole). copynat-train calls it;
        call it yourself after building a model around a tokenizer."""
        if self.copy_generator is not None and self.copy_generator.respace is not None:
            self.copy_generator.set_vocabulary(vocab)
        table = byte_token_classes(vocab, self.byte_token_classes.shape[0])
        self.byte_token_classes.copy_(table.to(self.byte_token_classes.device))
        bounds = byte_token_bounds(vocab, self.byte_token_bounds.shape[0])
        self.byte_token_bounds.copy_(bounds.to(self.byte_token_bounds.device))
        table = word_piece_classes(vocab, self.word_piece_classes.shape[0])
        self.word_piece_classes.copy_(table.to(self.word_piece_classes.device))

    def copy_step_state(self, cache: Cache | None, decoder_input_ids: torch.Tensor | None):
        """(CopyNatCache or None, decoder inputs so far) for the copy head. Continuation, location and coverage read
        earlier steps: a cached step finds them in a CopyNatCache (generate() makes one), which this call extends."""
        copier = self.copy_generator
        reads_history = copier is not None and copier.reads_earlier_steps
        if cache is None or not reads_history:
            return None, decoder_input_ids
        if not isinstance(cache, CopyNatCache):
            if cache.get_seq_length() > 0:
                raise ValueError(f"this model's copy head reads the earlier decoding steps, which it keeps in a "
                                 f"CopyNatCache; got a {type(cache).__name__}: pass CopyNatCache(model.config) (or "
                                 "let generate() make one)")
            return None, decoder_input_ids
        if decoder_input_ids is None:
            return cache, None
        return cache, cache.append("decoder_ids", decoder_input_ids)

    def output_head(self, decoder_states, decoder_inputs_embeds, encoder_states, source_ids, source_mask,
                    mixture=True, decoder_history=None, cache: "CopyNatCache | None" = None,
                    causal: bool = False) -> HeadOutput:
        """Decoder states -> HeadOutput(logits, p_gen, copy attention, vocab logits, copy). With the copy mechanism
        the logits are log p_mix, None when `mixture=False` (`token_loss` and `most_likely_tokens` do without).
        `decoder_history` (the decoder input ids up to these positions) feeds the copy continuation; `causal`
        decoding also runs location and coverage, which read the copy attention of the earlier steps: a `cache`
        keeps it between generate() steps, and the copy attention's keys over the source."""
        vocab_logits = self.lm_head(decoder_states)
        copier = self.copy_generator
        if copier is None:
            return HeadOutput(vocab_logits, None, None, vocab_logits)
        if source_ids is None:
            raise ValueError("the copy mechanism needs the source token ids: pass input_ids, or encoder_outputs "
                             "produced by this model's encoder (they carry source_ids)")
        runs = None
        if decoder_history is not None and copier.continuation is not None:
            runs = copy_runs(copier.canonical_ids(decoder_history), copier.canonical_ids(source_ids),
                             decoder_states.shape[1], copier.continuation_window, source_mask)
        stepwise = causal and copier.attends_step_by_step
        if cache is not None and cache.copy_keys is None:  # the source's keys, once a generate() call
            cache.copy_keys = copier.source_keys(encoder_states)
        copy = copier(vocab_logits, decoder_states, decoder_inputs_embeds, encoder_states, source_ids, source_mask,
                      mixture=mixture, runs=runs, stepwise=stepwise,
                      earlier=cache.copy_attention if stepwise and cache is not None else None,
                      keys=cache.copy_keys if cache is not None else None)
        if stepwise and cache is not None:
            cache.append("copy_attention", copy.attention)
        return HeadOutput(copy.log_mixture, copy.p_gen, copy.attention, vocab_logits, copy)

    def token_loss(self, head: HeadOutput, labels: torch.Tensor, source_ids: torch.Tensor | None,
                   source_mask: torch.Tensor | None) -> torch.Tensor:
        """Summed (label-smoothed) cross-entropy of the output head over positions whose label is not -100."""
        smoothing = self.config.label_smoothing
        if self.copy_generator is None:
            return F.cross_entropy(head.logits.reshape(-1, head.logits.shape[-1]).float(), labels.reshape(-1),
                                   ignore_index=-100, reduction="sum", label_smoothing=smoothing)
        valid = labels != -100
        label, mean = self.copy_generator.loss_terms(head.vocab_logits, head.copy, labels, smoothing=smoothing > 0)
        nll = -label.masked_fill(~valid, 0.0).sum()  # a mask, not an index: no gather of the valid positions
        if mean is None:
            return nll
        return (1.0 - smoothing) * nll - smoothing * mean.masked_fill(~valid, 0.0).sum()

    def log_probs(self, logits: torch.Tensor) -> torch.Tensor:
        return logits if self.copy_generator is not None else logits.float().log_softmax(-1)

    def most_likely_tokens(self, head: HeadOutput, source_ids: torch.Tensor | None, overwrite_logits: bool = False,
                           allow_mask: bool = False, mask_penalty: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-prob, id) of the most likely token other than `<mask>` at each position, from
        `output_head(..., mixture=False)`: the [batch, tgt, vocab] distribution is never built (parallel decoding needs
        only the winners).
        `overwrite_logits=True` lets it use `head.vocab_logits` as scratch space (parallel decoding drops them);
        `allow_mask=True` lets `<mask>` win (CTC's blank), its log-prob lowered by `mask_penalty`."""
        logits = head.vocab_logits.float()
        if logits is head.vocab_logits and not overwrite_logits:
            logits = logits.clone()
        log_probs = torch.log_softmax(logits, dim=-1, out=logits)  # in place: one [batch, tgt, vocab] tensor in all
        mask_id = None if allow_mask else self.config.mask_token_id
        if mask_id is not None:  # never an output: mask-predict would read an emitted <mask> as "re-predict here"
            log_probs[..., mask_id] = float("-inf")
        elif mask_penalty:
            log_probs[..., self.config.mask_token_id] -= mask_penalty
        top_log_prob, top_token = max_over_last_dim(log_probs)
        if self.copy_generator is None:
            return top_log_prob, top_token
        return self.copy_generator.most_likely(top_log_prob, top_token, log_probs, head.copy, banned_token_id=mask_id)
