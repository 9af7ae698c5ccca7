"""Drafted decoding: the lecture's two decoders at once. The parallel decoder drafts the rest of the output in one
pass; the autoregressive (AT) decoder reads the whole draft in one causal pass over its cache; each row keeps the
longest prefix on which the AT decoder's own greedy choice agrees, plus the AT decoder's token at the first
disagreement, so every round gains at least one token. The output is plain greedy generate()'s, token for token:
every logits processor runs at each verified position on the same prefix as in the step-by-step loop, and the copy
head's memory of earlier steps (location, coverage) is carried the same way.

Blockwise parallel decoding (Stern et al. 2018) and SpecDec (Xia et al. 2023) are the published forms; here the
drafter is the model's own parallel decoder over the same encoder states. `draft_top_k` / `draft_margin` relax the
acceptance as SpecDec does (a drafted token within the AT decoder's top k, and within a log-probability margin of its
best, is kept): faster, no longer greedy's output.

Rows of a batch keep different numbers of tokens a round. The self-attention cache (`RowKeyValues`) keeps row b's
position p in slot p, so each row goes on from its own length and its rejected slots are overwritten next round;
the processors read the rows left-padded to one length (they count a row's tokens without its padding).

This file is part of the Hub remote code: it imports only torch, transformers and its siblings.
"""

import torch
from transformers.cache_utils import DynamicCache
from transformers.generation.utils import GenerateEncoderDecoderOutput

from .copy_generator import CopyMemory
from .parallel_decoding import encode_source, parallel_draft

__all__ = ["DraftingCache", "RowKeyValues", "drafted_generate", "generation_limit", "pop_draft_arguments"]

DRAFT_ARGUMENTS = ("draft_window", "draft_top_k", "draft_margin")
#: What generate()'s callers (pipelines, Seq2SeqTrainer) pass that drafted decoding reads or may ignore.
IGNORED_ARGUMENTS = ("use_cache", "synced_gpus", "decoder_attention_mask", "labels", "pad_token_id", "eos_token_id",
                     "decoder_start_token_id", "max_length", "max_new_tokens", "num_beams", "do_sample",
                     "num_return_sequences")
#: Generation settings that make transformers add logits processors of its own: drafted decoding does not run them.
UNSUPPORTED_SETTINGS = {"min_length": 0, "min_new_tokens": None, "repetition_penalty": 1.0,
                        "encoder_repetition_penalty": 1.0, "no_repeat_ngram_size": 0,
                        "encoder_no_repeat_ngram_size": 0, "bad_words_ids": None, "sequence_bias": None,
                        "forced_bos_token_id": None, "forced_eos_token_id": None, "suppress_tokens": None,
                        "begin_suppress_tokens": None, "exponential_decay_length_penalty": None,
                        "renormalize_logits": False}


