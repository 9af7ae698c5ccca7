"""RL on the metric vs more cross-entropy: the same fine-tuning budget from the same model, two objectives.

Self-critical REINFORCE (`copynat-train --objective rl`: sentence-BLEU reward, greedy baseline, mixed with
cross-entropy) is only worth its cost if it beats spending the same updates on plain teacher-forced cross-entropy.
This benchmark fine-tunes one trained echo model twice, with identical settings except `--objective`, and scores
both (and the starting model) on the validation and unseen-entity test splits with greedy decoding.

    python benchmarks/rl_finetune.py                       # trains the base model first (copynat-train defaults)
    python benchmarks/rl_finetune.py --base copynat-output # start from a model trained by the main command
    python benchmarks/rl_finetune.py --quick               # smoke run (a few updates)

Writes benchmarks/results/rl_finetune/<name>_<date>_<commit>.json and .md (name: steps and objective weights).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402
from copynat.training.cli import parse_train_args  # noqa: E402
from copynat.training.loop import train  # noqa: E402

QUIET = ["--progress_bar", "false", "--plot", "false", "--report_to", "none"]


def scores(results: dict) -> dict:
    """Greedy validation/test scores of a finished run (the final, best-by-validation-BLEU model)."""
    metrics = results["metrics"]
    validation = metrics["validation"]["greedy"]
    test = metrics["test"]["greedy"]
    return {"validation_bleu": validation["bleu"], "validation_exact_match": validation["exact_match"],
            "test_bleu": test["bleu"], "test_exact_match": test["exact_match"],
            "test_entity_copy_rate": test.get("entity_copy_rate"), "train_seconds": results["training"]["train_seconds"],
            "steps": results["training"]["steps"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, default=None, help="a trained echo model (default: train one here)")
    parser.add_argument("--steps", type=int, default=150, help="fine-tuning updates per objective")
    parser.add_argument("--learning_rate", type=float, default=1e-4)
    parser.add_argument("--rl_weight", type=float, default=0.9)
    parser.add_argument("--quick", action="store_true", help="smoke run: a small base model and a few updates")
    args = parser.parse_args()
    steps = 6 if args.quick else args.steps
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = args.base
        if base is None:
            base = Path(tmp) / "base"
            argv = ["--output_dir", str(base)] + (["--max_steps", "40"] if args.quick else []) + QUIET
            rows["base (copynat-train defaults)"] = scores(train(*parse_train_args(argv)))
        for objective in ("mle", "rl"):
            argv = ["--model_name_or_path", str(base), "--output_dir", str(Path(tmp) / objective), "--objective",
                    objective, "--max_steps", str(steps), "--eval_steps", str(max(1, steps // 3)), "--learning_rate",
                    str(args.learning_rate), "--warmup_steps", "10", "--rl_weight", str(args.rl_weight),
                    "--num_eval_samples", "0"] + QUIET
            rows[f"+{steps} updates, --objective {objective}"] = scores(train(*parse_train_args(argv)))
    lines = [f"# RL on the metric vs cross-entropy, {steps} fine-tuning updates each from the same model "
             "(echo task, greedy decoding)" + (" — quick smoke run" if args.quick else ""), "",
             "| model | validation BLEU | validation exact match | test BLEU | test exact match | entity copy | "
             "train s |", "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        copy = "-" if r["test_entity_copy_rate"] is None else f"{r['test_entity_copy_rate']:.1f} %"
        lines.append(f"| {name} | {r['validation_bleu']:.2f} | {r['validation_exact_match']:.1f} % | {r['test_bleu']:.2f} "
                     f"| {r['test_exact_match']:.1f} % | {copy} | {r['train_seconds']:.0f} |")
    lines += ["", f"Both fine-tunings: learning rate {args.learning_rate}, 10 warm-up steps, best checkpoint by "
              f"validation BLEU; RL: sentence-BLEU reward, greedy baseline, loss = {1 - args.rl_weight:.1f} x CE + "
              f"{args.rl_weight} x RL."]
    report = "\n".join(lines)
    print(report)
    name = ("quick" if args.quick else f"steps{steps}_lr{args.learning_rate:g}_rl{args.rl_weight:g}"
            + ("_given_base" if args.base else ""))
    path = common.write_result("rl_finetune", name, {"rows": rows, "steps": steps, "learning_rate": args.learning_rate,
                                                     "rl_weight": args.rl_weight,
                                                     "base": str(args.base) if args.base else None}, report)
    print(f"results: {path}")


if __name__ == "__main__":
    main()
