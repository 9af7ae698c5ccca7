"""The embedded "echo" data set: a conversational task that can only be solved by copying.

The lecture's chatbot example is ``"I am Kuroro." -> "Hello, Kuroro!"`` (and ``我是庫洛洛 -> 你好!庫洛洛``): the
decoder has to output a word it has never been taught to generate.  :func:`make_echo_dataset` builds a whole task
of that kind, made by copynat itself (seeded, nothing is downloaded):

* ~50 conversational template pairs in English and Chinese (``"My name is {name} and I live in {place}."`` ->
  ``"Nice to meet you, {name}. How is {place}?"``), some with two entities, some that reorder them, some whose
  source carries an extra entity the reply must leave out;
* the slots are filled with *entities* of many shapes and scripts (:mod:`copynat.data.entities`): Latin names of 1 to
  24 letters with mixed case, apostrophes, hyphens and diacritics, names and places in CJK, kana, Hangul, Cyrillic,
  Greek and Arabic script, digit strings of 1 to 16 digits with leading zeros, times, codes, e-mail addresses, URLs;
* every entity belongs to exactly one split, decided by a keyed hash of the entity (:func:`entity_split`), so **no
  validation or test entity ever occurs in the training data**;
* a fourth split, ``"test_ood"``, holds entity *families* that training never sees (scripts, a length range, shapes,
  hand-written real names and places: :data:`~copynat.data.entities.OOD_FAMILIES`), an equal number of examples
  per family.

Each example lists the entities its target copies (``"entities"``) and their categories (``"categories"``,
``"name/cjk"``, ``"number/long-digits"``); :func:`entity_copy_rate` and :func:`copy_rates_by_category` score
predictions with them.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from .entities import OOD_FAMILIES, REAL_ENTITIES, STRUCTURAL_WORDS, TRAIN_FAMILIES, Family

if TYPE_CHECKING:  # pragma: no cover
    import datasets

__all__ = [
    "ECHO_TEMPLATES",
    "ENTITY_KINDS",
    "SPLITS",
    "SPLIT_FRACTIONS",
    "entity_split",
    "entity_words",
    "make_echo_dataset",
    "make_echo_examples",
    "make_echo_ood_examples",
    "make_copy_dataset",
    "exact_match",
    "entity_copy_rate",
    "copy_rates_by_category",
    "repeats_beyond_source",
    "sample_entity",
]

# --------------------------------------------------------------------------------------------------- templates

#: ``(source_template, target_template)`` pairs.  Slots: ``{name}``, ``{name2}``, ``{place}``, ``{place2}``,
#: ``{number}``, ``{time}``, ``{code}``, ``{email}``, ``{url}``.  Every target has at least one slot; a slot that
#: appears only in the source is a distractor the reply must not copy.
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
    ("My email is {email}.", "Thanks, I will write to {email}."),
    ("Send the file to {email}, please.", "Okay, sending it to {email} now."),
    ("You can reach {name} at {email}.", "Got it, {email} for {name}."),
    ("Visit {url} for details.", "Thanks, I will open {url}."),
    ("The link is {url}.", "Opening {url} now."),
    ("Our website is {url} and the code is {code}.", "I will use {code} on {url}."),
    ("Call me at {number} or write to {email}.", "I will call {number} first."),
    # Chinese: the lecture's 我是庫洛洛 -> 你好!庫洛洛, and entities glued to the text around them
    ("我是{name}。", "你好!{name}!"),
    ("我叫{name}。", "{name}，很高兴认识你。"),
    ("你好，我是{name}，来自{place}。", "你好{name}!{place}怎么样?"),
    ("我来自{place}。", "{place}是个好地方!"),
    ("我的朋友{name}住在{place}。", "替我向{place}的{name}问好!"),
    ("请打{number}找我。", "好的，我会打{number}。"),
    ("会议{time}开始。", "好的，{time}见。"),
    ("我的订单号是{code}。", "谢谢，订单{code}已记录。"),
    ("我的邮箱是{email}。", "好的，我会发邮件到{email}。"),
    ("网址是{url}。", "好的，我会打开{url}。"),
    ("我从{place}搬到了{place2}。", "为什么离开{place}去{place2}?"),
    ("{name}明天去{place}。", "祝{name}在{place}玩得开心!"),
    ("{name}和{name2}是我的同学。", "{name2}和{name}好!"),
    ("我的房间号是{number}，我叫{name}。", "好的{name}，房间{number}。"),
)

#: slot name -> entity kind
_SLOT_KIND = {"name": "name", "name2": "name", "place": "place", "place2": "place", "number": "number",
              "time": "time", "code": "code", "email": "email", "url": "url"}
ENTITY_KINDS: tuple[str, ...] = ("name", "place", "number", "time", "code", "email", "url")

_SLOT_RE = re.compile(r"\{(\w+)\}")
#: a "word": letters/digits of any script, possibly joined by ':' or '-' ("7:45" and "XK-42" are one word each)
_WORD_RE = re.compile(r"[^\W_]+(?:[:\-][^\W_]+)*")

# ------------------------------------------------------------------------------------------------------ splits

SPLITS: tuple[str, ...] = ("train", "validation", "test")
#: share of the entity space that belongs to each split (by keyed hash, see entity_split)
SPLIT_FRACTIONS: dict[str, float] = {"train": 0.8, "validation": 0.1, "test": 0.1}
_HASH_KEY = b"copynat-echo-v1"


def entity_split(entity: str) -> str:
    """The split (``"train"``, ``"validation"`` or ``"test"``) an entity belongs to.

    Decided by a keyed BLAKE2 hash of the lower-cased entity, so it is the same for every seed, every process and
    every Python version: the three entity pools are disjoint by construction, whatever ``num_train``/``seed`` is
    used.
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
    """Lower-cased words of ``text``, in any script ("7:45" and "XK-42" are one word each)."""
    return [w.lower() for w in _WORD_RE.findall(text)]


