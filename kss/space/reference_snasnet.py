"""An independent transcription of SNASNet's reference forward pass and R-score, at its final commit.

Reference: GitHub Intelligent-Computing-Lab-Yale/Neural-Architecture-Search-for-Spiking-Neural-Networks,
final commit 498040912ccf9634a137bdade47689d335dce2c8 (2022-07-19): `model_snn.py` as of 5114ff9d52,
`searchcells/search_cell_snn.py` and `config.py` as first uploaded (6534c37cb4). Written from that code's
semantics, not from kss: single-step spikingjelly neurons, a Python loop over timesteps, every
BatchNorm called once per timestep, spikingjelly's `layer.Dropout`, the reference's cell wiring
(`x_i + last_x_i` into every edge out of node i, feedback computed after the forward edges), and its
K hook on every LIF call (float32 on the device, summed into a float64 numpy array,
`np.linalg.slogdet(K / calls)`). Comments marked "first upload:" say where the first upload
(6534c37cb4, 2022-01-23) differs; an unpinned copy of the repository may be that one.

Generalised only where kss generalises the reference: the two conv kernels of a kernel set (op 2 =
the smaller, op 3 = the larger), widths (the final code's `first_out_channel * channel_ratio`: 256/512
for CIFAR-10, 128/256 for CIFAR-100 and TinyImageNet), image size, stem stride, timesteps, `sap`.
Everything is NCHW and single-step, as in the reference; tests/space/test_equivalence.py holds kss's
multi-step network to it, and tests/space/test_reference_code.py holds both to SNASNet's own code.
"""

from __future__ import annotations

import numpy as np
import torch
from spikingjelly.activation_based import functional, layer, neuron, surrogate
from torch import nn

NODES = 4
OP_CODES = {"zero": 0, "skip": 1, "avgpool3": 4}  # conv codes: 2 = kernel A, 3 = kernel B


def con_mat(genotype, kernels) -> torch.Tensor:
    """A kss genotype as the reference's 4x4 op-code matrix (rows = from-node)."""
    small, large = sorted(kernels)
    codes = OP_CODES | {f"conv{small}": 2, f"conv{large}": 3}
    return torch.tensor([[codes[op] for op in row] for row in genotype.ops])


def lif(tau: float) -> neuron.LIFNode:
    return neuron.LIFNode(v_threshold=1.0, v_reset=0.0, tau=tau, surrogate_function=surrogate.ATan(),
                          detach_reset=True, step_mode="s")


class Zero(nn.Module):
    def forward(self, x):
        return x * torch.tensor(0.0)


