#!/usr/bin/env bash
# The prepared GPU check (at most ~8 minutes on one H100-class GPU): the device, the reference-equivalence
# test on CUDA, and benchmarks/gpu_check.py (candidates/s at CIFAR-10/100 widths in fp32, tf32 and bf16;
# training images/s in fp32 vs bf16-mixed; peak GPU memory; two CUDA streams vs one).
#
#   bash benchmarks/gpu.sh | tee docs/results/gpu.md
#
# On a machine without kss's dependencies and without internet, carry wheels in .whl/ (see
# /work/.library/device/README.md): spikingjelly, hydra-core, omegaconf, antlr4-python3-runtime==4.9.3;
# they are installed into /tmp/site first.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled
PY=${PYTHON:-python3}
if compgen -G ".whl/*.whl" > /dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi

echo '```'
echo "# kss GPU check, $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "nvidia-smi: not found"
$PY -c "import torch, spikingjelly; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'spikingjelly ok')"

echo "## equivalence test on CUDA (spikes and R against the reference transcription)"
timeout 180 $PY -m pytest tests/test_equivalence.py -q -k cuda -p no:cacheprovider 2>&1 | tail -15

echo "## throughput and memory"
timeout 300 $PY benchmarks/gpu_check.py --candidates 5
echo '```'
