"""The GPU half of benchmarks/gpu.sh: search and training throughput on a CUDA device, in one run.

    python benchmarks/gpu_check.py [--candidates 5] [--quick]

Prints, for SNASNet's CIFAR-10 and CIFAR-100 widths at batch 256 x 2 repeats: candidates/s of the
R-score under fp32 (the reference's arithmetic: TF32 off), fp32 channels-last, fp32 with cuDNN's
autotuner, tf32, and bf16 (channels-last, and NCHW), with the |dR| against fp32 and the peak GPU
memory per candidate; a training step's images/s in fp32 and
bf16-mixed; and, for the small presets, whether scoring two candidates at once on two CUDA streams
raises candidates/s over one after another.
"""

from __future__ import annotations

import argparse
import threading
import time

import torch
import torch.nn.functional as F

from common import candidate as setup_candidate
from common import search_setup

from kss.search.score import score_network
from kss.space.network import build_network

PRESETS = {  # SNASNet's networks and the CPU one, CIFAR-sized input (conf/model/*.yaml)
    "cifar10": ("snasnet_cifar10", "cifar10"),
    "cifar100": ("snasnet_cifar100", "cifar100"),
    "cpu": ("cpu", "cifar10"),
}


SCORE_VARIANTS = {  # the first is the baseline the others' |dR| is measured against
    "fp32": dict(precision="fp32"),
    "fp32 channels_last": dict(precision="fp32", layout="channels_last"),
    "fp32 cudnn_bench": dict(precision="fp32", cudnn_benchmark=True),
    "tf32": dict(precision="tf32"),
    "bf16": dict(precision="bf16"),
    "bf16 nchw": dict(precision="bf16", layout="nchw"),
}


def setup(name: str):
    model, dataset = PRESETS[name]
    return search_setup(f"model={model}", f"dataset={dataset}", "kernel_set=set3", "seed=0")


def candidate(name: str, index: int, device):
    return setup_candidate(setup(name), index, device)[1]


def score_rates(name: str, candidates: int, batch: int, device) -> None:
    images = [torch.randn(batch, 3, 32, 32, device=device, generator=torch.Generator(device).manual_seed(r))
              for r in range(2)]
    fp32_scores = []
    for label, options in SCORE_VARIANTS.items():
        score_network(candidate(name, 0, device), images, **options)  # warm-up (and cuDNN's autotuning)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        scores, start = [], time.perf_counter()
        for index in range(candidates):
            torch.manual_seed(1)
            scores.append(score_network(candidate(name, index, device), images, **options))
        seconds = (time.perf_counter() - start) / candidates
        fp32_scores = fp32_scores or scores
        delta = max(abs(a - b) for a, b in zip(scores, fp32_scores))
        print(f"{name:<9} batch {batch} {label:<18} {1 / seconds:7.2f} cand/s ({seconds:.3f} s)  "
              f"max|dR| vs fp32 {delta:.2e}  peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB",
              flush=True)


def train_rates(name: str, batch: int, device, steps: int = 10) -> None:
    genotype = setup_candidate(setup(name), 0)[0]
    images = torch.randn(batch, 3, 32, 32, device=device)
    labels = torch.randint(0, setup(name).spec.num_classes, (batch,), device=device)
    for precision in ("fp32", "bf16-mixed"):
        net = build_network(genotype, setup(name).spec, setup(name).neuron).to(device).train()
        optimizer = torch.optim.SGD(net.parameters(), lr=0.1)

        def step():
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
                loss = F.cross_entropy(net(images), labels)
            loss.backward()
            optimizer.step()

        step(), step()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
        rate = steps * batch / (time.perf_counter() - start)
        print(f"{name:<9} train batch {batch} {precision:<10} {rate:8.0f} img/s  "
              f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB", flush=True)


def stream_gain(name: str, candidates: int, batch: int, device) -> None:
    """Two candidates at a time on two streams vs one after another (kept only if it is faster)."""
    images = [torch.randn(batch, 3, 32, 32, device=device) for _ in range(2)]
    nets = [candidate(name, i, device) for i in range(2 * candidates)]
    score_network(nets[0], images)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for net in nets:
        score_network(net, images)
    sequential = time.perf_counter() - start

    def worker(part):
        with torch.cuda.stream(torch.cuda.Stream()):
            for net in part:
                score_network(net, images)

    threads = [threading.Thread(target=worker, args=(nets[k::2],)) for k in range(2)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    torch.cuda.synchronize()
    concurrent = time.perf_counter() - start
    print(f"{name:<9} batch {batch} streams: sequential {len(nets) / sequential:.2f} cand/s, two streams "
          f"{len(nets) / concurrent:.2f} cand/s ({sequential / concurrent:.2f}x)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidates", type=int, default=5)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device; this check is for a GPU machine")
    device = torch.device("cuda")
    print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
          f"cuDNN {torch.backends.cudnn.version()}", flush=True)
    for name in ("cifar10", "cifar100"):
        score_rates(name, args.candidates, args.batch, device)
    for name in ("cifar10", "cifar100"):
        train_rates(name, 64, device)  # SNASNet's training batch
    for batch in (64, 256):
        stream_gain("cpu", args.candidates, batch, device)


if __name__ == "__main__":
    main()
