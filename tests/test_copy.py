"""Copy mechanism: the mixture is a distribution, copies what the source holds, and copies unseen names."""

import pytest
import torch
import torch.nn.functional as F
from conftest import VOCAB, tiny_config, train_steps

from copynat import CopyNatForConditionalGeneration


def source_and_labels():
    input_ids = torch.tensor([[7, 9, 9, 11, 2, 0, 0], [12, 13, 14, 15, 16, 17, 2]])
    labels = torch.tensor([[9, 11, 2, -100], [13, 12, 17, 2]])
    return input_ids, (input_ids != 0).long(), labels


def test_mixture_is_a_distribution_at_every_position():
    model = CopyNatForConditionalGeneration(tiny_config(decoder_mode="hybrid")).eval()
    input_ids, attention_mask, labels = source_and_labels()
    out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, output_copy_info=True)
    torch.testing.assert_close(out.logits.exp().sum(-1), torch.ones(2, 4), atol=1e-5, rtol=0)
    assert out.p_gen.shape == (2, 4) and ((out.p_gen > 0) & (out.p_gen < 1)).all()
    assert out.copy_attention.shape == (2, 4, 7)


def test_loss_equals_the_cross_entropy_of_the_returned_mixture():
    """The loss gathers log p_mix at the labels (a cheaper backward pass); it must equal the cross-entropy of the full
    mixture the model returns, with and without label smoothing, in value and in gradient."""
    input_ids, attention_mask, labels = source_and_labels()
    valid = labels != -100
    for smoothing in (0.0, 0.1):
        torch.manual_seed(0)
        model = CopyNatForConditionalGeneration(tiny_config(label_smoothing=smoothing, dropout=0.0))
        out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
        log_p = out.logits.reshape(-1, VOCAB)
        nll = F.nll_loss(log_p, labels.reshape(-1), ignore_index=-100, reduction="sum")
        reference = ((1 - smoothing) * nll - smoothing * log_p.mean(-1)[valid.reshape(-1)].sum()) / valid.sum()
        torch.testing.assert_close(out.loss, reference, atol=1e-5, rtol=1e-5)
        parameters = (model.copy_generator.gate.weight, model.copy_generator.key.weight, model.output_head.lm_head.weight)
        gathered = torch.autograd.grad(out.loss, parameters, retain_graph=True)
        full = torch.autograd.grad(reference, parameters)
        for a, b in zip(gathered, full):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_with_p_gen_zero_the_distribution_is_the_scattered_copy_attention():
    model = CopyNatForConditionalGeneration(tiny_config()).eval()
    with torch.no_grad():
        model.copy_generator.gate.weight.zero_()
        model.copy_generator.gate.bias.fill_(-1e4)  # p_gen = sigmoid(-1e4) = 0: copy only
    input_ids, attention_mask, labels = source_and_labels()
    out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, output_copy_info=True)
    assert torch.all(out.p_gen == 0)
    scattered = torch.zeros(2, 4, VOCAB).scatter_add(-1, input_ids[:, None, :].expand(-1, 4, -1), out.copy_attention)
    torch.testing.assert_close(out.logits.exp(), scattered.clamp_min(1e-10), atol=1e-6, rtol=1e-5)
    # repeated source tokens accumulate their attention: token 9 sits at positions 1 and 2 of row 0
    torch.testing.assert_close(out.logits[0, :, 9].exp(), out.copy_attention[0, :, 1] + out.copy_attention[0, :, 2])
    # pad positions get zero copy mass, so the pad token gets none at all
    assert torch.all(out.copy_attention[0, :, 5:] == 0)
    assert torch.all(out.logits[0, :, 0].exp() < 1.001e-10)  # only the clamp floor


def test_copy_generate_with_cache_equals_without_and_reports_copy_info():
    torch.manual_seed(3)
    model = CopyNatForConditionalGeneration(tiny_config()).eval()
    input_ids, attention_mask, _ = source_and_labels()
    for settings in ({}, {"num_beams": 4}):
        cached = model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=6, min_new_tokens=6, **settings)
        uncached = model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=6, min_new_tokens=6,
                                  use_cache=False, **settings)
        assert torch.equal(cached, uncached)
    out = model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=6, min_new_tokens=6,
                         output_copy_info=True)
    assert out.p_gen.shape == (2, 6) and out.copy_attention.shape == (2, 6, 7)


