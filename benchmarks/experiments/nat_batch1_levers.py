"""Where batch-1 NAT time goes, and two levers that did not pay (issue 5's 20x aim); an experiment, not a benchmark.

Measures, in one process, on nat_speed.py's model (copy head on, 32 source / 32 target tokens, batch 1 unless a row
says otherwise):

1. per-op cost: the same NAT generate() call on a model with every width shrunk to 16 (vocab 64), so matmul
   arithmetic is ~0 and what is left is the cost of issuing ~300 ops and 38 Linears; at 1 and at 2 threads;
2. the fixed cost of one packed oneDNN Linear against MKL's sgemm (F.linear) on a [32, 16] x [16, 16] product;
3. packed oneDNN against sgemm per Linear shape, and the whole NAT call with every Linear packed against the
   default rule (only widening products packed, copynat.cpu_kernels.PACK_MIN_WIDENING), interleaved;
4. torch.compile of the whole parallel-decoding body (inductor, freezing), and of each encoder/decoder layer and
   the vocabulary projection (then without the packed-kernel swap, which dynamo cannot trace), against eager; the
   layer-compiled AT greedy is timed too, since a compiled NAT is only fair against a compiled AT.

    python benchmarks/experiments/nat_batch1_levers.py     # about 5 minutes on 2 cores

Medians of back-to-back calls except in 3 (interleaved), so compare rows of one run only.
"""

from __future__ import annotations

import contextlib
import logging
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _common as common  # noqa: E402
import nat_speed  # noqa: E402

from copynat import CopyNatConfig, CopyNatForConditionalGeneration, cpu_kernels, packed_cpu_kernels  # noqa: E402
from copynat.modeling import generation_copynat  # noqa: E402


def median_ms(fn, inner: int = 20, rounds: int = 9) -> float:
    for _ in range(3):
        fn()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - start) / inner)
    return statistics.median(samples) * 1e3


def calls(model, source, packed: bool = True):
    """(NAT one pass, AT greedy); NAT inside copynat.packed_cpu_kernels unless `packed=False`."""
    mask = torch.ones_like(source)

    def nat():
        with packed_cpu_kernels(model) if packed else contextlib.nullcontext():
            return model.generate(source, attention_mask=mask, non_autoregressive=True)

    at = lambda: model.generate(source, attention_mask=mask, min_new_tokens=32, max_new_tokens=32)  # noqa: E731
    return nat, at


def per_op_cost() -> None:
    size = dict(common.MODEL_SIZE, d_model=16, encoder_ffn_dim=16, decoder_ffn_dim=16, vocab_size=64)
    torch.manual_seed(0)
    model = CopyNatForConditionalGeneration(CopyNatConfig(**size, decoder_mode="hybrid")).eval()
    nat_speed.force_length(model, 32, 32)
    nat, _ = calls(model, torch.randint(5, 64, (1, 32)))
    for threads in (1, 2):
        torch.set_num_threads(threads)
        ms = median_ms(nat)
        print(f"| widths 16 (no arithmetic to speak of), {threads} thread(s) | NAT one pass | {ms:.2f} ms |")
    x, weight, bias = torch.randn(1, 32, 16), torch.randn(16, 16), torch.randn(16)
    packed = torch.ops.mkldnn._reorder_linear_weight(weight, 1024)
    one = median_ms(lambda: torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], ""), inner=200)
    print(f"| [32, 16] x [16, 16], 2 threads | packed oneDNN Linear | {one * 1e3:.0f} us |")
    sgemm = median_ms(lambda: F.linear(x, weight, bias), inner=200)
    print(f"| [32, 16] x [16, 16], 2 threads | F.linear (MKL sgemm) | {sgemm * 1e3:.0f} us |")


