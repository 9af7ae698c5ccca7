"""Streaming (issue 31): generate(streamer=...) with transformers' TextIteratorStreamer, as chat-like apps use it.

Autoregressive decodings stream through transformers' own loop, one token at a time; parallel decodings hand over
their whole output at once; drafted decoding hands over each verified chunk. The streamed text is generate()'s text, and no chunk holds a broken UTF-8 character
(byte-level pieces split CJK characters and emoji; a chunk must never end inside one).
"""

import threading

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, LogitsProcessor, TextIteratorStreamer, pipeline
from transformers.generation.streamers import BaseStreamer

SOURCES = ["My name is Ann and I live in Paris.", "我是庫洛洛。"]
DECODINGS = {
    "greedy": {},
    "sample": {"do_sample": True, "top_k": 20},
    "parallel": {"non_autoregressive": True, "nat_iterations": 1},
    "mask_predict": {"non_autoregressive": True, "nat_iterations": 4},
    "drafted": {"draft": "parallel"},  # issue 30: the verified chunks of the parallel draft
}


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_echo_folder):
    return AutoModelForSeq2SeqLM.from_pretrained(tiny_echo_folder).eval(), AutoTokenizer.from_pretrained(tiny_echo_folder)


def streamed(model, tokenizer, source: str, **kwargs) -> tuple[list[str], str]:
    """(the chunks a TextIteratorStreamer yields while generate() runs in a thread, generate()'s decoded text)."""
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=120)
    batch = tokenizer([source], return_tensors="pt")
    result = {}

    def run():
        with torch.no_grad():
            result["ids"] = model.generate(**batch, streamer=streamer, **kwargs)

    thread = threading.Thread(target=run)
    thread.start()
    chunks = list(streamer)
    thread.join()
    return chunks, tokenizer.decode(result["ids"][0], skip_special_tokens=True)


@pytest.mark.parametrize("decoding", DECODINGS)
@pytest.mark.parametrize("source", SOURCES)
def test_streamed_text_is_generates_text(model_and_tokenizer, decoding, source):
    model, tokenizer = model_and_tokenizer
    torch.manual_seed(0)
    chunks, text = streamed(model, tokenizer, source, **DECODINGS[decoding])
    torch.manual_seed(0)
    with torch.no_grad():
        direct = model.generate(**tokenizer([source], return_tensors="pt"), **DECODINGS[decoding])
    assert "".join(chunks) == text == tokenizer.decode(direct[0], skip_special_tokens=True)
    # a chunk never shows a character's first bytes as U+FFFD (which the complete text then replaces); a parallel
    # pass without the UTF-8 constraint may emit broken bytes, and then the text itself holds U+FFFD
    assert sum(chunk.count("\ufffd") for chunk in chunks) == text.count("\ufffd")
    recorder = Recorder()
    torch.manual_seed(0)
    with torch.no_grad():
        model.generate(**tokenizer([source], return_tensors="pt"), streamer=recorder, **DECODINGS[decoding])
    assert recorder.ended and recorder.puts[0] == [model.config.decoder_start_token_id]  # the prompt, skipped
    assert sum(recorder.puts[1:], []) == direct[0, 1:].tolist()
    if DECODINGS[decoding].get("non_autoregressive"):
        assert len(recorder.puts) == 2  # decided at once, handed over at once
    elif "draft" in DECODINGS[decoding]:
        assert all(recorder.puts[1:])  # each verified chunk as it is kept
    else:
        assert all(len(put) == 1 for put in recorder.puts[1:])  # one token as each is decided


class Recorder(BaseStreamer):
    """What generate() hands a streamer: the token ids of each put() call, and whether end() came."""

    def __init__(self):
        self.puts, self.ended = [], False

    def put(self, value):
        self.puts.append(value.reshape(-1).tolist())

    def end(self):
        self.ended = True


def test_the_pipeline_streams_too(tiny_echo_folder):
    generator = pipeline("text2text-generation", model=str(tiny_echo_folder))
    for decoding in ("greedy", "mask_predict"):
        streamer = TextIteratorStreamer(generator.tokenizer, skip_prompt=True, skip_special_tokens=True)
        result = generator(SOURCES[0], decoding=decoding, streamer=streamer)  # the queue holds what was streamed
        assert "".join(streamer) == result[0]["generated_text"]


class ForceText(LogitsProcessor):
    """Makes generate() write the given token ids, then </s>: a scripted output through the real decoding loop."""

    def __init__(self, ids: list[int], eos_token_id: int):
        self.ids, self.eos = ids, eos_token_id

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1] - 1  # the decoder-start token came first
        forced = torch.full_like(scores, float("-inf"))
        forced[:, self.ids[step] if step < len(self.ids) else self.eos] = 0.0
        return forced


def test_no_chunk_breaks_a_utf8_character(model_and_tokenizer):
    """CJK characters and emoji, several byte pieces each in a byte-level vocabulary: every chunk is whole text."""
    model, tokenizer = model_and_tokenizer
    reply = "你好!庫洛洛 😀 and 🇯🇵 ok, 𠜎 Wörld 👩‍👩‍👧!"
    ids = tokenizer(reply, add_special_tokens=False)["input_ids"]
    pieces = tokenizer.convert_ids_to_tokens(ids)
    assert sum(tokenizer.decode([i]) == "\ufffd" for i in ids) >= 3, pieces  # the reply is spelled with byte pieces
    chunks, text = streamed(model, tokenizer, "我是庫洛洛。", logits_processor=[ForceText(ids, model.config.eos_token_id)],
                            max_new_tokens=len(ids) + 1, valid_utf8=False, complete_copied_words=False,
                            stop_loops=False)
    assert text == reply
    assert "".join(chunks) == reply
    assert len(chunks) > 3
    for chunk in chunks:
        assert "\ufffd" not in chunk, chunks
        assert chunk.encode("utf-8").decode("utf-8") == chunk  # whole characters, no lone surrogates
