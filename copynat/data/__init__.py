"""Data sets made by copynat itself (seeded, nothing is downloaded).

* :func:`make_echo_dataset` -- the conversational "echo" task ("I am Kuroro." -> "Hello, Kuroro!", 我是庫洛洛 ->
  你好!庫洛洛) whose test entities never occur in training, and whose "test_ood" split holds entity families training
  never sees (scripts, lengths, shapes, real names and places): the proof of the copy mechanism and the default
  training data of ``copynat-train``. Its entities come from :mod:`copynat.data.entities`.
* :func:`make_copy_dataset` -- a fixed-length copy toy for non-autoregressive decoding tests.
* :func:`exact_match`, :func:`entity_copy_rate` and :func:`copy_rates_by_category` -- the matching evaluation helpers.
"""

from .echo import (
    ECHO_TEMPLATES,
    ENTITY_KINDS,
    SPLIT_FRACTIONS,
    copy_rates_by_category,
    entity_copy_rate,
    entity_split,
    entity_words,
    exact_match,
    make_copy_dataset,
    make_echo_dataset,
    make_echo_examples,
    make_echo_ood_examples,
    repeats_beyond_source,
)
from .entities import OOD_FAMILIES, REAL_NAMES_LATIN, REAL_NAMES_OTHER_SCRIPTS, REAL_PLACES, TRAIN_FAMILIES

__all__ = [
    "ECHO_TEMPLATES",
    "ENTITY_KINDS",
    "OOD_FAMILIES",
    "REAL_NAMES_LATIN",
    "REAL_NAMES_OTHER_SCRIPTS",
    "REAL_PLACES",
    "SPLIT_FRACTIONS",
    "TRAIN_FAMILIES",
    "copy_rates_by_category",
    "entity_copy_rate",
    "entity_split",
    "entity_words",
    "exact_match",
    "make_copy_dataset",
    "make_echo_dataset",
    "make_echo_examples",
    "make_echo_ood_examples",
    "repeats_beyond_source",
]
