"""Tests for copynat.tokenization: what a user of the trained tokenizer relies on.

Everything is offline and seeded; the whole file runs in a few seconds.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import subprocess
import sys
import textwrap
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer
from transformers import AutoTokenizer, PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging

from copynat.tokenization import (
    BOS_ID,
    EOS_ID,
    MASK_ID,
    MIN_VOCAB_SIZE,
    PAD_ID,
    SPECIAL_TOKENS,
    UNK_ID,
    iter_text_batches,
    train_tokenizer,
)

MODELS = ("bpe", "unigram")

NFC_E = unicodedata.normalize("NFC", "é")
NFD_E = unicodedata.normalize("NFD", "é")
assert NFC_E != NFD_E

#: Hard cases for an exact round trip. Several of them are also absent from the training corpus.
TRICKY = [
    "A man in a blue shirt is standing on a ladder.",
    "Ein Mann mit blauem Hemd steht auf einer Leiter, Grüße aus der Straße! ÄÖÜ äöü ß",
    "我是大木博士",
    "東京へ行きます。カタカナとひらがな、漢字。",
    "한국어 문장입니다.",
    "مرحبا بالعالم",
    "नमस्ते दुनिया",
    "family 👨\u200d👩\u200d👧\u200d👦, flag 🇩🇪, skin tone 👍🏽, keycap 1\ufe0f\u20e3, heart ❤️",
    f"café NFC {NFC_E} vs NFD {NFD_E} and Å/A\u030a, ﬁ ligature, Ω vs Ω",
    "\ttab\tseparated\tvalues\t",
    "line one\nline two\r\nline three\n\n",
    "   three leading spaces, two  inner,   three trailing   ",
    " ",
    "",
    "a . , ! ? ( ) ' \" - don't isn't",
    "nbsp\u00a0zero width\u200bBOM\ufeffsoft\u00adhyphen",
    "\x00\x01\x7f control \u0085 \u2028 \u2029",
    "literal byte-level and metaspace symbols: Ġ Ċ ▁ ▁▁",
    "literal special tokens: <s> </s> <pad> <unk> <mask> <s>x</s>",
    "unseen: 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 🦀 ꙮ 𓀀",
]


def make_corpus(n_lines: int, seed: int = 0) -> list[str]:
    """Generated bilingual-ish lines with a Zipf-like word distribution (deterministic)."""
    rng = random.Random(seed)
    words = (
        "the a man woman dog child is are running sitting on in with blue red street water ball "
        "ein eine Mann Frau Hund Kind läuft sitzt auf im mit blauen roten Straße Wasser Ball Grüße "
        "我 是 大木 博士 東京 へ 行きます 🙂 👍🏽 café naïve"
    ).split()
    weights = [1 / (rank + 1) for rank in range(len(words))]
    lines = []
    for _ in range(n_lines):
        sentence = " ".join(rng.choices(words, weights, k=rng.randint(1, 14)))
        lines.append(sentence + rng.choice([".", "!", "?", ""]))
    return lines


CORPUS = make_corpus(3000) + TRICKY


@pytest.fixture(scope="module", params=MODELS)
def tok(request: pytest.FixtureRequest) -> PreTrainedTokenizerFast:
    return train_tokenizer(CORPUS, vocab_size=600, model=request.param, model_max_length=64)


def roundtrip(tokenizer: PreTrainedTokenizerFast, text: str) -> str:
    return tokenizer.decode(tokenizer(text)["input_ids"], skip_special_tokens=True)


# --- round trip ---------------------------------------------------------------------------------


@pytest.mark.parametrize("text", TRICKY)
def test_round_trip_is_exact(tok: PreTrainedTokenizerFast, text: str) -> None:
    ids = tok(text)["input_ids"]
    assert UNK_ID not in ids, "byte-level vocabulary must never need <unk>"
    assert tok.decode(ids, skip_special_tokens=True) == text


def _pieces_of(tokenizer: PreTrainedTokenizerFast, text: str, part: str) -> list[str]:
    """The pieces that spell `part` where it stands in `text`."""
    encoded = tokenizer(text, return_offsets_mapping=True)
    start = text.index(part)
    end = start + len(part)
    return [tokenizer.convert_ids_to_tokens(i) for i, (a, b) in zip(encoded["input_ids"], encoded["offset_mapping"])
            if b > start and a < end]


def test_a_name_is_the_same_pieces_wherever_it_stands(tok: PreTrainedTokenizerFast) -> None:
    """What lets a copy model echo a name: in another script after a space, at the start, or glued to Chinese text
    it is spelled alike (the space before a non-ASCII character is a piece of its own), and no piece joins a Han or
    kana character to its neighbour."""
    for name in ("Мария", "東京", "대木", "Σοφία", "محمد"):
        spelled = {tuple(_pieces_of(tok, text, name)) for text in
                   (f"I am {name}.", f"{name} is here.", f"我是{name}。", f"你好!{name}!", f"({name})")}
        assert len(spelled) == 1, (name, spelled)
    assert "Ġ" in tok.convert_ids_to_tokens(tok("I am Мария.")["input_ids"])  # the space before М: a piece alone
    for text in ("我是大木博士", "東京へ行きます"):
        pieces = tok(text, add_special_tokens=False)["input_ids"]
        decoded = [tok.decode([p]) for p in pieces]
        assert "".join(decoded) == text or any("\ufffd" in d for d in decoded)  # byte pieces of one character
        assert all(len(d) <= 1 for d in decoded if "\ufffd" not in d)  # never two characters in one piece


def test_batch_round_trip_and_no_normalization(tok: PreTrainedTokenizerFast) -> None:
    batch = tok(TRICKY, padding=True)["input_ids"]
    assert tok.batch_decode(batch, skip_special_tokens=True) == TRICKY
    # NFC and NFD forms are different inputs and stay different.
    assert tok(NFC_E)["input_ids"] != tok(NFD_E)["input_ids"]


def test_clean_up_tokenization_spaces_is_off(tok: PreTrainedTokenizerFast) -> None:
    assert tok.clean_up_tokenization_spaces is False
    assert roundtrip(tok, "Hello , world . It 's") == "Hello , world . It 's"


def test_literal_special_token_text_is_not_a_special_token(tok: PreTrainedTokenizerFast) -> None:
    ids = tok("<s> and <mask>")["input_ids"]
    assert [i for i in ids if i < len(SPECIAL_TOKENS)] == [EOS_ID]


TEXT_WITH_SPECIAL_PIECES = st.lists(
    st.one_of(st.text(), st.sampled_from([*SPECIAL_TOKENS, "Ġ", "▁", " ", "\n", NFD_E])), max_size=8
).map("".join)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(text=st.one_of(st.text(), TEXT_WITH_SPECIAL_PIECES))
def test_round_trip_property(tok: PreTrainedTokenizerFast, text: str) -> None:
    """decode(encode(s)) == s for arbitrary unicode.

    ``st.text()`` never draws surrogate code points (category Cs); those cannot be
    UTF-8 encoded, so no tokenizer can accept them.
    """
    ids = tok(text)["input_ids"]
    assert ids[-1] == EOS_ID
    assert UNK_ID not in ids
    assert tok.decode(ids, skip_special_tokens=True) == text


# --- special tokens, targets, padding ------------------------------------------------------------


def test_special_token_ids(tok: PreTrainedTokenizerFast) -> None:
    assert (PAD_ID, BOS_ID, EOS_ID, UNK_ID, MASK_ID) == (0, 1, 2, 3, 4)
    assert SPECIAL_TOKENS == ("<pad>", "<s>", "</s>", "<unk>", "<mask>")
    assert tok.convert_ids_to_tokens(list(range(5))) == list(SPECIAL_TOKENS)
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id, tok.mask_token_id) == (
        0,
        1,
        2,
        3,
        4,
    )


def test_sequences_end_with_eos_and_targets_become_labels(tok: PreTrainedTokenizerFast) -> None:
    enc = tok(["a b"], text_target=["c"])
    assert enc["input_ids"][0][-1] == EOS_ID
    assert enc["labels"][0][-1] == EOS_ID
    assert BOS_ID not in enc["input_ids"][0], "no <s> prefix on the source"
    assert BOS_ID not in enc["labels"][0], "<s> is the decoder start token, added by the model"
    assert tok.batch_decode(enc["labels"], skip_special_tokens=True) == ["c"]
    assert tok.batch_decode(enc["input_ids"], skip_special_tokens=True) == ["a b"]


def test_padding_uses_pad_id_on_the_right(tok: PreTrainedTokenizerFast) -> None:
    enc = tok(["Hund", "ein Mann mit blauem Hemd steht"], padding=True, return_tensors="pt")
    short = enc["input_ids"][0].tolist()
    n_real = int(enc["attention_mask"][0].sum())
    assert short[n_real - 1] == EOS_ID
    assert short[n_real:] == [PAD_ID] * (len(short) - n_real)
    assert tok.batch_decode(enc["input_ids"], skip_special_tokens=True) == ["Hund", "ein Mann mit blauem Hemd steht"]


# --- length limits -------------------------------------------------------------------------------


def test_truncation_to_model_max_length_keeps_eos(tok: PreTrainedTokenizerFast) -> None:
    long_text = "ein Mann läuft auf der Straße " * 50
    enc = tok([long_text], text_target=[long_text], truncation=True)
    for ids in (enc["input_ids"][0], enc["labels"][0]):
        assert len(ids) == tok.model_max_length == 64
        assert ids[-1] == EOS_ID
    assert len(tok(long_text, truncation=True, max_length=10)["input_ids"]) == 10


def test_too_long_without_truncation_warns(tok: PreTrainedTokenizerFast, caplog: pytest.LogCaptureFixture) -> None:
    fresh = PreTrainedTokenizerFast(tokenizer_object=tok.backend_tokenizer, model_max_length=8)
    hf_logging.enable_propagation()
    try:
        with caplog.at_level(logging.WARNING):
            ids = fresh("one two three four five six seven eight nine ten")["input_ids"]
    finally:
        hf_logging.disable_propagation()
    assert len(ids) > 8, "without truncation=True nothing is cut"
    assert "longer than the specified maximum sequence length" in caplog.text


# --- save / reload -------------------------------------------------------------------------------

PROBE = ["A dog runs.", "Ein Hund läuft über die Straße.", "我是大木博士 🙂", "  spaces\tand\nnewlines  "]


@pytest.mark.parametrize("model", MODELS)
def test_save_and_reload_with_autotokenizer(model: str, tmp_path: Path) -> None:
    tokenizer = train_tokenizer(make_corpus(10_000, seed=1), vocab_size=1000, model=model, model_max_length=128)
    tokenizer.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokenizer.json", "tokenizer_config.json"]

    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "TokenizersBackend"
    assert "auto_map" not in config, "must load without remote code"
    assert config["clean_up_tokenization_spaces"] is False
    assert config["split_special_tokens"] is True
    assert config["model_max_length"] == 128

    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    original = tokenizer(PROBE, text_target=PROBE, padding=True)
    again = reloaded(PROBE, text_target=PROBE, padding=True)
    assert again["input_ids"] == original["input_ids"]
    assert again["labels"] == original["labels"]
    assert reloaded.batch_decode(again["input_ids"], skip_special_tokens=True) == PROBE
    assert (reloaded.pad_token_id, reloaded.eos_token_id, reloaded.mask_token_id) == (PAD_ID, EOS_ID, MASK_ID)
    assert reloaded.model_max_length == 128

    # The raw tokenizers file gives the same ids too (e.g. for a Rust or JS consumer).
    raw = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert [e.ids for e in raw.encode_batch(PROBE)] == tokenizer(PROBE)["input_ids"]


def test_reload_in_a_process_without_copynat(tmp_path: Path) -> None:
    tokenizer = train_tokenizer(CORPUS, vocab_size=600)
    tokenizer.save_pretrained(tmp_path)
    script = textwrap.dedent(
        f"""
        import json, sys
        sys.modules["copynat"] = None  # any import of copynat now fails
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained({str(tmp_path)!r})
        print(json.dumps(tok({PROBE!r})["input_ids"]))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == tokenizer(PROBE)["input_ids"]