# Words of the templates can never be entities (so "Home" = ho+me is rejected as a name).
_TEMPLATE_WORDS = frozenset(
    w for pair in ECHO_TEMPLATES for t in pair for w in entity_words(_SLOT_RE.sub(" ", t))
)

# --------------------------------------------------------------------------------------------------- entities

_FAMILIES_BY_KIND: dict[str, tuple[Family, ...]] = {
    kind: tuple(f for f in TRAIN_FAMILIES if f.kind == kind) for kind in ENTITY_KINDS
}


def _belongs_to(entity: str, split: str) -> bool:
    """A held-out entity belongs to its split by its own hash. A training entity needs every word of it to belong
    to training too (but for shape words: "https", "com"), so that no held-out entity is ever a word of one."""
    if entity_split(entity) != split:
        return False
    return split != "train" or all(entity_split(w) == "train" for w in entity_words(entity)
                                   if w not in STRUCTURAL_WORDS)


def sample_entity(rng: random.Random, kind: str, split: str, exclude: set[str] = frozenset(),
                  like: tuple[str, str] | None = None) -> tuple[str, str]:
    """(entity, category) of one of the kind's (one of `ENTITY_KINDS`) training families, belonging to `split` (so a
    "train" entity is never a validation or test one), not in `exclude` (lower-cased); with `like` (an entity and its
    category), of the same family and alphabet."""
    families = _FAMILIES_BY_KIND[kind]
    weights = [f.weight for f in families]
    for _ in range(10_000):
        if like is not None:
            family = next(f for f in families if f.category == like[1])
            entity = family.sibling(rng, like[0])
        else:
            family = rng.choices(families, weights=weights)[0] if len(families) > 1 else families[0]
            entity = family.make(rng)
        low = entity.lower()
        if low in exclude or low in _TEMPLATE_WORDS or entity in REAL_ENTITIES:
            continue
        if _belongs_to(entity, split):
            return entity, family.category
    raise RuntimeError(f"could not sample a {kind!r} entity for split {split!r}")  # pragma: no cover