def pop_draft_arguments(kwargs: dict, generation_config) -> dict | None:
    """Take the drafted-decoding arguments out of generate()'s kwargs; None when the call drafts nothing."""
    draft = kwargs.pop("draft", None)
    if draft is None:
        draft = getattr(generation_config, "draft", None)
    arguments = {name: kwargs.pop(name) for name in DRAFT_ARGUMENTS if name in kwargs}
    if draft is None:
        if arguments:
            raise ValueError(f"{', '.join(sorted(arguments))} only apply to drafted decoding: pass draft='parallel'")
        return None
    if draft != "parallel":
        raise ValueError(f"draft={draft!r} is not a drafter: draft='parallel' (the model's parallel decoder) is the "
                         "one there is")
    window, top_k, margin = (arguments.get(name) for name in DRAFT_ARGUMENTS)
    if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 1):
        raise ValueError(f"draft_window must be None (the whole draft) or a positive integer, got {window!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"draft_top_k must be a positive integer (1: exact greedy), got {top_k!r}")
    if margin is not None and (isinstance(margin, bool) or not isinstance(margin, (int, float)) or margin < 0):
        raise ValueError(f"draft_margin must be None (no margin) or a log-probability margin >= 0, got {margin!r}")
    return arguments


def generation_limit(settings, kwargs: dict, max_positions: int) -> int:
    """How many tokens greedy generate() may write after the decoder start token: `max_new_tokens`, else
    `max_length` - 1, else transformers' default of 20 (at most `max_position_embeddings` - 1)."""
    max_new_tokens = kwargs.get("max_new_tokens", settings.max_new_tokens)
    if max_new_tokens is not None:
        return max_new_tokens
    max_length = kwargs.get("max_length", settings.max_length)
    return max_length - 1 if max_length is not None else min(20, max_positions - 1)


class RowKeyValues:
    """Self-attention keys and values whose rows hold different lengths: row b's position p sits in slot p, the next
    call writes each row's new positions after its own `row_lengths[b]`, and `keep(counts)` says how many of them
    each row keeps (the rest are overwritten by its next call). The decoder reads `row_lengths` for the positions and
    the mask (`self_attention_layout`)."""

    is_compileable = False

    def __init__(self, batch: int, device: torch.device):
        self.row_lengths = torch.zeros(batch, dtype=torch.long, device=device)
        self.layers: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._longest = 0  # max(row_lengths), kept on the host: it sizes every call

    def longest_row(self) -> int:
        return self._longest

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self._longest

    def slots_after_update(self, length: int) -> int:
        return self._longest + length

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, cache_kwargs=None):
        """Write this call's [batch, heads, length, dim] keys and values after each row's kept slots; return every
        slot up to the longest row's end (the mask hides what a row does not own)."""
        length, needed = key.shape[2], self._longest + key.shape[2]
        if layer_idx == len(self.layers):
            self.layers.append((key.new_zeros(*key.shape[:2], 0, key.shape[3]),) * 2)
        keys, values = self.layers[layer_idx]
        if keys.shape[2] < needed:  # grow by doubling: a few reallocations a call of generate()
            grown = key.new_zeros(*key.shape[:2], max(needed, 2 * keys.shape[2]), key.shape[3])
            keys, values = grown.clone(), grown
            keys[:, :, :self.layers[layer_idx][0].shape[2]] = self.layers[layer_idx][0]
            values[:, :, :self.layers[layer_idx][1].shape[2]] = self.layers[layer_idx][1]
            self.layers[layer_idx] = (keys, values)
        slots = (self.row_lengths[:, None] + torch.arange(length, device=key.device))[:, None, :, None]
        slots = slots.expand(-1, key.shape[1], -1, key.shape[3])
        keys.scatter_(2, slots, key)
        values.scatter_(2, slots, value)
        return keys[:, :, :needed], values[:, :, :needed]

    def keep(self, counts: torch.Tensor) -> None:
        self.row_lengths += counts
        self._longest = int(self.row_lengths.max())

    def select(self, rows: torch.Tensor) -> None:
        """Keep only these rows (the others have finished)."""
        self.row_lengths = self.row_lengths.index_select(0, rows)
        self._longest = int(self.row_lengths.max())
        self.layers = [(keys.index_select(0, rows), values.index_select(0, rows)) for keys, values in self.layers]


class DraftingCache:
    """The caches of one drafted generate() call: the self-attention's (`RowKeyValues`), the cross-attention's (the
    encoder states' keys and values, computed at the first call), and the copy head's memory of the kept steps: the
    last one's attention and the coverage, per row, plus the copy keys over the source."""

    def __init__(self, config, batch: int, device: torch.device):
        self.self_attention_cache = RowKeyValues(batch, device)
        self.cross_attention_cache = DynamicCache(config=config)
        self.is_updated: dict[int, bool] = {}
        self.copy_keys: torch.Tensor | None = None
        self._last: torch.Tensor | None = None  # [batch, src]
        self._coverage: torch.Tensor | None = None  # [batch, src]
        self._pending: torch.Tensor | None = None  # [batch, block, src]: this call's copy attention

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.self_attention_cache.get_seq_length()

    def copy_memory(self, with_coverage: bool) -> CopyMemory | None:
        return None if self._last is None else CopyMemory(self._last, self._coverage if with_coverage else None)

    def remember_copy_attention(self, attention: torch.Tensor) -> None:
        self._pending = attention

    def select(self, rows: torch.Tensor) -> None:
        """Keep only these rows (the others have finished)."""
        self.self_attention_cache.select(rows)
        self.cross_attention_cache.batch_select_indices(rows)
        for name in ("copy_keys", "_last", "_coverage"):
            if getattr(self, name) is not None:
                setattr(self, name, getattr(self, name).index_select(0, rows))

    def keep(self, counts: torch.Tensor) -> None:
        """Each row keeps its first `counts[b]` positions of the last call (0: it has finished)."""
        self.self_attention_cache.keep(counts)
        if self._pending is None:
            return
        pending, kept = self._pending, counts > 0
        last = pending.gather(1, (counts - 1).clamp_min(0)[:, None, None].expand(-1, 1, pending.shape[2])).squeeze(1)
        self._last = last if self._last is None else torch.where(kept[:, None], last, self._last)
        used = (torch.arange(pending.shape[1], device=counts.device)[None, :] < counts[:, None]).to(pending.dtype)
        added = (pending * used[..., None]).sum(1)
        self._coverage = added if self._coverage is None else self._coverage + added
        self._pending = None


