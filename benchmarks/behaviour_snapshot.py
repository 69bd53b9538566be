"""Record what the five scripts write, and compare a later tree's output with it byte for byte.

    python benchmarks/behaviour_snapshot.py record  /tmp/kss_baseline     # before a refactor
    python benchmarks/behaviour_snapshot.py compare /tmp/kss_baseline     # after: exit 1 on any difference

Each case runs a script as a user would (a subprocess from the repository root, CPU, W&B disabled)
into `<dir>/runs/<case>`, then writes a normalised copy of its output files to `<dir>/snapshot/<case>/`:
JSON and JSONL without the fields that hold timings, hosts or paths; CSV without timing columns;
checkpoints as the SHA-256 of every tensor of their state_dict; the NIR graph as the SHA-256 of
every node's parameters. `compare` runs the same cases into a fresh folder and diffs the
normalised files; anything not byte-identical is printed and the exit status is 1.
"""

from __future__ import annotations

import argparse
import csv
import difflib
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["progress=false", "wandb.mode=disabled", "extras.print_config=false", "device=cpu"]
TINY_DATA = ["dataset.train_size=96", "dataset.val_size=32", "dataset.test_size=32"]
TRAIN = ["dataset=synthetic", "model=tiny", "iters=2", "score.batch_size=16", "trainer=cpu", "trainer.max_epochs=2",
         "optimizer=adam", "optimizer.lr=1e-2", *TINY_DATA]
SYNTH_SEARCH = ["dataset=synthetic", "model=tiny", "score.batch_size=16"]

# (case, [(script, args)], files to keep). "{run}" is the case's run folder, "{runs}" the folder of all runs.
CASES = [
    ("search_synthetic_30", [("search.py", ["dataset=synthetic", "iters=30", "hydra.run.dir={run}"])],
     ["candidates.jsonl", "search.json", "search_settings.json"]),
    ("search_fmnist_cpu_10", [("search.py", ["experiment=fmnist_cpu", "iters=10", "hydra.run.dir={run}"])],
     ["candidates.jsonl", "search.json", "search_settings.json"]),
    ("train_tiny", [("train.py", [*TRAIN, "hydra.run.dir={run}"])],
     ["metrics.json", "checkpoints/last.ckpt", "search.json", "candidates.jsonl"]),
    ("eval_int8_nir", [("eval.py", ["ckpt_path={runs}/train_tiny", "dataset=synthetic", *TINY_DATA, "quantize=int8",
                                    "export=nir", "hydra.run.dir={run}"])],
     ["eval.json", "model.nir"]),
    ("sweep_tiny", [("sweep.py", ["kernel_sets=[set1,set3]", "iters=[2]", "seeds=[0]", *SYNTH_SEARCH,
                                  "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
                                  "trainer.limit_test_batches=1", "optimizer=adam", "optimizer.lr=1e-2",
                                  "hydra.run.dir={run}"])],
     ["summary.csv"]),
    ("search_2_shards", [("search.py", [*SYNTH_SEARCH, "iters=12", "shards=2", "shard=0", "hydra.run.dir={run}"]),
                         ("search.py", [*SYNTH_SEARCH, "iters=12", "shards=2", "shard=1", "hydra.run.dir={run}"]),
                         ("search.py", [*SYNTH_SEARCH, "iters=12", "shards=2", "hydra.run.dir={run}"])],
     ["candidates.jsonl", "search.json", "search_settings.json"]),
    ("search_tpe", [("search.py", [*SYNTH_SEARCH, "iters=12", "search.strategy=tpe", "hydra.run.dir={run}"])],
     ["candidates.jsonl", "search.json", "search_settings.json"]),
    ("proxy_tiny", [("proxy.py", [*SYNTH_SEARCH, *TINY_DATA[:2], "dataset.test_size=16", "iters=8", "trainer.max_epochs=1",
                                  "optimizer=adam", "optimizer.lr=1e-2", "kernel_sets=[set1,set3]", "proxy.per_set=2",
                                  "proxy.seeds=2", "proxy.long_archs=3", "proxy.long_factor=2", "proxy.bootstrap=50",
                                  "proxy.train_fraction=0.5", "hydra.run.dir={run}"])],
     ["picks.json", "proxy.csv", "proxy.json"]),
]

# Fields that measure the machine or name a place, not the behaviour.
VOLATILE = re.compile(r"(^|_)(seconds|second|latency_ms_per_image|latency_ms|host|hosts|checkpoint|ckpt_path|"
                      r"run_dir|genotype_file|file|path|dir|wandb|torch|time|started|finished)(_mean|_std|_max)?$"
                      r"|time_normalised$")


