import json

import pytest
import torch
from spikingjelly.activation_based.op_counter import SimpleEnergyCostConfig

from kss.space.cost import CostTable, measure_cost
from kss.errors import KssError
from kss.space.genotype import Genotype, load_genotype
from kss.space.network import ModelSpec, build_network
from kss.space.neurons import NeuronSpec
from kss.search.records import CANDIDATES, SUMMARY
from kss.tasks.search import run_search

ONE_CONV = {"cell_type": "forward", "edges": {"0->1": "zero", "0->2": "zero", "1->2": "zero", "0->3": "conv3",
                                              "1->3": "zero", "2->3": "zero"}}
SPEC = dict(in_channels=1, image_size=8, num_classes=10, c1=2, c2=3, population=10, hidden=4, sap=2, timesteps=2,
            dropout=0.0)


def valid_taps(side: int, k: int) -> int:
    """Kernel taps that land inside a side x side map, summed over the output positions (zero padding k//2)."""
    p = k // 2
    return (side * k - p * (p + 1)) ** 2


def forced_network(down_fires: bool = True, **spec):
    """A network whose every spiking layer fires at every neuron and timestep (or, for the LIF
    before the downsampling conv, never): BN with weight 0 and bias +-10 drives the LIF inputs."""
    torch.manual_seed(0)
    net = build_network(Genotype.from_json(ONE_CONV), ModelSpec(**{**SPEC, **spec}), NeuronSpec(), channels_last=False)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.zeros_(m.weight)
            torch.nn.init.constant_(m.bias, 10.0)
    if not down_fires:
        torch.nn.init.constant_(net.down[0].bias, -10.0)
    torch.nn.init.constant_(net.head[4].weight, 1.0)  # the hidden LIF fires every step too
    return net


def hand_count(spec: dict, down_fires: bool = True) -> dict:
    s = {**SPEC, **spec}
    T, side, side2 = s["timesteps"], s["image_size"], s["image_size"] // 2
    cell1 = T * s["c1"] * s["c1"] * valid_taps(side, 3)  # conv3 edge 0->3, every input neuron spiking
    down = T * s["c1"] * s["c2"] * valid_taps(side, 3) if down_fires else 0
    cell2 = T * s["c2"] * s["c2"] * valid_taps(side2, 3)
    head = T * s["c2"] * side2 * side2 * s["hidden"]  # every spike into the pool reaches every hidden neuron
    out = T * s["hidden"] * s["population"]
    macs = side * side * s["c1"] * 9 * s["in_channels"]  # the stem, once per image
    return {"sops": cell1 + down + cell2 + head + out, "macs": macs}


@pytest.mark.parametrize("down_fires", [True, False])
def test_synaptic_operations_equal_the_hand_count(down_fires):
    net = forced_network(down_fires)
    cost = measure_cost(net, torch.randn(3, 1, 8, 8))
    expected = hand_count({}, down_fires)
    assert cost["sops"] == expected["sops"]  # 11944 when all fire, 6136 without the downsampling spikes
    assert cost["macs"] == expected["macs"] == 1152
    rates = cost["firing_rates"]
    assert rates["down.1"] == (1.0 if down_fires else 0.0)
    assert all(rate == 1.0 for name, rate in rates.items() if name != "down.1")
    # every spiking layer's neurons, per image: 2 LIFs over 2x8x8 (cell 1 edge, down), 2 over 3x4x4, the hidden 4
    assert cost["neurons"] == 2 * 128 + 2 * 48 + 4
    assert cost["neuron_state_bytes"] == 4 * cost["neurons"]
    assert cost["spikes"] == pytest.approx(2 * (cost["neurons"] - (0 if down_fires else 128)))


def test_pooled_linear_counts_like_spikingjelly_where_its_input_is_binary():
    """With sap=1 the classifier's Linear reads the spikes themselves, so spikingjelly's SynOpCounter
    counts it; the pooled-input rule must give the same number there."""
    from spikingjelly.activation_based.op_counter import DispatchCounterMode, SynOpCounter

    torch.manual_seed(1)
    net = build_network(load_genotype("snasnet_cifar10"), ModelSpec(**{**SPEC, "sap": 1, "cell_type": "backward"}), NeuronSpec(),
                        channels_last=False)
    for m in net.modules():  # some of the spiking neurons fire, not all
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.constant_(m.weight, 2.0)
            torch.nn.init.constant_(m.bias, 0.5)
    net.eval()
    images = torch.randn(4, 1, 8, 8)
    counter = SynOpCounter(extra_ignore_modules=[torch.nn.BatchNorm2d])
    with torch.no_grad(), DispatchCounterMode([counter]):
        net(images)
    theirs = sum(counter.records["SNASNet.head.4"].values()) / 4
    cost = measure_cost(net, images)
    assert cost["layer_ops"]["head.4"]["sops"] == theirs > 0
    assert 0 < cost["firing_rates"]["head.1"] < 1


