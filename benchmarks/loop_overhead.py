"""copynat-train's updates/s against a bare PyTorch loop: same model, same batches, same process count.

The bare loop is what a training loop cannot do without: for each token-budget batch of copynat-train's own sampler
and collator, forward (loss only), backward, gradient clipping, AdamW (the same fused kernel and parameter groups),
the learning-rate schedule, zero_grad. copynat-train adds its logging, progress, time budget, stop signals and the
bookkeeping of evaluation and checkpoints (their own time is not counted: train_seconds excludes it). Both run the
same number of updates from a freshly initialised model with the same seed, alternately, several times; the ratio
of median updates/s is the overhead. The copy head's share of the step is measured in the same run: the bare loop
with and without the copy head, the two models stepping in turn on the same batches, each step timed.

On a CPU with the tiny preset, per-op cost dominates the way launch cost does on a GPU, so loop overhead shows up
here as it would there.

    python benchmarks/loop_overhead.py              # tiny preset, 300 updates per run, 3 runs each (~5 min on 2 cores)
    python benchmarks/loop_overhead.py --quick      # smoke run

Aims: copynat-train >= 0.95x the bare loop, with the copy head on and off; the copy head <= 8 % of the step.
Writes benchmarks/results/loop_overhead/standard_<date>_<commit>.json (top-level "ratio" and "ratio_no_copy") and
.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402

from copynat.training.cli import parse_train_args  # noqa: E402
from copynat.training.data import (DataArguments, Seq2SeqCollator, TokenBudgetBatchSampler,  # noqa: E402
                                   example_lengths, load_raw_datasets, tokenize_datasets)
from copynat.training.loop import train  # noqa: E402
from copynat.training.run_setup import build_model, build_optimizer  # noqa: E402
from copynat.training.schedules import build_scheduler  # noqa: E402

NAME = "loop_overhead"


def copynat_train(workdir: Path, steps: int, copy: bool, threads: int) -> float:
    """Updates per second of `copynat-train` (its train_seconds: evaluation and checkpoints excluded)."""
    argv = ["--output_dir", str(workdir / f"run-{time.monotonic_ns()}"), "--max_steps", str(steps),
            "--eval_steps", str(steps), "--num_eval_samples", "20", "--max_eval_samples", "20", "--progress_bar",
            "false", "--report_to", "none", "--plot", "false", "--num_threads", str(threads),
            "--use_copy_mechanism", str(copy).lower()]
    results = train(*parse_train_args(argv))
    return results["training"]["steps"] / results["training"]["train_seconds"]


class BareLoop:
    """The loop no training can do without, on copynat-train's batches, model and optimizer: forward (loss only),
    backward, gradient clipping, AdamW (the same fused kernel and parameter groups), the schedule, zero_grad."""

    def __init__(self, tokenizer_dir: Path, tokenized, steps: int, copy: bool, threads: int):
        from transformers import AutoTokenizer

        from copynat.training.arguments import resolve_defaults

        model_args, data_args, self.train_args = parse_train_args(
            ["--use_copy_mechanism", str(copy).lower(), "--max_steps", str(steps)])
        resolve_defaults(model_args, self.train_args, echo=True)
        torch.set_num_threads(threads)
        torch.manual_seed(self.train_args.seed)
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        self.model = build_model(model_args, data_args, tokenizer, None, echo=True).train()
        self.optimizer = build_optimizer(self.model, self.train_args)
        self.scheduler = build_scheduler(self.optimizer, self.train_args.lr_scheduler, self.train_args.warmup_steps,
                                         steps)
        data = tokenized["train"]
        self.sampler = TokenBudgetBatchSampler(example_lengths(data), self.train_args.max_tokens, shuffle=True,
                                               seed=self.train_args.seed)
        self.loader = torch.utils.data.DataLoader(data.select_columns(["input_ids", "labels"]),
                                                  batch_sampler=self.sampler, collate_fn=Seq2SeqCollator(tokenizer))

    def batches(self):
        """copynat-train's batches, epoch after epoch."""
        epoch = 0
        while True:
            self.sampler.set_epoch(epoch)
            yield from self.loader
            epoch += 1

    def step(self, batch: dict) -> None:
        loss = self.model(**batch, return_logits=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.train_args.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)


def bare_loop(tokenizer_dir: Path, tokenized, steps: int, copy: bool, threads: int) -> float:
    """Updates per second of the bare loop, batch preparation included (as in copynat-train)."""
    loop = BareLoop(tokenizer_dir, tokenized, steps, copy, threads)
    start = time.perf_counter()
    for _, batch in zip(range(steps), loop.batches()):
        loop.step(batch)
    return steps / (time.perf_counter() - start)