def _check_call(model, settings, kwargs: dict) -> None:
    config = model.config
    if not config.uses_nat:
        raise ValueError(f"draft='parallel' drafts with the parallel decoder, which this model does not have (it was "
                         f"built with decoder_mode={config.decoder_mode!r}): train a decoder_mode='hybrid' model")
    if config.decoder_mode != "hybrid":
        raise ValueError("draft='parallel' verifies the draft with the autoregressive decoder, which only a "
                         f"decoder_mode='hybrid' model has trained (this one is {config.decoder_mode!r})")
    if kwargs.get("num_beams", 1) not in (None, 1) or kwargs.get("do_sample") or \
            kwargs.get("num_return_sequences", 1) not in (None, 1):
        raise ValueError("draft='parallel' gives greedy decoding's output: num_beams > 1, do_sample and "
                         "num_return_sequences > 1 are not supported with it")
    unknown = sorted(set(kwargs) - set(IGNORED_ARGUMENTS))
    if unknown:
        raise ValueError(f"drafted generate() does not take {', '.join(unknown)}; it takes input_ids, attention_mask, "
                         "max_new_tokens / max_length, streamer, return_dict_in_generate, logits_processor, "
                         "valid_utf8, complete_copied_words, stop_loops, draft_window, draft_top_k, draft_margin")
    active = [name for name, default in UNSUPPORTED_SETTINGS.items()
              if kwargs.get(name, getattr(settings, name, default)) not in (default, None)]
    if active:
        raise ValueError(f"draft='parallel' applies copynat's constraints and logits_processor=..., not the "
                         f"generation settings {', '.join(active)}: use plain generate() for them")


