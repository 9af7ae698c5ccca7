"""The copy mechanism (pointer-generator) of CopyNat: the output head that can emit any source token, seen or not.

p(w) = p_gen * softmax(vocab logits)(w) + (1 - p_gen) * (copy attention summed over the source slots holding w).

These additions make it copy anything a user types, not just names built like its training names:

- **location** (Chorowski et al. 2015): each step's copy attention sees where the last step's attended, and the
  decoder state weighs "the same position, the next one, the one after": a copy steps on by one position, even
  through an unseen script whose byte pieces repeat every other position ("à", "¤", "à", ...);
- **previous-token keys**: each key also reads the encoder state of the token before it, so the decoder can point
  at "the token after `am`" where a copy starts (in Chinese, where no space marks the start of a name);
- **coverage** (See et al. 2017, off by default): the copy attention sees how much attention each source position
  has had so far, and a loss penalises attending to it again;
- **respacing**: byte-level BPE spells a word with its leading space (" Kuroro" -> "ĠK", "ur", "oro") and without
  it ("Kuroro" at the start of a line or after Chinese text -> "K", "ur", "oro"). Each source position offers its
  token both ways (a learned gate shares the attention out), so a name copies across those contexts.

Location and coverage are one recurrence over target positions (`CopyAttentionRecurrence`), the same in training,
in decoding and with coverage. Decoding step by step, the head reads what it did at the earlier steps; `CopyNatCache`
keeps that between generate() steps, beside the keys and values.

This file is part of the Hub remote code: it imports only torch and transformers.
"""

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from transformers.cache_utils import DynamicCache, EncoderDecoderCache, StaticCache

__all__ = ["CopyAttentionRecurrence", "CopyGenerator", "CopyMemory", "CopyNatCache", "CopyOutput", "respaced_token_ids"]

#: Word-start markers of subword vocabularies: byte-level BPE's "Ġ" (a space byte) and SentencePiece's "▁".
WORD_START_MARKERS = ("Ġ", "▁")


class CopyOutput(NamedTuple):
    """What the copy head computes at each target position. The *slots* are what it can copy: each source position's
    token, and with respacing the same token with its leading space added or removed ([batch, slots])."""

    log_mixture: torch.Tensor | None  # [batch, tgt, vocab] log p_mix in fp32; None when mixture=False
    p_gen: torch.Tensor  # [batch, tgt] generation probability
    attention: torch.Tensor  # [batch, tgt, src] copy attention over source positions
    slot_ids: torch.Tensor  # [batch, slots] the token each slot emits
    slot_attention: torch.Tensor  # [batch, tgt, slots] the copy attention shared out over the slots
    slot_mask: torch.Tensor | None  # [batch, slots] True at real (non-pad) slots
    coverage_loss: torch.Tensor | None  # [batch, tgt] sum over source positions of min(attention, coverage)


def respaced_token_ids(vocab: dict[str, int]) -> torch.Tensor:
    """For a tokenizer vocabulary {piece: id}: [vocab size] ids of each piece with its word-start marker removed (or
    added, for a piece without one), or the id itself where the vocabulary has no such piece."""
    table = torch.arange(max(vocab.values()) + 1)
    for piece, index in vocab.items():
        for marker in WORD_START_MARKERS:
            other = piece[len(marker):] if piece.startswith(marker) else marker + piece
            if other in vocab and len(other) > 0 and other != marker:
                table[index] = vocab[other]
                break
    return table


