"""CopyNatPipeline (issue 31): pipeline() for copynat models, on a tiny trained echo model folder.

What a user relies on: the pipeline says what generate() says (every decoding, batched or not); the copied spans
point where the copy head copied from; bad arguments get errors naming them; a saved folder runs as a pipeline in a
Python without copynat, offline, and with copynat under the task name "text2text-generation" without remote code.
"""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, pipeline

from copynat import CopyNatConfig, CopyNatForConditionalGeneration, CopyNatPipeline
from copynat.modeling.copy_spans import copy_spans, prefix_offsets
from copynat.modeling.pipeline_copynat import CUSTOM_TASK, DECODINGS
from tiny_echo import WITHOUT_COPYNAT

SOURCES = ["I am Kuroro.", "我是庫洛洛。", "My name is Ann and I live in Paris.", "Call me Bob, please."]
#: The decodings of the pipeline and the generate() arguments that must give the same output.
GENERATE_ARGUMENTS = {
    "greedy": {"num_beams": 1, "do_sample": False},
    "beam": {"num_beams": 4},
    "parallel": {"non_autoregressive": True, "nat_iterations": 1},
    "mask_predict": {"non_autoregressive": True, "nat_iterations": 4},
}


@pytest.fixture(scope="module")
def generator(tiny_echo_folder):
    return pipeline("text2text-generation", model=str(tiny_echo_folder))


def direct_generate(generator, sources, **kwargs) -> list[str]:
    """What an application writes without the pipeline: tokenize, generate(), decode."""
    batch = generator.tokenizer(sources, return_tensors="pt", padding=True)
    with torch.no_grad():
        ids = generator.model.generate(**batch, **kwargs)
    return generator.tokenizer.batch_decode(ids, skip_special_tokens=True)


def test_the_task_is_copynats_and_runs_without_remote_code(generator):
    assert isinstance(generator, CopyNatPipeline)
    assert type(generator.model).__module__ == "copynat.modeling.modeling_copynat"  # not transformers_modules
    result = generator("I am Kuroro.")
    assert isinstance(result, list) and len(result) == 1 and isinstance(result[0]["generated_text"], str)


@pytest.mark.parametrize("decoding", GENERATE_ARGUMENTS)
def test_each_decoding_equals_generate_batched_or_not(generator, decoding):
    expected = direct_generate(generator, SOURCES, **GENERATE_ARGUMENTS[decoding])
    batched = generator(SOURCES, batch_size=len(SOURCES), decoding=decoding)
    assert [r["generated_text"] for r in batched] == expected
    one_by_one = [generator(text, decoding=decoding)[0]["generated_text"] for text in SOURCES]
    assert one_by_one == [direct_generate(generator, [text], **GENERATE_ARGUMENTS[decoding])[0] for text in SOURCES]


def test_default_decoding_is_the_generation_config_and_sampling_is_seeded(generator):
    assert generator(SOURCES[0])[0]["generated_text"] == direct_generate(generator, SOURCES[:1])[0]
    torch.manual_seed(3)
    sampled = generator(SOURCES[0], decoding="sample", top_k=20)[0]["generated_text"]
    torch.manual_seed(3)
    assert sampled == direct_generate(generator, SOURCES[:1], do_sample=True, top_k=20)[0]


def test_beams_return_several_sequences_and_refine_the_preset(generator):
    results = generator(SOURCES[:2], decoding="beam", num_beams=3, num_return_sequences=2, batch_size=2)
    assert [len(r) for r in results] == [2, 2]  # a list per input when an input returns several sequences
    expected = direct_generate(generator, SOURCES[:2], num_beams=3, num_return_sequences=2)
    assert [r["generated_text"] for pair in results for r in pair] == expected
    ids = generator(SOURCES[0], return_tensors=True, return_text=False)[0]
    assert set(ids) == {"generated_token_ids"} and ids["generated_token_ids"][0] == 1  # decoder start first


def test_drafted_decoding_equals_greedy(generator):
    """Drafted decoding: greedy's output, drafted by the parallel decoder."""
    drafted = generator(SOURCES, decoding="drafted", batch_size=2)
    assert [r["generated_text"] for r in drafted] == direct_generate(generator, SOURCES, num_beams=1)


