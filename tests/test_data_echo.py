"""Tests of the embedded echo data set (copynat.data)."""

from __future__ import annotations

import re

import datasets
import pytest

from copynat.data import (
    ECHO_TEMPLATES,
    entity_copy_rate,
    entity_split,
    entity_words,
    exact_match,
    make_copy_dataset,
    make_echo_dataset,
    make_echo_examples,
    make_entity_tokenizer,
)


@pytest.fixture(scope="module")
def echo():
    return make_echo_dataset(num_train=3000, num_validation=200, num_test=400, seed=0)


def _all_words(ds) -> set[str]:
    return {w for text in list(ds["source"]) + list(ds["target"]) for w in entity_words(text)}


def _occurs_as_word(entity: str, text: str) -> bool:
    start = text.find(entity)
    while start != -1:
        end = start + len(entity)
        before = text[start - 1] if start else " "
        after = text[end : end + 2]
        if not (before.isalnum() or before in ":-") and not (
            after[:1].isalnum() or (after[:1] in (":", "-") and after[1:2].isalnum())
        ):
            return True
        start = text.find(entity, start + 1)
    return False


def test_splits_sizes_and_columns(echo):
    assert isinstance(echo, datasets.DatasetDict)
    assert set(echo) == {"train", "validation", "test"}
    assert (echo["train"].num_rows, echo["validation"].num_rows, echo["test"].num_rows) == (3000, 200, 400)
    for split in echo.values():
        assert {"source", "target", "entities"} <= set(split.column_names)
        row = split[0]
        assert isinstance(row["source"], str) and isinstance(row["target"], str)
        assert isinstance(row["entities"], list) and row["entities"]


def test_default_sizes():
    ds = make_echo_dataset()
    assert {k: v.num_rows for k, v in ds.items()} == {"train": 20000, "validation": 500, "test": 1000}


def test_deterministic_by_seed(echo):
    again = make_echo_dataset(num_train=3000, num_validation=200, num_test=400, seed=0)
    for split in echo:
        assert echo[split].to_dict() == again[split].to_dict()
    other = make_echo_dataset(num_train=3000, num_validation=200, num_test=400, seed=1)
    for split in echo:
        assert list(echo[split]["source"]) != list(other[split]["source"])


def test_split_content_independent_of_other_split_sizes(echo):
    small = make_echo_dataset(num_train=10, num_validation=5, num_test=400, seed=0)
    assert small["test"].to_dict() == echo["test"].to_dict()
    assert list(small["train"]["source"]) == list(echo["train"]["source"])[:10]


def test_test_entities_unseen_in_train(echo):
    train_words = _all_words(echo["train"])
    for split in ("validation", "test"):
        ents = {e for row in echo[split]["entities"] for e in row}
        ent_words = {w for e in ents for w in entity_words(e)}
        assert ent_words, split
        assert not ent_words & train_words, f"{split} entity words leak into train"
        # also as raw (word-bounded) strings anywhere in train text
        train_text = "\n".join(list(echo["train"]["source"]) + list(echo["train"]["target"]))
        for e in ents:
            assert not _occurs_as_word(e, train_text), e
    # the entity pools themselves are pairwise disjoint
    pools = {s: {e.lower() for row in echo[s]["entities"] for e in row} for s in echo}
    assert not pools["train"] & pools["test"]
    assert not pools["train"] & pools["validation"]
    assert not pools["validation"] & pools["test"]


def test_entity_split_is_consistent(echo):
    for split in echo:
        for row in list(echo[split]["entities"])[:200]:
            for e in row:
                assert entity_split(e) == split
    counts = {"train": 0, "validation": 0, "test": 0}
    for i in range(2000):
        counts[entity_split(f"Word{i}")] += 1
    assert counts["train"] > 1400 and counts["validation"] > 120 and counts["test"] > 120


def test_target_entities_are_copied_from_source(echo):
    for split in echo.values():
        d = split.to_dict()
        for row in (dict(zip(d, vals)) for vals in zip(*d.values())):
            assert row["entities"], row
            for e in row["entities"]:
                assert e in row["source"], row
                assert e in row["target"], row
            # the target words outside the entities are template words
            assert entity_copy_rate([row["target"]], [row["entities"]]) == 1.0


def test_entity_kinds_and_lengths(echo):
    ents = [e for row in echo["train"]["entities"] for e in row]
    assert any(re.fullmatch(r"[A-Z][a-z]+", e) for e in ents)  # names / places
    assert any(re.fullmatch(r"[1-9]\d{1,4}", e) for e in ents)  # numbers
    assert any(re.fullmatch(r"\d{1,2}:\d\d", e) for e in ents)  # times
    assert any(re.fullmatch(r"[A-Z]{2}-\d{2,3}", e) for e in ents)  # codes
    src_len = [len(s.split()) for s in echo["train"]["source"]]
    tgt_len = [len(t.split()) for t in echo["train"]["target"]]
    assert max(src_len) <= 25 and max(tgt_len) <= 25
    assert min(tgt_len) >= 2
    # all templates are used
    assert len(set(echo["train"]["source"])) > 2900
    assert len(ECHO_TEMPLATES) >= 15


