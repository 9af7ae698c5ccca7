"""The embedded "echo" data set: a tiny conversational task that can only be solved by copying.

The lecture's chatbot example is ``"I am Kuroro." -> "Hello, Kuroro!"``: the decoder has to
output a word it has never been taught to generate.  :func:`make_echo_dataset` builds a
whole task of that kind, made by copynat itself (seeded, nothing is downloaded):

* ~30 conversational template pairs (``"My name is {name} and I live in {place}."`` ->
  ``"Nice to meet you, {name}. How is {place}?"``), some with two entities, some that
  reorder or repeat them, some whose source carries an extra entity the reply must leave out;
* the slots are filled with made-up *entities*: names and places built from random
  syllables (``"Kuroro"``, ``"Tamikoberg"``), numbers (``"4821"``), clock times
  (``"7:45"``) and codes (``"XK-42"``);
* every entity word belongs to exactly one split, decided by a keyed hash of the word
  (:func:`entity_split`), so the **test entities never occur anywhere in the training
  data** -- not in a source, not in a target.  The templates themselves are shared.

What it measures: the test replies are right only if the model learns *where* the entity
sits in the source and reproduces it from there, which :func:`entity_copy_rate` scores on
the test split.  With copynat's byte-level BPE an unseen name is a new string of *seen*
subword tokens, and a plain Transformer learns to re-emit the tokens it attends to:
measured in ``benchmarks/copy_echo.py``, the no-copy model reaches 95.0 % exact match
against the copy model's 95.5 %.  With one token per entity (:func:`make_entity_tokenizer`,
the benchmark's ``--variant whole-word-entities``) a test entity is a token that occurs in
no training text, the word-level regime of the pointer-generator papers: there the copy
model reaches 99.8 % and the no-copy model 66 % (it copies a little through its tied
input/output embeddings); with untied output projections 99.2 % against 0.0 %.

Sentences are short -- sources 3-9 words (mean 5.8), targets 2-8 words (mean 5.9); about
11 byte-level BPE tokens on average, at most ~21 -- so a tiny model learns the task in
minutes on a CPU.
"""

from __future__ import annotations

import hashlib
import random
import re
import string
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import datasets
    from transformers import PreTrainedTokenizerFast

__all__ = [
    "ECHO_TEMPLATES",
    "ENTITY_KINDS",
    "SPLIT_FRACTIONS",
    "entity_split",
    "entity_words",
    "make_echo_dataset",
    "make_echo_examples",
    "make_copy_dataset",
    "make_entity_tokenizer",
    "exact_match",
    "entity_copy_rate",
]

# --------------------------------------------------------------------------- templates

