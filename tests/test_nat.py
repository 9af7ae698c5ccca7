"""Non-autoregressive decoding: length prediction, parallel decoding, mask-predict, length beam, generate()."""

from collections import Counter

import pytest
import torch
from conftest import VOCAB, copy_task_batch, tiny_config, train_steps
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from copynat import CopyNatForConditionalGeneration
from copynat.modeling.parallel_decoding import _cut_after_eos
from copynat.modeling.modeling_copynat import CACHE_NAME


def test_length_and_nat_losses_train_exact_parallel_copies(trained_hybrid_model):
    model = trained_hybrid_model
    source, target = copy_task_batch(16, 6, torch.Generator().manual_seed(123))
    length_classes = model(input_ids=source, labels=target).length_logits.argmax(-1)
    assert torch.all(length_classes == 7)  # 6 tokens + </s>
    for iterations in (1, 3):
        output = model.generate(source, non_autoregressive=True, nat_iterations=iterations)
        assert output.shape == (16, 8)
        assert torch.equal(output[:, 1:], target), iterations
    ar = model.generate(source, max_new_tokens=8)
    assert torch.equal(ar[:, 1:8], target)


def test_mask_predict_never_lowers_the_average_log_prob(trained_hybrid_model):
    source, _ = copy_task_batch(8, 6, torch.Generator().manual_seed(5))
    source[:, 2] = 4  # harder: <mask> tokens in the source make some positions uncertain
    one = trained_hybrid_model.generate(source, non_autoregressive=True, nat_iterations=1, return_dict_in_generate=True)
    for iterations in (2, 4, 10):
        more = trained_hybrid_model.generate(source, non_autoregressive=True, nat_iterations=iterations,
                                             return_dict_in_generate=True)
        assert torch.all(more.sequences_scores >= one.sequences_scores - 1e-6)
        # a source <mask> is never copied: no output is re-read as masked
        assert not bool((more.sequences == trained_hybrid_model.config.mask_token_id).any())


def forced_length_model(lengths_and_scores: dict[int, float], **overrides):
    model = CopyNatForConditionalGeneration(tiny_config(decoder_mode="nat", length_prediction="absolute", **overrides))
    with torch.no_grad():
        model.parallel_head.length_predictor.classifier.weight.zero_()
        model.parallel_head.length_predictor.classifier.bias.fill_(-100.0)
        for length, score in lengths_and_scores.items():
            model.parallel_head.length_predictor.classifier.bias[length] = score
    return model.eval()


@torch.no_grad()
def _mask_predict_reference(model, source, mask, states, lengths, iterations):
    """Mask-predict (Ghazvininejad et al. 2019) as the paper writes it: predict every position, keep the masked ones,
    re-mask the n = L * (N - t) / N least confident; the best average log-prob over the passes wins. Returns the
    tokens cut after the first </s> like generate()'s, and their scores."""
    config = model.config
    target_mask = torch.arange(int(lengths.max()))[None, :] < lengths[:, None]
    tokens = torch.full(target_mask.shape, config.mask_token_id).masked_fill(~target_mask, config.pad_token_id)
    scores = torch.zeros(target_mask.shape)
    best_tokens, best_scores = tokens, torch.full(lengths.shape, float("-inf"))
    for step in range(iterations):
        masked = target_mask if step == 0 else tokens == config.mask_token_id
        head = model.nat_pass(tokens, target_mask, states, source, mask.bool(), mixture=False)
        step_scores, step_tokens = model.output_head.most_likely_tokens(head)
        tokens, scores = torch.where(masked, step_tokens, tokens), torch.where(masked, step_scores, scores)
        average = (scores * target_mask).sum(1) / lengths
        improved = average > best_scores
        best_tokens = torch.where(improved[:, None], tokens, best_tokens)
        best_scores = torch.where(improved, average, best_scores)
        num_mask = (lengths.float() * (iterations - step - 1) / iterations).long()
        ranks = scores.masked_fill(~target_mask, float("inf")).argsort(1).argsort(1)
        tokens = tokens.masked_fill(ranks < num_mask[:, None], config.mask_token_id)
    return _cut_after_eos(best_tokens, target_mask, config), best_scores


