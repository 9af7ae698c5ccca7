"""Drafted decoding (`generate(draft="parallel")`) against plain greedy on the same hybrid model, and CTranslate2.

    python benchmarks/drafted.py --model runs/multi30k/student --task multi30k           # Multi30k test_2016
    python benchmarks/drafted.py --model runs/multi30k/student --task multi30k --data_dir path/to/multi30k
    python benchmarks/drafted.py --model copynat-output --task echo                      # echo out-of-distribution

For each task it measures, on one hybrid model folder:

1. **losslessness**: every test sentence decoded greedily and drafted (batch 32, the default constraints on): the share
   of outputs identical to greedy's, and the rows that differ (with the two outputs);
2. **quality**: BLEU (sacreBLEU, 13a) of greedy, drafted, the parallel one pass and the relaxed acceptance
   (`draft_top_k=3, draft_margin=1.0`), and on the echo task the entity copy rate;
3. **speed**, at batch 1, 8 and 32 on the first sentences of the test set: wall time per sentence of greedy, drafted
   (the whole rest of the draft verified a round, and at most 4 drafted tokens a round), relaxed drafted and the one
   pass, timed in interleaved rounds (medians), the speed-ups as paired ratios, and the
   mean number of tokens kept per verification pass;
4. **the peer**: CTranslate2 greedy (fp32 and int8, the `ctranslate2` package) on a Transformer of the same dimensions
   converted from a Bart checkpoint with random weights, its output length forced to the mean length of copynat's
   greedy outputs on the same sentences, timed in the same rounds at batch 1 (and 8, 32).

Writes benchmarks/results/drafted/<task>_<date>_<commit>.json and .md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402

RELAXED = {"draft_top_k": 3, "draft_margin": 1.0}


def load_task(args) -> tuple[list[str], list[str], list[list[str]] | None]:
    """(sources, references, entities per sentence or None)."""
    if args.task == "multi30k":
        folder = common.multi30k_dir(args)
        sources = (folder / "test_2016_flickr.en").read_text(encoding="utf-8").splitlines()
        references = (folder / "test_2016_flickr.de").read_text(encoding="utf-8").splitlines()
        return sources, references, None
    from copynat.data import make_echo_ood_examples

    examples = make_echo_ood_examples(args.num_echo)
    return [e["source"] for e in examples], [e["target"] for e in examples], [e["entities"] for e in examples]


def batches(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def decode_all(model, tokenizer, sources: list[str], batch_size: int, max_new_tokens: int,
               **settings) -> tuple[list[list[int]], float]:
    """Token ids of every output (without the start token and padding) and the decoding's wall time."""
    outputs, started = [], time.perf_counter()
    for chunk in batches(sources, batch_size):
        inputs = tokenizer(chunk, return_tensors="pt", padding=True, truncation=True)
        with torch.no_grad():
            ids = model.generate(**inputs, max_new_tokens=max_new_tokens, **settings)
        outputs += [[t for t in row[1:] if t != tokenizer.pad_token_id] for row in ids.tolist()]
    return outputs, time.perf_counter() - started


def bleu(tokenizer, outputs: list[list[int]], references: list[str]) -> float:
    import sacrebleu

    return sacrebleu.corpus_bleu(tokenizer.batch_decode(outputs, skip_special_tokens=True), [references]).score


def copy_rate(tokenizer, outputs: list[list[int]], entities: list[list[str]]) -> float:
    texts = tokenizer.batch_decode(outputs, skip_special_tokens=True)
    found = sum(entity in text for text, wanted in zip(texts, entities) for entity in wanted)
    return 100.0 * found / max(1, sum(len(wanted) for wanted in entities))