def edge_op(code: int, channels: int, kernels, tau: float) -> nn.Module:
    if code == 0:
        return Zero()
    if code == 1:
        return nn.Identity()
    if code == 4:
        return nn.AvgPool2d(kernel_size=3, stride=1, padding=1)
    k = sorted(kernels)[code - 2]
    return nn.Sequential(lif(tau), nn.Conv2d(channels, channels, k, padding=k // 2, bias=False),
                         nn.BatchNorm2d(channels))


# The order in which a cell lists its ops (`cell_architecture`, `cell_architecture_back`), column by column:
FORWARD_EDGES = [(row, col) for col in range(1, NODES) for row in range(col)]  # 0->1, 0->2, 1->2, 0->3, 1->3, 2->3
BACK_EDGES = [(row, col) for col in range(NODES - 1) for row in range(col + 1, NODES)]  # 1->0, 2->0, 3->0, 2->1, ...


class ReferenceCell(nn.Module):
    """Neuronal_Cell / Neuronal_Cell_backward: one timestep per call, feedback kept in attributes."""

    def __init__(self, mat: torch.Tensor, channels: int, kernels, tau: float, backward: bool):
        super().__init__()
        self.backward = backward
        self.cell_architecture = nn.ModuleList(edge_op(int(mat[r, c]), channels, kernels, tau) for r, c in FORWARD_EDGES)
        if backward:
            self.cell_architecture_back = nn.ModuleList(
                edge_op(int(mat[r, c]), channels, kernels, tau) for r, c in BACK_EDGES)
        self.reset()

    def reset(self):
        self.last = [0.0, 0.0, 0.0]  # last_xin, last_x1, last_x2

    def forward(self, x_in):
        op = dict(zip(FORWARD_EDGES, self.cell_architecture))
        last = self.last if self.backward else [0.0, 0.0, 0.0]
        if self.backward:
            node = [x_in + last[0]]
        else:
            node = [x_in]
        x1 = op[(0, 1)](node[0])
        n1 = x1 + last[1] if self.backward else x1
        x2 = op[(0, 2)](node[0]) + op[(1, 2)](n1)
        n2 = x2 + last[2] if self.backward else x2
        x3 = op[(0, 3)](node[0]) + op[(1, 3)](n1) + op[(2, 3)](n2)
        if self.backward:
            back = dict(zip(BACK_EDGES, self.cell_architecture_back))
            new_in = back[(1, 0)](n1) + back[(2, 0)](n2) + back[(3, 0)](x3)
            new_1 = back[(2, 1)](n2) + back[(3, 1)](x3)
            new_2 = back[(3, 2)](x3)
            self.last = [new_in, new_1, new_2]
        return x3


class ReferenceSNASNet(nn.Module):
    def __init__(self, genotype, kernels, *, in_channels, image_size, num_classes, c1, c2, population, hidden,
                 sap, timesteps, dropout, tau=4.0 / 3.0, stem_stride=1):
        super().__init__()
        mat = con_mat(genotype, kernels)
        backward = genotype.cell_type == "backward"
        self.timesteps, self.cluster = timesteps, population // num_classes
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c1, 3, stride=stem_stride, padding=1, bias=False),
                                  nn.BatchNorm2d(c1))
        self.cell1 = ReferenceCell(mat, c1, kernels, tau, backward)
        self.downconv1 = nn.Sequential(nn.BatchNorm2d(c1), lif(tau), nn.Conv2d(c1, c2, 3, padding=1, bias=False),
                                       nn.BatchNorm2d(c2))
        self.resdownsample1 = nn.AvgPool2d(2, 2)
        self.cell2 = ReferenceCell(mat, c2, kernels, tau, backward)
        self.last_act = nn.Sequential(nn.BatchNorm2d(c2), lif(tau))
        self.resdownsample2 = nn.AvgPool2d(sap, sap)
        # img_size // spatial_decay, spatial_decay = 2 * sap (CIFAR) or 4 * sap (TinyImageNet's stride-2 stem)
        side = image_size // (2 * stem_stride * sap)
        self.classifier = nn.Sequential(layer.Dropout(dropout), nn.Linear(c2 * side * side, hidden, bias=False),
                                        lif(tau), nn.Linear(hidden, population))
        self.boost = nn.AvgPool1d(self.cluster, self.cluster)

    def neuron_init(self):
        """Called at the start of every forward: only the cells' feedback is zeroed. Membranes and the
        dropout mask live on until `reset_net` (after every training/validation batch in search_snn.py;
        never between the scoring repeats of one candidate).
        first upload: also set every LIF's v to 0 and every dropout mask to None here."""
        for cell in (self.cell1, self.cell2):
            cell.reset()

    def forward(self, images):
        self.neuron_init()
        acc = 0
        static = self.stem(images)
        for _ in range(self.timesteps):
            x = self.cell1(static)
            x = self.resdownsample1(self.downconv1(x))
            x = self.cell2(x)
            x = self.resdownsample2(self.last_act(x))
            x = self.classifier(x.view(images.shape[0], -1))
            acc = acc + self.boost(x.unsqueeze(1)).squeeze(1)
        return acc / self.timesteps


def reset_net(net: nn.Module) -> None:
    """search_snn.py's `reset_net(model)` after each training and validation batch (final code only)."""
    functional.reset_net(net)


