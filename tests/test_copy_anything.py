"""Copying anything a user types: location, respacing, coverage, previous-token keys, valid UTF-8, and a
small model trained here that echoes a CJK name and a 12-digit number it never saw."""

from __future__ import annotations

import random

import pytest
import torch
from conftest import VOCAB, tiny_config, train_steps

from copynat import CopyNatForConditionalGeneration, train_tokenizer
from copynat.data import repeats_beyond_source
from copynat.modeling.copy_generator import respaced_token_ids
from copynat.modeling.copy_generator import CopyNatCache
from copynat.modeling.utf8_validity import byte_token_bounds, byte_token_classes

ALL_ON = dict(copy_location=True, copy_respace=True, copy_previous_token_keys=True, copy_coverage=True)


def test_respaced_token_ids_pair_each_piece_with_its_spaced_twin():
    vocab = {"<pad>": 0, "K": 1, "ĠK": 2, "ur": 3, "Ġ": 4, "▁x": 5, "x": 6, "only": 7}
    table = respaced_token_ids(vocab)
    assert table.tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


def _random_model(**overrides) -> CopyNatForConditionalGeneration:
    model = CopyNatForConditionalGeneration(tiny_config(**overrides)).eval()
    with torch.no_grad():  # the location, coverage and respacing weights start at zero: make them matter
        for parameter in model.copy_generator.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.5)
    vocab = {f"t{i}": i for i in range(VOCAB // 2)} | {f"Ġt{i}": VOCAB // 2 + i for i in range(VOCAB // 2)}
    model.set_vocabulary(vocab)
    return model


def test_generate_with_cache_equals_without_for_every_copy_addition():
    """Location reads the last step's copy attention, coverage the running sum its CopyNatCache keeps: cached
    decoding, step by step, must give exactly what a full recomputation at every step gives, beams included. The
    cache also keeps the copy attention's keys over the source: computed once a call, not once a step."""
    torch.manual_seed(0)
    model = _random_model(**ALL_ON)
    source = torch.randint(5, VOCAB, (3, 9))
    key_computations = []
    source_keys = model.copy_generator.source_keys
    model.copy_generator.source_keys = lambda states: key_computations.append(states.shape[0]) or source_keys(states)
    for settings in ({}, {"num_beams": 3, "num_return_sequences": 2}):
        key_computations.clear()
        cached = model.generate(source, max_new_tokens=10, output_scores=True, return_dict_in_generate=True,
                                **settings)
        assert key_computations == [3 * settings.get("num_beams", 1)], key_computations  # one call, every beam
        uncached = model.generate(source, max_new_tokens=10, output_scores=True, return_dict_in_generate=True,
                                  use_cache=False, **settings)
        assert torch.equal(cached.sequences, uncached.sequences), settings
        for a, b in zip(cached.scores, uncached.scores):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("copy_settings", [None, {}, ALL_ON], ids=["no-copy", "copy-defaults", "copy-all-on"])
def test_static_kv_cache_decodes_as_the_dynamic_one(copy_settings):
    """generate(cache_implementation="static") preallocates the decoder's keys and values (the shape CUDA graphs
    need): the unwritten slots are masked, so greedy and beam search give the dynamic cache's tokens and scores."""
    torch.manual_seed(1)
    model = (_random_model(**copy_settings) if copy_settings is not None
             else CopyNatForConditionalGeneration(tiny_config(use_copy_mechanism=False)).eval())
    if copy_settings is None:
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(torch.randn_like(parameter) * 0.3)
    source = torch.randint(5, VOCAB, (3, 9))
    for settings in ({}, {"num_beams": 3, "num_return_sequences": 2}):
        dynamic = model.generate(source, max_new_tokens=10, output_scores=True, return_dict_in_generate=True,
                                 **settings)
        static = model.generate(source, max_new_tokens=10, output_scores=True, return_dict_in_generate=True,
                                cache_implementation="static", **settings)
        assert torch.equal(static.sequences, dynamic.sequences), settings
        for a, b in zip(static.scores, dynamic.scores):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    model.generation_config.cache_implementation = "static"  # as a saved generation_config.json would set it
    assert torch.equal(model.generate(source, max_new_tokens=10), dynamic_greedy := model.generate(
        source, max_new_tokens=10, cache_implementation="dynamic"))
    assert dynamic_greedy.shape[0] == 3
    if copy_settings is not None:
        with pytest.raises(ValueError, match="cache_implementation='offloaded'"):
            model.generate(source, max_new_tokens=4, cache_implementation="offloaded")


def test_coverage_cache_reorders_repeats_and_crops_its_history():
    cache = CopyNatCache(tiny_config())
    cache.remember_copy_attention(torch.tensor([[[0.5, 0.5]], [[1.0, 0.0]]]))
    cache.remember_copy_attention(torch.tensor([[[0.0, 1.0]], [[0.0, 1.0]]]))
    cache.copy_keys = torch.tensor([[[1.0], [2.0]], [[3.0], [4.0]]])  # [batch, src, d]: one row a sequence
    assert cache.coverage().tolist() == [[0.5, 1.5], [1.0, 1.0]]
    cache.reorder_cache(torch.tensor([1, 1]))
    assert cache.coverage().tolist() == [[1.0, 1.0], [1.0, 1.0]]
    assert cache.copy_memory(with_coverage=False).last.tolist() == [[0.0, 1.0]] * 2
    assert cache.copy_keys.tolist() == [[[3.0], [4.0]]] * 2
    cache.batch_repeat_interleave(2)
    assert cache.coverage().shape == (4, 2) and cache.copy_keys.shape == (4, 2, 1)
    cache.crop(-1)  # assisted decoding takes steps back: the copy head forgets them, not the source's keys
    assert cache.coverage().tolist() == [[1.0, 0.0]] * 4
    assert cache.copy_keys.tolist() == [[[3.0], [4.0]]] * 4


def test_a_cache_without_the_copy_steps_is_refused_with_a_clear_message():
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    model = _random_model(**ALL_ON)
    source = torch.randint(5, VOCAB, (1, 5))
    with pytest.raises(ValueError, match="CopyNatCache"):
        model.generate(source, max_new_tokens=3, past_key_values=EncoderDecoderCache(DynamicCache(), DynamicCache()))
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    model(input_ids=source, decoder_input_ids=torch.tensor([[1]]), past_key_values=cache, use_cache=True)
    with pytest.raises(ValueError, match="CopyNatCache"):  # a second step by hand would lose the first one
        model(input_ids=source, decoder_input_ids=torch.tensor([[9]]), past_key_values=cache, use_cache=True)
    steps = CopyNatCache(model.config)  # by hand with a CopyNatCache: the same logits as one teacher-forced pass
    first = model(input_ids=source, decoder_input_ids=torch.tensor([[1]]), past_key_values=steps, use_cache=True)
    second = model(input_ids=source, decoder_input_ids=torch.tensor([[9]]), past_key_values=steps, use_cache=True)
    whole = model(input_ids=source, decoder_input_ids=torch.tensor([[1, 9]]), use_cache=False)
    torch.testing.assert_close(torch.cat((first.logits, second.logits), 1), whole.logits, atol=1e-5, rtol=1e-5)


def test_coverage_loss_is_absent_without_coverage_and_falls_with_it():
    source = torch.randint(5, VOCAB, (16, 8), generator=torch.Generator().manual_seed(1))
    batch = lambda step: (source, source)  # noqa: E731 - copy the source: attend to each position once
    plain = CopyNatForConditionalGeneration(tiny_config(copy_coverage=False))
    out = plain(input_ids=source, labels=source)
    assert out.coverage_loss is None and torch.allclose(out.loss, out.ar_loss)
    torch.manual_seed(0)
    covered = CopyNatForConditionalGeneration(tiny_config(copy_coverage=True, coverage_loss_weight=1.0))
    before = covered(input_ids=source, labels=source)
    assert before.coverage_loss > 0
    torch.testing.assert_close(before.loss, before.ar_loss + before.coverage_loss)
    train_steps(covered, 60, batch)
    after = covered(input_ids=source, labels=source)
    assert after.coverage_loss < 0.5 * before.coverage_loss, (float(before.coverage_loss), float(after.coverage_loss))


def test_loss_from_gathered_terms_equals_the_full_mixture_with_every_copy_addition():
    import torch.nn.functional as F

    input_ids = torch.tensor([[7, 9, 9, 11, 40, 2, 0], [12, 13, 14, 15, 16, 17, 2]])
    labels = torch.tensor([[9, 11, 8, 2], [13, 45, 17, 2]])  # 8 = respaced 40, 45 = respaced 13 (VOCAB 64)
    attention_mask = (input_ids != 0).long()
    valid = labels != -100
    for smoothing in (0.0, 0.1):
        torch.manual_seed(0)
        model = _random_model(label_smoothing=smoothing, **ALL_ON)
        out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
        log_p = out.logits.reshape(-1, VOCAB)
        nll = F.nll_loss(log_p, labels.reshape(-1), reduction="sum")
        reference = ((1 - smoothing) * nll - smoothing * log_p.mean(-1)[valid.reshape(-1)].sum()) / valid.sum()
        torch.testing.assert_close(out.ar_loss, reference, atol=1e-5, rtol=1e-5)


def test_respacing_copies_a_piece_with_its_leading_space_toggled():
    """With p_gen = 0 and the respacing gate fully open, the mass of each source position goes to its spaced twin."""
    model = _random_model(copy_respace=True)
    with torch.no_grad():
        model.copy_generator.gate.weight.zero_()
        model.copy_generator.gate.bias.fill_(-1e4)  # copy only
        model.copy_generator.respace.weight.zero_()
        model.copy_generator.respace.bias.fill_(1e4)  # always toggle the space
    source = torch.tensor([[10, 11, 12]])
    out = model(input_ids=source, decoder_input_ids=torch.tensor([[1]]), output_copy_info=True)
    twins = model.copy_generator.respaced_ids[source[0]]
    assert twins.tolist() == [42, 43, 44]
    torch.testing.assert_close(out.logits.exp()[0, 0, twins], out.copy_attention[0, 0], atol=1e-6, rtol=1e-5)


# --------------------------------------------------------------------------------------------------- UTF-8


def _byte_level_tokenizer():
    return train_tokenizer(["我是庫洛洛。 Привет, Мария! שלום 👋🏽"] * 30, vocab_size=300)


def test_byte_token_classes_describe_where_characters_start_and_end():
    tokenizer = _byte_level_tokenizer()
    classes = byte_token_classes(tokenizer.get_vocab(), len(tokenizer))
    by_piece = lambda piece: classes[tokenizer.convert_tokens_to_ids(piece)].tolist()  # noqa: E731
    assert by_piece("A") == [0, 0, 0, 1]  # ASCII: a whole character
    assert by_piece("å") == [0, 0, 2, 1]  # E5: opens a three-byte character
    assert by_piece("º") == [1, 1, 0, 1]  # BA: a lone continuation byte
    assert by_piece("</s>") == [0, 0, 0, 1]


def test_no_lead_byte_that_utf8_forbids_and_no_overlong_or_surrogate_continuation():
    from copynat.modeling.utf8_validity import Utf8ValidityLogitsProcessor, byte_level_alphabet

    character = {byte: piece for piece, byte in byte_level_alphabet().items()}
    vocab = {"<pad>": 0, **{character[byte]: byte + 1 for byte in range(256)}}  # every byte, one piece each
    piece = lambda byte: byte + 1  # noqa: E731
    processor = Utf8ValidityLogitsProcessor(byte_token_classes(vocab), bounds=byte_token_bounds(vocab))
    allowed = lambda *bytes_so_far: processor(  # noqa: E731
        torch.tensor([[0, *map(piece, bytes_so_far)]]), torch.zeros(1, len(vocab)))[0].isfinite()
    start = allowed()
    assert not any(start[piece(b)] for b in (0xC0, 0xC1, *range(0xF5, 0x100)))  # never a lead in UTF-8
    assert start[piece(0xC2)] and start[piece(0xE0)] and start[piece(0xF4)] and not start[piece(0x80)]
    after_e0 = allowed(0xE0)  # 0xE0 0x80-0x9F would be an overlong form
    assert not after_e0[piece(0x80)] and not after_e0[piece(0x9F)] and after_e0[piece(0xA4)]
    after_ed = allowed(0xED)  # 0xED 0xA0-0xBF would be a surrogate
    assert after_ed[piece(0x9F)] and not after_ed[piece(0xA0)]
    assert allowed(0xF4)[piece(0x8F)] and not allowed(0xF4)[piece(0x90)]  # nothing past U+10FFFF
    assert allowed(0xE0, 0xA4)[piece(0x80)]  # only the byte right after the lead is narrowed
    assert not allowed(0xE0, 0xA4)[piece(ord("A"))]


def test_generate_never_breaks_a_character():
    tokenizer = _byte_level_tokenizer()
    torch.manual_seed(0)
    model = CopyNatForConditionalGeneration(tiny_config(vocab_size=len(tokenizer), max_position_embeddings=128)).eval()
    model.set_vocabulary(tokenizer.get_vocab())
    source = tokenizer(["我是庫洛洛。", "Привет, Мария!"], return_tensors="pt", padding=True)
    broken = 0
    for seed in range(6):
        torch.manual_seed(seed)
        valid = model.generate(**source, do_sample=True, max_new_tokens=24, eos_token_id=None)
        assert not any("\ufffd" in text for text in tokenizer.batch_decode(valid, skip_special_tokens=True))
        torch.manual_seed(seed)
        free = model.generate(**source, do_sample=True, max_new_tokens=24, eos_token_id=None, valid_utf8=False)
        broken += sum("\ufffd" in text for text in tokenizer.batch_decode(free, skip_special_tokens=True))
    assert broken > 0  # an untrained model breaks characters without the constraint: the test can fail


# ---------------------------------------------------------------------------------- a small trained echo model


@pytest.fixture(scope="module")
def echo_model(tmp_path_factory):
    """copynat-train's recipe on the embedded echo task at a smaller size (about half a minute on two cores)."""
    from copynat.training.cli import parse_train_args
    from copynat.training.loop import train

    out = tmp_path_factory.mktemp("echo") / "model"
    argv = ["--output_dir", str(out), "--d_model", "64", "--ffn_dim", "256", "--max_steps", "500",
            "--eval_steps", "500", "--num_eval_samples", "100", "--max_eval_samples", "200", "--progress_bar",
            "false", "--report_to", "none", "--plot", "false", "--num_threads", "2"]
    results = train(*parse_train_args(argv))
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    return (AutoModelForSeq2SeqLM.from_pretrained(out).eval(), AutoTokenizer.from_pretrained(out), results)


def _unseen(make, training: set[str], seed: int) -> str:
    rng = random.Random(seed)
    while True:
        entity = make(rng)
        if entity not in training:
            return entity


def test_a_small_trained_model_copies_a_cjk_name_and_a_long_number_it_never_saw(echo_model):
    from copynat.data import entity_copy_rate, make_echo_examples

    model, tokenizer, _ = echo_model
    training = {e for row in make_echo_examples(20000, "train") for e in row["entities"]}
    cjk = [_unseen(lambda rng: "".join(chr(rng.randint(0x4E00, 0x9FFF)) for _ in range(3)), training, s)
           for s in range(4)]
    numbers = [_unseen(lambda rng: "00" + "".join(rng.choice("0123456789") for _ in range(10)), training, s)
               for s in range(4)]
    sources = [f"我是{name}。" for name in cjk] + [f"Please call me at {number}." for number in numbers]
    expected = [f"你好!{name}!" for name in cjk] + [f"Sure, I will call {number}." for number in numbers]
    inputs = tokenizer(sources, return_tensors="pt", padding=True)
    replies = tokenizer.batch_decode(model.generate(**inputs, max_new_tokens=48), skip_special_tokens=True)
    copied = [entity_copy_rate([reply], [[entity]], [reference]) == 1.0
              for reply, entity, reference in zip(replies, cjk + numbers, expected)]
    assert all(copied), list(zip(replies, expected))


def _until_eos(ids: list[int], tokenizer) -> list[int]:
    return ids[:ids.index(tokenizer.eos_token_id)] if tokenizer.eos_token_id in ids else ids


def test_repeats_beyond_source_finds_loops_only():
    assert repeats_beyond_source([5, 6, 6, 6, 6, 7], [5, 6, 7])
    assert not repeats_beyond_source([5, 6, 6, 6, 6, 7], [6, 6, 6, 6])
    assert repeats_beyond_source([1, 8, 9, 8, 9, 8, 9, 8, 9], [8, 9, 2])
    assert not repeats_beyond_source([1, 8, 9, 8, 9, 8, 9, 2], [8, 9, 2])  # three times is allowed


def test_loop_guard_bans_only_the_piece_that_would_loop_beyond_the_source():
    from copynat.modeling.copy_completion import RepetitionBeyondSourceLogitsProcessor

    source = torch.tensor([[5, 6, 6, 6, 6, 7, 0], [8, 9, 2, 0, 0, 0, 0]])
    guard = RepetitionBeyondSourceLogitsProcessor(source, pad_token_id=0)
    written = torch.tensor([[1, 6, 6, 6], [1, 3, 3, 3]])  # the decoder start token first
    allowed = guard(written, torch.zeros(2, 12)).isfinite()
    assert allowed[0].all()  # the source has 6 four times in a row: the copy may too
    assert not allowed[1, 3] and allowed[1].sum() == 11  # a fourth 3 is banned, nothing else
    units = torch.tensor([[1, 8, 9, 8, 9, 8, 9, 8]] * 2)
    allowed = guard(units, torch.zeros(2, 12)).isfinite()
    assert not allowed[:, 9].any() and allowed[:, 8].all()  # a two-piece unit (8 9) four times
    beams = guard(written.repeat_interleave(3, 0), torch.zeros(6, 12)).isfinite()  # beams repeat their source
    assert beams[:3].all() and not beams[3:, 3].any()
    assert guard(written, torch.full((2, 12), float("-inf")).index_fill(1, torch.tensor([3]), 0.0))[1, 3] == 0.0


def test_no_repetition_loops_on_the_out_of_distribution_split(echo_model):
    from copynat.data import make_echo_ood_examples

    model, tokenizer, _ = echo_model
    rows = make_echo_ood_examples(200)
    loops = []
    for start in range(0, len(rows), 100):
        batch = rows[start:start + 100]
        inputs = tokenizer([row["source"] for row in batch], return_tensors="pt", padding=True)
        outputs = model.generate(**inputs, max_new_tokens=96)
        for row, source, output in zip(batch, inputs["input_ids"].tolist(), outputs.tolist()):
            source, output = _until_eos(source, tokenizer), _until_eos(output[1:], tokenizer)
            if repeats_beyond_source(output, source):
                loops.append((row["source"], tokenizer.decode(output, skip_special_tokens=True)))
    assert not loops, loops[:5]


# ------------------------------------------------------------------------------------ whole copied words


def _word_vocab() -> dict[str, int]:
    """A byte-level vocabulary with word-start pieces (Ġ), word-internal pieces, punctuation and Cyrillic bytes."""
    pieces = ["<pad>", "<s>", "</s>", "<unk>", "<mask>", "ĠMoh", "Moh", "am", "med", "ĠA", "Ġman", "Ġnamed", "Ġrides",
              ".", "ĠEin", "ĠMann", "Ġnamens", "Ġfährt", "ist", "-", "ĠÐ", "ŀ", "Ðµ", "Ġis"]
    return {piece: index for index, piece in enumerate(pieces)}


def test_word_piece_classes_tell_word_starts_from_word_pieces():
    from copynat.modeling.copy_completion import word_piece_classes

    vocab = _word_vocab()
    table = word_piece_classes(vocab, len(vocab) + 2)
    row = lambda piece: table[vocab[piece]].tolist()  # noqa: E731  (space first, word first, word last)
    assert row("ĠMoh") == [True, True, True] and row("am") == [False, True, True]
    assert row(".") == [False, False, False] and row("-") == [False, False, False]
    assert row("<pad>") == [False, False, False] and table[-1].tolist() == [False, False, False]
    assert row("ŀ") == [False, True, True]  # a continuation byte carries on a character, so a word
    assert row("ĠÐ") == [True, True, True]  # a character left open: inside a word
    from copynat.modeling.utf8_validity import byte_level_alphabet

    as_piece = {byte: character for character, byte in byte_level_alphabet().items()}
    spell = lambda text: "".join(as_piece[byte] for byte in text.encode())  # noqa: E731
    han = {spell("和"): 0, spell("和")[:1]: 1, spell("和")[1:]: 2, spell("한"): 3}
    cjk = word_piece_classes(han).tolist()
    # Han is written without spaces: a Han character, or the piece that begins one, begins no word (only the
    # bytes that finish a character carry it on); Korean spaces its words, so Hangul is word text
    assert cjk[0] == [False, False, False] and cjk[1] == [False, False, True] and cjk[2] == [False, True, True]
    assert cjk[3] == [False, True, True]


def test_a_copied_word_is_finished_and_not_carried_on():
    """"A man named Mohammed rides." (ĠA Ġman Ġnamed ĠMoh am med Ġrides .): after "ĠMoh am" only "med" may follow;
    after the whole "ĠMoh am med" no word piece may carry it on ("ist"); elsewhere nothing is constrained."""
    from copynat.modeling.copy_completion import CopiedWordCompletionLogitsProcessor, word_piece_classes

    vocab = _word_vocab()
    v = vocab.__getitem__
    source = torch.tensor([[v("ĠA"), v("Ġman"), v("Ġnamed"), v("ĠMoh"), v("am"), v("med"), v("Ġrides"), v("."),
                            v("</s>")]])
    canonical = torch.arange(len(vocab))
    canonical[v("Moh")] = v("ĠMoh")  # respacing: "Moh" is "ĠMoh" without its space
    processor = CopiedWordCompletionLogitsProcessor(source, word_piece_classes(vocab), canonical, pad_token_id=0)
    scores = torch.zeros(1, len(vocab))
    allowed = lambda *written: (processor(torch.tensor([[1, *map(v, written)]]), scores.clone())  # noqa: E731
                                > float("-inf"))[0]
    assert allowed("ĠEin", "ĠMann", "Ġnamens").all()  # not a copy: free
    assert allowed("ĠEin", "ĠMoh").nonzero().flatten().tolist() == [v("am")]  # the copy has begun: go on
    assert allowed("ĠEin", "-", "Moh").nonzero().flatten().tolist() == [v("am")]  # ... with or without the space
    assert allowed("ĠEin", "ĠMoh", "am").nonzero().flatten().tolist() == [v("med")]
    whole = allowed("ĠEin", "ĠMoh", "am", "med")
    assert not whole[v("ist")] and not whole[v("am")]  # a whole copied word is not carried on ...
    assert whole[v("Ġfährt")] and whole[v(".")] and whole[v("-")] and whole[v("</s>")]  # ... anything else goes
    assert allowed("ĠEin", "ĠMann", "ist").all()  # "ĠMann" is no source word: free
    # beams: rows repeat each source, and each row is judged on its own written pieces
    rows = torch.tensor([[1, v("ĠMoh")], [1, v("ĠMann")]])
    out = processor(rows, torch.zeros(2, len(vocab))) > float("-inf")
    assert out[0].nonzero().flatten().tolist() == [v("am")] and out[1].all()


def test_generate_copies_source_words_whole_once_the_vocabulary_is_set():
    """A random copy model with set_vocabulary: whenever the word it writes is a copy of the start of a source word,
    its next piece is that word's next piece (greedy and beam search), and it never loops beyond the source;
    complete_copied_words=False and stop_loops=False turn both off."""
    from copynat.modeling.copy_completion import CopiedWordCompletionLogitsProcessor

    torch.manual_seed(3)
    model = _random_model()
    assert bool(model.output_head.word_piece_classes.any())
    source = torch.randint(5, VOCAB, (6, 10), generator=torch.Generator().manual_seed(2))
    classes, canonical = model.output_head.word_piece_classes, model.copy_generator.canonical_ids(torch.arange(VOCAB))
    for settings in ({}, {"num_beams": 3}):
        out = model.generate(source, max_new_tokens=12, **settings)
        checker = CopiedWordCompletionLogitsProcessor(source, classes, canonical, pad_token_id=0)
        for step in range(2, out.shape[1]):
            allowed = checker(out[:, :step], torch.zeros(out.shape[0], VOCAB)) > float("-inf")
            taken = allowed.gather(1, out[:, step:step + 1]).squeeze(1) | (out[:, step] == 0)  # 0: padding
            assert bool(taken.all()), (settings, step)
        # and the loop guard: this random model repeats itself (see `free` below), never beyond the source here
        assert not any(repeats_beyond_source(row[1:], src) for row, src in zip(out.tolist(), source.tolist()))
    free = model.generate(source, max_new_tokens=12, complete_copied_words=False, stop_loops=False)
    assert any(repeats_beyond_source(row[1:], src) for row, src in zip(free.tolist(), source.tolist()))
    model.output_head.word_piece_classes.zero_()  # a vocabulary never set: nothing to constrain
    assert torch.equal(model.generate(source, max_new_tokens=12), free)
