"""Lecture switches beyond the core: guided attention."""

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