#: ``(source_template, target_template)`` pairs.  Slots: ``{name}``, ``{name2}``,
#: ``{place}``, ``{place2}``, ``{number}``, ``{time}``, ``{code}``.  Every target has at
#: least one slot; a slot that appears only in the source is a distractor the reply must
#: not copy.
ECHO_TEMPLATES: tuple[tuple[str, str], ...] = (
    ("I am {name}.", "Hello, {name}!"),
    ("Hi, I am {name}.", "Hello, {name}! Nice to meet you."),
    ("My name is {name}.", "Nice to meet you, {name}."),
    ("Call me {name}, please.", "Okay, I will call you {name}."),
    ("My name is {name} and I live in {place}.", "Nice to meet you, {name}. How is {place}?"),
    ("I come from {place}.", "Oh, {place}! I have never been to {place}."),
    ("Please call me at {number}.", "Sure, I will call {number}."),
    ("My room number is {number}.", "Got it, room {number}."),
    ("The meeting starts at {time}.", "Okay, see you at {time}."),
    ("Let us meet in {place} at {time}.", "Great, {place} at {time} works for me."),
    ("My friend {name} lives in {place}.", "Say hello to {name} in {place}!"),
    ("This is my friend {name2}, and I am {name}.", "Hello {name} and {name2}!"),
    ("{name} is my teacher.", "Is {name} a good teacher?"),
    ("I am flying to {place} on flight {code}.", "Have a safe flight on {code} to {place}!"),
    ("Your order number is {code}.", "Thank you, I will remember {code}."),
    ("The train to {place} leaves at {time}.", "Hurry, the {time} train to {place} is waiting."),
    ("Do you know {name}?", "Yes, {name} is my neighbor."),
    ("I have {number} cats.", "Wow, {number} cats is a lot!"),
    ("My ticket code is {code}.", "Your ticket {code} is confirmed."),
    ("Meet {name} at gate {number}.", "Okay, {name} at gate {number}."),
    ("Tell {name} that I am in {place}.", "I will tell {name} you are in {place}."),
    ("The password for room {number} is {code}.", "Room {number} uses {code}."),
    ("I moved from {place} to {place2}.", "Why did you leave {place} for {place2}?"),
    ("{name} called from {place} at {time}.", "What did {name} want at {time}?"),
    ("My sister is {name} and my brother is {name2}.", "{name2} and {name} are lovely names."),
    ("I will be in {place} until {time}.", "See you in {place} after {time}."),
    ("My number is {number}, ask for {name}.", "I will call {number} and ask for {name}."),
    ("Where is {place}?", "I do not know where {place} is."),
    ("The bus {code} goes to {place}.", "Thanks, I will take {code} to {place}."),
    ("I was born in {place} in room {number}.", "So you are from {place}!"),
)

#: slot name -> entity kind
_SLOT_KIND = {
    "name": "name",
    "name2": "name",
    "place": "place",
    "place2": "place",
    "number": "number",
    "time": "time",
    "code": "code",
}
ENTITY_KINDS: tuple[str, ...] = ("name", "place", "number", "time", "code")

_SLOT_RE = re.compile(r"\{(\w+)\}")
#: a "word" for the disjointness guarantee: letters/digits, possibly joined by ':' or '-'
_WORD_RE = re.compile(r"[A-Za-z0-9]+(?:[:\-][A-Za-z0-9]+)*")

# ------------------------------------------------------------------------------ splits

SPLITS: tuple[str, ...] = ("train", "validation", "test")
#: share of the entity space that belongs to each split (by keyed hash, see entity_split)
SPLIT_FRACTIONS: dict[str, float] = {"train": 0.8, "validation": 0.1, "test": 0.1}
_HASH_KEY = b"copynat-echo-v1"


def entity_split(entity: str) -> str:
    """The split (``"train"``, ``"validation"`` or ``"test"``) an entity belongs to.

    Decided by a keyed BLAKE2 hash of the lower-cased entity, so it is the same for every
    seed, every process and every Python version: the three entity pools are disjoint by
    construction, whatever ``num_train``/``seed`` is used.
    """
    digest = hashlib.blake2b(entity.lower().encode("utf-8"), digest_size=8, key=_HASH_KEY).digest()
    u = int.from_bytes(digest, "big") / 2.0**64
    acc = 0.0
    for split in SPLITS:
        acc += SPLIT_FRACTIONS[split]
        if u < acc:
            return split
    return SPLITS[-1]


def entity_words(text: str) -> list[str]:
    """Lower-cased words of ``text`` as used by the disjointness guarantee ("7:45" and
    "XK-42" are one word each)."""
    return [w.lower() for w in _WORD_RE.findall(text)]


# Words of the templates can never be entities (so "Home" = ho+me is rejected as a name).
_TEMPLATE_WORDS = frozenset(
    w for pair in ECHO_TEMPLATES for t in pair for w in entity_words(_SLOT_RE.sub(" ", t))
)

# ---------------------------------------------------------------------------- entities

_CONSONANTS = ("k", "s", "t", "n", "h", "m", "y", "r", "w", "g", "z", "d", "b", "p", "ch", "sh")
_VOWELS = ("a", "i", "u", "e", "o")
_PLACE_SUFFIXES = ("ville", "berg", "ton", "shima", "polis", "mura", "burg", "port", "field", "dale")
_CODE_LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"  # no I/O, which look like 1/0


