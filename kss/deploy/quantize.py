"""Post-training int8 weights: symmetric, per output channel, stored as int8 + one fp32 scale per channel.

spikingjelly's `quantize` module holds fake-quantisers for quantisation-aware training (DoReFa-style
k-bit rounding of values in [0, 1], straight-through gradients); it neither stores integers nor
scales per channel. torch's `torch.quantize_per_channel` does exactly this rounding, but torch 2.14
deprecates its quantised tensors (a warning at every call), so the two lines are written out here
(tests/test_eval.py checks they give torch's integers) and the int8 values and scales are buffers. Every conv and linear is quantised; BatchNorm stays
fp32 (at deployment it folds into a per-channel scale and bias, and scaling a conv's output channel
does not change its int8 values: per-channel quantisation of the folded weights gives the same
integers). The forward dequantises (int8 x scale) and runs the float op: the spikes a chip would
produce from these weights, not a speed-up on a CPU.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 values, fp32 scale per output channel): w ~ q * scale, |q| <= 127."""
    weight = weight.detach().float()
    scale = (weight.flatten(1).abs().amax(dim=1) / 127.0).clamp_min(torch.finfo(torch.float32).tiny)
    shape = (-1,) + (1,) * (weight.dim() - 1)
    # round half to even, as torch.quantize_per_channel does
    return torch.round(weight / scale.view(shape)).clamp(-127, 127).to(torch.int8), scale


class Int8Weight(nn.Module):
    """A conv or linear whose weight is held as int8 values and per-channel scales."""

    def __init__(self, layer: nn.Conv2d | nn.Linear):
        super().__init__()
        q, scale = quantize_weight(layer.weight)
        self.register_buffer("weight_int8", q)
        self.register_buffer("weight_scale", scale)
        self.bias = None if layer.bias is None else nn.Parameter(layer.bias.detach().clone(), requires_grad=False)
        self.conv = isinstance(layer, nn.Conv2d)
        if self.conv:
            self.stride, self.padding, self.dilation, self.groups = layer.stride, layer.padding, layer.dilation, layer.groups
        self.in_features = getattr(layer, "in_features", None)
        self.out_features = getattr(layer, "out_features", None)

    def dequantized(self) -> torch.Tensor:
        shape = (-1,) + (1,) * (self.weight_int8.dim() - 1)
        return self.weight_int8.float() * self.weight_scale.view(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.dequantized().to(x.dtype)
        if self.conv:
            return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        return F.linear(x, weight, self.bias)

    def extra_repr(self) -> str:
        return f"int8 {tuple(self.weight_int8.shape)}, per-channel scales"


def quantize_int8(net: nn.Module) -> nn.Module:
    """A copy of `net` with every Conv2d and Linear weight stored as int8 + per-channel scales."""
    net = copy.deepcopy(net)
    for parent in list(net.modules()):
        for name, child in parent.named_children():
            if type(child) in (nn.Conv2d, nn.Linear):
                setattr(parent, name, Int8Weight(child))
    return net


def stored_bytes(net: nn.Module) -> int:
    """Bytes of every parameter and persistent buffer as held (int8 values count 1 byte each)."""
    tensors = list(net.parameters()) + [b for b in net.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)
