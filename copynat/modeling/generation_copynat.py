"""Decoding for CopyNat: what it adds around transformers' generate().

`copynat_generate` (the model's generate()) routes a call: autoregressive decoding goes through transformers'
generate() with the KV cache the copy head needs (`CopyNatCache`, or `MonotonicAttention` for monotonic decoding),
copynat's constraints (`copynat_logits_processors`) and the copy information of the generated tokens;
`non_autoregressive=True` to the parallel decoding of parallel_decoding.py; `draft="parallel"` to the drafted
decoding of drafted_decoding.py (a parallel draft that the autoregressive decoder verifies).

This file is part of the Hub remote code: it imports only torch, transformers and its siblings.
"""

import torch
from transformers.generation import LogitsProcessorList
from transformers.modeling_outputs import Seq2SeqLMOutput

from .copy_completion import CopiedWordCompletionLogitsProcessor, RepetitionBeyondSourceLogitsProcessor
from .copy_generator import CopyNatCache
from .monotonic_alignment import MonotonicAttention
from .drafted_decoding import drafted_generate, generation_limit, pop_draft_arguments
from .parallel_decoding import non_autoregressive_generate
from .utf8_validity import Utf8ValidityLogitsProcessor

# transformers 5.24 renamed the KV cache `past_key_values` -> `cache`, as generate()'s argument to forward() and as the
# output field (the old name is a deprecated alias). Forward takes both; outputs and generate() use this one.
CACHE_NAME = "cache" if "cache" in Seq2SeqLMOutput.__dataclass_fields__ else "past_key_values"

NAT_ARGUMENTS = ("nat_iterations", "length_beam", "rescore_with_ar", "nat_compile", "ctc_blank_penalty")


def copynat_generate(model, parent_generate, inputs=None, generation_config=None, **kwargs):
    """The model's generate(): `non_autoregressive=True` decodes in parallel (`non_autoregressive_generate`),
    `draft="parallel"` drafts in parallel and verifies with the AT decoder (`drafted_generate`), anything else is
    transformers' autoregressive generate() with copynat's additions (`autoregressive_generate`):

    - `output_copy_info=True` (AR): the returned `GenerateOutput` also carries `p_gen` and `copy_attention` of the
      generated tokens, recomputed in one teacher-forced pass;
    - `monotonic_window=k` (AR: greedy, sampling, beam search): monotonic decoding, see `MonotonicAttention`;
    - `valid_utf8`, `complete_copied_words`, `stop_loops` (AR and drafted, default True once `set_vocabulary` has
      run): never break a UTF-8 character, copy a source word whole, no unit of 1-6 pieces more than 3 times in a
      row unless the source has it so (`copynat_logits_processors`)."""
    settings = generation_config or model.generation_config
    nat_arguments = pop_nat_arguments(kwargs, settings)
    draft_arguments = pop_draft_arguments(kwargs, settings)
    if nat_arguments is not None and draft_arguments is not None:
        raise ValueError("draft='parallel' already uses the parallel decoder (to draft); drop non_autoregressive")
    if draft_arguments is not None:
        if kwargs.pop("monotonic_window", None) is not None or kwargs.pop("output_copy_info", False):
            raise ValueError("draft='parallel' supports neither monotonic_window nor output_copy_info: drop them")
        user_processors = LogitsProcessorList(kwargs.pop("logits_processor", None) or [])
        rules = tuple(kwargs.pop(name, True) for name in ("valid_utf8", "complete_copied_words", "stop_loops"))
        max_length = 1 + generation_limit(settings, kwargs, model.config.max_position_embeddings)

        def processors_for(source_ids):  # rebuilt for the rows left when some finish
            return copynat_logits_processors(model, source_ids, None, *rules, max_length=max_length)

        return drafted_generate(model, inputs, settings, processors_for, user_processors, **draft_arguments, **kwargs)
    if nat_arguments is None:
        return autoregressive_generate(model, parent_generate, inputs, generation_config, **kwargs)
    if kwargs.pop("monotonic_window", None) is not None:
        raise ValueError("monotonic_window constrains autoregressive decoding; drop it with non_autoregressive")
    for step_constraint in ("valid_utf8", "complete_copied_words", "stop_loops"):  # no steps in a parallel pass
        kwargs.pop(step_constraint, None)
    return non_autoregressive_generate(model, inputs, **nat_arguments, **kwargs)


