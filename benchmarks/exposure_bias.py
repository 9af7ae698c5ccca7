"""Exposure bias on the echo task, with and without scheduled sampling (Bengio et al. 2015).

A teacher-forced model always sees the gold prefix in training; at test time it reads its own outputs, and one
early mistake can derail the rest. The gap between its token accuracy with the gold prefix (teacher forced) and
with its own prefix (free running, greedy) measures that exposure bias. Scheduled sampling feeds the model its own
predictions during training, with a probability that grows along a schedule, to shrink the gap.

    python benchmarks/exposure_bias.py                 # 2 runs of --steps updates each (default 800, ~3 min each)
    python benchmarks/exposure_bias.py --schedule inverse_sigmoid

Both runs: `copynat-train` defaults on the embedded echo task (tiny preset, seed 0), differing only in
--scheduled_sampling. Token accuracy on the unseen-entity test split: position by position against the reference,
over the reference's tokens. Writes benchmarks/results/exposure_bias/<name>_<date>_<commit>.json and .md, the name
from the settings (`steps400_linear_p0.75_seed0`) unless --name gives one.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402
from copynat.training.cli import parse_train_args  # noqa: E402
from copynat.training.loop import train  # noqa: E402



def in_order_matches(generated: list[int], reference: list[int]) -> int:
    """Reference tokens the output reproduces in order (longest common subsequence): one dropped or extra token
    costs one match, not every position after it."""
    previous = [0] * (len(reference) + 1)
    for token in generated:
        current = [0]
        for j, ref in enumerate(reference):
            current.append(previous[j] + 1 if token == ref else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def token_accuracies(folder: Path, sources: list[str], targets: list[str],
                     batch_size: int = 200) -> tuple[float, float, float]:
    """(teacher-forced, free-running positional, free-running in-order) token accuracy in %, same sentences."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    import copynat  # noqa: F401  (Auto registration)

    model = AutoModelForSeq2SeqLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    forced = free = in_order = total = 0
    for i in range(0, len(sources), batch_size):
        batch = tokenizer(sources[i:i + batch_size], text_target=targets[i:i + batch_size], padding=True,
                          return_tensors="pt")
        labels = batch.pop("labels")
        labels = labels.masked_fill(labels == tokenizer.pad_token_id, -100)
        valid = labels != -100
        with torch.no_grad():
            teacher_forced = model(**batch, labels=labels).logits.argmax(-1)
            generated = model.generate(**batch, max_new_tokens=labels.shape[1] + 5, num_beams=1, do_sample=False)
        generated = generated[:, 1:]  # drop the decoder start token
        width = labels.shape[1]
        if generated.shape[1] < width:
            generated = torch.nn.functional.pad(generated, (0, width - generated.shape[1]), value=tokenizer.pad_token_id)
        forced += int((teacher_forced == labels)[valid].sum())
        free += int((generated[:, :width] == labels)[valid].sum())
        for row, reference, keep in zip(generated.tolist(), labels.tolist(), valid.tolist()):
            reference = [token for token, k in zip(reference, keep) if k]
            output = [token for token in row if token != tokenizer.pad_token_id]
            in_order += in_order_matches(output, reference)
        total += int(valid.sum())
    return 100.0 * forced / total, 100.0 * free / total, 100.0 * in_order / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--seed", type=int, default=0, help="training seed of both runs (the data stays the same)")
    parser.add_argument("--schedule", default="linear", choices=["linear", "exponential", "inverse_sigmoid"])
    parser.add_argument("--min_prob", type=float, default=0.5, help="lowest teacher-forcing probability")
    parser.add_argument("--name", default=None, help="name of the result files (default: from the settings)")
    args = parser.parse_args()
    from copynat.data import make_echo_dataset

    test = make_echo_dataset()["test"]
    sources, targets = list(test["source"]), list(test["target"])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for schedule in ("none", args.schedule):
            out = Path(tmp) / schedule
            argv = ["--output_dir", str(out), "--max_steps", str(args.steps), "--scheduled_sampling", schedule,
                    "--scheduled_sampling_min_prob", str(args.min_prob), "--seed", str(args.seed),
                    "--progress_bar", "false", "--plot", "false", "--report_to", "none"]
            results = train(*parse_train_args(argv))
            forced, free, in_order = token_accuracies(out, sources, targets)
            greedy = results["metrics"]["test"]["greedy"]
            rows.append({"scheduled_sampling": schedule, "steps": results["training"]["steps"],
                         "train_seconds": results["training"]["train_seconds"], "teacher_forced_accuracy": forced,
                         "free_running_accuracy": free, "exposure_gap": forced - free,
                         "free_running_in_order_accuracy": in_order, "in_order_gap": forced - in_order,
                         "test_exact_match": greedy["exact_match"], "test_bleu": greedy["bleu"]})
    lines = [f"# Exposure bias on the echo task (unseen-entity test split, {len(sources)} sentences), "
             f"{args.steps} updates per run, seed {args.seed}", "",
             "| scheduled sampling | token acc. teacher forced | free running (greedy), positional | gap | "
             "free running, in order | gap | exact match | BLEU | train s |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['scheduled_sampling']} | {r['teacher_forced_accuracy']:.2f} | {r['free_running_accuracy']:.2f} | "
              f"{r['exposure_gap']:.2f} | {r['free_running_in_order_accuracy']:.2f} | {r['in_order_gap']:.2f} | "
              f"{r['test_exact_match']:.1f} | {r['test_bleu']:.2f} | {r['train_seconds']:.0f} |" for r in rows]
    lines += ["", f"Schedule {args.schedule}, teacher-forcing probability from 1 down to {args.min_prob} "
              "(copynat-train's default decay: reaches the floor around the middle of training). Positional: token t "
              "of the output against token t of the reference (one dropped token misaligns the rest); in order: "
              "reference tokens the output reproduces in order (longest common subsequence)."]
    report = "\n".join(lines)
    print(report)
    name = args.name or f"steps{args.steps}_{args.schedule}_p{args.min_prob:g}_seed{args.seed}"
    path = common.write_result("exposure_bias", name, {"rows": rows, "schedule": args.schedule,
                                                       "min_prob": args.min_prob, "steps": args.steps,
                                                       "seed": args.seed}, report)
    print(f"results: {path}")


if __name__ == "__main__":
    main()
