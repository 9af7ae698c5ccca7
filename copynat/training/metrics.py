"""Generation metrics: corpus BLEU/chrF through the shipped ``evaluate`` module, sentence scores for rewards.

Corpus scores go through ``evaluate.load(<local path>)`` so that users get the usual
``evaluate`` object (and can swap in any other module), while staying offline: a
*local path* is resolved by ``evaluate`` without contacting the Hub, whatever
``HF_HUB_OFFLINE`` says.  ``import evaluate`` is slow (it imports
``transformers.pipelines``, several seconds), so it is imported lazily and the loaded
module is cached.  Sentence-level helpers call ``sacrebleu`` directly: they run once
per sampled hypothesis as RL rewards and must be cheap.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sacrebleu

if TYPE_CHECKING:  # pragma: no cover
    import evaluate

#: Folder of the ``evaluate`` metric script shipped with copynat (package data ``metrics/*/*.py``).
METRIC_PATH: Path = Path(__file__).resolve().parent.parent / "metrics" / "copynat_bleu_chrf"


def load_metric(**kwargs: Any) -> evaluate.EvaluationModule:
    """Load the shipped BLEU/chrF metric with ``evaluate.load`` by local path (works offline).

    ``keep_in_memory=True`` is the default because the on-disk mode of ``evaluate`` writes
    Arrow files and takes file locks under ``~/.cache/huggingface/metrics``; that is only
    useful for evaluate's own multi-process gathering, which the Accelerate loop does not
    use (it gathers predictions itself), and stale locks there can block for minutes.
    Extra ``kwargs`` go to ``evaluate.load`` (e.g. ``experiment_id``, ``cache_dir``).
    """
    script = METRIC_PATH / f"{METRIC_PATH.name}.py"
    if not script.is_file():
        raise FileNotFoundError(
            f"copynat's metric script {script} is missing; the package was installed without its "
            "package data (pyproject: [tool.setuptools.package-data] copynat = ['metrics/*/*.py'])"
        )
    import evaluate  # slow import, see module docstring

    kwargs.setdefault("keep_in_memory", True)
    return evaluate.load(str(METRIC_PATH), **kwargs)


@functools.lru_cache(maxsize=1)
def _cached_metric() -> evaluate.EvaluationModule:
    return load_metric()


def compute_generation_metrics(
    predictions: Sequence[str],
    references: Sequence[str] | Sequence[Sequence[str]],
    *,
    tokenize: str = "13a",
    lowercase: bool = False,
    chrf_plus_plus: bool = False,
    metric: evaluate.EvaluationModule | None = None,
) -> dict[str, float]:
    """Corpus BLEU, chrF (and chrF++), exact match of detokenized strings.

    Returns only the numeric entries (``bleu``, ``chrf``, ``exact_match``, ``num_examples``,
    ``bleu_brevity_penalty``, ``bleu_sys_len``, ``bleu_ref_len``, optionally ``chrfpp``) so
    the dict can go straight to ``accelerator.log``; call ``load_metric().compute(...)``
    for the sacreBLEU signature strings.  Raises ``ValueError`` naming both lengths when
    ``predictions`` and ``references`` differ in length.
    """
    predictions, references = list(predictions), list(references)
    if len(predictions) != len(references):
        raise ValueError(
            f"got {len(predictions)} predictions but {len(references)} references; "
            "they must be aligned one to one"
        )
    metric = metric if metric is not None else _cached_metric()
    result = metric.compute(
        predictions=predictions,
        references=references,
        tokenize=tokenize,
        lowercase=lowercase,
        chrf_plus_plus=chrf_plus_plus,
    )
    return {key: float(value) for key, value in result.items() if isinstance(value, (int, float))}


@functools.lru_cache(maxsize=8)
def _sentence_bleu_scorer(tokenize: str) -> sacrebleu.BLEU:
    # effective_order: short sentences without 4-gram matches would otherwise score 0.
    return sacrebleu.BLEU(tokenize=tokenize, effective_order=True)


@functools.lru_cache(maxsize=2)
def _sentence_chrf_scorer(word_order: int) -> sacrebleu.CHRF:
    return sacrebleu.CHRF(word_order=word_order)


def _refs(ref: str | Sequence[str]) -> list[str]:
    return [ref] if isinstance(ref, str) else list(ref)


def sentence_bleu(hyp: str, ref: str | Sequence[str], *, tokenize: str = "13a") -> float:
    """Smoothed sentence BLEU (sacreBLEU defaults: exp smoothing, effective order), 0-100.

    Same numbers as ``sacrebleu.sentence_bleu(hyp, [ref])``; the scorer object is reused
    because building it per call dominates the cost for short sentences.  An empty
    hypothesis scores 0.
    """
    score = _sentence_bleu_scorer(tokenize).sentence_score(hyp, _refs(ref)).score
    return 0.0 if math.isnan(score) else float(score)


def sentence_chrf(hyp: str, ref: str | Sequence[str], *, word_order: int = 0) -> float:
    """Sentence chrF (``word_order=2`` for chrF++), 0-100; equals ``sacrebleu.sentence_chrf``."""
    return float(_sentence_chrf_scorer(word_order).sentence_score(hyp, _refs(ref)).score)