def pop_nat_arguments(kwargs: dict, generation_config) -> dict | None:
    """Take the NAT arguments out of generate()'s kwargs; None when decoding is autoregressive."""
    flag = kwargs.pop("non_autoregressive", None)
    if flag is None:
        flag = getattr(generation_config, "non_autoregressive", False)
    arguments = {name: kwargs.pop(name) for name in NAT_ARGUMENTS if name in kwargs}
    if not flag:
        if arguments:
            raise ValueError(f"{', '.join(sorted(arguments))} only apply to non-autoregressive decoding: "
                             "pass non_autoregressive=True as well")
        return None
    for name in NAT_ARGUMENTS:
        if name not in arguments and getattr(generation_config, name, None) is not None:
            arguments[name] = getattr(generation_config, name)
    return arguments


# --- autoregressive decoding: what copynat adds around transformers' generate() ------------------------------------


def autoregressive_generate(model, parent_generate, inputs, generation_config, monotonic_window=None,
                            valid_utf8: bool = True, complete_copied_words: bool = True, stop_loops: bool = True,
                            output_copy_info: bool = False, **kwargs):
    """transformers' generate() (`parent_generate`) with copynat's KV cache, constraints and copy info (see
    CopyNatForConditionalGeneration.generate)."""
    copier = model.copy_generator
    reads_history = copier is not None and copier.reads_earlier_steps
    settings = generation_config or model.generation_config
    use_cache = kwargs.get("use_cache", settings.use_cache)
    use_cache = use_cache is None or use_cache  # None: transformers' default, a cache
    cache_implementation = kwargs.get("cache_implementation", settings.cache_implementation)
    if monotonic_window is not None:
        if isinstance(monotonic_window, bool) or not isinstance(monotonic_window, int) or monotonic_window < 0:
            raise ValueError(f"monotonic_window must be an int >= 0 (source positions the attention may step "
                             f"back), got {monotonic_window!r}")
        if not use_cache or any(kwargs.get(name) is not None for name in ("past_key_values", "cache")):
            raise ValueError("monotonic_window keeps its state in the KV cache it creates: drop use_cache=False "
                             "and past_key_values / cache")
        if cache_implementation not in (None, "dynamic"):
            raise ValueError(f"monotonic_window keeps its state in a dynamic KV cache of its own: drop "
                             f"cache_implementation={cache_implementation!r}")
        kwargs[CACHE_NAME] = MonotonicAttention(monotonic_window, model.config)
        kwargs["cache_implementation"] = None
    elif reads_history and use_cache:
        given = kwargs.get("past_key_values", kwargs.get("cache"))
        if given is not None and not isinstance(given, CopyNatCache):
            raise ValueError(f"this model's copy head reads the earlier decoding steps, which it keeps in a "
                             f"CopyNatCache; got a {type(given).__name__}: pass CopyNatCache(model.config) or "
                             "no cache")
        if given is None:
            if cache_implementation not in (None, "dynamic", "static"):
                raise ValueError(f"this model's copy head keeps the earlier decoding steps in a CopyNatCache, "
                                 f"dynamic or static: cache_implementation={cache_implementation!r} is not "
                                 "supported (use 'static' or 'dynamic')")
            max_cache_len = None
            if cache_implementation == "static":
                max_cache_len = _decoder_positions(settings, kwargs)
            kwargs[CACHE_NAME] = CopyNatCache(model.config, max_cache_len)
            kwargs["cache_implementation"] = None  # transformers refuses a cache and a cache_implementation at once
    mask = kwargs.get("attention_mask")
    if mask is not None and mask.dim() == 3 and kwargs.get("encoder_outputs") is None:
        # generate() takes only 2-D masks: encode with the graph mask here, and hand on the padding mask.
        source_ids = inputs if inputs is not None else kwargs["input_ids"]
        kwargs["encoder_outputs"] = model.model.encoder(input_ids=source_ids, attention_mask=mask)
        kwargs["attention_mask"] = (source_ids != model.config.pad_token_id).long()
    source_ids = inputs if inputs is not None else kwargs.get("input_ids")
    if source_ids is None and kwargs.get("encoder_outputs") is not None:
        source_ids = getattr(kwargs["encoder_outputs"], "source_ids", None)
    processors = copynat_logits_processors(
        model, source_ids, kwargs.pop("logits_processor", None), valid_utf8, complete_copied_words, stop_loops,
        max_new_tokens=kwargs.get("max_new_tokens", settings.max_new_tokens),
        max_length=kwargs.get("max_length", settings.max_length))
    if processors:
        kwargs["logits_processor"] = processors
    if not output_copy_info:
        return parent_generate(inputs, generation_config=generation_config, **kwargs)
    if model.copy_generator is None:
        raise ValueError("output_copy_info=True needs a model built with use_copy_mechanism=True")
    kwargs["return_dict_in_generate"] = True
    generated = parent_generate(inputs, generation_config=generation_config, **kwargs)
    input_ids = inputs if inputs is not None else kwargs.get("input_ids")
    repeats = generated.sequences.shape[0] // input_ids.shape[0]
    attention_mask = kwargs.get("attention_mask")
    scored = model(
        input_ids=input_ids.repeat_interleave(repeats, 0),
        attention_mask=attention_mask.repeat_interleave(repeats, 0) if attention_mask is not None else None,
        decoder_input_ids=generated.sequences[:, :-1], use_cache=False, output_copy_info=True,
    )
    generated["p_gen"], generated["copy_attention"] = scored.p_gen, scored.copy_attention
    return generated


