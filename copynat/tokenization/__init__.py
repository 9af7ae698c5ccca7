"""Train a shared, byte-level subword tokenizer for copynat.

What a subword tokenizer does
-----------------------------
A Transformer sees integer ids, not text. Whole words make a huge vocabulary
that still misses rare words; single characters make sequences long. Subword
tokenizers sit in between: frequent words get one id, rare words are spelled
with a few frequent pieces. Two ways of learning the pieces are offered:

``model="bpe"`` (byte-pair encoding)
    Start from single symbols and repeatedly *merge* the most frequent
    adjacent pair into a new symbol until ``vocab_size`` is reached. Encoding
    replays the learned merges in order. Fast to train, deterministic, the
    GPT-2/RoBERTa/BART choice.
``model="unigram"`` (unigram language model, as in SentencePiece/T5)
    Start from a large set of candidate pieces and repeatedly *prune* the
    pieces whose removal hurts the corpus likelihood least. Every piece has
    a probability; encoding picks the most likely segmentation (Viterbi).
    Slower to train, often slightly better segmentations for morphology.

Why byte-level
--------------
Both models work on *bytes* here, via the ``ByteLevel`` pre-tokenizer and
decoder of the ``tokenizers`` library: the text is UTF-8 encoded and each of
the 256 byte values is mapped to one printable stand-in character (a space
becomes ``Ġ``). All 256 stand-ins are forced into the vocabulary
(``initial_alphabet``), so

* there is no out-of-vocabulary input: Chinese, Japanese, emoji with
  zero-width joiners, control characters and scripts never seen in training
  are spelled with byte pieces, and ``<unk>`` is never produced;
* nothing is normalized: no Unicode normalization, lower-casing, or
  whitespace collapsing. NFC ``"é"`` and NFD ``"e\\u0301"`` stay different,
  tabs, newlines and runs of spaces survive, and
  ``tok.decode(tok(s)["input_ids"], skip_special_tokens=True) == s`` holds
  exactly for every Python string that can be UTF-8 encoded (that is, every
  string without lone surrogates ``"\\ud800"``-``"\\udfff"``: those cannot be
  encoded at all and raise in ``tokenizers``).

*Why not Metaspace + byte fallback for Unigram* (the SentencePiece way)? The
Metaspace pre-tokenizer turns spaces into ``▁``, so a literal ``▁`` in the
input decodes to a space, and its decoder drops one leading space; the round
trip is not exact. Byte fallback also needs 256 ``<0x..>`` tokens added by
hand. Running Unigram on the ByteLevel alphabet gives the same no-OOV
guarantee with an exact round trip and one code path for both models.

Characters of unspaced scripts
------------------------------
Chinese and Japanese have no spaces, so the usual pre-tokenizer would hand
``"我是庫洛洛"`` to BPE as one word, and a merge could join the last character
of "我是" and the first of a name into one piece. A copy model can then not
echo the name: its first piece exists only glued to "是". So each Han, kana,
Hangul and CJK punctuation character is its own pre-token: a piece never
spans two such characters (a frequent character is one piece, a rare one
two or three byte pieces), and a name reads the same wherever it stands.

Leading spaces are part of the piece (``"Ġhouse"`` differs from ``"house"``);
``add_prefix_space=False`` means no space is invented before the first word,
which is what keeps leading spaces exact. Only a space in front of a
non-ASCII character stays a piece of its own: merged, it would make a piece of
a space and the first *byte* of the character (``" Мария"`` -> ``"ĠÐ"``,
``"ľ"``, ...), so the same name would be spelled with other pieces after a
space than at the start of a line or after Chinese text, and a copy model
could not echo it. (An ASCII word differs in its first piece only,
``"ĠKur"`` against ``"Kur"``; copynat's copy head copies a piece with its
leading space added or removed, see ``CopyNatConfig.copy_respace``.)

Why one shared vocabulary
-------------------------
copynat's copy mechanism points at a *source* position and emits the id found
there as the *target* token. That only works if the source and target sides
use the same ids for the same strings, and it also lets the encoder and
decoder share (tie) one embedding matrix. So train one tokenizer on source
**and** target text together, e.g. for a :mod:`datasets` dataset::

    import itertools
    tok = train_tokenizer(itertools.chain(ds["source"], ds["target"]), 8000)
    # faster for big datasets: batches of strings
    tok = train_tokenizer(iter_text_batches(ds, ("source", "target")), 8000)

(``ds["source"] + ds["target"]`` does *not* work for a ``datasets.Dataset``:
its columns do not support ``+``.)

Special tokens and sequences
----------------------------
The five special tokens always get the first ids, matching the defaults of the
copynat model config: ``<pad>``=0, ``<s>``=1, ``</s>``=2, ``<unk>``=3,
``<mask>``=4 (``<mask>`` is the input of the non-autoregressive decoder).
Every encoded sequence, source or target (``text_target=``), ends with
``</s>``; no ``<s>`` is prepended, because ``<s>`` is the model's
``decoder_start_token_id`` and is added by the model when it shifts labels.

Special tokens are inserted *only by id* (post-processor, padding, model):
the tokenizer is saved with ``split_special_tokens=True``, so a literal
``"<s>"`` or ``"<mask>"`` inside user text (HTML has a ``<s>`` tag) is encoded
as ordinary bytes and survives ``skip_special_tokens=True`` decoding.

Reproducibility
---------------
BPE training is deterministic: the same corpus gives the same ids, whether it
comes as a list, a generator or batches. Unigram training gives the same set of
pieces, but ids of pieces with equal scores may come out in a different order
from run to run. Save the trained tokenizer instead of retraining it.

Length limits
-------------
``model_max_length`` is stored in the saved config. Pass ``truncation=True``
to cut longer inputs to it (the cut keeps the final ``</s>``), or
``max_length=`` for another limit. Without truncation, transformers does not
cut anything; it logs once per tokenizer instance *"Token indices sequence
length is longer than the specified maximum sequence length for this model
(N > M). Running this sequence through the model will result in indexing
errors"*. Set ``model_max_length`` to the model's maximum number of positions.

Decoding
--------
``clean_up_tokenization_spaces=False`` is passed explicitly and saved in
``tokenizer_config.json``: the clean-up is a WordPiece-era heuristic that
deletes the space before punctuation (``"a ."`` -> ``"a."``) and would break
the exact round trip. (transformers 5 defaults to ``False`` and skips it for
BPE anyway, but would apply it to a Unigram model if it were ``True``.)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

__all__ = [
    "BOS_ID",
    "BOS_TOKEN",
    "EOS_ID",
    "EOS_TOKEN",
    "MASK_ID",
    "MASK_TOKEN",
    "MIN_VOCAB_SIZE",
    "PAD_ID",
    "PAD_TOKEN",
    "SPECIAL_TOKENS",
    "TOKENIZER_MODELS",
    "UNK_ID",
    "UNK_TOKEN",
    "iter_text_batches",
    "train_tokenizer",
]

PAD_TOKEN = "<pad>"
BOS_TOKEN = "<s>"
EOS_TOKEN = "</s>"
UNK_TOKEN = "<unk>"
MASK_TOKEN = "<mask>"

#: The special tokens in id order: ``SPECIAL_TOKENS[i]`` has id ``i``.
SPECIAL_TOKENS: tuple[str, ...] = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN, MASK_TOKEN)
PAD_ID, BOS_ID, EOS_ID, UNK_ID, MASK_ID = range(len(SPECIAL_TOKENS))

#: Accepted values of ``train_tokenizer(model=...)``.
TOKENIZER_MODELS: tuple[str, ...] = ("bpe", "unigram")

_BYTE_ALPHABET: list[str] = pre_tokenizers.ByteLevel.alphabet()
#: One character of a script written without spaces (Han, kana, CJK punctuation and full-width forms) or of Hangul:
#: each is its own pre-token, so no piece spans two characters (see "Characters of unspaced scripts").
UNSPACED_SCRIPT_CHARACTER = Regex(r"[\x{3000}-\x{30ff}\x{3400}-\x{4dbf}\x{4e00}-\x{9fff}\x{f900}-\x{faff}"
                                  r"\x{ac00}-\x{d7af}\x{ff00}-\x{ffef}\x{20000}-\x{3134f}]")
#: A space before a non-ASCII character: its own pre-token, so no piece holds a space and part of a character.
SPACE_BEFORE_NON_ASCII = Regex(r" (?=[^\x00-\x7f])")
#: Smallest ``vocab_size``: the special tokens plus the 256 byte symbols.
MIN_VOCAB_SIZE: int = len(SPECIAL_TOKENS) + len(_BYTE_ALPHABET)


def train_tokenizer(
    texts: Iterable[str] | Iterable[Sequence[str]],
    vocab_size: int = 8000,
    model: str = "bpe",
    *,
    min_frequency: int = 2,
    model_max_length: int = 512,
    show_progress: bool = False,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE or Unigram tokenizer on ``texts`` and wrap it for transformers.

    Args:
        texts: The training text, source and target sides together (one shared
            vocabulary, see the module docstring). Any iterable, consumed once:
            a list of strings, a generator, a ``datasets`` column
            (``itertools.chain(ds["source"], ds["target"])``), or an iterable of
            *batches* (lists/tuples of strings, e.g. from
            :func:`iter_text_batches`); str items and batches may be mixed.
        vocab_size: Target vocabulary size, special tokens included. At least
            :data:`MIN_VOCAB_SIZE` (5 special tokens + 256 byte symbols). A
            small corpus may yield fewer entries.
        model: ``"bpe"`` (byte-level BPE) or ``"unigram"`` (Unigram LM on the
            same byte alphabet).
        min_frequency: BPE only: a pair must occur at least this often to be
            merged. Ignored by Unigram, which has no such threshold.
        model_max_length: Saved in the config; ``truncation=True`` cuts to it.
        show_progress: Show the ``tokenizers`` training progress bar.

    Returns:
        A ``PreTrainedTokenizerFast`` (in transformers 5 the same class as
        ``TokenizersBackend``) with ``<pad>``=0, ``<s>``=1, ``</s>``=2,
        ``<unk>``=3, ``<mask>``=4 that appends ``</s>`` to every sequence.
        ``save_pretrained(d)`` writes ``tokenizer.json`` and
        ``tokenizer_config.json``; ``AutoTokenizer.from_pretrained(d)`` reloads
        it without copynat installed.

    Raises:
        ValueError: unknown ``model``; ``vocab_size`` below :data:`MIN_VOCAB_SIZE`;
            bad ``min_frequency``/``model_max_length``; ``texts`` empty or
            only empty strings.
        TypeError: ``texts`` is a single string or not iterable; an item is
            neither a string nor a list/tuple of strings (the message names
            its index, e.g. ``texts[3]`` or ``texts[3][7]``, and its type).

    Example:
        >>> tok = train_tokenizer(["Ein Hund läuft.", "A dog runs."] * 50, vocab_size=300)
        >>> ids = tok("A dog läuft.")["input_ids"]
        >>> ids[-1] == EOS_ID, tok.decode(ids, skip_special_tokens=True)
        (True, 'A dog läuft.')
    """
    model_name = _check_arguments(texts, vocab_size, model, min_frequency, model_max_length)

    backend = Tokenizer(models.BPE(unk_token=UNK_TOKEN) if model_name == "bpe" else models.Unigram())
    # No normalizer: the text is kept byte for byte (see the module docstring).
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(UNSPACED_SCRIPT_CHARACTER, behavior="isolated"),
        pre_tokenizers.Split(SPACE_BEFORE_NON_ASCII, behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    backend.decoder = decoders.ByteLevel()

    trainer: trainers.Trainer
    if model_name == "bpe":
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=_BYTE_ALPHABET,
            show_progress=show_progress,
        )
    else:
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab_size,
            special_tokens=list(SPECIAL_TOKENS),
            unk_token=UNK_TOKEN,
            initial_alphabet=_BYTE_ALPHABET,
            show_progress=show_progress,
        )

    counts = {"items": 0, "nonempty": 0}
    backend.train_from_iterator(_validated(texts, counts), trainer=trainer)
    if counts["nonempty"] == 0:
        what = "is empty" if counts["items"] == 0 else f"has {counts['items']} items but all of them are empty strings"
        raise ValueError(f"texts {what}: there is nothing to train the tokenizer on")

    _check_trained_vocabulary(backend)
    backend.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS_TOKEN}",
        pair=f"$A {EOS_TOKEN} $B {EOS_TOKEN}",
        special_tokens=[(EOS_TOKEN, EOS_ID)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD_TOKEN,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=UNK_TOKEN,
        mask_token=MASK_TOKEN,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
        split_special_tokens=True,
    )


