"""The loss terms a model returns, and the per-update values the training loop averages between two logging steps."""

from __future__ import annotations

import time
from typing import Any

import torch


def loss_terms(output: Any) -> dict[str, torch.Tensor]:
    """Every loss term of a model output, by name: the set fields whose name ends in ``loss`` (``loss`` itself, then
    ``ar_loss``, ``nat_loss``, ``length_loss``, ``guided_attention_loss``, ``coverage_loss``, ... whichever apply).
    A transformers ModelOutput lists only its set fields, so a new term is logged without naming it here."""
    return {name: value for name, value in output.items()
            if name.endswith("loss") and isinstance(value, torch.Tensor)}


def loss_names_first(names) -> list[str]:
    """``loss`` first, then the other loss terms, then everything else, each group sorted: the order of a record."""
    return sorted(names, key=lambda name: (name != "loss", not name.endswith("loss"), name))


def add_to(sums: dict[str, Any], name: str, value: Any) -> None:
    sums[name] = sums[name] + value if name in sums else value


class LogWindow:
    """The values of the updates since the last logging step (loss terms, gradient norm, rewards, ...), summed on the
    device: they reach the host once per logging step, in one sync. Token counts come from the batches before they
    move (CPU tensors), so counting them does not sync either."""

    def __init__(self, excluded_seconds: float = 0.0):
        self.sums: dict[str, torch.Tensor] = {}
        self.updates = 0
        self.tokens: torch.Tensor | int = 0
        self.started = time.perf_counter()
        self.excluded_at_start = excluded_seconds  # evaluation and saving time already spent when it opened

    def add(self, values: dict[str, torch.Tensor], tokens: torch.Tensor) -> None:
        self.updates += 1
        self.tokens = self.tokens + tokens
        for name, value in values.items():
            add_to(self.sums, name, value)

    def seconds(self, excluded_seconds: float) -> float:
        """Training time since the window opened (evaluation and saving excluded)."""
        return time.perf_counter() - self.started - (excluded_seconds - self.excluded_at_start)

    def averages(self, accelerator) -> tuple[dict[str, float], float]:
        """({name: mean per update, over the processes}, tokens of all processes), in one host sync."""
        device = accelerator.device
        names = sorted(self.sums)
        stacked = torch.stack([self.sums[name].float().to(device) / self.updates for name in names]
                              + [torch.as_tensor(self.tokens, dtype=torch.float32, device=device)]).double()
        if accelerator.num_processes > 1:
            stacked = accelerator.reduce(stacked, reduction="sum")
            stacked[:-1] /= accelerator.num_processes
        numbers = stacked.tolist()
        return dict(zip(names, numbers[:-1])), numbers[-1]
