"""Which parts of an output were copied from which parts of the source, read off the copy head.

The copy head mixes two routes for every output token w (pointer-generator):
p(w) = p_gen * p_vocab(w) + (1 - p_gen) * (copy attention summed over the source positions holding w).
The copy route's share of the whole distribution, (1 - p_gen) * mass(w), is what this module calls `p_copy`. Where
it is at least one half, copying is what made the token: the generating route then holds at most p_gen <= 1/2.
A token no source position holds has p_copy = 0: it cannot have been copied, whatever the gate says.

Copied tokens that point at consecutive source tokens join one span; spans are given as character offsets into the
output text and the source text, so an application can highlight them without knowing the tokenizer.
Hub remote code: torch and the standard library only.
"""

from __future__ import annotations

import os
from typing import Sequence

import torch

__all__ = ["copy_spans", "prefix_offsets"]


def prefix_offsets(prefix_texts: Sequence[str], text: str) -> list[tuple[int, int]]:
    """Character offsets of each output token in `text`, from the decoded text of each prefix of the output
    (`prefix_texts[k]` = the first k + 1 tokens decoded like `text`).

    A token ends where its prefix stops agreeing with `text`: a byte piece that ends inside a multi-byte character
    decodes to U+FFFD, so it gets an empty range, and the piece that completes the character gets the character."""
    offsets, end = [], 0
    for prefix in prefix_texts:
        start, end = end, max(end, len(os.path.commonprefix([prefix, text])))
        offsets.append((start, end))
    return offsets


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    """`start:end` without the whitespace at either end (byte-level pieces carry their leading space)."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def copy_spans(
    p_gen: torch.Tensor,
    copy_attention: torch.Tensor,
    output_keys: Sequence[str | None],
    source_keys: Sequence[str | None],
    output_offsets: Sequence[tuple[int, int]],
    source_offsets: Sequence[tuple[int, int]],
    output_text: str,
    source_text: str,
    threshold: float = 0.5,
) -> list[dict]:
    """The copied spans of one output.

    p_gen: `[tgt]`, copy_attention: `[tgt, src]`, for the output tokens (the decoder-start token excluded).
    output_keys / source_keys: one key per token saying which tokens are the same piece (the copy head may copy
    "Ġname" as "name"); None for tokens that take no part (special tokens, padding).
    output_offsets / source_offsets: `(start, end)` character offsets of each token in `output_text` / `source_text`.
    threshold: the least p_copy of a copied token.

    Returns one dict per span, in output order: `output_start`, `output_end`, `source_start`, `source_end` (character
    offsets, whitespace trimmed), `output_text`, `source_text` (the two substrings) and `p_copy` (the mean over the
    span's tokens)."""
    copy_weight = (1.0 - p_gen.float()).tolist()
    attention = copy_attention.float()
    positions_of: dict[str, list[int]] = {}
    for position, key in enumerate(source_keys):
        if key is not None:
            positions_of.setdefault(key, []).append(position)

    copied = []  # (output token, source token it points at, p_copy)
    for t, key in enumerate(output_keys[: attention.shape[0]]):
        positions = positions_of.get(key) if key is not None else None
        if not positions:
            continue
        weights = attention[t, positions]
        p_copy = copy_weight[t] * float(weights.sum())
        if p_copy >= threshold:
            copied.append((t, positions[int(weights.argmax())], p_copy))

    spans: list[list[tuple[int, int, float]]] = []
    for token in copied:
        previous = spans[-1][-1] if spans else None
        if previous is not None and token[0] == previous[0] + 1 and token[1] == previous[1] + 1:
            spans[-1].append(token)
        else:
            spans.append([token])

    result = []
    for span in spans:
        out_start, out_end = _trim(output_text, output_offsets[span[0][0]][0], output_offsets[span[-1][0]][1])
        src_start, src_end = _trim(source_text, source_offsets[span[0][1]][0], source_offsets[span[-1][1]][1])
        if out_start == out_end:  # only pieces of a character that a later, uncopied piece completes
            continue
        result.append({
            "output_start": out_start, "output_end": out_end, "source_start": src_start, "source_end": src_end,
            "output_text": output_text[out_start:out_end], "source_text": source_text[src_start:src_end],
            "p_copy": round(sum(p for _, _, p in span) / len(span), 4),
        })
    return result
