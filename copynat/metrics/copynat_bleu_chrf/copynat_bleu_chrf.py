# Copyright the copynat developers. Licensed under the Apache License, Version 2.0.
"""Corpus sacreBLEU + chrF(++) as an ``evaluate`` metric shipped inside copynat.

Why a shipped script instead of ``evaluate.load("sacrebleu")``: the Hub version
needs network access on first use, and it only reports BLEU.  This script is
loaded by *local path* (``evaluate.load("/path/to/copynat_bleu_chrf")``), which
never contacts the Hub, and it reports BLEU and chrF together with the sacreBLEU
signatures that make scores reproducible.

It imports nothing from copynat on purpose: ``evaluate`` copies this file into
its dynamic-modules cache and imports it from there.
"""

from __future__ import annotations

import datasets
import evaluate
import sacrebleu

_CITATION = """\
@inproceedings{post-2018-call,
    title = "A Call for Clarity in Reporting {BLEU} Scores",
    author = "Post, Matt",
    booktitle = "Proceedings of the Third Conference on Machine Translation: Research Papers",
    year = "2018",
    pages = "186--191",
}
@inproceedings{popovic-2015-chrf,
    title = "chr{F}: character n-gram {F}-score for automatic {MT} evaluation",
    author = "Popovi{\\'c}, Maja",
    booktitle = "Proceedings of the Tenth Workshop on Statistical Machine Translation",
    year = "2015",
    pages = "392--395",
}
"""

_DESCRIPTION = """\
Corpus-level BLEU (sacreBLEU, default 13a tokenization, cased) and chrF
(character 6-grams, beta=2), optionally chrF++ (chrF plus word bigrams),
computed with the ``sacrebleu`` library, plus the exact-match rate.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[str]`): system outputs, one detokenized string per example.
    references (`list[str]` or `list[list[str]]`): one reference per example, or
        several per example (the count may vary; missing ones are ignored).
    tokenize (`str`, default "13a"): sacreBLEU tokenizer for BLEU ("13a", "intl", "zh", "char", "none", ...).
    lowercase (`bool`, default False): case-insensitive BLEU and chrF.
    chrf_plus_plus (`bool`, default False): also return chrF++ (chrF with word_order=2).
Returns:
    bleu (`float`, 0-100), chrf (`float`, 0-100), exact_match (`float`, 0-100: share of
    predictions equal to one of their references), num_examples (`int`),
    bleu_brevity_penalty, bleu_sys_len, bleu_ref_len, bleu_signature (`str`),
    chrf_signature (`str`); with chrf_plus_plus also chrfpp and chrfpp_signature.
Examples:
    >>> metric = evaluate.load("path/to/copynat_bleu_chrf")
    >>> metric.compute(predictions=["the cat sat"], references=["the cat sat"])["bleu"]
    100.0
"""


def _as_reference_lists(references) -> list[list[str | None]]:
    """Turn ``list[str]`` or ``list[list[str]]`` into one list of references per example."""
    return [[ref] if isinstance(ref, str) else list(ref) for ref in references]


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class CopynatBleuChrf(evaluate.Metric):
    """Corpus BLEU + chrF with sacreBLEU signatures; see the module docstring."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            # Two accepted shapes; evaluate picks the one matching the first example.
            features=[
                datasets.Features(
                    {
                        "predictions": datasets.Value("string"),
                        "references": datasets.Sequence(datasets.Value("string")),
                    }
                ),
                datasets.Features(
                    {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
                ),
            ],
            codebase_urls=["https://github.com/mjpost/sacrebleu"],
            reference_urls=["https://aclanthology.org/W18-6319", "https://aclanthology.org/W15-3049"],
        )

    def compute(self, *, predictions=None, references=None, **kwargs):
        """Validate inputs before evaluate stores them.

        evaluate's own messages for a length mismatch or an empty batch are either
        generic or an ``IndexError``, and a failed ``add_batch`` leaves the metric
        half-initialised; checking here gives one clear ``ValueError`` instead.
        References are normalised to one list per example so mixed shapes work.
        """
        if predictions is not None or references is not None:
            if predictions is None or references is None:
                raise ValueError("both predictions and references are required")
            predictions, references = list(predictions), list(references)
            if len(predictions) != len(references):
                raise ValueError(
                    f"got {len(predictions)} predictions but {len(references)} references; "
                    "there must be exactly one reference entry (a string or a list of strings) per prediction"
                )
            if not predictions:
                raise ValueError("cannot compute BLEU/chrF on 0 predictions and 0 references")
            references = _as_reference_lists(references)
        return super().compute(predictions=predictions, references=references, **kwargs)

    def _compute(self, predictions, references, tokenize="13a", lowercase=False, chrf_plus_plus=False):
        predictions = [p if p is not None else "" for p in predictions]
        ref_lists = _as_reference_lists(references)
        if len(predictions) != len(ref_lists):  # only reachable via add_batch()
            raise ValueError(f"got {len(predictions)} predictions but {len(ref_lists)} references")
        # sacreBLEU wants reference *streams* (one list per reference index); pad the
        # examples with fewer references with None, which sacreBLEU skips.
        num_refs = max(len(refs) for refs in ref_lists)
        if num_refs == 0:
            raise ValueError("every prediction needs at least one reference")
        streams = [[refs[i] if i < len(refs) else None for refs in ref_lists] for i in range(num_refs)]

        bleu = sacrebleu.BLEU(tokenize=tokenize, lowercase=lowercase)
        bleu_score = bleu.corpus_score(predictions, streams)
        chrf = sacrebleu.CHRF(lowercase=lowercase)
        chrf_score = chrf.corpus_score(predictions, streams)
        exact = sum(pred in [r for r in refs if r is not None] for pred, refs in zip(predictions, ref_lists))

        result = {
            "bleu": float(bleu_score.score),
            "chrf": float(chrf_score.score),
            "exact_match": 100.0 * exact / len(predictions),
            "num_examples": len(predictions),
            "bleu_brevity_penalty": float(bleu_score.bp),
            "bleu_sys_len": int(bleu_score.sys_len),
            "bleu_ref_len": int(bleu_score.ref_len),
            "bleu_signature": str(bleu.get_signature()),
            "chrf_signature": str(chrf.get_signature()),
        }
        if chrf_plus_plus:
            chrfpp = sacrebleu.CHRF(word_order=2, lowercase=lowercase)
            result["chrfpp"] = float(chrfpp.corpus_score(predictions, streams).score)
            result["chrfpp_signature"] = str(chrfpp.get_signature())
        return result
