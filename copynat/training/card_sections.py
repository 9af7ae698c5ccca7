"""What a model card says about a run, section by section: the data, the model, the results tables, usage,
hyper-parameters, speed, limitations and files. Each function reads the run's files (as dicts) and returns what the
template (``templates/model_card.md``) renders; :mod:`copynat.training.model_card` assembles them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

METRICS = (("bleu", "BLEU"), ("chrf", "chrF"), ("exact_match", "exact match"), ("entity_copy_rate", "entity copy"))
ECHO_SOURCE = "embedded echo task"


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def decoding_label(name: str, kwargs: dict) -> str:
    if kwargs.get("non_autoregressive"):
        iterations = kwargs.get("nat_iterations", 1)
        label = "NAT, one parallel pass" if iterations == 1 else f"NAT mask-predict, {iterations} iterations"
        if kwargs.get("length_beam", 1) > 1:
            label += f", length beam {kwargs['length_beam']}"
        if kwargs.get("rescore_with_ar"):
            label += ", AT rescoring"
        return label
    if kwargs.get("do_sample"):
        return "AT sampling"
    beams = kwargs.get("num_beams", 1)
    return "AT greedy" if beams == 1 else f"AT beam search, {beams} beams"


def kwargs_text(kwargs: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) or "(defaults)"


def is_hub_id(value: str | None) -> bool:
    return bool(value) and not Path(value).exists() and re.fullmatch(r"[\w.-]+(/[\w.-]+)?", value) is not None


def data_info(results: dict | None, data_args: dict) -> dict[str, Any]:
    """Where the data came from: kind (echo | hub | files), description, Hub dataset id, config, languages."""
    source = (results or {}).get("data", {}).get("source")
    name = data_args.get("dataset_name")
    files = {split: data_args.get(f"{split}_file") for split in ("train", "validation", "test")}
    files = {split: path for split, path in files.items() if path}
    if isinstance(source, dict) and not files:
        files = source
    src, tgt = data_args.get("source_lang"), data_args.get("target_lang")
    info: dict[str, Any] = {"source_lang": src, "target_lang": tgt, "config": data_args.get("dataset_config_name")}
    if source == ECHO_SOURCE or (data_args and not name and not files):  # train() without data: the echo task
        info.update(kind="echo", id="copynat-echo", name="copynat echo task",
                    description="copynat's embedded echo task (`copynat.data.make_echo_dataset`: short English "
                                "and Chinese chat turns whose replies must repeat names and places in Latin, CJK, "
                                "kana, Hangul, Cyrillic, Greek, Arabic and other scripts, numbers, times, codes, "
                                "e-mail addresses and URLs; the test entities never occur in training, and the "
                                "`test_ood` split holds entity families training never sees: held-out scripts, "
                                "longer names and numbers, new shapes, real names and places)")
    elif name:
        link = f"[{name}](https://huggingface.co/datasets/{name})" if is_hub_id(name) else f"`{name}`"
        config = f" (configuration `{info['config']}`)" if info["config"] else ""
        info.update(kind="hub" if is_hub_id(name) else "local", id=name, name=name,
                    description=f"the data set {link}{config}")
    elif files:
        first = Path(next(iter(files.values())))
        stem = first.parent.name or first.stem
        info.update(kind="files", id=stem, name=stem,
                    description="local data files (" + ", ".join(f"{s}: `{Path(p).name}`" for s, p in files.items())
                                + ")")
    else:
        info.update(kind="unknown", id="unknown", name="unknown data", description="data not recorded by the run")
    if src and tgt:
        info["description"] += f", {src} → {tgt}"
    info["files"] = files
    return info


def first_source(data_args: dict, files: dict[str, str]) -> str | None:
    """The first source sentence of the run's test (or validation, train) data, when the file is still readable."""
    column, lang = data_args.get("source_column") or "source", data_args.get("source_lang")
    for split in ("test", "validation", "train"):
        path = files.get(split)
        if not path:
            continue
        path = Path(path)
        candidates = [path] + ([Path(f"{path}.{lang}")] if lang else [])
        for candidate in candidates:
            try:
                if not candidate.is_file():
                    continue
                with open(candidate, encoding="utf-8") as handle:
                    first = handle.readline()
                if candidate.suffix in (".jsonl", ".json"):
                    row = json.loads(first)
                    value = row.get(column)
                    if value is None and isinstance(row.get("translation"), dict):
                        value = row["translation"].get(lang)
                elif candidate.suffix in (".csv", ".tsv"):
                    import csv

                    with open(candidate, encoding="utf-8", newline="") as handle:
                        reader = csv.DictReader(handle, delimiter="\t" if candidate.suffix == ".tsv" else ",")
                        value = next(reader, {}).get(column)
                elif candidate != path or lang is None:
                    value = first.rstrip("\n")
                else:
                    value = None
                if isinstance(value, str) and value.strip():
                    return value.strip()
            except (OSError, ValueError, UnicodeDecodeError):
                continue
    return None


