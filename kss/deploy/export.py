"""A trained network as a NIR graph (Neuromorphic Intermediate Representation), and back.

spikingjelly's `nir_exchange.export_to_nir` traces a module of plain layers (its map: Conv2d,
Linear, AvgPool2d, Flatten, LIF/PLIF nodes; additions become edges, since a NIR node sums its
inputs). kss's network is not such a module (multi-step containers, per-timestep BatchNorm, its
own LIF subclass, reshapes for the vote), so `deployed` rebuilds it, per timestep, from plain
layers with the same weights:
- BatchNorm after a conv is folded into the conv (weight x gamma/sigma, a bias);
- BatchNorm on a node sum (before the downsampling and the classifier's LIF) becomes a 1x1 conv
  with a diagonal weight (NIR has no per-channel affine node that spikingjelly reads back);
- cell nodes are sums, i.e. edges into the node's consumers; skip edges are plain edges (a value
  summed twice through skips passes an identity 1x1 conv once);
- the population vote is a Linear (classes x population, 1/group per member), so the graph's
  output at each timestep is the class vote; the prediction is the argmax of its mean over the
  T timesteps (the input image is presented at every timestep: direct encoding).
`import_from_nir` reads it back as a spikingjelly GraphModule; `run_graph` steps it through time.
Backward cells (feedback delayed by one timestep) are refused: spikingjelly reads no NIR delays.
"""

from __future__ import annotations

from pathlib import Path

import torch
from spikingjelly.activation_based import neuron
from torch import nn

from kss.errors import KssError
from kss.space.neurons import PLIF
from kss.space.ops import op
from kss.deploy.quantize import Int8Weight

FORMATS = ("nir",)
DT = 1e-4  # seconds per timestep in the graph (spikingjelly's and most NIR tools' default)


def _weight(layer: nn.Module) -> torch.Tensor:
    return layer.dequantized() if isinstance(layer, Int8Weight) else layer.weight.detach()


def _bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias.detach() - bn.running_mean * scale