def test_make_echo_examples_validates():
    with pytest.raises(ValueError):
        make_echo_examples(3, split="dev")
    assert make_echo_examples(0, "test") == []


def test_exact_match():
    assert exact_match(["Hello, Kuroro!", "a b"], ["Hello, Kuroro!", "a c"]) == 0.5
    assert exact_match([" Hello,  Kuroro! "], ["Hello, Kuroro!"]) == 1.0
    assert exact_match(["hello, kuroro!"], ["Hello, Kuroro!"]) == 0.0
    assert exact_match([], []) == 0.0
    with pytest.raises(ValueError):
        exact_match(["a"], [])


def test_occurs_as_word_helper():
    assert _occurs_as_word("Kuro", "I am Kuro.")
    assert not _occurs_as_word("Kuro", "I am Kuroro.")
    assert not _occurs_as_word("42", "code XK-42 and 1420")
    assert _occurs_as_word("7:45", "at 7:45.")
    assert not _occurs_as_word("7:45", "at 17:45.")


def test_entity_copy_rate():
    preds = ["Hello, Kuroro!", "Nice to meet you, Kuro. How is Tamaville?", "Room 42 uses XK-421."]
    ents = [["Kuroro"], ["Kuroro", "Tamaville"], ["42", "XK-42"]]
    # Kuroro found; Kuro is not Kuroro; Tamaville found; 42 found; XK-42 != XK-421
    assert entity_copy_rate(preds, ents) == pytest.approx(3 / 5)
    assert entity_copy_rate(["at 7:45."], [["7:45"]]) == 1.0
    assert entity_copy_rate(["at 17:45."], [["7:45"]]) == 0.0
    assert entity_copy_rate(["no entities"], [[]]) == 1.0
    with pytest.raises(ValueError):
        entity_copy_rate(["a", "b"], [["a"]])


def test_references_score_perfectly(echo):
    test = echo["test"]
    assert exact_match(list(test["target"]), list(test["target"])) == 1.0
    assert entity_copy_rate(list(test["target"]), list(test["entities"])) == 1.0
    # echoing the source verbatim copies every entity, but matches no reply
    assert entity_copy_rate(list(test["source"]), list(test["entities"])) == 1.0
    assert exact_match(list(test["source"]), list(test["target"])) == 0.0


def test_make_copy_dataset():
    ds = make_copy_dataset(num_examples=50, length=6, vocab=20, seed=3)
    assert isinstance(ds, datasets.Dataset) and ds.num_rows == 50
    assert list(ds["source"]) == list(ds["target"])
    assert all(len(s.split()) == 6 for s in list(ds["source"]))
    assert len({w for s in ds["source"] for w in s.split()}) <= 20
    assert make_copy_dataset(50, 6, 20, seed=3).to_dict() == ds.to_dict()
    assert list(make_copy_dataset(50, 6, 20, seed=4)["source"]) != list(ds["source"])
    var = make_copy_dataset(200, 8, ["a", "b", "c"], seed=0, min_length=2)
    lengths = [len(s.split()) for s in list(var["source"])]
    assert min(lengths) >= 2 and max(lengths) <= 8 and len(set(lengths)) > 3
    assert lengths == list(var["length"])
    assert {w for s in var["source"] for w in s.split()} <= {"a", "b", "c"}
    with pytest.raises(ValueError):
        make_copy_dataset(5, 0)


def test_entity_tokenizer_makes_each_entity_one_token_unseen_in_training(echo):
    """The whole-word variant: every copied entity is a single token, the texts round-trip, and no token of a test
    entity occurs anywhere in the tokenized training split (never a training input nor target)."""
    tokenizer = make_entity_tokenizer(echo, vocab_size=400)
    train_ids = set()
    for text in list(echo["train"]["source"]) + list(echo["train"]["target"]):
        ids = tokenizer(text)["input_ids"]
        train_ids.update(ids)
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
    for row in echo["test"]:
        ids = tokenizer(row["target"])["input_ids"]
        assert tokenizer.decode(ids, skip_special_tokens=True) == row["target"]
        pieces = tokenizer.convert_ids_to_tokens(ids)
        for entity in row["entities"]:
            assert entity in pieces, (entity, pieces)
            assert tokenizer.convert_tokens_to_ids(entity) not in train_ids, entity
