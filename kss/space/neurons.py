"""Spiking neurons: spikingjelly's LIF and parametric LIF, with a fast no-grad path.

spikingjelly's CPU kernel stacks spikes, voltages and charges for backward even
under `torch.no_grad()`, which makes it ~5-10x slower than the convolutions it
sits between. The R-score never needs gradients, so `_lif_no_grad` runs the same
update (same float operations, bit-identical spikes) with in-place ops. Training
goes through spikingjelly's own kernels unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from spikingjelly.activation_based import neuron, surrogate

from kss.errors import KssError
from kss.space import fused

SURROGATES = {"atan": surrogate.ATan, "sigmoid": surrogate.Sigmoid}


@dataclass
class NeuronSpec:
    kind: str = "lif"  # "lif" or "plif" (learnable tau, one parameter per layer)
    tau: float = 4.0 / 3.0  # for plif: the initial tau
    v_threshold: float = 1.0
    v_reset: float = 0.0
    detach_reset: bool = True
    surrogate: str = "atan"
    surrogate_alpha: float = 2.0

    def __post_init__(self):
        if self.kind not in ("lif", "plif"):
            raise KssError(f"unknown neuron kind {self.kind!r}; use lif or plif")
        if self.surrogate not in SURROGATES:
            raise KssError(f"unknown surrogate {self.surrogate!r}; use one of {', '.join(SURROGATES)}")
        if not self.tau > 1.0:
            raise KssError(f"neuron.tau must be > 1 (got {self.tau})")

    def make(self, step_mode: str = "m") -> neuron.BaseNode:
        kwargs = dict(
            v_threshold=float(self.v_threshold),
            v_reset=float(self.v_reset),
            detach_reset=self.detach_reset,
            surrogate_function=SURROGATES[self.surrogate](alpha=self.surrogate_alpha),
            step_mode=step_mode,
        )
        if self.kind == "plif":
            return PLIF(init_tau=float(self.tau), **kwargs)
        return LIF(tau=float(self.tau), **kwargs)


@torch.no_grad()
def _lif_no_grad(x_seq: torch.Tensor, v, v_threshold: float, v_reset: float, tau=None, rate=None):
    """Hard-reset, decay-input LIF over [T, ...] with the arithmetic of spikingjelly's kernels:
    h = v + (x - (v - v_reset)) / tau for LIF, h = v + (x - (v - v_reset)) * sigmoid(w) for PLIF."""
    v = fused.membrane(x_seq, v)
    spikes = torch.empty_like(x_seq)
    for t in range(x_seq.shape[0]):
        h = x_seq[t] - (v - v_reset)
        (h.div_(tau) if rate is None else h.mul_(rate)).add_(v)
        fired = h >= v_threshold
        spikes[t] = fired
        v = h.masked_fill_(fired, v_reset)
    return spikes, v


def _own_path(node: neuron.BaseNode, x_seq: torch.Tensor) -> bool:
    """No-grad, CPU, the update _lif_no_grad implements; elsewhere (training, CUDA with
    spikingjelly's fused kernels) spikingjelly runs its own."""
    return not torch.is_grad_enabled() and x_seq.device.type == "cpu" and node.decay_input and node.v_reset is not None


def _lif_sequence(x_seq: torch.Tensor, v, v_threshold: float, v_reset: float, tau=None, rate=None):
    run = fused.lif if fused.active(x_seq) else _lif_no_grad
    return run(x_seq, v, v_threshold, v_reset, tau=tau, rate=rate)


def _spikingjelly_path(forward, x_seq: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """spikingjelly's own kernels; a bf16 scoring network's currents are widened first, so that
    the membrane is float32 there too (as in _lif_no_grad), and its spikes (0/1) narrowed back."""
    if torch.is_grad_enabled() or x_seq.dtype in (torch.float32, torch.float64):
        return forward(x_seq, *args, **kwargs)
    return forward(x_seq.float(), *args, **kwargs).to(x_seq.dtype)


class LIF(neuron.LIFNode):
    def multi_step_forward(self, x_seq: torch.Tensor, *args, **kwargs):
        if not _own_path(self, x_seq):
            return _spikingjelly_path(super().multi_step_forward, x_seq, *args, **kwargs)
        spikes, self.v = _lif_sequence(x_seq, self.v, self.v_threshold, self.v_reset, tau=self.tau)
        return spikes


class PLIF(neuron.ParametricLIFNode):
    def multi_step_forward(self, x_seq: torch.Tensor, *args, **kwargs):
        if not _own_path(self, x_seq):
            return _spikingjelly_path(super().multi_step_forward, x_seq, *args, **kwargs)
        spikes, self.v = _lif_sequence(x_seq, self.v, self.v_threshold, self.v_reset, rate=self.w.sigmoid())
        return spikes

