#!/usr/bin/env bash
# benchmarks/allocator_speed.py under three allocator settings, one after another (quiet machine):
#   default glibc; PyTorch's transparent-huge-page allocation; glibc keeping freed memory (no mmap).
#   bash benchmarks/allocator.sh [--batch 128]
set -euo pipefail
cd "$(dirname "$0")/.."
echo "# default";                 python benchmarks/allocator_speed.py "$@"
echo "# THP_MEM_ALLOC_ENABLE=1";  THP_MEM_ALLOC_ENABLE=1 python benchmarks/allocator_speed.py "$@"
echo "# GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736"
GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736 python benchmarks/allocator_speed.py "$@"
