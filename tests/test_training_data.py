"""Data loading, normalisation, tokenization, token-budget batching and collation (offline, seconds)."""

from __future__ import annotations

import functools
import json
import logging
import re

import numpy as np
import pandas as pd
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from copynat.training.data import (
    DataArguments,
    Seq2SeqCollator,
    TokenBudgetBatchSampler,
    example_lengths,
    load_raw_datasets,
    tokenize_datasets,
)

ROWS = [
    {"source": "I am Kuroro.", "target": "Hello, Kuroro!", "id": 1},
    {"source": 'he said "hi" to me', "target": 'er sagte "hi"', "id": 2},
    {"source": "007", "target": "NA", "id": 3},
]


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    """Tiny byte-level BPE with copynat's special tokens and a template appending </s> (id 2)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<pad>", "<s>", "</s>", "<unk>", "<mask>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(["I am Kuroro.", "Hello, Kuroro!", "the cat sat on the mat"] * 20, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 2)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        mask_token="<mask>",
        model_input_names=["input_ids", "attention_mask"],
    )


def make_args(tmp_path, **kwargs) -> DataArguments:
    return DataArguments(cache_dir=str(tmp_path / "hf_cache"), **kwargs)


def write(path, rows, fmt: str) -> str:
    if fmt == "json":
        path.write_text(json.dumps(rows))
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    elif fmt == "parquet":
        pd.DataFrame(rows).to_parquet(path)
    else:  # csv / tsv, written by hand so quotes stay literal in the TSV
        sep = "\t" if fmt == "tsv" else ","
        cols = list(rows[0])
        lines = [sep.join(cols)]
        for row in rows:
            cells = [str(row[c]) for c in cols]
            if fmt == "csv":
                cells = ['"' + cell.replace('"', '""') + '"' for cell in cells]
            lines.append(sep.join(cells))
        path.write_text("\n".join(lines) + "\n")
    return str(path)


def texts(ds):
    return list(zip(ds["source"], ds["target"]))


# ------------------------------------------------------------------------------------ formats


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv", "tsv", "parquet"])
def test_each_file_format_loads(tmp_path, fmt):
    train = write(tmp_path / f"train.{fmt}", ROWS, fmt)
    valid = write(tmp_path / f"valid.{fmt}", ROWS[:1], fmt)
    raw = load_raw_datasets(make_args(tmp_path, train_file=train, validation_file=valid))
    assert set(raw) == {"train", "validation"}
    assert raw["train"].column_names == ["source", "target"]
    # text stays text: quotes are literal in TSV, "007" and "NA" are not numbers / missing values
    expected = [(r["source"], r["target"]) for r in ROWS]
    assert texts(raw["train"]) == expected
    assert texts(raw["validation"]) == expected[:1]


def test_custom_columns_and_numbers_cast_to_str(tmp_path):
    rows = [{"q": 42, "a": 1.5}, {"q": "x", "a": "y"}]
    train = write(tmp_path / "train.jsonl", rows, "jsonl")
    raw = load_raw_datasets(make_args(tmp_path, train_file=train, source_column="q", target_column="a"))
    assert texts(raw["train"]) == [("42", "1.5"), ("x", "y")]


def test_translation_dict_column(tmp_path):
    rows = [{"translation": {"en": "a cat", "de": "eine Katze"}}, {"translation": {"en": "a dog", "de": "ein Hund"}}]
    train = write(tmp_path / "train.jsonl", rows, "jsonl")
    raw = load_raw_datasets(make_args(tmp_path, train_file=train, source_lang="de", target_lang="en"))
    assert texts(raw["train"]) == [("eine Katze", "a cat"), ("ein Hund", "a dog")]
    with pytest.raises(ValueError, match=r"train.*train\.jsonl.*'translation' column with languages \['de', 'en'\]|"
                       r"train.*train\.jsonl.*'translation' column with languages \['en', 'de'\]"):
        load_raw_datasets(make_args(tmp_path, train_file=train, source_lang="en", target_lang="fr"))


def test_parallel_text_prefix_multi30k_layout(tmp_path):
    (tmp_path / "train.en").write_text("A man rides.\nTwo dogs\u2028play.\n")
    (tmp_path / "train.de").write_text("Ein Mann reitet.\r\nZwei Hunde spielen.\r\n")
    (tmp_path / "val.en").write_text("A cat.\n")
    (tmp_path / "val.de").write_text("Eine Katze.")  # no final newline
    (tmp_path / "test_2016_flickr.en").write_text("Hi.\n\nBye.\n")
    (tmp_path / "test_2016_flickr.de").write_text("Hallo.\n\nTschuess.\n")
    raw = load_raw_datasets(
        make_args(
            tmp_path,
            train_file=str(tmp_path / "train"),
            validation_file=str(tmp_path / "val.en"),  # PREFIX.<source_lang> works too
            test_file=str(tmp_path / "test_2016_flickr"),
            source_lang="en",
            target_lang="de",
        )
    )
    assert texts(raw["train"]) == [("A man rides.", "Ein Mann reitet."), ("Two dogs\u2028play.", "Zwei Hunde spielen.")]
    assert texts(raw["validation"]) == [("A cat.", "Eine Katze.")]
    assert texts(raw["test"]) == [("Hi.", "Hallo."), ("Bye.", "Tschuess.")]  # the blank pair is skipped


def test_parallel_text_misaligned_or_not_utf8(tmp_path):
    (tmp_path / "train.en").write_text("a\nb\nc\n")
    (tmp_path / "train.de").write_text("a\nb\n")
    misaligned = r"train parallel text is misaligned: .*train\.en has 3 lines but .*train\.de has 2"
    with pytest.raises(ValueError, match=misaligned):
        load_raw_datasets(make_args(tmp_path, train_file=str(tmp_path / "train"), source_lang="en", target_lang="de"))
    (tmp_path / "train.de").write_bytes(b"a\nb\n\xff\n")
    with pytest.raises(ValueError, match=r"could not parse train file .*train\.de: invalid UTF-8 at line 3"):
        load_raw_datasets(make_args(tmp_path, train_file=str(tmp_path / "train"), source_lang="en", target_lang="de"))


def test_dataset_name_local_folder(tmp_path):
    folder = tmp_path / "my_dataset"
    folder.mkdir()
    write(folder / "train.jsonl", ROWS, "jsonl")
    write(folder / "validation.jsonl", ROWS[:2], "jsonl")
    write(folder / "test.jsonl", ROWS[:1], "jsonl")
    override = write(tmp_path / "other_test.csv", ROWS[1:], "csv")
    raw = load_raw_datasets(make_args(tmp_path, dataset_name=str(folder), test_file=override, max_eval_samples=1))
    assert set(raw) == {"train", "validation", "test"}
    assert len(raw["train"]) == 3 and len(raw["validation"]) == 1
    assert texts(raw["test"]) == [(ROWS[1]["source"], ROWS[1]["target"])]


def test_local_files_never_touch_the_network(tmp_path, monkeypatch):
    """datasets' packaged loaders ping S3 (load counts) unless told not to; local data must stay local."""
    import socket

    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    folder = tmp_path / "folder"
    folder.mkdir()
    train = write(folder / "train.jsonl", ROWS, "jsonl")
    valid = write(tmp_path / "valid.csv", ROWS, "csv")
    test = write(tmp_path / "test.parquet", ROWS, "parquet")
    assert len(load_raw_datasets(make_args(tmp_path, train_file=train, validation_file=valid, test_file=test))) == 3
    assert len(load_raw_datasets(make_args(tmp_path, dataset_name=str(folder)))["train"]) == 3
    assert attempts == []