def _syllable(rng: random.Random) -> str:
    s = rng.choice(_CONSONANTS) + rng.choice(_VOWELS)
    if rng.random() < 0.1:
        s += "n"
    return s


def _make_name(rng: random.Random) -> str:
    return "".join(_syllable(rng) for _ in range(rng.randint(2, 4))).capitalize()


def _make_place(rng: random.Random) -> str:
    core = "".join(_syllable(rng) for _ in range(rng.randint(2, 3)))
    if rng.random() < 0.7:
        core += rng.choice(_PLACE_SUFFIXES)
    return core.capitalize()


def _make_number(rng: random.Random) -> str:
    n = rng.randint(2, 5)
    return str(rng.randint(1, 9)) + "".join(rng.choice(string.digits) for _ in range(n - 1))


def _make_time(rng: random.Random) -> str:
    return f"{rng.randint(1, 12)}:{rng.randrange(0, 60, 5):02d}"


def _make_code(rng: random.Random) -> str:
    letters = "".join(rng.choice(_CODE_LETTERS) for _ in range(2))
    return f"{letters}-{rng.randint(1, 9)}{rng.choice(string.digits)}" + (
        rng.choice(string.digits) if rng.random() < 0.5 else ""
    )


_MAKERS = {
    "name": _make_name,
    "place": _make_place,
    "number": _make_number,
    "time": _make_time,
    "code": _make_code,
}


def _sample_entity(rng: random.Random, kind: str, split: str, exclude: set[str]) -> str:
    maker = _MAKERS[kind]
    for _ in range(10_000):
        ent = maker(rng)
        low = ent.lower()
        if low in exclude or low in _TEMPLATE_WORDS:
            continue
        if entity_split(ent) == split:
            return ent
    raise RuntimeError(f"could not sample a {kind!r} entity for split {split!r}")  # pragma: no cover


# ---------------------------------------------------------------------------- examples


