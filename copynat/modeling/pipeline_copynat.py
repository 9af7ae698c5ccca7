"""`pipeline()` for copynat models: text in, generated text out, with the copied spans if asked.

transformers 5 removed its seq2seq pipelines (`text2text-generation`, `translation`, `summarization`). This one
gives copynat models the one-line use back, from a saved folder or the Hub:

    >>> from transformers import pipeline
    >>> generator = pipeline(model="path/to/copynat-model", trust_remote_code=True)  # copynat not needed
    >>> generator("我是庫洛洛。")
    [{'generated_text': '你好!庫洛洛!'}]
    >>> generator(["I am Kuroro.", "My name is Ann."], batch_size=2, decoding="beam", return_copy_spans=True)

With copynat installed, `pipeline("text2text-generation", model=...)` needs no remote code: `import copynat`
registers this class for that task (see `copynat/__init__.py`). Every saved copynat seq2seq folder carries this file
and names it in config.json (`custom_pipelines`, task `CUSTOM_TASK`), which is how `pipeline(model=FOLDER,
trust_remote_code=True)` finds the task without asking the Hub.

Hub remote code: torch, transformers, the standard library and sibling files only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformers import GenerationConfig, Pipeline

from .copy_spans import copy_spans, prefix_offsets

__all__ = ["CUSTOM_TASK", "DECODINGS", "CopyNatPipeline", "add_custom_pipeline"]

#: The task name a saved folder declares in config.json. Not "text2text-generation": transformers runs a task the
#: folder declares only with trust_remote_code=True, even where copynat is installed, and the installed copynat
#: serves "text2text-generation" itself, without remote code.
CUSTOM_TASK = "copynat-text2text-generation"

#: `decoding=` presets: the generate() arguments each one sets. Arguments passed alongside may refine a preset
#: (num_beams=8 with "beam", nat_iterations=10 with "mask_predict") but not contradict it.
DECODINGS: dict[str, dict[str, Any]] = {
    "greedy": {"num_beams": 1, "do_sample": False},
    "beam": {"num_beams": 4, "do_sample": False},
    "sample": {"do_sample": True},
    "parallel": {"non_autoregressive": True, "nat_iterations": 1},  # one parallel pass (vanilla NAT)
    "mask_predict": {"non_autoregressive": True, "nat_iterations": 4},  # parallel passes with refinement
    # Drafted decoding (issue 30): the parallel decoder drafts, the autoregressive decoder verifies; same output as
    # greedy, at parallel speed. Passed through to generate(draft="parallel").
    "drafted": {"draft": "parallel", "num_beams": 1, "do_sample": False},
}
#: generate() arguments copynat adds to transformers' (see CopyNatForConditionalGeneration.generate).
COPYNAT_GENERATE_ARGUMENTS = frozenset({
    "non_autoregressive", "nat_iterations", "length_beam", "rescore_with_ar", "nat_compile", "ctc_blank_penalty",
    "monotonic_window", "valid_utf8", "complete_copied_words", "stop_loops", "draft",
})
_NAT_ONLY = ("nat_iterations", "length_beam", "rescore_with_ar", "nat_compile", "ctc_blank_penalty")
# What a parallel decoding cannot honour: it is deterministic and returns one sequence per input.
_AR_ONLY = ("num_beams", "do_sample", "num_return_sequences", "temperature", "top_k", "top_p", "monotonic_window")
_GENERATE_ARGUMENTS = (frozenset(k for k in vars(GenerationConfig()) if not k.startswith("_"))
                       | COPYNAT_GENERATE_ARGUMENTS
                       | {"generation_config", "logits_processor", "stopping_criteria", "streamer",
                          "prefix_allowed_tokens_fn"})
# Output settings the pipeline manages itself.
_RESERVED = frozenset({"return_dict_in_generate", "output_copy_info", "output_scores", "output_logits",
                       "output_attentions", "output_hidden_states"})


def _is_copynat(model) -> bool:
    # A remote-code copy of the classes is another class object: the model type is what identifies copynat.
    return getattr(model.config, "model_type", None) == "copynat"


def _harmless(name: str, value: Any) -> bool:
    """Whether an autoregressive search or sampling argument leaves decoding as greedy as it is."""
    if value is None:
        return True
    if name in ("num_beams", "num_return_sequences"):
        return value == 1 and not isinstance(value, bool)
    return name == "do_sample" and value is False


def resolve_decoding(decoding: str | None, arguments: dict[str, Any], is_copynat: bool = True) -> dict[str, Any]:
    """generate() arguments for `decoding` (a `DECODINGS` name or None: the model's generation config) and the
    caller's own `arguments`. Raises ValueError naming the argument that contradicts the decoding."""
    if decoding is None:
        return dict(arguments)
    if decoding not in DECODINGS:
        raise ValueError(f"decoding={decoding!r} is not a copynat decoding; choose one of {', '.join(DECODINGS)} "
                         "(or leave it out for the model's generation config)")
    preset = DECODINGS[decoding]
    parallel = preset.get("non_autoregressive", False)
    if not is_copynat and (parallel or "draft" in preset):
        raise ValueError(f"decoding={decoding!r} needs a copynat model (it has the parallel decoder); this model "
                         "is not one: use greedy, beam or sample")

    def contradiction(name: str, why: str) -> ValueError:
        return ValueError(f"{name}={arguments[name]!r} contradicts decoding={decoding!r}: {why}")

    if parallel:
        for name in _AR_ONLY:
            if name in arguments and not _harmless(name, arguments[name]):
                raise contradiction(name, "parallel decoding is deterministic, one output per input (use "
                                          "length_beam to search over lengths)")
        if decoding == "parallel" and arguments.get("nat_iterations", 1) != 1:
            raise contradiction("nat_iterations", "one parallel pass; use decoding='mask_predict' for refinement")
        if decoding == "mask_predict" and arguments.get("nat_iterations", 2) < 2:
            raise contradiction("nat_iterations", "mask-predict refines over 2 or more passes")
        if arguments.get("non_autoregressive") is False:
            raise contradiction("non_autoregressive", "parallel decoding is non-autoregressive")
    else:
        for name in _NAT_ONLY:
            if name in arguments:
                raise contradiction(name, "it applies to parallel decoding (decoding='parallel' or 'mask_predict')")
        if arguments.get("non_autoregressive"):
            raise contradiction("non_autoregressive", "this decoding is autoregressive")
        if decoding in ("greedy", "drafted"):
            for name in ("num_beams", "do_sample"):
                if not _harmless(name, arguments.get(name)):
                    raise contradiction(name, "greedy decoding keeps one hypothesis and does not sample")
        if decoding == "beam":
            if arguments.get("num_beams", 2) < 2:
                raise contradiction("num_beams", "beam search needs num_beams >= 2")
            if arguments.get("do_sample"):
                raise contradiction("do_sample", "use decoding='sample' with num_beams for beam sampling")
        if decoding == "sample" and arguments.get("do_sample") is False:
            raise contradiction("do_sample", "sampling samples")
    return {**preset, **arguments}


def add_custom_pipeline(folder: str | Path) -> None:
    """Name this pipeline in `folder/config.json` (`custom_pipelines`), so that `pipeline(model=folder,
    trust_remote_code=True)` loads it, from a folder or the Hub, where copynat is not installed. Only a saved
    seq2seq model gets it (a classifier's folder would load as a seq2seq model it is not)."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        return
    config = json.loads(path.read_text(encoding="utf-8"))
    if "CopyNatForConditionalGeneration" not in config.get("architectures", []):
        return
    entry = {"impl": f"{Path(__file__).stem}.{CopyNatPipeline.__name__}", "pt": ["AutoModelForSeq2SeqLM"],
             "type": "text"}
    if config.get("custom_pipelines", {}).get(CUSTOM_TASK) != entry:
        config.setdefault("custom_pipelines", {})[CUSTOM_TASK] = entry
        path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


class CopyNatPipeline(Pipeline):
    """Text-to-text generation with a copynat model (any transformers seq2seq model for greedy, beam and sample).

    Call with a string or a list of strings (`batch_size=` batches them). Keywords, at construction or per call:

    - `decoding`: "greedy", "beam", "sample", "parallel" (one parallel pass), "mask_predict" (parallel with
      refinement), "drafted" (parallel draft, autoregressive check), or None (default): the model's generation
      config.
    - any generate() argument: `max_new_tokens`, `num_beams`, `num_return_sequences`, `temperature`, `top_p`,
      `nat_iterations`, `length_beam`, `streamer`, ...; or a dict of them as `generate_kwargs`.
    - `return_copy_spans=True`: each result also lists the spans of its text that the copy head copied, as
      character offsets into the output and the source (`copynat.modeling.copy_spans`); `copy_threshold` (0.5) is
      the least share of a token's probability the copy route must hold.
    - `return_copy_info=True`: each result also holds the copy head's numbers (`copy_info`): per output token its
      text, offsets, p_gen and copy attention over the source tokens (for pictures such as the demo's heatmap).
    - `return_tensors=True`: the token ids as well (`generated_token_ids`); `return_text=False` leaves out the text.
    - `truncation=True`: cut sources longer than the tokenizer's model_max_length.

    Returns, per input, a list of dicts (`generated_text`, ...), one per returned sequence; for a list of inputs
    that each return one sequence, one dict per input (as transformers 4's text2text pipeline did).
    """

    _load_tokenizer = True
    _load_processor = False
    _load_image_processor = False
    _load_video_processor = False
    _load_feature_extractor = False

    def _sanitize_parameters(self, decoding: str | None = None, return_copy_spans: bool | None = None,
                             return_copy_info: bool | None = None, copy_threshold: float | None = None,
                             return_tensors: bool | None = None,
                             return_text: bool | None = None, truncation: bool | None = None,
                             clean_up_tokenization_spaces: bool | None = None, generate_kwargs: dict | None = None,
                             **generation_arguments):
        reserved = sorted(set(generation_arguments) & _RESERVED | set(generate_kwargs or {}) & _RESERVED)
        unknown = sorted(set(generation_arguments) - _GENERATE_ARGUMENTS - _RESERVED)
        if unknown:
            raise ValueError(f"CopyNatPipeline does not take {', '.join(unknown)}: it takes decoding, "
                             "return_copy_spans, return_copy_info, copy_threshold, return_tensors, return_text, "
                             "truncation, "
                             "clean_up_tokenization_spaces, generate_kwargs and generate() arguments (max_new_tokens, "
                             "num_beams, nat_iterations, streamer, ...)")
        if reserved:
            raise ValueError(f"CopyNatPipeline sets {', '.join(reserved)} itself (use return_copy_spans=True for "
                             "the copy information, or call model.generate() for the raw outputs)")
        if decoding is not None and decoding not in DECODINGS:
            resolve_decoding(decoding, {})  # the error listing the decodings
        if copy_threshold is not None and not 0.0 < copy_threshold <= 1.0:
            raise ValueError(f"copy_threshold must be in (0, 1], got {copy_threshold!r}")
        for name, value in (("return_copy_spans", return_copy_spans), ("return_copy_info", return_copy_info)):
            if value and not _is_copynat(self.model):
                raise ValueError(f"{name}=True reads copynat's copy head: this model is not a copynat model")
            if value and not getattr(self.model.config, "use_copy_mechanism", False):
                raise ValueError(f"{name}=True needs a model with a copy head (use_copy_mechanism=True)")

        preprocess = {} if truncation is None else {"truncation": truncation}
        forward = {**(generate_kwargs or {}), **generation_arguments}
        if decoding is not None:
            forward["decoding"] = decoding
        copy = {name: value for name, value in (("return_copy_spans", return_copy_spans),
                                                  ("return_copy_info", return_copy_info)) if value is not None}
        forward.update(copy)
        postprocess = {**copy, **{name: value for name, value in (
            ("copy_threshold", copy_threshold),
            ("return_tensors", return_tensors), ("return_text", return_text),
            ("clean_up_tokenization_spaces", clean_up_tokenization_spaces)) if value is not None}}
        return preprocess, forward, postprocess

    def __call__(self, inputs: str | list[str], **kwargs) -> list:
        """Generate for `inputs` (a string or a list of strings); see the class docstring for the keywords."""
        if not (isinstance(inputs, str) or (isinstance(inputs, (list, tuple)) and inputs
                                            and all(isinstance(text, str) for text in inputs))):
            raise TypeError(f"CopyNatPipeline takes a string or a non-empty list of strings, got "
                            f"{_describe(inputs)}")
        inputs = list(inputs) if isinstance(inputs, tuple) else inputs
        results = super().__call__(inputs, **kwargs)
        if isinstance(inputs, list) and all(len(result) == 1 for result in results):
            return [result[0] for result in results]
        return results

    def preprocess(self, text: str, truncation: bool = False) -> dict[str, Any]:
        encoded = self.tokenizer(text, return_tensors="pt", truncation=truncation)
        # source_text rides along to postprocess (the copy spans' offsets); the batching collator keeps strings as
        # a list and hands each result its own.
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"], "source_text": text}

    def _forward(self, model_inputs: dict[str, Any], decoding: str | None = None, return_copy_spans: bool = False,
                 return_copy_info: bool = False, **generation_arguments) -> dict[str, Any]:
        input_ids, attention_mask = model_inputs["input_ids"], model_inputs["attention_mask"]
        arguments = resolve_decoding(decoding, generation_arguments, _is_copynat(self.model))
        step_by_step = not arguments.get("non_autoregressive") and "draft" not in arguments
        copy_info = return_copy_spans or return_copy_info
        if copy_info and step_by_step:  # generate() recomputes the copy info of what it generated
            arguments.update(output_copy_info=True, return_dict_in_generate=True)
        generated = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, **arguments)
        sequences = generated if isinstance(generated, torch.Tensor) else generated.sequences
        batch = input_ids.shape[0]
        returned = sequences.shape[0] // batch
        # [batch, returned, ...]: the pipeline's batching hands each input its own rows
        output = {"sequences": sequences.view(batch, returned, -1), "source_text": model_inputs["source_text"]}
        if copy_info:
            p_gen = getattr(generated, "p_gen", None) if step_by_step else None
            copy_attention = getattr(generated, "copy_attention", None) if step_by_step else None
            if p_gen is None:  # parallel and drafted outputs: the copy head reads them in one teacher-forced pass
                scored = self.model(input_ids=input_ids.repeat_interleave(returned, 0),
                                    attention_mask=attention_mask.repeat_interleave(returned, 0),
                                    decoder_input_ids=sequences[:, :-1], use_cache=False, output_copy_info=True)
                p_gen, copy_attention = scored.p_gen, scored.copy_attention
            output["p_gen"] = p_gen.view(batch, returned, -1)
            output["copy_attention"] = copy_attention.view(batch, returned, *copy_attention.shape[1:])
        return output

    def postprocess(self, model_outputs: dict[str, Any], return_copy_spans: bool = False,
                    return_copy_info: bool = False, copy_threshold: float = 0.5, return_tensors: bool = False,
                    return_text: bool = True, clean_up_tokenization_spaces: bool | None = None) -> list[dict[str, Any]]:
        decode = dict(skip_special_tokens=True)
        if clean_up_tokenization_spaces is not None:
            decode["clean_up_tokenization_spaces"] = clean_up_tokenization_spaces
        results = []
        for row, sequence in enumerate(model_outputs["sequences"][0]):
            ids = sequence.tolist()
            result: dict[str, Any] = {}
            text = self.tokenizer.decode(ids, **decode)
            if return_text:
                result["generated_text"] = text
            if return_tensors:
                result["generated_token_ids"] = sequence
            if return_copy_spans or return_copy_info:
                details = self._copy_details(ids, text, model_outputs["source_text"], model_outputs["p_gen"][0, row],
                                             model_outputs["copy_attention"][0, row], copy_threshold, decode)
                if return_copy_spans:
                    result["copy_spans"] = details["spans"]
                if return_copy_info:
                    result["copy_info"] = details["info"]
            results.append(result)
        return results

    def _copy_details(self, ids: list[int], text: str, source_text: str, p_gen: torch.Tensor,
                      copy_attention: torch.Tensor, threshold: float, decode: dict) -> dict[str, Any]:
        """The copied spans of one output (`ids`: the decoder-start token, then the output) and the copy head's
        numbers behind them, per token."""
        output_ids = ids[1:]  # p_gen[t] and copy_attention[t] belong to the token after the decoder input t
        length = next((i + 1 for i, token in enumerate(output_ids) if token == self.model.config.eos_token_id),
                      len(output_ids))
        output_ids = output_ids[:min(length, p_gen.shape[0])]
        output_offsets = prefix_offsets([self.tokenizer.decode(output_ids[:k + 1], **decode)
                                         for k in range(len(output_ids))], text)
        # the source as preprocess tokenized it (padding comes after it; a truncated source is cut to its length)
        source = self.tokenizer(source_text, return_offsets_mapping=True)
        source_offsets = source["offset_mapping"][: copy_attention.shape[-1]]
        source_ids = source["input_ids"][: len(source_offsets)]
        p_gen, copy_attention = p_gen[: len(output_ids)], copy_attention[: len(output_ids), : len(source_offsets)]
        spans = copy_spans(p_gen, copy_attention, self._piece_keys(output_ids), self._piece_keys(source_ids),
                           output_offsets, source_offsets, text, source_text, threshold)
        special = set(self.tokenizer.all_special_ids)
        info = {
            # each token's text; "" for a special token or a byte piece inside a character (the character goes to
            # the piece that completes it)
            "output_tokens": [text[start:end] for start, end in output_offsets],
            "source_tokens": [source_text[start:end] if token not in special and (start, end) != following else ""
                              for token, (start, end), following in
                              zip(source_ids, source_offsets, [*source_offsets[1:], None])],
            "output_ids": output_ids,
            "source_ids": source_ids,
            "output_offsets": [list(offset) for offset in output_offsets],
            "source_offsets": [list(offset) for offset in source_offsets],
            "p_gen": [round(value, 4) for value in p_gen.float().tolist()],
            "copy_attention": [[round(value, 4) for value in row] for row in copy_attention.float().tolist()],
        }
        return {"spans": spans, "info": info}

    def _piece_keys(self, ids: list[int]) -> list[str | None]:
        """Which tokens are the same piece: the token string without its word-boundary mark (byte-level "Ġ",
        SentencePiece "▁"); None for special tokens."""
        special = set(self.tokenizer.all_special_ids)
        pieces = self.tokenizer.convert_ids_to_tokens(ids)
        return [None if token in special else piece.lstrip("Ġ▁") or piece for token, piece in zip(ids, pieces)]


def _describe(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        if not value:
            return f"an empty {type(value).__name__}"
        bad = next((item for item in value if not isinstance(item, str)), None)
        return f"a {type(value).__name__} holding a {type(bad).__name__} ({bad!r:.40})"
    return f"a {type(value).__name__} ({value!r:.40})"