class CopyGenerator(nn.Module):
    """Pointer-generator (See et al. 2017): p(w) = p_gen * softmax(vocab logits)(w) + (1 - p_gen) * sum of copy
    attention over source positions holding w. p_gen is a learned gate on decoder state, copy context and input."""

    def __init__(self, config):
        super().__init__()
        d = config.d_model
        self.query = nn.Linear(d, d, bias=False)
        self.key = nn.Linear(d, d, bias=False)
        self.gate = nn.Linear(3 * d, 1)
        self.scale = d ** -0.5
        # Location and coverage read earlier steps: only a decoder trained to decode step by step has them.
        stepwise = config.decoder_mode != "nat"
        self.coverage = nn.Linear(d, 1) if config.copy_coverage and stepwise else None
        # a bias per offset 0, 1, 2 from where the last step attended, read from the decoder state
        self.location = nn.Linear(d, 3) if config.copy_location and stepwise else None
        self.respace = nn.Linear(d, 1) if config.copy_respace else None
        # keys that also read the token before each position: a copy starts at "the token after `am`"
        self.previous_key = nn.Linear(d, d, bias=False) if config.copy_previous_token_keys else None
        if self.respace is not None:  # filled from the tokenizer by `set_vocabulary`; saved with the weights
            self.register_buffer("respaced_ids", torch.arange(config.vocab_size), persistent=True)

    @property
    def reads_earlier_steps(self) -> bool:
        """Whether an autoregressive step needs the copy attention of the earlier ones (location, coverage), which a
        CopyNatCache keeps between generate() steps."""
        return self.location is not None or self.coverage is not None

    def set_vocabulary(self, vocab: dict[str, int]) -> None:
        """Tell the respacing which pieces are the same text with and without a leading space (`tokenizer.get_vocab()`)."""
        if self.respace is None:
            raise ValueError("this model has no copy respacing (CopyNatConfig.copy_respace=False)")
        table = respaced_token_ids(vocab).to(self.respaced_ids.device)
        if table.numel() > self.respaced_ids.numel():
            raise ValueError(f"the vocabulary has {table.numel()} ids, the model only {self.respaced_ids.numel()}")
        self.respaced_ids[: table.numel()] = table

    def canonical_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """One id for both spellings of a piece (with and without its leading space)."""
        return ids if self.respace is None else torch.minimum(ids, self.respaced_ids[ids])

    def forward(self, vocab_logits, decoder_states, decoder_inputs_embeds, encoder_states, source_ids, source_mask,
                mixture: bool = True, stepwise: bool = False, memory: "CopyMemory | None" = None,
                keys: torch.Tensor | None = None) -> CopyOutput:
        """`stepwise` (autoregressive decoding and training) runs location and coverage, which make each target
        position's attention depend on the ones before it; `memory` is what the steps before this call left (the
        last attention, the coverage), None at the first step. `mixture=False` skips the [batch, tgt, vocab]
        log-mixture (`loss_terms` and `most_likely` need only the slots). `keys`: `source_keys(encoder_states)`,
        where the caller keeps them between decoding steps."""
        scores = self.attention_scores(decoder_states, encoder_states, keys)
        if source_mask is not None:
            scores = scores.masked_fill(~source_mask[:, None, :], float("-inf"))
        coverage_loss = None
        if stepwise and self.reads_earlier_steps:
            near = self.location(decoder_states).float() if self.location is not None else None
            weight = self.coverage(decoder_states).float() if self.coverage is not None else None
            last = memory.last if memory is not None else None
            covered = memory.coverage if memory is not None else None
            attention, coverage_loss = CopyAttentionRecurrence.apply(scores, near, weight, last, covered)
        else:
            attention = scores.softmax(dim=-1)
        context = attention.to(encoder_states.dtype) @ encoder_states
        p_gen = torch.sigmoid(self.gate(torch.cat((decoder_states, context, decoder_inputs_embeds), dim=-1)).float())
        slot_ids, slot_attention, slot_mask = source_ids, attention, source_mask
        if self.respace is not None:
            respaced = torch.sigmoid(self.respace(decoder_states).float())  # [batch, tgt, 1]
            slot_ids = torch.cat((source_ids, self.respaced_ids[source_ids]), dim=1)
            slot_attention = torch.cat((attention * (1.0 - respaced), attention * respaced), dim=-1)
            slot_mask = None if source_mask is None else torch.cat((source_mask, source_mask), dim=1)
        log_mixture = None
        if mixture:
            log_mixture = vocab_logits.float().softmax(dim=-1) * p_gen
            index = slot_ids[:, None, :].expand(-1, decoder_states.shape[1], -1)
            # In place: a fresh product that autograd does not need to keep (saves a [B, T, V] copy).
            log_mixture.scatter_add_(-1, index, slot_attention * (1.0 - p_gen))
            # Clamped so an impossible token costs log(1e-10) rather than -inf (no NaN in softmax, loss or beams).
            log_mixture = log_mixture.clamp_min(1e-10).log()
        return CopyOutput(log_mixture, p_gen.squeeze(-1), attention, slot_ids, slot_attention, slot_mask,
                          coverage_loss)

    def _key_map(self, encoder_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What the keys are a linear map of, and its weight: e_j and Wk ([d, d]), or with previous-token keys
        [e_j; e_{j-1}] and [Wk Wp] ([d, 2d]): one matmul either way."""
        if self.previous_key is None:
            return encoder_states, self.key.weight
        previous = F.pad(encoder_states[:, :-1], (0, 0, 1, 0))  # each key also says which token comes before it
        return (torch.cat((encoder_states, previous), dim=-1),
                torch.cat((self.key.weight, self.previous_key.weight), dim=1))

    def source_keys(self, encoder_states: torch.Tensor) -> torch.Tensor:
        """The copy attention's keys k_j = Wk e_j (+ Wp e_{j-1}), [batch, src, d]. They depend on the source alone:
        generate() computes them once and keeps them in its `CopyNatCache` (`copy_keys`)."""
        return F.linear(*self._key_map(encoder_states))

    def attention_scores(self, decoder_states: torch.Tensor, encoder_states: torch.Tensor,
                         keys: torch.Tensor | None = None) -> torch.Tensor:
        """The copy attention's scores q_t . k_j / sqrt(d), [batch, tgt, src] in fp32, with q_t = Wq h_t and the
        keys of `source_keys` (pass them as `keys` where they are kept). Its own eager attention: SDPA's
        cross-attention returns no weights, and copying needs explicit ones.

        Where the decoder states outnumber the key map's inputs (training: every target position at once), the
        query projection is folded into the keys instead: q_t . k_j = h_t . (Wq^T k_j), one product of weight
        matrices in place of projecting every decoder state (a third of the projections' arithmetic). A decoding step
        projects its few states."""
        queries = None
        if keys is None:
            key_inputs, key_weight = self._key_map(encoder_states)
            if decoder_states.shape[0] * decoder_states.shape[1] > key_weight.shape[1]:  # fold Wq into the keys
                key_weight, queries = self.query.weight.t() @ key_weight, decoder_states
            keys = F.linear(key_inputs, key_weight)
        queries = self.query(decoder_states) if queries is None else queries
        return torch.baddbmm(keys.new_zeros(()), queries, keys.transpose(1, 2), beta=0.0, alpha=self.scale).float()

    # --- the copy mixture from gathered terms (the loss and parallel decoding never build it) ------------------------

    @staticmethod
    def copy_mass(slot_attention: torch.Tensor, slot_ids: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Copy attention summed over the slots that hold `tokens` [batch, tgt]: [batch, tgt]."""
        return (slot_attention * (slot_ids[:, None, :] == tokens[..., None])).sum(-1)

    @staticmethod
    def slot_token_logits(logits: torch.Tensor, slot_ids: torch.Tensor) -> torch.Tensor:
        """The vocabulary logit of each slot's token, at every target position: [batch, tgt, slots]."""
        return logits.gather(-1, slot_ids[:, None, :].expand(-1, logits.shape[1], -1))

    @staticmethod
    def slot_token_mass(slot_attention: torch.Tensor, slot_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per slot k, at every target position: the copy mass of k's token over all slots holding it
        [batch, tgt, slots]; and how many slots hold k's token [batch, slots]."""
        same_token = (slot_ids[:, :, None] == slot_ids[:, None, :]).float()  # [batch, slots, slots]
        return slot_attention @ same_token, same_token.sum(-1)

    @staticmethod
    def loss_terms(vocab_logits: torch.Tensor, copy: CopyOutput, labels: torch.Tensor,
                   smoothing: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(log p_mix(label), mean over the vocabulary of log p_mix or None), both [batch, tgt], from gathered terms
        only: the loss's backward pass then never touches a [batch, tgt, vocab] mixture (a plain model's cost).

        The mean (label smoothing's uniform term) uses that p_mix(w) = p_gen * softmax(w) for every w no slot holds:
        it is log p_gen + mean(log softmax), corrected once per distinct slot token. It is exact where the returned
        `logits` clamp log p_mix at log 1e-10."""
        logits, p_gen = vocab_logits.float(), copy.p_gen
        safe = labels.clamp_min(0)
        # log softmax(label) by the fused cross-entropy kernel (one pass forward and backward)
        generated = -F.cross_entropy(logits.reshape(-1, logits.shape[-1]), safe.reshape(-1),
                                     reduction="none").view_as(labels)
        copied = CopyGenerator.copy_mass(copy.slot_attention, copy.slot_ids, safe)
        label = (p_gen * generated.exp() + (1.0 - p_gen) * copied).clamp_min(1e-10).log()
        if not smoothing:
            return label, None
        normalizer = logits.logsumexp(dim=-1)  # [batch, tgt]
        slot_log_softmax = CopyGenerator.slot_token_logits(logits, copy.slot_ids) - normalizer[..., None]
        token_mass, occurrences = CopyGenerator.slot_token_mass(copy.slot_attention, copy.slot_ids)
        once = 1.0 / occurrences  # each distinct real token counted once
        if copy.slot_mask is not None:
            once = once * copy.slot_mask
        log_p_gen = p_gen.clamp_min(1e-30).log()
        log_generated = log_p_gen[..., None] + slot_log_softmax
        log_copied = (1.0 - p_gen).clamp_min(1e-30).log()[..., None] + token_mass.clamp_min(1e-30).log()
        # log(p_gen s(w) + (1 - p_gen) c(w)) - log(p_gen s(w)), stable, and 0 where nothing is copied
        correction = (F.softplus(log_copied - log_generated) * once[:, None, :]).sum(-1)
        mean = log_p_gen + logits.mean(-1) - normalizer + correction / logits.shape[-1]
        return label, mean

    @staticmethod
    def most_likely(top_log_prob: torch.Tensor, top_token: torch.Tensor, log_probs: torch.Tensor, copy: CopyOutput,
                    banned_token_id: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """argmax of p_mix without the mixture, from the vocabulary log-softmax (`log_probs`) and its best token: a
        token no slot holds has p_mix = p_gen * softmax, at most the best vocabulary token's, so the winner is that
        token or a slot's. Slots holding `banned_token_id` never win (the vocabulary side excludes it before taking
        `top_token`)."""
        p_gen, slot_ids = copy.p_gen, copy.slot_ids
        top = p_gen * top_log_prob.exp() + (1.0 - p_gen) * CopyGenerator.copy_mass(copy.slot_attention, slot_ids,
                                                                                   top_token)
        token_mass, _ = CopyGenerator.slot_token_mass(copy.slot_attention, slot_ids)
        slot_log_probs = CopyGenerator.slot_token_logits(log_probs, slot_ids)
        candidates = p_gen[..., None] * slot_log_probs.exp() + (1.0 - p_gen[..., None]) * token_mass
        if banned_token_id is not None:
            candidates = candidates.masked_fill((slot_ids == banned_token_id)[:, None, :], -1.0)
        slot_best, slot = candidates.max(-1)
        from_slot = slot_best > top
        tokens = torch.where(from_slot, slot_ids.gather(1, slot), top_token)
        return torch.where(from_slot, slot_best, top).clamp_min(1e-10).log(), tokens


class CopyMemory(NamedTuple):
    """What the copy head's step-by-step attention reads of the steps before: the last step's attention (location)
    and the attention summed over them (coverage), [batch, src] each; None where nothing came before or it is off."""

    last: torch.Tensor | None
    coverage: torch.Tensor | None


class CopyAttentionRecurrence(torch.autograd.Function):
    """The copy attention of target positions t = 0, 1, ... with location and coverage (each optional):

        a_t = softmax(scores_t + near_t[0] a_{t-1}[j] + near_t[1] a_{t-1}[j - 1] + near_t[2] a_{t-1}[j - 2]
                      + weight_t c_t[j]),     c_t = c_0 + a_0 + ... + a_{t-1},
        coverage loss_t = sum_j min(a_t[j], c_t[j])

    with a_{-1} = `last` and c_0 = `covered` (zeros when None). One implementation for training (all target positions
    of a batch), decoding (one position a step, or a drafted block) and coverage, with the backward pass written
    out: autograd would record and replay about ten small ops a target position, which on a CPU cost more than their
    arithmetic."""

    @staticmethod
    def forward(ctx, scores, near, weight, last, covered):
        """scores [batch, tgt, src] (fp32), near [batch, tgt, 3] or None, weight [batch, tgt, 1] or None, last and
        covered [batch, src] or None -> (attention [batch, tgt, src], coverage loss [batch, tgt] or None)."""
        batch, steps, width = scores.shape
        # Row t + 1 holds a_t after two zero columns: the window (a[j - 2], a[j - 1], a[j]) of every j is then a view,
        # and each step runs a few kernels (the bias, the softmax, its copy into the row).
        padded = scores.new_zeros(batch, steps + 1, width + 2)
        if last is not None:
            padded[:, 0, 2:] = last
        windows = padded.unfold(2, 3, 1).unbind(1)  # [batch, src, 3] per step, read before the step writes
        rows = padded[:, 1:, 2:].unbind(1)
        window_weights = near.flip(-1).unsqueeze(-1).unbind(1) if near is not None else None  # the window's order
        cover = losses = None
        if weight is not None:  # cover[:, t] = c_t
            cover = scores.new_zeros(batch, steps + 1, width)
            if covered is not None:
                cover[:, 0] = covered
            losses = scores.new_empty(batch, steps)
        for t in range(steps):
            score = scores[:, t]
            if near is not None:
                score = torch.baddbmm(score.unsqueeze(-1), windows[t], window_weights[t]).squeeze(-1)
            if weight is not None:
                score = score + weight[:, t] * cover[:, t]
            rows[t].copy_(score.softmax(-1))
            if weight is not None:
                losses[:, t] = torch.minimum(rows[t], cover[:, t]).sum(-1)
                torch.add(cover[:, t], rows[t], out=cover[:, t + 1])
        ctx.save_for_backward(padded, near, weight, cover)
        return padded[:, 1:, 2:].contiguous(), losses

    @staticmethod
    def backward(ctx, grad_attention, grad_losses):
        padded, near, weight, cover = ctx.saved_tensors
        batch, steps, width = grad_attention.shape
        attention = padded[:, 1:, 2:]
        # Row t holds d loss / d score_t before two zero columns: (g[j], g[j + 1], g[j + 2]), the bias terms that
        # read a_{t-1}[j], is a view.
        padded_grad = grad_attention.new_zeros(batch, steps, width + 2)
        grad_scores = padded_grad[:, :, :width]
        aheads = padded_grad.unfold(2, 3, 1)
        from_later = grad_cover = None  # d loss / d a_t through the steps after t; d loss / d c_{t+1}
        for t in reversed(range(steps)):
            grad = grad_attention[:, t] if from_later is None else grad_attention[:, t] + from_later
            if grad_cover is not None:  # a_t is part of c_{t+1}, c_{t+2}, ...
                grad = grad + grad_cover
            if grad_losses is not None and cover is not None:  # min(a, c): to the smaller one, half each at ties
                share = grad_losses[:, t, None] * (attention[:, t] < cover[:, t]).to(grad.dtype)
                tie = grad_losses[:, t, None] * (attention[:, t] == cover[:, t]).to(grad.dtype) * 0.5
                grad = grad + share + tie
            grad_scores[:, t] = torch._softmax_backward_data(grad, attention[:, t], -1, grad.dtype)
            if weight is not None:
                to_cover = weight[:, t] * grad_scores[:, t]
                if grad_losses is not None:
                    to_cover = to_cover + grad_losses[:, t, None] * (cover[:, t] < attention[:, t]).to(grad.dtype) + tie
                grad_cover = to_cover if grad_cover is None else grad_cover + to_cover
            if near is not None and t > 0:
                from_later = (aheads[:, t] @ near[:, t].unsqueeze(-1)).squeeze(-1)
        grad_near = grad_weight = None
        if near is not None:  # near_t[k] read a_{t-1}[j - k] for every j
            windows = padded[:, :-1].unfold(2, 3, 1)  # [batch, tgt, src, 3]: (a[j - 2], a[j - 1], a[j])
            grad_near = (grad_scores.unsqueeze(2) @ windows).squeeze(2).flip(-1)
        if weight is not None:
            grad_weight = (grad_scores * cover[:, :-1]).sum(-1, keepdim=True)
        return grad_scores, grad_near, grad_weight, None, None


class CopyNatCache(EncoderDecoderCache):
    """The KV cache of copynat's generate(), which also keeps what the copy head reads of earlier steps: each step's
    copy attention (location reads the last, coverage sums them); and, like the cross-attention's keys and values, the
    copy attention's keys over the source, computed at the first step. Beam search reorders all of it together;
    assisted decoding crops the steps."""

    BATCH_STATE = ("copy_attention", "copy_keys")  # one row a sequence: what beams reorder

    def __init__(self, config, max_cache_len: int | None = None):
        """`max_cache_len` makes the self-attention part a StaticCache of that many decoder positions (what
        generate(cache_implementation="static") asks for); by default both parts grow step by step."""
        self_attention = (DynamicCache(config=config) if max_cache_len is None
                          else StaticCache(config=config, max_cache_len=max_cache_len))
        super().__init__(self_attention, DynamicCache(config=config))
        self.copy_attention: torch.Tensor | None = None  # [batch, steps, src]
        self.copy_keys: torch.Tensor | None = None  # [batch, src, d]: `CopyGenerator.source_keys`

    def coverage(self) -> torch.Tensor | None:
        """[batch, src]: the copy attention summed over the steps so far."""
        return None if self.copy_attention is None else self.copy_attention.sum(1)

    def copy_memory(self, with_coverage: bool) -> CopyMemory | None:
        if self.copy_attention is None:
            return None
        return CopyMemory(self.copy_attention[:, -1], self.coverage() if with_coverage else None)

    def remember_copy_attention(self, attention: torch.Tensor) -> None:
        """Add this call's steps' copy attention ([batch, steps, src])."""
        previous = self.copy_attention
        self.copy_attention = attention if previous is None else torch.cat((previous, attention), 1)

    def _map_copy_state(self, function, names: tuple[str, ...] = BATCH_STATE) -> None:
        for name in names:
            if getattr(self, name) is not None:
                setattr(self, name, function(getattr(self, name)))

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        super().reorder_cache(beam_idx)
        self._map_copy_state(lambda state: state.index_select(0, beam_idx.to(state.device)))

    def batch_repeat_interleave(self, repeats: int) -> None:
        super().batch_repeat_interleave(repeats)
        self._map_copy_state(lambda state: state.repeat_interleave(repeats, 0))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        super().batch_select_indices(indices)
        self._map_copy_state(lambda state: state[indices])

    def crop(self, length: int) -> None:
        """Drop the last -`length` steps (transformers 5.25 accepts only that form) or keep the first `length`."""
        super().crop(length)
        self._map_copy_state(lambda state: state[:, :length], ("copy_attention",))
