"""The search space: a cell is a 4-node DAG whose edges each carry one op.

A `Genotype` is plain data. `ops[i][j]` is the op on the edge from node i to
node j; node 0 is the cell input, node 3 the cell output. Edges with i < j are
forward edges. In a `backward` cell (SNASNet) edges with i > j also exist: they
feed node i's output back into node j one timestep later.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kss.errors import KssError
from kss.space.ops import lookup, op_names

NODES = 4
CELL_TYPES = ("forward", "backward")
FORWARD_EDGES = tuple((i, j) for j in range(1, NODES) for i in range(j))
BACKWARD_EDGES = tuple((i, j) for j in range(NODES - 1) for i in range(j + 1, NODES))

# SNASNet's published cells, in its 4x4 op-code form (rows = from-node).
# Codes (SNASNet's Neuronal_Cell): 0 zero, 1 skip, 2 conv1x1, 3 conv3x3, 4 avgpool3 -- kernel set (1, 3).
PUBLISHED = {
    "snasnet_cifar10": "0303 0030 2002 0200",
    "snasnet_cifar100": "0302 0030 3003 0000",
}


def conv_kernel(op: str) -> int | None:
    """Kernel size of a conv op name ('conv5' -> 5), None for the other ops."""
    return int(op[4:]) if op.startswith("conv") else None


def cell_edges(cell_type: str) -> tuple[tuple[int, int], ...]:
    if cell_type not in CELL_TYPES:
        raise KssError(f"unknown cell type {cell_type!r}; use one of {', '.join(CELL_TYPES)}")
    return FORWARD_EDGES + (BACKWARD_EDGES if cell_type == "backward" else ())


@dataclass(frozen=True)
class Genotype:
    cell_type: str
    ops: tuple[tuple[str, ...], ...]  # NODES x NODES, "zero" where there is no edge

    def edges(self) -> list[tuple[int, int, str]]:
        """Non-zero edges as (from, to, op), forward edges first."""
        return [(i, j, self.ops[i][j]) for i, j in cell_edges(self.cell_type) if self.ops[i][j] != "zero"]

    def kernels(self) -> list[int]:
        return sorted({k for _, _, op in self.edges() if (k := conv_kernel(op)) is not None})

    def to_json(self) -> dict:
        return {
            "cell_type": self.cell_type,
            "edges": {f"{i}->{j}": self.ops[i][j] for i, j in cell_edges(self.cell_type)},
        }

    @classmethod
    def from_json(cls, data: dict) -> Genotype:
        if not isinstance(data, dict) or "edges" not in data or "cell_type" not in data:
            raise KssError("a genotype must be a JSON object with 'cell_type' and 'edges'")
        cell_type = data["cell_type"]
        allowed = cell_edges(cell_type)
        ops = [["zero"] * NODES for _ in range(NODES)]
        for key, op in data["edges"].items():
            try:
                i, j = (int(n) for n in key.split("->"))
            except ValueError:
                raise KssError(f"genotype edge {key!r} is not of the form 'i->j'") from None
            if (i, j) not in allowed:
                raise KssError(f"genotype edge {key} is not an edge of a {cell_type} cell")
            if not isinstance(op, str) or lookup(op) is None:
                raise KssError(f"genotype edge {key} has unknown op {op!r}")
            ops[i][j] = op
        return cls(cell_type, tuple(tuple(row) for row in ops))

    def __str__(self) -> str:
        return " ".join(f"{i}->{j}:{op}" for i, j, op in self.edges())


def genotype_key(genotype: dict) -> str:
    """One string per architecture (a genotype's JSON, normalised): the same cell drawn twice, in two kernel
    sets or twice in one, gives the same key."""
    return json.dumps(Genotype.from_json(genotype).to_json(), sort_keys=True)


def prune(ops: list[list[str]], cell_type: str) -> list[list[str]]:
    """Zero every edge touching a node that the input cannot reach or that cannot reach the output."""
    live_edges = [(i, j) for i, j in cell_edges(cell_type) if ops[i][j] != "zero"]

    def reachable(start: int, forward: bool) -> set[int]:
        seen, todo = {start}, [start]
        while todo:
            n = todo.pop()
            for i, j in live_edges:
                a, b = (i, j) if forward else (j, i)
                if a == n and b not in seen:
                    seen.add(b)
                    todo.append(b)
        return seen

    live = reachable(0, True) & reachable(NODES - 1, False)
    return [[op if i in live and j in live else "zero" for j, op in enumerate(row)] for i, row in enumerate(ops)]


def draw_ops(rng: np.random.Generator, kernels: Sequence[int], cell_type: str) -> list[list[str]]:
    """One raw draw of SNASNet's `connection_matrix_gen`, before pruning: a uniform op per edge.

    A backward cell draws, for each node pair i < j, one direction by a fair coin (i->j forward
    or j->i feedback) and then a uniform op for it, so the two directions never coexist.
    """
    cell_edges(cell_type)  # a one-line error for an unknown cell type
    vocabulary = op_names(kernels)
    ops = [["zero"] * NODES for _ in range(NODES)]
    for i, j in FORWARD_EDGES:
        feedback = cell_type == "backward" and rng.integers(2) == 0
        a, b = (j, i) if feedback else (i, j)
        ops[a][b] = vocabulary[rng.integers(len(vocabulary))]
    return ops


def sample_genotype(rng: np.random.Generator, kernels: Sequence[int], cell_type: str) -> Genotype:
    """SNASNet's sampler: draw, prune dead nodes, resample until the input->output edge is non-zero."""
    while True:
        ops = draw_ops(rng, kernels, cell_type)
        if ops[0][NODES - 1] != "zero":
            return Genotype(cell_type, tuple(tuple(row) for row in prune(ops, cell_type)))


def from_snasnet_code(code: str, kernels: Sequence[int] = (1, 3)) -> Genotype:
    """Import SNASNet's 4x4 op-code form ('0303 0030 2002 0200'); codes 2/3 = smaller/larger kernel."""
    digits = code.replace(" ", "")
    if len(digits) != NODES * NODES or any(c not in "01234" for c in digits):
        raise KssError(f"SNASNet code {code!r} must be 16 digits 0-4 (4 rows of 4)")
    if len(kernels) != 2:
        raise KssError(f"SNASNet codes name two conv kernels; kernel set {list(kernels)} has {len(kernels)}")
    small, large = sorted(kernels)
    names = {"0": "zero", "1": "skip", "2": f"conv{small}", "3": f"conv{large}", "4": "avgpool3"}
    ops = [[names[digits[i * NODES + j]] for j in range(NODES)] for i in range(NODES)]
    if any(ops[i][i] != "zero" for i in range(NODES)):
        raise KssError(f"SNASNet code {code!r} has a self-loop on the diagonal")
    cell_type = "backward" if any(ops[i][j] != "zero" for i, j in BACKWARD_EDGES) else "forward"
    return Genotype(cell_type, tuple(tuple(row) for row in ops))


def check_fits(genotype: Genotype, kernels: Sequence[int], cell_type: str, searched_with: str | None = None) -> None:
    """Raise a one-line error when a genotype cannot be built with this kernel set / cell type;
    `searched_with`: the override that names the kernel set it came from, when known (a search.json)."""
    if genotype.cell_type != cell_type:
        raise KssError(
            f"the genotype is a {genotype.cell_type} cell but the config asks for cell_type={cell_type}; "
            f"pass model.cell_type={genotype.cell_type}"
        )
    allowed = set(op_names(kernels))
    foreign = sorted({op for _, _, op in genotype.edges() if op not in allowed})
    if foreign:
        raise KssError(
            f"the genotype uses {', '.join(foreign)}, which kernel set {list(kernels)} does not offer; "
            + (f"it was searched with {searched_with}: pass that" if searched_with else "pick the kernel set it was searched with")
        )


def load_genotype(source: str) -> Genotype:
    """A published name, a SNASNet code, a genotype JSON file, or a search.json (its best genotype)."""
    if source in PUBLISHED:
        return from_snasnet_code(PUBLISHED[source])
    path = Path(source)
    if not path.is_file():
        if len(source.replace(" ", "")) == NODES * NODES and source.replace(" ", "").isdigit():
            return from_snasnet_code(source)
        raise KssError(
            f"genotype {source!r} is neither a file nor a published name ({', '.join(PUBLISHED)})"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise KssError(f"genotype file {path} is not valid JSON: {error}") from None
    if isinstance(data, dict) and "best_genotype" in data:  # a search.json
        data = data["best_genotype"]
    if data is None:
        raise KssError(f"{path} holds no genotype (the search scored no candidate)")
    return Genotype.from_json(data)
