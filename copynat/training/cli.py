"""Console scripts: ``copynat-train``, ``copynat-generate``, ``copynat-distill``.

Each takes its flags (``--help`` lists them) or, for ``copynat-train``, a single YAML/JSON file with the same keys.
Bad input (arguments, data files, model folders) ends with one line ``<prog>: error: <message>`` on stderr and exit
code 2, not a traceback.  Scale-out runs the same command on many processes::

    copynat-train                                              # the embedded echo task, tiny model, minutes on CPU
    copynat-train --train_file train.jsonl --validation_file valid.jsonl --preset small
    copynat-train run.yaml
    accelerate launch copynat-train ...                        # GPUs / machines
    torchrun --nproc_per_node 2 -m copynat.training.cli ...    # several CPU processes (gloo)
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from pathlib import Path
from typing import Callable, Sequence

from .arguments import DataArguments, DistillArguments, GenerateArguments, ModelArguments, TrainArguments

__all__ = ["distill_main", "generate_main", "parse_train_args", "train_main"]


def _fail(prog: str, message: object, code: int = 2):
    print(f"{prog}: error: {' '.join(str(message).split())}", file=sys.stderr)
    sys.exit(code)


def _parse(prog: str, classes: tuple, argv: Sequence[str] | None, description: str):
    from transformers import HfArgumentParser

    parser = HfArgumentParser(classes, prog=prog, description=description)
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if len(argv) == 1 and argv[0].lower().endswith((".yaml", ".yml", ".json")):
            path = Path(argv[0])
            if not path.is_file():
                raise ValueError(f"argument file {path} does not exist")
            if path.suffix.lower() == ".json":
                return parser.parse_json_file(str(path.resolve()), allow_extra_keys=False)
            return parser.parse_yaml_file(str(path.resolve()), allow_extra_keys=False)
        return parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)
    except (ValueError, TypeError) as err:  # __post_init__ checks, unknown keys in a YAML/JSON file
        _fail(prog, err)


def parse_train_args(argv: Sequence[str] | None = None) -> tuple[ModelArguments, DataArguments, TrainArguments]:
    model_args, data_args, train_args = _parse(
        "copynat-train", (ModelArguments, DataArguments, TrainArguments), argv,
        "Train a copynat model with Accelerate. Without data arguments: the embedded echo task.")
    return model_args, data_args, train_args


def _console_logging(main: Callable[..., int]) -> Callable[..., int]:
    """Quiet transformers/datasets for a console script, and restore their verbosity and progress bars on return,
    so that calling ``train_main`` & co. from Python (a notebook, a test) leaves the caller's logging as it was."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        import datasets
        import transformers

        main_process = _is_main_process()
        logging.basicConfig(format="%(message)s" if main_process else "[rank] %(message)s",
                            level=logging.WARNING if main_process else logging.ERROR, stream=sys.stderr)
        saved = (transformers.logging.get_verbosity(), transformers.utils.logging.is_progress_bar_enabled(),
                 datasets.logging.get_verbosity(), datasets.is_progress_bar_enabled())
        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
        datasets.logging.set_verbosity_error()
        datasets.disable_progress_bars()
        try:
            return main(*args, **kwargs)
        finally:
            transformers.logging.set_verbosity(saved[0])
            (transformers.logging.enable_progress_bar if saved[1] else transformers.logging.disable_progress_bar)()
            datasets.logging.set_verbosity(saved[2])
            (datasets.enable_progress_bars if saved[3] else datasets.disable_progress_bars)()

    return wrapper


def _is_main_process() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


# ------------------------------------------------------------------------------------------------ train


@_console_logging
def train_main(argv: Sequence[str] | None = None) -> int:
    """``copynat-train``: train, evaluate, select by BLEU, save; print a summary of results.json."""
    model_args, data_args, train_args = parse_train_args(argv)
    from .loop import TrainingInterrupted, UsageError, train

    try:
        results = train(model_args, data_args, train_args)
    except UsageError as err:
        _fail("copynat-train", err)
    except TrainingInterrupted as err:
        print(f"copynat-train: {err}", file=sys.stderr)
        return 130
    if _is_main_process():
        _print_summary(results)
    return 0


