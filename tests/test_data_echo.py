"""Tests of the embedded echo data set (copynat.data): entities of every shape and script, the splits, the metrics."""

from __future__ import annotations

import random
import re
import unicodedata

import datasets
import pytest

from copynat.data import (
    OOD_FAMILIES,
    REAL_NAMES_LATIN,
    REAL_NAMES_OTHER_SCRIPTS,
    REAL_PLACES,
    TRAIN_FAMILIES,
    copy_rates_by_category,
    entity_copy_rate,
    entity_split,
    exact_match,
    make_copy_dataset,
    make_echo_dataset,
    make_echo_examples,
    make_echo_ood_examples,
)


@pytest.fixture(scope="module")
def echo():
    return make_echo_dataset(num_train=3000, num_validation=200, num_test=400, num_test_ood=300, seed=0)


def _occurs_as_word(entity: str, text: str) -> bool:
    """`entity` in `text`, not as part of a longer word."""
    return entity_copy_rate([text], [[entity]]) == 1.0


def _scripts(text: str) -> set[str]:
    return {unicodedata.name(c).split()[0] for c in text if c.isalpha()}


def test_splits_sizes_and_columns(echo):
    assert isinstance(echo, datasets.DatasetDict)
    assert set(echo) == {"train", "validation", "test", "test_ood"}
    assert [echo[s].num_rows for s in ("train", "validation", "test", "test_ood")] == [3000, 200, 400, 300]
    for split in echo.values():
        assert set(split.column_names) == {"source", "target", "entities", "categories"}
        for row in split.select(range(20)):
            assert row["entities"] and len(row["entities"]) == len(row["categories"])
    assert "test_ood" not in make_echo_dataset(num_train=5, num_validation=2, num_test=2, num_test_ood=0)


def test_default_sizes():
    ds = make_echo_dataset()
    assert {k: v.num_rows for k, v in ds.items()} == {"train": 20000, "validation": 500, "test": 1000,
                                                       "test_ood": 1500}


def test_deterministic_by_seed(echo):
    again = make_echo_dataset(num_train=3000, num_validation=200, num_test=400, num_test_ood=300, seed=0)
    for split in echo:
        assert echo[split].to_dict() == again[split].to_dict()
    other = make_echo_dataset(num_train=3000, num_validation=200, num_test=400, num_test_ood=300, seed=1)
    for split in echo:
        assert list(echo[split]["source"]) != list(other[split]["source"])


def test_split_content_independent_of_other_split_sizes(echo):
    small = make_echo_dataset(num_train=10, num_validation=5, num_test=400, num_test_ood=300, seed=0)
    assert small["test"].to_dict() == echo["test"].to_dict()
    assert small["test_ood"].to_dict() == echo["test_ood"].to_dict()
    assert list(small["train"]["source"]) == list(echo["train"]["source"])[:10]


def test_held_out_entities_never_occur_in_training(echo):
    """No held-out entity is a training entity; one of 4+ characters occurs nowhere in the training text either
    (there are only 100 two-digit strings: "05" may stand inside a training URL's "?id=05")."""
    train_text = "\n".join(list(echo["train"]["source"]) + list(echo["train"]["target"]))
    pools = {s: {e for row in echo[s]["entities"] for e in row} for s in echo}
    for split in ("validation", "test", "test_ood"):
        for entity in pools[split]:
            assert len(entity) < 4 or not _occurs_as_word(entity, train_text), (split, entity)
    lowered = {s: {e.lower() for e in pool} for s, pool in pools.items()}
    assert not lowered["train"] & lowered["test"]
    assert not lowered["train"] & lowered["validation"]
    assert not lowered["validation"] & lowered["test"]
    assert not lowered["train"] & lowered["test_ood"]


def test_entity_split_is_consistent(echo):
    for split in ("train", "validation", "test"):
        for row in list(echo[split]["entities"])[:200]:
            for e in row:
                assert entity_split(e) == split
    counts = {"train": 0, "validation": 0, "test": 0}
    for i in range(2000):
        counts[entity_split(f"Word{i}")] += 1
    assert counts["train"] > 1400 and counts["validation"] > 120 and counts["test"] > 120


def test_target_entities_are_copied_from_source(echo):
    for split in echo.values():
        for row in split:
            for e in row["entities"]:
                assert e in row["source"] and e in row["target"], row
            assert entity_copy_rate([row["target"]], [row["entities"]], [row["target"]]) == 1.0


def test_training_entities_have_every_promised_shape_and_script(echo):
    ents = [e for row in echo["train"]["entities"] for e in row]
    cats = {c for row in echo["train"]["categories"] for c in row}
    assert cats == {f.category for f in TRAIN_FAMILIES}
    latin = [e for e in ents if re.fullmatch(r"[A-Za-z'\- ]+", e)]
    assert any(len(e) == 1 for e in latin) and any(len(e) >= 20 for e in latin)
    assert any(re.fullmatch(r"(Mc|Mac)[A-Z][a-z]+", e) for e in ents)  # McDonald
    assert any("'" in e for e in ents) and any(re.fullmatch(r"[A-Z][a-z]+-[A-Z][a-z]+", e) for e in ents)
    assert any(unicodedata.decomposition(c) for e in ents for c in e if c.isalpha() and ord(c) < 0x250)  # José
    scripts = set().union(*(_scripts(e) for e in ents))
    assert {"LATIN", "CJK", "HIRAGANA", "KATAKANA", "HANGUL", "CYRILLIC", "GREEK", "ARABIC"} <= scripts
    digits = [e for e in ents if e.isdigit()]
    assert {len(d) for d in digits} == set(range(1, 17))
    assert any(d.startswith("00") for d in digits)
    assert any(re.fullmatch(r"\d{1,2}:\d\d(:\d\d)?( ?[aApP][mM])?", e) for e in ents)  # times
    assert any(re.fullmatch(r"[^@\s]+@[^@\s]+\.[a-z.]+", e) for e in ents)  # e-mail addresses
    assert any(e.startswith(("http://", "https://")) for e in ents)  # URLs
    assert any(re.fullmatch(r"[A-Z0-9]{2,4}(-[A-Z0-9]{2,4})+", e) for e in ents)  # codes
    assert any(re.search(r"[\u4e00-\u9fff]", row) for row in echo["train"]["source"])  # Chinese templates