def test_no_arguments_gives_the_echo_task(tmp_path, monkeypatch):
    try:
        import copynat.data
        from copynat.data import make_echo_dataset
    except ImportError as err:  # pragma: no cover - written concurrently
        pytest.skip(f"copynat.data.make_echo_dataset is not importable yet: {err}")
    small = functools.partial(make_echo_dataset, num_train=60, num_validation=10, num_test=10, num_test_ood=20)
    monkeypatch.setattr(copynat.data, "make_echo_dataset", small)
    raw = load_raw_datasets(make_args(tmp_path, max_train_samples=50))
    assert set(raw) == {"train", "validation", "test", "test_ood"}  # test_ood: entity families never trained on
    assert [len(raw[s]) for s in ("train", "validation", "test", "test_ood")] == [50, 10, 10, 20]
    assert raw["train"].column_names == ["source", "target"]
    assert all(isinstance(s, str) and s.strip() for s in raw["train"]["source"])


# ---------------------------------------------------------------------------------- bad input


def test_missing_columns_name_the_file_and_existing_columns(tmp_path):
    train = write(tmp_path / "train.csv", [{"src": "a", "tgt": "b"}], "csv")
    with pytest.raises(ValueError, match=r"split train \(file .*train\.csv\) has no column 'source' or 'target'; "
                       r"available columns: \['src', 'tgt'\]"):
        load_raw_datasets(make_args(tmp_path, train_file=train))
    with pytest.raises(ValueError, match=r"has no column 'target'; available columns: \['src', 'tgt'\]"):
        load_raw_datasets(make_args(tmp_path, train_file=train, source_column="src"))


