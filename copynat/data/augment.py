"""Entity augmentation: copies of training pairs in which a name or number is swapped for an entity of any script.

A translation corpus seldom asks a model to copy. Multi30k's 29,000 pairs hold a few hundred names and not one
character outside Latin script, so a model trained on it has never walked its copy head through a Cyrillic name,
and its embeddings of those bytes are still random: asked for "A girl named Олена ...", it derails. Where a word
stands verbatim on both sides of a pair (a name or a number: "London", "2012", "Frisbee"), it can be swapped for
any other name on both sides and the pair is still a correct translation. :func:`augment_with_entities` adds such
copies, with entities from the echo task's generators (:mod:`copynat.data.entities`: Latin names of every shape,
CJK, kana, Hangul, Cyrillic, Greek, Arabic and other scripts, digit strings, codes), drawn from the entity pool of
the echo task's training split only: no validation, test or out-of-distribution entity is ever used.

``copynat-train --entity_augmentation 4`` applies it to the training split.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from .echo import sample_entity

__all__ = ["augment_with_entities", "shared_entity_words"]

_WORD = re.compile(r"[^\W_]+")
#: one-letter capitals ("I", "A") and the like are words, not names
_NOT_NAMES = frozenset({"I", "A", "O"})


def shared_entity_words(source: str, target: str) -> list[str]:
    """Words of `source` that look like a name or a number (a capital or a digit in them; not the first word, whose
    capital says nothing) and stand as whole words in `target` too, in order of first appearance."""
    found: list[str] = []
    for index, match in enumerate(_WORD.finditer(source)):
        word = match.group()
        if word in found or word in _NOT_NAMES:
            continue
        if not (any(c.isdigit() for c in word) or (index > 0 and word[0].isupper())):
            continue
        if re.search(rf"(?<!\w){re.escape(word)}(?!\w)", target):
            found.append(word)
    return found


def _swap(text: str, word: str, entity: str) -> str:
    return re.sub(rf"(?<!\w){re.escape(word)}(?!\w)", lambda _: entity, text)


def augment_with_entities(sources: Sequence[str], targets: Sequence[str], copies: int,
                          seed: int = 0) -> tuple[list[str], list[str]]:
    """For each pair with a :func:`shared_entity_words` word, `copies` new pairs in which one such word (picked at
    random) is replaced on both sides by a generated entity: a number by a digit string or a code, any other word
    by a name or a place of any script. Returns the new (sources, targets) only; deterministic in `seed`."""
    if isinstance(copies, bool) or not isinstance(copies, int) or copies < 0:
        raise ValueError(f"copies must be an integer >= 0, got {copies!r}")
    if len(sources) != len(targets):
        raise ValueError(f"got {len(sources)} sources but {len(targets)} targets")
    rng = random.Random(f"copynat-entity-augmentation:{seed}")
    new_sources, new_targets = [], []
    for source, target in zip(sources, targets):
        words = shared_entity_words(source, target) if copies else []
        for _ in range(copies if words else 0):
            word = rng.choice(words)
            if any(c.isdigit() for c in word):
                kind = rng.choice(("number", "number", "code"))
            else:
                kind = rng.choice(("name", "name", "place"))
            entity, _ = sample_entity(rng, kind, "train")
            new_sources.append(_swap(source, word, entity))
            new_targets.append(_swap(target, word, entity))
    return new_sources, new_targets
