"""Data sets made by copynat itself (seeded, nothing is downloaded).

* :func:`make_echo_dataset` -- the conversational "echo" task ("I am Kuroro." ->
  "Hello, Kuroro!") whose test entities never occur in training: the proof of the copy
  mechanism and the default training data of ``copynat-train``.
* :func:`make_entity_tokenizer` -- a tokenizer with one whole-word token per echo entity (the
  word-level regime in which an unseen entity is a token no training text contains).
* :func:`make_copy_dataset` -- a fixed-length copy toy for non-autoregressive decoding tests.
* :func:`exact_match` and :func:`entity_copy_rate` -- the matching evaluation helpers.
"""

from .echo import (
    ECHO_TEMPLATES,
    ENTITY_KINDS,
    SPLIT_FRACTIONS,
    entity_copy_rate,
    entity_split,
    entity_words,
    exact_match,
    make_copy_dataset,
    make_echo_dataset,
    make_echo_examples,
    make_entity_tokenizer,
)

__all__ = [
    "ECHO_TEMPLATES",
    "ENTITY_KINDS",
    "SPLIT_FRACTIONS",
    "entity_copy_rate",
    "entity_split",
    "entity_words",
    "exact_match",
    "make_copy_dataset",
    "make_echo_dataset",
    "make_echo_examples",
    "make_entity_tokenizer",
]