def eval_results_from_results(results: dict, *, task_type: str, dataset_type: str, dataset_name: str,
                              dataset_config: str | None = None) -> list:
    """One ``huggingface_hub.EvalResult`` per split x decoding x metric of ``results.json``, values unchanged.

    ``metric_config`` is the decoding's name in ``results.json`` (``greedy``, ``beam4``, ``nat1``, ``nat4``, ...),
    ``metric_name`` says it in words ("BLEU (AT greedy)"), ``dataset_split`` is the split.
    """
    from huggingface_hub import EvalResult

    task_name = {"translation": "Translation"}.get(task_type, "Text-to-text generation")
    decodings = results.get("eval_decoding") or {}
    out = []
    for split, split_metrics in (results.get("metrics") or {}).items():
        for decoding, kwargs in decodings.items():
            scores = split_metrics.get(decoding)
            if not isinstance(scores, dict):
                continue
            label = decoding_label(decoding, kwargs)
            for key, title in METRICS:
                value = scores.get(key)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    out.append(EvalResult(
                        task_type=task_type, task_name=task_name, dataset_type=dataset_type,
                        dataset_name=dataset_name, dataset_config=dataset_config, dataset_split=split,
                        metric_type=key, metric_value=value, metric_name=f"{title} ({label})",
                        metric_config=decoding))
    return out


def limitations(model: dict, data: dict, data_args: dict, train_args: dict, results: dict | None) -> list[str]:
    items = []
    if data["kind"] == "echo":
        items.append("Trained on a small synthetic task: it demonstrates the copy mechanism (repeating unseen names, "
                     "numbers and codes of any script) and is not a general chatbot, translator or language model: "
                     "it answers only sentences shaped like its templates.")
    else:
        items.append(f"Trained only on {data['description']}; expect lower quality on other domains, styles and "
                     "languages.")
    if model["nat"] and model["ar"]:
        items.append("Non-autoregressive decoding is faster but usually scores below autoregressive decoding (compare "
                     "the rows of the results table)" + ("." if model["ctc"] else
                                                         "; mask-predict iterations close part of the gap."))
    elif model["ctc"]:
        items.append("Non-autoregressive decoding can repeat or drop words: CTC decodes in one parallel pass, with no "
                     "refinement; a larger blank penalty (`ctc_blank_penalty`) lengthens outputs that come out short.")
    elif model["nat"]:
        items.append("Non-autoregressive decoding can repeat or drop words when the predicted length is wrong; "
                     "mask-predict iterations and a length beam reduce this.")
    if model["copy_mechanism"]:
        items.append("The copy mechanism can repeat any source token; it may also copy source words that should have "
                     "been rewritten or translated.")
    lengths = [data_args.get("max_source_length"), data_args.get("max_target_length")]
    if all(isinstance(n, int) for n in lengths):
        items.append(f"Training cut sources to {lengths[0]:,} and targets to {lengths[1]:,} tokens; longer inputs are "
                     "outside what the model has seen (it supports at most "
                     f"{model['max_position_embeddings']:,} positions).")
    seed = train_args.get("seed")
    if results is not None:
        items.append("The scores come from a single training run" + (f" (seed {seed})" if seed is not None else "")
                     + ", not an average over runs, and were measured by copynat's own evaluation (corpus sacreBLEU "
                       "on detokenized outputs).")
    return items


