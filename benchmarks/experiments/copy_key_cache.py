"""What keeping the copy attention's keys in generate()'s cache saves; an experiment (A/B in one process).

The copy head's keys over the source, k_j = Wk e_j + Wp e_{j-1}, depend on the source alone. generate() computes
them at the first step and keeps them in its `CopyNatCache` (`copy_keys`), as transformers keeps the
cross-attention's keys and values. Variant B computes them again at every step (what copynat did before), by
making `CopyGenerator.source_keys` return None so the cache never holds them. Same model (speed.py's copy model:
d_model 256, 3+3 layers, vocab 8000, untrained), same inputs, exactly 32 new tokens, the two variants called in
turn; the tokens of both are asserted equal.

    python benchmarks/experiments/copy_key_cache.py     # about 2 minutes on 2 cores

Writes benchmarks/results/copy_key_cache.json and .md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _common as common  # noqa: E402
import speed  # noqa: E402

from copynat import CopyNatConfig, CopyNatForConditionalGeneration  # noqa: E402

NAME = "copy_key_cache"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=12, help="interleaved calls of each variant per case")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    common.setup(seed=0, threads=args.threads)
    model = CopyNatForConditionalGeneration(CopyNatConfig(**common.MODEL_SIZE)).eval()
    copier = model.copy_generator
    cached_keys = copier.source_keys
    variants = {"keys once a call": cached_keys, "keys every step": lambda encoder_states: None}
    rows, payload = [], {"benchmark": NAME, "cases": {}}
    for label, batch, beams in speed.GENERATE_CASES:
        source = common.random_ids(batch, speed.SOURCE_LEN)
        settings = dict(max_new_tokens=speed.NEW_TOKENS, min_new_tokens=speed.NEW_TOKENS, num_beams=beams,
                        do_sample=False)
        seconds: dict[str, list[float]] = {name: [] for name in variants}
        tokens = {}
        for round_index in range(args.rounds + 1):  # round 0 warms up
            for name, source_keys in variants.items():
                copier.source_keys = source_keys
                start = time.perf_counter()
                tokens[name] = model.generate(source, **settings)
                if round_index:
                    seconds[name].append(time.perf_counter() - start)
        copier.source_keys = cached_keys
        assert torch.equal(*tokens.values()), f"{label}, batch {batch}: the variants decoded different tokens"
        median = {name: 1000 * statistics.median(values) for name, values in seconds.items()}
        saved = 1.0 - median["keys once a call"] / median["keys every step"]
        rows.append([label, batch, f"{median['keys every step']:.1f} ms", f"{median['keys once a call']:.1f} ms",
                     f"{100 * saved:.1f} %"])
        payload["cases"][f"{label}, batch {batch}"] = {"median_ms": median, "saved": saved}
        print(rows[-1], flush=True)
    markdown = (f"# The copy head's keys kept in generate()'s cache ({args.rounds} interleaved rounds, "
                f"{args.threads} threads, speed.py's copy model, {speed.NEW_TOKENS} new tokens)\n\n"
                + common.markdown_table(["decoding", "batch", "keys every step", "keys once a call", "saved"], rows)
                + "\n\nSame tokens in every case (asserted).\n")
    print(markdown)
    payload.update(rounds=args.rounds, threads=args.threads, environment=common.environment())
    common.write_results(NAME, payload, markdown)
    return payload


if __name__ == "__main__":
    main()