@pytest.mark.parametrize(
    "name, content",
    [
        ("bad.jsonl", '{"source": "a", "target": "b"}\n{"source": "a", "target": \n'),
        ("bad.parquet", "this is not parquet"),
        ("bad.tsv", "source\ttarget\na\tb\na\tb\tc\td\n"),
    ],
)
def test_unparseable_files_are_wrapped(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ValueError, match=rf"could not parse validation file .*{name}: \w+"):
        load_raw_datasets(make_args(tmp_path, validation_file=str(path)))


def test_unknown_extension_and_missing_file(tmp_path):
    path = tmp_path / "train.xml"
    path.write_text("<a/>")
    unsupported = r"train file .*train\.xml: unsupported extension '\.xml'; use one of \.json, \.jsonl"
    with pytest.raises(ValueError, match=unsupported):
        load_raw_datasets(make_args(tmp_path, train_file=str(path)))
    with pytest.raises(FileNotFoundError, match=r"train file .*missing\.jsonl does not exist"):
        load_raw_datasets(make_args(tmp_path, train_file=str(tmp_path / "missing.jsonl")))


def test_non_text_value_names_row_and_column(tmp_path):
    rows = [{"source": "a", "target": "b"}, {"source": "c", "target": "d"}, {"source": ["x"], "target": "e"}]
    train = write(tmp_path / "train.jsonl", rows, "jsonl")
    message = r"split train \(file .*train\.jsonl\), row 2, column 'source': expected text, got list"
    with pytest.raises(ValueError, match=message):
        load_raw_datasets(make_args(tmp_path, train_file=train))


def test_blank_rows_are_skipped_and_counted(tmp_path, caplog):
    rows = [
        {"source": "a", "target": "b"},
        {"source": None, "target": "b"},
        {"source": "c", "target": ""},
        {"source": "d", "target": "e"},
        {"source": "  \t", "target": "f"},
    ]
    train = write(tmp_path / "train.jsonl", rows, "jsonl")
    with caplog.at_level(logging.WARNING, logger="copynat.training.data"):
        raw = load_raw_datasets(make_args(tmp_path, train_file=train))
    assert texts(raw["train"]) == [("a", "b"), ("d", "e")]
    assert "skipped 3 blank rows in split train (file " in caplog.text
    assert "(first at row 1)" in caplog.text


# --------------------------------------------------------------------------------- tokenizing


def test_tokenize_keeps_text_and_ends_with_eos(tmp_path, tokenizer, caplog):
    rows = [
        {"source": "I am Kuroro.", "target": "Hello, Kuroro!"},
        {"source": "the cat " * 40, "target": "the mat " * 40},
    ]
    train = write(tmp_path / "train.jsonl", rows, "jsonl")
    args = make_args(tmp_path, train_file=train, max_source_length=16, max_target_length=12)
    raw = load_raw_datasets(args)
    with caplog.at_level(logging.WARNING, logger="copynat.training.data"):
        tok = tokenize_datasets(raw, tokenizer, args)
    train_ds = tok["train"]
    assert set(train_ds.column_names) == {"source", "target", "input_ids", "labels", "length"}
    assert train_ds["source"][0] == "I am Kuroro."
    first = train_ds[0]
    assert first["input_ids"] == tokenizer("I am Kuroro.")["input_ids"] and first["input_ids"][-1] == 2
    assert first["labels"] == tokenizer(text_target="Hello, Kuroro!")["input_ids"]
    long = train_ds[1]
    assert len(long["input_ids"]) == 16 and len(long["labels"]) == 12
    assert long["input_ids"][-1] == 2 and long["labels"][-1] == 2
    assert list(example_lengths(train_ds)) == [max(len(first["input_ids"]), len(first["labels"])), 16]
    assert "truncated 1 of 2 examples in split train" in caplog.text
    assert "1 sources > max_source_length=16, 1 targets > max_target_length=12" in caplog.text

    strict = make_args(tmp_path, train_file=train, max_source_length=16, max_target_length=12, overlong_policy="error")
    message = r"split train, example 1 .*column 'source': \d+ tokens > max_source_length=16"
    with pytest.raises(ValueError, match=message):
        tokenize_datasets(raw, tokenizer, strict)


