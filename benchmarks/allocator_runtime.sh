#!/usr/bin/env bash
# score.allocator at run time (kss's mallopt, the search's default) against glibc's default, through the
# real search command: CIFAR-100 widths (model=snasnet_cifar100, 32 px, 100 classes, batch 128, T=5) on
# synthetic images, the same candidates under both settings (candidate i depends on (seed, i) only),
# alternating default / keep_freed for --rounds rounds so that drift on the machine hits both alike.
#   bash benchmarks/allocator_runtime.sh [ROUNDS=2] [CANDIDATES=3]
# Prints seconds per candidate (from candidates.jsonl, the first candidate of each process dropped: it
# carries one-time set-up) and the ratio. R must be identical under both settings; the script checks it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-2}
CANDIDATES=${2:-3}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
ARGS=(dataset=synthetic model=snasnet_cifar100 dataset.image_size=32 dataset.num_classes=100 dataset.train_size=400
      score.batch_size=128 score.fused=false iters=$((CANDIDATES + 1)) wandb.mode=disabled progress=false extras=none)
for round in $(seq "$ROUNDS"); do
  for allocator in default keep_freed; do
    python search.py "${ARGS[@]}" score.allocator=$allocator hydra.run.dir="$OUT/${allocator}_$round" > "$OUT/${allocator}_$round.log" 2>&1 \
      || { cat "$OUT/${allocator}_$round.log"; exit 1; }
  done
done
python - "$OUT" "$ROUNDS" <<'EOF'
import json, statistics, sys
from pathlib import Path
out, rounds = Path(sys.argv[1]), int(sys.argv[2])
def records(name):
    return [json.loads(line) for line in (out / name / "candidates.jsonl").read_text().splitlines()]
seconds, scores = {}, {}
for allocator in ("default", "keep_freed"):
    for r in range(1, rounds + 1):
        rows = records(f"{allocator}_{r}")
        seconds.setdefault(allocator, []).extend(row["seconds"] for row in rows[1:])
        scores.setdefault(allocator, []).append([row["score"] for row in rows])
same = all(s == scores["default"][0] for runs in scores.values() for s in runs)
for allocator, values in seconds.items():
    print(f"{allocator:>10}: {statistics.median(values):6.2f} s per candidate (median of {len(values)}; "
          f"min {min(values):.2f}, max {max(values):.2f})")
ratio = statistics.median(seconds["default"]) / statistics.median(seconds["keep_freed"])
print(f"keep_freed is {ratio:.2f}x the default; R identical under both: {same}")
sys.exit(0 if same else 1)
EOF