def ctranslate2_translators(model, tokenizer, folder: Path) -> dict:
    """CTranslate2 fp32 and int8 translators of a Bart with copynat's dimensions (random weights, the same
    vocabulary), or {} when ctranslate2 is not installed."""
    try:
        import ctranslate2
    except ImportError:
        return {}
    from transformers import BartConfig, BartForConditionalGeneration

    config = model.config
    bart = BartForConditionalGeneration(BartConfig(
        vocab_size=config.vocab_size, d_model=config.d_model, encoder_layers=config.encoder_layers,
        decoder_layers=config.decoder_layers, encoder_attention_heads=config.encoder_attention_heads,
        decoder_attention_heads=config.decoder_attention_heads, encoder_ffn_dim=config.encoder_ffn_dim,
        decoder_ffn_dim=config.decoder_ffn_dim, max_position_embeddings=config.max_position_embeddings,
        activation_function=config.activation_function, pad_token_id=config.pad_token_id,
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
        decoder_start_token_id=config.decoder_start_token_id, forced_eos_token_id=None,
        normalize_before=False))  # CTranslate2 4.8 reads this field, which transformers 5 no longer writes
    bart.save_pretrained(folder / "bart")
    tokenizer.save_pretrained(folder / "bart")
    ctranslate2.converters.TransformersConverter(str(folder / "bart")).convert(str(folder / "ct2"), force=True)
    threads = torch.get_num_threads()
    return {f"ctranslate2 {kind}": ctranslate2.Translator(str(folder / "ct2"), device="cpu", compute_type=kind,
                                                          intra_threads=threads, inter_threads=1)
            for kind in ("float32", "int8")}