FILE_ROLES = {
    "model.safetensors": "the weights",
    "config.json": "the architecture (`auto_map` points to the modeling code below)",
    "generation_config.json": "default `generate()` settings",
    "tokenizer.json": "the byte-level tokenizer (`tokenizers`)",
    "tokenizer_config.json": "tokenizer settings and special tokens",
    "special_tokens_map.json": "special tokens",
    "configuration_copynat.py": "modeling code for `trust_remote_code=True`: the configuration",
    "modeling_copynat.py": "modeling code for `trust_remote_code=True`: the model",
    "generation_copynat.py": "modeling code for `trust_remote_code=True`: what copynat adds to generate()",
    "parallel_decoding.py": "modeling code for `trust_remote_code=True`: non-autoregressive decoding",
    "drafted_decoding.py": "modeling code for `trust_remote_code=True`: drafted decoding (parallel draft, AT check)",
    "transformer_blocks.py": "modeling code for `trust_remote_code=True`: attention, positions, layers, masks",
    "copy_generator.py": "modeling code for `trust_remote_code=True`: the copy mechanism",
    "utf8_validity.py": "modeling code for `trust_remote_code=True`: generate() never breaks a UTF-8 character",
    "output_head.py": "modeling code for `trust_remote_code=True`: the output head (vocabulary + copy mixture)",
    "parallel_head.py": "modeling code for `trust_remote_code=True`: the length predictor / CTC and NAT losses",
    "monotonic_alignment.py": "modeling code for `trust_remote_code=True`: guided attention, monotonic decoding",
    "encoder_heads.py": "modeling code for `trust_remote_code=True`: the sequence and token classifiers",
    "copy_completion.py": "modeling code for `trust_remote_code=True`: a copied word is completed whole",
    "results.json": "the measured scores and speed (every number of this card)",
    "metrics.jsonl": "the training log (loss, learning rate, tokens/s, evaluations)",
    "training_args.json": "all arguments of the training run",
    "training_curves.png": "loss and BLEU during training",
    "README.md": "this card",
}


def file_list(folder: Path) -> list[tuple[str, str]]:
    from .model_folder import publishable_files

    names = set(publishable_files(folder, check=False)) | {"README.md"}
    out = []
    for name in sorted(names, key=lambda n: (list(FILE_ROLES).index(n) if n in FILE_ROLES else 99, n)):
        if name in FILE_ROLES:
            out.append((name, FILE_ROLES[name]))
        elif name.startswith("test_predictions."):
            out.append((name, "the test outputs of the decoding that selected the model, one per line"))
        elif name.startswith("model-") and name.endswith(".safetensors") or name.endswith(".index.json"):
            out.append((name, "the weights (sharded)"))
        else:
            out.append((name, "part of the model"))
    return out