@pytest.mark.parametrize("decoding", ["greedy", "beam", "mask_predict"])
def test_copy_spans_are_where_the_copy_attention_points(generator, decoding):
    """Each span names the output and source substrings it joins, which read the same; each of its tokens got at
    least `copy_threshold` of its probability by copying, and the copy attention points inside the span's source
    text. The copy numbers are the model's own: a teacher-forced pass over the output gives them again."""
    threshold = 0.2  # the tiny model copies timidly; the default threshold (0.5) is for trained models
    results = generator(SOURCES, decoding=decoding, batch_size=2, return_copy_spans=True, return_copy_info=True,
                        copy_threshold=threshold)
    tokenizer, model = generator.tokenizer, generator.model
    key = lambda token_id: tokenizer.convert_ids_to_tokens(token_id).lstrip("Ġ")  # noqa: E731  (same piece)
    found = 0
    for source, result in zip(SOURCES, results):
        text, info = result["generated_text"], result["copy_info"]
        assert len(info["p_gen"]) == len(info["copy_attention"]) == len(info["output_ids"])
        assert "".join(info["output_tokens"]) == text  # the offsets tile the output
        for span in result["copy_spans"]:
            found += 1
            assert text[span["output_start"]:span["output_end"]] == span["output_text"] != ""
            assert source[span["source_start"]:span["source_end"]] == span["source_text"] != ""
            assert "".join(span["output_text"].split()) == "".join(span["source_text"].split())
            tokens = [t for t, (start, end) in enumerate(info["output_offsets"])
                      if start < end and start < span["output_end"] and end > span["output_start"]]
            assert tokens
            for t in tokens:
                same = [j for j, token in enumerate(info["source_ids"])
                        if token == info["output_ids"][t] or key(token) == key(info["output_ids"][t])]
                weights = torch.tensor(info["copy_attention"][t])[same]
                assert (1 - info["p_gen"][t]) * float(weights.sum()) >= threshold - 1e-3
                start, end = info["source_offsets"][same[int(weights.argmax())]]
                assert span["source_start"] - 1 <= start and end <= span["source_end"] + 1
        encoded = tokenizer(source, return_tensors="pt")
        ids = torch.tensor([[model.config.decoder_start_token_id, *info["output_ids"][:-1]]])
        with torch.no_grad():
            scored = model(**encoded, decoder_input_ids=ids, output_copy_info=True)
        assert torch.allclose(scored.p_gen[0], torch.tensor(info["p_gen"]), atol=1e-3)
        assert torch.allclose(scored.copy_attention[0], torch.tensor(info["copy_attention"]), atol=1e-3)
    assert found, "the tiny model copies some names: there must be spans to check"


def test_copy_spans_unit():
    """copy_spans on hand-made numbers: a name copied in two pieces is one span, a CJK character in byte pieces
    joins it, a generated token is not copied, a token the source does not hold cannot be."""
    source_text, output_text = "I am Kuroro 庫", "Hello Kuroro 庫!"
    source_keys = ["I", "am", "Kur", "oro", "a", "b", "c", None]  # "a b c": the byte pieces of 庫, then </s>
    source_offsets = [(0, 1), (2, 4), (5, 8), (8, 11), (12, 13), (12, 13), (12, 13), (0, 0)]
    output_keys = ["Hello", "Kur", "oro", "a", "b", "c", "!", "Kur"]
    output_offsets = [(0, 5), (5, 9), (9, 12), (12, 13), (13, 13), (13, 14), (14, 15), (15, 15)]
    attention = torch.zeros(8, 8)
    for t, s in ((1, 2), (2, 3), (3, 4), (4, 5), (5, 6), (0, 1), (6, 0), (7, 2)):
        attention[t, s] = 1.0
    p_gen = torch.tensor([0.9, 0.1, 0.2, 0.3, 0.3, 0.3, 0.1, 0.95])  # "!" has p_gen 0.1 but no "!" in the source
    spans = copy_spans(p_gen, attention, output_keys, source_keys, output_offsets, source_offsets, output_text,
                       source_text)
    assert [(s["output_text"], s["source_text"]) for s in spans] == [("Kuroro 庫", "Kuroro 庫")]
    assert spans[0]["output_start"] == 6 and spans[0]["source_start"] == 5 and spans[0]["p_copy"] == 0.76
    assert prefix_offsets(["He", "Hel\ufffd", "Hel庫"], "Hel庫") == [(0, 2), (2, 3), (3, 4)]


@pytest.mark.parametrize("kwargs, culprit", [
    ({"decoding": "fast"}, "decoding='fast'"),
    ({"decoding": "greedy", "num_beams": 4}, "num_beams=4 contradicts decoding='greedy'"),
    ({"decoding": "beam", "num_beams": 1}, "num_beams=1 contradicts decoding='beam'"),
    ({"decoding": "parallel", "nat_iterations": 3}, "use decoding='mask_predict'"),
    ({"decoding": "parallel", "do_sample": True}, "do_sample=True contradicts decoding='parallel'"),
    ({"decoding": "beam", "nat_iterations": 3}, "nat_iterations=3 contradicts decoding='beam'"),
    ({"num_beam": 3}, "does not take num_beam"),
    ({"output_copy_info": True}, "sets output_copy_info itself"),
    ({"copy_threshold": 0}, "copy_threshold must be in (0, 1]"),
])
def test_bad_arguments_name_the_culprit(generator, kwargs, culprit):
    with pytest.raises(ValueError) as err:
        generator(SOURCES[0], **kwargs)
    assert culprit in str(err.value)


@pytest.mark.parametrize("inputs", [42, [], ["ok", None], {"text": "hi"}])
def test_inputs_must_be_strings(generator, inputs):
    with pytest.raises(TypeError, match="a string or a non-empty list of strings"):
        generator(inputs)