def test_copy_is_safe_under_bf16_autocast():
    model = CopyNatForConditionalGeneration(tiny_config(decoder_mode="hybrid"))
    input_ids, attention_mask, labels = source_and_labels()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    assert out.logits.dtype == torch.float32 and torch.isfinite(out.logits).all() and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def greeting_batch(names: torch.Tensor):
    """"I am <name> ." -> "hello <name> !": the reply must repeat the name."""
    n = names.shape[0]
    source = torch.stack((torch.full((n,), 5), torch.full((n,), 6), names, torch.full((n,), 7), torch.full((n,), 2)), 1)
    target = torch.stack((torch.full((n,), 8), names, torch.full((n,), 9), torch.full((n,), 2)), 1)
    return source, target


def test_a_trained_copy_model_copies_unseen_names_that_a_no_copy_model_cannot():
    seen_names, unseen_names = torch.arange(10, 40), torch.arange(40, VOCAB)
    results = {}
    for use_copy in (True, False):
        torch.manual_seed(0)
        model = CopyNatForConditionalGeneration(tiny_config(use_copy_mechanism=use_copy))
        g = torch.Generator().manual_seed(0)
        train_steps(model, 120, lambda step: greeting_batch(seen_names[torch.randint(0, 30, (32,), generator=g)]))
        source, target = greeting_batch(unseen_names)
        output = model.generate(source, max_new_tokens=6)
        results[use_copy] = (output[:, 1:5] == target).all(1).float().mean().item()
    assert results[True] >= 0.9, results
    assert results[False] <= 0.2, results


def test_return_logits_false_gives_the_same_loss_without_the_mixture():
    """copynat-train asks for the loss only: same loss and gradients, no [batch, tgt, vocab] log-mixture."""
    input_ids, attention_mask, labels = source_and_labels()
    for settings in (dict(), dict(label_smoothing=0.1), dict(decoder_mode="hybrid", label_smoothing=0.1),
                     dict(use_copy_mechanism=False, label_smoothing=0.1)):
        torch.manual_seed(0)
        model = CopyNatForConditionalGeneration(tiny_config(dropout=0.0, **settings))
        torch.manual_seed(1)  # the same NAT masking draw for both calls
        full = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
        torch.manual_seed(1)
        lean = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, return_logits=False)
        assert full.logits is not None and lean.logits is None, settings
        torch.testing.assert_close(lean.loss, full.loss)
        parameters = [p for p in model.parameters() if p.requires_grad]
        for a, b in zip(torch.autograd.grad(full.loss, parameters, allow_unused=True),
                        torch.autograd.grad(lean.loss, parameters, allow_unused=True)):
            assert (a is None) == (b is None)
            if a is not None:
                torch.testing.assert_close(a, b)


def _recurrence_loop(scores, near, weight, last, covered):
    """Location and coverage as plain autograd ops, one target position after the other (the reference)."""
    last = torch.zeros_like(scores[:, 0]) if last is None else last
    covered = torch.zeros_like(scores[:, 0]) if covered is None else covered
    attention, losses = [], []
    for t in range(scores.shape[1]):
        score = scores[:, t]
        if near is not None:
            window = F.pad(last, (2, 0)).unfold(1, 3, 1)  # (a[j - 2], a[j - 1], a[j])
            score = score + (window @ near[:, t].flip(-1)[:, :, None]).squeeze(-1)
        if weight is not None:
            score = score + weight[:, t] * covered
        last = score.softmax(-1)
        attention.append(last)
        if weight is not None:
            losses.append(torch.minimum(last, covered).sum(-1))
            covered = covered + last
    return torch.stack(attention, 1), torch.stack(losses, 1) if losses else None


