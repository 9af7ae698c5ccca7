"""Drafted decoding: the parallel decoder drafts, the AT decoder verifies; the output is plain greedy's, token for token,
in batches whose rows keep different numbers of tokens a round."""

import pytest
import torch
from conftest import VOCAB, tiny_config, train_steps

from copynat import CopyNatForConditionalGeneration
from copynat.modeling import drafted_decoding


def variable_copy_batch(batch: int, generator: torch.Generator, low: int = 3, high: int = 9):
    """Copy task with lengths low..high-1: target = source tokens then </s>, right-padded; labels -100 on padding."""
    lengths = torch.randint(low, high, (batch,), generator=generator)
    tokens = torch.randint(5, VOCAB, (batch, high), generator=generator)
    positions = torch.arange(high + 1)[None, :]
    source = torch.cat((tokens, torch.zeros(batch, 1, dtype=torch.long)), dim=1)
    source = source.masked_fill(positions == lengths[:, None], 2).masked_fill(positions > lengths[:, None], 0)
    return source, source.masked_fill(source == 0, -100)


@pytest.fixture(scope="module")
def drafting_model():
    """A hybrid model (AT decoder + CTC parallel decoder, copy head with location) trained briefly on a copy task of
    varying lengths: its drafts are partly right, so rows keep different numbers of tokens a round."""
    torch.manual_seed(0)
    model = CopyNatForConditionalGeneration(tiny_config(decoder_mode="hybrid", nat_training="ctc"))
    generator = torch.Generator().manual_seed(0)
    train_steps(model, 150, lambda step: variable_copy_batch(32, generator))
    return model.eval()


def probe_batch(seed: int = 7, batch: int = 12):
    source, _ = variable_copy_batch(batch, torch.Generator().manual_seed(seed))
    return source, (source != 0).long()