def test_tokenize_is_cached_across_calls(tmp_path, tokenizer):
    train = write(tmp_path / "train.jsonl", ROWS * 10, "jsonl")
    args = make_args(tmp_path, train_file=train)
    first = tokenize_datasets(load_raw_datasets(args), tokenizer, args)["train"]
    tokenizer("warm up", truncation=True, max_length=4)  # mutates the backend's truncation state
    second = tokenize_datasets(load_raw_datasets(args), tokenizer, args)["train"]
    assert first.cache_files and first.cache_files == second.cache_files
    assert first["input_ids"] == second["input_ids"]


def test_tokenize_with_worker_processes(tmp_path, tokenizer):
    (tmp_path / "train.en").write_text("".join(f"the cat {i}\n" for i in range(1200)))
    (tmp_path / "train.de").write_text("".join(f"the mat {i}\n" for i in range(1200)))
    args = make_args(
        tmp_path, train_file=str(tmp_path / "train"), source_lang="en", target_lang="de", preprocessing_num_workers=2
    )
    tok = tokenize_datasets(load_raw_datasets(args), tokenizer, args)["train"]
    assert len(tok) == 1200 and tok[1199]["input_ids"] == tokenizer("the cat 1199")["input_ids"]


def test_collator_pads_inputs_and_labels(tmp_path, tokenizer):
    train = write(tmp_path / "train.jsonl", ROWS, "jsonl")
    args = make_args(tmp_path, train_file=train)
    ds = tokenize_datasets(load_raw_datasets(args), tokenizer, args)["train"]
    features = [ds[i] for i in range(3)]
    batch = Seq2SeqCollator(tokenizer)(features)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    width = max(len(f["input_ids"]) for f in features)
    assert batch["input_ids"].shape == (3, width) and batch["input_ids"].dtype == torch.long
    for row, f in enumerate(features):
        n, m = len(f["input_ids"]), len(f["labels"])
        assert batch["input_ids"][row, :n].tolist() == f["input_ids"]
        assert (batch["input_ids"][row, n:] == 0).all()
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (width - n)
        assert batch["labels"][row, :m].tolist() == f["labels"]
        assert (batch["labels"][row, m:] == -100).all()
    with_text = Seq2SeqCollator(tokenizer, pad_to_multiple_of=8, return_text=True)(features)
    assert with_text["input_ids"].shape[1] % 8 == 0 and with_text["labels"].shape[1] % 8 == 0
    assert with_text["target"] == [r["target"] for r in ROWS]


# ----------------------------------------------------------------------------------- sampling

LENGTHS = np.random.default_rng(1).integers(1, 60, size=1000)


def epoch_batches(sampler: TokenBudgetBatchSampler, epoch: int) -> list[list[int]]:
    sampler.set_epoch(epoch)
    return list(sampler)


def test_sampler_covers_every_index_once_within_budget():
    sampler = TokenBudgetBatchSampler(LENGTHS, max_tokens=300, max_sentences=16, seed=3, sort_chunk_size=200)
    for epoch in range(2):
        batches = epoch_batches(sampler, epoch)
        assert len(batches) == len(sampler)
        flat = [i for batch in batches for i in batch]
        assert sorted(flat) == list(range(len(LENGTHS)))
        for batch in batches:
            assert len(batch) <= 16
            assert len(batch) * LENGTHS[batch].max() <= 300
    # bucketing: far less padding than a random batching of the same sizes
    padded = sum(len(b) * LENGTHS[b].max() for b in batches)
    assert padded < 1.25 * LENGTHS.sum()


