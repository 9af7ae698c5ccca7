"""Non-autoregressive decoding for CopyNat: predict the length, then emit every token at once.

One pass (vanilla NAT, Gu et al. 2018) or mask-predict refinement (Ghazvininejad et al. 2019): after each pass the
least confident tokens are hidden behind `<mask>` again and re-predicted, n = L * (N - t) / N of them at pass t.
A length beam decodes the K most likely lengths side by side and keeps the best candidate, by its average token
log-probability or, for hybrid models, by the autoregressive decoder's score (noisy parallel decoding).
"""

import contextlib
import weakref

import torch
from torch import nn
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.generation.utils import GenerateBeamEncoderDecoderOutput

NAT_ARGUMENTS = ("nat_iterations", "length_beam", "rescore_with_ar")
# What Seq2SeqTrainer and pipelines pass to generate(); harmless for parallel decoding.
IGNORED_ARGUMENTS = ("synced_gpus", "num_beams", "do_sample", "use_cache", "max_length", "num_return_sequences",
                     "early_stopping", "length_penalty", "decoder_start_token_id", "pad_token_id", "eos_token_id",
                     "labels", "decoder_attention_mask")


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


# --- CPU kernels for the parallel passes ---------------------------------------------------------------------------
# A NAT pass multiplies [batch x length, d] activations by every weight matrix once. On CPU, oneDNN's matmul with the
# weight packed once in its blocked layout was ~1.2x faster on the whole pass than the default sgemm, which re-packs
# the weight on every call (measured in benchmarks/nat_speed.py). AR steps (one row each) gain nothing, so only parallel
# decoding uses it. Entering the block must cost little next to a batch-1 pass (~10 ms): the Linears of a model are
# listed once (again only after a module was added anywhere), and each keeps one packed-forward object.
# oneDNN's call costs ~30 us more than sgemm's, which only widening products repay (the fused QKV, the FFN's first
# layer, the vocabulary projection); square and narrowing ones (attention outputs, cross-attention K/V, the FFN's
# second layer, the gates) stay on sgemm, which for them is faster or within noise, at 32 and at 1024 rows
# (interleaved per-shape A/B in benchmarks/experiments/nat_batch1_levers.py).
PACK_MIN_WIDENING = 3  # pack a Linear when out_features >= this * in_features


class _PackedLinearForward:
    """`linear.forward` on a oneDNN-packed copy of its weight, re-packed when the weight or bias changes (their
    storage or in-place version counter)."""

    __slots__ = ("linear", "key", "weight", "bias")

    def __init__(self, linear: nn.Linear):
        self.linear = weakref.ref(linear)  # no cycle through linear.__dict__["forward"] back to the module
        self.key = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        linear = self.linear()
        weight, bias = linear.weight, linear.bias
        key = (weight.data_ptr(), weight._version, None if bias is None else (bias.data_ptr(), bias._version))
        if key != self.key:
            self.weight = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), 1024)
            self.bias = None if bias is None else bias.detach()
            self.key = key
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")


_PACKED: "weakref.WeakKeyDictionary[nn.Linear, _PackedLinearForward]" = weakref.WeakKeyDictionary()
_LINEARS: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple[int, int], list[nn.Linear]]]" = weakref.WeakKeyDictionary()
_module_tree_version = 0


def _module_added(module, name, submodule):
    global _module_tree_version
    _module_tree_version += 1


torch.nn.modules.module.register_module_module_registration_hook(_module_added)


def _packing_supported(model) -> bool:
    mkldnn = getattr(torch.ops, "mkldnn", None)
    return (model.device.type == "cpu" and model.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
            and torch.backends.mkldnn.is_available()
            and hasattr(mkldnn, "_reorder_linear_weight") and hasattr(mkldnn, "_linear_pointwise"))


def _linears_of(model) -> list[nn.Linear]:
    cached = _LINEARS.get(model)
    version = (_module_tree_version, PACK_MIN_WIDENING)
    if cached is None or cached[0] != version:
        widening = [module for module in model.modules()
                    if isinstance(module, nn.Linear) and module.out_features >= PACK_MIN_WIDENING * module.in_features]
        cached = (version, widening)
        _LINEARS[model] = cached
    return cached[1]


