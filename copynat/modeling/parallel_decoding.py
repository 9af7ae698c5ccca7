"""Non-autoregressive (parallel) decoding: predict the length, then emit every token at once.

One pass (vanilla NAT, Gu et al. 2018) or mask-predict refinement (Ghazvininejad et al. 2019): after each pass the
least confident tokens are hidden behind `<mask>` again and re-predicted, n = L * (N - t) / N of them at pass t.
A length beam decodes the K most likely lengths side by side and keeps the best candidate, by its average token
log-probability or, for hybrid models, by the autoregressive decoder's score (noisy parallel decoding). A CTC model
decodes in one pass over slots read off the source length.

This file is part of the Hub remote code: it imports only torch, transformers and its siblings.
"""

import math
from typing import NamedTuple

import torch
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.generation.utils import GenerateBeamEncoderDecoderOutput

__all__ = ["EncodedSource", "IGNORED_ARGUMENTS", "encode_source", "non_autoregressive_generate", "parallel_draft"]

# What Seq2SeqTrainer and pipelines pass to generate(); harmless for parallel decoding.
IGNORED_ARGUMENTS = ("synced_gpus", "num_beams", "do_sample", "use_cache", "max_length", "num_return_sequences",
                     "early_stopping", "length_penalty", "decoder_start_token_id", "pad_token_id", "eos_token_id",
                     "labels", "decoder_attention_mask")


