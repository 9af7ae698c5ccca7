"""The one output head, shared by AT and NAT: each target position's decoder state -> the vocabulary projection with
the copy mechanism mixed in, its loss, and its most likely token.

This file is part of the Hub remote code: it imports only torch, transformers and its siblings.
"""

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_copynat import CopyNatConfig
from .copy_completion import word_piece_classes
from .copy_generator import CopyGenerator, CopyNatCache, CopyOutput
from .utf8_validity import byte_token_bounds, byte_token_classes

__all__ = ["HeadOutput", "OutputHead", "max_over_last_dim", "whole_characters"]


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


def max_over_last_dim(x: torch.Tensor, block: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, indices) of the maximum over the last dimension, first index on ties: torch.max(x, -1).

    On CPU torch's max/argmax with indices runs a scalar loop (~1 ns an element, 0.24 ms on [32, 8000]); finding the
    winning block of `block` columns with the vectorized amax and searching only that block is 3x faster."""
    if x.device.type != "cpu" or x.shape[-1] < 4 * block:
        return torch.max(x, dim=-1)
    flat = x.reshape(-1, x.shape[-1])
    whole = flat.shape[-1] - flat.shape[-1] % block
    block_max = flat[:, :whole].unflatten(-1, (whole // block, block)).amax(-1)
    if whole < flat.shape[-1]:
        block_max = torch.cat((block_max, flat[:, whole:].amax(-1, keepdim=True)), dim=-1)
    start = block_max.argmax(-1) * block  # the first block holding the row's maximum
    columns = (start[:, None] + torch.arange(block, device=x.device)).clamp_max(flat.shape[-1] - 1)
    values, offset = flat.gather(1, columns).max(-1)
    return values.view(x.shape[:-1]), (start + offset).view(x.shape[:-1])


class OutputHead(nn.Module):
    """The output layer: decoder state -> vocabulary logits (`lm_head`, tied to the token embedding), mixed with the
    copy distribution over the source (`copy_generator`, the pointer-generator) when `use_copy_mechanism` is on.

    It also keeps what it knows of the tokenizer's pieces (`set_vocabulary`), saved with the weights: how each
    byte-level piece begins and ends a UTF-8 character (`byte_token_classes`, `byte_token_bounds`) and a word
    (`word_piece_classes`), which generate()'s constraints read."""

    def __init__(self, config: CopyNatConfig):
        super().__init__()
        self.config = config
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.copy_generator = CopyGenerator(config) if config.use_copy_mechanism else None
        # per piece, filled by set_vocabulary: how it begins and ends a UTF-8 character and a word
        self.register_buffer("byte_token_classes", whole_characters(config.vocab_size), persistent=True)
        self.register_buffer("byte_token_bounds", torch.zeros(config.vocab_size, 3, dtype=torch.int32), persistent=True)
        self.register_buffer("word_piece_classes", torch.zeros(config.vocab_size, 3, dtype=torch.int8), persistent=True)

    def set_vocabulary(self, vocab: dict[str, int]) -> None:
        """What the model needs to know of its tokenizer's pieces (`tokenizer.get_vocab()`): which pieces are the
        same text with and without a leading space (the copy head's respacing), how each byte-level piece begins and
        ends a UTF-8 character (so generate() never breaks one), and which pieces begin or carry on a word (so
        generate() copies a source word whole)."""
        if self.copy_generator is not None and self.copy_generator.respace is not None:
            self.copy_generator.set_vocabulary(vocab)
        size = self.byte_token_classes.shape[0]
        for buffer, table in ((self.byte_token_classes, byte_token_classes(vocab, size)),
                              (self.byte_token_bounds, byte_token_bounds(vocab, size)),
                              (self.word_piece_classes, word_piece_classes(vocab, size))):
            buffer.copy_(table.to(buffer.device))

    @property
    def knows_vocabulary(self) -> bool:
        """Whether `set_vocabulary` has run (the word table is all zeros until then)."""
        return bool(self.word_piece_classes.any())

    def copy_cache(self, cache) -> "CopyNatCache | None":
        """The CopyNatCache in which the copy head keeps the earlier steps and the source's keys, or None. A copy head
        that reads earlier steps (location, coverage) cannot go on from another cache that already holds steps."""
        copier = self.copy_generator
        if cache is None or copier is None or hasattr(cache, "copy_memory"):  # a CopyNatCache, or drafted decoding's
            return cache if copier is not None else None
        if copier.reads_earlier_steps and cache.get_seq_length() > 0:
            raise ValueError(f"this model's copy head reads the earlier decoding steps, which it keeps in a "
                             f"CopyNatCache; got a {type(cache).__name__}: pass CopyNatCache(model.config) (or let "
                             "generate() make one)")
        return None

    def forward(self, decoder_states: torch.Tensor, decoder_inputs_embeds: torch.Tensor, encoder_states: torch.Tensor,
                source_ids: torch.Tensor | None, source_mask: torch.Tensor | None, mixture: bool = True,
                causal: bool = False, cache: CopyNatCache | None = None) -> HeadOutput:
        """Decoder states -> HeadOutput(logits, p_gen, copy attention, vocab logits, copy). With the copy mechanism
        the logits are log p_mix, None when `mixture=False` (`token_loss` and `most_likely_tokens` do without).
        `causal` (autoregressive) positions also run location and coverage, which read the copy attention of the
        earlier positions: a `cache` keeps it between generate() steps, and the copy attention's keys over the
        source."""
        vocab_logits = self.lm_head(decoder_states)
        copier = self.copy_generator
        if copier is None:
            return HeadOutput(vocab_logits, None, None, vocab_logits)
        if source_ids is None:
            raise ValueError("the copy mechanism needs the source token ids: pass input_ids, or encoder_outputs "
                             "produced by this model's encoder (they carry source_ids)")
        stepwise = causal and copier.reads_earlier_steps
        if cache is not None and cache.copy_keys is None:  # the source's keys, once a generate() call
            cache.copy_keys = copier.source_keys(encoder_states)
        memory = cache.copy_memory(copier.coverage is not None) if stepwise and cache is not None else None
        copy = copier(vocab_logits, decoder_states, decoder_inputs_embeds, encoder_states, source_ids, source_mask,
                      mixture=mixture, stepwise=stepwise, memory=memory,
                      keys=cache.copy_keys if cache is not None else None)
        if stepwise and cache is not None:
            cache.remember_copy_attention(copy.attention)
        return HeadOutput(copy.log_mixture, copy.p_gen, copy.attention, vocab_logits, copy)

    def token_loss(self, head: HeadOutput, labels: torch.Tensor) -> torch.Tensor:
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

    def class_log_probs(self, head: HeadOutput, classes: torch.Tensor) -> torch.Tensor:
        """log p(classes[b, k]) at every position, [batch, tgt, K] in fp32, from `forward(..., mixture=False)`:
        the log-mixture gathered at a few tokens per row without building it over the vocabulary (clamped at 1e-10
        as the full one is)."""
        logits = head.vocab_logits.float()
        index = classes[:, None, :].expand(-1, logits.shape[1], -1)
        log_softmax = logits.gather(-1, index) - logits.logsumexp(-1, keepdim=True)
        if self.copy_generator is None:
            return log_softmax
        copy = head.copy
        holds = (copy.slot_ids[:, :, None] == classes[:, None, :]).to(copy.slot_attention.dtype)  # [batch, slots, K]
        copied = copy.slot_attention @ holds
        p_gen = copy.p_gen[..., None]
        return (p_gen * log_softmax.exp() + (1.0 - p_gen) * copied).clamp_min(1e-10).log()

    def log_probs(self, logits: torch.Tensor) -> torch.Tensor:
        """Log-probabilities from the head's `logits` (already log p_mix with the copy mechanism)."""
        return logits if self.copy_generator is not None else logits.float().log_softmax(-1)

    def most_likely_tokens(self, head: HeadOutput, overwrite_logits: bool = False, allow_mask: bool = False,
                           mask_penalty: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-prob, id) of the most likely token other than `<mask>` at each position, from
        `forward(..., mixture=False)`: the [batch, tgt, vocab] distribution is never built (parallel decoding needs
        only the winners). `overwrite_logits=True` lets it use `head.vocab_logits` as scratch space (parallel
        decoding drops them); `allow_mask=True` lets `<mask>` win (CTC's blank), its log-prob lowered by
        `mask_penalty`."""
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
