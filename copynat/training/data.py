"""Data loading, preprocessing and token-budget batching for copynat training.

Pipeline: ``load_raw_datasets(args)`` -> DatasetDict of "train"/"validation"/"test" splits with
exactly the text columns "source" and "target"; ``tokenize_datasets(raw, tokenizer, args)`` adds
``input_ids``, ``labels`` and ``length`` (= max of both, used by the sampler); batches come from
``TokenBudgetBatchSampler(lengths, max_tokens)`` and are padded by ``Seq2SeqCollator``.

Input formats (a split's file format is inferred from its extension):

* ``.json`` / ``.jsonl`` / ``.csv`` / ``.tsv`` / ``.parquet`` files with ``source_column`` and
  ``target_column``, or with a ``translation`` column of dicts such as ``{"en": ..., "de": ...}``
  selected by ``source_lang``/``target_lang`` (the layout of WMT datasets on the Hub);
* parallel text, fairseq style: ``train_file=data/multi30k/train`` with ``source_lang=en`` and
  ``target_lang=de`` reads the aligned line files ``train.en`` and ``train.de`` (``data/train.en``
  is accepted as well).  Multi30k: ``train_file=.../train``, ``validation_file=.../val``,
  ``test_file=.../test_2016_flickr``;
* ``dataset_name`` (+ ``dataset_config_name``): ``datasets.load_dataset`` on a Hub name or a local
  dataset folder; local files given as well replace the corresponding splits;
* nothing at all: the embedded echo (copy) task, ``copynat.data.make_echo_dataset()``, whose fourth split
  ``"test_ood"`` (entity families that training never sees) is evaluated after training like "test".

Bad rows never crash an epoch: rows whose source or target is missing/blank are skipped and counted
(one warning per split); numbers are cast to ``str`` (CSV/TSV columns are read as text, so "007"
stays "007").  Over-long sequences are truncated to ``max_*_length`` tokens with a counted warning
(the final ``</s>`` is kept), or rejected when ``overlong_policy="error"``.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from datasets.fingerprint import Hasher
from transformers import DataCollatorForSeq2Seq, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
#: Evaluated after training like "test"; only the embedded echo task has one (entity families training never sees).
OOD_SPLIT = "test_ood"
FILE_FORMATS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet"}
_TEXT = datasets.Value("string")
_IDS = datasets.Sequence(datasets.Value("int32"))
_TOKENIZED_FEATURES = datasets.Features(
    {"source": _TEXT, "target": _TEXT, "input_ids": _IDS, "labels": _IDS,
     "length": datasets.Value("int32"), "_truncated": datasets.Value("int8")}
)
_SPLIT_ALIASES = {"valid": "validation", "val": "validation", "dev": "validation", "eval": "validation"}


def _arg(default: Any, help: str, **extra: Any) -> Any:
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class DataArguments:
    """Where the data comes from and how it is preprocessed (CLI flags via ``HfArgumentParser``)."""

    dataset_name: str | None = _arg(None, "A `datasets` Hub name or local dataset folder, e.g. 'wmt16'.")
    dataset_config_name: str | None = _arg(None, "Configuration of --dataset_name, e.g. 'de-en'.")
    train_file: str | None = _arg(
        None,
        "Training data: .json/.jsonl/.csv/.tsv/.parquet, or a parallel-text prefix PREFIX read as "
        "PREFIX.<source_lang> + PREFIX.<target_lang> (e.g. multi30k/train).",
    )
    validation_file: str | None = _arg(None, "Validation data, same formats as --train_file.")
    test_file: str | None = _arg(None, "Test data, same formats as --train_file.")
    source_column: str = _arg("source", "Column holding the source text.")
    target_column: str = _arg("target", "Column holding the target text.")
    source_lang: str | None = _arg(None, "Source key of a 'translation' column / suffix of parallel-text files.")
    target_lang: str | None = _arg(None, "Target key of a 'translation' column / suffix of parallel-text files.")
    max_source_length: int = _arg(256, "Maximum source length in tokens, </s> included.")
    max_target_length: int = _arg(256, "Maximum target length in tokens, </s> included.")
    overlong_policy: str = _arg(
        "truncate", "Longer sequences: 'truncate' (counted warning) or 'error'.", choices=["truncate", "error"]
    )
    preprocessing_num_workers: int | None = _arg(None, "Processes for datasets.map (default: in-process).")
    max_train_samples: int | None = _arg(None, "Keep only the first N training examples (quick runs).")
    max_eval_samples: int | None = _arg(None, "Keep only the first N validation and test examples.")
    overwrite_cache: bool = _arg(False, "Re-parse data files and redo preprocessing instead of using the cache.")
    cache_dir: str | None = _arg(None, "Cache folder for `datasets` (default: HF_DATASETS_CACHE).")
    entity_augmentation: int = _arg(
        0, "Teach copying in context: add this many copies of each training pair whose source and target share a "
           "name or number (not the first word), that word replaced on both sides by a generated entity of any "
           "script (copynat.data.augment; 4 is a good value for translation). 0 = off.")

    def __post_init__(self) -> None:
        if isinstance(self.entity_augmentation, bool) or self.entity_augmentation < 0:
            raise ValueError(f"--entity_augmentation must be an integer >= 0, got {self.entity_augmentation}")

    def split_files(self) -> dict[str, str]:
        """The local data files given, by split."""
        files = {"train": self.train_file, "validation": self.validation_file, "test": self.test_file}
        return {split: path for split, path in files.items() if path}


# --------------------------------------------------------------------------------------- loading


def load_raw_datasets(args: DataArguments) -> datasets.DatasetDict:
    """Load every split named by ``args`` and normalise it to the columns "source"/"target"."""
    splits: dict[str, tuple[datasets.Dataset, str]] = {}
    if args.dataset_name is None and not args.split_files():
        from copynat.data import make_echo_dataset  # lazy: optional module of the package

        for split, ds in make_echo_dataset().items():
            splits[split] = (ds, "the embedded echo data set")
    if args.dataset_name is not None:
        hub = datasets.load_dataset(args.dataset_name, args.dataset_config_name, cache_dir=args.cache_dir)
        for name, ds in hub.items():
            split = _SPLIT_ALIASES.get(name, name)
            if split in SPLITS:
                splits[split] = (ds, f"dataset {args.dataset_name}")
            else:
                logger.info("ignoring split %r of dataset %s", name, args.dataset_name)
    for split, path in args.split_files().items():
        splits[split] = (_load_file(path, split, args), f"file {path}")

    result = datasets.DatasetDict()
    for split in (*SPLITS, OOD_SPLIT):
        if split not in splits:
            continue
        ds, where = splits[split]
        ds = _normalize(ds, split, where, args)
        limit = args.max_train_samples if split == "train" else args.max_eval_samples
        if limit is not None and limit < len(ds):
            ds = ds.select(range(limit))
        if split == "train" and args.entity_augmentation:
            ds = _augment_with_entities(ds, args.entity_augmentation)
        result[split] = ds
    return result


def _augment_with_entities(ds: datasets.Dataset, copies: int) -> datasets.Dataset:
    """The training split plus `copies` entity-swapped copies of each pair that shares a name or number."""
    from copynat.data.augment import augment_with_entities

    sources, targets = augment_with_entities(ds["source"], ds["target"], copies)
    logger.info("entity augmentation: %d pairs share a name or number; %d copies added to %d training pairs",
                len(sources) // copies, len(sources), len(ds))
    if not sources:
        return ds
    added = datasets.Dataset.from_dict({"source": sources, "target": targets},
                                       features=ds.select_columns(["source", "target"]).features)
    return datasets.concatenate_datasets([ds.select_columns(["source", "target"]), added])


def _load_file(path: str, split: str, args: DataArguments) -> datasets.Dataset:
    """Read one split's file; every failure names the split and the file."""
    prefix = _parallel_prefix(path, args)
    if prefix is not None:
        return _read_parallel_text(prefix, split, args)
    suffix = Path(path).suffix.lower()
    if suffix not in FILE_FORMATS:
        raise ValueError(
            f"{split} file {path}: unsupported extension {suffix or '(none)'!r}; use one of "
            f"{', '.join(FILE_FORMATS)}, or a parallel-text prefix PREFIX with files PREFIX.<source_lang> and "
            "PREFIX.<target_lang> (set source_lang and target_lang)"
        )
    if not Path(path).is_file():
        raise FileNotFoundError(f"{split} file {path} does not exist")
    kwargs: dict[str, Any] = {}
    if FILE_FORMATS[suffix] == "csv":
        # Read text columns as text: no "NA"/"null" -> NaN, no "007" -> 7.
        kwargs = {"keep_default_na": False, "converters": {args.source_column: str, args.target_column: str}}
        if suffix == ".tsv":  # Moses-style TSV: quotes are literal characters
            kwargs.update(delimiter="\t", quoting=csv.QUOTE_NONE)
    try:
        # datasets pings S3 to count loads of its packaged "json"/"csv" builders (up to 3 s without a
        # network, on every call); pointless for a local file, so switched off for this call only.
        with _download_counts_off():
            return datasets.load_dataset(
                FILE_FORMATS[suffix],
                data_files={split: str(path)},
                split=split,
                cache_dir=args.cache_dir,
                download_mode="force_redownload" if args.overwrite_cache else None,
                **kwargs,
            )
    except Exception as err:  # datasets/pyarrow/pandas raise many types; report the root cause
        raise ValueError(f"could not parse {split} file {path}: {_root_cause(err)}") from err


