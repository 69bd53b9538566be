"""Compiled element-wise blocks for the R-score's no-grad forward, bit-identical to eager.

Between its convolutions a scoring forward is memory-bound: eager LIF makes ~14 passes over
every timestep's tensor, and PyTorch's NCHW average pool runs at ~2 GB/s. torch.compile fuses
a layer's whole T-step LIF into one pass (read x, write spikes; v stays in registers) and
vectorises the pools. The generated code performs the same float operations in the same
order as eager (no reassociation, true division), so the spikes are the reference's bit for
bit: tests/test_equivalence.py runs every case with and without these blocks.

Each block compiles once per input shape (~10 s on a 2-core CPU; a search has 3-5 shapes)
and is reused by every candidate. `enabled(True)` turns them on for the no-grad CPU path;
training and CUDA (where spikingjelly's fused kernels run) never use them.
"""

from __future__ import annotations

import contextlib
import functools
import logging

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)
_ACTIVE = False


@contextlib.contextmanager
def enabled(on: bool = True):
    """Use the compiled blocks inside this context (score_network sets it from score.fused)."""
    global _ACTIVE
    before, _ACTIVE = _ACTIVE, on
    try:
        yield
    finally:
        _ACTIVE = before


def active(x: torch.Tensor) -> bool:
    return _ACTIVE and x.device.type == "cpu" and not torch.is_grad_enabled()


def _compiled(fn):
    """torch.compile on first use (importing kss stays fast), static shapes: one kernel per shape."""
    cache = {}

    @functools.wraps(fn)
    def call(*args):
        if "fn" not in cache:
            import torch._dynamo

            # a search meets a handful of shapes (and strides: a time-constant input is an expanded view)
            torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
            logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "No CUDA runtime is found"
            cache["fn"] = torch.compile(fn, dynamic=False)
        try:
            return cache["fn"](*args)
        except Exception as error:  # no C++ compiler, an unsupported platform: the same ops, uncompiled
            if cache["fn"] is fn:
                raise
            log.warning("score.fused: compiling failed (%s); running uncompiled (same results, slower). "
                        "score.fused=false silences this", str(error).splitlines()[0][:200])
            cache["fn"] = fn
            return fn(*args)

    return call


@_compiled
def _lif_steps(x_seq: torch.Tensor, v: torch.Tensor, spikes: torch.Tensor, tau, rate, v_threshold: float,
               v_reset: float) -> torch.Tensor:
    # spikingjelly's decay-input, hard-reset update: h = v + (x - (v - v_reset)) / tau for LIF,
    # * sigmoid(w) for PLIF (dynamo specialises on which of tau / rate is None: one kernel each)
    for t in range(x_seq.shape[0]):
        h = x_seq[t] - (v - v_reset)
        h = (h / tau if rate is None else h * rate) + v
        fired = h >= v_threshold
        spikes[t].copy_(fired.to(spikes.dtype))
        v = torch.where(fired, v_reset, h)
    return v


def membrane(x_seq: torch.Tensor, v) -> torch.Tensor:
    """The membrane a LIF layer starts from: v itself, or a reset value filled in. At least float32,
    so a bf16 network's membranes are float32 (its currents are widened as they are added)."""
    if isinstance(v, torch.Tensor):
        return v
    return torch.full_like(x_seq[0], v, dtype=torch.promote_types(x_seq.dtype, torch.float32))


def lif(x_seq: torch.Tensor, v, v_threshold: float, v_reset: float, tau=None, rate=None):
    """(spikes [T, ...], v after the last step), as kss.space.neurons._lif_no_grad computes them."""
    v = membrane(x_seq, v)
    spikes = torch.empty_like(x_seq)
    tau = None if tau is None else float(tau)
    v = _lif_steps(x_seq, v, spikes, tau, rate, float(v_threshold), float(v_reset))
    return spikes, v


@_compiled
def avg_pool(x: torch.Tensor, kernel: int, stride: int, padding: int) -> torch.Tensor:
    """F.avg_pool2d (zero padding counted, as SNASNet's pools): the same sums in the same order."""
    return F.avg_pool2d(x, kernel, stride=stride, padding=padding)
