"""The paper's kernel-size comparison at a real training budget (issue 20): set1 (1,3) vs set3 (3,5) vs
set6 (5,7) on Fashion-MNIST with the cpu preset. One 1000-candidate search per kernel set (seed 0), then
each winner trained for --epochs full epochs with seeds 0, 1, 2, paired by seed; test accuracy and the
trained network's energy per image side by side.

    # run (resumable: rerun the same command; finished work is found finished, a search resumes from its
    # candidates, a training from its last checkpoint on the same machine)
    nohup setsid nice -n 19 python benchmarks/kernel_study.py run > outputs/kernel_study.log 2>&1 &
    python benchmarks/kernel_study.py summarise      # what has finished, into docs/results/fmnist_kernel_study/
    python benchmarks/kernel_study.py save           # also the unfinished searches' candidates, to commit them

Every finished search (candidates.jsonl, search.json, search_settings.json) and every finished training's
metrics.json is copied into docs/results/fmnist_kernel_study/ as it finishes, and `run` restores them from
there first, so a later session on a new machine continues instead of starting over (a training that was
interrupted on another machine starts again: its checkpoints are not committed). Set 3's search starts from
the committed 5000-candidate random reference: its first 1000 candidates are a 1000-candidate search
(candidate i depends on (seed, i) only), so only set 1's and set 6's searches have to run.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import keep  # benchmarks/keep.py, beside this script

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["experiment=fmnist_cpu", "wandb.mode=disabled", "progress=false", "extras=none"]
SEARCH_FILES = ("candidates.jsonl", "search.json", "search_settings.json")
REFERENCE = ROOT / "docs" / "results" / "fmnist_random5000"  # set3, seed 0, the same settings


def last_epoch_lr(epochs: int) -> float:
    """The per-epoch cosine's learning rate in a run's last epoch, as a fraction of its peak (eta_min 0.01x)."""
    return 0.01 + 0.99 * (1 + math.cos(math.pi * (epochs - 1) / epochs)) / 2


def search_dir(args, kernel_set: str) -> Path:
    return args.out / f"search_{kernel_set}_{args.iters}x"


def train_dir(args, kernel_set: str, seed: int) -> Path:
    return args.out / f"train_{kernel_set}_{args.epochs}ep_seed{seed}"


def kept_record(rel: Path) -> bool:
    """A search's records (finished or not: a search resumes from its candidates) and a finished training's metrics."""
    return len(rel.parts) == 2 and (rel.parts[0].startswith("search_") and rel.name in SEARCH_FILES
                                    or rel.parts[0].startswith("train_") and rel.name == "metrics.json")


def restore(args) -> None:
    print(f"restored {keep.restore(args.results, args.out, kept_record, whole_runs=True)} files <- {args.results}", flush=True)


def seed_set3_from_reference(args) -> None:
    where = search_dir(args, "set3")
    if where.exists() or not (REFERENCE / "candidates.jsonl").exists():
        return
    where.mkdir(parents=True)
    lines = (REFERENCE / "candidates.jsonl").read_text().splitlines()[: args.iters]
    (where / "candidates.jsonl").write_text("\n".join(lines) + "\n")
    shutil.copy2(REFERENCE / "search_settings.json", where / "search_settings.json")
    print(f"set3: the first {len(lines)} candidates of {REFERENCE}", flush=True)


def call(command: list[str]) -> bool:
    print(" ".join(command), flush=True)
    return subprocess.run(command, cwd=ROOT).returncode == 0


def run(args) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    restore(args)
    seed_set3_from_reference(args)
    for kernel_set in args.sets:
        where = search_dir(args, kernel_set)
        if not (where / "search.json").exists():
            call([sys.executable, "search.py", *COMMON, f"kernel_set={kernel_set}", f"iters={args.iters}", "seed=0",
                  f"hydra.run.dir={where}"])
        if (where / "search.json").exists():
            keep.save(args.out, args.results, kept_record)
    for seed in args.seeds:  # seed-major: partial results are paired by seed
        for kernel_set in args.sets:
            genotype = search_dir(args, kernel_set) / "search.json"
            where = train_dir(args, kernel_set, seed)
            if not genotype.exists() or (where / "metrics.json").exists():
                continue
            if call([sys.executable, "train.py", *COMMON, f"kernel_set={kernel_set}", f"genotype={genotype}", f"seed={seed}",
                     f"trainer.max_epochs={args.epochs}", f"hydra.run.dir={where}"]):
                keep.save(args.out, args.results, kept_record)
                summarise(args)


def save_all(args) -> None:
    print(f"saved {keep.save(args.out, args.results, kept_record)} files -> {args.results}", flush=True)
    summarise(args)


def summarise(args) -> None:
    rows = []
    for kernel_set in args.sets:
        for seed in args.seeds:
            path = args.results / train_dir(args, kernel_set, seed).name / "metrics.json"
            if path.exists():
                m = json.loads(path.read_text())
                rows.append({"kernel_set": kernel_set, "seed": seed, "test_acc": m["test_acc"],
                             "best_val_acc": m.get("best_val_acc"), "params": m["params"],
                             "energy_uj": m.get("energy_uj"), "search_score": m.get("search_score"),
                             "train_seconds": m.get("train_seconds"), "epochs": m.get("epochs")})
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "summary.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = [f"# Kernel sets at {args.epochs} full epochs: Fashion-MNIST, experiment=fmnist_cpu",
             "",
             f"Each set's winner of one {args.iters}-candidate search (seed 0), trained with seeds "
             f"{', '.join(map(str, args.seeds))}, the preset's schedule (cosine stepped per epoch, SNASNet's: the "
             f"learning rate is {last_epoch_lr(args.epochs):.2f}x its peak in the last epoch of {args.epochs}). "
             "Test accuracy of the best-validation checkpoint; energy per test image of the trained network "
             "(kss.space.cost, 45 nm table).",
             "",
             "| kernel set | seed | test acc | best val acc | params | energy (uJ/image) | R | train s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        energy = f"{r['energy_uj']:.2f}" if r["energy_uj"] is not None else "-"
        lines.append(f"| {r['kernel_set']} | {r['seed']} | {100 * r['test_acc']:.2f}% | "
                     f"{100 * r['best_val_acc']:.2f}% | {r['params']} | {energy} | {r['search_score']:.2f} | "
                     f"{r['train_seconds']:.0f} |")
    by_set = {s: [r["test_acc"] for r in rows if r["kernel_set"] == s] for s in args.sets}
    lines += ["", "| kernel set | trainings | test acc mean | sd |", "|---|---|---|---|"]
    for s, accs in by_set.items():
        sd = f"{100 * statistics.stdev(accs):.2f}" if len(accs) > 1 else "-"
        mean = f"{100 * statistics.mean(accs):.2f}%" if accs else "-"
        lines.append(f"| {s} | {len(accs)} | {mean} | {sd} |")
    first = {r["seed"]: r for r in rows if r["kernel_set"] == args.sets[0]}
    if first and len(args.sets) > 1:  # each set against the first on the seeds both have finished
        lines += ["", f"Paired differences against {args.sets[0]} (same seed), test accuracy points:"]
        for s in args.sets[1:]:
            pairs = sorted((r["seed"], r, first[r["seed"]]) for r in rows if r["kernel_set"] == s and r["seed"] in first)
            if not pairs:
                lines.append(f"- {s} - {args.sets[0]}: no common seed yet")
                continue
            diffs = [100 * (r["test_acc"] - b["test_acc"]) for _, r, b in pairs]
            line = ", ".join(f"seed {seed}: {d:+.2f}" for (seed, _, _), d in zip(pairs, diffs))
            line += f" (mean {statistics.mean(diffs):+.2f}"
            if len(pairs) >= 2:
                from kss.study.stats import paired_difference  # scipy's paired t-test

                t = paired_difference([r["test_acc"] for _, r, _ in pairs], [b["test_acc"] for _, _, b in pairs])
                line += f", sd {100 * t['std_diff']:.2f}, paired t-test p = {t['p_value']:.2g}"
            ratios = [r["energy_uj"] / b["energy_uj"] for _, r, b in pairs if r["energy_uj"] and b["energy_uj"]]
            line += ")" + (f"; energy per image {statistics.mean(ratios):.1f}x" if ratios else "")
            lines.append(f"- {s} - {args.sets[0]}: {line}")
    remaining = [f"{s} seed {seed}" for seed in args.seeds for s in args.sets
                 if not any(r["kernel_set"] == s and r["seed"] == seed for r in rows)]
    lines += ["", "Remaining: " + (", ".join(remaining) if remaining else "none"),
              "Continue with: `python benchmarks/kernel_study.py run` (see the script's docstring)."]
    (args.results / "summary.md").write_text("\n".join(lines) + "\n")
    from kss.study.plots import plot_accuracy_energy

    per_set = [{"label": s, "test_acc": [r["test_acc"] for r in rows if r["kernel_set"] == s],
                "energy_uj": statistics.fmean(e) if (e := [r["energy_uj"] for r in rows
                                                           if r["kernel_set"] == s and r["energy_uj"]]) else None}
               for s in args.sets]
    plot_accuracy_energy(args.results / "summary.png", per_set,
                         f"kernel sets at {args.epochs} full epochs (each set's search winner; energy: mean over seeds)")
    print("\n".join(lines), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["run", "summarise", "save"])
    parser.add_argument("--sets", nargs="+", default=["set1", "set3", "set6"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--iters", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "long" / "kernel_study")
    parser.add_argument("--results", type=Path, default=ROOT / "docs" / "results" / "fmnist_kernel_study")
    args = parser.parse_args()
    {"run": run, "summarise": summarise, "save": save_all}[args.what](args)


if __name__ == "__main__":
    main()