@contextlib.contextmanager
def _download_counts_off():
    """datasets' HF_UPDATE_DOWNLOAD_COUNTS set to False for the block, then restored."""
    saved = datasets.config.HF_UPDATE_DOWNLOAD_COUNTS
    datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = False
    try:
        yield
    finally:
        datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = saved


def _root_cause(err: BaseException) -> str:
    """The innermost *explicit* cause (e.g. pyarrow's "JSON parse error ... in row 1"), else the last context."""
    follow = "__cause__" if err.__cause__ is not None else "__context__"
    while getattr(err, follow) is not None:
        err = getattr(err, follow)
    return f"{type(err).__name__}: {err}"


def _parallel_prefix(path: str, args: DataArguments) -> str | None:
    """``PREFIX`` if ``path`` names parallel text (``PREFIX`` or ``PREFIX.<source_lang>``)."""
    if not (args.source_lang and args.target_lang):
        return None
    for prefix in (path, path[: -len(args.source_lang) - 1] if path.endswith("." + args.source_lang) else None):
        if prefix and Path(f"{prefix}.{args.source_lang}").is_file() and Path(f"{prefix}.{args.target_lang}").is_file():
            return prefix
    return None


def _read_parallel_text(prefix: str, split: str, args: DataArguments) -> datasets.Dataset:
    """Two aligned one-sentence-per-line files -> in-memory Dataset (no stale-cache risk)."""
    src_path, tgt_path = f"{prefix}.{args.source_lang}", f"{prefix}.{args.target_lang}"
    sources, targets = _read_lines(src_path, split), _read_lines(tgt_path, split)
    if len(sources) != len(targets):
        raise ValueError(
            f"{split} parallel text is misaligned: "
            f"{src_path} has {len(sources)} lines but {tgt_path} has {len(targets)}"
        )
    return datasets.Dataset.from_dict({"source": sources, "target": targets})