def test_energy_follows_the_cost_table():
    net = forced_network()
    images = torch.randn(2, 1, 8, 8)
    default = measure_cost(net, images)
    counts = hand_count({})
    assert default["energy_uj"] == pytest.approx((counts["macs"] * 4.6 + counts["sops"] * 0.9) / 1e6)
    spikingjelly = SimpleEnergyCostConfig.fp32()  # the same 45 nm figures
    assert (CostTable().e_mac_pj, CostTable().e_ac_pj) == (spikingjelly.e_mac_pj, spikingjelly.e_ac_pj)
    other = measure_cost(net, images, CostTable(e_mac_pj=2.0, e_ac_pj=0.0, state_bytes=2))
    assert other["energy_uj"] == pytest.approx(counts["macs"] * 2.0 / 1e6)
    assert other["neuron_state_bytes"] == default["neuron_state_bytes"] // 2
    with pytest.raises(KssError, match="cost.e_ac_pj must be a number >= 0"):
        CostTable(e_ac_pj=-1)


@pytest.mark.parametrize("batch_statistics", [False, True])
def test_firing_rates_are_rates_and_the_network_is_left_as_it_was(batch_statistics):
    torch.manual_seed(2)
    net = build_network(load_genotype("snasnet_cifar100"), ModelSpec(**{**SPEC, "c1": 4, "c2": 8, "cell_type": "backward"}), NeuronSpec(),
                        channels_last=False)
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    cost = measure_cost(net, torch.randn(8, 1, 8, 8) * 3, batch_statistics=batch_statistics)
    assert all(0.0 <= r <= 1.0 for r in cost["firing_rates"].values()) and 0.0 < cost["firing_rate"] < 1.0
    assert net.training and all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert cost["sops"] > 0 and cost["energy_uj"] > 0


def test_backward_cells_hold_their_fed_back_node_values():
    genotype = load_genotype("snasnet_cifar10")
    net = build_network(genotype, ModelSpec(**{**SPEC, "cell_type": "backward"}), NeuronSpec(), channels_last=False)
    cost = measure_cost(net, torch.randn(2, 1, 8, 8))
    targets = len({j for i, j in net.cell1.edges if i > j})
    assert targets >= 1
    assert cost["neuron_state_bytes"] == 4 * (cost["neurons"] + targets * (2 * 8 * 8 + 3 * 4 * 4))


def lines(path):
    return [json.loads(line) for line in (path / CANDIDATES).read_text().splitlines()]


def test_search_records_the_winners_cost_and_every_candidates_with_the_switch(compose_cfg, tmp_path):
    summary = run_search(compose_cfg("iters=4"), tmp_path / "plain")
    assert summary["energy_uj"] > 0 and summary["sops"] > 0 and 0 < summary["firing_rate"] < 1
    assert summary["cost_bn"] == "batch statistics" and summary["neuron_state_bytes"] > 0
    assert all(r["energy_uj"] is None for r in lines(tmp_path / "plain"))  # off by default
    every = run_search(compose_cfg("iters=4", "cost.every_candidate=true"), tmp_path / "every")
    records = lines(tmp_path / "every")
    assert all(r["energy_uj"] is not None for r in records if r["status"] == "scored")
    best = next(r for r in records if r["index"] == every["best_index"])
    assert best["energy_uj"] == pytest.approx(every["energy_uj"]) == pytest.approx(summary["energy_uj"])


def test_an_energy_budget_filters_candidates_after_scoring(compose_cfg, tmp_path):
    free = run_search(compose_cfg("iters=6", "cost.every_candidate=true"), tmp_path / "free")
    energies = sorted(r["energy_uj"] for r in lines(tmp_path / "free") if r["status"] == "scored")
    limit = free["energy_uj"] * 0.999  # excludes the winner
    assert energies[0] < limit, "the test needs a cheaper candidate than the winner"
    bounded = run_search(compose_cfg("iters=6", f"budget.max_energy_uj={limit}"), tmp_path / "bounded")
    assert bounded["best_index"] != free["best_index"] and bounded["energy_uj"] <= limit
    over = [r for r in lines(tmp_path / "bounded") if r["status"] == "over_budget"]
    assert over and all(r["exceeds"] == "max_energy_uj" and r["energy_uj"] > limit and r["score"] is not None for r in over)
    assert bounded["candidates_over_budget"]["max_energy_uj"] == len(over) == bounded["candidates_skipped"]
    scored = sum(r["status"] == "scored" for r in lines(tmp_path / "free"))  # the rest: singular K (LAPACK's call)
    with pytest.raises(KssError, match=rf"no candidate could be scored \({scored} over budget, {6 - scored} with a "
                                       r"singular kernel, of 6\); raise budget.max_sops"):
        run_search(compose_cfg("iters=6", "budget.max_sops=1"), tmp_path / "sops")  # nothing fits


@pytest.mark.parametrize("budget", ["budget.max_energy_uj=-1", "budget.max_sops=0"])
def test_negative_cost_budgets_are_one_line(compose_cfg, tmp_path, budget):
    with pytest.raises(KssError, match=f"{budget.split('=')[0]} must be > 0") as info:
        run_search(compose_cfg(budget), tmp_path)
    assert "\n" not in str(info.value)