def iter_text_batches(
    dataset: Any, columns: Sequence[str] = ("source", "target"), batch_size: int = 1000
) -> Iterator[list[str]]:
    """Yield batches of strings from the ``columns`` of a ``datasets.Dataset``.

    One pass per column, ``batch_size`` rows at a time (much faster than
    iterating a column row by row). Pass the result to :func:`train_tokenizer`.
    Works for anything that supports ``len(dataset)`` and
    ``dataset[start:stop][column]`` (also a dict of lists).
    """
    if isinstance(columns, str):
        columns = (columns,)
    n_rows = len(dataset[columns[0]]) if isinstance(dataset, dict) else len(dataset)
    for column in columns:
        for start in range(0, n_rows, batch_size):
            if isinstance(dataset, dict):
                yield list(dataset[column][start : start + batch_size])
            else:
                yield list(dataset[start : start + batch_size][column])


def _check_arguments(
    texts: object, vocab_size: object, model: object, min_frequency: object, model_max_length: object
) -> str:
    """Validate the scalar arguments of :func:`train_tokenizer`; return the normalized model name."""
    model_name = model.lower() if isinstance(model, str) else model
    if model_name not in TOKENIZER_MODELS:
        raise ValueError(f"model must be one of {', '.join(map(repr, TOKENIZER_MODELS))}; got {model!r}")
    if isinstance(texts, (str, bytes)):
        raise TypeError(
            f"texts must be an iterable of strings, not a single {type(texts).__name__}; "
            "wrap it in a list: train_tokenizer([text])"
        )
    if not isinstance(texts, Iterable):
        raise TypeError(f"texts must be an iterable of strings, got {type(texts).__name__}")
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
        raise TypeError(f"vocab_size must be an int, got {type(vocab_size).__name__}")
    if vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(
            f"vocab_size={vocab_size} is too small: it must be at least {MIN_VOCAB_SIZE} "
            f"({len(SPECIAL_TOKENS)} special tokens + {len(_BYTE_ALPHABET)} byte symbols)"
        )
    if isinstance(min_frequency, bool) or not isinstance(min_frequency, int) or min_frequency < 0:
        raise ValueError(f"min_frequency must be an int >= 0, got {min_frequency!r}")
    if isinstance(model_max_length, bool) or not isinstance(model_max_length, int) or model_max_length < 1:
        raise ValueError(f"model_max_length must be an int >= 1, got {model_max_length!r}")
    return model_name


