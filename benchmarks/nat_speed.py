"""Non-autoregressive vs autoregressive decoding speed of one copynat model (issue 5).

One `decoder_mode="hybrid"` copynat (d_model 256, 3+3 layers, 4 heads, FFN 1024, vocab 8000; copy head on, and a
second model with it off) decodes the same random sources (length 32) at batch 1 and batch 32:

- AT greedy: `generate(min_new_tokens=32, max_new_tokens=32)`, KV cache on: 32 sequential decoder steps;
- NAT one pass: `generate(non_autoregressive=True, nat_iterations=1)`;
- mask-predict: `nat_iterations=4` and `10`;
- reference (no aim): one teacher-forced forward pass of the AR decoder over 32 target tokens.

The untrained length predictor would predict random lengths, so its classifier is set to predict exactly 32 tokens
(zero weight, a large bias on the class of length 32; in the default "offset" mode that class is
`32 - source_length + length_classes // 2`); the run checks that `generate(..., return_dict_in_generate=True).lengths`
is 32 for every row.

Aims (copy head on): at batch 1, one pass >= 20x faster than AT greedy and mask-predict (4 iterations) >= 5x; at
batch 32, one pass >= 3x faster than AT greedy and within 1.5x of its arithmetic floor. The floor is the FLOPs of one
NAT generate() call at batch 32 (`torch.utils.flop_counter.FlopCounterMode`) divided by this CPU's fp32 matmul rate,
measured in the same run on the very matmul shapes that call executes (recorded with a dispatch mode, each timed in
isolation, rate = their FLOPs / their time). The GFLOP/s of two reference shapes are printed too.

What bounds batch 1: AT greedy, and for one pass and mask-predict 4 at batch 1 the call, its matmuls replayed on
their own, the same call on the model with every width 16 (its ops at next to no arithmetic) and that call's
matmuls, all timed interleaved. The matmuls alone plus the narrow call's other ops bound the call from below, so
AT / that bound is the best speedup this op graph can reach on this machine.

If an aim is missed, a torch.profiler table of the NAT path (batch 32, sorted by self CPU time) and a stage breakdown
are written to `benchmarks/results/nat_speed/<run>_profile.txt`.

    python benchmarks/nat_speed.py            # full run (a few minutes on 2 cores)
    python benchmarks/nat_speed.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402

from copynat import CopyNatConfig, CopyNatForConditionalGeneration, packed_cpu_kernels  # noqa: E402
from copynat.modeling.parallel_decoding import _cut_after_eos  # noqa: E402

NAME = "nat_speed"
SOURCE_LEN, TARGET_LEN = 32, 32
BATCHES = (1, 32)
AIMS = {  # (batch, case): minimum speedup over AT greedy
    (1, "nat1"): 20.0,
    (1, "mp4"): 5.0,
    (32, "nat1"): 3.0,
}
AIM_FLOOR_RATIO = 1.5
CASES = {"at": "AT greedy (KV cache)", "nat1": "NAT one pass", "mp4": "mask-predict, 4 iterations",
         "mp10": "mask-predict, 10 iterations", "forward": "reference: one teacher-forced AR forward",
         "nat1_packed": "NAT one pass, packed CPU kernels (opt-in)",
         "mp4_packed": "mask-predict 4, packed CPU kernels (opt-in)"}


# --- the model -------------------------------------------------------------------------------------------------------


def build_model(use_copy_mechanism: bool, **sizes) -> CopyNatForConditionalGeneration:
    torch.manual_seed(0)
    model = CopyNatForConditionalGeneration(CopyNatConfig(
        **{**common.MODEL_SIZE, **sizes}, decoder_mode="hybrid", nat_training="cmlm",
        use_copy_mechanism=use_copy_mechanism))
    force_length(model, TARGET_LEN, SOURCE_LEN)
    return model.eval()


@torch.no_grad()
def force_length(model: CopyNatForConditionalGeneration, target_length: int, source_length: int) -> int:
    """Make the length predictor predict `target_length` for every source of `source_length` real tokens."""
    predictor = model.parallel_head.length_predictor
    target_class = int(predictor.length_to_class(torch.tensor([target_length]), torch.tensor([source_length]))[0])
    predictor.classifier.weight.zero_()
    predictor.classifier.bias.zero_()
    predictor.classifier.bias[target_class] = 50.0
    return target_class


def decode_calls(model, source: torch.Tensor, mask: torch.Tensor) -> dict:
    labels = common.random_ids(source.shape[0], TARGET_LEN, seed=7)
    decoder_input_ids = model.prepare_decoder_input_ids_from_labels(labels)

    def at():
        return model.generate(source, attention_mask=mask, do_sample=False, num_beams=1,
                              min_new_tokens=TARGET_LEN, max_new_tokens=TARGET_LEN)

    def nat(iterations):
        return lambda: model.generate(source, attention_mask=mask, non_autoregressive=True, nat_iterations=iterations)

    @torch.no_grad()
    def forward():
        return model(input_ids=source, attention_mask=mask, decoder_input_ids=decoder_input_ids, use_cache=False).logits

    def packed(iterations):  # copynat.packed_cpu_kernels: the opt-in oneDNN path (the default is plain PyTorch)
        def call():
            with packed_cpu_kernels(model):
                return nat(iterations)()
        return call

    return {"at": at, "nat1": nat(1), "mp4": nat(4), "mp10": nat(10), "forward": forward,
            "nat1_packed": packed(1), "mp4_packed": packed(4)}


def check_lengths(model, source, mask) -> None:
    out = model.generate(source, attention_mask=mask, non_autoregressive=True, return_dict_in_generate=True)
    lengths = out.lengths.tolist()
    if any(length != TARGET_LEN for length in lengths):
        raise SystemExit(f"forced length failed: predicted lengths {lengths}, expected {TARGET_LEN}")
    at = decode_calls(model, source, mask)["at"]()
    if at.shape[1] != 1 + TARGET_LEN:
        raise SystemExit(f"AT greedy produced {at.shape[1] - 1} tokens, expected {TARGET_LEN}")


# --- the arithmetic floor ----------------------------------------------------------------------------------------------

# Inside copynat.packed_cpu_kernels parallel decoding runs its Linears on oneDNN with packed weights, so that op is a
# matmul too: [..., K] x packed [N, K]^T.
PACKED_LINEAR = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
MATMULS = {torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default,
           torch.ops.aten.baddbmm.default} | ({PACKED_LINEAR.default} if PACKED_LINEAR is not None else set())
PACKED_WEIGHTS: dict[int, torch.Tensor] = {}  # packed weights seen by the recorder, replayed as they are


class PackedWeight(tuple):
    """(id, shape) of a packed oneDNN weight in a recorded signature: it cannot be re-created with empty_strided."""


class MatmulRecorder(TorchDispatchMode):
    """Records every matmul (op, argument shapes and strides) a call executes."""

    def __init__(self):
        super().__init__()
        self.calls: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in MATMULS and not kwargs:
            signature = []
            for a in args:
                if isinstance(a, torch.Tensor) and a.is_mkldnn:
                    PACKED_WEIGHTS[id(a)] = a
                    signature.append(PackedWeight((id(a), tuple(a.shape))))
                elif isinstance(a, torch.Tensor):
                    signature.append((tuple(a.shape), tuple(a.stride())))
                else:
                    signature.append(tuple(a) if isinstance(a, list) else a)
            self.calls[(func, tuple(signature))] += 1
        return func(*args, **kwargs)


def matmul_flops(func, signature) -> int:
    if PACKED_LINEAR is not None and func == PACKED_LINEAR.default:
        (x_shape, _), weight = signature[0], signature[1]
        return _packed_linear_flops(x_shape, weight[1])
    shapes = [s[0] for s in signature if isinstance(s, tuple) and len(s) == 2 and isinstance(s[0], tuple)]
    a, b = shapes[-2], shapes[-1]  # addmm/baddbmm: (bias, a, b)
    batch = a[0] if len(a) == 3 else 1
    return 2 * batch * a[-2] * a[-1] * b[-1]


def matmul_arguments(signature) -> list:
    """Fresh tensors with the recorded shapes and strides (and the recorded non-tensor arguments)."""
    args = []
    for item in signature:
        if isinstance(item, PackedWeight):
            args.append(PACKED_WEIGHTS[item[0]])
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], tuple):
            shape, stride = item
            args.append(torch.empty_strided(shape, stride).normal_())
        else:
            args.append(list(item) if isinstance(item, tuple) else item)
    return args


def time_matmul(func, signature, repeats: int) -> float:
    """Median seconds of one isolated call with fresh tensors of the recorded shapes and strides."""
    args = matmul_arguments(signature)
    inner = min(200, max(1, int(2e8 // max(matmul_flops(func, signature), 1))))  # ~0.2 GFLOP per timing sample
    for _ in range(3):
        func(*args)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            func(*args)
        samples.append((time.perf_counter() - start) / inner)
    return statistics.median(samples)


def reference_rate(m: int, k: int, n: int, repeats: int) -> float:
    seconds = time_matmul(torch.ops.aten.mm.default, (((m, k), (k, 1)), ((k, n), (n, 1))), repeats)
    return 2 * m * n * k / seconds / 1e9


def _cpu_flash_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# FlopCounterMode has no formula for the CPU flash-attention kernel that SDPA dispatches to here; without this the
# attention matmuls (about 2 % of the FLOPs at these sizes) would count as zero.
CUSTOM_FLOPS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_attention_flops}


def _packed_linear_flops(x_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
    rows = 1
    for size in x_shape[:-1]:
        rows *= size
    return 2 * rows * x_shape[-1] * weight_shape[0]


if PACKED_LINEAR is not None:  # FlopCounterMode has no formula for it either
    CUSTOM_FLOPS[PACKED_LINEAR] = _packed_linear_flops


def matmul_replay(call) -> tuple[MatmulRecorder, object, int]:
    """(recorder, replay, matmul FLOPs): `replay()` runs every matmul `call` executed, in isolation on fresh tensors
    of the same shapes and strides."""
    recorder = MatmulRecorder()
    with recorder:
        call()
    replay_list = [(func, matmul_arguments(signature), count) for (func, signature), count in recorder.calls.items()]

    def replay():
        for func, args, count in replay_list:
            for _ in range(count):
                func(*args)

    return recorder, replay, sum(matmul_flops(func, signature) * count
                                 for (func, signature), count in recorder.calls.items())


def arithmetic_floor(call, repeats: int, deadline: float | None = None) -> dict:
    """FLOPs of one call, and the time this CPU needs for them at its matmul rate on the call's own matmul shapes.

    The rate comes from a *replay*: every matmul the call executed, run again in isolation on fresh tensors of the
    same shapes and strides (no other op in between). The replay is timed interleaved with the call itself, so the
    ratio measured/floor compares two numbers taken under the same machine load."""
    with FlopCounterMode(display=False, custom_mapping=CUSTOM_FLOPS) as counter:
        call()
    flops = counter.get_total_flops()
    by_op = {str(op): count for op, count in counter.get_flop_counts()["Global"].items()}
    recorder, replay, matmul_flops_total = matmul_replay(call)
    times = common.time_interleaved({"call": call, "matmul replay": replay}, repeats=repeats, warmup=1,
                                    deadline=deadline)
    replay_seconds, measured = statistics.median(times["matmul replay"]), statistics.median(times["call"])
    rate = matmul_flops_total / replay_seconds
    shapes = []
    for (func, signature), count in recorder.calls.items():
        seconds = time_matmul(func, signature, 3)
        f = matmul_flops(func, signature)
        shown = [s[1] if isinstance(s, PackedWeight) else s[0] if isinstance(s, tuple) and s else s for s in signature]
        shapes.append({"op": str(func), "shapes": shown,
                       "count": count, "gflop_each": f / 1e9, "ms_each": seconds * 1e3,
                       "gflops_per_s": f / seconds / 1e9})
    return {"flops": flops, "flops_by_op": by_op, "matmul_flops": matmul_flops_total,
            "matmul_replay_seconds": replay_seconds, "rate_gflops": rate / 1e9, "floor_seconds": flops / rate,
            "measured_seconds": measured, "measured_over_floor": measured / (flops / rate),
            "paired_measured_over_replay": common.paired_ratio(times["call"], times["matmul replay"])
            * matmul_flops_total / flops,
            "shapes": sorted(shapes, key=lambda s: -s["count"] * s["ms_each"])}


# --- what bounds batch 1 ----------------------------------------------------------------------------------------------

# The same model with every width 16: its NAT call runs the same ops in the same order with next to no arithmetic,
# so its time less its own matmuls is what the ops cost apart from their arithmetic. The vocabulary (512) stays wide
# enough for most_likely_tokens to take the same kernels.
NO_WIDTH = dict(d_model=16, encoder_ffn_dim=16, decoder_ffn_dim=16, vocab_size=512)
BOUND_CASES = ("nat1", "mp4")  # the cases with a batch-1 aim


def batch1_bound(model, repeats: int, deadline: float | None = None) -> dict:
    """Lower bounds on the batch-1 NAT calls of BOUND_CASES on this machine: each call's matmuls replayed on their own
    plus its other ops at no width (the NO_WIDTH model's call less that call's matmuls). AT greedy, the calls and the
    replays are timed interleaved, so each best reachable speedup AT / bound is one same-load ratio."""
    source = common.random_ids(1, SOURCE_LEN, seed=11)
    mask = torch.ones_like(source)
    narrow = build_model(model.copy_generator is not None, **NO_WIDTH)
    narrow_source = common.random_ids(1, SOURCE_LEN, vocab_size=NO_WIDTH["vocab_size"], seed=11)
    check_lengths(narrow, narrow_source, mask)
    calls = decode_calls(model, source, mask)
    narrow_calls = decode_calls(narrow, narrow_source, mask)
    cases = {"at": calls["at"]}
    flops = {}
    for case in BOUND_CASES:
        _, replay, flops[case] = matmul_replay(calls[case])
        _, narrow_replay, _ = matmul_replay(narrow_calls[case])
        cases.update({case: calls[case], f"{case} matmuls": replay,
                      f"narrow {case}": narrow_calls[case], f"narrow {case} matmuls": narrow_replay})
    times = common.time_interleaved(cases, repeats=repeats, warmup=1, deadline=deadline)
    med = {name: statistics.median(t) for name, t in times.items()}
    result = {"at_seconds": med["at"], "rounds": len(times["at"])}
    for case in BOUND_CASES:
        other_ops = max(0.0, med[f"narrow {case}"] - med[f"narrow {case} matmuls"])
        bound = med[f"{case} matmuls"] + other_ops
        result[case] = {"seconds": med[case], "matmul_seconds": med[f"{case} matmuls"], "matmul_gflop": flops[case] / 1e9,
                        "narrow_seconds": med[f"narrow {case}"], "narrow_matmul_seconds": med[f"narrow {case} matmuls"],
                        "other_ops_seconds": other_ops, "bound_seconds": bound,
                        "measured_speedup": med["at"] / med[case], "best_speedup": med["at"] / bound}
    return result


BOUND_NOTE = ("No eager implementation of this op graph runs faster than its matmuls on their own plus its other "
              f"ops at no width ({NO_WIDTH['d_model']} everywhere, vocabulary {NO_WIDTH['vocab_size']}): "
              "a lower bound on the call's time, so AT / bound is an upper bound on its speedup. Only fewer ops "
              "(fused kernels) or faster matmuls would lift it.")


# --- diagnosis ---------------------------------------------------------------------------------------------------------


@torch.no_grad()
def stage_breakdown(model, source, mask, repeats: int) -> dict:
    """Median seconds of the stages of one NAT pass, replayed from the model's public pieces as
    `non_autoregressive_generate` calls them (output head without the [batch, tgt, vocab] mixture, then
    `most_likely_tokens`)."""
    config = model.config
    encoder = model.model.encoder(input_ids=source, attention_mask=mask)
    states, source_mask = encoder.last_hidden_state, mask.bool()
    target_mask = torch.ones(source.shape[0], TARGET_LEN, dtype=torch.bool)
    tokens = torch.full(target_mask.shape, config.mask_token_id)
    embeds = model.parallel_head.decoder_inputs(model.model.shared, tokens, target_mask, source, source_mask)
    decoded = model.model.decoder(inputs_embeds=embeds, encoder_hidden_states=states, encoder_padding_mask=source_mask,
                                  decoder_padding_mask=target_mask, causal=False, use_cache=False).last_hidden_state
    vocab_logits = model.output_head.lm_head(decoded)
    head = model.output_head(decoded, embeds, states, source, source_mask, mixture=False)
    stages = {
        "encoder": lambda: model.model.encoder(input_ids=source, attention_mask=mask),
        "length predictor": lambda: model.parallel_head.length_predictor(states, source_mask).float().log_softmax(
            -1).topk(1),
        "decoder stack (non-causal)": lambda: model.model.decoder(
            inputs_embeds=embeds, encoder_hidden_states=states, encoder_padding_mask=source_mask,
            decoder_padding_mask=target_mask, causal=False, use_cache=False),
        "lm_head": lambda: model.output_head.lm_head(decoded),
    }
    if model.copy_generator is not None:
        stages["copy attention + gate (CopyGenerator)"] = lambda: model.copy_generator(
            vocab_logits, decoded, embeds, states, source, source_mask, mixture=False)
    stages["most_likely_tokens (on a copy of the logits)"] = lambda: model.output_head.most_likely_tokens(head)
    stages["_cut_after_eos"] = lambda: _cut_after_eos(tokens, target_mask, config)
    stages["whole NAT generate()"] = lambda: model.generate(source, attention_mask=mask, non_autoregressive=True)
    times = common.time_interleaved(stages, repeats=repeats, warmup=1)  # the default path: plain PyTorch
    return {name: statistics.median(t) for name, t in times.items()}


def sync_count(call) -> int:
    """Host syncs (`.item()`, `int(t)`, `bool(t)`) in one call: free on CPU, a stall per call on GPU."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        call()
    return sum(e.count for e in prof.key_averages() if e.key == "aten::_local_scalar_dense")


