"""copynat vs Bart of the same size: training throughput and generate() latency (issues 2 and 4).

Three models are built in one run and timed interleaved (see `_common.py`), so every ratio compares numbers taken
under the same machine load:

- copynat, `use_copy_mechanism=False`: the plain Transformer, apples to apples with Bart;
- copynat+copy, `use_copy_mechanism=True` (the default): adds the pointer-generator head;
- `transformers.BartForConditionalGeneration` with d_model 256, 3+3 layers, 4 heads, FFN 1024, vocab 8000,
  dropout 0.1, 512 learned positions and **activation_function="relu"** (Bart's default is gelu; copynat's is relu,
  so both use relu). Bart's `forced_eos_token_id` is switched off: with `min_new_tokens == max_new_tokens` it would
  contradict the minimum length at the last step, and copynat has no such processor.

Measured:

1. training target tokens/s, batch 32, source 32, target 32 (random ids), forward + backward + AdamW step +
   zero_grad, labels passed so each model computes its own loss (train mode, dropout on; copynat with
   `return_logits=False`, as copynat-train calls it).
   Aims: copynat / Bart >= 1.1; copynat+copy / copynat >= 0.85 (the copy head costs at most 15 %).
2. generate() latency, greedy and beam 4, batch 1 and 8, exactly 32 new tokens (min_new_tokens = max_new_tokens =
   32), KV cache on (eval mode, untrained models). Aim: Bart latency / copynat latency >= 1.0.

If an aim is missed, torch.profiler tables of copynat and Bart (sorted by self CPU time) are written to
`benchmarks/results/speed/<run>_profile.txt`.

    python benchmarks/speed.py            # full run (a few minutes on 2 cores)
    python benchmarks/speed.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402

from transformers import BartConfig, BartForConditionalGeneration  # noqa: E402

from copynat import CopyNatConfig, CopyNatForConditionalGeneration  # noqa: E402

NAME = "speed"
BATCH, SOURCE_LEN, TARGET_LEN = 32, 32, 32
NEW_TOKENS = 32
GENERATE_CASES = [("greedy", 1, 1), ("greedy", 8, 1), ("beam 4", 1, 4), ("beam 4", 8, 4)]  # (label, batch, beams)
AIM_TRAIN_VS_BART, AIM_COPY_COST, AIM_GENERATE_VS_BART = 1.1, 0.85, 1.0
MODELS = ("copynat", "copynat+copy", "bart")


def build_models() -> dict[str, torch.nn.Module]:
    """The three models, each from the same seed."""
    torch.manual_seed(0)
    plain = CopyNatForConditionalGeneration(CopyNatConfig(**common.MODEL_SIZE, use_copy_mechanism=False))
    torch.manual_seed(0)
    copy = CopyNatForConditionalGeneration(CopyNatConfig(**common.MODEL_SIZE, use_copy_mechanism=True))
    torch.manual_seed(0)
    bart_config = BartConfig(
        **common.MODEL_SIZE, activation_function="relu", dropout=0.1, attention_dropout=0.0, activation_dropout=0.0,
        max_position_embeddings=512, forced_eos_token_id=None,
    )
    bart = BartForConditionalGeneration(bart_config)
    bart.generation_config.forced_eos_token_id = None
    return {"copynat": plain, "copynat+copy": copy, "bart": bart}


def training_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, source, mask, labels):
    # copynat as copynat-train calls it: the loss only (a copy model then skips its [batch, tgt, vocab] mixture;
    # the plain model computes the same either way). Bart has no such switch and needs its logits for its loss.
    extra = {"return_logits": False} if not isinstance(model, BartForConditionalGeneration) else {}

    def step():
        loss = model(input_ids=source, attention_mask=mask, labels=labels, **extra).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def generate_call(model: torch.nn.Module, source, mask, beams: int):
    def call():
        return model.generate(source, attention_mask=mask, do_sample=False, num_beams=beams,
                              min_new_tokens=NEW_TOKENS, max_new_tokens=NEW_TOKENS)

    return call


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few repeats: a smoke run, not a measurement")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per case (default 15, quick 3)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds of timing in all (default 300, quick 60): on a busy machine fewer rounds are "
                             "run (at least 3 per case) instead of a longer run")
    parser.add_argument("--profile", choices=("auto", "always", "never"), default="auto",
                        help="profile copynat and Bart when an aim is missed (auto), always or never")
    args = parser.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 15)
    warmup = 1 if args.quick else 3
    budget = common.Budget(args.budget or (60 if args.quick else 300))

    common.setup(seed=0, threads=args.threads)
    # results/<NAME>/<run name>_<date>_<commit>.json; quick runs and other thread counts get names of their own
    run_name = ("quick" if args.quick else "standard") + (f"_threads{args.threads}" if args.threads != 2 else "")
    env = common.environment()
    models = build_models()
    params = {name: common.count_parameters(model) for name, model in models.items()}
    print(f"parameters: " + ", ".join(f"{name} {count:,}" for name, count in params.items()))

    # --- 1. training throughput ------------------------------------------------------------------------------------
    source = common.random_ids(BATCH, SOURCE_LEN, seed=1)
    labels = common.random_ids(BATCH, TARGET_LEN, seed=2)
    mask = torch.ones_like(source)
    steps = {}
    for name, model in models.items():
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        steps[name] = training_step(model, optimizer, source, mask, labels)
    print(f"timing training steps (up to {repeats} rounds)...", flush=True)
    train_times = common.time_interleaved(steps, repeats=repeats, warmup=warmup,
                                          deadline=budget.section_deadline(1 + len(GENERATE_CASES)))
    tokens = BATCH * TARGET_LEN
    train = {name: {"seconds": common.summarize(t), "tokens_per_s": tokens / common.summarize(t)["median"]}
             for name, t in train_times.items()}
    train_vs_bart = train["copynat"]["tokens_per_s"] / train["bart"]["tokens_per_s"]
    copy_cost = train["copynat+copy"]["tokens_per_s"] / train["copynat"]["tokens_per_s"]
    copy_vs_bart = train["copynat+copy"]["tokens_per_s"] / train["bart"]["tokens_per_s"]

    # --- 2. generate latency ------------------------------------------------------------------------------------------
    for model in models.values():
        model.eval()
    generate = []
    for case_index, (label, batch, beams) in enumerate(GENERATE_CASES):
        source = common.random_ids(batch, SOURCE_LEN, seed=3)
        mask = torch.ones_like(source)
        calls = {name: generate_call(model, source, mask, beams) for name, model in models.items()}
        for name, call in calls.items():
            out = call()
            assert out.shape == (batch, 1 + NEW_TOKENS), f"{name} {label} batch {batch}: got {tuple(out.shape)}"
        print(f"timing generate {label} batch {batch} (up to {repeats} rounds)...", flush=True)
        times = common.time_interleaved(calls, repeats=repeats, warmup=warmup,
                                        deadline=budget.section_deadline(len(GENERATE_CASES) - case_index))
        generate.append({
            "decoding": label, "batch": batch, "num_beams": beams, "rounds": len(times["bart"]),
            "seconds": {name: common.summarize(t) for name, t in times.items()},
            "bart_over_copynat": common.summarize(times["bart"])["median"] / common.summarize(times["copynat"])["median"],
            "bart_over_copynat_copy": common.summarize(times["bart"])["median"]
            / common.summarize(times["copynat+copy"])["median"],
            "paired_bart_over_copynat": common.paired_ratio(times["bart"], times["copynat"]),
        })

    # --- report ------------------------------------------------------------------------------------------------------
    note = common.load_note(env)
    rows = [
        ["parameters", f"{params['copynat']:,}", f"{params['copynat+copy']:,}", f"{params['bart']:,}", "", "", ""],
        ["train target tokens/s (median)", f"{train['copynat']['tokens_per_s']:,.0f}",
         f"{train['copynat+copy']['tokens_per_s']:,.0f}", f"{train['bart']['tokens_per_s']:,.0f}",
         f"{train_vs_bart:.2f}x copynat/Bart (copy: {copy_vs_bart:.2f}x)", f">= {AIM_TRAIN_VS_BART}x",
         common.verdict(train_vs_bart, AIM_TRAIN_VS_BART)],
        ["copy head cost (train)", "", "", "", f"{copy_cost:.2f}x copy/plain", f">= {AIM_COPY_COST}x",
         common.verdict(copy_cost, AIM_COPY_COST)],
    ]
    for case in generate:
        s = case["seconds"]
        rows.append([
            f"generate {case['decoding']}, batch {case['batch']}, 32 tokens (median latency)",
            common.fmt_ms(s["copynat"]["median"]), common.fmt_ms(s["copynat+copy"]["median"]),
            common.fmt_ms(s["bart"]["median"]),
            f"{case['bart_over_copynat']:.2f}x Bart/copynat (copy: {case['bart_over_copynat_copy']:.2f}x)",
            f">= {AIM_GENERATE_VS_BART}x", common.verdict(case["bart_over_copynat"], AIM_GENERATE_VS_BART),
        ])
    headers = ["metric", "copynat", "copynat+copy", "Bart", "ratio", "aim", "status"]
    table = common.markdown_table(headers, rows)
    rounds = [len(train_times["bart"])] + [case["rounds"] for case in generate]
    header = (f"# copynat vs Bart speed ({'quick smoke run' if args.quick else 'full run'}, "
              f"{min(rounds)}-{max(rounds)} interleaved rounds per case, median, {torch.get_num_threads()} threads)\n\n"
              "Bart: same dimensions, activation_function='relu' (copynat's default) for a fair comparison, "
              "forced_eos_token_id=None. Ratios in the 'ratio' column are for copynat without the copy head; "
              "the copy model's ratio is in parentheses. Aims apply to copynat (plain) except the copy-cost row.\n\n"
              f"{note}\n")
    markdown = header + "\n" + table
    print()
    print(markdown)

    payload = {
        "benchmark": NAME, "quick": args.quick, "repeats": repeats, "warmup": warmup, "environment": env,
        "load_note": note, "parameters": params,
        "training": {"batch": BATCH, "source_length": SOURCE_LEN, "target_length": TARGET_LEN,
                     "rounds": len(train_times["bart"]), **train,
                     "copynat_over_bart": train_vs_bart, "copy_over_plain": copy_cost,
                     "copy_over_bart": copy_vs_bart,
                     "paired_copynat_over_bart": common.paired_ratio(train_times["bart"], train_times["copynat"]),
                     "paired_copy_over_plain": common.paired_ratio(train_times["copynat"],
                                                                   train_times["copynat+copy"])},
        "generate": generate,
        "aims": {
            "train_copynat_over_bart": [train_vs_bart, AIM_TRAIN_VS_BART, common.verdict(train_vs_bart, AIM_TRAIN_VS_BART)],
            "train_copy_over_plain": [copy_cost, AIM_COPY_COST, common.verdict(copy_cost, AIM_COPY_COST)],
            **{f"generate_{c['decoding'].replace(' ', '')}_batch{c['batch']}_bart_over_copynat":
               [c["bart_over_copynat"], AIM_GENERATE_VS_BART, common.verdict(c["bart_over_copynat"], AIM_GENERATE_VS_BART)]
               for c in generate},
        },
    }
    missed = [name for name, (_, _, status) in payload["aims"].items() if status != "met"]
    attachments: dict[str, str] = {}  # the profile tables, when a run takes them

    if args.profile == "always" or (args.profile == "auto" and missed and not args.quick):
        sections = [f"aims missed: {', '.join(missed) or 'none'}\n"]
        profile_train = args.profile == "always" or any(name.startswith("train") for name in missed)
        profile_generate = args.profile == "always" or any(name.startswith("generate") for name in missed)
        if profile_train:
            for name, model in models.items():
                model.train()
                print(f"profiling a training step of {name}...", flush=True)
                sections.append(f"## training step, {name} (3 steps)\n" + common.profile_table(steps[name], steps=2))
        if profile_generate:
            source = common.random_ids(8, SOURCE_LEN, seed=3)
            mask = torch.ones_like(source)
            for name, model in models.items():
                model.eval()
                print(f"profiling greedy generate batch 8 of {name}...", flush=True)
                sections.append(f"## generate greedy batch 8, {name} (3 calls)\n"
                                + common.profile_table(generate_call(model, source, mask, 1)))
        attachments["_profile.txt"] = "\n\n".join(sections) + "\n"

    json_path = common.write_result(NAME, run_name, payload, markdown, attachments=attachments)
    print(f"\nresults: {json_path}")
    return payload


if __name__ == "__main__":
    main()
