"""Copy anything: the echo task's in-distribution and out-of-distribution test splits, per entity category, for the
model `copynat-train` leaves and for the same recipe without each of its copy additions.

Every run is `copynat-train` on the embedded echo task with its defaults (tiny preset, 1,600 updates, same seed,
same tokenizer training); a variant changes one thing:

    default                 the copy head as shipped: location, previous-token keys, respacing
    no-copy                 no copy mechanism at all
    coverage                + coverage (See et al. 2017) and its loss
    continuation            + copy continuation (window 8)
    no-location             - location-aware copy attention
    no-previous-keys        - previous-token keys
    no-respace              - respacing
    untied                  an output projection of its own (not tied to the embedding)
    plain-pointer-generator none of the additions: the copy head before they were added

Reported per split (`test`: unseen entities of the training families; `test_ood`: families training never sees,
real names and places included, scored on those entities; the exact match there also needs the test entities that
fill the template's other slots): exact match, entity copy rate overall and per category, the lowest category,
repetition loops (a unit of 1-6 pieces more than 3 times in a row that the source does not have) and replies with
broken UTF-8, all greedy; the default model also with beam 4 and without whole-word copying.

    python benchmarks/copy_echo.py                        # every variant, ~4 minutes each on 2 cores
    python benchmarks/copy_echo.py --variants default,coverage
    python benchmarks/copy_echo.py --quick                # smoke run (60 updates)

Aims (issue "copy anything"): the default model copies >= 95 % of the entities of each split, every
out-of-distribution category >= 90 %. Writes benchmarks/results/copy_echo/<variants>_<date>_<commit>.json and .md
(the name: the variants run, joined by '+', or --name).
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402
from copynat.data import copy_rates_by_category, exact_match, make_echo_dataset, repeats_beyond_source  # noqa: E402
from copynat.training.cli import parse_train_args  # noqa: E402
from copynat.training.loop import train  # noqa: E402

ADDITIONS_OFF = ["--copy_location", "false", "--copy_previous_token_keys", "false", "--copy_respace", "false"]
VARIANTS = {
    "default": [],
    "no-copy": ["--use_copy_mechanism", "false"],
    "coverage": ["--copy_coverage", "true"],
    "continuation": ["--copy_continuation_window", "8"],
    "no-location": ["--copy_location", "false"],
    "no-previous-keys": ["--copy_previous_token_keys", "false"],
    "no-respace": ["--copy_respace", "false"],
    "untied": ["--tie_word_embeddings", "false"],
    "plain-pointer-generator": ADDITIONS_OFF,
}
SPLITS = ("test", "test_ood")


@torch.no_grad()
def decode(model_dir: Path, rows, **settings) -> tuple[list[str], list[list[int]]]:
    """Replies (text and ids after the start token, cut at </s>) of the model in `model_dir` to `rows["source"]`."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    texts, ids = [], []
    sources = list(rows["source"])
    for start in range(0, len(sources), 200):
        batch = tokenizer(sources[start:start + 200], return_tensors="pt", padding=True)
        for output in model.generate(**batch, max_new_tokens=128, **settings).tolist():
            output = output[1:]
            output = output[:output.index(tokenizer.eos_token_id)] if tokenizer.eos_token_id in output else output
            ids.append([i for i in output if i != tokenizer.pad_token_id])
            texts.append(tokenizer.decode(ids[-1], skip_special_tokens=True).strip())
    source_ids = [tokenizer(s, add_special_tokens=False)["input_ids"] for s in sources]
    return texts, [ids, source_ids]


def score(rows, texts: list[str], ids: list[list[list[int]]]) -> dict:
    rates = copy_rates_by_category(texts, rows["entities"], rows["categories"], rows["target"])
    overall = rates.pop("all")
    outputs, sources = ids
    return {
        "exact_match": round(100 * exact_match(texts, rows["target"]), 2),
        "entity_copy_rate": round(100 * overall, 2),
        "by_category": {k: round(100 * v, 1) for k, v in rates.items()},
        "lowest_category": min(rates.items(), key=lambda item: item[1])[0],
        "repetition_loops": sum(repeats_beyond_source(o, s) for o, s in zip(outputs, sources)),
        "broken_utf8": sum("\ufffd" in t for t in texts),
        "examples": [(s, t) for s, t, r in zip(rows["source"], texts, rows["target"]) if t != r][:8],
    }


