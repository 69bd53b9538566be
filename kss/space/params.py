"""Eq. 2 of the paper: P = sum over layers of weights + biases (BN affine, PLIF tau included)."""

from __future__ import annotations

from kss.errors import KssError
from kss.space.genotype import NODES, Genotype
from kss.space.network import ModelSpec
from kss.space.neurons import NeuronSpec
from kss.space.ops import conv_bn_params, op_neurons, op_params


def param_breakdown(genotype: Genotype, spec: ModelSpec, neuron: NeuronSpec) -> dict[str, int]:
    """Parameters of `build_network(genotype, spec, neuron)` per part, without building it."""

    conv_bn = conv_bn_params

    def cell(c: int) -> int:
        return sum(op_params(op, c) for _, _, op in genotype.edges())

    edge_neurons = sum(op_neurons(op) for _, _, op in genotype.edges())  # the conv edges' LIFs
    neuron_layers = 2 * edge_neurons + 3  # the edges of both cells, after each cell, classifier
    return {
        "stem": conv_bn(spec.in_channels, spec.c1, 3),
        "cell 1": cell(spec.c1),
        "downsampling": 2 * spec.c1 + conv_bn(spec.c1, spec.c2, 3),  # BN, conv 3x3, BN
        "cell 2": cell(spec.c2),
        "BN after cell 2": 2 * spec.c2,
        "classifier's first Linear": spec.features * spec.hidden,  # no bias
        "classifier's output Linear": spec.hidden * spec.population + spec.population,
        "PLIF time constants": neuron_layers if neuron.kind == "plif" else 0,  # one learnable w per layer
    }


def count_params(genotype: Genotype, spec: ModelSpec, neuron: NeuronSpec) -> int:
    """Parameters of `build_network(genotype, spec, neuron)`, without building it."""
    return sum(param_breakdown(genotype, spec, neuron).values())


def smallest_genotype(cell_type: str) -> Genotype:
    """The cheapest cell the sampler can give: only the (mandatory) input->output edge, a skip."""
    ops = [["zero"] * NODES for _ in range(NODES)]
    ops[0][NODES - 1] = "skip"
    return Genotype(cell_type, tuple(tuple(row) for row in ops))


def check_budget_reachable(max_params: float | None, spec: ModelSpec, neuron: NeuronSpec) -> None:
    """Refuse, before any work, a budget that no network of this search space can meet."""
    if max_params is None:
        return
    parts = param_breakdown(smallest_genotype(spec.cell_type), spec, neuron)
    floor = sum(parts.values())
    if floor <= max_params:
        return
    name, largest = max(parts.items(), key=lambda item: item[1])
    wider_pool = ModelSpec(**{**spec.__dict__, "sap": spec.sap * 2})
    hint = ""
    if wider_pool.features > 0 and name == "classifier's first Linear":
        cheaper = count_params(smallest_genotype(spec.cell_type), wider_pool, neuron)
        hint = f"model.sap={wider_pool.sap} (smallest network {cheaper / 1e6:.2f}M), "
    raise KssError(
        f"budget.max_params={max_params:.4g} is below the smallest network of this search space, "
        f"{floor / 1e6:.2f}M parameters ({name} alone {largest / 1e6:.2f}M = {parts_formula(name, spec)}); "
        f"raise the budget or shrink the model: {hint}narrower model.c1/model.c2, or a smaller model.hidden"
    )


def parts_formula(name: str, spec: ModelSpec) -> str:
    if name == "classifier's first Linear":
        side = spec.cell2_size // spec.sap
        return f"{spec.c2} ch x {side}x{side} x {spec.hidden}"
    return "see kss.space.params.param_breakdown"


def memory_bytes(params: int) -> dict[str, int]:
    """Weight memory at fp32 and at int8 (one byte per parameter)."""
    return {"memory_fp32_bytes": 4 * params, "memory_int8_bytes": params}
