"""Training-free scores: R = log|det K|, K averaged over every spiking layer and timestep.

A kernel function maps the spikes of one layer, x: [T, B, N] (0/1, float32 or bfloat16), to
its B x B kernel per timestep, [T, B, B], in float32 as SNASNet computes it in its
forward hook. The per-(layer, timestep) kernels are summed into a float64 matrix in
SNASNet's order (timestep by timestep, layers in call order), so R is the reference's
to the last bit. Kernels are registered by name so the config can pick one (`score.kind`).
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable

import numpy as np
import torch
from spikingjelly.activation_based import functional, monitor
from spikingjelly.activation_based.neuron import BaseNode
from torch import nn

from kss.space import fused
from kss.errors import KssError

KERNELS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}


def kernel(name: str):
    def register(fn):
        KERNELS[name] = fn
        return fn

    return register


def _gram(x: torch.Tensor) -> torch.Tensor:
    """x x^T per timestep. On a CPU through int8 x int8 -> int32 (2.3x faster than fp32 at CIFAR
    widths): exact for 0/1 spikes, as the fp32 product is while counts stay below 2**24."""
    _, b, n = x.shape
    if x.device.type == "cpu" and hasattr(torch, "_int_mm") and b > 16 and b % 8 == 0 and n % 8 == 0:
        spikes = x.to(torch.int8)
        return torch.stack([torch._int_mm(s, s.t()) for s in spikes]).float()
    x = x.float()  # bf16 spikes are exact, but a bf16 product would round counts above 256
    return torch.bmm(x, x.transpose(1, 2))


def _hamming(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Hamming distances [T, B, B] and spike counts [T, B] from one Gram product per timestep.

    Exact in float32 while N < 2**24: 0/1 products and counts are small integers, so
    n_i + n_j - 2 x.x^T equals SNASNet's x(1-x)^T + (1-x)x^T bit for bit. x may be float32
    or bfloat16 (score.precision=bf16); both come out as float32.
    """
    gram = _gram(x)
    counts = torch.diagonal(gram, dim1=1, dim2=2)  # x_i . x_i: the same integers as x.sum(-1), for free
    return counts.unsqueeze(2) + counts.unsqueeze(1) - 2 * gram, counts


# The scoring contract a search directory was written with (search_settings.json: score_version).
# 1: SNASNet's first upload (expected distance as a fraction, so K ~ N/2 off the diagonal);
# 2: its final code (commit 4980409): the expected distance counted in neurons, K ~ N - 0.5.
SCORE_VERSION = 2


@kernel("hamming")
def hamming_kernel(x: torch.Tensor) -> torch.Tensor:
    """SNASNet's sparsity-aware kernel: K = N - 0.5 * H / (E + 1e-3), per timestep, in float32.

    E = N (r_i (1 - r_j) + (1 - r_i) r_j) is the expected number of neurons on which two inputs
    with firing rates r_i, r_j disagree, so K ~ N - 0.5 off the diagonal and N on it (SNASNet's
    final `computing_K_eachtime`, operation for operation; its first upload left out the factor N).
    """
    n = x.shape[-1]
    distance, counts = _hamming(x)
    rate = counts / n
    row, col = rate.unsqueeze(2), rate.unsqueeze(1)
    expected = (row * (1 - col) + (1 - row) * col) * n
    rescale = 0.5 / (expected + 1e-3)
    return n - rescale * distance


@kernel("naswot")
def naswot_kernel(x: torch.Tensor) -> torch.Tensor:
    """NASWOT's kernel (Mellor et al.): K = N - H, the number of units on which two inputs agree."""
    distance, _ = _hamming(x)
    return x.shape[-1] - distance


def flatten_neurons(spikes: torch.Tensor) -> torch.Tensor:
    """[T, B, ...] -> [T, B, N] without a copy where possible.

    The kernels only compare inputs, so the order of neurons within N does not matter:
    channels-last maps are flattened in their memory order (H, W, C) instead of being copied.
    """
    if spikes.dim() == 5 and spikes.stride(2) == 1 and spikes.shape[2] > 1:
        spikes = spikes.permute(0, 1, 3, 4, 2)
    return spikes.reshape(spikes.shape[0], spikes.shape[1], -1)


def log_abs_det(k: torch.Tensor | np.ndarray) -> float:
    """log|det K| with numpy's slogdet (SNASNet's); -inf for a singular K."""
    sign, logabsdet = np.linalg.slogdet(np.asarray(k, dtype=np.float64))
    return float(logabsdet) if sign != 0 else -math.inf


def mean_kernel(per_layer: list[torch.Tensor]) -> torch.Tensor:
    """The float64 mean of per-(layer, timestep) float32 kernels, summed as SNASNet's hook does:
    timestep by timestep, and within a timestep the layers in the order the network calls them.

    per_layer[l] is layer l's [T, B, B] stack, layers in call order within a timestep.
    """
    steps = max(k.shape[0] for k in per_layer)
    total = torch.zeros(per_layer[0].shape[1:], dtype=torch.float64, device=per_layer[0].device)
    count = 0
    for t in range(steps):
        for k in per_layer:
            if t < k.shape[0]:
                total += k[t].double()
                count += 1
    return total / count


PRECISIONS = ("fp32", "tf32", "bf16")
LAYOUTS = ("auto", "nchw", "channels_last")


