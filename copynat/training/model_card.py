"""Model cards (the Hub's ``README.md``) for copynat run folders, rendered from the run's own files.

``write_model_card(output_dir)`` reads what the training loop left in ``output_dir``:

* ``results.json`` (``copynat-results/1``): scores per split and decoding, training speed, data sizes;
* ``config.json``: the architecture (decoder mode, copy mechanism, length predictor, sizes);
* ``generation_config.json``: ``max_new_tokens`` of the usage snippet;
* ``training_args.json``: data and optimisation arguments (languages, data set, learning rate, ...);

and renders ``model_cards/template.md`` (jinja2) into ``output_dir/README.md``: YAML metadata through
``huggingface_hub.ModelCardData`` (``library_name: transformers``, ``pipeline_tag``, ``language``, ``license``,
``datasets``, ``metrics``, ``tags`` and a ``model-index`` with one ``EvalResult`` per split x decoding x metric, the
exact values of ``results.json``), then results tables, usage (``AutoModelForSeq2SeqLM`` + ``generate()``, with
``import copynat`` and with ``trust_remote_code=True``), data, hyper-parameters, measured speed and limitations.
Every number of a card comes from those files; nothing is typed in.  Rendering is offline (no Hub call).

Options (license, languages, data set id, a note, the repo id of the usage snippet) are stored in a hidden comment
of the card, so that refreshing a card (``copynat-push`` does it before pushing) keeps them.

Reference cards: ``python -m copynat.training.model_card RUN_DIR --name NAME`` writes ``model_cards/NAME.md``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Sequence

__all__ = [
    "CARD_MARKER",
    "MODEL_CARDS_DIR",
    "TEMPLATE_PATH",
    "build_model_card",
    "card_main",
    "eval_results_from_results",
    "is_copynat_card",
    "read_card_options",
    "write_model_card",
    "write_reference_card",
]

#: ``model_cards/`` of a source checkout (the template and the reference cards).
MODEL_CARDS_DIR = Path(__file__).resolve().parents[2] / "model_cards"
TEMPLATE_PATH = MODEL_CARDS_DIR / "template.md"
#: First word of the hidden comment that marks a card written by this module (and stores its options).
CARD_MARKER = "copynat-model-card"
_MARKER_RE = re.compile(r"<!--\s*" + CARD_MARKER + r"\s*(\{.*?\})\s*-->", re.S)
#: Options kept in the card's marker comment (see ``build_model_card``).
_OPTIONS = ("repo_id", "model_name", "license", "language", "datasets", "dataset_id", "dataset_name",
            "pipeline_tag", "note", "example_input")
_METRICS = (("bleu", "BLEU"), ("chrf", "chrF"), ("exact_match", "exact match"), ("entity_copy_rate", "entity copy"))
_ECHO_SOURCE = "embedded echo task"


# ------------------------------------------------------------------------------------------------ reading the run


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise ValueError(f"could not read {path}: {err}") from err


def _count_safetensors_parameters(folder: Path) -> int | None:
    """Parameters stored in model.safetensors, from its JSON header (no torch needed)."""
    path = folder / "model.safetensors"
    try:
        with open(path, "rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(size))
    except (OSError, ValueError):
        return None
    total = 0
    for name, info in header.items():
        if name != "__metadata__":
            count = 1
            for dim in info["shape"]:
                count *= dim
            total += count
    return total


def read_card_options(readme: str | Path) -> dict[str, Any] | None:
    """The options stored in a card written by this module; None for any other README (or none)."""
    try:
        text = Path(readme).read_text(encoding="utf-8")
    except OSError:
        return None
    match = _MARKER_RE.search(text)
    if match is None:
        return None
    try:
        options = json.loads(match.group(1))
    except ValueError:
        return {}
    return {k: v for k, v in options.items() if k in _OPTIONS} if isinstance(options, dict) else {}


def is_copynat_card(readme: str | Path) -> bool:
    """True when ``readme`` was written by copynat (so it may be regenerated without losing hand edits)."""
    return read_card_options(readme) is not None


# ------------------------------------------------------------------------------------------------ describing it


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _decoding_label(name: str, kwargs: dict) -> str:
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


def _kwargs_text(kwargs: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) or "(defaults)"


def _is_hub_id(value: str | None) -> bool:
    return bool(value) and not Path(value).exists() and re.fullmatch(r"[\w.-]+(/[\w.-]+)?", value) is not None


def _data_info(results: dict | None, data_args: dict) -> dict[str, Any]:
    """Where the data came from: kind (echo | hub | files), description, Hub dataset id, config, languages."""
    source = (results or {}).get("data", {}).get("source")
    name = data_args.get("dataset_name")
    files = {split: data_args.get(f"{split}_file") for split in ("train", "validation", "test")}
    files = {split: path for split, path in files.items() if path}
    if isinstance(source, dict) and not files:
        files = source
    src, tgt = data_args.get("source_lang"), data_args.get("target_lang")
    info: dict[str, Any] = {"source_lang": src, "target_lang": tgt, "config": data_args.get("dataset_config_name")}
    if source == _ECHO_SOURCE or (data_args and not name and not files):  # train() without data: the echo task
        info.update(kind="echo", id="copynat-echo", name="copynat echo task",
                    description="copynat's embedded echo task (`copynat.data.make_echo_dataset`: short English "
                                "and Chinese chat turns whose replies must repeat names and places in Latin, CJK, "
                                "kana, Hangul, Cyrillic, Greek, Arabic and other scripts, numbers, times, codes, "
                                "e-mail addresses and URLs; the test entities never occur in training, and the "
                                "`test_ood` split holds entity families training never sees: held-out scripts, "
                                "longer names and numbers, new shapes, real names and places)")
    elif name:
        link = f"[{name}](https://huggingface.co/datasets/{name})" if _is_hub_id(name) else f"`{name}`"
        config = f" (configuration `{info['config']}`)" if info["config"] else ""
        info.update(kind="hub" if _is_hub_id(name) else "local", id=name, name=name,
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


def _first_source(data_args: dict, files: dict[str, str]) -> str | None:
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
            label = _decoding_label(decoding, kwargs)
            for key, title in _METRICS:
                value = scores.get(key)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    out.append(EvalResult(
                        task_type=task_type, task_name=task_name, dataset_type=dataset_type,
                        dataset_name=dataset_name, dataset_config=dataset_config, dataset_split=split,
                        metric_type=key, metric_value=value, metric_name=f"{title} ({label})",
                        metric_config=decoding))
    return out


def _limitations(model: dict, data: dict, data_args: dict, train_args: dict, results: dict | None) -> list[str]:
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


_FILE_ROLES = {
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


def _files(folder: Path) -> list[tuple[str, str]]:
    from .model_folder import publishable_files

    names = set(publishable_files(folder, check=False)) | {"README.md"}
    out = []
    for name in sorted(names, key=lambda n: (list(_FILE_ROLES).index(n) if n in _FILE_ROLES else 99, n)):
        if name in _FILE_ROLES:
            out.append((name, _FILE_ROLES[name]))
        elif name.startswith("test_predictions."):
            out.append((name, "the test outputs of the decoding that selected the model, one per line"))
        elif name.startswith("model-") and name.endswith(".safetensors") or name.endswith(".index.json"):
            out.append((name, "the weights (sharded)"))
        else:
            out.append((name, "part of the model"))
    return out


# ------------------------------------------------------------------------------------------------ the card


def _template_text(template: str | Path | None) -> str:
    if template is not None:
        return Path(template).read_text(encoding="utf-8")
    if TEMPLATE_PATH.is_file():
        return TEMPLATE_PATH.read_text(encoding="utf-8")
    return _FALLBACK_TEMPLATE  # an installed wheel has no model_cards/ folder


def _marker(options: dict[str, Any]) -> str:
    stored = {k: v for k, v in options.items() if k in _OPTIONS and v is not None}
    payload = json.dumps(stored, ensure_ascii=False, sort_keys=True).replace(">", "\\u003e").replace("--", "-\\u002d")
    return (f"<!-- {CARD_MARKER} {payload} -->\n<!-- Written by copynat.training.model_card from this folder's "
            "results.json, config.json, generation_config.json and training_args.json: regenerate it with "
            "`python -m copynat.training.model_card FOLDER` instead of editing its numbers. -->")


def build_model_card(output_dir: str | Path, results: dict | None = None, *, repo_id: str | None = None,
                     model_name: str | None = None, license: str | None = None,
                     language: str | list[str] | None = None, datasets: str | list[str] | None = None,
                     dataset_id: str | None = None, dataset_name: str | None = None, pipeline_tag: str | None = None,
                     note: str | None = None, example_input: str | None = None,
                     template: str | Path | None = None, keep_options: bool = True,
                     previous: str | Path | None = None):
    """The ``huggingface_hub.ModelCard`` of a copynat run folder (nothing is written; see ``write_model_card``).

    ``results``: the dict ``train()`` returned (default: ``output_dir/results.json``; a folder without it gets a card
    without scores).  Options (None = the stored option of an existing copynat card when ``keep_options``, else a
    value derived from the run):

    * ``repo_id``: the Hub id the usage snippet loads (default: ``path/to/<folder name>``);
    * ``model_name``: the title and the ``model-index`` name (default: the repo name or the folder name);
    * ``license`` (default ``train_args.hub_license`` if the run has one, else ``apache-2.0``);
    * ``language``: default ``[source_lang, target_lang]`` of the data arguments (``en`` for the echo task);
    * ``datasets``: Hub data set ids of the metadata (default: ``dataset_name`` of the run when it is a Hub id);
    * ``dataset_id`` / ``dataset_name``: ``model-index`` data set type / display name (default: from the data args);
    * ``pipeline_tag``: ``translation`` when the data has two different languages, else ``text2text-generation``;
    * ``note``: a paragraph shown first (e.g. "a tiny demonstration run");
    * ``example_input``: the input of the usage snippet (default: the first source of the run's data, if readable);
    * ``template``: a jinja2 template path (default ``model_cards/template.md``);
    * ``previous``: the earlier card whose stored options are kept (default ``output_dir/README.md``).
    """
    import jinja2
    from huggingface_hub import ModelCard, ModelCardData

    folder = Path(output_dir)
    config = _read_json(folder / "config.json")
    if config is None:
        raise FileNotFoundError(f"{folder} has no config.json: not a saved copynat model folder")
    if results is None:
        results = _read_json(folder / "results.json")
    generation = _read_json(folder / "generation_config.json") or {}
    run = _read_json(folder / "training_args.json") or {}
    data_args, train_args = run.get("data_args") or {}, run.get("train_args") or {}
    model_args, resolved = run.get("model_args") or {}, run.get("resolved") or {}

    options = dict(repo_id=repo_id, model_name=model_name, license=license, language=language, datasets=datasets,
                   dataset_id=dataset_id, dataset_name=dataset_name, pipeline_tag=pipeline_tag, note=note,
                   example_input=example_input)
    stored = read_card_options(previous or folder / "README.md") if keep_options else None
    for key, value in (stored or {}).items():
        if options.get(key) is None:
            options[key] = value

    data = _data_info(results, data_args)
    languages = options["language"]
    if languages is None:
        pair = [lang for lang in (data["source_lang"], data["target_lang"]) if lang]
        languages = list(dict.fromkeys(pair)) or (["en"] if data["kind"] == "echo" else None)
    elif isinstance(languages, str):
        languages = [languages]
    tag = options["pipeline_tag"] or (
        "translation" if data["source_lang"] and data["target_lang"] and data["source_lang"] != data["target_lang"]
        else "text2text-generation")
    hub_datasets = options["datasets"]
    if hub_datasets is None and data["kind"] == "hub":
        hub_datasets = [data["id"]]
    elif isinstance(hub_datasets, str):
        hub_datasets = [hub_datasets]
    title = options["model_name"] or (options["repo_id"] or folder.resolve().name).split("/")[-1]
    license_id = options["license"] or train_args.get("hub_license") or "apache-2.0"
    base_model = model_args.get("model_name_or_path")

    decoder_mode = config.get("decoder_mode", "ar")
    nat, ar = decoder_mode in ("nat", "hybrid"), decoder_mode in ("ar", "hybrid")
    copy = bool(config.get("use_copy_mechanism"))
    tags = ["copynat", "seq2seq"]
    if copy:
        tags += ["pointer-generator", "copy-mechanism"]
    if nat:
        tags.append("non-autoregressive")
    tags.append("custom_code")

    eval_results = None
    if results and results.get("metrics"):
        eval_results = eval_results_from_results(
            results, task_type=tag, dataset_type=options["dataset_id"] or data["id"],
            dataset_name=options["dataset_name"] or data["name"],
            dataset_config=data["config"] or (f"{data['source_lang']}-{data['target_lang']}"
                                              if data["source_lang"] and data["target_lang"] else None)) or None
    card_data = ModelCardData(
        library_name="transformers", pipeline_tag=tag, language=languages, license=license_id,
        datasets=hub_datasets, metrics=["bleu", "chrf", "exact_match"], tags=tags,
        base_model=base_model if _is_hub_id(base_model) else None,
        model_name=title if eval_results else None, eval_results=eval_results)

    # ---- the body
    num_parameters = (results or {}).get("model", {}).get("num_parameters") or _count_safetensors_parameters(folder)
    model_rows = [(name, _fmt(config.get(key))) for name, key in (
        ("vocabulary", "vocab_size"), ("d_model", "d_model"), ("encoder / decoder layers", None),
        ("attention heads (encoder / decoder)", None), ("feed-forward size (encoder / decoder)", None),
        ("positions", "position_embedding_type"), ("pre-LN (`normalize_before`)", "normalize_before"),
        ("decoder mode", "decoder_mode"), ("copy mechanism", "use_copy_mechanism")) if key]
    model_rows[2:2] = [(label, f"{_fmt(config.get('encoder_' + key))} / {_fmt(config.get('decoder_' + key))}")
                       for label, key in (("encoder / decoder layers", "layers"),
                                          ("attention heads (encoder / decoder)", "attention_heads"),
                                          ("feed-forward size (encoder / decoder)", "ffn_dim"))]
    if nat:
        model_rows += [("length prediction", _fmt(config.get("length_prediction"))),
                       ("NAT decoder inputs", _fmt(config.get("nat_decoder_inputs")))]
    if config.get("encoder_attention_window"):
        model_rows.append(("truncated encoder attention window", _fmt(config["encoder_attention_window"])))
    model_rows += [("dropout", _fmt(config.get("dropout"))), ("label smoothing", _fmt(config.get("label_smoothing"))),
                   ("parameters", _fmt(num_parameters))]
    if base_model:
        model_rows.append(("fine-tuned from", f"`{base_model}`"))
    ctc = nat and config.get("nat_training") == "ctc"
    if ctc:  # no length predictor: the rows say how the length comes about instead
        model_rows[-2:] = [("NAT training", f"CTC over {_fmt(config.get('ctc_upsample_ratio'))}x source positions"),
                           ("CTC blank penalty (generation config)", _fmt(generation.get("ctc_blank_penalty", 0.0)))]
    model = dict(num_parameters=_fmt(num_parameters), copy_mechanism=copy, nat=nat, ar=ar, decoder_mode=decoder_mode,
                 ctc=ctc, rows=model_rows, max_position_embeddings=config.get("max_position_embeddings") or 0)

    results_tables, has_entity_copy, selection = [], False, ""
    decodings = (results or {}).get("eval_decoding") or {}
    for split, split_metrics in ((results or {}).get("metrics") or {}).items():
        rows = []
        for name, kwargs in decodings.items():
            scores = split_metrics.get(name)
            if not isinstance(scores, dict):
                continue
            has_entity_copy |= "entity_copy_rate" in scores
            rows.append(dict(label=_decoding_label(name, kwargs), kwargs=_kwargs_text(kwargs),
                             **{key: _fmt(scores.get(key)) for key, _ in _METRICS},
                             sentences_per_second=_fmt(scores.get("sentences_per_second"), 1)))
        if rows:
            loss = split_metrics.get("loss")
            first = split_metrics.get(next(iter(decodings)), {}) if decodings else {}
            categories = [(key.split("/", 1)[1], _fmt(value)) for key, value in sorted(first.items())
                          if key.startswith("entity_copy_rate/")]
            results_tables.append(dict(split=split, rows=rows, num_examples=_fmt(split_metrics.get("num_examples")),
                                       loss=_fmt(loss, 3) if isinstance(loss, (int, float)) else None,
                                       categories=categories, first=rows[0]["label"]))
    if results:
        chosen, training = results.get("selection") or {}, results.get("training") or {}
        if chosen.get("best_step") is not None:
            selection = (f"best `{chosen.get('metric')}` = {_fmt(chosen.get('best_value'))} at step "
                         f"{_fmt(chosen.get('best_step'))} of {_fmt(training.get('steps'))}")
        else:
            selection = f"the model after {_fmt(training.get('steps'))} steps"

    example = options["example_input"] or _first_source(data_args, data["files"])
    if example is None and data["kind"] == "echo":
        from copynat.data import make_echo_examples

        example = make_echo_examples(1, "test")[0]["source"]
    beams = [kw.get("num_beams") for kw in decodings.values() if kw.get("num_beams", 1) > 1]
    iterations = [kw.get("nat_iterations") for kw in decodings.values()
                  if kw.get("non_autoregressive") and kw.get("nat_iterations", 1) > 1]
    max_new = generation.get("max_new_tokens")
    usage = dict(example_literal=json.dumps(example or "Your input text.", ensure_ascii=False),
                 num_beams=beams[0] if beams else generation.get("num_beams") or 4,
                 nat_iterations=iterations[0] if iterations else 4,
                 max_new_tokens=f", max_new_tokens={max_new}" if max_new else "")

    num_examples = (results or {}).get("data", {}).get("num_examples") or {}
    short = {"echo": "copynat's echo task", "files": "local data files"}.get(data["kind"], data["name"])
    if data["source_lang"] and data["target_lang"]:
        short += f" ({data['source_lang']} → {data['target_lang']})"
    data_view = dict(description=data["description"], short=short,
                     splits=", ".join(f"{_fmt(n)} {split} examples" for split, n in num_examples.items()),
                     lengths=(f"{_fmt(data_args['max_source_length'])} source and "
                              f"{_fmt(data_args['max_target_length'])} target tokens")
                     if data_args.get("max_source_length") else "")

    hyperparameters = []
    if train_args:
        steps = resolved.get("max_steps") or train_args.get("max_steps")
        hyperparameters = [
            ("updates (`max_steps`)", _fmt(steps)),
            ("tokens per batch and process (`max_tokens`)", _fmt(train_args.get("max_tokens"))),
            ("gradient accumulation", _fmt(train_args.get("gradient_accumulation_steps"))),
            ("optimizer", f"AdamW (betas {train_args.get('adam_beta1')}, {train_args.get('adam_beta2')}; "
                          f"weight decay {train_args.get('weight_decay')})"),
            ("peak learning rate", f"{train_args.get('learning_rate')}"),
            ("schedule", f"{train_args.get('lr_scheduler')}, {_fmt(train_args.get('warmup_steps'))} warm-up steps"),
            ("gradient clipping", f"{train_args.get('max_grad_norm')}"),
            ("label smoothing", _fmt(config.get("label_smoothing"))),
            ("scheduled sampling", f"{train_args.get('scheduled_sampling')}"),
            ("mixed precision", f"{resolved.get('mixed_precision') or train_args.get('mixed_precision')}"),
            ("evaluation decodings", ", ".join(resolved.get("eval_decoding") or list(decodings)) or "-"),
            ("seed", f"{train_args.get('seed')}"),
        ]
        if model_args.get("tokenizer_model") and not model_args.get("tokenizer_name_or_path") and not base_model:
            vocab = config.get("vocab_size")
            hyperparameters.append(("tokenizer", f"byte-level {model_args['tokenizer_model']}, {_fmt(vocab)} tokens, "
                                                 "trained on the training split (source + target)"))

    speed = []
    if results and results.get("training"):
        t = results["training"]
        minutes = t.get("train_seconds") / 60 if isinstance(t.get("train_seconds"), (int, float)) else None
        speed = [("optimizer updates", _fmt(t.get("steps"))), ("epochs", _fmt(t.get("epochs"))),
                 ("training time (evaluation excluded)", f"{_fmt(t.get('train_seconds'), 1)} s"
                                                         + (f" ({_fmt(minutes, 1)} min)" if minutes and minutes >= 1
                                                            else "")),
                 ("wall time of the whole run", f"{_fmt(t.get('total_seconds'), 1)} s"),
                 ("updates per second", _fmt(t.get("steps_per_second"))),
                 ("training tokens per second (source + target)", _fmt(t.get("tokens_per_second"), 0)),
                 ("training tokens", _fmt(t.get("train_tokens"))),
                 ("processes x threads", f"{_fmt(t.get('num_processes'))} x {_fmt(t.get('num_threads'))}"),
                 ("mixed precision", _fmt(t.get("mixed_precision"))),
                 ("stopped because", _fmt(t.get("stop_reason")))]
        for key in ("device", "hardware"):
            if t.get(key):
                speed.append(("hardware", _fmt(t[key])))
        if t.get("resumed_from"):
            speed.append(("resumed", "yes (from a checkpoint)"))

    versions = f"Transformers {config['transformers_version']}" if config.get("transformers_version") else ""
    context = dict(
        marker=_marker(options), title=title, note=options["note"], model=model, model_ref=options["repo_id"] or
        f"path/to/{folder.resolve().name}", task_label={"translation": "translation"}.get(tag, "text-to-text "
                                                                                             "generation"),
        data=data_view, results_tables=results_tables, has_entity_copy=has_entity_copy, selection=selection,
        eval_batch_size=_fmt(train_args.get("eval_batch_size")), usage=usage, hyperparameters=hyperparameters,
        speed=speed, limitations=_limitations(model, data, data_args, train_args, results), files=_files(folder),
        versions=versions, nat_how=(
            f"every position decoded in parallel in one pass over {_fmt(config.get('ctc_upsample_ratio'))} positions a "
            "source token, repeats merged and blanks dropped: CTC, no length to predict" if model["ctc"] else
            "the length is predicted, then every position is decoded in parallel, in one pass or refined by "
            "mask-predict"))
    environment = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                                     undefined=jinja2.StrictUndefined, autoescape=False)
    text = environment.from_string(_template_text(template)).render(card_data=card_data.to_yaml(), **context)
    text = re.sub(r"\n{3,}", "\n\n", text).rstrip() + "\n"
    return ModelCard(text)


def write_model_card(output_dir: str | Path, results: dict | None = None, *, path: str | Path | None = None,
                     **options: Any) -> Path:
    """Render the card of the run folder ``output_dir`` (see ``build_model_card``) and save it as
    ``output_dir/README.md`` (or ``path``); returns the path written."""
    target = Path(path) if path is not None else Path(output_dir) / "README.md"
    card = build_model_card(output_dir, results, previous=target, **options)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(str(card), encoding="utf-8")
    tmp.replace(target)
    return target


def write_reference_card(run_dir: str | Path, name: str, *, cards_dir: str | Path | None = None,
                         **options: Any) -> Path:
    """(Re)generate ``model_cards/<name>.md`` from a finished run folder (the cards of the benchmark models).

    ``options`` as for ``build_model_card``; ``model_name`` defaults to ``name``."""
    options.setdefault("model_name", name)
    folder = Path(cards_dir) if cards_dir is not None else MODEL_CARDS_DIR
    return write_model_card(run_dir, path=folder / f"{name}.md", **options)


# ------------------------------------------------------------------------------------------------ CLI


def card_main(argv: Sequence[str] | None = None) -> int:
    """``python -m copynat.training.model_card RUN_DIR [--name NAME | --output PATH] [options]``."""
    parser = argparse.ArgumentParser(
        prog="copynat-card", description="Write the model card (README.md) of a copynat run folder from its "
                                         "results.json, config.json and training_args.json.")
    parser.add_argument("run_dir", help="Folder of a finished copynat-train run (or any saved copynat model).")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--name", help="Write model_cards/NAME.md (a reference card) instead of RUN_DIR/README.md.")
    where.add_argument("--output", help="Write the card to this path instead of RUN_DIR/README.md.")
    parser.add_argument("--repo_id", help="Hub id used in the usage snippet (e.g. org/copynat-multi30k-en-de).")
    parser.add_argument("--model_name", help="Title and model-index name (default: --name, repo or folder name).")
    parser.add_argument("--license", help="License id (default: apache-2.0).")
    parser.add_argument("--language", nargs="+", help="Language codes (default: the data's source/target_lang).")
    parser.add_argument("--datasets", nargs="+", help="Hub data set ids of the metadata.")
    parser.add_argument("--dataset_id", help="model-index dataset type (a Hub data set id), e.g. bentrevett/multi30k.")
    parser.add_argument("--dataset_name", help="model-index dataset display name, e.g. 'Multi30k (2016 test)'.")
    parser.add_argument("--pipeline_tag", choices=["translation", "text2text-generation"])
    parser.add_argument("--note", help="A paragraph shown at the top of the card.")
    parser.add_argument("--example_input", help="Input sentence of the usage snippet.")
    args = parser.parse_args(argv)
    options = {k: v for k, v in vars(args).items() if k not in ("run_dir", "name", "output") and v is not None}
    try:
        if args.name:
            path = write_reference_card(args.run_dir, args.name, **options)
        else:
            path = write_model_card(args.run_dir, path=args.output, **options)
    except (FileNotFoundError, ValueError) as err:
        print(f"copynat-card: error: {err}", file=sys.stderr)
        return 2
    print(path)
    return 0


# The template of model_cards/template.md, for installs without a source checkout (tests keep the two identical).
_FALLBACK_TEMPLATE = r"""---
{{ card_data }}
---

{{ marker }}

# {{ title }}

{% if note %}
> **Note.** {{ note }}

{% endif %}
A Transformer encoder-decoder ({{ model.num_parameters }} parameters) built with copynat for 🤗 Transformers{% if model.copy_mechanism %}, with a **copy mechanism**
(pointer-generator: every output token mixes generating from the vocabulary with copying a source token){% endif %}
{% if model.nat %}{% if model.copy_mechanism %} and{% else %}, with{% endif %} a **non-autoregressive decoder**{% if model.ctc %} trained with CTC{% else %} with a length predictor{% endif %}{% endif %}.
{% if model.decoder_mode == "hybrid" %}
One shared decoder was trained both ways (`decoder_mode="hybrid"`): the same weights decode autoregressively (greedy,
beam search, sampling) or non-autoregressively ({{ nat_how }}).
{% elif model.decoder_mode == "nat" %}
It decodes non-autoregressively (`decoder_mode="nat"`): {{ nat_how }}.
{% else %}
It decodes autoregressively (`decoder_mode="ar"`): greedy, beam search or sampling through `generate()`.
{% endif %}
Task: {{ task_label }} on {{ data.short }}.

## Results

{% if results_tables %}
Scores of the selected model ({{ selection }}) on 0-100 scales: corpus BLEU and chrF (sacreBLEU),
exact match (% of outputs identical to the reference){% if has_entity_copy %} and entity copy rate (% of the
source entities the output must repeat that it does repeat){% endif %}. Speed: sentences per second of the
evaluation run ({{ eval_batch_size }} sentences per `generate()` call).

{% for table in results_tables %}
**{{ table.split }}** ({{ table.num_examples }} examples{% if table.loss %}, loss {{ table.loss }}{% endif %})

| decoding | `generate()` arguments | BLEU | chrF | exact match |{% if has_entity_copy %} entity copy |{% endif %} sentences/s |
|---|---|---:|---:|---:|{% if has_entity_copy %}---:|{% endif %}---:|
{% for row in table.rows %}
| {{ row.label }} | `{{ row.kwargs }}` | {{ row.bleu }} | {{ row.chrf }} | {{ row.exact_match }} |{% if has_entity_copy %} {{ row.entity_copy_rate }} |{% endif %} {{ row.sentences_per_second }} |
{% endfor %}
{% if table.categories %}

Entity copy rate per category ({{ table.first }}): {% for name, rate in table.categories %}{{ name }} {{ rate }}{% if not loop.last %}, {% endif %}{% endfor %}.
{% endif %}

{% endfor %}
The same numbers are in the `model-index` metadata of this card and in `results.json`.
{% else %}
This folder has no `results.json`: the model was saved without a copynat evaluation, and this card reports no scores.
{% endif %}

## How to use

The `translation` and `text2text-generation` pipelines were removed in Transformers 5.23: load the model with
`AutoModelForSeq2SeqLM` and call `generate()`.

```python
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
import copynat  # pip install copynat: registers the architecture with the Auto classes

tokenizer = AutoTokenizer.from_pretrained("{{ model_ref }}")
model = AutoModelForSeq2SeqLM.from_pretrained("{{ model_ref }}").eval()
inputs = tokenizer([{{ usage.example_literal }}], return_tensors="pt")
{% if model.ar %}

# autoregressive: greedy search, or beam search
outputs = model.generate(**inputs{{ usage.max_new_tokens }})
outputs = model.generate(**inputs, num_beams={{ usage.num_beams }}{{ usage.max_new_tokens }})
{% endif %}
{% if model.nat %}

{% if model.ctc %}
# non-autoregressive: one parallel pass, blanks dropped (CTC); the blank penalty saved in generation_config.json
# applies unless another is given (ctc_blank_penalty=b)
outputs = model.generate(**inputs, non_autoregressive=True)
{% else %}
# non-autoregressive: predict the length, decode all positions at once (1 pass), or refine with mask-predict
outputs = model.generate(**inputs, non_autoregressive=True, nat_iterations=1)
outputs = model.generate(**inputs, non_autoregressive=True, nat_iterations={{ usage.nat_iterations }})
{% endif %}
{% endif %}
print(tokenizer.batch_decode(outputs, skip_special_tokens=True))
```

Without copynat installed, the modeling code stored in this repository runs as remote code (the tokenizer is a
standard `tokenizers` tokenizer and needs no remote code):

```python
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{{ model_ref }}")
model = AutoModelForSeq2SeqLM.from_pretrained("{{ model_ref }}", trust_remote_code=True).eval()
```

## Training

**Data.** {{ data.description }}{% if data.splits %}: {{ data.splits }}{% endif %}.
{% if data.lengths %}
Sequences were cut to {{ data.lengths }}.
{% endif %}

**Model.**

| setting | value |
|---|---|
{% for name, value in model.rows %}
| {{ name }} | {{ value }} |
{% endfor %}

{% if hyperparameters %}
**Hyper-parameters** (all of them are in `training_args.json`):

| argument | value |
|---|---|
{% for name, value in hyperparameters %}
| {{ name }} | {{ value }} |
{% endfor %}

{% endif %}
{% if speed %}
**Speed** of this training run (from `results.json`; `metrics.jsonl` has the training log):

| measure | value |
|---|---|
{% for name, value in speed %}
| {{ name }} | {{ value }} |
{% endfor %}

{% endif %}
## Limitations

{% for item in limitations %}
- {{ item }}
{% endfor %}

## Files

{% for name, what in files %}
- `{{ name }}`: {{ what }}
{% endfor %}
{% if versions %}

Framework versions: {{ versions }}.
{% endif %}
"""


if __name__ == "__main__":
    sys.exit(card_main())
