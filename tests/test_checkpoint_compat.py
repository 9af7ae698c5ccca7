"""Checkpoints saved by older copynat code still load and decode to the tokens they decoded to then.

The folders under tests/fixtures/pre_redesign/ were written by make_checkpoints.py there, at commit f979f8b (before the
heads became modules of their own), with the tokens that code decoded; this code must give the same tokens."""

import json
from pathlib import Path

import pytest
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

import copynat  # noqa: F401  (registers the Auto classes)

FIXTURES = Path(__file__).parent / "fixtures" / "pre_redesign"


@pytest.mark.parametrize("name", ["hybrid_cmlm_copy", "hybrid_ctc_coverage"])
def test_pre_redesign_checkpoint_decodes_the_same_tokens(name):
    folder = FIXTURES / name
    expected = json.loads((folder / "expected.json").read_text())
    model = AutoModelForSeq2SeqLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    inputs = tokenizer(expected["probes"], return_tensors="pt", padding=True)
    parallel = {} if model.config.nat_training == "ctc" else {"nat_iterations": 2}
    assert model.generate(**inputs, max_new_tokens=20).tolist() == expected["greedy"]
    assert model.generate(**inputs, num_beams=2, max_new_tokens=20).tolist() == expected["beam2"]
    assert model.generate(**inputs, non_autoregressive=True, **parallel).tolist() == expected["parallel"]