def test_drafted_equals_greedy_in_batches_whose_rows_keep_different_lengths(drafting_model):
    source, mask = probe_batch()
    greedy = drafting_model.generate(source, attention_mask=mask, max_new_tokens=12)
    drafted = drafting_model.generate(source, attention_mask=mask, max_new_tokens=12, draft="parallel",
                                      return_dict_in_generate=True)
    assert torch.equal(drafted.sequences, greedy)
    written = (greedy[:, 1:] != 0).sum(1)
    assert len(set(drafted.rounds.tolist())) > 1  # rows needed different numbers of rounds
    assert int(drafted.rounds.sum()) < int(written.sum())  # fewer AT passes than tokens: the drafts helped
    for length in (1, 3, 5):  # a budget that cuts rows mid-draft
        assert torch.equal(drafting_model.generate(source, attention_mask=mask, max_new_tokens=length,
                                                   draft="parallel"),
                           drafting_model.generate(source, attention_mask=mask, max_new_tokens=length))
    windowed = drafting_model.generate(source, attention_mask=mask, max_new_tokens=12, draft="parallel",
                                       draft_window=2, return_dict_in_generate=True)
    assert torch.equal(windowed.sequences, greedy)
    assert bool((windowed.rounds >= (written + 2) // 3).all())  # at most two drafted tokens and one more a round


def test_a_wrong_draft_still_gives_greedy_one_token_a_round(drafting_model, monkeypatch):
    source, mask = probe_batch(batch=5)
    greedy = drafting_model.generate(source, attention_mask=mask, max_new_tokens=12)
    wrong = torch.full((5, 10), VOCAB - 1)  # a token the copy task never writes here, and no </s>
    monkeypatch.setattr(drafted_decoding, "parallel_draft", lambda model, source, penalty: wrong)
    drafted = drafting_model.generate(source, attention_mask=mask, max_new_tokens=12, draft="parallel",
                                      return_dict_in_generate=True)
    assert torch.equal(drafted.sequences, greedy)
    assert drafted.rounds.tolist() == (greedy[:, 1:] != 0).sum(1).tolist()


def test_a_perfect_draft_finishes_in_one_verification_pass(drafting_model, monkeypatch):
    source, mask = probe_batch(batch=6)
    greedy = drafting_model.generate(source, attention_mask=mask, max_new_tokens=12)
    assert bool((greedy == 2).any(1).all())  # every row ends with </s> within the budget
    monkeypatch.setattr(drafted_decoding, "parallel_draft", lambda model, source, penalty: greedy[:, 1:])
    drafted = drafting_model.generate(source, attention_mask=mask, max_new_tokens=12, draft="parallel",
                                      return_dict_in_generate=True)
    assert torch.equal(drafted.sequences, greedy)
    assert drafted.rounds.tolist() == [1] * 6


def test_logits_processors_hold_at_every_verified_position(drafting_model, monkeypatch):
    """A drafted token that a logits processor forbids is not kept, even where the AT decoder would choose it: the
    output is greedy's under the same processor."""
    from transformers import LogitsProcessor

    source, mask = probe_batch(batch=4)
    plain = drafting_model.generate(source, attention_mask=mask, max_new_tokens=12)

    class NoThirdToken(LogitsProcessor):  # bans, at the third output position, the token plain greedy writes there
        def __call__(self, input_ids, scores):
            if (input_ids != 0).sum(1).max() == 3:
                written = (input_ids != 0).sum(1) == 3
                return scores.masked_fill(written[:, None] & (torch.arange(scores.shape[1]) == plain[:, 3:4]),
                                          float("-inf"))
            return scores

    constrained = drafting_model.generate(source, attention_mask=mask, max_new_tokens=12,
                                          logits_processor=[NoThirdToken()])
    assert not torch.equal(constrained, plain)
    monkeypatch.setattr(drafted_decoding, "parallel_draft", lambda model, source, penalty: plain[:, 1:])
    drafted = drafting_model.generate(source, attention_mask=mask, max_new_tokens=12, draft="parallel",
                                      logits_processor=[NoThirdToken()])
    assert torch.equal(drafted, constrained)


def test_the_default_utf8_and_word_rules_change_drafted_tokens_as_they_change_greedy_ones(monkeypatch):
    """With a byte-level vocabulary set, copynat's default constraints (valid UTF-8, whole copied words, the loop
    guard) change the raw greedy output of an untrained model; drafting that raw output, the drafted decoding must
    still give the constrained greedy output."""
    from copynat import train_tokenizer

    texts = ["I am 欧阳娜娜.", "Hello, Þórdís!", "I am Kuroro.", "ศรีสุดา เชียงใหม่", "0049301234567890"] * 20
    tokenizer = train_tokenizer(texts, vocab_size=300)
    torch.manual_seed(3)
    model = CopyNatForConditionalGeneration(tiny_config(vocab_size=len(tokenizer), decoder_mode="hybrid",
                                                        nat_training="ctc")).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.3)
    model.set_vocabulary(tokenizer.get_vocab())
    inputs = tokenizer(["I am 欧阳娜娜.", "Hello, Þórdís!", "ศรีสุดา"], return_tensors="pt", padding=True)
    raw = model.generate(**inputs, max_new_tokens=16, valid_utf8=False, complete_copied_words=False,
                         stop_loops=False)
    constrained = model.generate(**inputs, max_new_tokens=16)
    assert not torch.equal(raw, constrained)  # the rules matter for this model
    monkeypatch.setattr(drafted_decoding, "parallel_draft", lambda model, source, penalty: raw[:, 1:])
    assert torch.equal(model.generate(**inputs, max_new_tokens=16, draft="parallel"), constrained)
    assert torch.equal(model.generate(**inputs, max_new_tokens=16, draft="parallel", valid_utf8=False,
                                      complete_copied_words=False, stop_loops=False), raw)


def test_relaxed_acceptance_keeps_drafted_tokens_the_ar_decoder_ranks_high_enough(drafting_model, monkeypatch):
    source, mask = probe_batch(batch=4)
    greedy = drafting_model.generate(source, attention_mask=mask, max_new_tokens=12)
    draft = greedy[:, 1:].clone()
    draft[:, 1] = VOCAB - 2  # a token greedy does not write
    monkeypatch.setattr(drafted_decoding, "parallel_draft", lambda model, source, penalty: draft)
    exact = drafting_model.generate(source, attention_mask=mask, max_new_tokens=12, draft="parallel")
    assert torch.equal(exact, greedy)
    anything = drafting_model.generate(source, attention_mask=mask, max_new_tokens=12, draft="parallel",
                                       draft_top_k=VOCAB)
    assert bool((anything[:, 2] == VOCAB - 2).all())  # within the top VOCAB: kept
    near = drafting_model.generate(source, attention_mask=mask, max_new_tokens=12, draft="parallel",
                                   draft_top_k=VOCAB, draft_margin=0.0)
    assert torch.equal(near, greedy)  # a margin of 0 keeps only tokens as likely as the best


def test_drafted_decoding_streams_the_kept_tokens(drafting_model):
    source, mask = probe_batch(batch=1)

    class Collect:
        def __init__(self):
            self.chunks, self.ended = [], False

        def put(self, value):
            self.chunks.append(value.reshape(-1).tolist())

        def end(self):
            self.ended = True

    streamer = Collect()
    output = drafting_model.generate(source, attention_mask=mask, max_new_tokens=12, draft="parallel",
                                     streamer=streamer)
    assert streamer.ended and [token for chunk in streamer.chunks for token in chunk] == output[0].tolist()


def test_drafted_decoding_refuses_what_it_cannot_do():
    source = torch.randint(5, VOCAB, (2, 6))
    ar_only = CopyNatForConditionalGeneration(tiny_config(decoder_mode="ar")).eval()
    with pytest.raises(ValueError, match="parallel decoder.*decoder_mode='ar'"):
        ar_only.generate(source, draft="parallel")
    nat_only = CopyNatForConditionalGeneration(tiny_config(decoder_mode="nat", nat_training="ctc")).eval()
    with pytest.raises(ValueError, match="autoregressive decoder.*'nat'"):
        nat_only.generate(source, draft="parallel")
    hybrid = CopyNatForConditionalGeneration(tiny_config(decoder_mode="hybrid", nat_training="ctc")).eval()
    for arguments, message in (({"draft": "lookup"}, "not a drafter"), ({"draft_window": 2}, "pass draft='parallel'"),
                               ({"draft": "parallel", "draft_window": 0}, "draft_window"),
                               ({"draft": "parallel", "draft_top_k": 0}, "draft_top_k"),
                               ({"draft": "parallel", "draft_margin": -1.0}, "draft_margin"),
                               ({"draft": "parallel", "num_beams": 2}, "num_beams"),
                               ({"draft": "parallel", "repetition_penalty": 1.2}, "repetition_penalty"),
                               ({"draft": "parallel", "non_autoregressive": True}, "drop non_autoregressive"),
                               ({"draft": "parallel", "output_scores": True}, "does not take output_scores")):
        with pytest.raises(ValueError, match=message):
            hybrid.generate(source, **arguments)