def copy_head_step_times(tokenizer_dir: Path, tokenized, steps: int, threads: int) -> dict[bool, float]:
    """Seconds of the bare step with the copy head on and off, {copy: seconds}, summed over `steps` updates.

    The two models step in turn on the same batches (the one that goes first alternates), each step timed on its
    own: a slower stretch of the machine hits both, which separate runs cannot promise."""
    loops = {copy: BareLoop(tokenizer_dir, tokenized, steps, copy, threads) for copy in (True, False)}
    seconds = {True: 0.0, False: 0.0}
    for index, batch in zip(range(steps), loops[True].batches()):
        for copy in ((True, False) if index % 2 == 0 else (False, True)):
            start = time.perf_counter()
            loops[copy].step(batch)
            seconds[copy] += time.perf_counter() - start
    return seconds


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3, help="alternating runs per loop and copy setting")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    steps, runs = (30, 1) if args.quick else (args.steps, args.runs)
    common.setup(seed=0, threads=args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        copynat_train(workdir / "tokenizer", 2, True, args.threads)  # leaves copynat-train's echo tokenizer
        from transformers import AutoTokenizer

        tokenizer_dir = next((workdir / "tokenizer").iterdir())
        tokenized = tokenize_datasets(load_raw_datasets(DataArguments()),
                                      AutoTokenizer.from_pretrained(tokenizer_dir), DataArguments())
        rates: dict[str, list[float]] = {}
        for run in range(runs):
            for copy in (True, False):
                order = ("copynat", "bare") if run % 2 == 0 else ("bare", "copynat")
                for loop in order:
                    rate = (copynat_train(workdir, steps, copy, args.threads) if loop == "copynat"
                            else bare_loop(tokenizer_dir, tokenized, steps, copy, args.threads))
                    rates.setdefault(f"{loop} copy={copy}", []).append(rate)
                    print(f"run {run}: {loop:7} copy {'on ' if copy else 'off'} {rate:.2f} updates/s", flush=True)
        paired = []  # three blocks: the share varies by a point or two from one block to the next
        for block in range(1 if args.quick else 3):
            seconds = copy_head_step_times(tokenizer_dir, tokenized, steps, args.threads)
            paired.append(seconds)
            print(f"paired bare steps, block {block}: copy on {seconds[True]:.2f} s, off {seconds[False]:.2f} s "
                  f"({100 * (1 - seconds[False] / seconds[True]):.1f} %)", flush=True)
    median = {key: statistics.median(values) for key, values in rates.items()}
    ratio = median["copynat copy=True"] / median["bare copy=True"]
    ratio_no_copy = median["copynat copy=False"] / median["bare copy=False"]
    block_shares = [1.0 - seconds[False] / seconds[True] for seconds in paired]
    copy_share = statistics.median(block_shares)
    step_seconds = {copy: sum(seconds[copy] for seconds in paired) for copy in (True, False)}
    copy_share_separate_runs = 1.0 - median["bare copy=True"] / median["bare copy=False"]
    aims = {"ratio >= 0.95": ratio >= 0.95, "ratio_no_copy >= 0.95": ratio_no_copy >= 0.95,
            "copy head <= 8 % of the step": copy_share <= 0.08}
    rows = [[key.split()[0], key.split()[1].replace("copy=", "copy "), f"{median[key]:.2f}",
             ", ".join(f"{v:.2f}" for v in rates[key])] for key in rates]
    markdown = (f"# copynat-train vs a bare PyTorch loop (tiny preset, echo task, {steps} updates a run, {runs} "
                f"alternating runs, {args.threads} threads{', quick smoke run' if args.quick else ''})\n\n"
                + common.markdown_table(["loop", "copy head", "median updates/s", "runs"], rows)
                + f"\n\ncopynat-train / bare loop: **{ratio:.3f}x** with the copy head, **{ratio_no_copy:.3f}x** "
                  f"without.\n\nThe copy head takes **{100 * copy_share:.1f} %** of the bare loop's step (median "
                  f"of {len(paired)} blocks of {steps} updates of the two models in turn on the same batches: "
                  + ", ".join(f"{100 * share:.1f} %" for share in block_shares)
                  + f"; {step_seconds[True]:.2f} s with it and {step_seconds[False]:.2f} s without in all; "
                  f"{100 * copy_share_separate_runs:.1f} % from the medians of the separate runs above, which the "
                  "machine's drift between runs blurs).\n\naims: "
                + ", ".join(f"{aim} {'met' if ok else 'MISSED'}" for aim, ok in aims.items()) + "\n")
    print(markdown)
    payload = {"benchmark": NAME, "ratio": ratio, "ratio_no_copy": ratio_no_copy, "copy_head_share": copy_share,
               "copy_head_share_separate_runs": copy_share_separate_runs,
               "copy_head_share_blocks": block_shares,
               "paired_step_seconds": {"copy on": step_seconds[True], "copy off": step_seconds[False]},
               "updates_per_second": rates, "steps": steps, "runs": runs, "threads": args.threads,
               "aims": aims, "environment": common.environment()}
    if not args.quick:
        print(f"results: {common.write_result(NAME, 'standard', payload, markdown)}")
    else:
        print(json.dumps({k: payload[k] for k in ("ratio", "ratio_no_copy", "copy_head_share")}))
    return payload


if __name__ == "__main__":
    main()
