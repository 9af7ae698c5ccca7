"""Test BLEU of a saved Multi30k model with generate()'s copy rules on (as shipped) and off, and its name keeping.

The AT rows of `benchmarks/multi30k.py` come from the decoding copynat-train does at the end of training; this script
decodes test_2016_flickr again with today's generate() defaults (whole copied words, loop guard, valid UTF-8) and
with the word rule and loop guard off, so the price of the rules in BLEU is measured on the same weights.

    python benchmarks/multi30k_decode_rules.py runs/multi30k/at-copy runs/multi30k-noaug30/at-copy
    python benchmarks/multi30k_decode_rules.py runs/multi30k/at-copy --data_dir path/to/multi30k   # a local copy

Data: --dataset (default bentrevett/multi30k from the `datasets` Hub) or --data_dir. Writes
benchmarks/results/multi30k_decode_rules/<model folders>_<date>_<commit>.json.
"""

import argparse
import json
import sys
from pathlib import Path

import sacrebleu
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402
from multi30k import name_keeping  # noqa: E402


def translate(model, tokenizer, sources: list[str], **settings) -> list[str]:
    outputs = []
    with torch.no_grad():
        for start in range(0, len(sources), 100):
            batch = tokenizer(sources[start:start + 100], return_tensors="pt", padding=True)
            generated = model.generate(**batch, max_new_tokens=128, **settings)
            outputs += tokenizer.batch_decode(generated, skip_special_tokens=True)
    return [" ".join(text.split()) for text in outputs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    common.add_multi30k_flags(parser)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    args.data = common.multi30k_dir(args)
    torch.set_num_threads(args.threads)
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    import copynat  # noqa: F401

    sources = (args.data / "test_2016_flickr.en").read_text(encoding="utf-8").splitlines()
    references = (args.data / "test_2016_flickr.de").read_text(encoding="utf-8").splitlines()
    results = {}
    for path in args.models:
        model = AutoModelForSeq2SeqLM.from_pretrained(path).eval()
        tokenizer = AutoTokenizer.from_pretrained(path)
        model.set_vocabulary(tokenizer.get_vocab())  # models saved before the word rules get their tables
        rows = {}
        for label, settings in (("greedy, rules on", {}), ("greedy, rules off", {"complete_copied_words": False,
                                                                                  "stop_loops": False}),
                                ("beam4, rules on", {"num_beams": 4}),
                                ("beam4, rules off", {"num_beams": 4, "complete_copied_words": False,
                                                      "stop_loops": False})):
            hypotheses = translate(model, tokenizer, sources, **settings)
            rows[label] = round(sacrebleu.corpus_bleu(hypotheses, [references]).score, 2)
            print(path, label, rows[label], flush=True)
        names = name_keeping(path, args.data)
        rows["names"] = {k: v for k, v in names.items() if k != "examples"}
        print(path, "names", json.dumps(rows["names"])[:300], flush=True)
        results[str(path)] = rows
    print(json.dumps(results, indent=1, ensure_ascii=False))
    name = "+".join(path.parent.name + "-" + path.name for path in args.models)
    print(f"results: {common.write_result('multi30k_decode_rules', name, {'models': results})}")


if __name__ == "__main__":
    main()