def test_sampler_is_deterministic_per_seed_and_epoch():
    make = functools.partial(TokenBudgetBatchSampler, LENGTHS, 300, seed=7)
    assert epoch_batches(make(), 4) == epoch_batches(make(), 4)
    assert epoch_batches(make(), 4) != epoch_batches(make(), 5)
    assert epoch_batches(make(), 4) != epoch_batches(make(seed=8), 4)
    ordered = epoch_batches(TokenBudgetBatchSampler(LENGTHS, 300, shuffle=False), 0)
    assert ordered == epoch_batches(TokenBudgetBatchSampler(LENGTHS, 300, shuffle=False), 9)
    flat = [i for batch in ordered for i in batch]
    assert list(LENGTHS[flat]) == sorted(LENGTHS)


def test_overlong_example_gets_its_own_batch(caplog):
    lengths = [5, 500, 5, 5, 700]
    with caplog.at_level(logging.WARNING, logger="copynat.training.data"):
        sampler = TokenBudgetBatchSampler(lengths, max_tokens=100)
    assert "2 examples are longer than max_tokens=100 (longest: 700 tokens)" in caplog.text
    batches = list(sampler)
    assert [1] in batches and [4] in batches
    assert sorted(i for b in batches for i in b) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("size", [1000, 37, 1])