@pytest.mark.parametrize("location, coverage", [(True, False), (True, True), (False, True)])
def test_copy_recurrence_backward_equals_autograd_through_the_step_loop(monkeypatch, location, coverage):
    """Location and coverage are one recurrence over target positions with a written-out backward pass
    (CopyAttentionRecurrence): the same attention, coverage loss and gradients as autograd through the step loop,
    padded source positions and an earlier step's memory included, and the same loss gradient for every parameter
    of a model."""
    from copynat.modeling import copy_generator

    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(3, 6, 7, dtype=torch.float64, generator=generator)
    scores[1, :, 5:] = float("-inf")  # padding
    near = torch.randn(3, 6, 3, dtype=torch.float64, generator=generator) if location else None
    weight = torch.randn(3, 6, 1, dtype=torch.float64, generator=generator) if coverage else None
    last = torch.randn(3, 7, dtype=torch.float64, generator=generator).softmax(-1)  # an earlier step's attention
    covered = torch.rand(3, 7, dtype=torch.float64, generator=generator) if coverage else None
    last[1, 5:] = 0.0
    if covered is not None:
        covered[1, 5:] = 0.0
    outer = torch.randn(3, 6, 7, dtype=torch.float64, generator=generator)
    loss_outer = torch.randn(3, 6, dtype=torch.float64, generator=generator)
    results = []
    for function in (_recurrence_loop, copy_generator.CopyAttentionRecurrence.apply):
        inputs = [scores.clone().requires_grad_()] + [x.clone().requires_grad_() for x in (near, weight) if x is not None]
        arguments = iter(inputs[1:])
        attention, losses = function(inputs[0], next(arguments) if location else None,
                                     next(arguments) if coverage else None, last, covered)
        objective = (attention * outer).sum() + ((losses * loss_outer).sum() if losses is not None else 0.0)
        objective.backward()
        results.append([attention] + ([losses] if coverage else []) + [x.grad for x in inputs])
    for ours, reference in zip(results[1], results[0]):
        torch.testing.assert_close(ours, reference, rtol=1e-10, atol=1e-10)

    input_ids, attention_mask, labels = source_and_labels()
    gradients = []
    for patch in (False, True):
        torch.manual_seed(0)
        model = CopyNatForConditionalGeneration(tiny_config(decoder_mode="ar", dropout=0.0, copy_location=location,
                                                            copy_coverage=coverage)).train()
        if patch:
            monkeypatch.setattr(copy_generator.CopyAttentionRecurrence, "apply", staticmethod(_recurrence_loop))
        model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss.backward()
        gradients.append({name: p.grad for name, p in model.named_parameters() if p.grad is not None})
    assert gradients[0].keys() == gradients[1].keys()
    assert any(("location" if location else "coverage") in name for name in gradients[0])
    for name in gradients[0]:
        torch.testing.assert_close(gradients[0][name], gradients[1][name], rtol=1e-5, atol=1e-6, msg=name)


def test_copy_scores_are_query_dot_key_whether_or_not_the_query_projection_is_folded_into_the_keys():
    """The copy attention's scores are the lecture's q . k / sqrt(d), q = Wq h and k = Wk e_j + Wp e_{j-1} (the
    previous-token key). Over many decoder states (training) the query projection is folded into the key weights and
    never applied to the states; a decoding step's few states are projected: the same scores either way."""
    torch.manual_seed(0)
    model = CopyNatForConditionalGeneration(tiny_config()).double()
    copier, d = model.copy_generator, model.config.d_model
    projected = []
    copier.query.register_forward_hook(lambda module, inputs, output: projected.append(inputs[0].shape[1]))
    encoder_states = torch.randn(2, 5, d, dtype=torch.float64)
    keys = copier.key(encoder_states) + copier.previous_key(F.pad(encoder_states[:, :-1], (0, 0, 1, 0)))
    for steps in (1, d + 1):  # 2 decoder states: projected; 2d + 2 (more than the key weights' 2d columns): folded
        decoder_states = torch.randn(2, steps, d, dtype=torch.float64)
        expected = (copier.query(decoder_states) @ keys.transpose(1, 2) / d ** 0.5).float()  # scores are fp32
        projected.clear()
        torch.testing.assert_close(copier.attention_scores(decoder_states, encoder_states), expected)
        assert projected == ([1] if steps == 1 else [])