# --- main ------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few repeats: a smoke run, not a measurement")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per case (default 12, quick 2)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds of timing in all (default 270, quick 60): on a busy machine fewer rounds are "
                             "run (at least 3 per case) instead of a longer run")
    parser.add_argument("--no-copy-off", action="store_true", help="skip the model without the copy head")
    parser.add_argument("--profile", choices=("auto", "always", "never"), default="auto",
                        help="profile the NAT path when an aim is missed (auto), always or never")
    args = parser.parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 12)
    warmup = 1 if args.quick else 2
    budget = common.Budget(args.budget or (60 if args.quick else 270))

    common.setup(seed=0, threads=args.threads)
    # results/<NAME>/<run name>_<date>_<commit>.json; quick runs and other thread counts get names of their own
    run_name = ("quick" if args.quick else "standard") + (f"_threads{args.threads}" if args.threads != 2 else "")
    env = common.environment()
    variants = {"copy on": build_model(True)}
    if not args.no_copy_off:
        variants["copy off"] = build_model(False)
    params = {name: common.count_parameters(model) for name, model in variants.items()}
    print("parameters: " + ", ".join(f"{name} {count:,}" for name, count in params.items()))

    results: dict = {}
    sections = [(variant, batch) for variant in variants for batch in BATCHES]
    for section_index, (variant, batch) in enumerate(sections):
        model = variants[variant]
        source = common.random_ids(batch, SOURCE_LEN, seed=11)
        mask = torch.ones_like(source)
        check_lengths(model, source, mask)
        calls = decode_calls(model, source, mask)
        print(f"timing {variant}, batch {batch} (up to {repeats} rounds)...", flush=True)
        times = common.time_interleaved(calls, repeats=repeats, warmup=warmup,
                                        deadline=budget.section_deadline(len(sections) + 1 - section_index))
        at = statistics.median(times["at"])
        results[(variant, batch)] = {
            case: {"seconds": common.summarize(t), "speedup_vs_at": at / statistics.median(t),
                   "paired_speedup_vs_at": common.paired_ratio(times["at"], t)}
            for case, t in times.items()
        }

    print("measuring the arithmetic floor (FLOPs of one NAT call at batch 32, matmul rate of this CPU)...", flush=True)
    floor_repeats = 3 if args.quick else 10
    source32 = common.random_ids(32, SOURCE_LEN, seed=11)
    mask32 = torch.ones_like(source32)
    floors = {variant: arithmetic_floor(decode_calls(model, source32, mask32)["nat1"], floor_repeats,
                                        deadline=budget.section_deadline(len(variants) - index))
              for index, (variant, model) in enumerate(variants.items())}
    references = {f"[{m},{k}]x[{k},{n}]": reference_rate(m, k, n, floor_repeats)
                  for m, k, n in ((32 * TARGET_LEN, 256, 1024), (1024, 256, 8000))}
    print("measuring what bounds batch 1 (matmuls alone, other ops at no width)...", flush=True)
    bound = batch1_bound(variants["copy on"], repeats=4 if args.quick else 12, deadline=budget.section_deadline(1))

    # --- report --------------------------------------------------------------------------------------------------
    note = common.load_note(env)
    aims = {}
    rows = []
    for (variant, batch), cases in results.items():
        for case, r in cases.items():
            aim = AIMS.get((batch, case)) if variant == "copy on" else None
            status = ""
            if aim is not None:
                status = common.verdict(r["speedup_vs_at"], aim)
                aims[f"batch{batch}_{case}_speedup"] = [r["speedup_vs_at"], aim, status]
            rows.append([variant, batch, CASES[case], common.fmt_ms(r["seconds"]["median"]),
                         f"{r['speedup_vs_at']:.2f}x", f">= {aim:g}x" if aim else "", status])
    table = common.markdown_table(["model", "batch", "decoding (32 tokens)", "median latency", "speedup vs AT greedy",
                                   "aim", "status"], rows)
    floor_rows = []
    for variant, floor in floors.items():
        status = ""
        if variant == "copy on":
            status = common.verdict(floor["measured_over_floor"], AIM_FLOOR_RATIO, higher_is_better=False)
            aims["batch32_nat1_over_floor"] = [floor["measured_over_floor"], AIM_FLOOR_RATIO, status]
        floor_rows.append([variant, f"{floor['flops'] / 1e9:.2f}", f"{floor['matmul_flops'] / 1e9:.2f}",
                           f"{floor['rate_gflops']:.1f}", common.fmt_ms(floor["floor_seconds"]),
                           common.fmt_ms(floor["measured_seconds"]), f"{floor['measured_over_floor']:.2f}x",
                           f"<= {AIM_FLOOR_RATIO}x" if status else "", status])
    floor_table = common.markdown_table(
        ["model", "GFLOP (FlopCounterMode)", "GFLOP in matmuls", "matmul rate GFLOP/s (its own shapes)",
         "floor", "NAT pass (timed with the replay)", "measured/floor", "aim", "status"], floor_rows)
    reference_line = "reference matmul rates: " + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in references.items())
    at1 = bound["at_seconds"]
    bound_table = common.markdown_table(
        [f"batch 1, copy on ({bound['rounds']} interleaved rounds; AT greedy {common.fmt_ms(at1)})",
         *(CASES[case] for case in BOUND_CASES)], [
            ["measured call (speedup vs AT)",
             *(f"{common.fmt_ms(bound[c]['seconds'])} ({bound[c]['measured_speedup']:.2f}x)" for c in BOUND_CASES)],
            ["its matmuls alone, replayed (GFLOP, GFLOP/s)",
             *(f"{common.fmt_ms(bound[c]['matmul_seconds'])} ({bound[c]['matmul_gflop']:.2f}, "
               f"{bound[c]['matmul_gflop'] / bound[c]['matmul_seconds']:.0f})" for c in BOUND_CASES)],
            ["its other ops: the width-16 call less its matmuls",
             *(f"{common.fmt_ms(bound[c]['other_ops_seconds'])} ({common.fmt_ms(bound[c]['narrow_seconds'])} - "
               f"{common.fmt_ms(bound[c]['narrow_matmul_seconds'])})" for c in BOUND_CASES)],
            ["bound: matmuls + other ops", *(common.fmt_ms(bound[c]["bound_seconds"]) for c in BOUND_CASES)],
            ["the call the aim needs: AT / aim",
             *(f"{common.fmt_ms(at1 / AIMS[(1, c)])} ({AIMS[(1, c)]:g}x)" for c in BOUND_CASES)],
            ["**best speedup this op graph can reach here: AT / bound**",
             *(f"**{bound[c]['best_speedup']:.2f}x**" for c in BOUND_CASES)],
        ])
    rounds = [r["seconds"]["n"] for cases in results.values() for r in cases.values()]
    header = (f"# copynat NAT vs AT decoding ({'quick smoke run' if args.quick else 'full run'}, "
              f"{min(rounds)}-{max(rounds)} interleaved rounds per case, "
              f"median, {torch.get_num_threads()} threads)\n\n"
              "decoder_mode='hybrid', source length 32, exactly 32 target tokens (length predictor forced to 32). "
              "Aims apply to the model with the copy head (the default).\n\n" + note + "\n")
    markdown = (header + "\n" + table + "\n\n## Arithmetic floor of one NAT pass, batch 32\n\n" + floor_table + "\n\n"
                + reference_line + "\n\n## What bounds batch 1\n\n" + BOUND_NOTE + "\n\n" + bound_table)
    print()
    print(markdown)

    payload = {
        "benchmark": NAME, "quick": args.quick, "repeats": repeats, "warmup": warmup, "environment": env,
        "load_note": note, "parameters": params,
        "results": [{"model": variant, "batch": batch, "case": case, "label": CASES[case], **r}
                    for (variant, batch), cases in results.items() for case, r in cases.items()],
        "floor": floors, "reference_matmul_gflops": references, "batch1_bound": bound, "aims": aims,
    }
    missed = [name for name, (_, _, status) in aims.items() if status != "met"]
    attachments: dict[str, str] = {}  # the profile tables, when a run takes them
    if args.profile == "always" or (args.profile == "auto" and missed and not args.quick):
        model = variants["copy on"]
        sections = [f"aims missed: {', '.join(missed) or 'none'}"]
        payload["stage_breakdown_seconds"] = {}
        for batch in BATCHES:
            print(f"profiling the NAT path at batch {batch}...", flush=True)
            source = common.random_ids(batch, SOURCE_LEN, seed=11)
            mask = torch.ones_like(source)
            stages = stage_breakdown(model, source, mask, repeats=5 if batch > 1 else 15)
            payload["stage_breakdown_seconds"][f"batch {batch}"] = stages
            stage_table = common.markdown_table([f"stage (batch {batch}, copy on)", "median"],
                                                [[name, common.fmt_ms(s)] for name, s in stages.items()])
            print(stage_table)
            calls = decode_calls(model, source, mask)
            steps = 3 if batch > 1 else 10
            sections += [
                f"## stage breakdown, batch {batch}\n\n{stage_table}",
                f"## torch.profiler, NAT one pass, batch {batch} ({steps} calls), sorted by self CPU time\n\n"
                + common.profile_table(calls["nat1"], steps=steps, row_limit=25),
                f"## torch.profiler, AT greedy, batch {batch} (1 call), sorted by self CPU time\n\n"
                + common.profile_table(calls["at"], steps=1, row_limit=15),
            ]
        syncs = sync_count(decode_calls(model, source32, mask32)["nat1"])
        payload["host_syncs_per_nat_call"] = syncs
        shape_table = common.markdown_table(
            ["matmul", "shapes", "count", "ms each (isolated)", "GFLOP/s"],
            [[s["op"], s["shapes"], s["count"], f"{s['ms_each']:.3f}", f"{s['gflops_per_s']:.1f}"]
             for s in floors["copy on"]["shapes"][:12]])
        sections.insert(1, f"host syncs (aten::_local_scalar_dense) in one NAT generate call: {syncs}\n\n"
                           f"## matmuls of one NAT call (batch 32), by total isolated time\n\n{shape_table}")
        attachments["_profile.txt"] = "\n\n".join(sections) + "\n"
        print(f"host syncs per NAT call: {syncs}")

    json_path = common.write_result(NAME, run_name, payload, markdown, attachments=attachments)
    print(f"\nresults: {json_path}")
    return payload


if __name__ == "__main__":
    main()