@contextlib.contextmanager
def packed_linear_kernels(model):
    """Within the block, every widening nn.Linear of `model` runs on oneDNN with a packed weight (CPU, fp32; else
    no-op)."""
    if not _packing_supported(model):
        yield
        return
    # Re-entrant: an inner block (rescoring, a benchmark's stage timing) leaves the outer block's kernels in place.
    linears = [linear for linear in _linears_of(model) if "forward" not in linear.__dict__]
    try:
        for linear in linears:
            forward = _PACKED.get(linear)
            if forward is None:
                forward = _PACKED[linear] = _PackedLinearForward(linear)
            linear.__dict__["forward"] = forward  # what nn.Module.__setattr__ does for a plain attribute, 10x faster
        yield
    finally:
        for linear in linears:
            linear.__dict__.pop("forward", None)


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
    **kwargs,
):
    """Parallel decoding. Returns `[batch, 1 + length]` ids like AR generate(): `decoder_start_token_id` first, the
    tokens up to and including the first `</s>`, then padding; or, with `return_dict_in_generate=True`, an output
    with `sequences`, `sequences_scores` (average log-prob) and the predicted `lengths`."""
    config = model.config
    input_ids = inputs if inputs is not None else kwargs.pop("input_ids", None)
    kwargs.pop("generation_config", None)
    num_return = kwargs.get("num_return_sequences") or 1
    unknown = sorted(set(kwargs) - set(IGNORED_ARGUMENTS))
    if unknown:
        raise ValueError(f"non-autoregressive generate() does not take {', '.join(unknown)}; it takes input_ids, "
                         f"attention_mask, nat_iterations, length_beam, rescore_with_ar, max_new_tokens")
    if kwargs.get("do_sample") or num_return > 1:
        raise ValueError("non-autoregressive decoding is deterministic and returns one sequence per input: "
                         "do_sample and num_return_sequences > 1 are not supported (use length_beam to search)")
    if model.length_predictor is None:
        raise ValueError(f"this model has no length predictor: it was built with decoder_mode={config.decoder_mode!r}. "
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

    with packed_linear_kernels(model):
        return _decode_in_parallel(model, input_ids, attention_mask, nat_iterations, length_beam, rescore_with_ar,
                                   max_new_tokens, return_dict_in_generate)


def _decode_in_parallel(model, input_ids, attention_mask, nat_iterations, length_beam, rescore_with_ar,
                        max_new_tokens, return_dict_in_generate):
    """The body of non_autoregressive_generate, on validated arguments."""
    config = model.config
    device = model.device
    input_ids = input_ids.to(device)
    if attention_mask is None:
        attention_mask = (input_ids != config.pad_token_id).long()
    attention_mask = attention_mask.to(device)
    encoder = model.model.encoder(input_ids=input_ids, attention_mask=attention_mask)
    source_mask = attention_mask.bool() if attention_mask.dim() == 2 else input_ids != config.pad_token_id
    source_lengths = source_mask.sum(1)

    # Length beam: the K most likely lengths of each input, decoded side by side as K * batch rows.
    length_log_probs = model.length_predictor(encoder.last_hidden_state, source_mask).float().log_softmax(-1)
    beam = min(length_beam, length_log_probs.shape[-1])
    top_classes = length_log_probs.topk(beam, dim=-1).indices
    lengths = model.length_predictor.class_to_length(top_classes, source_lengths[:, None]).reshape(-1)
    limit = max_new_tokens or config.max_position_embeddings
    lengths = lengths.clamp(1, min(limit, config.max_position_embeddings))
    batch = input_ids.shape[0]
    rows = lambda tensor: tensor.repeat_interleave(beam, dim=0)  # noqa: E731
    encoder_states, source_ids = rows(encoder.last_hidden_state), rows(input_ids)
    row_source_mask = rows(source_mask)

    max_len = int(lengths.max())
    target_mask = torch.arange(max_len, device=device)[None, :] < lengths[:, None]
    tokens = torch.full_like(target_mask, config.mask_token_id, dtype=torch.long)
    tokens = tokens.masked_fill(~target_mask, config.pad_token_id)
    scores = torch.zeros(target_mask.shape, device=device)
    best_tokens, best_scores = tokens, torch.full((tokens.shape[0],), float("-inf"), device=device)
    # Every pass reads the same encoder states: their cross-attention keys and values are computed once.
    cross_cache = None
    if nat_iterations > 1:
        cross_cache = EncoderDecoderCache(DynamicCache(config=config), DynamicCache(config=config))
    for step in range(nat_iterations):
        masked = tokens == config.mask_token_id if step > 0 else target_mask
        positions = None
        if step > 0:
            # Refinement passes run the output head only on the re-masked positions (a quarter to three quarters of
            # them with 4 passes): each row's masked positions first, then filler positions whose results are dropped.
            width = int(masked.sum(1).max())
            if width == 0:  # nothing was re-masked (very short targets), nor will be: the passes left change nothing
                break
            positions = masked.int().argsort(dim=1, descending=True, stable=True)[:, :width]
        head = model.nat_pass(tokens, target_mask, encoder_states, source_ids, row_source_mask, mixture=False,
                              positions=positions, cross_attention_cache=cross_cache)
        step_scores, step_tokens = model.most_likely_tokens(head, source_ids, overwrite_logits=True)
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
                               decoder_history=decoder_input_ids, causal=True).logits
    token_scores = model.log_probs(logits).gather(-1, labels.clamp_min(0)[..., None]).squeeze(-1)
    valid = labels != -100
    return (token_scores * valid).sum(1) / valid.sum(1).clamp_min(1)
