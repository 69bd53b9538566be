"""The op registry: every edge op of the search space, declared once.

An `Op` says how the op is built (multi-step, [T, B, C, H, W] in and out), how many parameters it
has (Eq. 2, without building it), how many spiking layers it adds (each a PLIF time constant) and
its NIR form (one timestep, plain layers). The genotype's vocabulary and sampler, the network, the
parameter count and the NIR export read it; the cost per image needs nothing more (the counters
see the built modules).

The registration order is the sampler's vocabulary order, `zero, skip, conv{k}..., avgpool3`:
SNASNet's, so the random search draws what it always drew. `register` appends an op (a new op is
then sampled, built, counted, costed and exported); `unregister` takes it away again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import nn

from kss.errors import KssError


@dataclass(frozen=True)
class Op:
    """One edge op. `per_kernel`: a family, one op per kernel of the kernel set (`conv` -> conv1, conv3, ...);
    build/params/export then get that kernel, else None."""

    name: str
    build: Callable[..., nn.Module] | None  # (channels, neuron, per_step, kernel) -> module; None: never built (zero)
    params: Callable[[int, int | None], int]  # (channels, kernel) -> weights + biases, without building it
    export: Callable[[nn.Module], dict[str, nn.Module]] | None = None  # built op -> {stage: one-timestep layer}
    neurons: int = 0  # spiking layers the op adds
    per_kernel: bool = False

    def names(self, kernels: Sequence[int]) -> tuple[str, ...]:
        return tuple(f"{self.name}{k}" for k in kernels) if self.per_kernel else (self.name,)


OPS: dict[str, Op] = {}


def register(op: Op) -> Op:
    """Add an op at the end of the vocabulary (after the ops already registered)."""
    if op.name in OPS:
        raise KssError(f"op {op.name!r} is registered already")
    OPS[op.name] = op
    return op


def unregister(name: str) -> None:
    OPS.pop(name)


def op_names(kernels: Sequence[int]) -> tuple[str, ...]:
    """The op vocabulary of a kernel set, in registration order, e.g. (1, 3) -> zero, skip, conv1, conv3, avgpool3."""
    return tuple(name for op in OPS.values() for name in op.names(kernels))


def lookup(name: str) -> tuple[Op, int | None] | None:
    """(op, kernel) of an op name ('conv5' -> the conv family, 5), None when no registered op has the name."""
    if name in OPS and not OPS[name].per_kernel:
        return OPS[name], None
    for op in OPS.values():
        rest = name[len(op.name):]
        if op.per_kernel and name.startswith(op.name) and rest.isdigit() and int(rest) % 2 == 1:
            return op, int(rest)
    return None


def op(name: str) -> tuple[Op, int | None]:
    """lookup(name), or a one-line error naming the unknown op."""
    found = lookup(name)
    if found is None:
        raise KssError(f"unknown op {name!r}")
    return found


def op_params(name: str, channels: int) -> int:
    found, kernel = op(name)
    return found.params(channels, kernel)


def op_neurons(name: str) -> int:
    return op(name)[0].neurons


def build_op(name: str, channels: int, neuron, per_step: bool) -> nn.Module:
    found, kernel = op(name)
    if found.build is None:
        raise KssError(f"op {name!r} is never built")
    return found.build(channels, neuron, per_step, kernel)


def conv_bn_params(c_in: int, c_out: int, kernel: int) -> int:
    """A bias-free k x k conv and its BN (gamma, beta)."""
    return c_in * c_out * kernel * kernel + 2 * c_out
