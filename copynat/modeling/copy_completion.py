"""Whole copied words: logits processors that let generate() copy a source word whole, no piece less, no piece more,
and never loop.

A name comes out of a subword model as several pieces ("ĠMoh", "am", "med"). A translation model whose corpus
copies few long words walks the pointer through such a name and then, a piece before its end, lets the vocabulary
side win ("Mohamm trägt ..."), or glues a suffix to a name it copied whole ("Leopoldmütze"). Both break the name.
`CopiedWordCompletionLogitsProcessor` applies the rule a reader would:

- once the word being written is a copy of the start of a source word (its pieces equal that word's first pieces,
  the first one with or without its leading space), the next piece must be that source word's next piece;
- once it is a whole source word of two or more pieces, the next piece may not continue it.

Token ids only, like the copy head: it holds for names, scripts and numbers never seen in training. It needs to
know which pieces begin a word and which continue one (`word_piece_classes`, filled by `set_vocabulary`); a model
whose vocabulary was never set has an all-zero table and the processor is never added.

`RepetitionBeyondSourceLogitsProcessor` stops the stutter that a copy head can fall into once it loses its place: no
unit of a few pieces more than three times in a row unless the source has it so.

This file is part of the Hub remote code: it imports only torch and transformers.
"""

import unicodedata

import torch
from transformers import LogitsProcessor

from .utf8_validity import byte_level_alphabet

__all__ = ["CopiedWordCompletionLogitsProcessor", "RepetitionBeyondSourceLogitsProcessor", "WORD_PIECE_FIELDS",
           "word_piece_classes"]

#: Columns of `word_piece_classes`: the piece begins with a space marker; its first character is a letter, digit or
#: mark (or a byte continuing a character); its last character is one (or it leaves a character open).
WORD_PIECE_FIELDS = ("space_first", "word_first", "word_last")
#: Word-start markers of subword vocabularies: byte-level BPE's "Ġ" (a space byte) and SentencePiece's "▁".
_MARKERS = ("Ġ", "▁")


def _is_word_character(character: str) -> bool:
    """A letter, digit or mark of a script that spaces its words. Han and kana are written without spaces (我是庫洛洛),
    so each of their characters stands alone: a run of them is no word to complete."""
    return (character.isalnum() or unicodedata.category(character).startswith("M")) and not _spaceless(character)


def _spaceless(character: str) -> bool:
    code = ord(character)
    return 0x3000 <= code <= 0x9FFF or 0xF900 <= code <= 0xFAFF or 0x20000 <= code <= 0x3FFFF


#: Lead bytes of the characters U+3000-U+9FFF (CJK punctuation, kana, Han): a piece that begins one begins no word.
_SPACELESS_LEADS = range(0xE3, 0xEA)


def word_piece_classes(vocab: dict[str, int], size: int | None = None) -> torch.Tensor:
    """[vocab size, 3] int8 of 0/1 (`WORD_PIECE_FIELDS`) for a vocabulary {piece: id}: byte-level pieces are read as
    bytes, other pieces as text. Special and added tokens are all 0 (they neither start nor continue a word). Not bool:
    DDP broadcasts buffers, and gloo before torch 2.7 has no bool."""
    alphabet = byte_level_alphabet()
    table = torch.zeros(size or max(vocab.values()) + 1, 3, dtype=torch.int8)
    for piece, index in vocab.items():
        if not piece or index >= table.shape[0] or (piece.startswith("<") and piece.endswith(">")):
            continue
        if all(c in alphabet for c in piece):  # byte-level: the bytes the piece stands for
            data = bytes(alphabet[c] for c in piece)
            space = data[:1] == b" "
            body = data[1:] if space else data
            if not body:
                continue
            # A character cut at either end of the piece (a byte-level piece may hold part of one) is inside a word.
            text = body.decode("utf-8", errors="replace")
            first = (text[0] == "\ufffd" and body[0] not in _SPACELESS_LEADS) or _is_word_character(text[0])
            last = text[-1] == "\ufffd" or _is_word_character(text[-1])
        else:
            space = piece.startswith(_MARKERS)
            text = piece[1:] if space else piece
            if not text:
                continue
            first, last = _is_word_character(text[0]), _is_word_character(text[-1])
        table[index] = torch.tensor([space, first, last])
    return table


