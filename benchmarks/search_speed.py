"""Candidates per second of the R-score search, fast path vs a plain implementation, in one run.

    python benchmarks/search_speed.py            # tiny, Fashion-MNIST-sized and CIFAR-sized configs
    python benchmarks/search_speed.py --sizes tiny --candidates 20

fast:  kss as shipped: multi-step network, no-grad LIF path, channels-last, one batched Gram
       product per layer (H = n_i + n_j - 2 x x^T).
plain: the same network and formula done the straightforward way: NCHW layout, spikingjelly's
       LIF kernel, and per (layer, timestep) two matmuls, H = x(1-x)^T + (1-x)x^T, as in SNASNet's reference code.
Both score the same candidates (same seeds) on the same images; the scores must agree.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from spikingjelly.activation_based import monitor, neuron
from spikingjelly.activation_based.neuron import BaseNode

from kss import neurons
from kss.genotype import sample_genotype
from kss.network import ModelSpec, build_network
from kss.neurons import NeuronSpec
from kss.score import log_abs_det, score_network
from kss.search import candidate_rngs

SIZES = {
    # name: (model widths, image size, channels, search batch)
    "tiny": (dict(c1=4, c2=8, population=10, hidden=16, timesteps=2), 16, 3, 32),
    "fashion_mnist": (dict(c1=16, c2=32, population=100, hidden=256, timesteps=4), 28, 1, 128),
    "cifar": (dict(c1=128, c2=256, population=500, hidden=1024, timesteps=5, num_classes=100), 32, 3, 64),
}


@torch.no_grad()
def plain_score(net, batches) -> float:
    """Per-timestep, two-matmul kernel in the hooks; spikingjelly's own LIF kernel."""
    state = {}

    def on_spikes(spikes):
        for x in spikes.reshape(spikes.shape[0], spikes.shape[1], -1):  # one timestep at a time
            n = x.shape[1]
            rate = x.mean(1, keepdim=True)
            expected = n * (rate @ (1 - rate).T + (1 - rate) @ rate.T)
            hamming = x @ (1 - x).T + (1 - x) @ x.T
            k = (n - 0.5 * hamming / (expected + 1e-3)).double()
            state["k"] = state.get("k", 0) + k
            state["count"] = state.get("count", 0) + 1

    net.train()
    recorder = monitor.OutputMonitor(net, BaseNode, function_on_output=on_spikes)
    scores = []
    for images in batches:
        state.clear()
        net(images)
        scores.append(log_abs_det(state["k"] / state["count"]))
    recorder.remove_hooks()
    return sum(scores) / len(scores)


class spikingjelly_lif:
    """Route kss's LIF through spikingjelly's own multi-step kernel (the plain path)."""

    def __enter__(self):
        self.saved = neurons.LIF.multi_step_forward
        neurons.LIF.multi_step_forward = neuron.LIFNode.multi_step_forward

    def __exit__(self, *exc):
        neurons.LIF.multi_step_forward = self.saved


def run(size: str, candidates: int, kernels) -> dict:
    widths, image_size, channels, batch = SIZES[size]
    spec = ModelSpec(in_channels=channels, image_size=image_size, **widths)
    images = [torch.randn(batch, channels, image_size, image_size, generator=torch.Generator().manual_seed(r)) for r in range(2)]
    result = {}
    for path in ("plain", "fast"):
        scores, seconds = [], 0.0
        for index in range(candidates):
            rng, init_seed = candidate_rngs(0, index)
            genotype = sample_genotype(rng, kernels, "forward")
            torch.manual_seed(init_seed)
            net = build_network(genotype, spec, NeuronSpec())
            torch.manual_seed(1)  # same dropout masks for both paths
            start = time.perf_counter()
            if path == "plain":
                net.memory_format = torch.contiguous_format
                with spikingjelly_lif():
                    scores.append(plain_score(net.to(memory_format=torch.contiguous_format), images))
            else:  # what kss.search does
                scores.append(score_network(net, images))
            seconds += time.perf_counter() - start
        result[path] = (candidates / seconds, scores)
    plain, fast = result["plain"][1], result["fast"][1]
    # The plain path sums K in float32, which near-singular kernels (very negative R) amplify;
    # count the candidates whose scores agree to 1e-3 relative.
    plain, fast = np.array(plain), np.array(fast)
    with np.errstate(invalid="ignore"):  # -inf == -inf counts as agreeing
        same = (plain == fast) | (np.abs(plain - fast) <= 1e-3 * np.abs(fast))
    return {"size": size, "plain": result["plain"][0], "fast": result["fast"][0],
            "agree": f"{int(same.sum())}/{len(same)}"}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--candidates", type=int, default=None, help="per size (default: 20 / 5 / 2)")
    parser.add_argument("--kernels", type=int, nargs="+", default=[3, 5])
    args = parser.parse_args()
    default_n = {"tiny": 20, "fashion_mnist": 5, "cifar": 2}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, kernels {args.kernels}")
    print(f"{'config':<14} {'plain cand/s':>13} {'fast cand/s':>12} {'speed-up':>9}  scores agree (1e-3)")
    for size in args.sizes:
        r = run(size, args.candidates or default_n[size], args.kernels)
        print(f"{r['size']:<14} {r['plain']:>13.3f} {r['fast']:>12.3f} {r['fast'] / r['plain']:>8.2f}x  "
              f"{r['agree']}")


if __name__ == "__main__":
    main()