def run_variant(name: str, flags: list[str], workdir: Path, steps: int | None, data) -> dict:
    output_dir = workdir / name
    argv = ["--output_dir", str(output_dir), "--progress_bar", "false", "--plot", "false", "--report_to", "none",
            *flags]
    if steps is not None:
        argv += ["--max_steps", str(steps)]
    started = time.time()
    results = train(*parse_train_args(argv))
    row = {"variant": name, "flags": flags, "steps": results["training"]["steps"],
           "train_seconds": results["training"]["train_seconds"], "wall_seconds": round(time.time() - started, 1),
           "num_parameters": results["model"]["num_parameters"]}
    for split in SPLITS:
        row[split] = score(data[split], *decode(output_dir, data[split]))
    if name == "default":
        row["beam4"] = {split: score(data[split], *decode(output_dir, data[split], num_beams=4)) for split in SPLITS}
        row["greedy_without_word_completion"] = {
            split: score(data[split], *decode(output_dir, data[split], complete_copied_words=False)) for split in SPLITS}
    return row


def lowest(scores: dict) -> str:
    category = scores["lowest_category"]
    return f"{scores['by_category'][category]:.1f} % ({category})"


def report(rows: list[dict], quick: bool) -> str:
    lines = ["# Copy anything: the echo task's test splits, greedy" + (" — quick smoke run" if quick else ""), "",
             "| variant | updates | train s | test exact | test copy | test lowest category | OOD exact | OOD copy | "
             "OOD lowest category | OOD loops | OOD broken UTF-8 |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        test, ood = r["test"], r["test_ood"]
        lines.append(f"| {r['variant']} | {r['steps']} | {r['train_seconds']:.0f} | {test['exact_match']:.1f} % | "
                     f"**{test['entity_copy_rate']:.1f} %** | {lowest(test)} | {ood['exact_match']:.1f} % | "
                     f"**{ood['entity_copy_rate']:.1f} %** | {lowest(ood)} | {ood['repetition_loops']} | "
                     f"{ood['broken_utf8']} |")
    default = next((r for r in rows if r["variant"] == "default"), None)
    if default is not None:
        beam = default["beam4"]
        lines += ["", f"default model, beam 4: test copy {beam['test']['entity_copy_rate']:.1f} %, OOD copy "
                      f"{beam['test_ood']['entity_copy_rate']:.1f} % (lowest {lowest(beam['test_ood'])}), "
                      f"{beam['test_ood']['repetition_loops']} loops, {beam['test_ood']['broken_utf8']} broken UTF-8."]
        aims = {"test copy >= 95 %": default["test"]["entity_copy_rate"] >= 95.0,
                "OOD copy >= 95 %": default["test_ood"]["entity_copy_rate"] >= 95.0,
                "every OOD category >= 90 %": min(default["test_ood"]["by_category"].values()) >= 90.0}
        free = default["greedy_without_word_completion"]
        lines.append(f"default model, greedy without whole-word copying (complete_copied_words=False): test copy "
                     f"{free['test']['entity_copy_rate']:.1f} %, OOD copy {free['test_ood']['entity_copy_rate']:.1f} % "
                     f"(lowest {lowest(free['test_ood'])}), {free['test_ood']['repetition_loops']} loops.")
        lines.append("aims: " + ", ".join(f"{aim} {'met' if ok else 'MISSED'}" for aim, ok in aims.items()))
    for split, title in (("test", "in-distribution test split"), ("test_ood", "out-of-distribution split")):
        names = [r["variant"] for r in rows]
        lines += ["", f"## Entity copy rate per category, {title} (greedy, %)", "",
                  "| category | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for category in sorted(rows[0][split]["by_category"]):
            lines.append(f"| {category} | " + " | ".join(f"{r[split]['by_category'].get(category, float('nan')):.1f}"
                                                          for r in rows) + " |")
    for r in rows:
        if r["test_ood"]["examples"]:
            lines += ["", f"{r['variant']}, first out-of-distribution replies that differ from the reference:"]
            lines += [f"- {source} -> {reply}" for source, reply in r["test_ood"]["examples"][:4]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, from: " + ", ".join(VARIANTS))
    parser.add_argument("--steps", type=int, default=None, help="updates per run (default: copynat-train's)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 60 updates, small test splits")
    parser.add_argument("--name", default=None,
                        help="name of the result files (default: the variants joined by '+'; quick runs: quick)")
    args = parser.parse_args()
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    data = make_echo_dataset(num_test=100 if args.quick else 1000, num_test_ood=100 if args.quick else 1500)
    steps = 60 if args.quick else args.steps
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run_variant(name, VARIANTS[name], Path(tmp), steps, data) for name in names]
    text = report(rows, args.quick)
    print(text)
    name = args.name or ("quick" if args.quick else "+".join(names))
    print(f"results: {common.write_result('copy_echo', name, {'runs': rows, 'steps': steps}, text)}")


if __name__ == "__main__":
    main()