def drop_volatile(value):
    if isinstance(value, dict):
        return {k: drop_volatile(v) for k, v in value.items() if not VOLATILE.search(k)}
    if isinstance(value, list):
        return [drop_volatile(v) for v in value]
    if isinstance(value, str) and str(ROOT) in value:
        return value.replace(str(ROOT), "<ROOT>")
    return value


def digest(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def normalise(path: Path) -> str:
    """The file as text that is the same whenever the behaviour is."""
    name = path.name
    if name.endswith(".jsonl"):
        return "".join(json.dumps(drop_volatile(json.loads(line)), sort_keys=True) + "\n"
                       for line in path.read_text().splitlines() if line.strip())
    if name.endswith(".json"):
        return json.dumps(drop_volatile(json.loads(path.read_text())), indent=1, sort_keys=True) + "\n"
    if name.endswith(".csv"):
        rows = list(csv.DictReader(path.open(newline="")))
        out = io.StringIO()
        keep = [c for c in (rows[0] if rows else []) if not VOLATILE.search(c)]
        writer = csv.DictWriter(out, fieldnames=keep, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()
    if name.endswith(".ckpt"):
        state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
        return "".join(f"{k} {tuple(v.shape)} {v.dtype} {digest(v)}\n" for k, v in state.items())
    if name.endswith(".nir"):
        import nir

        graph = nir.read(str(path))
        lines = [f"edges {sorted(map(tuple, graph.edges))}\n"]
        for node_name in sorted(graph.nodes):
            node = graph.nodes[node_name]
            lines.append(f"{node_name} {type(node).__name__}\n")
            for field, value in sorted(vars(node).items()):
                if hasattr(value, "tobytes"):
                    lines.append(f"  {field} {getattr(value, 'shape', '')} "
                                 f"{hashlib.sha256(value.tobytes()).hexdigest()}\n")
                elif not isinstance(value, (dict, list)) or field == "metadata":
                    lines.append(f"  {field} {value!r}\n")
        return "".join(lines)
    raise ValueError(f"no normaliser for {path}")


def run_cases(out: Path, only: list[str] | None) -> None:
    runs, snap = out / "runs", out / "snapshot"
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONHASHSEED": "0"}
    for case, commands, files in CASES:
        if only and case not in only:
            continue
        run = runs / case
        shutil.rmtree(run, ignore_errors=True)
        shutil.rmtree(snap / case, ignore_errors=True)
        for script, args in commands:
            argv = [sys.executable, script, *COMMON, *[a.format(run=run, runs=runs) for a in args]]
            print(f"[{case}] {' '.join(argv[1:])}", flush=True)
            result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
            if result.returncode != 0:
                sys.exit(f"[{case}] exit {result.returncode}:\n{result.stderr[-3000:]}")
        for file in files:
            found = run / file
            if not found.exists():
                sys.exit(f"[{case}] {file} was not written")
            target = snap / case / (file.replace("/", "__") + ".txt")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(normalise(found))


def renormalise(out: Path) -> None:
    """Rewrite <out>/snapshot from <out>/runs (a baseline recorded before a normaliser changed)."""
    for case, _, files in CASES:
        for file in files:
            found = out / "runs" / case / file
            if found.exists():
                (out / "snapshot" / case / (file.replace("/", "__") + ".txt")).write_text(normalise(found))


def compare(baseline: Path, fresh: Path) -> int:
    renormalise(baseline)
    differences = 0
    old_files = sorted(p.relative_to(baseline / "snapshot") for p in (baseline / "snapshot").rglob("*.txt"))
    for rel in old_files:
        new = fresh / "snapshot" / rel
        if not new.exists():
            print(f"MISSING {rel}")
            differences += 1
            continue
        a, b = (baseline / "snapshot" / rel).read_text(), new.read_text()
        if a == b:
            print(f"identical {rel} ({len(a.encode())} bytes)")
        else:
            differences += 1
            print(f"DIFFERENT {rel}")
            sys.stdout.writelines(list(difflib.unified_diff(a.splitlines(True), b.splitlines(True), "baseline", "now"))[:40])
    print(f"{len(old_files) - differences} of {len(old_files)} files identical")
    return 1 if differences else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["record", "compare"])
    parser.add_argument("baseline", type=Path, help="folder of the recorded snapshot (outside the repository)")
    parser.add_argument("--only", nargs="*", help="cases to run (default: all)")
    parser.add_argument("--fresh", type=Path, help="compare: where to run the cases now (default: <baseline>-now)")
    args = parser.parse_args()
    if args.action == "record":
        run_cases(args.baseline, args.only)
        print(f"recorded {sum(1 for _ in (args.baseline / 'snapshot').rglob('*.txt'))} files in {args.baseline}")
        return
    fresh = args.fresh or args.baseline.with_name(args.baseline.name + "-now")
    run_cases(fresh, args.only)
    sys.exit(compare(args.baseline, fresh))


if __name__ == "__main__":
    main()