def test_mask_predict_heads_only_the_remasked_positions_and_decodes_as_with_the_full_head(trained_hybrid_model,
                                                                                         monkeypatch):
    """Refinement passes run the output head on the re-masked positions only: the same tokens and scores as a head
    over every position inside generate() and as mask-predict written down with one (`_mask_predict_reference`), on
    rows of different lengths and different masked counts."""
    model = trained_hybrid_model
    source, _ = copy_task_batch(6, 6, torch.Generator().manual_seed(21))
    source[:, 2] = 4  # uncertain positions, so the re-masked sets differ between rows
    source[3:, 4:] = model.config.pad_token_id  # shorter sources: other predicted lengths
    mask = (source != model.config.pad_token_id).long()
    seen = []

    def full_head(tokens, target_mask, states, source_ids, source_mask, mixture=True, positions=None,
                  cross_attention_cache=None):
        head = nat_pass(tokens, target_mask, states, source_ids, source_mask, mixture=mixture,
                        cross_attention_cache=cross_attention_cache)
        seen.append(positions is not None)
        if positions is None:
            return head
        rows = torch.arange(positions.shape[0])[:, None]
        copy = head.copy._replace(p_gen=head.copy.p_gen[rows, positions], attention=head.copy.attention[rows, positions],
                                  slot_attention=head.copy.slot_attention[rows, positions])
        return head._replace(p_gen=copy.p_gen, copy_attention=copy.attention, copy=copy,
                             vocab_logits=head.vocab_logits[rows, positions])

    def decode(iterations, length_beam=1):
        return model.generate(source, attention_mask=mask, non_autoregressive=True, nat_iterations=iterations,
                              length_beam=length_beam, return_dict_in_generate=True)

    subset = [decode(4), decode(10), decode(4, length_beam=2)]
    nat_pass = model.nat_pass
    monkeypatch.setattr(model, "nat_pass", full_head)
    reference = [decode(4), decode(10), decode(4, length_beam=2)]
    assert seen.count(False) == 3 and seen.count(True) > 3  # one full first pass per call, then refinements
    for ours, full in zip(subset, reference):
        assert torch.equal(ours.sequences, full.sequences)
        torch.testing.assert_close(ours.sequences_scores, full.sequences_scores, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # the subset head itself: the full head's outputs at those positions
        states = model.model.encoder(input_ids=source, attention_mask=mask).last_hidden_state
    for iterations, ours in ((4, subset[0]), (10, subset[1])):  # mask-predict as written down: head on every position
        tokens, best_scores = _mask_predict_reference(model, source, mask, states, ours.lengths, iterations)
        width = ours.sequences.shape[1] - 1
        assert torch.equal(ours.sequences[:, 1:], tokens[:, :width])
        assert bool((tokens[:, width:] == model.config.pad_token_id).all())
        torch.testing.assert_close(ours.sequences_scores, best_scores, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        target_mask = torch.ones(6, 7, dtype=torch.bool)
        tokens = torch.full((6, 7), model.config.mask_token_id)
        positions = torch.tensor([[0, 3, 6]] * 3 + [[5, 1, 2]] * 3)
        part = nat_pass(tokens, target_mask, states, source, mask.bool(), mixture=False, positions=positions)
        whole = full_head(tokens, target_mask, states, source, mask.bool(), mixture=False, positions=positions)
    for name in ("p_gen", "copy_attention", "vocab_logits"):
        torch.testing.assert_close(getattr(part, name), getattr(whole, name), atol=1e-5, rtol=1e-5)


def test_mask_predict_computes_cross_attention_keys_once_and_keeps_no_self_attention_cache(trained_hybrid_model):
    model = trained_hybrid_model
    source, _ = copy_task_batch(4, 6, torch.Generator().manual_seed(22))
    source[:, 2] = 4  # uncertain positions, so refinement passes re-mask something
    calls = Counter()
    hooks = [projection.register_forward_hook(lambda *_, name=name: calls.update([name]))
             for layer in model.model.decoder.layers
             for name, projection in (("cross", layer.cross_attn.kv_proj), ("self", layer.self_attn.qkv_proj))]
    try:
        model.generate(source, non_autoregressive=True, nat_iterations=4)
    finally:
        for hook in hooks:
            hook.remove()
    layers = len(model.model.decoder.layers)
    assert calls["cross"] == layers  # once per layer, not once per pass
    assert calls["self"] > layers  # while every pass recomputes self-attention
    with torch.no_grad():  # a non-causal pass given a cache fills its cross-attention part only
        states = model.model.encoder(input_ids=source).last_hidden_state
        tokens = torch.full(source.shape, model.config.mask_token_id)
        target_mask = torch.ones(source.shape, dtype=torch.bool)
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        first = model.nat_pass(tokens, target_mask, states, source, None, cross_attention_cache=cache)
        again = model.nat_pass(tokens, target_mask, states, source, None, cross_attention_cache=cache)
        plain = model.nat_pass(tokens, target_mask, states, source, None)
        # an AR cache (self-attention states of 3 steps) neither shifts the positions nor grows
        ar = model(input_ids=source, decoder_input_ids=source[:, :3], use_cache=True)
        ar_cache = getattr(ar, CACHE_NAME)
        after_ar = model.nat_pass(tokens, target_mask, states, source, None, cross_attention_cache=ar_cache)
    assert cache.get_seq_length() == 0 and cache.cross_attention_cache.get_seq_length() == source.shape[1]
    assert ar_cache.get_seq_length() == 3
    for head in (first, again, after_ar):
        torch.testing.assert_close(head.logits, plain.logits)


def test_length_beam_decodes_the_most_likely_lengths():
    model = forced_length_model({5: 3.0, 9: 2.0, 12: 1.0})
    source = torch.randint(5, VOCAB, (3, 6))
    single = model.generate(source, non_autoregressive=True, return_dict_in_generate=True)
    assert single.lengths.tolist() == [5, 5, 5]
    beam = model.generate(source, non_autoregressive=True, length_beam=3, return_dict_in_generate=True)
    assert set(beam.lengths.tolist()) <= {5, 9, 12}
    assert beam.sequences.shape[1] <= 1 + 12 + 1  # start token, at most 12 tokens, a </s> appended if none emitted
    assert torch.all(beam.sequences_scores >= single.sequences_scores - 1e-6)  # the best of 3 includes length 5


def test_batch_of_different_lengths_is_padded_like_generate():
    model = forced_length_model({3: 5.0}, length_classes=32)
    with torch.no_grad():  # offsets differ per row, so make lengths depend on the source: use offset mode
        pass
    model.config.length_prediction = "offset"
    model.parallel_head.length_predictor.offset = True
    with torch.no_grad():
        model.parallel_head.length_predictor.classifier.bias.fill_(-100.0)
        model.parallel_head.length_predictor.classifier.bias[16] = 5.0  # offset 0: target length = source length
    source = torch.randint(5, VOCAB, (3, 8))
    attention_mask = torch.ones_like(source)
    source[0, 3:], attention_mask[0, 3:] = 0, 0  # 3 real tokens
    source[1, 6:], attention_mask[1, 6:] = 0, 0  # 6 real tokens
    out = model.generate(source, attention_mask=attention_mask, non_autoregressive=True, return_dict_in_generate=True)
    assert out.lengths.tolist() == [3, 6, 8]
    sequences = out.sequences
    assert torch.all(sequences[:, 0] == model.config.decoder_start_token_id)
    for row in sequences:
        tokens = row[1:].tolist()
        end = tokens.index(model.config.eos_token_id)  # every row ends with </s> ...
        assert all(t == model.config.pad_token_id for t in tokens[end + 1:])  # ... then padding only
        assert model.config.pad_token_id not in tokens[:end]


def test_nat_generate_errors_are_clear():
    ar_model = CopyNatForConditionalGeneration(tiny_config(decoder_mode="ar")).eval()
    source = torch.randint(5, VOCAB, (2, 5))
    with pytest.raises(ValueError, match="no parallel decoder.*decoder_mode='ar'"):
        ar_model.generate(source, non_autoregressive=True)
    with pytest.raises(ValueError, match="only apply to non-autoregressive decoding"):
        ar_model.generate(source, nat_iterations=4)
    nat_model = forced_length_model({4: 1.0})
    with pytest.raises(ValueError, match="nat_iterations must be a positive integer"):
        nat_model.generate(source, non_autoregressive=True, nat_iterations=0)
    with pytest.raises(ValueError, match="does not take temperature"):
        nat_model.generate(source, non_autoregressive=True, temperature=0.7)
    with pytest.raises(ValueError, match="rescore_with_ar=True.*hybrid"):
        nat_model.generate(source, non_autoregressive=True, rescore_with_ar=True)
    copy_source = CopyNatForConditionalGeneration(tiny_config(decoder_mode="nat", nat_decoder_inputs="copy_source"))
    with pytest.raises(ValueError, match="nat_decoder_inputs='mask'"):
        copy_source.eval().generate(source, non_autoregressive=True, nat_iterations=3)


def test_copy_source_inputs_and_ar_rescoring_decode(trained_hybrid_model):
    source, target = copy_task_batch(4, 6, torch.Generator().manual_seed(9))
    rescored = trained_hybrid_model.generate(source, non_autoregressive=True, length_beam=3, rescore_with_ar=True)
    assert torch.equal(rescored[:, 1:], target)
    model = CopyNatForConditionalGeneration(tiny_config(decoder_mode="nat", nat_decoder_inputs="copy_source"))
    loss = model(input_ids=source, labels=target).loss
    loss.backward()
    assert model.eval().generate(source, non_autoregressive=True).shape[0] == 4


def test_nat_generate_after_save_and_auto_load(trained_hybrid_model, tmp_path):
    from transformers import AutoModelForSeq2SeqLM

    trained_hybrid_model.save_pretrained(tmp_path)
    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    source, target = copy_task_batch(4, 6, torch.Generator().manual_seed(11))
    for iterations in (1, 4):
        assert torch.equal(loaded.generate(source, non_autoregressive=True, nat_iterations=iterations),
                           trained_hybrid_model.generate(source, non_autoregressive=True, nat_iterations=iterations))


def test_generation_config_can_default_to_nat(trained_hybrid_model, tmp_path):
    from transformers import AutoModelForSeq2SeqLM, GenerationConfig

    model = trained_hybrid_model
    saved = model.generation_config
    model.generation_config = GenerationConfig(decoder_start_token_id=1, pad_token_id=0, eos_token_id=2,
                                               non_autoregressive=True, nat_iterations=2)
    try:
        model.save_pretrained(tmp_path)
    finally:
        model.generation_config = saved
    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    source, target = copy_task_batch(2, 6, torch.Generator().manual_seed(2))
    assert torch.equal(loaded.generate(source)[:, 1:], target)
    assert loaded.generate(source, non_autoregressive=False, max_new_tokens=3).shape == (2, 4)


def test_most_likely_tokens_match_the_full_mixture_without_building_it():
    """Parallel decoding picks each position's best token without the [batch, tgt, vocab] mixture; the winners and
    their log-probs are those of the full distribution, with and without the copy mechanism, whether copying or
    generation wins."""
    torch.manual_seed(0)
    input_ids = torch.randint(5, VOCAB, (4, 9))
    input_ids[1, 6:] = 0  # padding
    input_ids[2, 3] = input_ids[2, 5]  # a repeated source token
    mask = input_ids != 0
    for use_copy, gate_bias in ((True, -3.0), (True, 3.0), (False, None)):
        torch.manual_seed(0)
        model = CopyNatForConditionalGeneration(tiny_config(decoder_mode="nat", use_copy_mechanism=use_copy)).eval()
        if use_copy:
            with torch.no_grad():
                model.copy_generator.gate.bias.fill_(gate_bias)  # p_gen ~ 0.05: copying wins; ~ 0.95: generation
        states = model.model.encoder(input_ids=input_ids, attention_mask=mask.long()).last_hidden_state
        tokens = torch.full((4, 7), model.config.mask_token_id)
        target_mask = torch.ones_like(tokens, dtype=torch.bool)
        with torch.no_grad():
            full = model.nat_pass(tokens, target_mask, states, input_ids, mask)
            lean = model.nat_pass(tokens, target_mask, states, input_ids, mask, mixture=False)
            scores, winners = model.output_head.most_likely_tokens(lean)
        reference = model.output_head.log_probs(full.logits).clone()
        reference[..., model.config.mask_token_id] = float("-inf")  # <mask> is never an output
        reference_scores, reference_winners = reference.max(-1)
        assert (lean.logits is None) == use_copy  # a plain model's logits are its vocabulary logits: no extra cost
        assert torch.equal(winners, reference_winners), (use_copy, gate_bias)
        assert not bool((winners == model.config.mask_token_id).any())
        torch.testing.assert_close(scores, reference_scores, atol=1e-5, rtol=1e-5)
        # what parallel decoding calls: the vocabulary logits as scratch space, the same winners
        scratch = lean._replace(vocab_logits=lean.vocab_logits.clone())
        in_place_scores, in_place_winners = model.output_head.most_likely_tokens(scratch, overwrite_logits=True)
        assert torch.equal(in_place_winners, winners) and torch.equal(in_place_scores, scores)
        if use_copy:
            vocabulary_best = lean.vocab_logits.index_fill(-1, torch.tensor([model.config.mask_token_id]),
                                                           float("-inf")).argmax(-1)
            if gate_bias < 0:  # copying wins: every winner is a token of its own source
                assert all(bool(torch.isin(winners[row], input_ids[row][mask[row]]).all()) for row in range(4))
            else:
                assert torch.equal(winners, vocabulary_best)


def test_blockwise_max_equals_torch_max_including_ties_and_ragged_widths():
    """The winners' search (block maxima, then one block) gives torch.max's values and first-index ties at any width."""
    from copynat.modeling.output_head import max_over_last_dim

    generator = torch.Generator().manual_seed(0)
    for width in (7, 256, 1000, 8000, 8003):
        x = torch.randn(3, 5, width, generator=generator)
        x[0, 0, :] = 1.0  # all tied: index 0
        x[0, 1, width // 3] = x[0, 1, width - 1] = 50.0  # tied in two blocks: the earlier one
        x[1, 2, :] = float("-inf")
        x[1, 2, width - 1] = 0.0  # the maximum in the ragged tail
        values, indices = max_over_last_dim(x)
        reference_values, reference_indices = torch.max(x, dim=-1)
        assert torch.equal(values, reference_values) and torch.equal(indices, reference_indices), width


def test_packed_cpu_kernels_decode_like_the_plain_linears_and_follow_weight_updates(trained_hybrid_model, monkeypatch):
    """Inside `copynat.packed_cpu_kernels(model)` parallel decoding runs the widening Linears on packed oneDNN weights
    (CPU): same tokens and scores as the plain modules, re-packed after a weight changes in place, and the modules
    are left as they were."""
    from copynat import cpu_kernels, packed_cpu_kernels

    model = trained_hybrid_model
    source, _ = copy_task_batch(8, 6, torch.Generator().manual_seed(9))
    if not cpu_kernels.packing_supported(model):  # CUDA/bf16 models and torch builds without oneDNN
        pytest.skip("packed oneDNN linears need an fp32 CPU model and a torch build with oneDNN (mkldnn)")
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    with packed_cpu_kernels(model):  # by default only widening products are packed
        packed_now = {m for m in linears if "forward" in vars(m)}
    assert packed_now == {m for m in linears if m.out_features >= 3 * m.in_features}
    assert model.model.decoder.layers[0].self_attn.qkv_proj in packed_now and model.output_head.lm_head not in packed_now
    monkeypatch.setattr(cpu_kernels, "PACK_MIN_WIDENING", 0)  # the rest of the test: every Linear packed

    def decode():
        return model.generate(source, non_autoregressive=True, nat_iterations=2, return_dict_in_generate=True)

    with packed_cpu_kernels(model):
        packed = decode()
    plain = decode()  # the default path: plain PyTorch
    assert all(m in cpu_kernels._PACKED for m in linears)  # the packed path did run
    assert torch.equal(packed.sequences, plain.sequences)
    torch.testing.assert_close(packed.sequences_scores, plain.sequences_scores, atol=1e-4, rtol=1e-4)
    assert not any("forward" in vars(m) for m in model.modules())  # the modules' own forward is back
    saved = model.output_head.lm_head.weight.detach().clone()
    try:
        with torch.no_grad():
            model.output_head.lm_head.weight.mul_(-1.0)  # tied to the embeddings: every pass changes
        packed_before = cpu_kernels._PACKED[model.output_head.lm_head].weight
        with packed_cpu_kernels(model):
            flipped = decode()
        flipped_plain = decode()
        assert cpu_kernels._PACKED[model.output_head.lm_head].weight is not packed_before  # re-packed after the update
        assert torch.equal(flipped.sequences, flipped_plain.sequences)
        assert not torch.equal(flipped.sequences, packed.sequences)
    finally:
        with torch.no_grad():
            model.output_head.lm_head.weight.copy_(saved)

    # A module swapped in after the first block (resizing, adapters) runs packed too: the Linears are listed afresh.
    old_classifier = model.parallel_head.length_predictor.classifier
    new_classifier = torch.nn.Linear(old_classifier.in_features, old_classifier.out_features)
    new_classifier.load_state_dict(old_classifier.state_dict())
    seen = []
    new_classifier.register_forward_pre_hook(lambda module, args: seen.append("forward" in vars(module)))
    model.parallel_head.length_predictor.classifier = new_classifier
    try:
        with packed_cpu_kernels(model):
            assert torch.equal(decode().sequences, packed.sequences) and seen == [True]
    finally:
        model.parallel_head.length_predictor.classifier = old_classifier


def test_copynat_registers_no_hook_and_patches_no_module(tmp_path):
    """`import copynat`, then building, training and decoding a model (AR, beams, NAT, remote code saved and loaded)
    leaves torch's global hooks empty and writes no attribute on any module instance: the default path is plain
    PyTorch. Run in a fresh Python, so that no other test's imports count."""
    import subprocess
    import sys

    script = r"""
import torch, torch.nn.modules.module as torch_module
hooks = {name: dict(getattr(torch_module, name)) for name in dir(torch_module) if name.startswith("_global_")
         and isinstance(getattr(torch_module, name), dict)}
bystander = torch.nn.Linear(4, 4)
import copynat
from copynat import CopyNatConfig, CopyNatForConditionalGeneration
config = CopyNatConfig(vocab_size=64, d_model=32, encoder_layers=1, decoder_layers=1, encoder_ffn_dim=64,
                       decoder_ffn_dim=64, decoder_mode="hybrid", nat_training="cmlm", max_position_embeddings=64,
                       length_classes=32)
model = CopyNatForConditionalGeneration(config)
before = {id(m): dict(vars(m)).keys() for m in model.modules()}
source = torch.randint(5, 64, (2, 6))
model(input_ids=source, labels=source).loss.backward()
model.eval()
model.generate(source, max_new_tokens=4)
model.generate(source, max_new_tokens=4, num_beams=2)
patched = []  # is a Linear's forward swapped while it runs? (the packed CPU kernels did that by default)
qkv = model.model.decoder.layers[0].self_attn.qkv_proj
handle = qkv.register_forward_pre_hook(lambda module, args: patched.append("forward" in vars(module)))
model.generate(source, non_autoregressive=True, nat_iterations=2)
handle.remove()
assert patched and not any(patched), patched
model.save_pretrained(__import__("sys").argv[1])
after = {name: dict(getattr(torch_module, name)) for name in hooks}
assert after == hooks, [name for name in hooks if after[name] != hooks[name]]
assert "forward" not in vars(bystander) and not any("forward" in vars(m) for m in model.modules())
assert all(vars(m).keys() == before[id(m)] for m in model.modules()), "an attribute was written on a module"
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


def test_glancing_reveals_more_reference_tokens_where_the_first_pass_is_wrong(monkeypatch):
    """GLAT: a sentence the first parallel pass gets right is learned with nothing shown, one it gets wrong with
    ratio x errors reference tokens shown as decoder inputs; the loss is on the others."""
    model = CopyNatForConditionalGeneration(tiny_config(decoder_mode="hybrid", nat_training="glancing",
                                                        glancing_ratio=0.5)).eval()
    labels = torch.randint(5, VOCAB, (3, 8), generator=torch.Generator().manual_seed(4))
    wrong_count = {0: 0, 1: 4, 2: 8}
    guess = labels.clone()
    for row, wrong in wrong_count.items():
        guess[row, :wrong] = (labels[row, :wrong] + 1 - 5) % (VOCAB - 5) + 5  # a different token
    tokens, predicted = model.parallel_head.glanced_targets(labels, guess)
    shown = (~predicted).sum(1).tolist()
    assert shown == [0, 2, 4]  # half of each sentence's errors
    mask_id = model.config.mask_token_id
    assert torch.equal(tokens[~predicted], labels[~predicted])  # shown: the reference tokens
    assert bool((tokens[predicted] == mask_id).all())  # learned: behind <mask>
    out = model.train()(input_ids=labels, labels=labels)  # the glancing loss trains end to end
    assert torch.isfinite(out.nat_loss) and out.nat_loss > 0


def test_a_student_from_an_at_teacher_keeps_its_at_outputs_before_any_nat_update(tmp_path):
    """copynat-train --model_name_or_path TEACHER --decoder_mode hybrid: the student loads the teacher's weights, its
    length predictor starts fresh, and before any update its autoregressive outputs are the teacher's."""
    from transformers import AutoModelForSeq2SeqLM

    torch.manual_seed(0)
    teacher = CopyNatForConditionalGeneration(tiny_config(decoder_mode="ar")).eval()
    assert teacher.parallel_head is None
    teacher.save_pretrained(tmp_path)
    student = AutoModelForSeq2SeqLM.from_pretrained(tmp_path, decoder_mode="hybrid", nat_training="glancing").eval()
    assert student.config.decoder_mode == "hybrid" and student.parallel_head.length_predictor is not None
    source = torch.randint(5, VOCAB, (3, 7), generator=torch.Generator().manual_seed(1))
    for settings in ({}, {"num_beams": 3}):
        assert torch.equal(student.generate(source, max_new_tokens=8, **settings),
                           teacher.generate(source, max_new_tokens=8, **settings)), settings
    assert student.generate(source, non_autoregressive=True).shape[0] == 3  # and it can decode in parallel


def test_nat_compile_pads_to_static_shapes_and_decodes_as_the_eager_pass(trained_hybrid_model, monkeypatch):
    """The compiled path (whole pass, lengths and sources padded to multiples of 8) picks the eager tokens; here
    `torch.compile` is the identity so the padding logic is checked on the CPU in milliseconds."""
    import copynat.modeling.generation_copynat as generation

    compiled_modes = []

    def identity_compile(function, mode=None, dynamic=None):
        compiled_modes.append((mode, dynamic))
        return function

    monkeypatch.setattr(generation.torch, "compile", identity_compile)
    trained_hybrid_model.__dict__.pop("_compiled_nat_passes", None)
    source, _ = copy_task_batch(5, 7, torch.Generator().manual_seed(3))
    attention_mask = torch.ones_like(source)
    source[1, 4:], attention_mask[1, 4:] = 0, 0
    for iterations, beam in ((1, 1), (4, 3)):
        eager = trained_hybrid_model.generate(source, attention_mask=attention_mask, non_autoregressive=True,
                                              nat_iterations=iterations, length_beam=beam,
                                              return_dict_in_generate=True)
        padded = trained_hybrid_model.generate(source, attention_mask=attention_mask, non_autoregressive=True,
                                               nat_iterations=iterations, length_beam=beam, nat_compile="default",
                                               return_dict_in_generate=True)
        assert torch.equal(padded.sequences, eager.sequences)
        assert torch.allclose(padded.sequences_scores, eager.sequences_scores, atol=1e-5)
    assert compiled_modes == [("default", False)]  # compiled once per model and mode, static shapes
    # nat_compile=True means CUDA graphs, which only CUDA has: elsewhere it is the eager pass, compiling nothing.
    fallback = trained_hybrid_model.generate(source, attention_mask=attention_mask, non_autoregressive=True,
                                             nat_compile=True)
    assert torch.equal(fallback, trained_hybrid_model.generate(source, attention_mask=attention_mask,
                                                               non_autoregressive=True))
    assert compiled_modes == [("default", False)]
    trained_hybrid_model.__dict__.pop("_compiled_nat_passes", None)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs (nat_compile=True) need a CUDA device")
def test_nat_compile_with_cuda_graphs_decodes_as_the_eager_pass(trained_hybrid_model):
    model = trained_hybrid_model.to("cuda")
    try:
        source, target = copy_task_batch(4, 6, torch.Generator().manual_seed(9))
        source = source.cuda()
        eager = model.generate(source, non_autoregressive=True, nat_iterations=4)
        for _ in range(3):  # warm-up, recording, replay
            compiled = model.generate(source, non_autoregressive=True, nat_iterations=4, nat_compile=True)
        assert torch.equal(compiled, eager)
    finally:
        model.__dict__.pop("_compiled_nat_passes", None)
        model.to("cpu")


def _ragged_copy_batch(batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Copy task with lengths 3..8 (right-padded) and, in every other row, a token said twice in a row (CTC must put
    a blank between the two)."""
    lengths = torch.randint(3, 9, (batch,), generator=generator)
    tokens = torch.randint(5, VOCAB, (batch, 9), generator=generator)
    tokens[::2, 1] = tokens[::2, 0]
    positions = torch.arange(9)[None, :]
    tokens = torch.where(positions < lengths[:, None], tokens, torch.zeros_like(tokens))
    tokens = torch.where(positions == lengths[:, None], torch.full_like(tokens, 2), tokens)
    labels = tokens.masked_fill(tokens == 0, -100)
    return tokens, labels


def test_ctc_learns_ragged_parallel_copies_with_repeated_tokens():
    """nat_training="ctc": no length predictor, the length comes from the source (2 positions per token); after a
    few seconds of training one parallel pass copies sources of any length, repeats included."""
    torch.manual_seed(0)
    model = CopyNatForConditionalGeneration(tiny_config(decoder_mode="nat", nat_training="ctc"))
    assert model.parallel_head.length_predictor is None
    generator = torch.Generator().manual_seed(0)
    losses = train_steps(model, 300, lambda step: _ragged_copy_batch(32, generator))
    assert losses[-1] < 0.1 * losses[0]
    source, labels = _ragged_copy_batch(8, torch.Generator().manual_seed(5))
    out = model.generate(source, attention_mask=(source != 0).long(), non_autoregressive=True,
                         return_dict_in_generate=True)
    expected = labels.masked_fill(labels == -100, model.config.pad_token_id)
    assert torch.equal(out.sequences[:, 1:], expected[:, :out.sequences.shape[1] - 1])
    assert bool((out.sequences[:, 1:][expected[:, :out.sequences.shape[1] - 1] == 0] == 0).all())
    assert torch.equal(out["lengths"], (labels != -100).sum(1))
    with pytest.raises(ValueError, match="CTC.*one pass"):
        model.generate(source, non_autoregressive=True, nat_iterations=4)


def test_ctc_decoding_merges_repeats_drops_blanks_and_cuts_after_eos(monkeypatch):
    model = CopyNatForConditionalGeneration(tiny_config(decoder_mode="nat", nat_training="ctc")).eval()
    blank, eos = model.config.mask_token_id, model.config.eos_token_id
    path = torch.tensor([[7, 7, blank, 7, 9, 9, eos, blank, 11, 12],  # a a _ a b b </s> _ c d
                         [blank, 8, blank, blank, 8, 8, 10, blank, blank, blank]])  # no </s>: one is appended
    monkeypatch.setattr(model.output_head, "most_likely_tokens", lambda head, overwrite_logits=False,
                        allow_mask=False, mask_penalty=0.0: (torch.zeros(path.shape), path))
    source = torch.randint(5, VOCAB, (2, 5))  # 5 tokens x ratio 2 = the path's 10 positions
    sequences = model.generate(source, non_autoregressive=True)
    start, pad = model.config.decoder_start_token_id, model.config.pad_token_id
    assert sequences.tolist() == [[start, 7, 7, 9, eos], [start, 8, 8, 10, eos]]
    path[1] = torch.tensor([blank, 8, eos, blank, blank, blank, blank, blank, blank, blank])
    assert model.generate(source, non_autoregressive=True).tolist() == [[start, 7, 7, 9, eos],
                                                                       [start, 8, eos, pad, pad]]


def _merged_ctc_path(path: torch.Tensor, blank: int, eos: int) -> list[list[int]]:
    """CTC's collapse written out: repeats merged, blanks dropped, cut after the first </s>."""
    rows = []
    for row in path.tolist():
        kept = [t for i, t in enumerate(row) if t != blank and (i == 0 or t != row[i - 1])]
        rows.append(kept[:kept.index(eos) + 1] if eos in kept else kept + [eos])
    return rows


def test_ctc_blank_penalty_lengthens_the_output_and_is_kept_in_the_generation_config(tmp_path):
    """generate(ctc_blank_penalty=b) lowers the blank's log-prob by b before each position's best token is kept: 0
    is the plain decoding, a huge penalty keeps the best non-blank token everywhere; the model's generation config
    holds a default that save/load keeps."""
    from transformers import AutoModelForSeq2SeqLM

    from copynat.training.evaluation import set_generation_default

    torch.manual_seed(0)
    model = CopyNatForConditionalGeneration(tiny_config(decoder_mode="nat", nat_training="ctc")).eval()
    blank, eos, start = model.config.mask_token_id, model.config.eos_token_id, model.config.decoder_start_token_id
    source = torch.randint(5, VOCAB, (3, 6), generator=torch.Generator().manual_seed(2))
    from copynat.modeling.parallel_decoding import encode_source as _encode_source

    with torch.no_grad():  # each position's best token with the blank, and without it (the <mask> id excluded)
        ids, encoder, mask = _encode_source(model, source, None)
        slot_tokens, slots = model.parallel_head.ctc_slots(ids, mask)
        head = model.nat_pass(slot_tokens, slots, encoder.last_hidden_state, ids, mask, mixture=False)
        _, best = model.output_head.most_likely_tokens(head, allow_mask=True)
        _, best_other = model.output_head.most_likely_tokens(head)
    assert bool((best == blank).any())  # the plain decoding drops some positions
    plain = model.generate(source, non_autoregressive=True)
    assert torch.equal(model.generate(source, non_autoregressive=True, ctc_blank_penalty=0.0), plain)
    no_blank = model.generate(source, non_autoregressive=True, ctc_blank_penalty=1e4)
    for sequences, path in ((plain, best), (no_blank, best_other)):
        expected = [[start] + row for row in _merged_ctc_path(path, blank, eos)]
        assert [[t for t in row if t != model.config.pad_token_id] for row in sequences.tolist()] == expected
    assert int((no_blank != 0).sum()) > int((plain != 0).sum())
    set_generation_default(model, ctc_blank_penalty=1e4)  # the default of later calls, saved with the model
    assert torch.equal(model.generate(source, non_autoregressive=True), no_blank)
    model.save_pretrained(tmp_path)
    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    assert loaded.generation_config.ctc_blank_penalty == 1e4
    assert torch.equal(loaded.generate(source, non_autoregressive=True), no_blank)
    with pytest.raises(ValueError, match="ctc_blank_penalty must be a finite number"):
        model.generate(source, non_autoregressive=True, ctc_blank_penalty=float("nan"))
    glancing = CopyNatForConditionalGeneration(tiny_config(decoder_mode="nat", nat_training="glancing")).eval()
    with pytest.raises(ValueError, match="ctc_blank_penalty applies to CTC models"):
        glancing.generate(source, non_autoregressive=True, ctc_blank_penalty=1.0)


def test_hybrid_ctc_student_starts_from_its_at_teacher(tmp_path):
    from transformers import AutoModelForSeq2SeqLM

    torch.manual_seed(0)
    teacher = CopyNatForConditionalGeneration(tiny_config(decoder_mode="ar")).eval()
    teacher.save_pretrained(tmp_path)
    student = AutoModelForSeq2SeqLM.from_pretrained(tmp_path, decoder_mode="hybrid", nat_training="ctc").eval()
    assert student.parallel_head.length_predictor is None
    source = torch.randint(5, VOCAB, (3, 7), generator=torch.Generator().manual_seed(1))
    assert torch.equal(student.generate(source, max_new_tokens=8), teacher.generate(source, max_new_tokens=8))
    labels = torch.cat((source, torch.full((3, 1), 2)), dim=1)
    out = student.train()(input_ids=source, labels=labels)
    assert out.ar_loss is not None and out.nat_loss is not None and out.length_loss is None
    out.loss.backward()
    assert all(p.grad is not None for p in student.parameters() if p.requires_grad)


@pytest.mark.parametrize("use_copy_mechanism", [True, False])
def test_ctc_loss_reads_the_blank_and_the_targets_only_and_equals_ctc_over_the_whole_vocabulary(use_copy_mechanism):
    """Training's CTC loss gathers each slot's log-probability of the blank and of its row's labels (a repeated
    label keeps needing a blank between): the same loss and gradients as F.ctc_loss over the full distribution."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    model = CopyNatForConditionalGeneration(tiny_config(decoder_mode="nat", nat_training="ctc",
                                                        use_copy_mechanism=use_copy_mechanism)).double().eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.3)
    source = torch.randint(5, VOCAB, (3, 7), generator=torch.Generator().manual_seed(1))
    source[2, 5:] = model.config.pad_token_id
    labels = torch.tensor([[7, 7, 9, 9, 9, 2], [5, 6, 5, 6, 2, -100], [8, 8, 2, -100, -100, -100]])
    mask = (source != model.config.pad_token_id).long()
    ours = model(input_ids=source, attention_mask=mask, labels=labels).nat_loss
    encoder = model.model.encoder(input_ids=source, attention_mask=mask)
    tokens, slots = model.parallel_head.ctc_slots(source, mask.bool())
    head = model.nat_pass(tokens, slots, encoder.last_hidden_state, source, mask.bool())
    log_probs = model.output_head.log_probs(head.logits).transpose(0, 1)
    lengths = (labels != -100).sum(1)
    reference = F.ctc_loss(log_probs, labels.clamp_min(0), slots.sum(1), lengths, blank=model.config.mask_token_id,
                           reduction="sum", zero_infinity=True) / lengths.sum()
    torch.testing.assert_close(ours, reference.detach(), rtol=1e-6, atol=1e-6)
    gradients = []
    for loss in (model(input_ids=source, attention_mask=mask, labels=labels).loss, None):
        model.zero_grad()
        if loss is None:
            head = model.nat_pass(tokens, slots, model.model.encoder(input_ids=source, attention_mask=mask)
                                  .last_hidden_state, source, mask.bool())
            log_probs = model.output_head.log_probs(head.logits).transpose(0, 1)
            loss = F.ctc_loss(log_probs, labels.clamp_min(0), slots.sum(1), lengths,
                              blank=model.config.mask_token_id, reduction="sum", zero_infinity=True) / lengths.sum()
        loss.backward()
        gradients.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    for name in gradients[1]:
        difference = (gradients[0][name] - gradients[1][name]).abs().max()
        assert difference <= 1e-5 * gradients[1][name].abs().max() + 1e-7, (name, float(difference))