def speed(model, tokenizer, sources: list[str], batch_size: int, sentences: int, rounds: int, translators: dict,
          forced_length: int, max_new_tokens: int) -> dict:
    """Seconds per sentence of each decoding on the first `sentences` sources, interleaved rounds."""
    chunks = [tokenizer(chunk, return_tensors="pt", padding=True, truncation=True)
              for chunk in batches(sources[:sentences], batch_size)]
    pieces = [[tokenizer.convert_ids_to_tokens([t for t in ids if t != tokenizer.pad_token_id])
               for ids in chunk["input_ids"].tolist()] for chunk in chunks]
    kept: list[float] = []

    def run(**settings):
        def decode():
            with torch.no_grad():
                for chunk in chunks:
                    out = model.generate(**chunk, max_new_tokens=max_new_tokens, **settings)
                    if settings.get("return_dict_in_generate"):
                        written = (out.sequences[:, 1:] != tokenizer.pad_token_id).sum(1)
                        kept.append(float((written / out.rounds.clamp_min(1)).mean()))
        return decode

    def peer(translator):
        def decode():
            for chunk in pieces:
                translator.translate_batch(chunk, beam_size=1, max_decoding_length=forced_length,
                                           min_decoding_length=forced_length)
        return decode

    cases = {"greedy": run(), "drafted": run(draft="parallel", return_dict_in_generate=True),
             "drafted, window 4": run(draft="parallel", draft_window=4),
             "drafted relaxed": run(draft="parallel", **RELAXED), "one pass": run(non_autoregressive=True)}
    cases.update({name: peer(translator) for name, translator in translators.items()})
    times = common.time_interleaved(cases, repeats=rounds, warmup=1)
    per_sentence = {name: statistics.median(samples) / sentences for name, samples in times.items()}
    return {"batch_size": batch_size, "sentences": sentences, "rounds": len(times["greedy"]),
            "ms_per_sentence": {name: round(1000 * value, 3) for name, value in per_sentence.items()},
            "speedup_over_greedy": {name: round(common.paired_ratio(times["greedy"], samples), 3)
                                    for name, samples in times.items() if name != "greedy"},
            # > 1: drafted decoding takes less time a sentence than CTranslate2 fp32 greedy
            "drafted_speed_vs_ctranslate2_fp32": (
                round(common.paired_ratio(times["ctranslate2 float32"], times["drafted"]), 3)
                if "ctranslate2 float32" in times else None),
            "tokens_kept_per_pass": round(statistics.mean(kept), 3) if kept else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a hybrid copynat model folder (with its tokenizer)")
    parser.add_argument("--task", choices=("multi30k", "echo"), default="multi30k")
    common.add_multi30k_flags(parser)
    parser.add_argument("--num_echo", type=int, default=1500, help="echo out-of-distribution sentences")
    parser.add_argument("--batch_sizes", default="1,8,32")
    parser.add_argument("--speed_sentences", type=int, default=64, help="sentences timed per batch size and round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds per batch size")
    parser.add_argument("--max_new_tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no_peer", action="store_true", help="skip CTranslate2")
    parser.add_argument("--name", default=None, help="results file name (default: the task)")
    args = parser.parse_args()
    common.setup(threads=args.threads)
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    import copynat  # noqa: F401  (registers the Auto classes)

    model = AutoModelForSeq2SeqLM.from_pretrained(args.model).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    tokenizer.model_max_length = model.config.max_position_embeddings  # truncation=True cuts sources there
    if model.config.decoder_mode != "hybrid":
        raise SystemExit(f"--model {args.model}: drafted decoding needs a hybrid model, this one is "
                         f"{model.config.decoder_mode!r}")
    sources, references, entities = load_task(args)

    limit = min(args.max_new_tokens, model.config.max_position_embeddings - 1)
    greedy, greedy_seconds = decode_all(model, tokenizer, sources, 32, limit)
    drafted, drafted_seconds = decode_all(model, tokenizer, sources, 32, limit, draft="parallel")
    relaxed, relaxed_seconds = decode_all(model, tokenizer, sources, 32, limit, draft="parallel", **RELAXED)
    one_pass, one_pass_seconds = decode_all(model, tokenizer, sources, 32, limit, non_autoregressive=True)
    differing = [{"row": index, "source": sources[index], "greedy": tokenizer.decode(a), "drafted": tokenizer.decode(b)}
                 for index, (a, b) in enumerate(zip(greedy, drafted)) if a != b]
    quality = {name: {"bleu": round(bleu(tokenizer, outputs, references), 2), "seconds_at_batch_32": round(seconds, 2),
                      **({"entity_copy_rate": round(copy_rate(tokenizer, outputs, entities), 2)} if entities else {})}
               for name, outputs, seconds in (("greedy", greedy, greedy_seconds), ("drafted", drafted, drafted_seconds),
                                              ("drafted relaxed", relaxed, relaxed_seconds),
                                              ("one pass", one_pass, one_pass_seconds))}
    forced_length = round(statistics.mean(len(ids) for ids in greedy[:args.speed_sentences]))
    with tempfile.TemporaryDirectory() as folder:
        translators = {} if args.no_peer else ctranslate2_translators(model, tokenizer, Path(folder))
        speeds = [speed(model, tokenizer, sources, int(size), args.speed_sentences, args.rounds, translators,
                        forced_length, limit) for size in args.batch_sizes.split(",")]
    identical = 100.0 * (len(sources) - len(differing)) / len(sources)
    payload = {"task": args.task, "model": str(args.model), "sentences": len(sources),
               "identical_to_greedy_percent": round(identical, 2), "differing_rows": differing,
               "quality": quality, "speed": speeds, "ctranslate2_forced_length": forced_length,
               "relaxed_settings": RELAXED}
    lines = [f"# Drafted decoding: {args.task} ({len(sources)} sentences, model {args.model})", "",
             f"Drafted outputs identical to greedy: {identical:.2f} % ({len(differing)} rows differ).", "",
             common.markdown_table(["decoding", "BLEU", "s at batch 32"] + (["entity copy %"] if entities else []),
                                   [[name, q["bleu"], q["seconds_at_batch_32"]]
                                    + ([q["entity_copy_rate"]] if entities else []) for name, q in quality.items()]),
             "", f"Speed (ms per sentence, medians of interleaved rounds; CTranslate2 forced to {forced_length} "
                 "output tokens):", ""]
    names = list(speeds[0]["ms_per_sentence"])
    lines.append(common.markdown_table(
        ["batch"] + names + ["drafted / greedy", "tokens kept a pass", "drafted vs CT2 fp32"],
        [[s["batch_size"]] + [s["ms_per_sentence"][n] for n in names]
         + [s["speedup_over_greedy"]["drafted"], s["tokens_kept_per_pass"], s["drafted_speed_vs_ctranslate2_fp32"]]
         for s in speeds]))
    markdown = "\n".join(lines)
    print(markdown)
    path = common.write_result("drafted", args.name or args.task, payload, markdown)
    print(f"\nwritten: {path}")


if __name__ == "__main__":
    main()
