"""Does barring `<mask>` from NAT outputs change a trained model's translations? (experiment, one run)

Parallel decoding sets `<mask>`'s log-prob to -inf and never copies a source `<mask>` (`most_likely_tokens`), since
mask-predict reads an emitted `<mask>` as "predict here again". This decodes Multi30k test_2016_flickr with a trained
model twice per setting, with the bar and with a copy of `most_likely_tokens` that leaves it out, and prints
sacreBLEU (13a, cased) and how many `<mask>` tokens each output holds.

    python benchmarks/experiments/nat_mask_bar_ab.py runs/multi30k/hybrid-nat   # the student of benchmarks/multi30k.py
"""

import argparse
import types
from pathlib import Path

import sacrebleu
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

import copynat  # noqa: F401  (registers the Auto classes)
from copynat.modeling.generation_copynat import max_over_last_dim

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "multi30k"


def most_likely_tokens_without_the_bar(self, head, source_ids, overwrite_logits=False):
    """`most_likely_tokens` as it was before `<mask>` was barred."""
    logits = head.vocab_logits.float()
    if logits is head.vocab_logits and not overwrite_logits:
        logits = logits.clone()
    log_probs = torch.log_softmax(logits, dim=-1, out=logits)
    top_log_prob, top_token = max_over_last_dim(log_probs)
    if self.copy_generator is None:
        return top_log_prob, top_token
    return self.copy_generator.most_likely(top_log_prob, top_token,
                                           self.copy_generator.source_token_logits(log_probs, source_ids),
                                           head.p_gen, head.copy_attention, source_ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--batch_size", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(2)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSeq2SeqLM.from_pretrained(args.model).eval()
    sources = (args.data / "test_2016_flickr.en").read_text().splitlines()
    references = (args.data / "test_2016_flickr.de").read_text().splitlines()
    order = sorted(range(len(sources)), key=lambda i: -len(sources[i]))

    def decode(iterations: int) -> tuple[float, int]:
        outputs, emitted = [""] * len(sources), 0
        for start in range(0, len(order), args.batch_size):
            rows = order[start:start + args.batch_size]
            batch = tokenizer([sources[i] for i in rows], return_tensors="pt", padding=True, truncation=True)
            with torch.no_grad():
                ids = model.generate(**batch, non_autoregressive=True, nat_iterations=iterations)
            emitted += int((ids == model.config.mask_token_id).sum())
            for i, text in zip(rows, tokenizer.batch_decode(ids, skip_special_tokens=True)):
                outputs[i] = text
        return sacrebleu.corpus_bleu(outputs, [references]).score, emitted

    barred = model.most_likely_tokens
    print("| decoding | BLEU, <mask> barred | <mask> emitted | BLEU, not barred | <mask> emitted |\n|---|---|---|---|---|")
    for iterations in (1, 4, 10):
        model.most_likely_tokens = barred
        with_bar = decode(iterations)
        model.most_likely_tokens = types.MethodType(most_likely_tokens_without_the_bar, model)
        without = decode(iterations)
        print(f"| nat_iterations={iterations} | {with_bar[0]:.2f} | {with_bar[1]} | {without[0]:.2f} | {without[1]} |")


if __name__ == "__main__":
    main()