# --- accepted inputs -----------------------------------------------------------------------------


def test_generators_batches_and_dataset_columns_give_the_same_bpe_vocabulary() -> None:
    datasets = pytest.importorskip("datasets")
    lines = make_corpus(2000, seed=2)
    reference = train_tokenizer(lines, vocab_size=400).get_vocab()

    ds = datasets.Dataset.from_dict({"source": lines[:1000], "target": lines[1000:]})
    variants = {
        "generator": (line for line in lines),
        "batches": (lines[i : i + 128] for i in range(0, len(lines), 128)),
        "mixed str and tuple batches": itertools.chain(lines[:10], [tuple(lines[10:500])], lines[500:]),
        "dataset columns": itertools.chain(ds["source"], ds["target"]),
        "iter_text_batches": iter_text_batches(ds, ("source", "target"), batch_size=300),
        "iter_text_batches on a dict": iter_text_batches({"src": lines}, "src"),
    }
    for name, texts in variants.items():
        assert train_tokenizer(texts, vocab_size=400).get_vocab() == reference, name


def test_unigram_trains_on_a_generator_of_batches() -> None:
    lines = make_corpus(500, seed=3)
    tokenizer = train_tokenizer((lines[i : i + 50] for i in range(0, 500, 50)), vocab_size=400, model="unigram")
    assert roundtrip(tokenizer, lines[0]) == lines[0]
    assert type(tokenizer.backend_tokenizer.model).__name__ == "Unigram"


