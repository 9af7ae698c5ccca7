"""The shipped BLEU/chrF ``evaluate`` module and the metric helpers (offline, seconds)."""

from __future__ import annotations

import socket

import pytest
import sacrebleu

from copynat.training.metrics import (
    METRIC_PATH,
    compute_generation_metrics,
    load_metric,
    sentence_bleu,
    sentence_chrf,
)

HYPS = [
    "The cat sat on the mat.",
    "A quick brown fox jumps over a lazy dog",
    "I am Kuroro.",
    "hello there general",
]
REFS = [
    "The cat is sitting on the mat.",
    "The quick brown fox jumps over the lazy dog.",
    "I am Kuroro.",
    "hello there, general Kenobi",
]


@pytest.fixture(scope="module")
def metric():
    return load_metric()


def test_metric_loads_by_local_path_without_network(monkeypatch):
    """evaluate.load(<local folder>) must neither resolve nor contact any host, offline mode or not."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    for offline in ("1", "0"):
        monkeypatch.setenv("HF_HUB_OFFLINE", offline)
        module = load_metric()
        assert module.name == "copynat_bleu_chrf"
        assert module.compute(predictions=["a b c d"], references=["a b c d"])["bleu"] == pytest.approx(100.0)
    assert attempts == []
    assert (METRIC_PATH / "copynat_bleu_chrf.py").is_file()


def test_identical_corpora_score_100(metric):
    result = metric.compute(predictions=REFS, references=REFS)
    assert result["bleu"] == pytest.approx(100.0)
    assert result["chrf"] == pytest.approx(100.0)
    assert result["exact_match"] == pytest.approx(100.0)
    assert result["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    assert "nc:6|nw:0" in result["chrf_signature"]


def test_bleu_and_chrf_equal_sacrebleu(metric):
    result = metric.compute(predictions=HYPS, references=REFS, chrf_plus_plus=True)
    assert result["bleu"] == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS]).score)
    assert result["chrf"] == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS]).score)
    assert result["chrfpp"] == pytest.approx(sacrebleu.CHRF(word_order=2).corpus_score(HYPS, [REFS]).score)
    assert result["exact_match"] == pytest.approx(25.0)
    assert result["num_examples"] == 4
    assert 0.0 < result["bleu"] < 100.0


def test_multiple_and_variable_references(metric):
    second = ["the cat sat on the mat .", "A quick brown fox jumps over a lazy dog", "I am Kuroro!", None]
    refs = [[a, b] if b is not None else [a] for a, b in zip(REFS, second)]
    result = metric.compute(predictions=HYPS, references=refs)
    assert result["bleu"] == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS, second]).score)
    assert result["chrf"] == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS, second]).score)
    assert result["exact_match"] == pytest.approx(50.0)


def test_tokenize_and_lowercase_options(metric):
    hyps, refs = ["THE CAT"], ["the cat"]
    result = metric.compute(predictions=hyps, references=refs, lowercase=True, tokenize="none")
    assert result["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs], lowercase=True, tokenize="none").score)
    assert "case:lc|" in result["bleu_signature"] and "tok:none" in result["bleu_signature"]


def test_compute_generation_metrics_returns_numbers_only():
    result = compute_generation_metrics(HYPS, REFS)
    assert result["bleu"] == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS]).score)
    assert result["chrf"] == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS]).score)
    assert all(isinstance(value, float) for value in result.values())
    assert "bleu_signature" not in result
    assert "chrfpp" in compute_generation_metrics(HYPS, REFS, chrf_plus_plus=True)


def test_mismatched_lengths_name_both_lengths(metric):
    with pytest.raises(ValueError, match=r"3 predictions but 2 references"):
        compute_generation_metrics(HYPS[:3], REFS[:2])
    with pytest.raises(ValueError, match=r"2 predictions but 4 references"):
        metric.compute(predictions=HYPS[:2], references=REFS)
    # the module is still usable after a rejected call
    assert metric.compute(predictions=REFS, references=REFS)["bleu"] == pytest.approx(100.0)


def test_empty_input_is_a_clear_error(metric):
    with pytest.raises(ValueError, match="0 predictions"):
        metric.compute(predictions=[], references=[])


def test_sentence_scores_equal_sacrebleu():
    for hyp, ref in zip(HYPS, REFS):
        assert sentence_bleu(hyp, ref) == pytest.approx(sacrebleu.sentence_bleu(hyp, [ref]).score)
        assert sentence_chrf(hyp, ref) == pytest.approx(sacrebleu.sentence_chrf(hyp, [ref]).score)
        assert sentence_chrf(hyp, ref, word_order=2) == pytest.approx(
            sacrebleu.sentence_chrf(hyp, [ref], word_order=2).score
        )
    assert sentence_bleu("I am Kuroro.", "I am Kuroro.") == pytest.approx(100.0)
    assert sentence_bleu("", "I am Kuroro.") == 0.0
    assert sentence_bleu("a b c", ["x y z", "a b c"]) == pytest.approx(100.0)