def _choices(scores: torch.Tensor, drafted: torch.Tensor, has_draft: torch.Tensor, top_k: int | None,
             margin: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """([batch, width + 1] the token each row writes at each position, whether it is the drafted one): greedy's
    choice, or with a relaxed acceptance the drafted token where it is within the top k and the margin of the best.
    The last position has no drafted token."""
    choice = scores.argmax(-1)
    drafted = torch.cat((drafted, drafted.new_zeros(drafted.shape[0], 1)), dim=1)
    has_draft = torch.cat((has_draft, has_draft.new_zeros(has_draft.shape[0], 1)), dim=1)
    accepted = has_draft & (choice == drafted)
    if (top_k or 1) > 1 or margin is not None:
        drafted_score = scores.gather(-1, drafted[..., None]).squeeze(-1)
        relaxed = drafted_score > float("-inf")
        relaxed &= (scores > drafted_score[..., None]).sum(-1) < (top_k or 1) if (top_k or 1) > 1 else choice == drafted
        if margin is not None:
            relaxed &= drafted_score >= scores.max(-1).values - margin
        accepted = has_draft & relaxed
    return torch.where(accepted, drafted, choice), accepted


def _prefixes(history: torch.Tensor, drafted: torch.Tensor, pad: int) -> torch.Tensor:
    """The prefix before each position of a block, every row and position at once: [batch, width + 1, H + width],
    row b, position i holding `history[b]` then `drafted[b, :i]`, left-padded (the processors count a row's tokens
    without its padding)."""
    width = drafted.shape[1]
    whole = torch.cat((history, drafted), dim=1)  # [batch, H + width]
    columns = torch.arange(whole.shape[1], device=whole.device)[None, :] - torch.arange(width, -1, -1,
                                                                                         device=whole.device)[:, None]
    return whole[:, columns.clamp_min(0)].masked_fill(columns[None] < 0, pad)


@torch.no_grad()
def drafted_generate(model, inputs: torch.Tensor | None, settings, processors_for=None, user_processors=None,
                     draft_window: int | None = None, draft_top_k: int | None = None,
                     draft_margin: float | None = None, attention_mask=None, streamer=None,
                     return_dict_in_generate: bool = False, ctc_blank_penalty: float | None = None, **kwargs):
    """Greedy decoding's output in fewer autoregressive passes (module docstring). Returns `[batch, 1 + length]` ids
    like greedy generate(), or with `return_dict_in_generate=True` an output with `sequences` and `rounds`
    ([batch]: the verification passes each row took part in; its tokens / rounds = tokens kept a pass).
    `processors_for(source_ids)` gives copynat's constraints for those sources; `draft_window` verifies at most
    that many drafted tokens a round (None: the rest of the draft)."""
    input_ids = inputs if inputs is not None else kwargs.pop("input_ids", None)
    if input_ids is None:
        raise ValueError("drafted generate() needs input_ids")
    _check_call(model, settings, kwargs)
    config, device = model.config, model.device
    limit = generation_limit(settings, kwargs, config.max_position_embeddings)
    eos = torch.tensor(settings.eos_token_id if settings.eos_token_id is not None else config.eos_token_id,
                       device=device).reshape(-1)
    pad = settings.pad_token_id if settings.pad_token_id is not None else config.pad_token_id
    start = settings.decoder_start_token_id if settings.decoder_start_token_id is not None else \
        config.decoder_start_token_id
    penalty = ctc_blank_penalty if ctc_blank_penalty is not None else getattr(settings, "ctc_blank_penalty", None)

    source = encode_source(model, input_ids, attention_mask)
    drafts = parallel_draft(model, source, float(penalty or 0.0))
    batch = drafts.shape[0]
    rows = _Rows(ids=source.ids, states=source.encoder.last_hidden_state, mask=source.mask, drafts=drafts,
                 draft_lengths=(drafts != pad).sum(1), start=start, index=torch.arange(batch, device=device))
    cache = DraftingCache(config, batch, device)
    processors = processors_for(rows.ids) if processors_for is not None else []
    finished_rows: dict[int, tuple[list[int], int]] = {}  # row -> (its tokens, its rounds)
    if streamer is not None:
        streamer.put(rows.history.cpu())
    done = torch.zeros(batch, dtype=torch.bool, device=device)  # finished rows kept for a caller's processors
    while rows.count and not bool(done.all()):
        # This round's block per row: its last token, then up to `width` drafted tokens: the rest of its draft, or
        # for a row whose output has left its draft, what follows its last tokens in the source (a copy goes on).
        candidates, available = _continuations(rows, pad, draft_window or LOOKUP_WINDOW)
        available = torch.minimum(available, (limit - rows.generated - 1).clamp_min(0))
        if draft_window is not None:
            available = available.clamp_max(draft_window)
        available = available.masked_fill(done, 0)
        width = int(available.max())
        has_draft = torch.arange(width, device=device)[None, :] < available[:, None]
        drafted = candidates[:, :width].masked_fill(~has_draft, pad)
        block = torch.cat((rows.history[:, -1:], drafted), dim=1)
        _, head = model.autoregressive_pass(rows.states, rows.ids, rows.mask, decoder_input_ids=block, cache=cache,
                                            use_cache=True, mixture=True)
        # Verify every position at once, as the step-by-step loop would choose: the prefix a row has written before
        # position i is its history and the drafted tokens before i (which it has accepted, if it got that far).
        scores = head.logits.float()
        if processors or user_processors:
            prefixes = _prefixes(rows.history, drafted, pad)  # [rows, width + 1, history + width], left-padded
            if user_processors:  # a caller's processors see the batch's rows, one position at a time, as in greedy
                scores = torch.stack([user_processors(prefixes[:, i], scores[:, i]) for i in range(width + 1)], 1)
            # copynat's own take every row and position at once (they read each row's tokens, nothing else)
            for processor in processors:  # called directly: LogitsProcessorList inspects each signature
                scores = processor(prefixes.flatten(0, 1), scores.flatten(0, 1)).view(rows.count, width + 1, -1)
        token, accepted = _choices(scores, drafted, has_draft, draft_top_k, draft_margin)
        # a row keeps its tokens up to the first that is not the drafted one, ends with </s> or meets the limit
        written_after = rows.generated[:, None] + torch.arange(1, width + 2, device=device)
        stops = ~accepted | torch.isin(token, eos) | (written_after >= limit)
        first_stop = stops.int().argmax(1)
        counts = (first_stop + 1).masked_fill(done, 0)
        new = token[:, :int(counts.max())].masked_fill(
            torch.arange(int(counts.max()), device=device)[None, :] >= counts[:, None], pad)
        last_token = token.gather(1, first_stop[:, None]).squeeze(1)
        ends = ~done & (torch.isin(last_token, eos) | (rows.generated + counts >= limit))
        replaced = ~ends & ~accepted.gather(1, first_stop[:, None]).squeeze(1)
        cache.keep(counts)
        rows.advance(new, counts, pad)
        # Where the output left the draft (a token replaced, or tokens of the source written), find its place again
        rows.cursor, rows.lost = _realign(rows, (replaced | rows.lost) & ~ends)
        if streamer is not None:
            streamer.put(new[0, :int(counts[0])].cpu())
        if bool(ends.any()):  # finished rows leave the batch: the stragglers' rounds cost only their own rows
            for row in ends.nonzero().squeeze(1).tolist():
                tokens = rows.history[row, rows.history.shape[1] - int(rows.generated[row]):].tolist()
                finished_rows[int(rows.index[row])] = (tokens, int(rows.rounds[row]))
            if user_processors:  # a caller's processors index the batch's rows: they stay, finished
                done |= ends
            else:
                keep = (~ends).nonzero().squeeze(1)
                rows.select(keep)
                if keep.numel():
                    cache.select(keep)
                    processors = processors_for(rows.ids) if processors_for is not None else processors
                done = done.index_select(0, keep)
    if streamer is not None:
        streamer.end()
    return _assemble(finished_rows, batch, start, pad, device, return_dict_in_generate)


def _assemble(finished_rows: dict, batch: int, start: int, pad: int, device, return_dict_in_generate: bool):
    """`[batch, 1 + longest]` sequences (start token, tokens, padding) from each row's tokens."""
    width = max(len(tokens) for tokens, _ in finished_rows.values())
    sequences = torch.full((batch, 1 + width), pad, dtype=torch.long, device=device)
    sequences[:, 0] = start
    for row, (tokens, _) in finished_rows.items():
        sequences[row, 1:1 + len(tokens)] = torch.tensor(tokens, dtype=torch.long, device=device)
    if not return_dict_in_generate:
        return sequences
    output = GenerateEncoderDecoderOutput(sequences=sequences)
    output["rounds"] = torch.tensor([finished_rows[row][1] for row in range(batch)], device=device)
    return output


class _Rows:
    """The rows still decoding, each with its source, its draft, where its output stands in the draft, and its
    tokens so far (right-aligned, left-padded); `select` keeps some of them (finished rows leave)."""

    def __init__(self, ids, states, mask, drafts, draft_lengths, start: int, index: torch.Tensor):
        self.ids, self.states, self.mask, self.drafts, self.draft_lengths, self.index = (
            ids, states, mask, drafts, draft_lengths, index)
        self.cursor = torch.zeros_like(index)  # the next drafted token of each row
        self.lost = torch.zeros_like(index, dtype=torch.bool)  # its output has left its draft
        self.history = torch.full((index.numel(), 1), start, dtype=torch.long, device=index.device)
        self.generated = torch.zeros_like(index)
        self.rounds = torch.zeros_like(index)

    @property
    def count(self) -> int:
        return self.index.numel()

    def advance(self, new: torch.Tensor, counts: torch.Tensor, pad: int) -> None:
        self.history = _append_right_aligned(self.history, new, counts, pad)
        self.generated += counts
        self.rounds += counts > 0
        self.cursor = torch.where(self.lost, self.cursor, self.cursor + counts)

    def select(self, keep: torch.Tensor) -> None:
        for name in ("ids", "states", "mask", "drafts", "draft_lengths", "index", "cursor", "lost", "history",
                     "generated", "rounds"):
            setattr(self, name, getattr(self, name).index_select(0, keep))
        if self.count:  # drop the padding columns no row needs any more
            self.history = self.history[:, self.history.shape[1] - 1 - int(self.generated.max()):]


def _append_right_aligned(history: torch.Tensor, new: torch.Tensor, counts: torch.Tensor, pad: int) -> torch.Tensor:
    """`history` [rows, H] (each row's tokens at its right end, padding on the left) with row b's first `counts[b]`
    tokens of `new` [rows, n] appended, still right-aligned: [rows, H + max(counts)]."""
    grown = torch.cat((torch.full_like(new, pad), history, new), dim=1)
    index = counts[:, None] + torch.arange(history.shape[1] + new.shape[1], device=history.device)
    return grown.gather(1, index)[:, new.shape[1] - int(counts.max()):]


#: Source tokens verified a round, at most, when a row's output has left its draft and copies from the source.
LOOKUP_WINDOW = 8
#: How far before and after where it stood a row's draft is searched for its last tokens (nearest first).
REALIGN_OFFSETS = sorted(range(-4, 17), key=abs)


def _at(tokens: torch.Tensor, positions: torch.Tensor, fill: int = -1) -> torch.Tensor:
    """tokens[b, positions[b, ...]], `fill` where a position is outside the row."""
    inside = (positions >= 0) & (positions < tokens.shape[1])
    return tokens.gather(1, positions.clamp(0, tokens.shape[1] - 1)).masked_fill(~inside, fill)


def _realign(rows: "_Rows", search: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(cursor, lost) after a round. A row in `search` (its last token replaced a drafted one, or it left its draft
    earlier) goes on after the nearest place in its draft that holds its last two tokens, else its last token; a
    row found nowhere is `lost` (it copies from the source meanwhile). A draft off by a few tokens (a name drafted a
    piece short) is so used to its end."""
    cursor, drafts, history = rows.cursor, rows.drafts, rows.history
    offsets = torch.tensor(REALIGN_OFFSETS, device=cursor.device)
    places = cursor[:, None] + offsets[None, :]  # [rows, offsets], nearest first
    valid = (places >= 1) & (places <= rows.draft_lengths[:, None])
    last_fits = valid & (_at(drafts, places - 1) == history[:, -1:])
    both_fit = last_fits & (_at(drafts, places - 2) == history[:, -2:-1] if history.shape[1] > 1 else last_fits)
    fits = torch.where(both_fit.any(1, keepdim=True), both_fit, last_fits)
    found = search & fits.any(1)
    chosen = places.gather(1, fits.int().argmax(1, keepdim=True)).squeeze(1)
    return torch.where(found, chosen, cursor), (rows.lost | search) & ~found


def _continuations(rows: "_Rows", pad: int, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """([rows, n] candidate tokens, [rows] how many are real): each row's draft from its cursor; for a lost row,
    the source tokens after the first place that holds its last two tokens (else its last token), as prompt-lookup
    decoding does: a copy head writing a name the draft got wrong goes on copying it."""
    cursor, history = rows.cursor, rows.history
    width = max(int((rows.draft_lengths - cursor).clamp_min(0).max()), window)
    candidates = _at(rows.drafts, cursor[:, None] + torch.arange(width, device=cursor.device), pad)
    available = (rows.draft_lengths - cursor).clamp_min(0)
    if not bool(rows.lost.any()):
        return candidates, available
    ids, real = rows.ids, rows.mask
    last_fits = real & (ids == history[:, -1:])
    before = torch.cat((torch.full_like(ids[:, :1], -1), ids[:, :-1]), dim=1)
    both_fit = last_fits & (before == history[:, -2:-1]) if history.shape[1] > 1 else last_fits
    fits = torch.where(both_fit.any(1, keepdim=True), both_fit, last_fits)
    start = fits.int().argmax(1) + 1  # the first place that fits, then what follows it
    copied = _at(ids, start[:, None] + torch.arange(width, device=ids.device), pad)
    copied_count = (real.sum(1) - start).clamp(0, window)
    use_source = rows.lost & fits.any(1)
    candidates = torch.where(use_source[:, None], copied, candidates)
    return candidates, torch.where(use_source, copied_count, available)
