"""Does score.precision=bf16 rank candidates as fp32 does? Two real searches, the same candidates.

    python benchmarks/precision_agreement.py                       # Fashion-MNIST, CPU preset, 200 candidates
    python benchmarks/precision_agreement.py --iters 300 -- dataset=cifar10 model=paper_cifar10

Runs `search.py` twice (fp32, then bf16) into outputs/benchmarks/precision/<precision>/ (resumable: rerun
to finish), then prints Kendall's tau between the two R columns, whether both pick the same winner, the
rank the bf16 winner has under fp32, and the seconds per candidate of each.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from scipy import stats

ROOT = Path(__file__).resolve().parents[1]


def search(precision: str, iters: int, out: Path, overrides: list[str]) -> list[dict]:
    command = [sys.executable, "search.py", "experiment=fmnist_cpu", f"iters={iters}", f"score.precision={precision}",
               "score.fused=true", "wandb.mode=disabled", "extras=none", "dataset.num_workers=0",
               f"hydra.run.dir={out}", *overrides]
    subprocess.run(command, cwd=ROOT, check=True)
    return [json.loads(line) for line in (out / "candidates.jsonl").read_text().splitlines()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "benchmarks" / "precision")
    parser.add_argument("overrides", nargs="*", help="passed to search.py (after --)")
    args = parser.parse_args()
    runs = {p: search(p, args.iters, args.out / p, args.overrides) for p in ("fp32", "bf16")}
    pairs = [(a["score"], b["score"]) for a, b in zip(runs["fp32"], runs["bf16"])
             if a["score"] is not None and b["score"] is not None]
    fp32, bf16 = zip(*pairs)
    tau = stats.kendalltau(fp32, bf16).statistic
    rho = stats.spearmanr(fp32, bf16).statistic
    winner = {p: max(range(len(pairs)), key=lambda i, p=p: (fp32 if p == "fp32" else bf16)[i]) for p in runs}
    rank_under_fp32 = 1 + sum(s > fp32[winner["bf16"]] for s in fp32)
    seconds = {p: sum(r["seconds"] for r in rows) / len(rows) for p, rows in runs.items()}
    print(f"{len(pairs)} candidates scored in both; Kendall tau {tau:.4f}, Spearman rho {rho:.4f}")
    print(f"winner fp32 #{winner['fp32']}, bf16 #{winner['bf16']} (same: {winner['fp32'] == winner['bf16']}); "
          f"the bf16 winner ranks {rank_under_fp32} of {len(pairs)} under fp32")
    print(f"max |R_bf16 - R_fp32| {max(abs(a - b) for a, b in pairs):.4f}; "
          f"s/candidate fp32 {seconds['fp32']:.3f}, bf16 {seconds['bf16']:.3f} ({seconds['fp32'] / seconds['bf16']:.2f}x)")


if __name__ == "__main__":
    main()