class CopiedWordCompletionLogitsProcessor(LogitsProcessor):
    """Copy a source word whole (see the module docstring). `source_ids` [batch, src] are the inputs of generate();
    rows of beams and samples repeat them. `classes` is `word_piece_classes` of the model's vocabulary; `canonical`
    ([vocab]) maps a piece and its twin with the leading space toggled to one id (the copy head's respacing), or
    is None. Stateless between steps: beam search reorders nothing."""

    def __init__(self, source_ids: torch.LongTensor, classes: torch.Tensor, canonical: torch.LongTensor | None = None,
                 pad_token_id: int | None = None, lookback: int = 12):
        self.space, self.first, self.last = (classes[:, i].bool() for i in range(3))
        self.canonical = canonical if canonical is not None else torch.arange(classes.shape[0])
        self.lookback = lookback
        source = source_ids.long()
        real = source != pad_token_id if pad_token_id is not None else torch.ones_like(source, dtype=torch.bool)
        # Source words: continues[:, j] when piece j carries on the word of piece j - 1; index_in_word[:, j] counts
        # the pieces before j in its word; the piece after j, and whether it carries on j's word.
        continues = torch.zeros_like(real)
        continues[:, 1:] = self.continues(source[:, :-1], source[:, 1:]) & real[:, 1:] & real[:, :-1]
        index_in_word = torch.zeros_like(source)
        for j in range(1, source.shape[1]):
            index_in_word[:, j] = torch.where(continues[:, j], index_in_word[:, j - 1] + 1, 0)
        self.source, self.real, self.index_in_word = source, real, index_in_word
        self.next_piece = torch.cat((source[:, 1:], torch.zeros_like(source[:, :1])), dim=1)
        self.goes_on = torch.cat((continues[:, 1:], torch.zeros_like(continues[:, :1])), dim=1)

    def continues(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        """Whether piece `after` carries on the word that piece `before` ends (elementwise)."""
        return self.last[before] & self.first[after] & ~self.space[after]

    def _to(self, device: torch.device) -> None:
        for name in ("space", "first", "last", "canonical", "source", "real", "index_in_word", "next_piece",
                     "goes_on"):
            setattr(self, name, getattr(self, name).to(device))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        constrained = self._constrain(input_ids, scores)
        # Where the rule leaves no finite score (the piece it asks for is ruled out by another processor, such as
        # valid UTF-8), the row keeps its scores: generate() must always have a piece to choose.
        stuck = ~constrained.isfinite().any(1, keepdim=True)
        return torch.where(stuck, scores, constrained) if bool(stuck.any()) else constrained

    def _constrain(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.source.device != scores.device:
            self._to(scores.device)
        written = input_ids[:, 1:]  # after the decoder start token
        if written.shape[1] == 0:
            return scores
        rows = written.shape[0]
        repeat = rows // self.source.shape[0]
        expand = (lambda t: t.repeat_interleave(repeat, 0)) if repeat > 1 else (lambda t: t)  # noqa: E731
        source_canonical = expand(self.canonical[self.source])
        last_piece = written[:, -1]
        # Most steps write a piece that is nowhere in the source, or no word piece: nothing to constrain.
        candidate = (source_canonical == self.canonical[last_piece][:, None]) & expand(self.real)
        candidate &= (self.first[last_piece] | self.last[last_piece])[:, None]
        if not bool(candidate.any()):
            return scores
        # The word being written: its last `length` pieces (1 + how many pieces in a row carry on the one before).
        tail = written[:, -self.lookback:]
        length = torch.ones(rows, dtype=torch.long, device=scores.device)
        alive = torch.ones(rows, dtype=torch.bool, device=scores.device)
        for k in range(tail.shape[1] - 1, 0, -1):
            alive &= self.continues(tail[:, k - 1], tail[:, k])
            length += alive.long()
        # run[:, j]: how many of the written pieces, read backwards, equal the source read backwards from j.
        run = torch.zeros_like(source_canonical)
        matching = candidate
        for k in range(int(length.max())):
            if k > 0:
                earlier = self.canonical[tail[:, -1 - k]][:, None]
                shifted = torch.cat((torch.full_like(source_canonical[:, :k], -1), source_canonical[:, :-k]), dim=1)
                matching = matching & (shifted == earlier)
            run += matching.long()
        # The written word is a copy of source pieces (start of word) .. j.
        copied = (run >= length[:, None]) & (expand(self.index_in_word) == (length - 1)[:, None])
        goes_on = expand(self.goes_on)
        must_go_on = copied & goes_on
        if bool(must_go_on.any()):  # only the copied word's next piece(s) may follow
            allowed = torch.zeros_like(scores, dtype=torch.bool)
            allowed.scatter_(1, torch.where(must_go_on, expand(self.next_piece), 0), must_go_on)
            scores = scores.masked_fill(must_go_on.any(1)[:, None] & ~allowed, float("-inf"))
        ended = (copied & ~goes_on).any(1) & (length >= 2) & ~must_go_on.any(1)
        if bool(ended.any()):  # a whole multi-piece source word: no piece may carry it on
            carries_on = self.last[last_piece][:, None] & (self.first & ~self.space)[None, :]
            scores = scores.masked_fill(ended[:, None] & carries_on, float("-inf"))
        return scores


class RepetitionBeyondSourceLogitsProcessor(LogitsProcessor):
    """A loop guard: no unit of 1 to `longest_unit` pieces stands more than `limit` times in a row in the output
    unless it stands so in the source ("Krzzyyyyyyf", "7187187187..."; "洛洛洛洛" is a three-piece unit of byte-level
    pieces four times). A copy never needs such a run, and a source that has one ("000000") may still be copied.
    At each step it bans, per row and unit size, the one piece that would complete the run: at most `longest_unit`
    pieces, so the model's choice is kept everywhere else."""

    def __init__(self, source_ids: torch.LongTensor, pad_token_id: int | None = None, limit: int = 3,
                 longest_unit: int = 6):
        self.source, self.limit, self.longest_unit = source_ids.long(), limit, longest_unit
        self.pad_token_id = pad_token_id
        if pad_token_id is not None:  # padding never matches a written piece
            self.source = self.source.masked_fill(self.source == pad_token_id, -1)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        written = input_ids[:, 1:].to(scores.device)  # after the decoder start token
        rows = written.shape[0]
        source = self.source.to(scores.device)
        if rows != source.shape[0]:  # beams and samples repeat their source row
            source = source.repeat_interleave(rows // source.shape[0], 0)
        banned = torch.zeros_like(scores, dtype=torch.bool)
        for size in range(1, self.longest_unit + 1):
            window = (self.limit + 1) * size  # the run that the next piece would complete
            if written.shape[1] < window - 1 or source.shape[1] < 1:
                break
            tail = written[:, -(window - 1):]
            periodic = (tail[:, size:] == tail[:, :-size]).all(1)
            if self.pad_token_id is not None:  # rows left-padded to a common length (drafted decoding) loop on nothing
                periodic &= tail[:, 0] != self.pad_token_id
            if not bool(periodic.any()):
                continue
            completes = tail[:, -size]  # the piece that would make the run `limit + 1` units long
            run = torch.cat((tail, completes[:, None]), dim=1)
            in_source = torch.zeros_like(periodic)
            if source.shape[1] >= window:
                in_source = (source.unfold(1, window, 1) == run[:, None, :]).all(2).any(1)
            ban = periodic & ~in_source
            banned[ban, completes[ban]] = True
        if not bool(banned.any()):
            return scores
        guarded = scores.masked_fill(banned, float("-inf"))
        stuck = ~guarded.isfinite().any(1, keepdim=True)  # never leave a row without a piece to choose
        return torch.where(stuck, scores, guarded)