def _read_lines(path: str, split: str) -> list[str]:
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ValueError(f"could not parse {split} file {path}: invalid UTF-8 at line {line}") from err
    # split("\n"), not splitlines(): U+2028, U+0085 etc. inside a sentence must not break alignment
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


# ---------------------------------------------------------------------------------- normalising


def _normalize(ds: datasets.Dataset, split: str, where: str, args: DataArguments) -> datasets.Dataset:
    """Select/rename the text columns, cast values to ``str`` and skip blank rows (counted)."""
    columns = ds.column_names
    if args.source_column in columns and args.target_column in columns:
        keys = {"source": (args.source_column, None), "target": (args.target_column, None)}
    elif "translation" in columns:
        feature = ds.features["translation"]
        languages = list(getattr(feature, "languages", None) or (feature.keys() if isinstance(feature, dict) else []))
        if not (args.source_lang and args.target_lang) or not {args.source_lang, args.target_lang} <= set(languages):
            raise ValueError(
                f"split {split} ({where}) has a 'translation' column with languages {languages}; "
                f"set source_lang and target_lang to two of them (got {args.source_lang!r}, {args.target_lang!r})"
            )
        keys = {"source": ("translation", args.source_lang), "target": ("translation", args.target_lang)}
    else:
        missing = [c for c in (args.source_column, args.target_column) if c not in columns]
        raise ValueError(
            f"split {split} ({where}) has no column {' or '.join(map(repr, missing))}; available columns: {columns}. "
            "Set source_column/target_column, or source_lang/target_lang for a 'translation' column."
        )
    ds = ds.map(
        _normalize_batch,
        batched=True,
        with_indices=True,
        remove_columns=columns,
        # Explicit features: otherwise a mixed-type JSON column keeps its `Json` feature and "7" decodes back to 7.
        features=datasets.Features({"source": _TEXT, "target": _TEXT, "_blank": datasets.Value("bool")}),
        fn_kwargs={"keys": keys, "split": split, "where": where},
        num_proc=args.preprocessing_num_workers if len(ds) > 1000 else None,
        load_from_cache_file=not args.overwrite_cache,
        desc=f"Normalizing {split}",
    )
    blank = _column(ds, "_blank").astype(bool)
    if blank.any():
        logger.warning(
            "skipped %d blank rows in split %s (%s) (first at row %d)",
            int(blank.sum()), split, where, int(np.flatnonzero(blank)[0]),
        )
        ds = ds.select(np.flatnonzero(~blank))
    return ds.remove_columns("_blank")


