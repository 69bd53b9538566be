"""Seconds per candidate of the R-score search, every scoring path against the reference, in one run.

    python benchmarks/search_speed.py                          # tiny, Fashion-MNIST- and CIFAR-100-sized
    python benchmarks/search_speed.py --sizes tiny fashion_mnist --candidates 3

Paths (the same candidates, weights, images and dropout masks):
reference:  kss/space/reference_snasnet.py, SNASNet's forward as written (single-step neurons, a Python
            loop over timesteps, per-timestep BN, its K hook per LIF call).
eager:      kss with score.fused=false: multi-step, no-grad LIF, one Gram product per layer.
fused:      kss with score.fused=true: kss.space.fused's compiled LIF and pool (compiled in the warm-up).
bf16:       fused under score.precision=bf16 (a bf16, channels-last copy of the network): not exact;
            its R is compared with fp32's.
convs:      the candidate's convolutions alone, on the shapes and weights of the scoring forward;
            `fused/convs` is how close everything else comes to free (issue 9's target: <= 1.3x).
convs bf16: the same convolutions in bf16, channels-last: the most bf16 can gain on this CPU.
flips:      spikes that differ from the reference (eager and fused; must be 0), |dR| likewise.
peak RSS:   the high-water mark (VmHWM) of a fresh process that scores one candidate on the fused path,
            fp32 and bf16. (ru_maxrss would be wrong here: Linux carries it over from the parent.)
Batch sizes are SNASNet's: 256 x 2 repeats at CIFAR-100 size (--batch to change).
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from common import candidate as setup_candidate
from common import search_setup

from kss.search.score import score_network
from kss.space import fused
from kss.space.reference_snasnet import ReferenceSNASNet, load_from_kss, reference_score, spike_flips

SIZES = {
    # name: (model preset, dataset: its input shape, search batch)
    "tiny": ("tiny", "synthetic", 32),
    "fashion_mnist": ("cpu", "fashion_mnist", 128),
    "cifar100": ("snasnet_cifar100", "cifar100", 256),
}
PATHS = ("reference", "eager", "fused", "bf16", "convs", "convs_bf16")


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def setup(size: str, kernels, cell_type: str):
    model, dataset, _ = SIZES[size]
    return search_setup(f"model={model}", f"dataset={dataset}", f"kernel_set.kernels=[{','.join(map(str, kernels))}]",
                        f"model.cell_type={cell_type}", "seed=0")


def model_shape(size: str) -> dict:
    """The preset's shape as the reference transcription takes it."""
    spec = setup(size, [3, 5], "forward").spec
    return dict(in_channels=spec.in_channels, image_size=spec.image_size, num_classes=spec.num_classes, c1=spec.c1,
                c2=spec.c2, population=spec.population, hidden=spec.hidden, sap=spec.sap, timesteps=spec.timesteps,
                dropout=spec.dropout, stem_stride=spec.stem_stride)


def make_images(size: str, batch: int | None) -> list[torch.Tensor]:
    shape, default_batch = model_shape(size), SIZES[size][2]
    return [torch.randn(batch or default_batch, shape["in_channels"], shape["image_size"], shape["image_size"],
                        generator=torch.Generator().manual_seed(r)) for r in range(2)]


def candidate(size: str, index: int, kernels, cell_type: str):
    """Candidate `index` of a seed-0 search (kss.search.candidate builds it)."""
    return setup_candidate(setup(size, kernels, cell_type), index)


