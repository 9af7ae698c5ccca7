"""Lecture switches beyond the core: guided attention and monotonic decoding."""

import torch
from conftest import VOCAB, copy_task_batch, tiny_config, train_steps

from copynat import CopyNatForConditionalGeneration


def test_guided_attention_loss_is_present_and_decreases():
    torch.manual_seed(0)
    model = CopyNatForConditionalGeneration(tiny_config(guided_attention_weight=1.0, use_copy_mechanism=False))
    g = torch.Generator().manual_seed(0)
    source, target = copy_task_batch(16, 8, g)
    before = model(input_ids=source, labels=target).guided_attention_loss
    plain = CopyNatForConditionalGeneration(tiny_config())(input_ids=source, labels=target)
    assert before is not None and before > 0 and plain.guided_attention_loss is None
    train_steps(model, 150, lambda step: copy_task_batch(16, 8, g))
    after = model(input_ids=source, labels=target).guided_attention_loss
    assert after < 0.5 * before, (before, after)
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


def test_monotonic_decoding_keeps_a_monotonic_model_exact(trained_hybrid_model):
    source, target = copy_task_batch(8, 6, torch.Generator().manual_seed(5))
    out = trained_hybrid_model.generate(input_ids=source, max_new_tokens=8, monotonic_window=1)
    assert torch.equal(out[:, 1:1 + target.shape[1]], target)


def test_monotonic_decoding_refuses_what_it_cannot_do():
    import pytest

    model = CopyNatForConditionalGeneration(tiny_config(decoder_mode="hybrid")).eval()
    source = torch.randint(5, VOCAB, (2, 6))
    for kwargs, message in ((dict(num_beams=3), "num_beams=1"), (dict(monotonic_window=-1), "int >= 0"),
                            (dict(non_autoregressive=True), "non_autoregressive")):
        kwargs.setdefault("monotonic_window", 1)
        with pytest.raises(ValueError, match=message):
            model.generate(input_ids=source, max_new_tokens=4, **kwargs)
