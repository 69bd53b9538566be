#!/usr/bin/env bash
# Same command, same seed, twice, at the Fashion-MNIST CPU preset's full size: are the results identical?
#   bash benchmarks/determinism.sh [extra overrides]          (~5 minutes on 2 cores; needs dataset-fashion-mnist)
#   bash benchmarks/determinism.sh --full [extra overrides]   `python train.py experiment=fmnist_cpu` as a user types
#        it (search, 5 epochs, test), twice back to back, with each run's wall time and peak RSS (~2 x 25-45 min)
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
if [ "${1:-}" = "--full" ]; then
  shift
  args=(experiment=fmnist_cpu "$@")
else
  args=(experiment=fmnist_cpu genotype=snasnet_cifar10 model.cell_type=backward kernel_set=set1 trainer.max_epochs=1
        trainer.limit_train_batches=100 dataset.num_workers=1 wandb.mode=disabled extras=none progress=false "$@")
fi
echo "python train.py ${args[*]}   (runs in $out)"
for run in a b; do
  /usr/bin/time -f "run $run: wall %e s, peak RSS %M KiB" -o "$out/$run.time" \
    python train.py "${args[@]}" "hydra.run.dir=$out/$run" > "$out/$run.log" 2>&1
  cat "$out/$run.time"
done
python - "$out" <<'PY'
import json, sys, torch
from pathlib import Path
out = Path(sys.argv[1])
metrics = [json.loads((out / r / "metrics.json").read_text()) for r in "ab"]
for key in ("test_acc", "best_val_acc", "compile"):
    if key in metrics[0]:
        print(f"{key}: {metrics[0][key]!r} vs {metrics[1][key]!r} -> {'identical' if metrics[0][key] == metrics[1][key] else 'DIFFERENT'}")
print("train_seconds:", [round(m["train_seconds"], 1) for m in metrics], " images/s:", [m["images_per_second"] and round(m["images_per_second"], 1) for m in metrics])
weights = [torch.load(out / r / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"] for r in "ab"]
same = all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
print(f"last.ckpt weights ({len(weights[0])} tensors): {'bit-identical' if same else 'DIFFERENT'}")
PY
