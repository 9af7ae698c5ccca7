"""Copy mechanism on the echo task: the same model and budget with and without copying, scored on unseen entities.

The echo task's test split holds names, places and numbers that never occur in training, so a model can only
produce them by copying from the source. Both runs use `copynat-train`'s defaults (tiny preset, same steps, same
seed, same tokenizer training), differing only in `use_copy_mechanism`.

    python benchmarks/copy_echo.py            # full run: the default step budget per model
    python benchmarks/copy_echo.py --quick    # a smoke run (few steps)

Aim: copy model >= 95% exact match on the unseen-entity test split and >= 30 points above the no-copy model,
each trained within 10 minutes of CPU. Writes benchmarks/results/copy_echo.json and .md.

`--variant whole-word-entities` keeps the data and changes the tokenizer (`copynat.data.make_entity_tokenizer`):
every entity word is one token, so a test entity is a token that occurs in no training text, the word-level regime
of the pointer-generator papers. Both models get that same tokenizer. With tied embeddings (the default) a plain
decoder can still emit an unseen token by reproducing the source state it attends to (the token's output row is its
input embedding); `--tie_word_embeddings false` gives both models an output projection of their own, which closes
that path. Writes copy_echo_whole_word_entities[_untied].json and .md.

    python benchmarks/copy_echo.py --variant whole-word-entities --steps 800
    python benchmarks/copy_echo.py --variant whole-word-entities --steps 800 --tie_word_embeddings false
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

from copynat.data import make_echo_dataset, make_entity_tokenizer
from copynat.training.cli import parse_train_args
from copynat.training.loop import train

RESULTS = Path(__file__).parent / "results"


def run(use_copy: bool, steps: int | None, workdir: Path, tokenizer: Path | None, tied: bool) -> dict:
    argv = ["--output_dir", str(workdir / ("copy" if use_copy else "no-copy")), "--use_copy_mechanism",
            str(use_copy).lower(), "--progress_bar", "false", "--plot", "false", "--report_to", "none"]
    if steps is not None:
        argv += ["--max_steps", str(steps)]
    if tokenizer is not None:
        argv += ["--tokenizer_name_or_path", str(tokenizer)]
    if not tied:
        argv += ["--tie_word_embeddings", "false"]
    started = time.time()
    results = train(*parse_train_args(argv))
    test = results["metrics"]["test"]
    decoding = next(name for name in results["eval_decoding"])
    return {
        "use_copy_mechanism": use_copy,
        "vocab_size": results["model"]["vocab_size"],
        "tie_word_embeddings": tied,
        "steps": results["training"]["steps"],
        "train_seconds": results["training"]["train_seconds"],
        "wall_seconds": round(time.time() - started, 1),
        "decoding": decoding,
        "test_exact_match": test[decoding]["exact_match"],
        "test_bleu": test[decoding]["bleu"],
        "test_entity_copy_rate": test[decoding].get("entity_copy_rate"),
        "num_parameters": results["model"]["num_parameters"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few steps only (smoke run)")
    parser.add_argument("--steps", type=int, default=None, help="updates per model (default: copynat-train's)")
    parser.add_argument("--variant", choices=["shipped", "whole-word-entities"], default="shipped",
                        help="shipped: copynat-train's own byte-level BPE; whole-word-entities: one token per entity")
    parser.add_argument("--tie_word_embeddings", choices=["true", "false"], default="true",
                        help="false: both models get an output projection of their own (See et al.'s setup)")
    args = parser.parse_args()
    tied = args.tie_word_embeddings == "true"
    steps = 60 if args.quick else args.steps
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = None
        if args.variant == "whole-word-entities":
            tokenizer = Path(tmp) / "entity-tokenizer"
            make_entity_tokenizer(make_echo_dataset()).save_pretrained(tokenizer)
        rows = [run(use_copy, steps, Path(tmp), tokenizer, tied) for use_copy in (True, False)]
    copy, plain = rows
    gap = copy["test_exact_match"] - plain["test_exact_match"]
    within_budget = all(row["train_seconds"] <= 600 for row in rows)
    verdict = {
        "copy_exact_match_ge_95": copy["test_exact_match"] >= 95.0,
        "gap_ge_30_points": gap >= 30.0,
        "each_trained_within_10_minutes": within_budget,
    }
    lines = [
        "# Copy mechanism on the echo task (unseen-entity test split)" + (" — quick smoke run" if args.quick else "")
        + ("" if args.variant == "shipped" else f", variant {args.variant} (one token per entity)")
        + ("" if tied else ", untied output projection"),
        "",
        "| model | steps | train time | test exact match | test BLEU | entity copy rate | parameters |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        name = "copy (pointer-generator)" if row["use_copy_mechanism"] else "no copy"
        rate = row["test_entity_copy_rate"]
        lines.append(f"| {name} | {row['steps']} | {row['train_seconds']:.0f} s | {row['test_exact_match']:.1f} % | "
                     f"{row['test_bleu']:.1f} | {'-' if rate is None else f'{rate:.1f} %'} | {row['num_parameters']:,} |")
    lines += ["", f"exact-match gap: {gap:+.1f} points; aims: " +
              ", ".join(f"{name} {'met' if ok else 'MISSED'}" for name, ok in verdict.items())]
    report = "\n".join(lines)
    print(report)
    RESULTS.mkdir(exist_ok=True)
    stem = "copy_echo" + ("" if args.variant == "shipped" else "_" + args.variant.replace("-", "_"))
    stem += ("" if tied else "_untied") + ("_quick" if args.quick else "")
    (RESULTS / f"{stem}.json").write_text(json.dumps({"runs": rows, "gap": gap, "aims": verdict}, indent=2))
    (RESULTS / f"{stem}.md").write_text(report + "\n")


if __name__ == "__main__":
    main()