def packed_or_sgemm() -> None:
    """Per-shape interleaved A/B of the two Linear kernels, and of the whole NAT call with every Linear packed
    (PACK_MIN_WIDENING = 0, the previous rule) against the default (only widening products packed)."""
    samples: dict = {}
    cases = []
    for rows in (32, 1024):
        for k, n in ((256, 256), (256, 512), (256, 768), (256, 1024), (1024, 256), (256, 8000)):
            x, weight, bias = torch.randn(1, rows, k), torch.randn(n, k), torch.randn(n)
            packed = torch.ops.mkldnn._reorder_linear_weight(weight, 1024)
            cases.append(((rows, k, n), "packed", lambda x=x, p=packed, b=bias: torch.ops.mkldnn._linear_pointwise(
                x, p, b, "none", [], "")))
            cases.append(((rows, k, n), "sgemm", lambda x=x, w=weight, b=bias: F.linear(x, w, b)))
    for round_ in range(7):
        for shape, kernel, fn in cases if round_ % 2 else cases[::-1]:
            inner = max(2, int(3e7 // (2 * shape[0] * shape[1] * shape[2])))
            fn()
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            samples.setdefault((shape, kernel), []).append((time.perf_counter() - start) / inner)
    for shape in dict.fromkeys(shape for shape, _, _ in cases):
        packed, sgemm = (statistics.median(samples[(shape, kernel)]) * 1e6 for kernel in ("packed", "sgemm"))
        print(f"| [{shape[0]}, {shape[1]}] x [{shape[1]}, {shape[2]}] | packed oneDNN / sgemm | "
              f"{packed:.0f} / {sgemm:.0f} us = {packed / sgemm:.2f} |")
    model = nat_speed.build_model(True)
    for batch in (1, 32):
        nat, _ = calls(model, common.random_ids(batch, 32, seed=1))
        times: dict = {0: [], cpu_kernels.PACK_MIN_WIDENING: []}
        default = cpu_kernels.PACK_MIN_WIDENING
        for round_ in range(12):
            for widening in (0, default) if round_ % 2 else (default, 0):
                cpu_kernels.PACK_MIN_WIDENING = widening
                times[widening].append(median_ms(nat, inner=10 if batch == 1 else 1, rounds=1))
        cpu_kernels.PACK_MIN_WIDENING = default
        every, wide = statistics.median(times[0]), statistics.median(times[default])
        print(f"| batch {batch}: every Linear packed / widening ones only | NAT one pass | "
              f"{every:.2f} / {wide:.2f} ms = {every / wide:.2f}x |")


def compiled() -> None:
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    model = nat_speed.build_model(True)
    source = common.random_ids(1, 32, seed=1)
    nat, at = calls(model, source)
    reference = nat()
    print(f"| full model, eager (packed kernels) | NAT one pass | {median_ms(nat):.2f} ms |")

    def body(input_ids, attention_mask):
        return generation_copynat._decode_in_parallel(model, input_ids, attention_mask, 1, 1, False, None, False)

    whole = torch.compile(body, dynamic=False)
    start = time.perf_counter()
    with torch.no_grad():
        same = torch.equal(whole(source, torch.ones_like(source)), reference)
    took = time.perf_counter() - start
    with torch.no_grad():
        ms = median_ms(lambda: whole(source, torch.ones_like(source)))
    print(f"| whole body compiled ({took:.0f} s to compile, same tokens: {same}) | NAT one pass | {ms:.2f} ms |")

    nat, at = calls(model, source, packed=False)  # dynamo cannot trace the swapped-in forward
    print(f"| full model, eager, plain nn.Linear | NAT one pass | {median_ms(nat):.2f} ms |")
    print(f"| full model, eager, plain nn.Linear | AT greedy | {median_ms(at, inner=2, rounds=5):.1f} ms |")
    for module in [*model.model.encoder.layers, *model.model.decoder.layers, model.lm_head]:
        module.compile(dynamic=False)
    start = time.perf_counter()
    same = torch.equal(nat(), reference)
    took = time.perf_counter() - start
    print(f"| each layer compiled ({took:.0f} s, same tokens: {same}) | NAT one pass | {median_ms(nat):.2f} ms |")
    at()
    print(f"| each layer compiled | AT greedy | {median_ms(at, inner=2, rounds=5):.1f} ms |")


def main() -> None:
    warnings.filterwarnings("ignore")
    torch._logging.set_logs(dynamo=logging.ERROR)  # the graph-break warnings of the whole-body compile
    common.setup(threads=2)
    print("| setting | decoding | median |\n|---|---|---|")
    per_op_cost()
    torch.set_num_threads(2)
    packed_or_sgemm()
    compiled()


if __name__ == "__main__":
    main()