def test_out_of_distribution_families_are_held_out(echo):
    """Every OOD family is in test_ood, equally often, and none of its shapes occurs in training."""
    cats = [c for row in echo["test_ood"]["categories"] for c in row]
    for family in OOD_FAMILIES:
        assert cats.count(family.category) >= 300 // len(OOD_FAMILIES), family
    train_scripts = set().union(*(_scripts(e) for row in echo["train"]["entities"] for e in row))
    assert not {"HEBREW", "DEVANAGARI", "GEORGIAN"} & train_scripts
    ood = dict(zip(cats, (e for row in echo["test_ood"]["entities"] for e in row)))
    train_ents = [e for row in echo["train"]["entities"] for e in row]
    assert max(len(e) for e in train_ents if e.isalpha() and e.isascii()) < 30 <= len(ood["name/long-latin"])
    assert max(len(e) for e in train_ents if e.isdigit()) <= 16 < len(ood["number/long-digits"])
    assert not any(e.startswith("+") for e in train_ents) and ood["number/shape-phone"].startswith("+")
    assert not any("/" in e for e in train_ents if "://" not in e) and "/" in ood["code/shape-slashed"]
    # the real-world names and places are hand-written, not generated, and never training entities
    real = set(REAL_NAMES_LATIN) | set(REAL_NAMES_OTHER_SCRIPTS) | set(REAL_PLACES)
    assert "庫洛洛" in REAL_NAMES_OTHER_SCRIPTS and "Krzysztof" in REAL_NAMES_LATIN
    assert not real & set(make_echo_examples(3000, "train", seed=5)[0]["entities"] + train_ents)
    assert any(e in real for row in echo["test_ood"]["entities"] for e in row)


def test_make_echo_examples_validates():
    with pytest.raises(ValueError, match="split"):
        make_echo_examples(3, split="dev")
    assert make_echo_examples(0, "test") == []
    with pytest.raises(ValueError):
        make_echo_ood_examples(-1)


def test_generators_are_deterministic_and_never_empty():
    for family in TRAIN_FAMILIES + OOD_FAMILIES:
        first = [family.make(random.Random(7)) for _ in range(3)]
        assert first == [family.make(random.Random(7)) for _ in range(3)]
        rng = random.Random(1)
        assert all(family.make(rng).strip() for _ in range(200)), family.category


def test_exact_match():
    assert exact_match(["Hello, Kuroro!", "a b"], ["Hello, Kuroro!", "a c"]) == 0.5
    assert exact_match([" Hello,  Kuroro! "], ["Hello, Kuroro!"]) == 1.0
    assert exact_match(["hello, kuroro!"], ["Hello, Kuroro!"]) == 0.0
    assert exact_match([], []) == 0.0
    with pytest.raises(ValueError):
        exact_match(["a"], [])


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


def test_entity_copy_rate_in_text_without_spaces():
    """Chinese glues an entity to its neighbours: with the reference, the neighbours decide (a stutter fails)."""
    reference = "替我向東京的王小明问好!"
    assert entity_copy_rate([reference], [["東京", "王小明"]], [reference]) == 1.0
    assert entity_copy_rate(["替我向東京京的王小明明问好!"], [["東京", "王小明"]], [reference]) == 0.0
    assert entity_copy_rate([reference], [["東京"]]) == 0.0  # no reference: glued means part of a longer word
    assert entity_copy_rate(["你好!Kuroro!"], [["Kuroro"]], ["你好!Kuroro!"]) == 1.0


def test_copy_rates_by_category():
    rates = copy_rates_by_category(["Hello, Kuroro!", "Hello, 庫洛!"], [["Kuroro"], ["庫洛洛"]],
                                   [["name/latin"], ["name/cjk"]], ["Hello, Kuroro!", "Hello, 庫洛洛!"])
    assert rates == {"all": 0.5, "name/cjk": 0.0, "name/latin": 1.0}
    with pytest.raises(ValueError, match="categories"):
        copy_rates_by_category(["a"], [["a", "b"]], [["x"]])


def test_references_score_perfectly(echo):
    for split in ("test", "test_ood"):
        rows = echo[split]
        assert exact_match(list(rows["target"]), list(rows["target"])) == 1.0
        rates = copy_rates_by_category(rows["target"], rows["entities"], rows["categories"], rows["target"])
        assert set(rates.values()) == {1.0}
    # echoing the source verbatim copies every spaced entity, but matches no reply
    test = echo["test"]
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
