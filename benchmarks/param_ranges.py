"""Parameter ranges of the search space per model preset and kernel set (README table).

    python benchmarks/param_ranges.py                 # 2000 sampled candidates per cell
    python benchmarks/param_ranges.py --samples 500 --cell-type backward

Analytic counts (kss.space.params, Eq. 2) of candidates drawn exactly as the search draws them, with
each preset at its dataset's input (CIFAR 32x32x3, TinyImageNet 64x64x3); the floor is the smallest
network the space can build.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np
from common import model_spec

from kss.names import KERNEL_SETS
from kss.space.genotype import sample_genotype
from kss.space.network import ModelSpec
from kss.space.neurons import NeuronSpec
from kss.space.params import count_params, smallest_genotype

PRESETS = {"snasnet_cifar10": "cifar10", "snasnet_cifar100": "cifar100", "snasnet_tinyimagenet": "tinyimagenet",
           "paper_cifar10": "cifar10", "paper_cifar100": "cifar100"}  # conf/model preset: the dataset it is for


def param_range(spec: ModelSpec, neuron: NeuronSpec, kernels: Sequence[int], samples: int = 2000,
                seed: int = 0) -> dict[str, int]:
    """Min / median / max parameters over `samples` genotypes drawn as the search draws them."""
    if samples < 1:
        raise SystemExit(f"samples must be >= 1 (got {samples})")
    rng = np.random.default_rng(seed)
    counts = [count_params(sample_genotype(rng, kernels, spec.cell_type), spec, neuron) for _ in range(samples)]
    return {"min": int(np.min(counts)), "median": int(np.median(counts)), "max": int(np.max(counts))}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--cell-type", default="forward", choices=["forward", "backward"])
    args = parser.parse_args()
    print(f"| preset | floor | {' | '.join(f'{name} {KERNEL_SETS[name]}' for name in KERNEL_SETS)} |")
    print(f"|---|---|{'---|' * len(KERNEL_SETS)}")
    for name, dataset in PRESETS.items():
        spec = model_spec(name, dataset, cell_type=args.cell_type)
        floor = count_params(smallest_genotype(args.cell_type), spec, NeuronSpec())
        cells = []
        for kernels in KERNEL_SETS.values():
            r = param_range(spec, NeuronSpec(), kernels, samples=args.samples)
            cells.append(f"{r['min'] / 1e6:.1f} / {r['median'] / 1e6:.1f} / {r['max'] / 1e6:.1f}")
        print(f"| `{name}` (sap={spec.sap}) | {floor / 1e6:.2f}M | {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    main()
