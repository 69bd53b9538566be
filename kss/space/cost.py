"""What an architecture costs per image: synaptic operations, MACs, firing rates, energy, memory.

One forward pass over a batch, counted by spikingjelly's op counters (`op_counter`):
- `SynOpCounter`: accumulates of convolutions and linears fed by binary spikes, one per spike
  and outgoing synapse (padding-aware), i.e. what an event-driven chip executes;
- `MACCounter`: multiply-accumulates of layers fed by analog values: the stem conv on the image
  (computed once per image: the image is the same at every timestep, direct encoding).
BatchNorm is not counted: at inference it folds into the conv before it (or, on a node sum,
into the conv edges that feed it). Node sums, 3x3 average-pool edges and neuron updates are not
counted either, the usual convention of SNN energy estimates (e.g. Spikformer, SEW-ResNet).

Own code, where spikingjelly's counters do not fit this network:
- the classifier's first Linear reads average-pooled spikes, which are not binary, so MACCounter
  would count it as dense MACs. Pooling is linear: Linear(AvgPool(s)) is a Linear over the spikes
  s themselves (each weight shared by its pooling window), so a chip does one accumulate per
  spike and output neuron: SOPs = (spikes into the pool) x hidden, counted from the Linear's input;
- firing rates and neuron counts come from spikingjelly's `monitor.OutputMonitor`;
- neuron-state memory: one membrane potential per LIF neuron (`state_bytes` each), plus, in
  backward cells, the node values fed back to the next timestep.

Energy = MACs x E_MAC + SOPs x E_AC with a configurable table; the default is the common 45 nm
figure (32-bit float: E_MAC = 4.6 pJ, E_AC = 0.9 pJ; Horowitz, ISSCC 2014), the same as
spikingjelly's `SimpleEnergyCostConfig.fp32()`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass

import torch
from spikingjelly.activation_based import monitor
from spikingjelly.activation_based.neuron import BaseNode
from spikingjelly.activation_based.op_counter import DispatchCounterMode, MACCounter, SynOpCounter
from torch import nn

from kss.errors import KssError
from kss.space.params import memory_bytes
from kss.deploy.quantize import Int8Weight

SOURCE = "Horowitz, ISSCC 2014, 45 nm, 32-bit float: E_MAC = FMult + FAdd, E_AC = FAdd"
# the figures a search writes per candidate (candidates.jsonl); all of them (COST_KEYS) go to search.json
CANDIDATE_KEYS = ("sops", "energy_uj", "firing_rate")
COST_KEYS = ("sops", "macs", "energy_uj", "energy_mac_uj", "energy_sop_uj", "firing_rate", "spikes", "neurons",
             "neuron_state_bytes", "memory_fp32_bytes", "memory_int8_bytes", "timesteps", "cost_images", "cost_bn",
             "cost_table", "firing_rates", "layer_ops")


@dataclass
class CostTable:
    e_mac_pj: float = 4.6  # energy of one multiply-accumulate (analog input), pJ
    e_ac_pj: float = 0.9  # energy of one accumulate (a spike through a synapse), pJ
    state_bytes: int = 4  # bytes per membrane potential (fp32)

    def __post_init__(self):
        for name in ("e_mac_pj", "e_ac_pj"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise KssError(f"cost.{name} must be a number >= 0 (got {value})")
        if not isinstance(self.state_bytes, int) or self.state_bytes < 1:
            raise KssError(f"cost.state_bytes must be a positive integer (got {self.state_bytes})")


@torch.no_grad()
def measure_cost(net: nn.Module, images: torch.Tensor, table: CostTable | None = None,
                 batch_statistics: bool = False) -> dict:
    """Cost per image of `net` (a kss SNASNet) on `images` [B, C, H, W], averaged over the batch.

    batch_statistics=False: inference as deployed (BN running statistics, dropout off).
    True: BN normalises with the batch's statistics, as the R-score sees an untrained candidate
    (its running statistics are still the initial 0/1); running statistics are left untouched.
    """
    table = table or CostTable()
    device = next(net.parameters()).device
    images = images.to(device)
    batch = images.shape[0]
    was_training = {m: m.training for m in net.modules()}
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    tracked = {m: m.track_running_stats for m in norms}
    net.eval()
    if batch_statistics:
        for m in norms:
            m.train()
            m.track_running_stats = False  # normalise with the batch, update nothing

    pooled = net.pooled_linear  # Linear over average-pooled spikes (see the module docstring)
    pooled_inputs = []
    hook = pooled.register_forward_pre_hook(lambda m, args: pooled_inputs.append(args[0].sum(dtype=torch.float64).item()))
    spikes, steps, neurons = defaultdict(float), defaultdict(int), {}

    def on_output(s: torch.Tensor):
        return s.sum(dtype=torch.float64).item(), s.shape[0], math.prod(s.shape[2:])

    recorder = monitor.OutputMonitor(net, BaseNode, function_on_output=on_output)
    ignore = [nn.BatchNorm2d]
    synops, macs = SynOpCounter(extra_ignore_modules=ignore), MACCounter(extra_ignore_modules=ignore)
    try:
        with DispatchCounterMode([synops, macs]):
            net(images)
        for name in recorder.monitored_layers:
            for count, t, n in recorder[name]:  # one record per call (a backward cell's op: one per timestep)
                spikes[name] += count
                steps[name] += t
                neurons[name] = n
    finally:
        recorder.remove_hooks()
        hook.remove()
        for m, mode in was_training.items():
            m.training = mode
        for m, value in tracked.items():
            m.track_running_stats = value

    root = type(net).__name__
    layer_ops = {}
    for name, module in net.named_modules():
        if not isinstance(module, (nn.Conv2d, nn.Linear, Int8Weight)):
            continue
        scope = f"{root}.{name}"
        if module is pooled:
            ops = {"sops": sum(pooled_inputs) * net.spec.sap ** 2 * module.out_features, "macs": 0}
        else:
            ops = {"sops": sum(synops.records.get(scope, {}).values()),
                   "macs": sum(macs.records.get(scope, {}).values())}
        layer_ops[name] = {k: v / batch for k, v in ops.items()}
    sops = sum(v["sops"] for v in layer_ops.values())
    mac_count = sum(v["macs"] for v in layer_ops.values())
    total_spikes = sum(spikes.values())
    neuron_steps = sum(steps[n] * neurons[n] for n in neurons) * batch
    membranes = sum(neurons.values())
    state_values = membranes + feedback_values(net)
    params = sum(p.numel() for p in net.parameters()) + sum(m.weight_int8.numel() for m in net.modules()
                                                           if isinstance(m, Int8Weight))
    return {
        "sops": sops,
        "macs": mac_count,
        "energy_uj": (mac_count * table.e_mac_pj + sops * table.e_ac_pj) / 1e6,
        "energy_mac_uj": mac_count * table.e_mac_pj / 1e6,
        "energy_sop_uj": sops * table.e_ac_pj / 1e6,
        "firing_rate": total_spikes / neuron_steps if neuron_steps else 0.0,
        "spikes": total_spikes / batch,
        "neurons": membranes,
        "neuron_state_bytes": state_values * table.state_bytes,
        **memory_bytes(params),
        "timesteps": net.spec.timesteps,
        "cost_images": batch,
        "cost_bn": "batch statistics" if batch_statistics else "running statistics",
        "cost_table": cost_table_record(table),
        "firing_rates": {n: spikes[n] / (steps[n] * neurons[n] * batch) for n in neurons},
        "layer_ops": layer_ops,
    }


def cost_table_record(table: CostTable) -> dict:
    return {**asdict(table), "source": SOURCE}


def feedback_values(net: nn.Module) -> int:
    """Values a backward cell holds from one timestep to the next: one map per node fed back to."""
    spec, total = net.spec, 0
    for cell, channels, side in ((net.cell1, spec.c1, spec.cell1_size), (net.cell2, spec.c2, spec.cell2_size)):
        targets = {j for i, j in cell.edges if i > j}
        total += len(targets) * channels * side * side
    return total


def first_images(loader, count: int) -> torch.Tensor:
    """The first `count` images a loader yields (all of them when it has fewer)."""
    if not isinstance(count, int) or count < 1:
        raise KssError(f"cost.images must be a positive integer (got {count})")
    taken, total = [], 0
    for images, _ in loader:
        taken.append(images[: count - total])
        total += len(taken[-1])
        if total >= count:
            break
    return torch.cat(taken)


def candidate_figures(cost: dict | None) -> dict:
    """The per-candidate subset (candidates.jsonl): null when not measured."""
    return {key: (cost or {}).get(key) for key in CANDIDATE_KEYS}