def reference_score(net: ReferenceSNASNet, batches) -> float:
    """SNASNet's find_best_neuroncell scoring of one candidate: a K hook on every LIF call.

    The candidate is a fresh network; one repeat per batch, with nothing reset in between (neuron_init
    zeroes only the feedback), so the second repeat starts from the membranes and dropout mask the
    first left. first upload: every forward reset them (neuron_init).
    """
    state = {}

    def hook(module, inputs, out):
        out = out.view(out.size(0), -1)
        b, n = out.size()
        x = (out > 0).float()
        full = torch.ones((b, b), device=x.device) * n
        sparsity = (x.sum(1) / n).unsqueeze(1)
        # first upload: without the trailing * n (the expected distance as a fraction, K ~ N/2)
        norm = ((sparsity @ (1 - sparsity.t())) + ((1 - sparsity) @ sparsity.t())) * n
        rescale = torch.div(0.5 * torch.ones((b, b), device=x.device), norm + 1e-3)
        k10 = x @ (1 - x.t())
        k01 = (1 - x) @ x.t()
        state["K"] = state["K"] + (full - rescale * (k01 + k10)).cpu().numpy()
        state["calls"] += 1

    reset_net(net)  # a fresh candidate: at rest, no dropout mask yet
    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, neuron.LIFNode)]
    scores = []
    try:
        with torch.no_grad():
            net.train()
            for images in batches:
                state["K"], state["calls"] = np.zeros((images.shape[0], images.shape[0])), 0
                net(images)
                scores.append(np.linalg.slogdet(state["K"] / state["calls"])[1])
    finally:
        for h in handles:
            h.remove()
    return float(np.mean(scores))


def load_from_kss(ref: nn.Module, kss_net) -> list[tuple[nn.Module, nn.Module]]:
    """Copy kss's weights and BN state into the reference (this transcription, or SNASNet's own
    `model_snn.SNASNet`: the same module names); return the (reference, kss) LIF pairs."""
    pairs = []

    def conv_op(ref_op, kss_op):
        ref_op[1].load_state_dict(kss_op[1][0][0].state_dict())  # Sequential(SeqToANN(conv), BN)
        ref_op[2].load_state_dict(kss_op[1][1].state_dict())
        pairs.append((ref_op[0], kss_op[0]))

    ref.stem.load_state_dict(kss_net.stem.state_dict())
    for ref_cell, kss_cell in ((ref.cell1, kss_net.cell1), (ref.cell2, kss_net.cell2)):
        for edges, ops in ((FORWARD_EDGES, ref_cell.cell_architecture),
                           (BACK_EDGES, getattr(ref_cell, "cell_architecture_back", []))):
            for (i, j), ref_op in zip(edges, ops):
                if isinstance(ref_op, nn.Sequential):
                    conv_op(ref_op, kss_cell.ops[f"{i}->{j}"])
        if ref_cell is ref.cell1:
            down = kss_net.down
            ref.downconv1[0].load_state_dict(down[0].state_dict())
            ref.downconv1[2].load_state_dict(down[2][0][0].state_dict())
            ref.downconv1[3].load_state_dict(down[2][1].state_dict())
            pairs.append((ref.downconv1[1], down[1]))
    ref.last_act[0].load_state_dict(kss_net.head[0].state_dict())
    pairs.append((ref.last_act[1], kss_net.head[1]))
    ref.classifier[1].load_state_dict(kss_net.head[4].state_dict())
    ref.classifier[3].load_state_dict(kss_net.head[6].state_dict())
    pairs.append((ref.classifier[2], kss_net.head[5]))
    return pairs


def spike_flips(net, ref: ReferenceSNASNet, pairs, images: torch.Tensor, seed: int = 5):
    """One forward of each in train mode, the same dropout masks: (spikes that differ, all spikes,
    per-timestep reference spikes of the last LIF layer, kss logits, reference logits)."""
    ref_store = {id(r): [] for r, _ in pairs}
    kss_store = {id(k): [] for _, k in pairs}

    def keep(store, per_step):
        return lambda module, inputs, out: store[id(module)].extend(per_step(out.detach()))

    hooks = [r.register_forward_hook(keep(ref_store, lambda out: [out.clone()])) for r, _ in pairs]
    hooks += [k.register_forward_hook(keep(kss_store, lambda out: [s.clone() for s in out])) for _, k in pairs]
    try:
        with torch.no_grad():
            net.train(), ref.train()
            reset_net(ref)  # a forward as search_snn.py's loops make it: from rest, a fresh dropout mask
            torch.manual_seed(seed)
            ref_logits = ref(images)
            torch.manual_seed(seed)
            kss_logits = net(images)
    finally:
        for h in hooks:
            h.remove()
    flips = total = 0
    for r, k in pairs:
        a, b = ref_store[id(r)], kss_store[id(k)]
        if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b)):
            raise AssertionError(f"spike records differ in shape: {len(a)} vs {len(b)} timesteps")
        flips += sum(int((x != y).sum()) for x, y in zip(a, b))
        total += sum(x.numel() for x in a)
    return flips, total, torch.stack(ref_store[id(pairs[-1][0])]), kss_logits, ref_logits