@pytest.mark.parametrize("model", MODELS)
def test_smallest_vocabulary_still_covers_all_bytes(model: str) -> None:
    tokenizer = train_tokenizer(["tiny corpus"], vocab_size=MIN_VOCAB_SIZE, model=model)
    assert roundtrip(tokenizer, "我是大木博士 🦀") == "我是大木博士 🦀"


def test_model_name_is_case_insensitive() -> None:
    assert type(train_tokenizer(["a b"], 300, "BPE").backend_tokenizer.model).__name__ == "BPE"
    assert type(train_tokenizer(["a b"], 300, "Unigram").backend_tokenizer.model).__name__ == "Unigram"


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("texts", "match"),
    [
        ([], "texts is empty"),
        (iter(()), "texts is empty"),
        (["", "", ""], "3 items but all of them are empty"),
        ([[], [""]], "1 items but all of them are empty"),
    ],
)
def test_empty_texts_raise_value_error(texts: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        train_tokenizer(texts)


@pytest.mark.parametrize(
    ("texts", "match"),
    [
        (["ok", "fine", None, "never reached"], r"texts\[2\] must be a str .*got NoneType"),
        (["ok", 42], r"texts\[1\] must be a str .*got int"),
        ((t for t in ["ok", b"bytes"]), r"texts\[1\] must be a str .*got bytes"),
        ([["ok", "fine"], ["x", None]], r"texts\[1\]\[1\] must be a str .*got NoneType"),
        ([{"source": "a", "target": "b"}], r"texts\[0\] .*got dict.*itertools.chain"),
        ("just one string", "not a single str"),
        (None, "texts must be an iterable of strings, got NoneType"),
        (123, "texts must be an iterable of strings, got int"),
    ],
)
def test_bad_items_raise_type_error_naming_the_culprit(texts: object, match: str) -> None:
    with pytest.raises(TypeError, match=match):
        train_tokenizer(texts)


@pytest.mark.parametrize("model", MODELS)
def test_vocab_size_too_small(model: str) -> None:
    with pytest.raises(ValueError, match=rf"vocab_size={MIN_VOCAB_SIZE - 1} is too small.*at least {MIN_VOCAB_SIZE}"):
        train_tokenizer(["a b"], vocab_size=MIN_VOCAB_SIZE - 1, model=model)
    with pytest.raises(TypeError, match="vocab_size must be an int"):
        train_tokenizer(["a b"], vocab_size=8000.0, model=model)


def test_unknown_model() -> None:
    with pytest.raises(ValueError, match=r"model must be one of 'bpe', 'unigram'; got 'wordpiece'"):
        train_tokenizer(["a b"], model="wordpiece")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"min_frequency": -1}, "min_frequency"), ({"model_max_length": 0}, "model_max_length")],
)
def test_bad_options(kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        train_tokenizer(["a b"], **kwargs)


def test_model_and_tokenizer_in_one_folder_load_together(tok: PreTrainedTokenizerFast, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForSeq2SeqLM

    from copynat import CopyNatConfig, CopyNatForConditionalGeneration

    config = CopyNatConfig(vocab_size=len(tok), d_model=32, encoder_layers=1, decoder_layers=1,
                           encoder_ffn_dim=64, decoder_ffn_dim=64)
    # special-token ids of tokenizer and model config agree
    assert (config.pad_token_id, config.bos_token_id, config.eos_token_id, config.unk_token_id,
            config.mask_token_id) == (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id,
                                      tok.mask_token_id)
    model = CopyNatForConditionalGeneration(config).eval()
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded_tok = AutoTokenizer.from_pretrained(tmp_path)
    loaded_model = AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    inputs = loaded_tok(["我是大木博士", "Hallo Kuroro!"], padding=True, return_tensors="pt")
    assert torch.equal(inputs["input_ids"], tok(["我是大木博士", "Hallo Kuroro!"], padding=True, return_tensors="pt")["input_ids"])
    out = loaded_model.generate(**inputs, max_new_tokens=5)
    assert torch.equal(out, model.generate(**inputs, max_new_tokens=5))
    assert all(isinstance(text, str) for text in loaded_tok.batch_decode(out, skip_special_tokens=True))
