"""Sequence-level knowledge distillation (Kim & Rush 2016) for non-autoregressive students.

An autoregressive teacher decodes the training sources with beam search; its outputs replace the references.  The
distilled targets are less diverse ("one mode per source"), which is what makes NAT students train well (Gu et al.
2018; every NAT paper since trains on distilled data).  The result is a jsonl file with "source" and "target"
columns that ``copynat-train --train_file`` reads directly::

    copynat-distill --teacher at-model --output_file distilled.jsonl --num_beams 4      # the echo task's train split
    copynat-train --train_file distilled.jsonl --validation_file valid.jsonl --decoder_mode nat
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .arguments import DistillArguments
from .data import DataArguments, Seq2SeqCollator, example_lengths, load_raw_datasets, tokenize_datasets

logger = logging.getLogger("copynat.training")

__all__ = ["distill", "load_model_and_tokenizer"]


def load_model_and_tokenizer(path: str, device: str | None = None, trust_remote_code: bool = False):
    """A saved copynat folder (or Hub id) -> (model in eval mode on ``device``, tokenizer)."""
    import copynat  # noqa: F401  (registers the Auto classes)
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from .loop import UsageError

    looks_local = path.startswith((".", "/", "~")) or path.count("/") > 1  # a Hub id is "name" or "org/name"
    if looks_local and not Path(path).expanduser().is_dir():
        raise UsageError(f"{path}: no such model folder (give the output_dir of copynat-train, or a Hub id org/name)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        model = AutoModelForSeq2SeqLM.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise UsageError(f"could not load a model and tokenizer from {path}: {' '.join(str(err).split())}") from err
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device).eval(), tokenizer


def distill(args: DistillArguments, data_args: DataArguments, *, progress_bar: bool = True) -> dict[str, Any]:
    """Decode ``args.split`` of the data with the teacher's beam search and write ``args.output_file`` (jsonl,
    input order kept).  Returns a small summary (examples, seconds, how many targets changed)."""
    from tqdm.auto import tqdm

    from .loop import UsageError

    model, tokenizer = load_model_and_tokenizer(args.teacher, args.device, args.trust_remote_code)
    if getattr(model.config, "decoder_mode", "ar") == "nat":
        raise UsageError(f"the teacher {args.teacher} was trained with decoder_mode='nat': sequence-level "
                         "distillation needs an autoregressive teacher (decoder_mode ar or hybrid)")
    try:
        raw = load_raw_datasets(data_args)
    except Exception as err:
        raise UsageError(" ".join(str(err).split())) from err
    if args.split not in raw:
        raise UsageError(f"the data has no {args.split} split (splits: {', '.join(raw) or 'none'})")
    try:
        dataset = tokenize_datasets(type(raw)({args.split: raw[args.split]}), tokenizer, data_args)[args.split]
    except Exception as err:
        raise UsageError(" ".join(str(err).split())) from err

    max_new_tokens = args.max_new_tokens or data_args.max_target_length
    collator = Seq2SeqCollator(tokenizer)
    order = np.argsort(-example_lengths(dataset), kind="stable")  # long first: little padding, early OOM
    ids = dataset.select_columns(["input_ids"])
    outputs: list[str | None] = [None] * len(dataset)
    start = time.perf_counter()
    with torch.no_grad(), tqdm(total=len(dataset), desc="copynat-distill", unit="sent",
                               disable=not progress_bar) as bar:
        for begin in range(0, len(order), args.batch_size):
            indices = order[begin:begin + args.batch_size].tolist()
            batch = collator([{"input_ids": row} for row in ids[indices]["input_ids"]])
            limit = min(max_new_tokens, 2 * int(batch["attention_mask"].sum(1).max()) + 10)
            generated = model.generate(input_ids=batch["input_ids"].to(model.device),
                                       attention_mask=batch["attention_mask"].to(model.device),
                                       num_beams=args.num_beams, do_sample=False, max_new_tokens=limit)
            for index, text in zip(indices, tokenizer.batch_decode(generated, skip_special_tokens=True)):
                outputs[index] = text
            bar.update(len(indices))
    seconds = time.perf_counter() - start

    sources, references = list(dataset["source"]), list(dataset["target"])
    path = Path(args.output_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as handle:
        for source, target, reference in zip(sources, outputs, references):
            row = {"source": source, "target": target}
            if args.keep_original:
                row["original_target"] = reference
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    changed = sum(o != r for o, r in zip(outputs, references))
    empty = sum(not (o or "").strip() for o in outputs)
    if empty:
        logger.warning("%d teacher outputs are empty; copynat-train skips blank rows of %s", empty, path)
    return {"output_file": str(path), "num_examples": len(outputs), "changed_targets": changed,
            "empty_targets": empty, "seconds": round(seconds, 2),
            "sentences_per_second": round(len(outputs) / max(seconds, 1e-9), 1)}
