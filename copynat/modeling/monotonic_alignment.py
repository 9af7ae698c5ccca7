"""Monotonic alignment, for tasks whose output follows the source left to right (speech-like, transliteration):
guided attention in training, the monotonic decoding constraint in generation.

This file is part of the Hub remote code: it imports only torch, transformers and its siblings.
"""

import torch

from .configuration_copynat import CopyNatConfig
from .copy_generator import CopyNatCache

__all__ = ["MonotonicAttention", "guided_attention_loss"]


def guided_attention_loss(attention: torch.Tensor, target_mask: torch.Tensor, source_mask: torch.Tensor | None,
                          sigma: float) -> torch.Tensor:
    """Diagonal guided-attention loss (Tachibana et al. 2018): attention far from the diagonal t/T ~ s/S is penalised
    by 1 - exp(-(s/S - t/T)^2 / 2 sigma^2); summed over target positions, for monotonic tasks."""
    weights = attention.float().mean(dim=1)  # heads averaged: [batch, tgt, src]
    tgt_len = target_mask.sum(1, keepdim=True).clamp_min(1).float()
    src_len = (source_mask.sum(1, keepdim=True) if source_mask is not None
               else torch.full_like(tgt_len, weights.shape[-1])).clamp_min(1).float()
    t = torch.arange(weights.shape[1], device=weights.device)[None, :] / tgt_len  # [batch, tgt]
    s = torch.arange(weights.shape[2], device=weights.device)[None, :] / src_len  # [batch, src]
    penalty = 1.0 - torch.exp(-((s[:, None, :] - t[:, :, None]) ** 2) / (2 * sigma**2))
    return (weights * penalty).sum(-1)[target_mask].sum()


class MonotonicAttention(CopyNatCache):
    """Monotonic decoding for monotonic tasks (speech-like, transliteration): the cross-attention of step t may not
    look left of step t-1's most attended source position by more than `window` positions.

    The KV cache of one `generate(monotonic_window=k)` call, carrying beside keys and values each row's most attended
    source position of the last step; beam search reorders both together, so every strategy keeps the constraint."""

    def __init__(self, window: int, config: CopyNatConfig):
        super().__init__(config)
        self.window = window
        self.position: torch.Tensor | None = None  # [batch] most attended source position of the last step

    def floor(self) -> torch.Tensor | None:
        return None if self.position is None else (self.position - self.window).clamp_min(0)

    def step(self, cross_attention: torch.Tensor) -> None:
        """`cross_attention`: last decoder layer, [batch, heads, tgt, src]; the newest target position counts."""
        self.position = cross_attention[:, :, -1].mean(1).argmax(-1)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        super().reorder_cache(beam_idx)
        if self.position is not None:
            self.position = self.position.index_select(0, beam_idx.to(self.position.device))
