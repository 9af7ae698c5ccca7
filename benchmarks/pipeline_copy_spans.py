"""How many copied entities `pipeline(..., return_copy_spans=True)` marks as copied spans (issue 31; aim >= 95 %).

On the echo task's out-of-distribution split (`copynat.data.make_echo_ood_examples`: scripts, lengths, shapes and
real names training never sees), each reply is decoded greedily with its copy spans. An entity counts as *copied*
when the reply holds it as the entity copy rate counts it (`copynat.data.entity_copy_rate`); it counts as *found*
when the copy spans cover every non-space character of an occurrence of it in the reply, and those spans point into
an occurrence of it in the source.

    python benchmarks/pipeline_copy_spans.py --model copynat-output   # the folder the README's main command writes

Writes benchmarks/results/pipeline_copy_spans/echo-ood_<date>_<commit>.json and .md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

AIM = 95.0


def occurrences(text: str, entity: str) -> list[tuple[int, int]]:
    found, start = [], text.find(entity)
    while start != -1:
        found.append((start, start + len(entity)))
        start = text.find(entity, start + 1)
    return found


def marked(entity: str, source: str, reply: str, spans: list[dict]) -> bool:
    """Whether the copy spans cover an occurrence of `entity` in `reply` and point into one in `source`."""
    in_source = occurrences(source, entity)
    for start, end in occurrences(reply, entity):
        touching = [s for s in spans if s["output_start"] < end and s["output_end"] > start]
        covered = {i for s in touching for i in range(s["output_start"], s["output_end"])}
        if not all(i in covered for i in range(start, end) if not reply[i].isspace()):
            continue
        if all(any(s["source_start"] < b and s["source_end"] > a for a, b in in_source) for s in touching):
            return True
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--num_examples", type=int, default=1500, help="OOD examples (copynat-train's test_ood: 1500)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--copy_threshold", type=float, default=0.5)
    args = parser.parse_args()

    import torch

    import copynat  # noqa: F401
    from transformers import pipeline

    from copynat.data import make_echo_ood_examples
    from copynat.data.echo import _copied

    torch.set_num_threads(2)
    generator = pipeline("text2text-generation", model=args.model)
    examples = make_echo_ood_examples(args.num_examples)
    start = time.perf_counter()
    results = generator([e["source"] for e in examples], batch_size=args.batch_size, decoding="greedy",
                        return_copy_spans=True, copy_threshold=args.copy_threshold)
    seconds = time.perf_counter() - start
    counts: dict[str, list[int]] = {"all": [0, 0]}
    misses = []
    for example, result in zip(examples, results):
        reply, spans = result["generated_text"], result["copy_spans"]
        for entity, category in zip(example["entities"], example["categories"]):
            if not _copied(reply, entity, example["target"]):
                continue  # not copied at all: the entity copy rate's miss, not the spans'
            hit = marked(entity, example["source"], reply, spans)
            for key in ("all", category):
                counts.setdefault(key, [0, 0])[0] += hit
                counts[key][1] += 1
            if not hit and len(misses) < 20:
                misses.append({"source": example["source"], "reply": reply, "entity": entity, "spans": spans})
    rates = {key: round(100.0 * found / total, 2) for key, (found, total) in sorted(counts.items()) if total}
    print(f"copied entities marked as copied spans: {rates['all']:.2f} % of {counts['all'][1]} "
          f"({'met' if rates['all'] >= AIM else 'MISSED'}: aim >= {AIM} %); lowest category "
          f"{min((v, k) for k, v in rates.items() if k != 'all')}; {seconds:.1f} s")
    payload = {"model": args.model, "split": f"echo test_ood, {args.num_examples} examples",
               "copy_threshold": args.copy_threshold, "rate_percent": rates, "counts": counts,
               "seconds": round(seconds, 1), "misses": misses}
    markdown = "\n".join([f"# Copied entities marked as copied spans: {rates['all']:.2f} % of {counts['all'][1]}", "",
                          "| category | % | entities |", "|---|---|---|"] +
                         [f"| {key} | {rate:.2f} | {counts[key][1]} |" for key, rate in rates.items()])
    path = write_result("pipeline_copy_spans", "echo-ood", payload, markdown)
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