def _normalize_batch(batch: dict, indices: list[int], *, keys: dict, split: str, where: str) -> dict:
    out: dict[str, list] = {"source": [], "target": [], "_blank": []}
    values = {
        name: [(row or {}).get(lang) for row in batch[column]] if lang else batch[column]
        for name, (column, lang) in keys.items()
    }
    for pos, row in enumerate(indices):
        blank = False
        for name, (column, lang) in keys.items():
            text = _as_text(values[name][pos], split, where, row, f"{column}.{lang}" if lang else column)
            blank = blank or not text.strip()
            out[name].append(text)
        out["_blank"].append(blank)
    return out


def _as_text(value: Any, split: str, where: str, row: int, column: str) -> str:
    """``str`` as is; numbers -> ``str``; None/NaN -> "" (blank); anything else is an error."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float, np.integer, np.floating)):
        return str(value)
    raise ValueError(
        f"split {split} ({where}), row {row}, column {column!r}: "
        f"expected text, got {type(value).__name__} {value!r:.80}"
    )


# ---------------------------------------------------------------------------------- tokenising


def tokenize_datasets(
    raw: datasets.DatasetDict, tokenizer: PreTrainedTokenizerBase, args: DataArguments
) -> datasets.DatasetDict:
    """Add ``input_ids``, ``labels`` and ``length`` to every split (text columns are kept).

    Sequences are tokenized untruncated first so over-long ones can be counted (or rejected);
    only those are re-encoded with ``truncation=True``, which keeps the template's ``</s>``.
    The cache fingerprint is computed from the tokenizer's serialized model rather than by
    pickling the tokenizer, whose truncation state changes on every call (cache misses).
    """
    if args.overlong_policy not in ("truncate", "error"):
        raise ValueError(f"overlong_policy must be 'truncate' or 'error', got {args.overlong_policy!r}")
    limits = {"source": args.max_source_length, "target": args.max_target_length}
    result = datasets.DatasetDict()
    for split, ds in raw.items():
        fn_kwargs = {"tokenizer": tokenizer, "split": split, "limits": limits, "policy": args.overlong_policy}
        fingerprint = None
        if getattr(tokenizer, "is_fast", False):
            identity = _tokenizer_identity(tokenizer)
            fingerprint = Hasher.hash([ds._fingerprint, _tokenize_batch, identity, limits, args.overlong_policy, split])
        ds = ds.map(
            _tokenize_batch,
            batched=True,
            with_indices=True,
            fn_kwargs=fn_kwargs,
            features=_TOKENIZED_FEATURES,
            num_proc=args.preprocessing_num_workers if len(ds) > 1000 else None,
            load_from_cache_file=not args.overwrite_cache,
            new_fingerprint=fingerprint,
            desc=f"Tokenizing {split}",
        )
        flags = _column(ds, "_truncated").astype(np.int8)
        if flags.any():
            logger.warning(
                "truncated %d of %d examples in split %s (first: example %d): %d sources > max_source_length=%d, "
                "%d targets > max_target_length=%d tokens",
                int((flags > 0).sum()), len(flags), split, int(np.flatnonzero(flags)[0]),
                int((flags & 1).astype(bool).sum()), args.max_source_length,
                int((flags & 2).astype(bool).sum()), args.max_target_length,
            )
        result[split] = ds.remove_columns("_truncated")
    return result


def _tokenizer_identity(tokenizer: PreTrainedTokenizerBase) -> list:
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    state["truncation"] = state["padding"] = None  # mutated by every call, irrelevant here
    return [type(tokenizer).__name__, state, tokenizer.padding_side]


def _encode(tokenizer, texts: list[str], side: str, max_length: int | None = None) -> list[list[int]]:
    text = {"text_target" if side == "target" else "text": texts}
    options = {"truncation": True, "max_length": max_length} if max_length else {}
    return tokenizer(**text, **options, return_attention_mask=False, return_token_type_ids=False)["input_ids"]


def _tokenize_batch(batch: dict, indices: list[int], *, tokenizer, split: str, limits: dict, policy: str) -> dict:
    """Encode both sides; flag over-long rows (bit 1: source, bit 2: target) and re-encode them truncated."""
    out: dict[str, list] = {"_truncated": [0] * len(indices)}
    for bit, side, key in ((1, "source", "input_ids"), (2, "target", "labels")):
        ids, limit = _encode(tokenizer, batch[side], side), limits[side]
        for pos, seq in enumerate(ids):
            if len(seq) <= limit:
                continue
            if policy == "error":
                raise ValueError(
                    f"split {split}, example {indices[pos]} (after blank rows were skipped), column {side!r}: "
                    f"{len(seq)} tokens > max_{side}_length={limit} ({batch[side][pos][:60]!r}...); "
                    "raise the limit or use overlong_policy='truncate'"
                )
            ids[pos] = _encode(tokenizer, [batch[side][pos]], side, max_length=limit)[0]
            out["_truncated"][pos] |= bit
        out[key] = ids
    out["length"] = [max(len(s), len(t)) for s, t in zip(out["input_ids"], out["labels"])]
    return out


def example_lengths(dataset: datasets.Dataset) -> np.ndarray:
    """Per-example ``max(source_len, target_len)`` of a tokenized split, for the batch sampler."""
    return _column(dataset, "length").astype(np.int64)


def _column(ds: datasets.Dataset, name: str) -> np.ndarray:
    # Slice, do not index: in datasets >= 4 `ds[name]` is a lazy Column that numpy iterates row by row.
    return np.asarray(ds.with_format("numpy", columns=[name])[:][name])


# ------------------------------------------------------------------------------------ batching


class TokenBudgetBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Length-bucketed batches of at most ``max_tokens`` padded tokens (``batch size x longest``).

    Each epoch the examples are shuffled, cut into chunks of ``sort_chunk_size`` examples, sorted
    by length inside each chunk (so batches need little padding but still vary between epochs),
    packed greedily, and the batch order is shuffled.  ``sort_chunk_size=None`` sorts the whole
    data set (fairseq style); ``shuffle=False`` gives a fixed length-sorted order for evaluation.
    The plan depends only on (lengths, seed, epoch, settings), so it is identical on every rank.

    Distributed: rank ``r`` of ``num_replicas`` gets batches ``r, r+R, ...``; the batch list is
    padded by repeating its first batches (or trimmed with ``drop_last``) so every rank gets the
    same number.  Do not *also* let ``accelerator.prepare`` shard the DataLoader: either pass
    ``num_replicas``/``rank`` here and skip preparing it, or keep ``num_replicas=1`` and let
    Accelerate shard (then resume with ``accelerator.skip_first_batches``).

    Resuming: ``set_epoch(epoch, start_batch=n)`` makes the next iteration skip the first ``n``
    batches of this rank; ``state_dict()``/``load_state_dict()`` do the same through a checkpoint.
    ``state_dict()["batches_yielded"]`` counts batches *handed to the DataLoader*; DataLoader
    workers and Accelerate prefetch ahead of the training step, so the loop should overwrite it
    with the number of batches it actually consumed.  Accelerate's prepared DataLoader calls
    ``set_epoch(<its own epoch counter>)`` at the start of every iteration: call
    ``train_dataloader.set_epoch(epoch)`` (not only the sampler's) each epoch and after resuming.
    An example longer than ``max_tokens`` gets a batch of its own (with a warning), never dropped.
    """

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        max_tokens: int,
        *,
        max_sentences: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        sort_chunk_size: int | None = 10_000,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = False,
    ) -> None:
        if max_tokens < 1 or (max_sentences is not None and max_sentences < 1):
            raise ValueError(f"max_tokens and max_sentences must be >= 1, got {max_tokens} and {max_sentences}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas}), got {rank}")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.max_tokens, self.max_sentences = max_tokens, max_sentences
        self.shuffle, self.seed, self.sort_chunk_size = shuffle, seed, sort_chunk_size
        self.num_replicas, self.rank, self.drop_last = num_replicas, rank, drop_last
        self.epoch, self._start_batch, self._yielded = 0, 0, 0
        self._plan: tuple[int, list[list[int]]] | None = None
        too_long = self.lengths > max_tokens
        if too_long.any():
            logger.warning(
                "%d examples are longer than max_tokens=%d (longest: %d tokens); each gets a batch of its own",
                int(too_long.sum()), max_tokens, int(self.lengths.max()),
            )

    def set_epoch(self, epoch: int, start_batch: int | None = None) -> None:
        """Select the epoch's plan; the next iteration starts at this rank's batch ``start_batch``.

        ``start_batch=None`` keeps a pending resume offset when the epoch does not change, so the
        ``set_epoch(epoch)`` that Accelerate's DataLoader wrapper forwards after ``load_state_dict``
        does not undo the resume; a new epoch starts at batch 0.
        """
        if start_batch is None:
            start_batch = self._start_batch if epoch == self.epoch else 0
        self.epoch, self._start_batch, self._yielded = epoch, start_batch, start_batch

    def _global_batches(self) -> list[list[int]]:
        if self._plan is not None and self._plan[0] == self.epoch:
            return self._plan[1]
        n = len(self.lengths)
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.shuffle:
            order = rng.permutation(n)
            chunk = self.sort_chunk_size or max(n, 1)
            pieces = [order[i : i + chunk] for i in range(0, n, chunk)]
        else:
            pieces = [np.arange(n)]
        batches: list[list[int]] = []
        for piece in pieces:  # stable sort keeps the random order among equal lengths
            batches.extend(self._pack(piece[np.argsort(self.lengths[piece], kind="stable")]))
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        self._plan = (self.epoch, batches)
        return batches

    def _pack(self, order: np.ndarray) -> list[list[int]]:
        batches, current, longest = [], [], 0
        limit = self.max_sentences or len(order) + 1
        for index in order.tolist():
            new_longest = max(longest, int(self.lengths[index]))
            if current and ((len(current) + 1) * new_longest > self.max_tokens or len(current) >= limit):
                batches.append(current)
                current, new_longest = [], int(self.lengths[index])
            current.append(index)
            longest = new_longest
        if current:
            batches.append(current)
        return batches

    def _rank_batches(self) -> list[list[int]]:
        batches, replicas = self._global_batches(), self.num_replicas
        if replicas > 1 and batches:
            if self.drop_last:
                batches = batches[: len(batches) // replicas * replicas]
            else:
                batches = batches + [batches[i % len(batches)] for i in range(-len(batches) % replicas)]
        return batches[self.rank :: replicas]

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._rank_batches()
        start, self._start_batch = self._start_batch, 0  # the offset applies to one iteration only
        self._yielded = start
        for batch in batches[start:]:
            self._yielded += 1  # before yielding: a checkpoint taken after this step counts it
            yield list(batch)

    def __len__(self) -> int:
        """Batches of this rank in the current epoch (the whole epoch, even when resuming)."""
        return len(self._rank_batches())

    def _config(self) -> dict[str, Any]:
        return {
            "seed": self.seed, "max_tokens": self.max_tokens, "max_sentences": self.max_sentences,
            "shuffle": self.shuffle, "sort_chunk_size": self.sort_chunk_size, "num_replicas": self.num_replicas,
            "drop_last": self.drop_last, "num_examples": len(self.lengths), "total_length": int(self.lengths.sum()),
        }

    def state_dict(self) -> dict[str, Any]:
        """Epoch, batches yielded in it (see the class docstring) and the settings that fix the plan."""
        return {"epoch": self.epoch, "batches_yielded": self._yielded, **self._config()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at ``state``'s position; the settings and data must match, or the plan would differ."""
        changed = {k: (state.get(k), v) for k, v in self._config().items() if state.get(k) != v}
        if changed:
            raise ValueError(
                f"cannot resume the batch sampler exactly, settings or data changed (saved, now): {changed}; "
                f"call set_epoch({state.get('epoch')}, start_batch=0) to restart that epoch instead"
            )
        self.set_epoch(int(state["epoch"]), start_batch=int(state["batches_yielded"]))


@dataclass
class Seq2SeqCollator:
    """Pads ``input_ids`` (pad id of the tokenizer, with ``attention_mask``) and ``labels`` (-100).

    A thin wrapper over ``DataCollatorForSeq2Seq(model=None)``: the model builds its decoder inputs
    from ``labels`` itself.  Other columns (text, ``length``) are dropped because ``tokenizer.pad``
    cannot pad strings; ``return_text=True`` passes "source"/"target" through as lists of strings
    (pop them before ``model(**batch)``).
    """

    tokenizer: PreTrainedTokenizerBase
    pad_to_multiple_of: int | None = None
    return_text: bool = False

    def __post_init__(self) -> None:
        if self.tokenizer.padding_side != "right":
            raise ValueError(f"copynat needs right padding, the tokenizer pads on the {self.tokenizer.padding_side}")
        self._collator = DataCollatorForSeq2Seq(
            self.tokenizer, model=None, pad_to_multiple_of=self.pad_to_multiple_of, label_pad_token_id=-100
        )

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self._collator([{k: f[k] for k in ("input_ids", "labels") if k in f} for f in features])
        if self.return_text:
            batch["source"] = [f["source"] for f in features]
            batch["target"] = [f["target"] for f in features]
        return batch
