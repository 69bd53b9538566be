"""The SNASNet macro-architecture built from a genotype.

Tensors are time-major, [T, B, C, H, W] (spikingjelly's multi-step mode), so
every layer processes all timesteps in one call. A backward cell is the one
exception: its feedback edges need node values from the previous timestep, so
it steps through time itself, calling its ops on one-timestep slices.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from spikingjelly.activation_based import functional, layer
from torch import nn

from kss.errors import KssError
from kss.genotype import NODES, Genotype, conv_kernel
from kss.neurons import NeuronSpec


@dataclass
class ModelSpec:
    """Everything besides the genotype that fixes the network's shape."""

    in_channels: int = 3
    image_size: int = 32
    num_classes: int = 10
    c1: int = 256  # cell 1 width
    c2: int = 512  # cell 2 width
    population: int = 100  # output neurons, averaged in groups of population / num_classes
    hidden: int = 1024  # classifier width
    sap: int = 2  # spatial average pool after cell 2
    timesteps: int = 5
    dropout: float = 0.5
    cell_type: str = "forward"

    @property
    def cell2_size(self) -> int:
        return self.image_size // 2

    @property
    def features(self) -> int:
        side = self.cell2_size // self.sap
        return self.c2 * side * side

    def validate(self, kernels) -> None:
        kernels = list(kernels)
        for name in ("in_channels", "image_size", "num_classes", "c1", "c2", "population", "hidden", "sap", "timesteps"):
            if getattr(self, name) < 1:
                raise KssError(f"model.{name} must be >= 1 (got {getattr(self, name)})")
        check_kernels(kernels)
        if max(kernels) > self.cell2_size:
            raise KssError(
                f"kernel {max(kernels)}x{max(kernels)} is larger than cell 2's {self.cell2_size}x{self.cell2_size} "
                f"feature map ({self.image_size}px input); use smaller kernels or larger images"
            )
        if self.features == 0:
            raise KssError(f"model.sap={self.sap} pools cell 2's {self.cell2_size}px map to nothing; lower model.sap")
        if self.population % self.num_classes:
            raise KssError(
                f"model.population={self.population} must be a multiple of the {self.num_classes} classes"
            )
        if not 0 <= self.dropout < 1:
            raise KssError(f"model.dropout must be in [0, 1) (got {self.dropout})")


def check_kernels(kernels: list) -> None:
    if not kernels:
        raise KssError("the kernel set is empty; give at least one kernel size, e.g. kernel_set.kernels=[3,5]")
    bad = [k for k in kernels if not isinstance(k, int) or isinstance(k, bool) or k < 1 or k % 2 == 0]
    if bad:
        raise KssError(f"kernel sizes must be positive odd integers (got {bad}); e.g. kernel_set.kernels=[3,5]")
    if len(set(kernels)) != len(kernels):
        raise KssError(f"kernel set {kernels} lists a size twice")


def conv_bn(c_in: int, c_out: int, kernel: int) -> nn.Module:
    return layer.SeqToANNContainer(
        nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(c_out)
    )


def make_op(op: str, channels: int, neuron: NeuronSpec) -> nn.Module:
    """One edge: skip, 3x3 average pool, or LIF -> Conv(kxk) -> BN."""
    if op == "skip":
        return nn.Identity()
    if op == "avgpool3":
        return layer.SeqToANNContainer(nn.AvgPool2d(3, stride=1, padding=1))
    kernel = conv_kernel(op)
    if kernel is None:
        raise KssError(f"unknown op {op!r}")
    return nn.Sequential(neuron.make("m"), conv_bn(channels, channels, kernel))