def model_section(config: dict, generation: dict, base_model: str | None,
                  num_parameters: int | None) -> dict[str, Any]:
    """The model's kind (decoders, copy head, CTC) and its table of settings."""
    decoder_mode = config.get("decoder_mode", "ar")
    nat = decoder_mode in ("nat", "hybrid")
    rows = [(name, fmt(config.get(key))) for name, key in (
        ("vocabulary", "vocab_size"), ("d_model", "d_model"), ("positions", "position_embedding_type"),
        ("pre-LN (`normalize_before`)", "normalize_before"), ("decoder mode", "decoder_mode"),
        ("copy mechanism", "use_copy_mechanism"))]
    rows[2:2] = [(label, f"{fmt(config.get('encoder_' + key))} / {fmt(config.get('decoder_' + key))}")
                 for label, key in (("encoder / decoder layers", "layers"),
                                    ("attention heads (encoder / decoder)", "attention_heads"),
                                    ("feed-forward size (encoder / decoder)", "ffn_dim"))]
    if nat:
        rows += [("length prediction", fmt(config.get("length_prediction"))),
                 ("NAT decoder inputs", fmt(config.get("nat_decoder_inputs")))]
    if config.get("encoder_attention_window"):
        rows.append(("truncated encoder attention window", fmt(config["encoder_attention_window"])))
    rows += [("dropout", fmt(config.get("dropout"))), ("label smoothing", fmt(config.get("label_smoothing"))),
             ("parameters", fmt(num_parameters))]
    if base_model:
        rows.append(("fine-tuned from", f"`{base_model}`"))
    ctc = nat and config.get("nat_training") == "ctc"
    if ctc:  # no length predictor: the rows say how the length comes about instead
        rows[-2:] = [("NAT training", f"CTC over {fmt(config.get('ctc_upsample_ratio'))}x source positions"),
                     ("CTC blank penalty (generation config)", fmt(generation.get("ctc_blank_penalty", 0.0)))]
    return dict(num_parameters=fmt(num_parameters), copy_mechanism=bool(config.get("use_copy_mechanism")), nat=nat,
                ar=decoder_mode in ("ar", "hybrid"), decoder_mode=decoder_mode, ctc=ctc, rows=rows,
                max_position_embeddings=config.get("max_position_embeddings") or 0)


def results_tables(results: dict | None) -> tuple[list[dict], bool]:
    """One table per split (a row per decoding), and whether any row has an entity copy rate."""
    tables, has_entity_copy = [], False
    decodings = (results or {}).get("eval_decoding") or {}
    for split, split_metrics in ((results or {}).get("metrics") or {}).items():
        rows = []
        for name, kwargs in decodings.items():
            scores = split_metrics.get(name)
            if not isinstance(scores, dict):
                continue
            has_entity_copy |= "entity_copy_rate" in scores
            rows.append(dict(label=decoding_label(name, kwargs), kwargs=kwargs_text(kwargs),
                             **{key: fmt(scores.get(key)) for key, _ in METRICS},
                             sentences_per_second=fmt(scores.get("sentences_per_second"), 1)))
        if rows:
            loss = split_metrics.get("loss")
            first = split_metrics.get(next(iter(decodings)), {}) if decodings else {}
            categories = [(key.split("/", 1)[1], fmt(value)) for key, value in sorted(first.items())
                          if key.startswith("entity_copy_rate/")]
            tables.append(dict(split=split, rows=rows, num_examples=fmt(split_metrics.get("num_examples")),
                               loss=fmt(loss, 3) if isinstance(loss, (int, float)) else None,
                               categories=categories, first=rows[0]["label"]))
    return tables, has_entity_copy


def selection_text(results: dict | None) -> str:
    """Which model the scores are of: the best step by the selection metric, or the last one."""
    if not results:
        return ""
    chosen, training = results.get("selection") or {}, results.get("training") or {}
    if chosen.get("best_step") is not None:
        return (f"best `{chosen.get('metric')}` = {fmt(chosen.get('best_value'))} at step "
                f"{fmt(chosen.get('best_step'))} of {fmt(training.get('steps'))}")
    return f"the model after {fmt(training.get('steps'))} steps"


def usage_section(example: str | None, data: dict, data_args: dict, decodings: dict,
                  generation: dict) -> dict[str, Any]:
    """The usage snippet's input and generate() arguments (the run's own decodings where it has them)."""
    example = example or first_source(data_args, data["files"])
    if example is None and data["kind"] == "echo":
        from copynat.data import make_echo_examples

        example = make_echo_examples(1, "test")[0]["source"]
    beams = [kw.get("num_beams") for kw in decodings.values() if kw.get("num_beams", 1) > 1]
    iterations = [kw.get("nat_iterations") for kw in decodings.values()
                  if kw.get("non_autoregressive") and kw.get("nat_iterations", 1) > 1]
    max_new = generation.get("max_new_tokens")
    return dict(example_literal=json.dumps(example or "Your input text.", ensure_ascii=False),
                num_beams=beams[0] if beams else generation.get("num_beams") or 4,
                nat_iterations=iterations[0] if iterations else 4,
                max_new_tokens=f", max_new_tokens={max_new}" if max_new else "")


