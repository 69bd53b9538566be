"""How much of a scoring forward goes to fresh memory: one candidate at CIFAR-100 widths, eager and
fused kss against its convolutions alone. Run it under different allocator settings (allocator.sh).

    python benchmarks/allocator_speed.py [--batch 128] [--precision bf16]

A [T*B, 128, 32, 32] fp32 tensor is 671 MB at batch 256. glibc hands blocks this large out with
mmap and returns them on free, so every layer's output is new memory that the kernel must fault in
and zero, and that cost lands on the element-wise ops and the convolutions alike.
"""

from __future__ import annotations

import argparse
import time

import torch

from search_speed import candidate, convs_only_seconds, high_water_mb, make_images

from kss.search.score import score_network


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="bf16: the convs-alone replay too")
    args = parser.parse_args()
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    images = make_images("cifar100", args.batch)
    _, net = candidate("cifar100", 0, [3, 5], "forward")
    for fused_blocks in (False, True):  # compile and warm up, untimed
        score_network(net, images, fused_blocks=fused_blocks, precision=args.precision)
    seconds = {}
    for name, fused_blocks in (("eager", False), ("fused", True)):
        start = time.perf_counter()
        score_network(net, images, fused_blocks=fused_blocks, precision=args.precision)
        seconds[name] = time.perf_counter() - start
    seconds["convs"] = convs_only_seconds(net, images, dtype)
    peak = high_water_mb() / 1024
    print(f"{args.precision}, batch {args.batch}: eager {seconds['eager']:.2f} s, fused {seconds['fused']:.2f} s, convs alone "
          f"{seconds['convs']:.2f} s, fused/convs {seconds['fused'] / seconds['convs']:.2f}x, "
          f"peak RSS {peak:.1f} GB (incl. the convs-alone replay)", flush=True)


if __name__ == "__main__":
    main()