def make_echo_examples(num_examples: int, split: str = "train", seed: int = 0) -> list[dict]:
    """``num_examples`` echo pairs for one split, as a list of dicts with keys ``source``,
    ``target`` and ``entities`` (the entity strings the target must copy, in order of
    first appearance in the target).  Deterministic in ``(split, seed)``; the examples of a
    split do not depend on how many examples the other splits have."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if num_examples < 0:
        raise ValueError("num_examples must be >= 0")
    rng = random.Random(f"copynat-echo:{seed}:{split}")
    out = []
    for _ in range(num_examples):
        src_t, tgt_t = ECHO_TEMPLATES[rng.randrange(len(ECHO_TEMPLATES))]
        slots = sorted(set(_SLOT_RE.findall(src_t)))
        values: dict[str, str] = {}
        used: set[str] = set()
        for slot in slots:
            ent = _sample_entity(rng, _SLOT_KIND[slot], split, used)
            values[slot] = ent
            used.add(ent.lower())
        entities = []
        for slot in _SLOT_RE.findall(tgt_t):
            if values[slot] not in entities:
                entities.append(values[slot])
        out.append(
            {
                "source": src_t.format(**values),
                "target": tgt_t.format(**values),
                "entities": entities,
            }
        )
    return out


def _features():
    import datasets

    list_type = getattr(datasets, "List", None) or datasets.Sequence
    return datasets.Features(
        {
            "source": datasets.Value("string"),
            "target": datasets.Value("string"),
            "entities": list_type(datasets.Value("string")),
        }
    )


def make_echo_dataset(
    num_train: int = 20000,
    num_validation: int = 500,
    num_test: int = 1000,
    seed: int = 0,
) -> "datasets.DatasetDict":
    """Build the echo task as a :class:`datasets.DatasetDict`.

    Splits ``"train"``, ``"validation"`` and ``"test"``; columns ``"source"`` and
    ``"target"`` (plain strings) and ``"entities"`` (list of the entity strings the target
    copies from the source -- feed it to :func:`entity_copy_rate`).

    The same ``seed`` always gives the same data; a different seed gives different data.
    The entity pools of the three splits are disjoint (checked here): no word of a test
    entity occurs anywhere in the training sources or targets, so a model can only produce
    the test entities by copying them from the source.

    >>> ds = make_echo_dataset(num_train=2, num_validation=1, num_test=1)
    >>> ds["train"][0]["source"], ds["train"][0]["target"]  # doctest: +SKIP
    ('I am Kuroro.', 'Hello, Kuroro!')
    """
    import datasets

    sizes = {"train": num_train, "validation": num_validation, "test": num_test}
    examples = {split: make_echo_examples(n, split, seed) for split, n in sizes.items()}
    _check_disjoint(examples)
    features = _features()
    return datasets.DatasetDict(
        {
            split: datasets.Dataset.from_dict(
                {k: [ex[k] for ex in rows] for k in ("source", "target", "entities")},
                features=features,
            )
            for split, rows in examples.items()
        }
    )


def _check_disjoint(examples: dict[str, list[dict]]) -> None:
    """Assert the copy guarantee: entity words of one split never occur in another split."""
    words = {
        split: {w for ex in rows for text in (ex["source"], ex["target"]) for w in entity_words(text)}
        for split, rows in examples.items()
    }
    for split, rows in examples.items():
        ent_words = {w for ex in rows for e in ex["entities"] for w in entity_words(e)}
        for other in SPLITS:
            if other != split and other in words:
                leaked = ent_words & words[other]
                if leaked:  # pragma: no cover - guaranteed by entity_split
                    raise AssertionError(
                        f"{split} entities occur in the {other} split: {sorted(leaked)[:10]}"
                    )


def make_entity_tokenizer(dataset: "datasets.DatasetDict", vocab_size: int = 1000) -> "PreTrainedTokenizerFast":
    """A tokenizer in which every entity word of ``dataset`` is one whole-word token.

    Byte-level BPE trained on the training split's text (``vocab_size`` entries), plus one
    added token per entity word (every word of every split that is not a template word:
    ``"Kuroro"``, ``"4821"``, ``"7:45"``, ``"XK-42"``; the space before it stays a BPE token).
    This is the word-level regime of the pointer-generator papers: an entity the model has
    never seen is a single token that occurs in no training text, so a decoder without a copy
    mechanism was never taught to emit it (with tied input/output embeddings it can still
    reproduce a token it attends to; ``benchmarks/copy_echo.py`` measures both).  (With plain BPE
    the same entity is a new string of subword tokens that were all generated in training,
    and a plain Transformer re-emits them.)  The tokenizer holds the validation/test entity
    *strings* (a gazetteer), never their use: their tokens occur only in those splits.

    Round-trips every text of ``dataset`` exactly (``decode(encode(text)) == text``).
    """
    import itertools

    from tokenizers import AddedToken

    from copynat.tokenization import train_tokenizer

    words = {word for rows in dataset.values() for column in ("source", "target") for text in rows[column]
             for word in _WORD_RE.findall(text) if word.lower() not in _TEMPLATE_WORDS}
    tokenizer = train_tokenizer(itertools.chain(dataset["train"]["source"], dataset["train"]["target"]),
                                vocab_size=vocab_size)
    # single_word: "Ana" must not match inside "Anatolia" nor "64" inside "6455"; the leftmost match wins, so a code
    # "XK-64" is one token even when "64" is an entity too.
    tokenizer.add_tokens([AddedToken(word, normalized=False, single_word=True) for word in sorted(words)])
    return tokenizer


# ---------------------------------------------------------------------------- copy toy


def make_copy_dataset(
    num_examples: int = 1000,
    length: int = 8,
    vocab: int | Sequence[str] = 50,
    seed: int = 0,
    min_length: int | None = None,
) -> "datasets.Dataset":
    """A fixed-length copy toy: ``source`` is ``length`` random words, ``target`` the same words.

    ``vocab`` is either a list of words or the number of distinct syllable words to make
    (deterministically from ``seed``).  With ``min_length`` the lengths are drawn uniformly
    from ``[min_length, length]`` instead (handy for length-prediction tests of a
    non-autoregressive decoder).  Columns: ``source``, ``target`` (strings) and ``length``
    (number of words).
    """
    import datasets

    if length < 1:
        raise ValueError("length must be >= 1")
    if min_length is not None and not 1 <= min_length <= length:
        raise ValueError("min_length must be in [1, length]")
    rng = random.Random(f"copynat-copy:{seed}")
    if isinstance(vocab, int):
        if vocab < 1:
            raise ValueError("vocab must be >= 1")
        words: list[str] = []
        seen: set[str] = set()
        while len(words) < vocab:
            w = "".join(_syllable(rng) for _ in range(rng.randint(1, 2)))
            if w not in seen:
                seen.add(w)
                words.append(w)
    else:
        words = [str(w) for w in vocab]
        if not words or any(not w or any(c.isspace() for c in w) for w in words):
            raise ValueError("vocab words must be non-empty and contain no whitespace")
    sources, lengths = [], []
    for _ in range(num_examples):
        n = length if min_length is None else rng.randint(min_length, length)
        sources.append(" ".join(rng.choice(words) for _ in range(n)))
        lengths.append(n)
    return datasets.Dataset.from_dict(
        {"source": sources, "target": list(sources), "length": lengths},
        features=datasets.Features(
            {
                "source": datasets.Value("string"),
                "target": datasets.Value("string"),
                "length": datasets.Value("int32"),
            }
        ),
    )


# ----------------------------------------------------------------------------- metrics


def _normalize(text: str) -> str:
    return " ".join(str(text).split())


def exact_match(predictions: Iterable[str], references: Iterable[str]) -> float:
    """Fraction of predictions equal to their reference (after stripping and collapsing
    whitespace).  Returns 0.0 for empty input; raises ``ValueError`` on a length mismatch."""
    preds, refs = list(predictions), list(references)
    if len(preds) != len(refs):
        raise ValueError(f"got {len(preds)} predictions but {len(refs)} references")
    if not preds:
        return 0.0
    return sum(_normalize(p) == _normalize(r) for p, r in zip(preds, refs)) / len(preds)


def _contains_entity(prediction: str, entity: str) -> bool:
    """Verbatim, but as a whole word: "Kuro" is not in "Kuroro", "42" not in "XK-42",
    "7:45" not in "17:45"."""
    if not entity:
        return True
    start = prediction.find(entity)
    while start != -1:
        end = start + len(entity)
        before = prediction[start - 1] if start else " "
        after = prediction[end : end + 2]
        glued_before = before.isalnum() or before in ":-"
        glued_after = after[:1].isalnum() or (after[:1] in (":", "-") and after[1:2].isalnum())
        if not glued_before and not glued_after:
            return True
        start = prediction.find(entity, start + 1)
    return False


def entity_copy_rate(predictions: Iterable[str], entities_lists: Iterable[Sequence[str]]) -> float:
    """Fraction of required entities that appear verbatim (as whole words) in the prediction.

    Micro-averaged over all (example, entity) pairs: ``entities_lists[i]`` are the entities
    prediction ``i`` must contain (the ``"entities"`` column of :func:`make_echo_dataset`).
    Returns 1.0 when no entity is required at all; raises ``ValueError`` on a length mismatch.
    """
    preds, ents = list(predictions), list(entities_lists)
    if len(preds) != len(ents):
        raise ValueError(f"got {len(preds)} predictions but {len(ents)} entity lists")
    total = found = 0
    for pred, required in zip(preds, ents):
        for ent in required:
            total += 1
            found += _contains_entity(pred, ent)
    return 1.0 if total == 0 else found / total
