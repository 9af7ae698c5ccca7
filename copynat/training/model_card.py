"""Model cards (the Hub's ``README.md``) for copynat run folders, rendered from the run's own files.

``write_model_card(output_dir)`` reads what the training loop left in ``output_dir``:

* ``results.json`` (``copynat-results/1``): scores per split and decoding, training speed, data sizes;
* ``config.json``: the architecture (decoder mode, copy mechanism, length predictor, sizes);
* ``generation_config.json``: ``max_new_tokens`` of the usage snippet;
* ``training_args.json``: data and optimisation arguments (languages, data set, learning rate, ...);

and renders the package's template ``copynat/training/templates/model_card.md`` (jinja2, read with
``importlib.resources``, so an installed copynat has it) into ``output_dir/README.md``: YAML metadata through
``huggingface_hub.ModelCardData`` (``library_name: transformers``, ``pipeline_tag``, ``language``, ``license``,
``datasets``, ``metrics``, ``tags`` and a ``model-index`` with one ``EvalResult`` per split x decoding x metric, the
exact values of ``results.json``), then results tables, usage (``AutoModelForSeq2SeqLM`` + ``generate()``, with
``import copynat`` and with ``trust_remote_code=True``), data, hyper-parameters, measured speed and limitations
(the sections come from :mod:`copynat.training.card_sections`). Every number of a card comes from those files;
nothing is typed in.  Rendering is offline (no Hub call).

Options (license, languages, data set id, a note, the repo id of the usage snippet) are stored in a hidden comment
of the card, so that refreshing a card (``copynat-push`` does it before pushing) keeps them.

Reference cards: ``python -m copynat.training.model_card RUN_DIR --name NAME`` writes ``model_cards/NAME.md`` of a
source checkout.
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import re
import sys
from pathlib import Path
from typing import Any, Sequence

from .card_sections import (data_info, data_section, eval_results_from_results, file_list, fmt,
                            hyperparameter_rows, is_hub_id, limitations, model_section, results_tables, selection_text,
                            speed_rows, usage_section)

__all__ = [
    "CARD_MARKER",
    "MODEL_CARDS_DIR",
    "build_model_card",
    "card_main",
    "default_template",
    "eval_results_from_results",
    "is_copynat_card",
    "read_card_options",
    "write_model_card",
    "write_reference_card",
]

#: ``model_cards/`` of a source checkout: the cards of the reference checkpoints.
MODEL_CARDS_DIR = Path(__file__).resolve().parents[2] / "model_cards"
#: First word of the hidden comment that marks a card written by this module (and stores its options).
CARD_MARKER = "copynat-model-card"
_MARKER_RE = re.compile(r"<!--\s*" + CARD_MARKER + r"\s*(\{.*?\})\s*-->", re.S)
#: Options kept in the card's marker comment (see ``build_model_card``).
_OPTIONS = ("repo_id", "model_name", "license", "language", "datasets", "dataset_id", "dataset_name",
            "pipeline_tag", "note", "example_input")


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



# ------------------------------------------------------------------------------------------------ the card


def default_template() -> str:
    """The card template shipped inside the package (``copynat/training/templates/model_card.md``)."""
    resource = importlib.resources.files("copynat.training") / "templates" / "model_card.md"
    return resource.read_text(encoding="utf-8")


def _template_text(template: str | Path | None) -> str:
    return Path(template).read_text(encoding="utf-8") if template is not None else default_template()


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
    * ``template``: a jinja2 template path (default: the package's ``templates/model_card.md``);
    * ``previous``: the earlier card whose stored options are kept (default ``output_dir/README.md``).
    """
    import jinja2
    from huggingface_hub import ModelCard

    folder = Path(output_dir)
    config = _read_json(folder / "config.json")
    if config is None:
        raise FileNotFoundError(f"{folder} has no config.json: not a saved copynat model folder")
    if results is None:
        results = _read_json(folder / "results.json")
    options = dict(repo_id=repo_id, model_name=model_name, license=license, language=language, datasets=datasets,
                   dataset_id=dataset_id, dataset_name=dataset_name, pipeline_tag=pipeline_tag, note=note,
                   example_input=example_input)
    stored = read_card_options(previous or folder / "README.md") if keep_options else None
    for key, value in (stored or {}).items():
        if options.get(key) is None:
            options[key] = value
    context = _card_context(folder, config, results, options)
    environment = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                                     undefined=jinja2.StrictUndefined, autoescape=False)
    text = environment.from_string(_template_text(template)).render(**context)
    text = re.sub(r"\n{3,}", "\n\n", text).rstrip() + "\n"
    return ModelCard(text)


