"""How long does ``copynat.train_tokenizer`` take on real text?

Trains an 8k shared vocabulary on 100k lines of Multi30k (English + German, all
splits) with byte-level BPE and with Unigram, then times encoding the same lines.
The data is read in place (nothing is copied into the repository)::

    python benchmarks/tokenizer_speed.py                     # ../shared/data/multi30k
    python benchmarks/tokenizer_speed.py --data-dir DIR --lines 100000 --vocab-size 8000

Multi30k has 64,950 lines over all splits of both languages. To reach ``--lines``
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

from copynat.tokenization import TOKENIZER_MODELS, train_tokenizer

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "multi30k"
AIM_SECONDS = 30.0


def load_lines(data_dir: Path, n_lines: int) -> tuple[list[str], str]:
    """All ``*.en`` and ``*.de`` lines of ``data_dir`` (sorted by file name), repeated up to ``n_lines``."""
    files = sorted(data_dir.glob("*.en")) + sorted(data_dir.glob("*.de"))
    if not files:
        sys.exit(f"no *.en / *.de files in {data_dir}; pass --data-dir")
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
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--models", nargs="+", choices=TOKENIZER_MODELS, default=list(TOKENIZER_MODELS))
    args = parser.parse_args(argv)

    lines, note = load_lines(args.data_dir, args.lines)
    print(f"data: {note}; {os.cpu_count()} CPU cores")
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


if __name__ == "__main__":
    main()
