"""Parameter ranges of the search space per model preset and kernel set (README table).

    python benchmarks/param_ranges.py                 # 2000 sampled candidates per cell
    python benchmarks/param_ranges.py --samples 500 --cell-type backward

Analytic counts (kss.space.params, Eq. 2) of candidates drawn exactly as the search draws them, with
each preset at its dataset's input (CIFAR 32x32x3, TinyImageNet 64x64x3); the floor is the smallest
network the space can build.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kss.config import KERNEL_SETS  # noqa: E402
from kss.space.network import ModelSpec  # noqa: E402
from kss.space.neurons import NeuronSpec  # noqa: E402
from kss.space.params import count_params, param_range, smallest_genotype  # noqa: E402

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"
PRESETS = {"snasnet_cifar10": (10, 32), "snasnet_cifar100": (100, 32), "snasnet_tinyimagenet": (200, 64),
           "paper_cifar10": (10, 32), "paper_cifar100": (100, 32)}


def preset(name: str) -> dict:
    fields = yaml.safe_load((CONF / f"{name}.yaml").read_text())
    for parent in fields.pop("defaults", []):
        if parent != "_self_":
            fields = preset(parent) | fields
    return fields


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--cell-type", default="forward", choices=["forward", "backward"])
    args = parser.parse_args()
    print(f"| preset | floor | {' | '.join(f'{name} {KERNEL_SETS[name]}' for name in KERNEL_SETS)} |")
    print(f"|---|---|{'---|' * len(KERNEL_SETS)}")
    for name, (classes, size) in PRESETS.items():
        fields = preset(name) | {"cell_type": args.cell_type}
        spec = ModelSpec(in_channels=3, image_size=size, num_classes=classes, **fields)
        floor = count_params(smallest_genotype(args.cell_type), spec, NeuronSpec())
        cells = []
        for kernels in KERNEL_SETS.values():
            r = param_range(spec, NeuronSpec(), kernels, samples=args.samples)
            cells.append(f"{r['min'] / 1e6:.1f} / {r['median'] / 1e6:.1f} / {r['max'] / 1e6:.1f}")
        print(f"| `{name}` (sap={spec.sap}) | {floor / 1e6:.2f}M | {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    main()