@torch.no_grad()
def non_autoregressive_generate(
    model,
    inputs: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    nat_iterations: int = 1,
    length_beam: int = 1,
    rescore_with_ar: bool = False,
    max_new_tokens: int | None = None,
    return_dict_in_generate: bool = False,
    nat_compile: bool | str = False,
    ctc_blank_penalty: float = 0.0,
    streamer=None,
    **kwargs,
):
    """Parallel decoding. Returns `[batch, 1 + length]` ids like AR generate(): `decoder_start_token_id` first, the
    tokens up to and including the first `</s>`, then padding; or, with `return_dict_in_generate=True`, an output
    with `sequences`, `sequences_scores` (average log-prob) and the predicted `lengths`.

    `nat_compile=True` runs each parallel pass as one `torch.compile(mode="reduce-overhead")` graph on CUDA (CUDA
    graphs: no per-op launch cost), with lengths rounded up to multiples of 8 so that a few graphs serve every input;
    on other devices it falls back to the eager pass. A mode name ("default", "max-autotune", ...) compiles on any
    device. The tokens are the eager pass's.

    `ctc_blank_penalty` (a CTC model): subtracted from the blank's log-prob at every position before the best token
    is kept. A CTC model that learned too few of its positions says a token writes too short an output; a
    positive penalty lengthens it (copynat-train picks it on validation and saves it in the generation config)."""
    config = model.config
    input_ids = inputs if inputs is not None else kwargs.pop("input_ids", None)
    kwargs.pop("generation_config", None)
    num_return = kwargs.get("num_return_sequences") or 1
    unknown = sorted(set(kwargs) - set(IGNORED_ARGUMENTS))
    if unknown:
        raise ValueError(f"non-autoregressive generate() does not take {', '.join(unknown)}; it takes input_ids, "
                         f"attention_mask, nat_iterations, length_beam, rescore_with_ar, max_new_tokens, "
                         "nat_compile, ctc_blank_penalty")
    if kwargs.get("do_sample") or num_return > 1:
        raise ValueError("non-autoregressive decoding is deterministic and returns one sequence per input: "
                         "do_sample and num_return_sequences > 1 are not supported (use length_beam to search)")
    if not config.uses_nat:
        raise ValueError(f"this model has no parallel decoder: it was built with decoder_mode={config.decoder_mode!r}. "
                         "Non-autoregressive decoding needs a model trained with decoder_mode='nat' or 'hybrid'.")
    if input_ids is None:
        raise ValueError("non-autoregressive generate() needs input_ids")
    for name, value in (("nat_iterations", nat_iterations), ("length_beam", length_beam)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if nat_iterations > 1 and config.nat_decoder_inputs != "mask":
        raise ValueError("mask-predict refinement (nat_iterations > 1) needs a model trained with "
                         "nat_decoder_inputs='mask'; this one copies source embeddings: use nat_iterations=1")
    if rescore_with_ar and config.decoder_mode != "hybrid":
        raise ValueError("rescore_with_ar=True scores candidates with the autoregressive decoder, which only a "
                         f"decoder_mode='hybrid' model has trained (this one is {config.decoder_mode!r})")

    if isinstance(ctc_blank_penalty, bool) or not isinstance(ctc_blank_penalty, (int, float)) \
            or not math.isfinite(ctc_blank_penalty):
        raise ValueError(f"ctc_blank_penalty must be a finite number, got {ctc_blank_penalty!r}")
    if config.nat_training == "ctc":
        if nat_iterations > 1 or length_beam > 1 or rescore_with_ar:
            raise ValueError("a CTC model (nat_training='ctc') decodes in one pass over lengths it reads off the "
                             "source: nat_iterations, length_beam and rescore_with_ar do not apply")
        output = _decode_ctc(model, encode_source(model, input_ids, attention_mask), max_new_tokens,
                             return_dict_in_generate, float(ctc_blank_penalty))
        return _stream_at_once(streamer, output)
    if ctc_blank_penalty:
        raise ValueError(f"ctc_blank_penalty applies to CTC models; this one was trained with "
                         f"nat_training={config.nat_training!r} (its lengths come from the length predictor)")
    if nat_compile is True:
        nat_compile = "reduce-overhead" if model.device.type == "cuda" else False
    output = _decode_in_parallel(model, encode_source(model, input_ids, attention_mask), nat_iterations, length_beam,
                                 rescore_with_ar, max_new_tokens, return_dict_in_generate, nat_compile)
    return _stream_at_once(streamer, output)


def _stream_at_once(streamer, output):
    """Hand a `streamer` (transformers' `BaseStreamer`) what parallel decoding decided all at once: the decoder-start
    token (the prompt, as generate() streams it), the whole output, then end()."""
    if streamer is not None:
        sequences = output if isinstance(output, torch.Tensor) else output.sequences
        streamer.put(sequences[:, :1].cpu())
        streamer.put(sequences[:, 1:].cpu())
        streamer.end()
    return output


def _compiled_pass(model, mode: str):
    """One parallel pass to the most likely tokens (every position, no cache: static shapes for CUDA graphs),
    compiled once per model and mode (kept on the model, so it goes when the model goes)."""
    passes = model.__dict__.setdefault("_compiled_nat_passes", {})
    if mode not in passes:
        def full_pass(tokens, target_mask, encoder_states, source_ids, source_mask):
            head = model.nat_pass(tokens, target_mask, encoder_states, source_ids, source_mask, mixture=False)
            return model.output_head.most_likely_tokens(head, overwrite_logits=True)

        passes[mode] = torch.compile(full_pass, mode=mode, dynamic=False)
    return passes[mode]


def _pad_to(tensor: torch.Tensor, length: int, value) -> torch.Tensor:
    """`tensor` padded with `value` along dim 1 to `length`."""
    if tensor.shape[1] >= length:
        return tensor
    shape = (tensor.shape[0], length - tensor.shape[1], *tensor.shape[2:])
    return torch.cat((tensor, tensor.new_full(shape, value)), dim=1)


class EncodedSource(NamedTuple):
    """What every parallel and drafted decoding starts from: the source ids on the model's device, the encoder
    output, and the [batch, src] mask of real source tokens."""

    ids: torch.Tensor
    encoder: object  # CopyNatEncoderOutput
    mask: torch.Tensor


def encode_source(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> EncodedSource:
    """Encode the source once (a 3-D graph mask encodes as given; padding then comes from the ids)."""
    input_ids = input_ids.to(model.device)
    if attention_mask is None:
        attention_mask = (input_ids != model.config.pad_token_id).long()
    attention_mask = attention_mask.to(model.device)
    encoder = model.model.encoder(input_ids=input_ids, attention_mask=attention_mask)
    source_mask = attention_mask.bool() if attention_mask.dim() == 2 else input_ids != model.config.pad_token_id
    return EncodedSource(input_ids, encoder, source_mask)


def parallel_draft(model, source: EncodedSource, ctc_blank_penalty: float = 0.0) -> torch.Tensor:
    """The model's one parallel pass over an encoded source: [batch, length] tokens up to and including each row's
    `</s>`, then padding (no decoder start token). What drafted decoding verifies."""
    if model.config.nat_training == "ctc":
        return _decode_ctc(model, source, None, False, ctc_blank_penalty)[:, 1:]
    return _decode_in_parallel(model, source, 1, 1, False, None, False)[:, 1:]


def _decode_in_parallel(model, source: EncodedSource, nat_iterations, length_beam, rescore_with_ar,
                        max_new_tokens, return_dict_in_generate, nat_compile=False):
    """The body of non_autoregressive_generate, on validated arguments."""
    config, device = model.config, model.device
    input_ids, encoder, source_mask = source
    source_lengths = source_mask.sum(1)

    # Length beam: the K most likely lengths of each input, decoded side by side as K * batch rows.
    length_predictor = model.parallel_head.length_predictor
    length_log_probs = length_predictor(encoder.last_hidden_state, source_mask).float().log_softmax(-1)
    beam = min(length_beam, length_log_probs.shape[-1])
    top_classes = length_log_probs.topk(beam, dim=-1).indices
    lengths = length_predictor.class_to_length(top_classes, source_lengths[:, None]).reshape(-1)
    limit = max_new_tokens or config.max_position_embeddings
    lengths = lengths.clamp(1, min(limit, config.max_position_embeddings))
    batch = input_ids.shape[0]
    rows = lambda tensor: tensor.repeat_interleave(beam, dim=0)  # noqa: E731
    encoder_states, source_ids = rows(encoder.last_hidden_state), rows(input_ids)
    row_source_mask = rows(source_mask)

    max_len = int(lengths.max())
    compiled = _compiled_pass(model, nat_compile) if nat_compile else None
    if compiled is not None:  # lengths rounded up to multiples of 8: a few graphs serve every input
        max_len = -(-max_len // 8) * 8
        width = -(-source_ids.shape[1] // 8) * 8
        encoder_states, source_ids = _pad_to(encoder_states, width, 0.0), _pad_to(source_ids, width, config.pad_token_id)
        row_source_mask = _pad_to(row_source_mask, width, False)
    target_mask = torch.arange(max_len, device=device)[None, :] < lengths[:, None]
    tokens = torch.full_like(target_mask, config.mask_token_id, dtype=torch.long)
    tokens = tokens.masked_fill(~target_mask, config.pad_token_id)
    scores = torch.zeros(target_mask.shape, device=device)
    best_tokens, best_scores = tokens, torch.full((tokens.shape[0],), float("-inf"), device=device)
    # Every pass reads the same encoder states: their cross-attention keys and values are computed once.
    cross_cache = None
    if nat_iterations > 1 and compiled is None:
        cross_cache = EncoderDecoderCache(DynamicCache(config=config), DynamicCache(config=config))
    for step in range(nat_iterations):
        masked = tokens == config.mask_token_id if step > 0 else target_mask
        positions = None
        if step > 0 and compiled is None:
            # Refinement passes run the output head only on the re-masked positions (a quarter to three quarters of
            # them with 4 passes): each row's masked positions first, then filler positions whose results are dropped.
            width = int(masked.sum(1).max())
            if width == 0:  # nothing was re-masked (very short targets), nor will be: the passes left change nothing
                break
            positions = masked.int().argsort(dim=1, descending=True, stable=True)[:, :width]
        if compiled is not None:  # the whole pass at every position: one graph per shape, no host sync
            step_scores, step_tokens = compiled(tokens, target_mask, encoder_states, source_ids, row_source_mask)
        else:
            head = model.nat_pass(tokens, target_mask, encoder_states, source_ids, row_source_mask, mixture=False,
                                  positions=positions, cross_attention_cache=cross_cache)
            step_scores, step_tokens = model.output_head.most_likely_tokens(head, overwrite_logits=True)
        if positions is None:
            tokens = torch.where(masked, step_tokens, tokens)
            scores = torch.where(masked, step_scores, scores)
        else:
            masked = masked.gather(1, positions)
            tokens = tokens.scatter(1, positions, torch.where(masked, step_tokens, tokens.gather(1, positions)))
            scores = scores.scatter(1, positions, torch.where(masked, step_scores, scores.gather(1, positions)))
        average = (scores * target_mask).sum(1) / lengths
        improved = average > best_scores
        best_tokens = torch.where(improved[:, None], tokens, best_tokens)
        best_scores = torch.where(improved, average, best_scores)
        if step + 1 < nat_iterations:
            # Mask-predict: re-mask the n least confident tokens, n falling linearly with the pass number.
            num_mask = (lengths.float() * (nat_iterations - step - 1) / nat_iterations).long()
            ranks = scores.masked_fill(~target_mask, float("inf")).argsort(1).argsort(1)
            tokens = tokens.masked_fill(ranks < num_mask[:, None], config.mask_token_id)

    tokens, candidate_scores = _cut_after_eos(best_tokens, target_mask, config), best_scores
    if rescore_with_ar:
        candidate_scores = _autoregressive_scores(model, encoder_states, source_ids, row_source_mask, tokens)
    choice = candidate_scores.view(batch, beam).argmax(-1) + torch.arange(batch, device=device) * beam
    tokens, chosen_scores, chosen_lengths = tokens[choice], candidate_scores[choice], lengths[choice]
    keep = int((tokens != config.pad_token_id).sum(1).max().clamp_min(1))
    start = torch.full((batch, 1), config.decoder_start_token_id, dtype=torch.long, device=device)
    sequences = torch.cat((start, tokens[:, :keep]), dim=1)
    if return_dict_in_generate:
        output = GenerateBeamEncoderDecoderOutput(sequences=sequences, sequences_scores=chosen_scores)
        output["lengths"] = chosen_lengths
        return output
    return sequences


def _decode_ctc(model, source: EncodedSource, max_new_tokens, return_dict_in_generate, blank_penalty=0.0):
    """CTC decoding: one parallel pass over `ctc_upsample_ratio` x source-length positions, each position's best
    token (the blank, `<mask>`, its log-prob lowered by `blank_penalty`, included), repeats merged and blanks
    dropped, cut after the first `</s>`."""
    config, device = model.config, model.device
    input_ids, encoder, source_mask = source
    slot_tokens, slots = model.parallel_head.ctc_slots(input_ids, source_mask)
    head = model.nat_pass(slot_tokens, slots, encoder.last_hidden_state, input_ids, source_mask, mixture=False)
    scores, tokens = model.output_head.most_likely_tokens(head, overwrite_logits=True, allow_mask=True,
                                                          mask_penalty=blank_penalty)
    blank = config.mask_token_id
    tokens = tokens.masked_fill(~slots, blank)
    previous = torch.cat((torch.full_like(tokens[:, :1], blank), tokens[:, :-1]), dim=1)
    kept = (tokens != blank) & (tokens != previous)  # a new token: not a blank, not the one before said again
    # Kept tokens to the front, in order (a stable sort of "not kept"), then the usual </s> cut and padding.
    order = (~kept).int().argsort(dim=1, stable=True)
    tokens, lengths = tokens.gather(1, order), kept.sum(1)
    limit = min(max_new_tokens or config.max_position_embeddings, config.max_position_embeddings)
    target_mask = torch.arange(tokens.shape[1], device=device)[None, :] < lengths.clamp(max=limit)[:, None]
    tokens = _cut_after_eos(tokens.masked_fill(~target_mask, config.pad_token_id), target_mask, config)
    keep = int((tokens != config.pad_token_id).sum(1).max().clamp_min(1))
    start = torch.full((tokens.shape[0], 1), config.decoder_start_token_id, dtype=torch.long, device=device)
    sequences = torch.cat((start, tokens[:, :keep]), dim=1)
    if return_dict_in_generate:
        average = (scores * slots).sum(1) / slots.sum(1)  # the log-prob of the best path, per position
        output = GenerateBeamEncoderDecoderOutput(sequences=sequences, sequences_scores=average)
        output["lengths"] = (sequences[:, 1:] != config.pad_token_id).sum(1)
        return output
    return sequences


def _cut_after_eos(tokens: torch.Tensor, target_mask: torch.Tensor, config) -> torch.Tensor:
    """Keep each row up to its first `</s>` (appending one at the predicted length if none was emitted), then pad."""
    eos_inside = (tokens == config.eos_token_id) & target_mask
    end = torch.where(eos_inside.any(1), eos_inside.int().argmax(1), target_mask.sum(1))  # where the </s> goes
    positions = torch.arange(tokens.shape[1] + 1, device=tokens.device)
    tokens = torch.cat((tokens, tokens[:, :1]), dim=1)  # room for an appended </s>
    tokens = tokens.masked_fill(positions > end[:, None], config.pad_token_id)
    return tokens.masked_fill(positions == end[:, None], config.eos_token_id)


def _autoregressive_scores(model, encoder_states, source_ids, source_mask, tokens) -> torch.Tensor:
    """Average log-probability of each candidate under the autoregressive decoder (teacher forced, one pass)."""
    config = model.config
    labels = tokens.masked_fill(tokens == config.pad_token_id, -100)
    decoder_input_ids = model.prepare_decoder_input_ids_from_labels(labels)
    embeds = model.model.shared(decoder_input_ids)
    decoded = model.model.decoder(inputs_embeds=embeds, encoder_hidden_states=encoder_states,
                                  encoder_padding_mask=source_mask, causal=True, use_cache=False)
    logits = model.output_head(decoded.last_hidden_state, embeds, encoder_states, source_ids, source_mask,
                               causal=True).logits
    token_scores = model.output_head.log_probs(logits).gather(-1, labels.clamp_min(0)[..., None]).squeeze(-1)
    valid = labels != -100
    return (token_scores * valid).sum(1) / valid.sum(1).clamp_min(1)
