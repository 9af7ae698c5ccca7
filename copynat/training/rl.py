"""Sequence-level training on the evaluation metric: self-critical REINFORCE (Rennie et al. 2017).

Cross-entropy trains each token given the gold prefix; BLEU judges whole sentences the model wrote itself. The
lecture's "RL on the metric" closes that gap: sample an output, score it with sentence BLEU (or chrF) against the
reference, and raise the log-probability of samples that beat the model's own greedy output (the baseline),
lower it for samples that do worse:

    loss_rl = -(reward(sample) - reward(greedy)) * log p(sample)

Mixed with cross-entropy (``(1 - w) * ce + w * loss_rl``, MIXER-style, Ranzato et al. 2016) so the model keeps its
fluency. Used by ``copynat-train --objective rl`` on top of a trained model.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

REWARDS = ("bleu", "chrf")


def sentence_rewards(hypotheses: Sequence[str], references: Sequence[str], metric: str = "bleu") -> torch.Tensor:
    """Sentence-level sacreBLEU (exponential smoothing, so a short output with no 4-gram match still gets a signal)
    or chrF, scaled to [0, 1]."""
    import sacrebleu

    if metric not in REWARDS:
        raise ValueError(f"reward metric must be one of {REWARDS}, got {metric!r}")
    score = sacrebleu.sentence_bleu if metric == "bleu" else sacrebleu.sentence_chrf
    return torch.tensor([score(h, [r]).score / 100.0 for h, r in zip(hypotheses, references)])


def _decoder_labels(generated: torch.Tensor, decoder_start_token_id: int, eos_token_id: int, pad_token_id: int):
    """generate() output (starting with the decoder start token) -> labels: the tokens up to and including the first
    </s>, -100 after it."""
    tokens = generated[:, 1:] if bool((generated[:, 0] == decoder_start_token_id).all()) else generated
    after_eos = (tokens == eos_token_id).long().cumsum(1) - (tokens == eos_token_id).long() > 0
    return tokens.masked_fill(after_eos | (tokens == pad_token_id), -100)


def self_critical_loss(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, references: Sequence[str],
                       decode: Callable[[torch.Tensor], list[str]], *, metric: str = "bleu",
                       max_new_tokens: int = 64) -> tuple[torch.Tensor, dict[str, float]]:
    """The self-critical policy-gradient loss of one batch, and its rewards.

    ``model``: a CopyNatForConditionalGeneration (the unwrapped one); ``references``: target texts; ``decode``:
    generated ids -> texts. One sample (ancestral sampling, temperature 1) and one greedy output per source; the
    loss is the advantage-weighted log-probability of the sample, summed over its tokens, averaged over the batch.
    """
    config = model.config
    was_training = model.training
    model.eval()  # decode the policy itself, without dropout noise
    with torch.no_grad():
        common = dict(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
                      num_beams=1, min_new_tokens=1)
        greedy = model.generate(**common, do_sample=False)
        sampled = model.generate(**common, do_sample=True, top_k=0, top_p=1.0, temperature=1.0)
    model.train(was_training)
    greedy_reward = sentence_rewards(decode(greedy), references, metric)
    sample_reward = sentence_rewards(decode(sampled), references, metric)
    advantage = (sample_reward - greedy_reward).to(input_ids.device)

    labels = _decoder_labels(sampled, config.decoder_start_token_id, config.eos_token_id, config.pad_token_id)
    decoder_input_ids = model.prepare_decoder_input_ids_from_labels(labels)  # teacher-forced on the sample
    logits = model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids).logits
    token_log_probs = model.output_head.log_probs(logits).gather(-1, labels.clamp_min(0)[..., None]).squeeze(-1)
    sequence_log_prob = (token_log_probs * (labels != -100)).sum(1)
    loss = -(advantage * sequence_log_prob).mean()
    return loss, {"reward_sample": float(sample_reward.mean()), "reward_greedy": float(greedy_reward.mean())}
