"""Foundation: config validation, every head and position type, masks, cache, save/load, remote code, Trainer."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch
from conftest import VOCAB, tiny_config
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from copynat import (
    CopyNatConfig,
    CopyNatForConditionalGeneration,
    CopyNatForSequenceClassification,
    CopyNatForTokenClassification,
    CopyNatModel,
)


def batch(size=3, src=7, tgt=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, VOCAB, (size, src), generator=g)
    attention_mask = torch.ones_like(input_ids)
    input_ids[0, src - 2:] = 0  # a padded row
    attention_mask[0, src - 2:] = 0
    labels = torch.randint(5, VOCAB, (size, tgt), generator=g)
    labels[min(1, size - 1), tgt - 2:] = -100
    return input_ids, attention_mask, labels


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(encoder_attention_heads=3), "encoder_attention_heads"),
        (dict(decoder_attention_heads=5), "decoder_attention_heads"),
        (dict(position_embedding_type="alibi"), "position_embedding_type"),
        (dict(encoder_attention_window=-1), "encoder_attention_window"),
        (dict(encoder_attention_window=0), "encoder_attention_window"),
        (dict(decoder_mode="both"), "decoder_mode"),
        (dict(length_prediction="relative"), "length_prediction"),
        (dict(nat_decoder_inputs="unk"), "nat_decoder_inputs"),
        (dict(dropout=1.5), "dropout"),
        (dict(d_model=0), "d_model"),
        (dict(activation_function="swishy"), "activation_function"),
        (dict(pad_token_id=10_000), "pad_token_id"),
        (dict(guided_attention_weight=-1.0), "guided_attention_weight"),
    ],
)
def test_config_rejects_bad_values_naming_the_field(overrides, field):
    with pytest.raises(ValueError, match=rf"CopyNatConfig\.{field}=.*invalid"):
        tiny_config(**overrides)


def test_config_round_trips_and_registers(tmp_path):
    config = tiny_config(position_embedding_type="rotary", encoder_attention_window=3, decoder_mode="hybrid")
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, CopyNatConfig)
    assert (loaded.position_embedding_type, loaded.encoder_attention_window, loaded.decoder_mode) == ("rotary", 3, "hybrid")
    assert loaded.hidden_size == 32 and loaded.num_attention_heads == 4
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModelForSeq2SeqLM"] == "modeling_copynat.CopyNatForConditionalGeneration"


@pytest.mark.parametrize("position", ["sinusoidal", "learned", "rotary"])
@pytest.mark.parametrize("normalize_before", [False, True])
@pytest.mark.parametrize("mode", ["ar", "nat", "hybrid"])
def test_seq2seq_forward_backward(position, normalize_before, mode):
    model = CopyNatForConditionalGeneration(
        tiny_config(position_embedding_type=position, normalize_before=normalize_before, decoder_mode=mode)
    )
    input_ids, attention_mask, labels = batch()
    out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    assert out.logits.shape == (3, 5, VOCAB) and torch.isfinite(out.loss)
    assert (out.ar_loss is not None) == (mode != "nat") and (out.nat_loss is not None) == (mode != "ar")
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("position", ["sinusoidal", "learned", "rotary"])
def test_encoder_heads_forward_backward(position):
    config = tiny_config(position_embedding_type=position, num_labels=3)
    input_ids, attention_mask, _ = batch()
    seq = CopyNatForSequenceClassification(config)
    out = seq(input_ids=input_ids, attention_mask=attention_mask, labels=torch.tensor([0, 2, 1]))
    assert out.logits.shape == (3, 3)
    out.loss.backward()
    tok = CopyNatForTokenClassification(config)
    labels = torch.randint(0, 3, input_ids.shape).masked_fill(attention_mask == 0, -100)
    out = tok(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    assert out.logits.shape == (3, 7, 3)
    out.loss.backward()
    assert tok.model.shared.weight.grad is not None


def test_base_model_returns_decoder_states():
    model = CopyNatModel(tiny_config())
    input_ids, attention_mask, labels = batch()
    out = model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=labels.clamp_min(0))
    assert out.last_hidden_state.shape == (3, 5, 32) and out.encoder_last_hidden_state.shape == (3, 7, 32)


def test_padding_does_not_change_outputs():
    model = CopyNatForConditionalGeneration(tiny_config()).eval()
    input_ids, attention_mask, labels = batch()
    decoder_input_ids = model.prepare_decoder_input_ids_from_labels(labels)
    full = model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids).logits
    alone = model(input_ids=input_ids[:1, :5], decoder_input_ids=decoder_input_ids[:1]).logits
    torch.testing.assert_close(full[:1], alone, atol=1e-5, rtol=1e-5)


def encoder_attentions(model, input_ids, attention_mask):
    out = model.model.encoder(input_ids=input_ids, attention_mask=attention_mask, output_attentions=True)
    return out.attentions


def test_truncated_window_gives_zero_weight_beyond_distance():
    model = CopyNatForConditionalGeneration(tiny_config(encoder_attention_window=2)).eval()
    input_ids = torch.randint(5, VOCAB, (2, 9))
    for weights in encoder_attentions(model, input_ids, None):
        distance = (torch.arange(9)[:, None] - torch.arange(9)[None, :]).abs()
        assert torch.all(weights[..., distance > 2] == 0)
        assert torch.all(weights[..., distance <= 2] > 0)


def test_graph_mask_gives_zero_weight_to_non_edges():
    model = CopyNatForConditionalGeneration(tiny_config()).eval()
    input_ids = torch.randint(5, VOCAB, (2, 6))
    adjacency = torch.zeros(2, 6, 6, dtype=torch.long)
    for a, b in [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]:  # a chain graph
        adjacency[:, a, b] = adjacency[:, b, a] = 1
    allowed = adjacency.bool() | torch.eye(6, dtype=torch.bool)
    for weights in encoder_attentions(model, input_ids, adjacency):
        assert torch.all(weights.transpose(0, 1)[:, ~allowed] == 0)
        assert torch.all(weights.transpose(0, 1)[:, allowed] > 0)
    # the same mask works end to end, through generate()
    out = model.generate(input_ids, attention_mask=adjacency, max_new_tokens=4)
    assert out.shape[0] == 2


def test_padding_mask_gives_zero_weight_to_pads_and_bad_mask_is_named():
    model = CopyNatForConditionalGeneration(tiny_config()).eval()
    input_ids, attention_mask, _ = batch()
    for weights in encoder_attentions(model, input_ids, attention_mask):
        assert torch.all(weights[0, :, :, 5:] == 0)
    with pytest.raises(ValueError, match="attention_mask must be 2-D"):
        model(input_ids=input_ids, attention_mask=attention_mask[:, None, None, :], decoder_input_ids=input_ids)


def test_bad_ids_get_clear_errors():
    model = CopyNatForConditionalGeneration(tiny_config())
    input_ids, attention_mask, labels = batch()
    with pytest.raises(ValueError, match="labels hold ids outside"):
        model(input_ids=input_ids, labels=labels + VOCAB)
    with pytest.raises(ValueError, match="input_ids hold ids outside"):
        model(input_ids=input_ids + VOCAB, labels=labels)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(input_ids=torch.randint(5, VOCAB, (1, 80)), labels=labels[:1])


@pytest.mark.parametrize("use_copy", [False, True])
@pytest.mark.parametrize("position", ["sinusoidal", "learned", "rotary"])
def test_generate_with_cache_equals_without(use_copy, position):
    torch.manual_seed(1)
    model = CopyNatForConditionalGeneration(tiny_config(use_copy_mechanism=use_copy, position_embedding_type=position)).eval()
    input_ids, attention_mask, _ = batch()
    for settings in (dict(), dict(num_beams=3), dict(num_beams=3, num_return_sequences=2, length_penalty=0.6)):
        cached = model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=8, min_new_tokens=8, **settings)
        uncached = model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=8, min_new_tokens=8,
                                  use_cache=False, **settings)
        assert torch.equal(cached, uncached), settings
    sampled = []
    for use_cache in (True, False):
        torch.manual_seed(7)
        sampled.append(model.generate(input_ids, attention_mask=attention_mask, do_sample=True, top_k=10, top_p=0.9,
                                      temperature=0.8, max_new_tokens=8, use_cache=use_cache))
    assert torch.equal(*sampled)


def test_beam_scores_are_sequence_log_probs():
    model = CopyNatForConditionalGeneration(tiny_config()).eval()
    input_ids, _, _ = batch(size=2)
    out = model.generate(input_ids[1:2], max_new_tokens=6, min_new_tokens=6, num_beams=3, length_penalty=0.0,
                         return_dict_in_generate=True, output_scores=True)
    sequence = out.sequences[:1]
    logits = model(input_ids=input_ids[1:2], decoder_input_ids=sequence[:, :-1]).logits
    total = logits.log_softmax(-1).gather(-1, sequence[:, 1:, None]).sum()
    torch.testing.assert_close(out.sequences_scores[0], total, atol=1e-4, rtol=1e-4)


def test_save_is_safetensors_only_and_reload_is_identical(tmp_path):
    model = CopyNatForConditionalGeneration(tiny_config(decoder_mode="hybrid")).eval()
    model.save_pretrained(tmp_path)
    files = set(os.listdir(tmp_path))
    assert "model.safetensors" in files and not {f for f in files if f.endswith((".bin", ".pt", ".pth"))}
    assert {"configuration_copynat.py", "modeling_copynat.py", "generation_copynat.py"} <= files
    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is CopyNatForConditionalGeneration
    assert loaded.output_head.lm_head.weight is loaded.model.shared.weight is loaded.model.encoder.embed_tokens.weight
    input_ids, attention_mask, labels = batch()
    a = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    b = loaded(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    # Same weights, but the reloaded ones sit at other memory alignments (safetensors), which can change which
    # SIMD path a kernel takes: equal up to float rounding, not bit for bit.
    torch.testing.assert_close(b.logits, a.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b.ar_loss, a.ar_loss, atol=1e-5, rtol=1e-5)
    assert type(AutoModel.from_pretrained(tmp_path)) is CopyNatModel
    assert type(AutoModelForSequenceClassification.from_pretrained(tmp_path)) is CopyNatForSequenceClassification
    assert type(AutoModelForTokenClassification.from_pretrained(tmp_path)) is CopyNatForTokenClassification


def test_untied_output_projection_round_trips(tmp_path):
    model = CopyNatForConditionalGeneration(tiny_config(tie_word_embeddings=False))
    assert model.output_head.lm_head.weight is not model.model.shared.weight
    assert model.model.decoder.embed_tokens.weight is model.model.shared.weight
    model.save_pretrained(tmp_path)
    loaded = CopyNatForConditionalGeneration.from_pretrained(tmp_path)
    assert torch.equal(loaded.output_head.lm_head.weight, model.output_head.lm_head.weight)


def test_loading_refuses_pickle_weights(tmp_path):
    model = CopyNatForConditionalGeneration(tiny_config())
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(OSError, match="safetensors"):
        AutoModelForSeq2SeqLM.from_pretrained(tmp_path)


REMOTE_CODE_SCRIPT = r"""
import importlib.abc, json, sys, torch
class NoCopynat(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "copynat" or name.startswith("copynat."):
            raise ModuleNotFoundError("copynat is not installed in this Python", name=name)
sys.meta_path.insert(0, NoCopynat())
try:
    import copynat
    raise SystemExit("copynat must not be importable here")
except ModuleNotFoundError:
    pass
from transformers import (AutoModelForSeq2SeqLM, AutoModelForSequenceClassification,
                          AutoModelForTokenClassification)
folder, classifier_folder, input_ids = sys.argv[1], sys.argv[2], torch.tensor(json.loads(sys.argv[3]))
model = AutoModelForSeq2SeqLM.from_pretrained(folder, trust_remote_code=True).eval()
assert model.__class__.__module__.startswith("transformers_modules"), model.__class__.__module__
heads = {}
for name, auto in (("sequence", AutoModelForSequenceClassification), ("token", AutoModelForTokenClassification)):
    head = auto.from_pretrained(classifier_folder, trust_remote_code=True).eval()  # saved from the classifier
    assert head.__class__.__module__.startswith("transformers_modules"), head.__class__.__module__
    heads[name] = head(input_ids=input_ids).logits.tolist()
    auto.from_pretrained(folder, trust_remote_code=True)  # the seq2seq folder holds every head's code too
print(json.dumps({
    "greedy": model.generate(input_ids, max_new_tokens=6).tolist(),
    "beam": model.generate(input_ids, max_new_tokens=6, num_beams=3).tolist(),
    "nat": model.generate(input_ids, non_autoregressive=True, nat_iterations=2, max_new_tokens=6).tolist(),
    **heads,
}))
"""


def test_remote_code_loads_where_copynat_is_not_installed(tmp_path):
    """A folder from save_pretrained holds every modeling file: AT and NAT decoding and both encoder heads load and
    run as remote code in a Python where copynat cannot be imported, with the same outputs."""
    from copynat import CopyNatForSequenceClassification

    model = CopyNatForConditionalGeneration(tiny_config(decoder_mode="hybrid")).eval()
    model.save_pretrained(tmp_path / "seq2seq")
    classifier = CopyNatForSequenceClassification(tiny_config(num_labels=3)).eval()
    classifier.save_pretrained(tmp_path / "classifier")
    input_ids = torch.randint(5, VOCAB, (2, 6))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}
    result = subprocess.run([sys.executable, "-c", REMOTE_CODE_SCRIPT, str(tmp_path / "seq2seq"),
                             str(tmp_path / "classifier"), json.dumps(input_ids.tolist())],
                            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    remote = json.loads(result.stdout.strip().splitlines()[-1])
    assert remote["greedy"] == model.generate(input_ids, max_new_tokens=6).tolist()
    assert remote["beam"] == model.generate(input_ids, max_new_tokens=6, num_beams=3).tolist()
    assert remote["nat"] == model.generate(input_ids, non_autoregressive=True, nat_iterations=2, max_new_tokens=6).tolist()
    torch.testing.assert_close(torch.tensor(remote["sequence"]), classifier(input_ids=input_ids).logits)
    assert torch.tensor(remote["token"]).shape == (2, 6, 3)  # a label per position, from the same checkpoint


def test_gradient_checkpointing_gives_same_gradients():
    input_ids, attention_mask, labels = batch()
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = CopyNatForConditionalGeneration(tiny_config(decoder_mode="hybrid"))
        if checkpointing:
            model.gradient_checkpointing_enable()
        torch.manual_seed(1)
        model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss.backward()
        grads.append(model.model.encoder.layers[0].self_attn.qkv_proj.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_outputs_attentions_and_hidden_states():
    model = CopyNatForConditionalGeneration(tiny_config()).eval()
    input_ids, attention_mask, labels = batch()
    out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, output_attentions=True,
                output_hidden_states=True)
    assert len(out.encoder_attentions) == 2 and out.encoder_attentions[0].shape == (3, 4, 7, 7)
    assert out.decoder_attentions[0].shape == (3, 4, 5, 5) and out.cross_attentions[0].shape == (3, 4, 5, 7)
    assert torch.all(out.decoder_attentions[0].triu(1) == 0)  # the masked decoder sees no future
    assert len(out.encoder_hidden_states) == 3 and len(out.decoder_hidden_states) == 3
    assert isinstance(model(input_ids=input_ids, labels=labels, return_dict=False), tuple)


def test_eager_and_sdpa_attention_agree():
    input_ids, attention_mask, labels = batch()
    logits = []
    for implementation in ("sdpa", "eager"):
        torch.manual_seed(0)
        model = CopyNatForConditionalGeneration._from_config(tiny_config(), attn_implementation=implementation)
        assert model.config._attn_implementation == implementation
        logits.append(model.eval()(input_ids=input_ids, attention_mask=attention_mask, labels=labels).logits)
    torch.testing.assert_close(logits[0], logits[1], atol=1e-5, rtol=1e-5)


def test_gradient_accumulation_loss_is_exact():
    """Trainer passes num_items_in_batch: two half batches must add up to the full batch's loss."""
    torch.manual_seed(0)
    model = CopyNatForConditionalGeneration(tiny_config(decoder_mode="ar"))
    input_ids, attention_mask, labels = batch(size=4)
    total = (labels != -100).sum()
    full = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, num_items_in_batch=total).loss
    halves = sum(model(input_ids=input_ids[i:i + 2], attention_mask=attention_mask[i:i + 2], labels=labels[i:i + 2],
                       num_items_in_batch=total).loss for i in (0, 2))
    torch.testing.assert_close(full, halves)


def test_a_corrupt_or_truncated_weights_file_is_named(tmp_path):
    """safetensors' own message names no file ("incomplete metadata, file not fully covered"): the error names it."""
    CopyNatForConditionalGeneration(tiny_config()).save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    data = weights.read_bytes()
    for broken in (data[: len(data) // 2], b"not a safetensors file"):
        weights.write_bytes(broken)
        with pytest.raises(OSError, match=rf"{re.escape(str(weights))}: corrupt or truncated .*save the model again"):
            AutoModelForSeq2SeqLM.from_pretrained(tmp_path)