def test_sampler_splits_across_two_replicas(size):
    lengths = LENGTHS[:size]
    full = epoch_batches(TokenBudgetBatchSampler(lengths, 300, seed=1), 2)
    ranks = [epoch_batches(TokenBudgetBatchSampler(lengths, 300, seed=1, num_replicas=2, rank=r), 2) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == -(-len(full) // 2)
    seen = sorted(i for rank in ranks for b in rank for i in b)
    if len(full) % 2 == 0:  # disjoint shares, nothing repeated
        assert seen == list(range(size))
    else:  # one batch repeated so both ranks step equally often
        assert sorted(set(seen)) == list(range(size))
        assert len(seen) == size + len(full[0])
    dropped = [
        epoch_batches(TokenBudgetBatchSampler(lengths, 300, seed=1, num_replicas=2, rank=r, drop_last=True), 2)
        for r in (0, 1)
    ]
    assert len(dropped[0]) == len(dropped[1]) == len(full) // 2
    assert not {i for b in dropped[0] for i in b} & {i for b in dropped[1] for i in b}


def test_sampler_resumes_mid_epoch_exactly():
    make = functools.partial(TokenBudgetBatchSampler, LENGTHS, 300, seed=5, num_replicas=2, rank=1)
    sampler = make()
    sampler.set_epoch(3)
    iterator = iter(sampler)
    consumed = [next(iterator) for _ in range(7)]
    state = sampler.state_dict()
    assert (state["epoch"], state["batches_yielded"]) == (3, 7)
    rest = list(iterator)

    resumed = make()
    resumed.load_state_dict(json.loads(json.dumps(state)))  # survives a JSON checkpoint
    assert list(resumed) == rest
    assert list(resumed) == consumed + rest  # the offset applies to one iteration only

    by_offset = make()
    by_offset.set_epoch(3, start_batch=7)
    by_offset.set_epoch(3)  # what accelerate's DataLoaderShard.set_epoch forwards: keeps the offset
    assert list(by_offset) == rest
    by_offset.set_epoch(4)  # a new epoch starts from its first batch
    assert len(list(by_offset)) == len(by_offset)

    with pytest.raises(ValueError, match=r"cannot resume the batch sampler exactly.*max_tokens.*\(300, 301\)"):
        TokenBudgetBatchSampler(LENGTHS, 301, seed=5, num_replicas=2, rank=1).load_state_dict(state)


def test_resume_through_an_accelerate_dataloader():
    """DataLoaderShard (what accelerator.prepare returns) re-sends set_epoch on every iteration."""
    from accelerate.data_loader import DataLoaderShard

    def make():
        sampler = TokenBudgetBatchSampler(LENGTHS, 300, seed=5)
        return sampler, DataLoaderShard(list(range(len(LENGTHS))), batch_sampler=sampler, collate_fn=list)

    sampler, loader = make()
    loader.set_epoch(3)
    batches = list(loader)
    assert sorted(i for b in batches for i in b) == list(range(len(LENGTHS)))
    state = {**sampler.state_dict(), "batches_yielded": 4}  # the loop's own count of consumed batches

    sampler, loader = make()
    sampler.load_state_dict(state)
    loader.set_epoch(3)
    assert list(loader) == batches[4:]


def test_dataloader_end_to_end(tmp_path, tokenizer):
    train = write(tmp_path / "train.jsonl", ROWS * 20, "jsonl")
    args = make_args(tmp_path, train_file=train)
    ds = tokenize_datasets(load_raw_datasets(args), tokenizer, args)["train"]
    sampler = TokenBudgetBatchSampler(example_lengths(ds), max_tokens=64, seed=0)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=Seq2SeqCollator(tokenizer))
    total = 0
    for batch in loader:
        assert batch["input_ids"].numel() <= 64 and batch["labels"].numel() <= 64
        total += batch["input_ids"].shape[0]
    assert total == len(ds) == 60


def test_data_arguments_are_cli_flags():
    from transformers import HfArgumentParser

    (args,) = HfArgumentParser(DataArguments).parse_args_into_dataclasses(
        ["--train_file", "x/train", "--source_lang", "en", "--target_lang", "de",
         "--max_train_samples", "5", "--overlong_policy", "error"]
    )
    assert args.train_file == "x/train" and args.source_lang == "en"
    assert args.max_train_samples == 5 and args.overlong_policy == "error"
    with pytest.raises(SystemExit):
        HfArgumentParser(DataArguments).parse_args_into_dataclasses(["--overlong_policy", "drop"])


# ------------------------------------------------------------------------------------------ entity augmentation


def test_shared_entity_words_are_names_and_numbers_on_both_sides():
    from copynat.data.augment import shared_entity_words

    source, target = "A man in New York holds 2 dogs and a Frisbee.", "Ein Mann in New York hält 2 Hunde und ein Frisbee."
    assert shared_entity_words(source, target) == ["New", "York", "2", "Frisbee"]
    assert shared_entity_words("London is big.", "London ist groß.") == []  # the first word's capital says nothing
    assert shared_entity_words("A dog in Yorkshire.", "Ein Hund in York.") == []  # whole words only
    assert shared_entity_words("I saw A man.", "Ich sah A Mann.") == []  # one-letter capitals are not names


def test_entity_augmentation_swaps_a_shared_word_on_both_sides_with_training_entities(tmp_path):
    from copynat.data import entity_split
    from copynat.data.augment import augment_with_entities

    sources = ["A man in London holds 2 dogs.", "Two dogs play.", "A girl visits Paris in 2012."]
    targets = ["Ein Mann in London hält 2 Hunde.", "Zwei Hunde spielen.", "Ein Mädchen besucht Paris 2012."]
    new_sources, new_targets = augment_with_entities(sources, targets, copies=30, seed=1)
    assert len(new_sources) == len(new_targets) == 60  # 30 copies of each pair that shares a word, none of the other
    assert (new_sources, new_targets) == augment_with_entities(sources, targets, copies=30, seed=1)
    swapped = 0
    for source, target in zip(new_sources, new_targets):
        index = 0 if source.startswith("A man") else 2
        original = sources[index]
        matches = []  # (word, entity) such that the pair is the original with that word swapped on both sides
        for word in ("London", "2", "Paris", "2012"):
            if original.count(word) == 1:
                before, after = original.split(word)
                entity = source[len(before):len(source) - len(after)]
                swap = lambda text: re.sub(rf"(?<!\w){re.escape(word)}(?!\w)", entity, text)  # noqa: E731
                if entity and (source, target) == (swap(original), swap(targets[index])):
                    matches.append((word, entity))
        assert len(matches) == 1, (source, target)
        word, entity = matches[0]
        assert entity_split(entity) == "train"  # never a validation, test or out-of-distribution entity
        swapped += not entity.isascii()
    assert swapped > 5  # other scripts among them
    assert augment_with_entities(sources, targets, copies=0) == ([], [])
    with pytest.raises(ValueError, match="copies must be an integer >= 0"):
        augment_with_entities(sources, targets, copies=-1)
    (tmp_path / "train.en").write_text("\n".join(sources) + "\n")
    (tmp_path / "train.de").write_text("\n".join(targets) + "\n")
    raw = load_raw_datasets(make_args(tmp_path, train_file=str(tmp_path / "train"), source_lang="en",
                                      target_lang="de", entity_augmentation=2))
    assert len(raw["train"]) == 3 + 2 * 2 and texts(raw["train"])[:3] == list(zip(sources, targets))
    with pytest.raises(ValueError, match="--entity_augmentation must be an integer >= 0"):
        DataArguments(entity_augmentation=-1)