def _conv(weight: torch.Tensor, bias: torch.Tensor | None, padding: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    conv = nn.Conv2d(weight.shape[1], weight.shape[0], tuple(weight.shape[2:]), stride=stride, padding=padding,
                     dilation=dilation, bias=bias is not None)
    conv.weight.data = weight.clone().float()
    if bias is not None:
        conv.bias.data = bias.clone().float()
    return conv


def folded(conv: nn.Module, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """conv then BN (running statistics) as one conv with a bias."""
    scale, shift = _bn_affine(bn)
    weight = _weight(conv)
    stride = conv.stride[0]  # 1, except the stem of a stem_stride=2 model (TinyImageNet)
    dilation = conv.dilation[0]  # 1 for kss's own ops
    return _conv(weight * scale.view(-1, 1, 1, 1), shift, dilation * (weight.shape[-1] // 2), stride, dilation)


def affine(bn: nn.BatchNorm2d) -> nn.Conv2d:
    """BN alone as a 1x1 conv with a diagonal weight."""
    scale, shift = _bn_affine(bn)
    return _conv(torch.diag(scale)[:, :, None, None], shift, 0)


def plain_neuron(node: nn.Module) -> nn.Module:
    """spikingjelly's own LIF / PLIF (the classes its NIR map knows), single-step, same constants."""
    kwargs = dict(v_threshold=node.v_threshold, v_reset=node.v_reset, detach_reset=node.detach_reset, step_mode="s")
    if isinstance(node, PLIF):
        plain = neuron.ParametricLIFNode(**kwargs)
        plain.w.data = node.w.detach().clone()
        return plain
    return neuron.LIFNode(tau=node.tau, decay_input=node.decay_input, **kwargs)


def _linear(layer: nn.Module, bias: bool) -> nn.Linear:
    weight = _weight(layer)
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias)
    linear.weight.data = weight.clone().float()
    if bias:
        linear.bias.data = layer.bias.detach().clone().float()
    return linear


class DeployedCell(nn.Module):
    """A forward cell from plain layers. A node value that would reach a sum twice (skip edges
    0->1->3 and 0->3 make node 3 = 2 x node 0) goes through an identity 1x1 conv the second time:
    NIR edges are a set, so the same edge twice would count once."""

    def __init__(self, cell: nn.Module, channels: int):
        super().__init__()
        self.edges = []
        self.lifs, self.convs, self.pools, self.copies = nn.ModuleDict(), nn.ModuleDict(), nn.ModuleDict(), nn.ModuleDict()
        sources = [{"input"}, set(), set(), set()]  # what each node sums, by producer
        for i, j in cell.edges:
            name, key = cell.op_names[f"{i}->{j}"], f"e{i}{j}"
            stages = op(name)[0].export(cell.ops[f"{i}->{j}"])  # the op registry's NIR form: {stage: layer}
            made = {key} if stages else sources[i]  # no stage: a skip, the node value itself
            for stage, layer in stages.items():
                if not hasattr(self, stage):
                    self.add_module(stage, nn.ModuleDict())
                getattr(self, stage)[key] = layer
            if made & sources[j]:
                self.copies[key] = _conv(torch.eye(channels)[:, :, None, None], None, 0)
                made = {f"copy {key}"}
            sources[j] |= made
            self.edges.append((i, j, tuple(stages), key))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x, None, None, None]
        for i, j, stages, key in self.edges:
            if nodes[i] is None:  # a node without inputs (pruned genotypes have none; kept for safety)
                continue
            out = nodes[i]
            for stage in stages:
                out = getattr(self, stage)[key](out)
            if key in self.copies:
                out = self.copies[key](out)
            nodes[j] = out if nodes[j] is None else nodes[j] + out
        return nodes[-1]


class Deployed(nn.Module):
    """One timestep of a kss SNASNet from plain layers: image -> class votes."""

    def __init__(self, net: nn.Module):
        super().__init__()
        spec = net.spec
        self.timesteps = spec.timesteps
        self.stem = folded(net.stem[0], net.stem[1])
        self.cell1 = DeployedCell(net.cell1, spec.c1)
        self.down_bn, self.down_lif = affine(net.down[0]), plain_neuron(net.down[1])
        self.down_conv, self.down_pool = folded(net.down[2][0][0], net.down[2][1]), nn.AvgPool2d(2)
        self.cell2 = DeployedCell(net.cell2, spec.c2)
        self.head_bn, self.head_lif = affine(net.head[0]), plain_neuron(net.head[1])
        self.pool, self.flatten = nn.AvgPool2d(spec.sap), nn.Flatten()
        self.hidden, self.hidden_lif = _linear(net.pooled_linear, bias=False), plain_neuron(net.head[5])
        self.votes = _linear(net.head[6], bias=True)
        group = spec.population // spec.num_classes
        self.vote = nn.Linear(spec.population, spec.num_classes, bias=False)
        self.vote.weight.data = torch.kron(torch.eye(spec.num_classes), torch.full((1, group), 1.0 / group))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cell1(self.stem(x))
        x = self.down_pool(self.down_conv(self.down_lif(self.down_bn(x))))
        x = self.cell2(x)
        x = self.flatten(self.pool(self.head_lif(self.head_bn(x))))
        return self.vote(self.votes(self.hidden_lif(self.hidden(x))))


def deployed(net: nn.Module) -> Deployed:
    if net.spec.cell_type != "forward":
        raise KssError("NIR export supports forward cells only: a backward cell's feedback edges need a one-step "
                       "delay that spikingjelly cannot read back from NIR; export a model with model.cell_type=forward")
    return Deployed(net).eval()


def to_nir(net: nn.Module, example: torch.Tensor, path: str | Path):
    """Write `net` (a kss SNASNet, eval mode) as a NIR graph to `path` (HDF5); returns the graph."""
    import nir
    from spikingjelly.activation_based.nir_exchange import export_to_nir

    model = deployed(net)
    graph = export_to_nir(model, example[:1].float().cpu(), dt=DT)
    graph.metadata = {"source": "kss", "timesteps": model.timesteps, "dt": DT,
                      "readout": "mean over timesteps of the output (class votes); prediction = argmax",
                      "input": "the normalised image, presented at every timestep"}
    nir.write(str(path), graph)
    return graph


@torch.no_grad()
def run_graph(path: str | Path, images: torch.Tensor, timesteps: int) -> torch.Tensor:
    """Import a NIR file with spikingjelly and run it for `timesteps` steps: mean output, [B, classes]."""
    from spikingjelly.activation_based.nir_exchange import import_from_nir

    model = import_from_nir(str(path), dt=DT, step_mode="s").eval()
    state, total = None, 0
    images = images.float().cpu()
    for _ in range(timesteps):
        out, state = model(images, state)
        total = total + out
    return total / timesteps