def _validated(texts: Iterable[Any], counts: dict[str, int]) -> Iterator[str | list[str]]:
    """Pass ``texts`` through to the trainer, checking types and counting (non-empty) strings.

    Exceptions raised here surface unchanged from ``Tokenizer.train_from_iterator``.
    """
    for index, item in enumerate(texts):
        if isinstance(item, str):
            counts["items"] += 1
            counts["nonempty"] += bool(item)
            yield item
        elif isinstance(item, (list, tuple)):
            for inner, text in enumerate(item):
                if not isinstance(text, str):
                    raise TypeError(_bad_item_message(f"texts[{index}][{inner}]", text))
            counts["items"] += len(item)
            counts["nonempty"] += sum(1 for text in item if text)
            yield item if isinstance(item, list) else list(item)
        else:
            raise TypeError(_bad_item_message(f"texts[{index}]", item))


def _bad_item_message(where: str, item: object) -> str:
    message = f"{where} must be a str (or a list/tuple of str), got {type(item).__name__}: {item!r:.60}"
    if isinstance(item, dict):
        message += "; to train on dataset columns pass e.g. itertools.chain(ds['source'], ds['target'])"
    return message


def _check_trained_vocabulary(backend: Tokenizer) -> None:
    """Guard the two invariants the rest of copynat relies on."""
    ids = [backend.token_to_id(token) for token in SPECIAL_TOKENS]
    if ids != list(range(len(SPECIAL_TOKENS))):
        raise RuntimeError(f"special tokens got ids {ids}, expected 0..{len(SPECIAL_TOKENS) - 1}")
    vocab = backend.get_vocab()
    missing = [symbol for symbol in _BYTE_ALPHABET if symbol not in vocab]
    if missing:
        raise RuntimeError(f"{len(missing)} byte symbols are missing from the vocabulary: {missing[:10]}")