def data_section(data: dict, data_args: dict, results: dict | None) -> dict[str, str]:
    num_examples = (results or {}).get("data", {}).get("num_examples") or {}
    short = {"echo": "copynat's echo task", "files": "local data files"}.get(data["kind"], data["name"])
    if data["source_lang"] and data["target_lang"]:
        short += f" ({data['source_lang']} → {data['target_lang']})"
    return dict(description=data["description"], short=short,
                splits=", ".join(f"{fmt(n)} {split} examples" for split, n in num_examples.items()),
                lengths=(f"{fmt(data_args['max_source_length'])} source and "
                         f"{fmt(data_args['max_target_length'])} target tokens")
                if data_args.get("max_source_length") else "")


def hyperparameter_rows(run: dict, config: dict, decodings: dict) -> list[tuple[str, str]]:
    """The training arguments a reader compares runs by (training_args.json has all of them)."""
    train_args, model_args, resolved = run.get("train_args") or {}, run.get("model_args") or {}, run.get("resolved") or {}
    if not train_args:
        return []
    rows = [
        ("updates (`max_steps`)", fmt(resolved.get("max_steps") or train_args.get("max_steps"))),
        ("tokens per batch and process (`max_tokens`)", fmt(train_args.get("max_tokens"))),
        ("gradient accumulation", fmt(train_args.get("gradient_accumulation_steps"))),
        ("optimizer", f"AdamW (betas {train_args.get('adam_beta1')}, {train_args.get('adam_beta2')}; "
                      f"weight decay {train_args.get('weight_decay')})"),
        ("peak learning rate", f"{train_args.get('learning_rate')}"),
        ("schedule", f"{train_args.get('lr_scheduler')}, {fmt(train_args.get('warmup_steps'))} warm-up steps"),
        ("gradient clipping", f"{train_args.get('max_grad_norm')}"),
        ("label smoothing", fmt(config.get("label_smoothing"))),
        ("scheduled sampling", f"{train_args.get('scheduled_sampling')}"),
        ("mixed precision", f"{resolved.get('mixed_precision') or train_args.get('mixed_precision')}"),
        ("evaluation decodings", ", ".join(resolved.get("eval_decoding") or list(decodings)) or "-"),
        ("seed", f"{train_args.get('seed')}"),
    ]
    if (model_args.get("tokenizer_model") and not model_args.get("tokenizer_name_or_path")
            and not model_args.get("model_name_or_path")):
        rows.append(("tokenizer", f"byte-level {model_args['tokenizer_model']}, {fmt(config.get('vocab_size'))} "
                                  "tokens, trained on the training split (source + target)"))
    return rows


def speed_rows(results: dict | None) -> list[tuple[str, str]]:
    """The training run's speed and how it ended, from results.json."""
    if not results or not results.get("training"):
        return []
    t = results["training"]
    minutes = t.get("train_seconds") / 60 if isinstance(t.get("train_seconds"), (int, float)) else None
    rows = [("optimizer updates", fmt(t.get("steps"))), ("epochs", fmt(t.get("epochs"))),
            ("training time (evaluation excluded)", f"{fmt(t.get('train_seconds'), 1)} s"
                                                    + (f" ({fmt(minutes, 1)} min)" if minutes and minutes >= 1 else "")),
            ("wall time of the whole run", f"{fmt(t.get('total_seconds'), 1)} s"),
            ("updates per second", fmt(t.get("steps_per_second"))),
            ("training tokens per second (source + target)", fmt(t.get("tokens_per_second"), 0)),
            ("training tokens", fmt(t.get("train_tokens"))),
            ("processes x threads", f"{fmt(t.get('num_processes'))} x {fmt(t.get('num_threads'))}"),
            ("mixed precision", fmt(t.get("mixed_precision"))),
            ("stopped because", fmt(t.get("stop_reason")))]
    for key in ("device", "hardware"):
        if t.get(key):
            rows.append(("hardware", fmt(t[key])))
    if t.get("resumed_from"):
        rows.append(("resumed", "yes (from a checkpoint)"))
    return rows