class Cell(nn.Module):
    """A DAG cell; each node is the sum of its incoming edges."""

    def __init__(self, genotype: Genotype, channels: int, neuron: NeuronSpec):
        super().__init__()
        self.feedback = genotype.cell_type == "backward"
        self.edges = [(i, j) for i, j, _ in genotype.edges()]
        self.ops = nn.ModuleDict({f"{i}->{j}": make_op(op, channels, neuron) for i, j, op in genotype.edges()})

    def _step(self, x: torch.Tensor, fed_back: list) -> list:
        """One pass over the DAG; fed_back[i] is added to node i's value on its forward edges."""
        nodes = [x] + [None] * (NODES - 1)  # None: no input yet, i.e. zero
        for i, j in self.edges:
            if i < j:
                out = self.ops[f"{i}->{j}"](_or_zeros(_add(nodes[i], fed_back[i]), x))
                nodes[j] = _add(nodes[j], out)
        return nodes

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if not self.feedback:
            return self._step(x_seq, [None] * NODES)[-1]
        fed_back = [None] * NODES  # zeroed at the start of every forward
        outputs = []
        for t in range(x_seq.shape[0]):
            x = x_seq[t : t + 1]
            nodes = self._step(x, fed_back)
            fed_back = [None] * NODES
            for i, j in self.edges:
                if i > j:  # node i feeds node j at the next timestep
                    fed_back[j] = _add(fed_back[j], self.ops[f"{i}->{j}"](_or_zeros(nodes[i], x)))
            outputs.append(nodes[-1])
        return torch.cat(outputs)


def _add(a, b):
    return b if a is None else a if b is None else a + b


def _or_zeros(value, like: torch.Tensor) -> torch.Tensor:
    # A node whose only inputs are feedback edges is zero at t=0; ops must see a real zero
    # tensor (BN of zeros is its bias, not zero).
    return torch.zeros_like(like) if value is None else value


class SNASNet(nn.Module):
    """stem -> cell1 -> BN-LIF-conv-BN-pool -> cell2 -> BN-LIF-pool -> classifier -> population vote."""

    # Channels-last makes conv and avg-pool 1.3-1.5x faster on CPU, for scoring and training alike
    # (benchmarks/search_speed.py); cuDNN takes it as well.
    memory_format = torch.channels_last

    def __init__(self, genotype: Genotype, spec: ModelSpec, neuron: NeuronSpec):
        super().__init__()
        self.spec = spec
        self.stem = nn.Sequential(
            nn.Conv2d(spec.in_channels, spec.c1, 3, padding=1, bias=False), nn.BatchNorm2d(spec.c1)
        )
        self.cell1 = Cell(genotype, spec.c1, neuron)
        self.down = nn.Sequential(
            layer.SeqToANNContainer(nn.BatchNorm2d(spec.c1)),
            neuron.make("m"),
            conv_bn(spec.c1, spec.c2, 3),
            layer.SeqToANNContainer(nn.AvgPool2d(2)),
        )
        self.cell2 = Cell(genotype, spec.c2, neuron)
        self.head = nn.Sequential(
            layer.SeqToANNContainer(nn.BatchNorm2d(spec.c2)),
            neuron.make("m"),
            layer.SeqToANNContainer(nn.AvgPool2d(spec.sap), nn.Flatten()),
            nn.Dropout(spec.dropout),  # elementwise on [T, B, F]: a fresh mask every timestep
            nn.Linear(spec.features, spec.hidden, bias=False),
            neuron.make("m"),
            nn.Linear(spec.hidden, spec.population),
        )
        self._init_weights()
        self.to(memory_format=self.memory_format)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=2)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] images -> [B, classes] logits (population vote averaged over time)."""
        functional.reset_net(self)  # no neuron state survives from a previous batch
        x = self.stem(images.contiguous(memory_format=self.memory_format))  # direct encoding: the same analog input at every timestep
        x = x.unsqueeze(0).expand(self.spec.timesteps, *x.shape)
        x = self.cell2(self.down(self.cell1(x)))
        votes = self.head(x)  # [T, B, population]
        T, B, _ = votes.shape
        return votes.view(T, B, self.spec.num_classes, -1).mean(dim=(0, 3))


def build_network(genotype: Genotype, spec: ModelSpec, neuron: NeuronSpec) -> SNASNet:
    if genotype.cell_type != spec.cell_type:
        raise KssError(
            f"the genotype is a {genotype.cell_type} cell but model.cell_type={spec.cell_type}; "
            f"pass model.cell_type={genotype.cell_type}"
        )
    return SNASNet(genotype, spec, neuron)
