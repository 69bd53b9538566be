"""Seconds per candidate of the R-score search: kss vs the reference transcription, in one run.

    python benchmarks/search_speed.py                       # tiny, Fashion-MNIST-sized and CIFAR-sized configs
    python benchmarks/search_speed.py --sizes tiny fashion_mnist --candidates 3

reference:  tests/reference_snasnet.py, SNASNet's forward as written: single-step neurons, a
            Python loop over timesteps, NCHW, per-timestep BN, its K hook per LIF call.
per_step:   kss as shipped (model.batch_norm=per_step): multi-step, channels-last, no-grad LIF,
            one Gram product per layer; must give the reference's spikes and R.
joint:      kss with model.batch_norm=joint (BN statistics over T x B): what per-step costs.
Also: spikes that differ between reference and per_step (flip rate), max |delta R|, and one
training step (forward + backward) in images/s for per_step vs joint.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kss.genotype import sample_genotype  # noqa: E402
from kss.network import ModelSpec, build_network, scoring_network  # noqa: E402
from kss.neurons import NeuronSpec  # noqa: E402
from kss.score import score_network  # noqa: E402
from kss.search import candidate_rngs  # noqa: E402
from tests.reference_snasnet import ReferenceSNASNet, load_from_kss, reference_score, spike_flips  # noqa: E402

SIZES = {
    # name: (model widths, image size, channels, search batch)
    "tiny": (dict(c1=4, c2=8, population=10, hidden=16, timesteps=2), 16, 3, 32),
    "fashion_mnist": (dict(c1=16, c2=32, population=100, hidden=256, timesteps=4), 28, 1, 128),
    "cifar": (dict(c1=128, c2=256, population=500, hidden=1024, timesteps=5, num_classes=100), 32, 3, 64),
}


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def run(size: str, candidates: int, kernels, cell_type: str) -> dict:
    widths, image_size, channels, batch = SIZES[size]
    shape = dict(in_channels=channels, image_size=image_size, num_classes=widths.get("num_classes", 10),
                 dropout=0.5, sap=2) | widths
    images = [torch.randn(batch, channels, image_size, image_size, generator=torch.Generator().manual_seed(r))
              for r in range(2)]
    seconds = {"reference": 0.0, "per_step": 0.0, "joint": 0.0}
    flips = total = 0
    delta_r = 0.0
    for index in range(-1, candidates):  # candidate -1 warms up the kernels, untimed
        rng, init_seed = candidate_rngs(0, max(index, 0))
        genotype = sample_genotype(rng, kernels, cell_type)
        torch.manual_seed(init_seed)
        net = scoring_network(genotype, ModelSpec(**shape, cell_type=cell_type, batch_norm="per_step"), NeuronSpec())
        joint = scoring_network(genotype, ModelSpec(**shape, cell_type=cell_type, batch_norm="joint"), NeuronSpec())
        joint.load_state_dict(net.state_dict())
        ref = ReferenceSNASNet(genotype, kernels, **shape)
        pairs = load_from_kss(ref, net)
        scores = {}
        for name, fn in (("reference", lambda: reference_score(ref, images)),
                         ("per_step", lambda: score_network(net, images)),
                         ("joint", lambda: score_network(joint, images))):
            torch.manual_seed(1)  # the same dropout masks everywhere
            scores[name], s = timed(fn)
            seconds[name] += s if index >= 0 else 0.0
        if np.isfinite(scores["reference"]):
            delta_r = max(delta_r, abs(scores["per_step"] - scores["reference"]))
        f, t, *_ = spike_flips(net, ref, pairs, images[0])
        flips, total = flips + f, total + t
    train = {mode: train_images_per_second(shape, kernels, cell_type, mode, images[0]) for mode in ("per_step", "joint")}
    return {"size": size, **{k: v / candidates for k, v in seconds.items()}, "flip_rate": flips / total,
            "delta_r": delta_r, "train_per_step": train["per_step"], "train_joint": train["joint"]}


def train_images_per_second(shape, kernels, cell_type, mode, images, steps=2) -> float:
    genotype = sample_genotype(np.random.default_rng(0), kernels, cell_type)
    net = build_network(genotype, ModelSpec(**shape, cell_type=cell_type, batch_norm=mode), NeuronSpec())
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    labels = torch.zeros(images.shape[0], dtype=torch.long)
    net.train()

    def step():
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(images), labels).backward()
        optimizer.step()

    step()  # warm-up
    _, seconds = timed(lambda: [step() for _ in range(steps)])
    return steps * images.shape[0] / seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--candidates", type=int, default=None, help="per size (default: 10 / 3 / 1)")
    parser.add_argument("--kernels", type=int, nargs="+", default=[3, 5])
    parser.add_argument("--cell-type", default="forward", choices=["forward", "backward"])
    args = parser.parse_args()
    default_n = {"tiny": 10, "fashion_mnist": 3, "cifar": 1}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, kernels {args.kernels}, {args.cell_type} cells")
    print(f"{'config':<14} {'ref s/cand':>10} {'kss s/cand':>10} {'joint s/cand':>12} {'kss vs ref':>10} "
          f"{'per-step cost':>13} {'flip rate':>9} {'max|dR|':>8} {'train img/s per_step':>20} {'joint':>6}")
    for size in args.sizes:
        r = run(size, args.candidates or default_n[size], args.kernels, args.cell_type)
        print(f"{r['size']:<14} {r['reference']:>10.3f} {r['per_step']:>10.3f} {r['joint']:>12.3f} "
              f"{r['reference'] / r['per_step']:>9.2f}x {r['per_step'] / r['joint']:>12.2f}x "
              f"{r['flip_rate']:>9.1e} {r['delta_r']:>8.1e} {r['train_per_step']:>20.1f} {r['train_joint']:>6.1f}",
              flush=True)


if __name__ == "__main__":
    main()