def _print_summary(results: dict) -> None:
    training = results["training"]
    lines = [f"copynat-train: {training['steps']} steps in {training['train_seconds']:.0f} s of training "
             f"({training['total_seconds']:.0f} s in all; {training['steps_per_second']:.2f} steps/s, "
             f"{training['tokens_per_second']:,.0f} tokens/s), stop: {training['stop_reason']}"]
    selection = results["selection"]
    if selection["best_step"] is not None:
        lines.append(f"best {selection['metric']} = {selection['best_value']:.2f} at step {selection['best_step']}")
    for split, metrics in results["metrics"].items():
        for name in results["eval_decoding"]:
            scores = metrics.get(name)
            if scores:
                extra = f", entity copy {scores['entity_copy_rate']:.1f}%" if "entity_copy_rate" in scores else ""
                lines.append(f"{split:>10} {name:>7}: BLEU {scores['bleu']:6.2f}  chrF {scores['chrf']:6.2f}  "
                             f"exact match {scores['exact_match']:5.1f}%{extra}")
    lines.append(f"model, tokenizer and results.json saved in {results['output_dir']}")
    print("\n".join(lines))


# ------------------------------------------------------------------------------------------------ generate


def _pretty(tokens: list[str]) -> list[str]:
    return [t.replace("Ġ", "▁").replace("Ċ", "\\n") for t in tokens]


def _plot_first(model, tokenizer, source_ids, attention_mask, generated, nat: bool, path: str) -> None:
    """Copy attention + p_gen (copy models), or the last layer's cross-attention, for the first input."""
    import torch

    from copynat.visualize import require_matplotlib, plot_attention, plot_copy_gate

    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config = model.config
    src = source_ids[:1]
    src = src[:, : int(attention_mask[0].sum())]
    sequence = generated[0]
    tokens = sequence[1:]  # drop decoder_start
    eos = (tokens == config.eos_token_id).nonzero()
    length = int(eos[0]) + 1 if len(eos) else int((tokens != config.pad_token_id).sum())
    tokens = tokens[:length]
    source_tokens = _pretty(tokenizer.convert_ids_to_tokens(src[0].tolist()))
    target_tokens = _pretty(tokenizer.convert_ids_to_tokens(tokens.tolist()))
    mask = torch.ones_like(src)
    with torch.no_grad():
        if nat:
            # The parallel decoder's view of its final output (as in a last mask-predict pass with nothing masked).
            states = model.model.encoder(input_ids=src, attention_mask=mask).last_hidden_state
            target_mask = torch.ones_like(tokens)[None].bool()
            embeds = model.parallel_head.decoder_inputs(model.model.shared, tokens[None], target_mask, src, mask.bool())
            decoded = model.model.decoder(inputs_embeds=embeds, encoder_hidden_states=states,
                                          encoder_padding_mask=mask.bool(), decoder_padding_mask=target_mask,
                                          causal=False, use_cache=False, output_attentions=True)
            head = model.output_head(decoded.last_hidden_state, embeds, states, src, mask.bool())
            p_gen, copy_attention = head.p_gen, head.copy_attention
            cross = decoded.cross_attentions[-1]
        else:
            decoder_input_ids = sequence[None, :length]
            out = model(input_ids=src, attention_mask=mask, decoder_input_ids=decoder_input_ids, use_cache=False,
                        output_attentions=True, output_copy_info=model.copy_generator is not None)
            p_gen, copy_attention, cross = out.p_gen, out.copy_attention, out.cross_attentions[-1]
    if p_gen is not None:
        fig, (ax_att, ax_gate) = plt.subplots(2, 1, figsize=(max(6, 0.5 * len(source_tokens) + 3),
                                                             max(6, 0.4 * len(target_tokens) + 5)),
                                              gridspec_kw={"height_ratios": [3, 1]})
        plot_attention(copy_attention[0], source_tokens, target_tokens, ax=ax_att,
                       title="copy attention" + (" (NAT)" if nat else ""))
        plot_copy_gate(p_gen[0], target_tokens, ax=ax_gate, title="p_gen: generate (blue) vs copy (orange)")
        fig.tight_layout()
        fig.savefig(path, dpi=130)
        plt.close(fig)
    else:
        fig = plot_attention(cross[0].float().mean(0), source_tokens, target_tokens, path=path,
                             title="last decoder layer cross-attention (heads averaged)")
        plt.close(fig)