def check_precision(precision: str, device: torch.device | None = None, layout: str = "auto") -> None:
    """One line for a precision or layout that does not exist, or (given the device) that it cannot run."""
    if precision not in PRECISIONS:
        raise KssError(f"unknown score.precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if layout not in LAYOUTS:
        raise KssError(f"unknown score.layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    if precision == "tf32" and device is not None and device.type != "cuda":
        raise KssError("score.precision=tf32 needs a CUDA device; use fp32 or bf16 on this machine")


@contextlib.contextmanager
def arithmetic(precision: str, device: torch.device, cudnn_benchmark: bool = False):
    """fp32: true fp32 everywhere (cuDNN's default TF32 convolutions off: the reference's bits);
    tf32: CUDA's TF32 matmuls and convolutions; bf16: nothing to switch, `prepared` casts the network.
    cudnn_benchmark (CUDA): cuDNN times its algorithms once per shape and keeps the fastest; off by
    default, since the pick can differ from run to run and with it the last bits of R.
    Checked by the caller (score_network, once per candidate)."""
    if device.type != "cuda":
        yield
        return
    flags = (torch.backends.cuda.matmul, "allow_tf32"), (torch.backends.cudnn, "allow_tf32"), (torch.backends.cudnn, "benchmark")
    before = [getattr(owner, name) for owner, name in flags]
    tf32 = precision == "tf32"
    for (owner, name), value in zip(flags, (tf32, tf32, cudnn_benchmark)):
        setattr(owner, name, value)
    try:
        yield
    finally:
        for (owner, name), value in zip(flags, before):
            setattr(owner, name, value)


def memory_format(precision: str, layout: str = "auto") -> torch.memory_format | None:
    """The layout to score in; None: the network's own (kss.space.network.scoring_network builds NCHW, the
    reference's layout, in which CPU kernels reduce sums in its order). auto: channels-last for
    bf16, where oneDNN's convolutions are faster so; the network's own otherwise."""
    if layout == "auto":
        return torch.channels_last if precision == "bf16" else None
    return torch.channels_last if layout == "channels_last" else torch.contiguous_format


def prepared(net: nn.Module, batches: list[torch.Tensor], precision: str, layout: str = "auto"):
    """The network and images a score runs on; the candidate itself is left untouched.

    bf16: a bfloat16 copy. Spikes (0/1) are exact in bf16 and K is computed in float32; weights,
    currents and BN are bf16, membranes stay float32 (kss.space.neurons). Casting the network once beats
    autocast, which casts every layer's input on every call (benchmarks/search_speed.py).
    layout: see `memory_format`; a copy where it differs from the network's."""
    fmt = memory_format(precision, layout)
    if precision != "bf16" and (fmt is None or getattr(net, "memory_format", fmt) == fmt):
        return net, batches
    functional.reset_net(net)  # a membrane left over from a forward with grad cannot be deep-copied
    twin = copy.deepcopy(net)
    if precision == "bf16":
        twin.to(torch.bfloat16)
        for node in twin.modules():
            if isinstance(node, BaseNode):
                node.float()  # PLIF's decay parameter stays float32, as the membranes do
        batches = [images.to(torch.bfloat16) for images in batches]
    if fmt is not None and hasattr(twin, "use_memory_format"):
        twin.use_memory_format(fmt)
    return twin, batches


@torch.no_grad()
def score_network(net: nn.Module, batches: list[torch.Tensor], kind: str = "hamming", fused_blocks: bool = False,
                  precision: str = "fp32", layout: str = "auto", cudnn_benchmark: bool = False,
                  carry_state: bool = True) -> float:
    """Mean over batches (SNASNet's repeats) of log|det K|, K the mean kernel over all (spiking
    layer, timestep) pairs.

    The network stays in train mode (BN uses batch statistics, dropout is on), as in SNASNet.
    carry_state: each repeat starts from the membranes and dropout masks the previous one left, as
    SNASNet's final code does (nothing resets them between its repeats); False: every repeat
    starts from rest with fresh masks (its first upload). The first repeat always starts from rest.
    fused_blocks: run LIF and pooling through kss.space.fused's compiled blocks (same bits, faster on CPU).
    precision, layout, cudnn_benchmark: see `arithmetic` and `prepared`; only fp32 in NCHW without
    cudnn_benchmark is the reference's to the bit.
    """
    if kind not in KERNELS:
        raise KssError(f"unknown score kind {kind!r}; use one of {', '.join(KERNELS)}")
    to_kernel = KERNELS[kind]

    def on_spikes(spikes: torch.Tensor) -> torch.Tensor:
        return to_kernel(flatten_neurons(spikes))

    check_precision(precision, batches[0].device, layout)
    net, batches = prepared(net, batches, precision, layout)
    net.train()
    recorder = monitor.OutputMonitor(net, BaseNode, function_on_output=on_spikes)
    try:
        kernels = []
        for repeat, images in enumerate(batches):
            recorder.clear_recorded_data()
            with fused.enabled(fused_blocks), arithmetic(precision, images.device, cudnn_benchmark):
                if repeat and carry_state:
                    net(images, reset=False)
                else:
                    net(images)  # the network resets its neurons at the start of forward
            if not recorder.records:
                raise KssError("the network has no spiking layer to score")
            # Module order is SNASNet's call order within a timestep; a layer called once per
            # timestep (a backward cell's op) has its records joined into one [T, B, B] stack.
            per_layer = [torch.cat(recorder[name]) for name in recorder.monitored_layers if recorder[name]]
            kernels.append(mean_kernel(per_layer))  # stays on the device: one transfer per candidate, below
        return float(np.mean([log_abs_det(k) for k in torch.stack(kernels).cpu()]))
    finally:
        recorder.remove_hooks()
