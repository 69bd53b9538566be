"""A new op, declared in this test alone (the op registry, kss.space.ops): a dilated 3x3 conv
(LIF -> Conv 3x3, dilation 2 -> BN) is sampled, built, counted, scored, costed and exported to NIR
without a change to any kss file; unregistered, the search space is SNASNet's again."""

import numpy as np
import pytest
import torch
from spikingjelly.activation_based import layer
from torch import nn

from kss.deploy.export import folded, plain_neuron, run_graph, to_nir
from kss.search.candidate import candidate_network, candidate_rngs, evaluate_candidate
from kss.search.setup import SearchSetup
from kss.space import ops
from kss.space.cost import CostTable, measure_cost
from kss.space.genotype import Genotype, op_names, sample_genotype
from kss.space.network import ModelSpec, SeqBatchNorm2d, build_network
from kss.space.neurons import NeuronSpec
from kss.space.params import count_params

SPEC = ModelSpec(in_channels=3, image_size=16, c1=4, c2=8, population=20, hidden=16, timesteps=3, dropout=0.0)


def dilated(channels: int, neuron: NeuronSpec, per_step: bool, kernel) -> nn.Module:
    conv = nn.Conv2d(channels, channels, 3, padding=2, dilation=2, bias=False)
    return nn.Sequential(neuron.make("m"), nn.Sequential(layer.SeqToANNContainer(conv),
                                                         SeqBatchNorm2d(channels, per_step, owns_input=True)))


DILATED = ops.Op("dilconv3", build=dilated, params=lambda c, k: c * c * 9 + 2 * c, neurons=1,
                 export=lambda built: {"lifs": plain_neuron(built[0]), "convs": folded(built[1][0][0], built[1][1])})


@pytest.fixture
def dilated_op():
    ops.register(DILATED)
    try:
        yield DILATED.name
    finally:
        ops.unregister(DILATED.name)


def with_dilated(cell_type="forward") -> Genotype:
    """A cell with the new op on two edges, a conv and a pool."""
    return Genotype.from_json({"cell_type": cell_type, "edges": {
        "0->1": "dilconv3", "0->2": "conv3", "1->2": "avgpool3", "0->3": "skip", "1->3": "zero", "2->3": "dilconv3"}})


def test_a_registered_op_is_sampled_and_removed_again(dilated_op):
    assert op_names([1, 3]) == ("zero", "skip", "conv1", "conv3", "avgpool3", "dilconv3")
    rng = np.random.default_rng(0)
    drawn = [op for _ in range(50) for _, _, op in sample_genotype(rng, [1, 3], "forward").edges()]
    assert drawn.count("dilconv3") > 5  # one op in six: it is drawn like the others
    ops.unregister(dilated_op)
    try:
        assert op_names([1, 3]) == ("zero", "skip", "conv1", "conv3", "avgpool3")
        with pytest.raises(Exception, match="unknown op 'dilconv3'"):
            Genotype.from_json(with_dilated().to_json())
    finally:
        ops.register(DILATED)


def test_the_sampler_without_the_new_op_draws_what_it_always_drew(dilated_op):
    ops.unregister(dilated_op)
    try:
        first = [str(sample_genotype(np.random.default_rng(seed), [3, 5], "backward")) for seed in range(20)]
    finally:
        ops.register(DILATED)
    ops.unregister(dilated_op)
    try:  # registering and removing an op leaves the vocabulary, and so the draws, as they were
        assert [str(sample_genotype(np.random.default_rng(seed), [3, 5], "backward")) for seed in range(20)] == first
    finally:
        ops.register(DILATED)


@pytest.mark.parametrize("neuron", [NeuronSpec(), NeuronSpec(kind="plif")])
def test_a_registered_op_is_built_and_counted(dilated_op, neuron):
    net = build_network(with_dilated(), SPEC, neuron)
    edge = net.cell1.ops["0->1"][1][0][0]
    assert isinstance(edge, nn.Conv2d) and edge.dilation == (2, 2)
    assert count_params(with_dilated(), SPEC, neuron) == sum(p.numel() for p in net.parameters())


def test_a_registered_op_is_scored_and_costed(dilated_op):
    setup = SearchSetup(kernel_set="set3", kernels=[3, 5], iters=1, seed=0, dataset="synthetic", spec=SPEC,
                        neuron=NeuronSpec(), batch_size=16, cost_every=True)
    images = [torch.rand(16, 3, 16, 16, generator=torch.Generator().manual_seed(r)) for r in range(2)]
    record = evaluate_candidate(setup, 0, images, torch.device("cpu"), genotype=with_dilated())
    assert record["status"] == "scored" and np.isfinite(record["score"])
    assert record["params"] == count_params(with_dilated(), SPEC, NeuronSpec())
    net = candidate_network(setup, with_dilated(), candidate_rngs(0, 0)[1], torch.device("cpu"))  # as it was scored
    cost = measure_cost(net, images[0], CostTable(), batch_statistics=True)
    # the dilated conv is fed by spikes: its accumulates are counted as synaptic operations, no MACs
    dilated_layers = {k: v for k, v in cost["layer_ops"].items() if k.startswith(("cell1.ops.0->1", "cell2.ops.2->3"))}
    assert dilated_layers and all(v["macs"] == 0 for v in dilated_layers.values())
    assert record["sops"] == pytest.approx(cost["sops"]) and cost["sops"] > 0


def test_a_registered_op_is_exported_to_nir(dilated_op, tmp_path):
    import nir

    torch.manual_seed(3)
    net = build_network(with_dilated(), SPEC, NeuronSpec())
    for m in net.modules():  # trained-like BN statistics, so the spiking layers fire
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 3)
            m.bias.data.uniform_(-0.3, 1.0)
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2)
    net.pooled_linear.weight.data *= 300
    net.eval()
    images = torch.randn(16, 3, 16, 16)
    with torch.no_grad():
        ours = net(images)
    graph = to_nir(net, images, tmp_path / "model.nir")
    dilations = {tuple(node.dilation) for name, node in graph.nodes.items() if name.startswith("cell1_convs")}
    assert dilations == {(1, 1), (2, 2)}  # conv3 and the dilated conv, each as itself
    assert set(nir.read(str(tmp_path / "model.nir")).nodes) == set(graph.nodes)
    torch.testing.assert_close(run_graph(tmp_path / "model.nir", images, SPEC.timesteps), ours, rtol=0, atol=1e-5)
