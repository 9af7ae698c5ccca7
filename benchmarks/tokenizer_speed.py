"""How long does ``copynat.train_tokenizer`` take on real text?

Trains an 8k shared vocabulary on 100k lines of Multi30k (English + German, all
splits) with byte-level BPE and with Unigram, then times encoding the same lines.
The data comes from the `datasets` Hub or a local copy (nothing is copied into the repository)::

    python benchmarks/tokenizer_speed.py                     # bentrevett/multi30k from the Hub
    python benchmarks/tokenizer_speed.py --data_dir DIR --lines 100000 --vocab-size 8000

Every ``*.en`` and ``*.de`` file of the folder is read: the Hub's splits give 62,028 lines (train, validation,
test_2016_flickr); a local copy with the 2017 test sets as well has 64,950. To reach ``--lines``
the list is repeated from its start, which is announced on stdout. This is a speed
benchmark: the repeats make the work per line representative, but they skew word
counts toward the repeated part, so don't use the result as a vocabulary. Aim:
under 30 s of training per model on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402
from copynat.tokenization import TOKENIZER_MODELS, train_tokenizer  # noqa: E402

AIM_SECONDS = 30.0


def load_lines(data_dir: Path, n_lines: int) -> tuple[list[str], str]:
    """All ``*.en`` and ``*.de`` lines of ``data_dir`` (sorted by file name), repeated up to ``n_lines``."""
    files = sorted(data_dir.glob("*.en")) + sorted(data_dir.glob("*.de"))
    if not files:
        sys.exit(f"no *.en / *.de files in {data_dir}; pass --data_dir")
    lines: list[str] = []
    for path in files:
        lines.extend(path.read_text(encoding="utf-8").splitlines())
    unique = len(lines)
    note = f"{unique} lines from {len(files)} files in {data_dir}"
    if unique < n_lines:
        lines = (lines * (n_lines // unique + 1))[:n_lines]
        note += f", repeated to {n_lines} (note: {n_lines - unique} are repeats)"
    return lines[:n_lines], note


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_multi30k_flags(parser)
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--models", nargs="+", choices=TOKENIZER_MODELS, default=list(TOKENIZER_MODELS))
    args = parser.parse_args(argv)

    lines, note = load_lines(common.multi30k_dir(args), args.lines)
    print(f"data: {note}; {os.cpu_count()} CPU cores")
    rows = []
    for model in args.models:
        start = time.perf_counter()
        tokenizer = train_tokenizer(lines, vocab_size=args.vocab_size, model=model)
        train_s = time.perf_counter() - start

        start = time.perf_counter()
        ids = tokenizer(lines)["input_ids"]
        encode_s = time.perf_counter() - start
        n_tokens = sum(map(len, ids))

        verdict = "ok" if train_s < AIM_SECONDS else "SLOWER THAN AIM"
        print(
            f"tokenizer {model} {args.vocab_size} vocab on {len(lines)} lines: {train_s:.1f} s "
            f"(aim < {AIM_SECONDS:.0f} s, {verdict}); vocab {len(tokenizer)}; "
            f"encode {encode_s:.1f} s, {n_tokens / len(lines):.1f} tokens/line"
        )
        rows.append({"model": model, "train_seconds": train_s, "encode_seconds": encode_s, "vocab": len(tokenizer),
                     "tokens_per_line": n_tokens / len(lines), "aim_seconds": AIM_SECONDS})
    report = "\n".join([f"# Tokenizer training, {args.vocab_size} vocabulary, {len(lines)} lines ({note})", "",
                         "| model | train | encode | tokens/line |", "|---|---|---|---|"]
                        + [f"| {r['model']} | {r['train_seconds']:.1f} s | {r['encode_seconds']:.1f} s | "
                           f"{r['tokens_per_line']:.1f} |" for r in rows])
    name = f"vocab{args.vocab_size}_lines{args.lines}"
    path = common.write_result("tokenizer_speed", name, {"rows": rows, "data": note, "lines": args.lines,
                                                         "vocab_size": args.vocab_size}, report, argv=argv)
    print(f"results: {path}")


if __name__ == "__main__":
    main()