@torch.no_grad()
def convs_only_seconds(net, images: list[torch.Tensor], dtype=torch.float32) -> float:
    """The scoring forward's convolutions, replayed alone on inputs of the same shapes
    (bf16: in channels-last, the layout score.precision=bf16 runs in)."""
    calls = []
    hooks = [m.register_forward_hook(lambda m, i, o: calls.append((m, i[0].shape)))
             for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    try:
        for x in images:
            net(x)
    finally:
        for h in hooks:
            h.remove()
    layout = torch.contiguous_format if dtype == torch.float32 else torch.channels_last
    inputs = [(m, m.weight.to(dtype).contiguous(memory_format=layout),
               torch.rand(shape).to(dtype).contiguous(memory_format=layout)) for m, shape in calls]
    start = time.perf_counter()
    for m, weight, x in inputs:
        F.conv2d(x, weight, None, m.stride, m.padding)
    return time.perf_counter() - start


def run(size: str, candidates: int, kernels, cell_type: str, batch: int | None, warm_up: bool = True) -> dict:
    images = make_images(size, batch)
    seconds = dict.fromkeys(PATHS, 0.0)
    flips = {"eager": 0, "fused": 0}
    total, delta_r = 0, {"eager": 0.0, "fused": 0.0}
    r_fp32, r_bf16 = [], []
    for index in range(candidates):  # compile the fused blocks for every shape these candidates meet, untimed
        _, net = candidate(size, index, kernels, cell_type)
        score_network(net, images, fused_blocks=True), score_network(net, images, fused_blocks=True, precision="bf16")
    for index in range(-1 if warm_up else 0, candidates):  # candidate -1 warms up the other paths, untimed
        genotype, net = candidate(size, max(index, 0), kernels, cell_type)
        ref = ReferenceSNASNet(genotype, kernels, **model_shape(size))
        pairs = load_from_kss(ref, net)
        runs = {
            "reference": lambda: reference_score(ref, images),
            "eager": lambda: score_network(net, images),
            "fused": lambda: score_network(net, images, fused_blocks=True),
            "bf16": lambda: score_network(net, images, fused_blocks=True, precision="bf16"),
            "convs": lambda: convs_only_seconds(net, images),
            "convs_bf16": lambda: convs_only_seconds(net, images, torch.bfloat16),
        }
        scores = {}
        for name, fn in runs.items():
            torch.manual_seed(1)  # the same dropout masks everywhere
            scores[name], s = timed(fn)
            seconds[name] += (scores[name] if name.startswith("convs") else s) if index >= 0 else 0.0
        if index < 0:
            continue
        r_fp32.append(scores["fused"]), r_bf16.append(scores["bf16"])
        for path in ("eager", "fused"):
            if np.isfinite(scores["reference"]):
                delta_r[path] = max(delta_r[path], abs(scores[path] - scores["reference"]))
            with fused.enabled(path == "fused"):
                f, t, *_ = spike_flips(net, ref, pairs, images[0])
            flips[path] += f
        total += t
    return {"size": size, "batch": images[0].shape[0], **{k: v / candidates for k, v in seconds.items()},
            "flips": flips, "total": total, "delta_r": delta_r,
            "bf16_dr": max(abs(a - b) for a, b in zip(r_fp32, r_bf16)),
            **{f"peak_{p}": peak_rss_mb(size, kernels, cell_type, batch, p) for p in ("fp32", "bf16")}}


def _score_one(size, kernels, cell_type, batch, precision, queue) -> None:
    _, net = candidate(size, 0, kernels, cell_type)
    score_network(net, make_images(size, batch), fused_blocks=True, precision=precision)
    queue.put(high_water_mb())


def high_water_mb() -> float:
    """This process's own peak RSS (VmHWM; ru_maxrss would include a parent's, across fork and exec)."""
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024  # kB


def peak_rss_mb(size: str, kernels, cell_type: str, batch: int | None, precision: str) -> float:
    """Peak RSS of a fresh process (spawned: no memory of this one's runs) scoring one candidate."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_score_one, args=(size, kernels, cell_type, batch, precision, queue))
    child.start()
    peak = queue.get()
    child.join()
    return peak


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--candidates", type=int, default=None, help="per size (default: 10 / 3 / 1)")
    parser.add_argument("--batch", type=int, default=None, help="search batch (default: SNASNet's per size)")
    parser.add_argument("--kernels", type=int, nargs="+", default=[3, 5])
    parser.add_argument("--cell-type", default="forward", choices=["forward", "backward"])
    parser.add_argument("--no-warm-up", action="store_true",
                        help="skip the untimed candidate on the uncompiled paths (minutes per candidate: first-call costs vanish)")
    args = parser.parse_args()
    default_n = {"tiny": 10, "fashion_mnist": 3, "cifar100": 1}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, kernels {args.kernels}, {args.cell_type} cells; "
          "seconds per candidate (2 repeats)")
    print(f"{'config':<14} {'batch':>5} {'reference':>9} {'eager':>7} {'fused':>7} {'bf16':>7} {'convs':>7} "
          f"{'fused/convs':>11} {'fused vs ref':>12} {'bf16 vs fused':>13} {'flips e/f':>9} {'|dR| e/f':>15} "
          f"{'bf16 |dR|':>9} {'convs bf16':>10} {'bf16/convs bf16':>15} {'peak fp32/bf16':>15}", flush=True)
    for size in args.sizes:
        r = run(size, args.candidates or default_n[size], args.kernels, args.cell_type, args.batch, not args.no_warm_up)
        print(f"{r['size']:<14} {r['batch']:>5} {r['reference']:>9.3f} {r['eager']:>7.3f} {r['fused']:>7.3f} "
              f"{r['bf16']:>7.3f} {r['convs']:>7.3f} {r['fused'] / r['convs']:>10.2f}x "
              f"{r['reference'] / r['fused']:>11.2f}x {r['fused'] / r['bf16']:>12.2f}x "
              f"{r['flips']['eager']:>4}/{r['flips']['fused']:<4} {r['delta_r']['eager']:>7.1e}/{r['delta_r']['fused']:<7.1e} "
              f"{r['bf16_dr']:>9.2e} {r['convs_bf16']:>10.3f} {r['bf16'] / r['convs_bf16']:>14.2f}x "
              f"{r['peak_fp32']:>6.0f}/{r['peak_bf16']:.0f}MB", flush=True)


if __name__ == "__main__":
    main()
