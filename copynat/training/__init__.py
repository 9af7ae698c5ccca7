"""copynat training: Accelerate loop, data pipeline, metrics, distillation and the console scripts.

* :func:`train` (``copynat-train``): see :mod:`copynat.training.loop` for the procedure, the output folder and the
  layout of ``results.json``;
* :func:`distill` (``copynat-distill``): sequence-level knowledge distillation targets for NAT students;
* :func:`push_folder` (``copynat-push``) and :func:`write_model_card` (``copynat-card``): publish a run folder as
  one Hub commit with a model card whose numbers come from the run's ``results.json``;
* argument dataclasses: :class:`ModelArguments`, :class:`DataArguments`, :class:`TrainArguments`.

Submodules are imported lazily: ``import copynat.training`` does not pull in accelerate or datasets.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "train": "loop",
    "evaluate_generation": "loop",
    "teacher_forcing_prob": "loop",
    "UsageError": "loop",
    "distill": "distill",
    "ModelArguments": "arguments",
    "TrainArguments": "arguments",
    "GenerateArguments": "arguments",
    "DistillArguments": "arguments",
    "PRESETS": "arguments",
    "DataArguments": "data",
    "push_folder": "hub",
    "PushError": "hub",
    "write_model_card": "model_card",
    "build_model_card": "model_card",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
