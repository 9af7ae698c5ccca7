"""Decoding strategies side by side on one trained model: quality (BLEU, chrF), diversity (distinct-n) and speed.

The lecture's rule: beam search for tasks with one right answer (translation, the echo task), sampling where
variety is wanted (dialogue, stories) — sampling buys diversity with accuracy. NAT trades a little quality for a
large speed-up. This script measures all of them on the same sentences with `model.generate()`.

    python benchmarks/decoding.py --model copynat-output                        # echo test split (unseen names)
    python benchmarks/decoding.py --model runs/multi30k/hybrid-nat --data multi30k --num_examples 500
    python benchmarks/decoding.py --model runs/multi30k/hybrid-nat --data multi30k --data_dir path/to/multi30k

Decodings: greedy (beam 1 is greedy search in generate()), beam 4/8, top-k sampling (k=10), nucleus sampling (p=0.9), each sampled strategy seeded;
NAT one pass and mask-predict 4 when the model has a length predictor. distinct-n is the number of distinct
n-grams over all outputs divided by the number of n-grams (Li et al. 2016): higher = more varied wording.
Multi30k (test_2016_flickr) comes from the `datasets` Hub (--dataset, default bentrevett/multi30k) or a local copy
(--data_dir). Writes benchmarks/results/decoding/<data>_<model folder>_<date>_<commit>.json and .md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402
import copynat  # noqa: E402, F401  (registers the Auto classes)
from copynat.training.metrics import compute_generation_metrics  # noqa: E402
STRATEGIES = {
    "greedy (= beam 1)": {"num_beams": 1, "do_sample": False},
    "beam 4": {"num_beams": 4, "do_sample": False},
    "beam 8": {"num_beams": 8, "do_sample": False},
    "top-k 10 (T=1)": {"do_sample": True, "top_k": 10, "top_p": 1.0, "temperature": 1.0},
    "nucleus p=0.9 (T=1)": {"do_sample": True, "top_k": 0, "top_p": 0.9, "temperature": 1.0},
    "NAT one pass": {"non_autoregressive": True, "nat_iterations": 1},
    "NAT mask-predict 4": {"non_autoregressive": True, "nat_iterations": 4},
}


def load_pairs(args) -> tuple[list[str], list[str]]:
    num_examples = args.num_examples
    if args.data == "echo":
        from copynat.data import make_echo_dataset

        test = make_echo_dataset()["test"]
        return list(test["source"][:num_examples]), list(test["target"][:num_examples])
    folder = common.multi30k_dir(args)
    sources = (folder / "test_2016_flickr.en").read_text(encoding="utf-8").splitlines()[:num_examples]
    targets = (folder / "test_2016_flickr.de").read_text(encoding="utf-8").splitlines()[:num_examples]
    return sources, targets


def distinct_n(outputs: list[str], n: int) -> float:
    grams = [tuple(words[i:i + n]) for words in (o.split() for o in outputs) for i in range(len(words) - n + 1)]
    return 100.0 * len(set(grams)) / max(1, len(grams))


def decode(model, tokenizer, sources: list[str], kwargs: dict, batch_size: int, max_new_tokens: int) -> tuple[list[str], float]:
    outputs: list[str] = []
    torch.manual_seed(0)
    start = time.perf_counter()
    for i in range(0, len(sources), batch_size):
        batch = tokenizer(sources[i:i + batch_size], return_tensors="pt", padding=True)
        with torch.no_grad():
            generated = model.generate(**batch, max_new_tokens=max_new_tokens, **kwargs)
        outputs += tokenizer.batch_decode(generated, skip_special_tokens=True)
    return [o.strip() for o in outputs], time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a trained copynat folder")
    parser.add_argument("--data", choices=("echo", "multi30k"), default="echo")
    common.add_multi30k_flags(parser)
    parser.add_argument("--num_examples", type=int, default=500)
    parser.add_argument("--batch_size", type=int, default=50)
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    model = AutoModelForSeq2SeqLM.from_pretrained(args.model).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    sources, references = load_pairs(args)
    has_nat = bool(getattr(model.config, "uses_nat", False))
    ctc = has_nat and model.config.nat_training == "ctc"
    rows = []
    for name, kwargs in STRATEGIES.items():
        if kwargs.get("non_autoregressive") and not has_nat:
            rows.append({"decoding": name, "skipped": "the model has no parallel decoder (decoder_mode ar)"})
            continue
        if ctc and kwargs.get("nat_iterations", 1) > 1:
            rows.append({"decoding": name, "skipped": "a CTC model decodes in one pass (no mask-predict)"})
            continue
        outputs, seconds = decode(model, tokenizer, sources, kwargs, args.batch_size, args.max_new_tokens)
        scores = compute_generation_metrics(outputs, references)
        rows.append({"decoding": name, "bleu": scores["bleu"], "chrf": scores["chrf"],
                     "exact_match": scores["exact_match"], "distinct_1": distinct_n(outputs, 1),
                     "distinct_2": distinct_n(outputs, 2), "seconds": seconds,
                     "sentences_per_second": len(sources) / seconds, "example": outputs[0]})
        print(f"{name:>22}: BLEU {scores['bleu']:6.2f}  distinct-2 {rows[-1]['distinct_2']:5.1f}  {seconds:6.2f} s")
    greedy_seconds = rows[0]["seconds"]
    lines = [f"# Decoding strategies on {args.data} ({len(sources)} test sentences), model {Path(args.model).name}",
             "", f"{args.threads} CPU threads, batch {args.batch_size}; speed-up relative to greedy in the same run.",
             "", "| decoding | BLEU | chrF | exact match | distinct-1 | distinct-2 | seconds | speed-up vs greedy |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['decoding']} | skipped: {r['skipped']} |  |  |  |  |  |  |")
            continue
        lines.append(f"| {r['decoding']} | {r['bleu']:.2f} | {r['chrf']:.2f} | {r['exact_match']:.1f} | "
                     f"{r['distinct_1']:.1f} | {r['distinct_2']:.1f} | {r['seconds']:.2f} | "
                     f"{greedy_seconds / r['seconds']:.2f}x |")
    lines += ["", f"first source: {sources[0]!r}; reference: {references[0]!r}"]
    lines += [f"- {r['decoding']}: {r['example']!r}" for r in rows if "example" in r]
    report = "\n".join(lines)
    print(report)
    path = common.write_result("decoding", f"{args.data}_{Path(args.model).name}",
                               {"model": args.model, "data": args.data, "rows": rows}, report)
    print(f"results: {path}")


if __name__ == "__main__":
    main()
