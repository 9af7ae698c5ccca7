"""What `pipeline()` costs on top of calling generate() directly (issue 31; aim: at most 5 % more time).

The direct way is what an application writes without the pipeline: tokenize the batch, `model.generate()`, decode.
The pipeline call (`CopyNatPipeline`) does the same work through transformers' Pipeline machinery (per-input
preprocessing, a DataLoader that pads the batch, per-input postprocessing). Both run the model's default decoding
(its generation config: greedy) on echo test sentences, at batch 1 and batch 32, timed interleaved (one call of each
per round, order alternating) on the same sentences; the ratio is the median over rounds of pipeline / direct.

    python benchmarks/pipeline_overhead.py --model copynat-output   # the folder copynat-train wrote

Writes benchmarks/results/pipeline_overhead/threads<N>_<date>_<commit>.json and .md (with the commit, machine and
command).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (CONTENTION, environment, load_note, paired_ratio, setup, summarize,  # noqa: E402
                     time_interleaved, write_result)

AIM = 1.05


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="A copynat model folder (e.g. copynat-train's output_dir).")
    parser.add_argument("--batch_sizes", default="1,32")
    parser.add_argument("--repeats", type=int, default=30, help="Timed rounds per batch size.")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    setup(threads=args.threads)

    import copynat  # noqa: F401  (registers the pipeline task)
    from transformers import pipeline

    from copynat.data import make_echo_examples

    generator = pipeline("text2text-generation", model=args.model)
    model, tokenizer = generator.model, generator.tokenizer
    sentences = [example["source"] for example in make_echo_examples(256, "test")]

    def direct(batch: list[str]) -> list[str]:
        encoded = tokenizer(batch, return_tensors="pt", padding=True)
        with torch.no_grad():
            ids = model.generate(**encoded)
        return tokenizer.batch_decode(ids, skip_special_tokens=True)

    def piped(batch: list[str]) -> list[str]:
        results = generator(batch, batch_size=len(batch))
        return [result["generated_text"] for result in results]

    rows = {}
    for size in (int(s) for s in args.batch_sizes.split(",")):
        batches = [sentences[i:i + size] for i in range(0, len(sentences) - size + 1, size)]
        for batch in batches[:4]:
            assert piped(batch) == direct(batch), "the pipeline must say what generate() says"
        state = {"round": 0}

        def case(fn):
            def run():  # the same batch for both cases of a round: the next round moves on
                fn(batches[state["round"] // 2 % len(batches)])
                state["round"] += 1
            return run

        times = time_interleaved({"direct": case(direct), "pipeline": case(piped)}, repeats=args.repeats)
        ratio = paired_ratio(times["pipeline"], times["direct"])
        rows[size] = {"ratio": ratio, "direct_s": summarize(times["direct"]), "pipeline_s": summarize(times["pipeline"])}
        # The same two calls with generate() replaced by its answer: what each adds around the model, free of the
        # model's load-dependent time (a shared machine moves the first ratio by a few percent either way).
        answer = model.generate(**tokenizer(batches[0], return_tensors="pt", padding=True))
        real_generate, model.generate = model.generate, lambda **kwargs: answer
        try:
            stubbed = time_interleaved({"direct": lambda: direct(batches[0]), "pipeline": lambda: piped(batches[0])},
                                       repeats=args.repeats)
        finally:
            model.generate = real_generate
        extra = statistics.median(stubbed["pipeline"]) - statistics.median(stubbed["direct"])
        rows[size]["pipeline_minus_direct_without_generate_s"] = extra
        rows[size]["machinery_ratio"] = 1 + extra / rows[size]["direct_s"]["median"]
        print(f"batch {size:>3}: direct {1000 * rows[size]['direct_s']['median']:8.2f} ms, pipeline "
              f"{1000 * rows[size]['pipeline_s']['median']:8.2f} ms, pipeline / direct = {ratio:.3f} "
              f"({'met' if ratio <= AIM else 'MISSED'}: aim <= {AIM}); around generate() the pipeline adds "
              f"{1000 * extra:+.3f} ms a call ({rows[size]['machinery_ratio']:.4f} x)")

    env = environment()
    note = load_note(env)
    print(note)
    payload = {
        "model": str(args.model), "decoding": "the model's generation config (greedy)", "aim": f"ratio <= {AIM}",
        "results": {str(size): row for size, row in rows.items()}, "environment": env, "load": note,
        "foreign_busy_cores": CONTENTION.foreign_cores,
    }
    markdown = "\n".join(["# pipeline() / tokenize + generate() + decode", "",
                          "| batch | direct ms | pipeline ms | pipeline / direct | added around generate() |",
                          "|---|---|---|---|---|"] +
                         [f"| {size} | {1000 * row['direct_s']['median']:.2f} | {1000 * row['pipeline_s']['median']:.2f} "
                          f"| {row['ratio']:.3f} | {1000 * row['pipeline_minus_direct_without_generate_s']:+.3f} ms |"
                          for size, row in rows.items()] + ["", note])
    path = write_result("pipeline_overhead", f"threads{args.threads}", payload, markdown)
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
