"""Training step images/s, eager vs torch.compile (model.compile=true), measured in one run.

python benchmarks/compile_speed.py [--preset cpu|tiny] [--batch 128] [--steps 10]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from common import model_spec

from kss.space.genotype import load_genotype, sample_genotype
from kss.space.network import build_network
from kss.space.neurons import NeuronSpec

PRESETS = ("cpu", "tiny")  # conf/model/{cpu,tiny}.yaml at Fashion-MNIST's shape


def images_per_second(net, images, labels, steps: int) -> tuple[float, float]:
    """(seconds of the first step, i.e. compilation included; images/s over the next `steps`)."""
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)

    def step():
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(net(images), labels).backward()
        optimizer.step()

    start = time.perf_counter()
    step()
    first = time.perf_counter() - start
    step()  # a second warm-up: some graphs are specialised on the second call
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return first, steps * len(images) / (time.perf_counter() - start)


def conv_heavy_candidate():
    """The first sampled forward candidate of kernel set (3, 5) with at least 3 conv edges (typical work)."""
    rng = np.random.default_rng(0)
    while True:
        genotype = sample_genotype(rng, [3, 5], "forward")
        if sum(op.startswith("conv") for _, _, op in genotype.edges()) >= 3:
            return genotype


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu", choices=PRESETS)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--cell-type", default="forward", choices=["forward", "backward"])
    args = parser.parse_args()
    spec, neuron = model_spec(args.preset, "fashion_mnist", cell_type=args.cell_type), NeuronSpec()
    # forward: a conv-heavy candidate of kernel set (3, 5); backward: SNASNet's published CIFAR-10 cell
    genotype = load_genotype("snasnet_cifar10") if args.cell_type == "backward" else conv_heavy_candidate()
    torch.manual_seed(0)
    images = torch.rand(args.batch, spec.in_channels, spec.image_size, spec.image_size)
    labels = torch.randint(0, spec.num_classes, (args.batch,))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, preset {args.preset}, batch {args.batch}, "
          f"{args.cell_type} cell {genotype}", flush=True)
    rows = {}
    for mode in ("eager", "compiled"):
        torch.manual_seed(0)
        net = build_network(genotype, spec, neuron).train()
        if mode == "compiled":
            net.compile()
        rows[mode] = images_per_second(net, images, labels, args.steps)
        print(f"{mode:9s} first step {rows[mode][0]:6.1f} s   {rows[mode][1]:7.1f} img/s", flush=True)
    print(f"compiled / eager: {rows['compiled'][1] / rows['eager'][1]:.2f}x")


if __name__ == "__main__":
    main()