def test_models_without_copy_head_or_parallel_decoder_say_so(generator):
    model = CopyNatForConditionalGeneration(CopyNatConfig(
        vocab_size=generator.tokenizer.vocab_size, d_model=16, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=16, decoder_ffn_dim=16,
        use_copy_mechanism=False, decoder_mode="ar"))
    plain = pipeline("text2text-generation", model=model.eval(), tokenizer=generator.tokenizer)
    assert isinstance(plain(SOURCES[0], max_new_tokens=3)[0]["generated_text"], str)
    with pytest.raises(ValueError, match="needs a model with a copy head"):
        plain(SOURCES[0], return_copy_spans=True)
    with pytest.raises(ValueError, match="no parallel decoder"):
        plain(SOURCES[0], decoding="parallel")


def test_other_seq2seq_models_get_the_standard_decodings(generator):
    """The reclaimed task serves any transformers seq2seq model (as transformers 4's did) for what it can do."""
    from transformers import BartConfig, BartForConditionalGeneration

    bart = BartForConditionalGeneration(BartConfig(
        vocab_size=generator.tokenizer.vocab_size, d_model=16, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=16, decoder_ffn_dim=16,
        pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)).eval()
    other = pipeline("text2text-generation", model=bart, tokenizer=generator.tokenizer)
    assert isinstance(other, CopyNatPipeline)
    out = other(SOURCES[:2], batch_size=2, decoding="beam", num_beams=2, max_new_tokens=4)
    assert [r["generated_text"] for r in out] == direct_generate(other, SOURCES[:2], num_beams=2, max_new_tokens=4)
    with pytest.raises(ValueError, match="needs a copynat model"):
        other(SOURCES[0], decoding="mask_predict")
    with pytest.raises(ValueError, match="not a copynat model"):
        other(SOURCES[0], return_copy_spans=True)


# --- saved folders: remote code without copynat, the task name with it --------------------------------------------

FRESH_PYTHON = WITHOUT_COPYNAT + textwrap.dedent(r"""
    import json
    from transformers import pipeline

    folders, sources = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    results = []
    for folder in folders:
        generator = pipeline(model=folder, trust_remote_code=True)  # the task comes from the folder's config.json
        assert type(generator).__module__.startswith("transformers_modules"), type(generator).__module__
        assert type(generator.model).__module__.startswith("transformers_modules"), type(generator.model).__module__
        results.append({
            "task": generator.task,
            "one": generator(sources[0]),
            "batch": generator(sources, batch_size=2, decoding="mask_predict"),
            "spans": generator(sources, batch_size=2, decoding="greedy", return_copy_spans=True,
                               copy_threshold=0.2)})
    print("RESULTS " + json.dumps(results, ensure_ascii=False))
""")


def run_without_copynat(folders, tmp_path, sources) -> list[dict]:
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home"),
           "TRANSFORMERS_VERBOSITY": "error"}
    tmp_path.mkdir()
    out = subprocess.run([sys.executable, "-c", FRESH_PYTHON, json.dumps(list(map(str, folders))),
                          json.dumps(sources)], env=env,
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.split("RESULTS ", 1)[1])


def test_saved_folders_run_as_pipelines_without_copynat(generator, tiny_echo_folder, tmp_path):
    """The folder copynat-train saved, and one Pipeline.save_pretrained wrote, in a Python that cannot import
    copynat and has no network: pipeline(model=FOLDER, trust_remote_code=True) gives the same outputs."""
    config = json.loads((tiny_echo_folder / "config.json").read_text())
    assert list(config["custom_pipelines"]) == [CUSTOM_TASK]
    resaved = tmp_path / "resaved"
    generator.save_pretrained(resaved)
    assert json.loads((resaved / "config.json").read_text())["custom_pipelines"] == config["custom_pipelines"]
    sources = SOURCES[:3]
    expected = {"task": CUSTOM_TASK,
                "one": generator(sources[0]),
                "batch": generator(sources, batch_size=2, decoding="mask_predict"),
                "spans": generator(sources, batch_size=2, decoding="greedy", return_copy_spans=True,
                                   copy_threshold=0.2)}
    assert run_without_copynat([tiny_echo_folder, resaved], tmp_path / "fresh", sources) == [expected, expected]


def test_model_save_pretrained_writes_the_pipeline(tmp_path):
    model = CopyNatForConditionalGeneration(CopyNatConfig(
        vocab_size=64, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=16, decoder_ffn_dim=16))
    model.save_pretrained(tmp_path)
    assert (tmp_path / "pipeline_copynat.py").is_file() and (tmp_path / "copy_spans.py").is_file()
    entry = json.loads((tmp_path / "config.json").read_text())["custom_pipelines"][CUSTOM_TASK]
    assert entry == {"impl": "pipeline_copynat.CopyNatPipeline", "pt": ["AutoModelForSeq2SeqLM"], "type": "text"}
    assert AutoModelForSeq2SeqLM.from_pretrained(tmp_path).config.custom_pipelines == {CUSTOM_TASK: entry}


def test_every_decoding_has_a_preset():
    assert set(DECODINGS) == {"greedy", "beam", "sample", "parallel", "mask_predict", "drafted"}
