"""One candidate: drawn (or given), counted, built, scored and costed from (seed, index) alone."""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from kss.search.score import score_network
from kss.search.setup import SearchSetup
from kss.space.cost import candidate_figures, measure_cost
from kss.space.genotype import Genotype, sample_genotype
from kss.space.network import scoring_network
from kss.space.params import count_params


def candidate_rngs(seed: int, index: int) -> tuple[np.random.Generator, int]:
    """Independent streams for candidate `index`: one to sample the genotype, one seed for torch init."""
    sample_seq, init_seq = np.random.SeedSequence([seed, index]).spawn(2)
    return np.random.default_rng(sample_seq), int(init_seq.generate_state(1, np.uint64)[0] % 2**63)


def evaluate_candidate(setup: SearchSetup, index: int, batches: list[torch.Tensor], device, fused_blocks: bool = False,
                       genotype: Genotype | None = None) -> dict:
    """One line of candidates.jsonl: candidate `index` drawn by SNASNet's sampler, or `genotype` (a guided
    strategy's choice), initialised from (seed, index) either way.

    The random search skips a candidate over budget.max_params before it is built; a guided one scores it
    (its sampler learns from it) and records it over budget. A candidate over an energy or SOP budget is
    filtered after scoring (its cost needs a forward pass) and keeps its score.
    """
    start = time.perf_counter()
    rng, init_seed = candidate_rngs(setup.seed, index)
    if genotype is None:
        genotype = sample_genotype(rng, setup.kernels, setup.spec.cell_type)
    params = count_params(genotype, setup.spec, setup.neuron)
    record = {"index": index, "genotype": genotype.to_json(), "params": params}
    over_params = setup.max_params is not None and params > setup.max_params
    if over_params and setup.strategy == "random":
        return record | {"status": "over_budget", "score": None, "raw_score": None, **candidate_figures(None),
                         "exceeds": "max_params", "seconds": time.perf_counter() - start}
    net = candidate_network(setup, genotype, init_seed, device)
    score = score_network(net, batches, setup.score, fused_blocks, setup.precision, setup.layout, setup.cudnn_benchmark,
                          setup.carry_state)
    status = "scored" if math.isfinite(score) else "non_finite"
    cost, exceeds = None, None
    if status == "scored" and (setup.cost_every or setup.cost_budgets()):
        cost = measure_cost(net, batches[0], setup.cost, batch_statistics=True)
        exceeds = setup.exceeded(cost)
    if status == "scored" and over_params:
        exceeds = "max_params"
    return record | {
        "status": "over_budget" if exceeds else status,
        "score": score if status == "scored" else None,
        "raw_score": None if status == "scored" else repr(score),
        **candidate_figures(cost),
        "exceeds": exceeds,
        "seconds": time.perf_counter() - start,
    }


def candidate_network(setup: SearchSetup, genotype: Genotype, init_seed: int, device):
    """Candidate i's network, initialised from its own seed (so it can be rebuilt exactly)."""
    torch.manual_seed(init_seed)
    return scoring_network(genotype, setup.spec, setup.neuron).to(device)


def winner_cost(setup: SearchSetup, best: dict, batch: torch.Tensor, device) -> dict:
    """The best candidate's cost per image at initialisation, on the first scoring batch, with BN
    on batch statistics as the score sees it (training changes the firing rates: metrics.json
    has the trained network's cost on the test set)."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        net = candidate_network(setup, Genotype.from_json(best["genotype"]), candidate_rngs(setup.seed, best["index"])[1], device)
        return measure_cost(net, batch.to(device), setup.cost, batch_statistics=True)