def copynat_logits_processors(model, source_ids: torch.Tensor | None, given=None, valid_utf8: bool = True,
                              complete_copied_words: bool = True, stop_loops: bool = True,
                              max_new_tokens: int | None = None, max_length: int | None = None) -> LogitsProcessorList:
    """The constraints copynat adds to every autoregressive decoding (after the `given` processors), once
    `set_vocabulary` has told the model its pieces: valid UTF-8, no loop the source does not have, whole copied
    words. Valid UTF-8 first: the word rule then sees what it leaves, and keeps a row as it is where it would leave
    nothing; the loop guard before the word rule, which then never forces the piece that closes a loop."""
    processors = LogitsProcessorList(given or [])
    head = model.output_head
    if valid_utf8 and bool(head.byte_token_classes[:, 2].any()):
        processors.append(Utf8ValidityLogitsProcessor(head.byte_token_classes, max_new_tokens=max_new_tokens,
                                                      max_length=max_length, bounds=head.byte_token_bounds,
                                                      pad_token_id=model.config.pad_token_id))
    if source_ids is not None and head.knows_vocabulary:
        if stop_loops:
            processors.append(RepetitionBeyondSourceLogitsProcessor(source_ids, model.config.pad_token_id))
        if complete_copied_words:
            canonical = None if head.copy_generator is None else head.copy_generator.canonical_ids(
                torch.arange(model.config.vocab_size, device=model.device))
            processors.append(CopiedWordCompletionLogitsProcessor(
                source_ids, head.word_piece_classes, canonical, pad_token_id=model.config.pad_token_id))
    return processors


def _decoder_positions(settings, kwargs: dict) -> int:
    """How many decoder positions a generate() call can fill: the start (or given) decoder inputs plus
    `max_new_tokens`, else `max_length`."""
    max_new_tokens = kwargs.get("max_new_tokens", settings.max_new_tokens)
    if max_new_tokens is None:
        return kwargs.get("max_length", settings.max_length)
    prefix = kwargs.get("decoder_input_ids")
    return max_new_tokens + (prefix.shape[1] if prefix is not None else 1)


