"""Eq. 2 of the paper: P = sum over layers of weights + biases (BN affine, PLIF tau included)."""

from __future__ import annotations

from kss.genotype import Genotype, conv_kernel
from kss.network import ModelSpec
from kss.neurons import NeuronSpec


def count_params(genotype: Genotype, spec: ModelSpec, neuron: NeuronSpec) -> int:
    """Parameters of `build_network(genotype, spec, neuron)`, without building it."""

    def conv_bn(c_in: int, c_out: int, k: int) -> int:
        return c_in * c_out * k * k + 2 * c_out

    def cell(c: int) -> int:
        return sum(conv_bn(c, c, conv_kernel(op)) for _, _, op in genotype.edges() if conv_kernel(op))

    convs_per_cell = sum(1 for _, _, op in genotype.edges() if conv_kernel(op))
    neuron_layers = 2 * convs_per_cell + 3  # conv edges of both cells, after each cell, classifier
    return (
        conv_bn(spec.in_channels, spec.c1, 3)
        + cell(spec.c1)
        + 2 * spec.c1  # BN after cell 1
        + conv_bn(spec.c1, spec.c2, 3)
        + cell(spec.c2)
        + 2 * spec.c2  # BN after cell 2
        + spec.features * spec.hidden  # no bias
        + spec.hidden * spec.population + spec.population
        + (neuron_layers if neuron.kind == "plif" else 0)  # one learnable w per PLIF layer
    )


def memory_bytes(params: int) -> dict[str, int]:
    """Weight memory at fp32 and at int8 (one byte per parameter)."""
    return {"memory_fp32_bytes": 4 * params, "memory_int8_bytes": params}