def _card_context(folder: Path, config: dict, results: dict | None, options: dict[str, Any]) -> dict[str, Any]:
    """Everything the template renders, from the run folder's files and the card options."""
    generation = _read_json(folder / "generation_config.json") or {}
    run = _read_json(folder / "training_args.json") or {}
    data_args, train_args = run.get("data_args") or {}, run.get("train_args") or {}
    base_model = (run.get("model_args") or {}).get("model_name_or_path")
    data = data_info(results, data_args)
    card_data, tag = _card_metadata(folder, config, results, options, data, train_args, base_model)
    num_parameters = (results or {}).get("model", {}).get("num_parameters") or _count_safetensors_parameters(folder)
    model = model_section(config, generation, base_model, num_parameters)
    tables, has_entity_copy = results_tables(results)
    decodings = (results or {}).get("eval_decoding") or {}
    ratio = fmt(config.get("ctc_upsample_ratio"))
    nat_how = (f"every position decoded in parallel in one pass over {ratio} positions a source token, repeats "
               "merged and blanks dropped: CTC, no length to predict" if model["ctc"] else
               "the length is predicted, then every position is decoded in parallel, in one pass or refined by "
               "mask-predict")
    return dict(
        card_data=card_data.to_yaml(), marker=_marker(options), title=_title(folder, options),
        note=options["note"], model=model, model_ref=options["repo_id"] or f"path/to/{folder.resolve().name}",
        task_label={"translation": "translation"}.get(tag, "text-to-text generation"),
        data=data_section(data, data_args, results), results_tables=tables, has_entity_copy=has_entity_copy,
        selection=selection_text(results), eval_batch_size=fmt(train_args.get("eval_batch_size")),
        usage=usage_section(options["example_input"], data, data_args, decodings, generation),
        hyperparameters=hyperparameter_rows(run, config, decodings), speed=speed_rows(results),
        limitations=limitations(model, data, data_args, train_args, results), files=file_list(folder),
        versions=f"Transformers {config['transformers_version']}" if config.get("transformers_version") else "",
        nat_how=nat_how)


def _title(folder: Path, options: dict[str, Any]) -> str:
    return options["model_name"] or (options["repo_id"] or folder.resolve().name).split("/")[-1]


def _card_metadata(folder: Path, config: dict, results: dict | None, options: dict[str, Any], data: dict,
                   train_args: dict, base_model: str | None):
    """The card's YAML metadata (``ModelCardData`` with its model-index) and its pipeline tag."""
    from huggingface_hub import ModelCardData

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
    nat = config.get("decoder_mode", "ar") in ("nat", "hybrid")
    tags = ["copynat", "seq2seq"] + (["pointer-generator", "copy-mechanism"] if config.get("use_copy_mechanism")
                                     else []) + (["non-autoregressive"] if nat else []) + ["custom_code"]
    eval_results = None
    if results and results.get("metrics"):
        pair = f"{data['source_lang']}-{data['target_lang']}" if data["source_lang"] and data["target_lang"] else None
        eval_results = eval_results_from_results(
            results, task_type=tag, dataset_type=options["dataset_id"] or data["id"],
            dataset_name=options["dataset_name"] or data["name"], dataset_config=data["config"] or pair) or None
    card_data = ModelCardData(
        library_name="transformers", pipeline_tag=tag, language=languages,
        license=options["license"] or train_args.get("hub_license") or "apache-2.0", datasets=hub_datasets,
        metrics=["bleu", "chrf", "exact_match"], tags=tags, base_model=base_model if is_hub_id(base_model) else None,
        model_name=_title(folder, options) if eval_results else None, eval_results=eval_results)
    return card_data, tag


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




if __name__ == "__main__":
    sys.exit(card_main())