def _fill(rng: random.Random, template: tuple[str, str], fillers: dict[str, tuple[str, str]],
          scored: set[str] | None = None) -> dict:
    """One example from a template pair and its slot values ``{slot: (entity, category)}``; the entities it lists
    are those of the `scored` categories (all when None)."""
    source_template, target_template = template
    entities, categories = [], []
    for slot in _SLOT_RE.findall(target_template):
        entity, category = fillers[slot]
        if entity not in entities and (scored is None or category in scored):
            entities.append(entity)
            categories.append(category)
    values = {slot: entity for slot, (entity, _) in fillers.items()}
    return {"source": source_template.format(**values), "target": target_template.format(**values),
            "entities": entities, "categories": categories}


def _template_slots(template: tuple[str, str]) -> list[str]:
    return sorted(set(_SLOT_RE.findall(template[0])))


# --------------------------------------------------------------------------------------------------- examples


def make_echo_examples(num_examples: int, split: str = "train", seed: int = 0) -> list[dict]:
    """``num_examples`` echo pairs for one split, as a list of dicts with keys ``source``, ``target``, ``entities``
    (the entity strings the target must copy, in order of first appearance in the target) and ``categories`` (each
    entity's ``"kind/family"``).  Deterministic in ``(split, seed)``; the examples of a split do not depend on how
    many examples the other splits have."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if num_examples < 0:
        raise ValueError("num_examples must be >= 0")
    rng = random.Random(f"copynat-echo:{seed}:{split}")
    out = []
    for _ in range(num_examples):
        template = ECHO_TEMPLATES[rng.randrange(len(ECHO_TEMPLATES))]
        fillers: dict[str, tuple[str, str]] = {}
        used: set[str] = set()
        for slot in _template_slots(template):
            kind = _SLOT_KIND[slot]
            # Half the time two names (or places) of one reply are written alike (Мария and Иван): the model must
            # then tell them apart by where they stand, as it must for two names in a script it never saw.
            first = next((filled for other, filled in fillers.items() if _SLOT_KIND[other] == kind), None)
            like = first if first is not None and rng.random() < 0.5 else None
            fillers[slot] = sample_entity(rng, kind, split, used, like=like)
            used.add(fillers[slot][0].lower())
        out.append(_fill(rng, template, fillers))
    return out


def make_echo_ood_examples(num_examples: int, seed: int = 0) -> list[dict]:
    """Examples whose copied entities come from the out-of-distribution families (never in training), the same
    number of examples per family, in turn.  Each template slot of the family's kind holds one of its entities;
    other slots hold test-split entities of the training families, which the reply must get right too (exact
    match) but which ``entities`` does not list: the test split scores those.  Same columns as
    :func:`make_echo_examples`."""
    if num_examples < 0:
        raise ValueError("num_examples must be >= 0")
    rng = random.Random(f"copynat-echo:{seed}:test_ood")
    out = []
    for index in range(num_examples):
        family = OOD_FAMILIES[index % len(OOD_FAMILIES)]
        template = rng.choice([t for t in ECHO_TEMPLATES if any(_SLOT_KIND[s] == family.kind
                                                                 for s in _SLOT_RE.findall(t[1]))])
        fillers: dict[str, tuple[str, str]] = {}
        used: set[str] = set()
        for slot in _template_slots(template):
            if _SLOT_KIND[slot] == family.kind:
                entity = family.make(rng)
                while entity.lower() in used:
                    entity = family.make(rng)
                fillers[slot] = (entity, family.category)
            else:
                fillers[slot] = sample_entity(rng, _SLOT_KIND[slot], "test", used)
            used.add(fillers[slot][0].lower())
        out.append(_fill(rng, template, fillers, scored={family.category}))
    return out


def _features():
    import datasets

    list_type = getattr(datasets, "List", None) or datasets.Sequence
    return datasets.Features({"source": datasets.Value("string"), "target": datasets.Value("string"),
                              "entities": list_type(datasets.Value("string")),
                              "categories": list_type(datasets.Value("string"))})


def make_echo_dataset(
    num_train: int = 20000,
    num_validation: int = 500,
    num_test: int = 1000,
    seed: int = 0,
    num_test_ood: int = 1500,
) -> "datasets.DatasetDict":
    """Build the echo task as a :class:`datasets.DatasetDict`.

    Splits ``"train"``, ``"validation"``, ``"test"`` and, unless ``num_test_ood=0``, ``"test_ood"``; columns
    ``"source"`` and ``"target"`` (plain strings), ``"entities"`` (the entity strings the target copies from the
    source) and ``"categories"`` (their ``"kind/family"``) -- feed them to :func:`copy_rates_by_category`.

    The same ``seed`` always gives the same data; a different seed gives different data.  The entity pools of the
    splits are disjoint (checked here), and no validation or test entity occurs in the training sources or targets,
    not even as a word of a training entity ("8:15" is not in "8:15 pm", "Tamiko" not in "San Tamiko"); the
    ``test_ood`` entities come from families training never draws from.

    >>> ds = make_echo_dataset(num_train=2, num_validation=1, num_test=1, num_test_ood=0)
    >>> ds["train"][0]["source"], ds["train"][0]["target"]  # doctest: +SKIP
    ('I am Kuroro.', 'Hello, Kuroro!')
    """
    import datasets

    sizes = {"train": num_train, "validation": num_validation, "test": num_test}
    examples = {split: make_echo_examples(n, split, seed) for split, n in sizes.items()}
    if num_test_ood:
        examples["test_ood"] = make_echo_ood_examples(num_test_ood, seed)
    _check_disjoint(examples)
    features = _features()
    return datasets.DatasetDict({
        split: datasets.Dataset.from_dict({k: [ex[k] for ex in rows] for k in features}, features=features)
        for split, rows in examples.items()
    })


def _check_disjoint(examples: dict[str, list[dict]]) -> None:
    """Assert the copy guarantee: no entity of one split is an entity of another one (the hash split makes it so)."""
    pools = {split: {e.lower() for ex in rows for e in ex["entities"]} for split, rows in examples.items()}
    for split in pools:
        for other in pools:
            if other != split and (split, other) != ("test_ood", "test") and (split, other) != ("test", "test_ood"):
                leaked = pools[split] & pools[other]
                if leaked:  # pragma: no cover - guaranteed by entity_split and the held-out families
                    raise AssertionError(f"{split} entities occur in the {other} split: {sorted(leaked)[:10]}")


# ---------------------------------------------------------------------------------------------------- copy toy

_TOY_CONSONANTS = ("k", "s", "t", "n", "h", "m", "y", "r", "w", "g", "z", "d", "b", "p", "ch", "sh")


def _syllable(rng: random.Random) -> str:
    syllable = rng.choice(_TOY_CONSONANTS) + rng.choice("aiueo")
    return syllable + "n" if rng.random() < 0.1 else syllable


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


# ----------------------------------------------------------------------------------------------------- metrics


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


def _occurrences(text: str, entity: str) -> Iterable[tuple[str, str]]:
    """(character before, character after) of each occurrence of ``entity`` in ``text`` ("" at either end)."""
    start = text.find(entity)
    while start != -1:
        end = start + len(entity)
        yield text[start - 1:start], text[end:end + 2]
        start = text.find(entity, start + 1)


def _glued(before: str, after: str) -> bool:
    """Whether an occurrence continues a longer word: "Kuro" in "Kuroro", "42" in "XK-42", "7:45" in "17:45"."""
    return before.isalnum() or before in ":-" or after[:1].isalnum() or (after[:1] in ":-" and after[1:2].isalnum())


def _copied(prediction: str, entity: str, reference: str | None) -> bool:
    """Verbatim, and not as part of a longer word; where the reference glues the entity to its neighbours (Chinese
    text: "替我向東京的..."), the prediction must have the same neighbours around it."""
    if not entity:
        return True
    found = list(_occurrences(prediction, entity))
    if any(not _glued(before, after) for before, after in found):
        return True
    if reference is None:
        return False
    contexts = {(before, after[:1]) for before, after in _occurrences(reference, entity) if _glued(before, after)}
    return any((before, after[:1]) in contexts for before, after in found)


def entity_copy_rate(predictions: Iterable[str], entities_lists: Iterable[Sequence[str]],
                     references: Iterable[str] | None = None) -> float:
    """Fraction of required entities that appear verbatim (as whole words) in the prediction.

    Micro-averaged over all (example, entity) pairs: ``entities_lists[i]`` are the entities prediction ``i`` must
    contain (the ``"entities"`` column of :func:`make_echo_dataset`).  With ``references`` (the targets), an entity
    that the reference glues to its neighbours (Chinese has no spaces) counts when the prediction has it between
    the same two characters.  Returns 1.0 when no entity is required at all; raises ``ValueError`` on a length
    mismatch.
    """
    rates = copy_rates_by_category(predictions, entities_lists, None, references)
    return rates["all"]


def copy_rates_by_category(predictions: Iterable[str], entities_lists: Iterable[Sequence[str]],
                           categories_lists: Iterable[Sequence[str]] | None,
                           references: Iterable[str] | None = None) -> dict[str, float]:
    """Entity copy rate overall (``"all"``) and per category (``"name/cjk"``: the ``"categories"`` column of
    :func:`make_echo_dataset`), each in [0, 1]; see :func:`entity_copy_rate` for what counts as copied."""
    preds, ents = list(predictions), list(entities_lists)
    cats = list(categories_lists) if categories_lists is not None else [[""] * len(e) for e in ents]
    refs = list(references) if references is not None else [None] * len(preds)
    if not len(preds) == len(ents) == len(cats) == len(refs):
        raise ValueError(f"got {len(preds)} predictions but {len(ents)} entity lists, {len(cats)} category lists and "
                         f"{len(refs)} references")
    found: dict[str, list[int]] = {"all": [0, 0]}
    for pred, required, categories, ref in zip(preds, ents, cats, refs):
        if len(categories) != len(required):
            raise ValueError(f"entities {list(required)} have {len(categories)} categories")
        for entity, category in zip(required, categories):
            hit = _copied(pred, entity, ref)
            for key in ("all", category) if category else ("all",):
                counts = found.setdefault(key, [0, 0])
                counts[0] += hit
                counts[1] += 1
    return {key: (1.0 if total == 0 else hits / total) for key, (hits, total) in sorted(found.items())}


def repeats_beyond_source(prediction: Sequence[int], source: Sequence[int], limit: int = 3,
                          longest_unit: int = 6) -> bool:
    """A repetition loop: some unit of 1 to `longest_unit` tokens stands more than `limit` times in a row in
    `prediction` (token ids, without special tokens) and nowhere so in `source`. Units longer than one token catch
    the loops of byte-level pieces ("洛洛洛洛" is a three-piece unit four times)."""

    def runs(ids: Sequence[int]) -> set[tuple[int, ...]]:
        found = set()
        for size in range(1, longest_unit + 1):
            for start in range(len(ids) - size * (limit + 1) + 1):
                unit = tuple(ids[start:start + size])
                if all(tuple(ids[start + k * size:start + (k + 1) * size]) == unit for k in range(1, limit + 1)):
                    found.add(unit)
        return found

    return bool(runs(prediction) - runs(source))
