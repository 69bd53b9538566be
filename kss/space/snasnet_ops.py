"""SNASNet's ops, registered in SNASNet's order (the sampler's vocabulary): zero, skip, the conv family
(one op per kernel of the kernel set), 3x3 average pool. A conv op is LIF -> Conv(k x k) -> BN."""

from __future__ import annotations

from torch import nn

from kss.deploy.export import folded, plain_neuron
from kss.space.network import SeqAvgPool, conv_bn
from kss.space.ops import Op, conv_bn_params, register

register(Op("zero", build=None, params=lambda c, k: 0))
register(Op("skip", build=lambda c, neuron, per_step, k: nn.Identity(), params=lambda c, k: 0,
            export=lambda built: {}))  # an edge: the node value itself
register(Op("conv", per_kernel=True, neurons=1,
            build=lambda c, neuron, per_step, k: nn.Sequential(neuron.make("m"), conv_bn(c, c, k, per_step)),
            params=lambda c, k: conv_bn_params(c, c, k),
            export=lambda built: {"lifs": plain_neuron(built[0]), "convs": folded(built[1][0][0], built[1][1])}))
register(Op("avgpool3", build=lambda c, neuron, per_step, k: SeqAvgPool(3, stride=1, padding=1), params=lambda c, k: 0,
            export=lambda built: {"pools": nn.AvgPool2d(3, stride=1, padding=1)}))
