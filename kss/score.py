"""Training-free scores: R = log|det K|, K averaged over every spiking layer and timestep.

A kernel function maps the spikes of one layer, x: [T, B, N] (0/1), to the sum
over timesteps of its B x B kernel, in float64. Kernels are registered by name
so the config can pick one (`score.kind`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from spikingjelly.activation_based import monitor
from spikingjelly.activation_based.neuron import BaseNode
from torch import nn

from kss.errors import KssError

KERNELS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}


def kernel(name: str):
    def register(fn):
        KERNELS[name] = fn
        return fn

    return register


def _hamming(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Hamming distances [T, B, B] and spike counts [T, B] from one Gram product per timestep."""
    gram = torch.bmm(x, x.transpose(1, 2)).double()  # exact: 0/1 products summed below 2**24
    counts = x.sum(-1).double()  # exact in float32 too, and no float64 copy of x
    return counts.unsqueeze(2) + counts.unsqueeze(1) - 2 * gram, counts


@kernel("hamming")
def hamming_kernel(x: torch.Tensor) -> torch.Tensor:
    """SNASNet's sparsity-aware kernel: K = N - 0.5 * H / (E + 1e-3), E the expected distance."""
    n = x.shape[-1]
    distance, counts = _hamming(x)
    rate = (counts / n).unsqueeze(2)  # r_i as a column; its transpose is r_j
    expected = n * (rate * (1 - rate.transpose(1, 2)) + (1 - rate) * rate.transpose(1, 2))
    return (n - 0.5 * distance / (expected + 1e-3)).sum(0)


@kernel("naswot")
def naswot_kernel(x: torch.Tensor) -> torch.Tensor:
    """NASWOT's kernel (Mellor et al.): K = N - H, the number of units on which two inputs agree."""
    distance, _ = _hamming(x)
    return (x.shape[-1] - distance).sum(0)


def flatten_neurons(spikes: torch.Tensor) -> torch.Tensor:
    """[T, B, ...] -> [T, B, N] without a copy where possible.

    The kernels only compare inputs, so the order of neurons within N does not matter:
    channels-last maps are flattened in their memory order (H, W, C) instead of being copied.
    """
    if spikes.dim() == 5 and spikes.stride(2) == 1 and spikes.shape[2] > 1:
        spikes = spikes.permute(0, 1, 3, 4, 2)
    return spikes.reshape(spikes.shape[0], spikes.shape[1], -1)


def log_abs_det(k: torch.Tensor) -> float:
    """log|det K|; -inf for a singular K (e.g. identical spike patterns)."""
    sign, logabsdet = torch.linalg.slogdet(k)
    return float(logabsdet) if sign != 0 else -math.inf


@torch.no_grad()
def score_network(net: nn.Module, batches: list[torch.Tensor], kind: str = "hamming") -> float:
    """Mean over batches of log|det K|, K the mean kernel over all (spiking layer, timestep) pairs.

    The network stays in train mode (BN uses batch statistics), as in SNASNet.
    """
    if kind not in KERNELS:
        raise KssError(f"unknown score kind {kind!r}; use one of {', '.join(KERNELS)}")
    to_kernel = KERNELS[kind]

    def on_spikes(spikes: torch.Tensor) -> tuple[torch.Tensor, int]:
        return to_kernel(flatten_neurons(spikes).float()), spikes.shape[0]

    net.train()
    recorder = monitor.OutputMonitor(net, BaseNode, function_on_output=on_spikes)
    try:
        scores = []
        for images in batches:
            recorder.clear_recorded_data()
            net(images)  # the network resets its neurons at the start of forward
            if not recorder.records:
                raise KssError("the network has no spiking layer to score")
            total = sum(k for k, _ in recorder.records)
            count = sum(t for _, t in recorder.records)
            scores.append(log_abs_det(total / count))
        return sum(scores) / len(scores)
    finally:
        recorder.remove_hooks()
