"""Learning-rate schedules and scheduled sampling (the teacher-forcing probability and the mixed decoder inputs)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = ["build_scheduler", "default_schedule_k", "inverse_sqrt_lambda", "mix_decoder_inputs",
           "scheduled_sampling_decoder_inputs", "teacher_forcing_prob"]


def inverse_sqrt_lambda(warmup_steps: int):
    """LR multiplier of the Transformer paper (fairseq's inverse_sqrt): linear warm-up to 1 over ``warmup_steps``
    updates, then ``sqrt(warmup_steps / step)``.  ``step`` counts updates from 0 (the first update uses step 1)."""
    warmup = max(1, warmup_steps)

    def multiplier(step: int) -> float:
        step = step + 1
        return min(step / warmup, math.sqrt(warmup / step))

    return multiplier


def build_scheduler(optimizer, name: str, warmup_steps: int, total_steps: int,
                    budget_used: Callable[[], float] | None = None):
    """The learning-rate schedule `name` as a LambdaLR. Linear and cosine decay to 0 at `total_steps`, or earlier
    when `budget_used` (the share of a time budget spent, in [0, 1]) runs ahead of the steps: a run with a
    wall-clock budget then anneals within it, on a fast machine as on a slow one."""
    if name == "inverse_sqrt":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, inverse_sqrt_lambda(warmup_steps))
    warmup = max(1, warmup_steps)

    def multiplier(step: int) -> float:
        step = step + 1
        if step < warmup:
            return step / warmup
        if name == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        if budget_used is not None:
            progress = max(progress, min(1.0, budget_used()))
        if name == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * progress))  # cosine

    return torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)


def teacher_forcing_prob(step: int, schedule: str, k: float | None = None, min_prob: float = 0.0) -> float:
    """Probability of feeding the *gold* previous token at update ``step`` (Bengio et al. 2015, section 2.4).

    * ``none``: always 1 (plain teacher forcing);
    * ``linear``: ``1 - step / k`` (k = steps to decay);
    * ``exponential``: ``k ** step`` with ``0 < k < 1``;
    * ``inverse_sigmoid``: ``k / (k + exp(step / k))`` with ``k >= 1``.

    Every schedule starts at (about) 1, never increases, and is clipped to ``[min_prob, 1]``.
    """
    if schedule == "none":
        return 1.0
    if k is None:
        raise ValueError(f"the {schedule} schedule needs its parameter k")
    step = max(0, step)
    if schedule == "linear":
        prob = 1.0 - step / k
    elif schedule == "exponential":
        prob = k**step
    elif schedule == "inverse_sigmoid":
        prob = k / (k + math.exp(min(step / k, 700.0)))
    else:
        raise ValueError(f"unknown scheduled-sampling schedule {schedule!r}: use none, linear, exponential or "
                         "inverse_sigmoid")
    return float(min(1.0, max(min_prob, prob)))


def default_schedule_k(schedule: str, total_steps: int, min_prob: float) -> float | None:
    """A k that makes the schedule reach ``min_prob`` (linear, exponential) or its midpoint (inverse sigmoid) at
    about half of training."""
    half = max(1, total_steps // 2)
    if schedule == "linear":
        return half / max(1e-6, 1.0 - min_prob)
    if schedule == "exponential":
        return max(min_prob, 0.01) ** (1.0 / half)
    if schedule == "inverse_sigmoid":
        # midpoint p = 1/2 where exp(step / k) = k, i.e. step = k ln k: solve k ln k = half by Newton's method
        k = max(2.0, half / math.log(max(half, 3)))
        for _ in range(50):
            k -= (k * math.log(k) - half) / (math.log(k) + 1.0)
            k = max(k, 1.0)
        return k
    return None


def mix_decoder_inputs(gold: torch.Tensor, model_tokens: torch.Tensor, candidates: torch.Tensor, prob: float,
                       generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Scheduled sampling's mixing: each candidate position keeps its gold token with probability ``prob`` and takes
    the model's token otherwise.  Returns ``(mixed, replaced)``; ``replaced`` marks the positions that took the
    model's token (whether or not it happens to equal the gold one)."""
    if prob >= 1.0:
        return gold, torch.zeros_like(candidates)
    draw = torch.rand(gold.shape, generator=generator, device=gold.device if generator is None else "cpu")
    replaced = (draw.to(gold.device) >= prob) & candidates
    return torch.where(replaced, model_tokens, gold), replaced


def scheduled_sampling_decoder_inputs(model, batch: dict, prob: float, generator: torch.Generator | None = None):
    """Decoder inputs for one scheduled-sampling update of the AR objective.

    A first teacher-forced pass (no gradient) predicts every target token; the decoder input at position t+1 (gold:
    label t) becomes that prediction with probability ``1 - prob``.  Position 0 (``<s>``) and padding are never
    replaced.  Returns ``(decoder_input_ids, replaced_mask)``.
    """
    labels = batch["labels"]
    gold = model.prepare_decoder_input_ids_from_labels(labels)
    candidates = torch.zeros_like(labels, dtype=torch.bool)
    candidates[:, 1:] = labels[:, :-1] != -100
    if prob >= 1.0:
        return gold, torch.zeros_like(candidates)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"),
                       decoder_input_ids=gold, use_cache=False).logits
    predictions = logits.argmax(-1)
    model_tokens = torch.cat((gold[:, :1], predictions[:, :-1]), dim=1)
    return mix_decoder_inputs(gold, model_tokens, candidates, prob, generator)
