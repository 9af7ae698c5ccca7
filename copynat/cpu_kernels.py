"""Packed oneDNN kernels for parallel (NAT) decoding on a CPU: an opt-in speed-up, entered explicitly.

    with copynat.packed_cpu_kernels(model):
        model.generate(input_ids, non_autoregressive=True, nat_iterations=4)

A NAT pass multiplies [batch x length, d] activations by every weight matrix once. MKL's sgemm, which nn.Linear runs
on, re-packs the weight matrix into its blocked layout on every call; oneDNN can keep it packed. Inside the block,
every *widening* nn.Linear of `model` (out_features >= 3 x in_features: the fused QKV, the FFN's first layer, the
vocabulary projection) runs on `torch.ops.mkldnn._linear_pointwise` with its weight packed once (re-packed when the
weight's storage or version counter moves). oneDNN's call costs ~30 us more than sgemm's, which only widening
products repay; square and narrowing Linears stay on sgemm (benchmarks/experiments/nat_batch1_levers.py). AR steps
(one row each) gain nothing. README ("NAT vs AT decoding") gives the measured gain.

How: for the length of the block, the model's own Linear modules get a `forward` attribute in their instance
`__dict__` (what `nn.Module.__setattr__` would write, 10x faster), removed on exit. Nothing outside `model` is
touched, no hook is registered, and the block is a no-op where packing does not apply (CUDA, bf16/fp16, autocast,
torch builds without oneDNN). It lives outside `copynat.modeling`, the Hub remote code, on purpose.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["PACK_MIN_WIDENING", "packed_cpu_kernels", "packing_supported"]

#: Pack a Linear when out_features >= this * in_features.
PACK_MIN_WIDENING = 3


class _PackedLinearForward:
    """`linear.forward` on a oneDNN-packed copy of its weight, re-packed when the weight or bias changes (their
    storage or in-place version counter)."""

    __slots__ = ("linear", "key", "weight", "bias")

    def __init__(self, linear: nn.Linear):
        self.linear = weakref.ref(linear)  # no cycle through linear.__dict__["forward"] back to the module
        self.key = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        linear = self.linear()
        weight, bias = linear.weight, linear.bias
        key = (weight.data_ptr(), weight._version, None if bias is None else (bias.data_ptr(), bias._version))
        if key != self.key:
            self.weight = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), 1024)
            self.bias = None if bias is None else bias.detach()
            self.key = key
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")


# One packed forward per Linear, kept while the Linear lives: a second block reuses its packed weight.
_PACKED: "weakref.WeakKeyDictionary[nn.Linear, _PackedLinearForward]" = weakref.WeakKeyDictionary()


def packing_supported(model: nn.Module) -> bool:
    """Whether the packed kernels apply: an fp32 model on the CPU, no autocast, a torch build with oneDNN."""
    mkldnn = getattr(torch.ops, "mkldnn", None)
    parameter = next(model.parameters(), None)
    return (parameter is not None and parameter.device.type == "cpu" and parameter.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu") and torch.backends.mkldnn.is_available()
            and hasattr(mkldnn, "_reorder_linear_weight") and hasattr(mkldnn, "_linear_pointwise"))


@contextlib.contextmanager
def packed_cpu_kernels(model: nn.Module) -> Iterator[None]:
    """Within the block, every widening nn.Linear of `model` runs on oneDNN with a packed weight (see the module
    docstring); a no-op where that does not apply. Re-entrant: an inner block leaves the outer one's kernels."""
    if not packing_supported(model):
        yield
        return
    linears = [module for module in model.modules() if isinstance(module, nn.Linear)
               and module.out_features >= PACK_MIN_WIDENING * module.in_features and "forward" not in vars(module)]
    try:
        for linear in linears:
            forward = _PACKED.get(linear)
            if forward is None:
                forward = _PACKED[linear] = _PackedLinearForward(linear)
            linear.__dict__["forward"] = forward
        yield
    finally:
        for linear in linears:
            linear.__dict__.pop("forward", None)