@_console_logging
def generate_main(argv: Sequence[str] | None = None) -> int:
    """``copynat-generate``: decode source lines (file, stdin or --text) with a saved model, one output per line."""
    (args,) = _parse("copynat-generate", (GenerateArguments,), argv,
                     "Decode sentences with a trained copynat model (AT: greedy/beam/sampling; NAT: parallel).")
    import torch

    from .distill import load_model_and_tokenizer
    from .loop import UsageError

    try:
        model, tokenizer = load_model_and_tokenizer(args.model, args.device, args.trust_remote_code)
    except UsageError as err:
        _fail("copynat-generate", err)
    if args.text:
        sources = list(args.text)
    elif args.input_file and args.input_file != "-":
        try:
            sources = Path(args.input_file).read_text(encoding="utf-8").split("\n")
        except (OSError, UnicodeDecodeError) as err:
            _fail("copynat-generate", f"could not read --input_file {args.input_file}: {err}")
        if sources and sources[-1] == "":
            sources.pop()
    else:
        sources = [line.rstrip("\n").rstrip("\r") for line in sys.stdin]
    torch.manual_seed(args.seed)
    kwargs: dict = {"max_new_tokens": args.max_new_tokens or 256}
    if args.non_autoregressive:
        kwargs.update(non_autoregressive=True, nat_iterations=args.nat_iterations, length_beam=args.length_beam,
                      rescore_with_ar=args.rescore_with_ar)
        if args.do_sample or args.num_return_sequences > 1 or args.num_beams > 1:
            _fail("copynat-generate", "--non_autoregressive decodes deterministically, one output per input: "
                                      "drop --do_sample/--num_beams/--num_return_sequences (use --length_beam)")
    else:
        kwargs.update(num_beams=args.num_beams, do_sample=args.do_sample,
                      num_return_sequences=args.num_return_sequences)
        for name in ("top_k", "top_p", "temperature", "length_penalty", "no_repeat_ngram_size"):
            if getattr(args, name) is not None:
                kwargs[name] = getattr(args, name)

    from transformers import DataCollatorWithPadding

    pad = DataCollatorWithPadding(tokenizer)
    encoded = [tokenizer(text, truncation=True, max_length=model.config.max_position_embeddings)["input_ids"]
               for text in sources]
    order = sorted(range(len(sources)), key=lambda i: -len(encoded[i]))
    outputs: list[list[str]] = [[] for _ in sources]
    plotted = False
    try:
        with torch.no_grad():
            for begin in range(0, len(order), args.batch_size):
                indices = order[begin:begin + args.batch_size]
                batch = pad([{"input_ids": encoded[i]} for i in indices])
                input_ids = batch["input_ids"].to(model.device)
                attention_mask = batch["attention_mask"].to(model.device)
                generated = model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
                texts = tokenizer.batch_decode(generated, skip_special_tokens=True)
                per_input = len(texts) // len(indices)
                for slot, index in enumerate(indices):
                    outputs[index] = texts[slot * per_input:(slot + 1) * per_input]
                if args.plot and not plotted and 0 in indices:
                    slot = indices.index(0)
                    _plot_first(model, tokenizer, input_ids[slot:slot + 1], attention_mask[slot:slot + 1],
                                generated[slot * per_input:slot * per_input + 1], args.non_autoregressive, args.plot)
                    plotted = True
    except ValueError as err:  # e.g. NAT decoding of a model without a length predictor
        _fail("copynat-generate", err)
    text = "".join(line.replace("\n", " ") + "\n" for group in outputs for line in group)
    if args.output_file:
        Path(args.output_file).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    if args.plot and plotted:
        print(f"copynat-generate: attention plot of the first input saved to {args.plot}", file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------------------------ distill


@_console_logging
def distill_main(argv: Sequence[str] | None = None) -> int:
    """``copynat-distill``: write teacher beam-search outputs as a jsonl training file for a NAT student."""
    args, data_args = _parse("copynat-distill", (DistillArguments, DataArguments), argv,
                             "Sequence-level knowledge distillation: an AT teacher's beam outputs as NAT targets.")
    from .distill import distill
    from .loop import UsageError

    try:
        summary = distill(args, data_args)
    except UsageError as err:
        _fail("copynat-distill", err)
    print(f"copynat-distill: {summary['num_examples']} examples written to {summary['output_file']} "
          f"({summary['changed_targets']} targets differ from the references; {summary['seconds']:.1f} s)",
          file=sys.stderr)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":  # torchrun --nproc_per_node 2 -m copynat.training.cli ...
    sys.exit(train_main())
