"""Lecture switches beyond the core: guided attention and monotonic decoding."""

import torch
from conftest import VOCAB, copy_task_batch, tiny_config, train_steps

from transformers.cache_utils import EncoderDecoderCache

from copynat import CopyNatForConditionalGeneration
from copynat.modeling.monotonic_alignment import MonotonicAttention


def test_guided_attention_loss_is_present_and_decreases():
    torch.manual_seed(0)
    model = CopyNatForConditionalGeneration(tiny_config(guided_attention_weight=1.0, use_copy_mechanism=False))
    g = torch.Generator().manual_seed(0)
    source, target = copy_task_batch(16, 8, g)
    before = model(input_ids=source, labels=target).guided_attention_loss
    plain = CopyNatForConditionalGeneration(tiny_config())(input_ids=source, labels=target)
    assert before is not None and before > 0 and plain.guided_attention_loss is None
    # 300 steps: well past the fall that comes near step 150 (0.58 -> 0.37 on torch 2.11 at 150, -> 0.29 on 2.13),
    # so the threshold does not depend on the torch version's numerics.
    train_steps(model, 300, lambda step: copy_task_batch(16, 8, g))
    after = model(input_ids=source, labels=target).guided_attention_loss
    assert after < 0.25 * before, (before, after)
    # the last layer's cross-attention now concentrates near the diagonal of this monotonic task
    def diagonal_mass(m):
        attention = m(input_ids=source, labels=target, output_attentions=True).cross_attentions[-1].mean(1)
        t, s = torch.arange(9)[:, None], torch.arange(9)[None, :]
        return attention[:, (t - s).abs() <= 1].sum(-1).mean()

    untrained = CopyNatForConditionalGeneration(tiny_config(guided_attention_weight=1.0, use_copy_mechanism=False))
    assert diagonal_mass(model) > 0.6 and diagonal_mass(model) > diagonal_mass(untrained) + 0.2


def _left_of_floor_violations(out, window: int) -> int:
    """Steps where some layer's cross-attention puts weight left of (previous argmax - window)."""
    last = [step[-1][:, :, -1].mean(1) for step in out.cross_attentions]  # last layer, per step: [batch, src]
    violations = 0
    for t in range(1, len(last)):
        floor = (last[t - 1].argmax(-1) - window).clamp_min(0)
        for layer in out.cross_attentions[t]:
            weights = layer[:, :, -1]  # [batch, heads, src]
            violations += sum(int((weights[b, :, :floor[b]] > 1e-6).any()) for b in range(weights.shape[0]))
    return violations


def test_monotonic_decoding_constraint_is_respected():
    torch.manual_seed(0)
    model = CopyNatForConditionalGeneration(tiny_config(use_copy_mechanism=False)).eval()
    source = torch.randint(5, VOCAB, (3, 12))
    settings = dict(max_new_tokens=10, min_new_tokens=10, return_dict_in_generate=True, output_attentions=True)
    free = model.generate(input_ids=source, **settings)
    assert _left_of_floor_violations(free, window=1) > 0  # an untrained model's attention jumps around
    for window in (0, 1, 3):
        constrained = model.generate(input_ids=source, monotonic_window=window, **settings)
        assert _left_of_floor_violations(constrained, window) == 0
        sampled = model.generate(input_ids=source, monotonic_window=window, do_sample=True, **settings)
        assert _left_of_floor_violations(sampled, window) == 0


def _monotonic_path_log_prob(model, source, sequence, window: int) -> torch.Tensor:
    """Sum of log-probs of `sequence` decoded step by step under the constraint (the path's own history)."""
    cache = MonotonicAttention(window, model.config)
    encoder_outputs = model.get_encoder()(input_ids=source)
    total = torch.zeros(source.shape[0])
    for t in range(sequence.shape[1] - 1):
        out = model(input_ids=source, encoder_outputs=encoder_outputs, decoder_input_ids=sequence[:, t:t + 1],
                    past_key_values=cache, use_cache=True)
        total += out.logits[:, -1].log_softmax(-1).gather(-1, sequence[:, t + 1:t + 2]).squeeze(-1)
    return total


def test_monotonic_decoding_follows_each_beam(monkeypatch):
    """Beam search reorders the constraint's state with the KV cache: every returned beam's score is the score of
    its own tokens under the constraint applied along its own history."""
    torch.manual_seed(0)
    model = CopyNatForConditionalGeneration(tiny_config()).eval()
    source = torch.randint(5, VOCAB, (2, 12))
    settings = dict(max_new_tokens=8, min_new_tokens=8, num_beams=4, num_return_sequences=4, length_penalty=0.0,
                    return_dict_in_generate=True, output_scores=True)
    free = model.generate(input_ids=source, **settings)
    out = model.generate(input_ids=source, monotonic_window=0, **settings)
    recomputed = _monotonic_path_log_prob(model, source.repeat_interleave(4, 0), out.sequences, window=0)
    torch.testing.assert_close(out.sequences_scores, recomputed, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(free.sequences_scores, _monotonic_path_log_prob(
        model, source.repeat_interleave(4, 0), free.sequences, window=0), atol=1e-3)  # the constraint bites
    # without reordering the state with the beams, the scores stop matching the beams' own histories
    monkeypatch.setattr(MonotonicAttention, "reorder_cache", EncoderDecoderCache.reorder_cache)
    unordered = model.generate(input_ids=source, monotonic_window=0, **settings)
    assert not torch.allclose(unordered.sequences_scores, _monotonic_path_log_prob(
        model, source.repeat_interleave(4, 0), unordered.sequences, window=0), atol=1e-3)


def test_monotonic_decoding_keeps_a_monotonic_model_exact(trained_hybrid_model):
    source, target = copy_task_batch(8, 6, torch.Generator().manual_seed(5))
    out = trained_hybrid_model.generate(input_ids=source, max_new_tokens=8, monotonic_window=1)
    assert torch.equal(out[:, 1:1 + target.shape[1]], target)
    beams = trained_hybrid_model.generate(input_ids=source, max_new_tokens=8, monotonic_window=1, num_beams=3)
    assert torch.equal(beams[:, 1:1 + target.shape[1]], target)


def test_monotonic_decoding_refuses_what_it_cannot_do():
    import pytest

    model = CopyNatForConditionalGeneration(tiny_config(decoder_mode="hybrid")).eval()
    source = torch.randint(5, VOCAB, (2, 6))
    for kwargs, message in ((dict(use_cache=False), "use_cache=False"), (dict(monotonic_window=-1), "int >= 0"),
                            (dict(non_autoregressive=True), "non_autoregressive")):
        kwargs.setdefault("monotonic_window", 1)
        with pytest.raises(ValueError, match=message):
            model.generate(input_ids=source, max_new_tokens=4, **kwargs)
