"""Long runs' records kept in docs/results/ and brought back on a new machine: what the three long-run
scripts (fmnist_studies.py, guided_search.py, kernel_study.py) share, so a later session continues instead of
restarting. Records are kept (JSON, JSONL, study.db, genotypes), never logs; checkpoints only on request, of
the trainings still running at a stop (carry_checkpoints), and only until they finish.

    save(out, results, wanted)      copy new or changed records under `out` to `results` (same relative paths)
    restore(results, out, wanted)   copy what `results` has and `out` lacks back; a local file is never overwritten
                                    (whole_runs=True: only run folders `out` lacks entirely, never mixing a
                                    local run's records with a committed copy of another state of it)
    carry_checkpoints(out, results) the checkpoints/ of each unfinished training under `out` to `results`, so a
                                    new machine resumes it from its last finished epoch
    prune_checkpoints(out, results) delete the carried checkpoints of trainings that have finished since
    restore_checkpoints(results, out)  move those back, into trainings `out` has not finished and holds no
                                    checkpoint of, when carried from the same folder
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
from pathlib import Path
from typing import Callable, Iterator

Wanted = Callable[[Path], bool]  # given a path relative to the tree's root: is it a record to keep?


def records(root: Path, wanted: Wanted) -> Iterator[Path]:
    if root.exists():
        for path in sorted(root.rglob("*")):
            if path.is_file() and not path.name.endswith(".tmp") and wanted(path.relative_to(root)):
                yield path


def copy_file(src: Path, dst: Path) -> None:
    """Atomically; a study.db through SQLite's backup API, consistent while a search writes it (do not call it
    while that search is SIGSTOPped: the backup waits for the stopped writer's lock)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    if src.suffix == ".db":
        source, target = sqlite3.connect(src), sqlite3.connect(tmp)
        with target:
            source.backup(target)
        source.close(), target.close()
    else:
        shutil.copy2(src, tmp)
    shutil.copystat(src, tmp)  # the source's mtime: an unchanged record is not copied back and forth again
    tmp.replace(dst)


def finished_training(path: Path) -> bool:
    """A training's metrics.json once the training has ended (a run being written has no best_val_acc yet)."""
    try:
        return "best_val_acc" in json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return False


def outdated(dst: Path, src: Path) -> bool:
    """`dst` is missing or an older or other-sized copy of `src` (copy_file keeps the source's mtime)."""
    return not dst.exists() or dst.stat().st_mtime < src.stat().st_mtime or dst.stat().st_size != src.stat().st_size


def save(out: Path, results: Path, wanted: Wanted) -> int:
    """Copy every record under `out` that `results` lacks or holds an older copy of; returns how many."""
    copied = 0
    for src in records(out, wanted):
        if src.name == "metrics.json" and not finished_training(src):
            continue
        dst = results / src.relative_to(out)
        if outdated(dst, src):
            copy_file(src, dst)
            copied += 1
    return copied


def restore(results: Path, out: Path, wanted: Wanted, whole_runs: bool = False) -> int:
    """Copy what `results` holds and `out` lacks back into `out` (never over a local file); returns how many.
    whole_runs: each top-level folder is one run, restored only when `out` has no such folder (a local
    partial search beside a committed search.json would look finished; a local candidates.jsonl beside a
    committed study.db would not match it)."""
    restored = 0
    local_runs = {p.name for p in out.iterdir() if p.is_dir()} if whole_runs and out.exists() else set()
    for src in records(results, wanted):
        rel = src.relative_to(results)
        dst = out / rel
        if rel.parts[0] in local_runs:
            continue
        if not dst.exists():
            copy_file(src, dst)
            restored += 1
    return restored


CHECKPOINTS = "checkpoints"  # kss.tasks.train's folder of a run's checkpoints (last.ckpt, best-*.ckpt)
CARRIED = "carried.json"  # beside carried checkpoints: the folder they were written in


def _finished(run: Path) -> bool:
    return finished_training(run / "metrics.json")


def _checkpoint_files(folder: Path) -> list[Path]:
    """last.ckpt and the best epoch's file it names (ModelCheckpoint's best_model_path, absolute): read from
    last.ckpt itself, so a copy made while Lightning replaces its best file never pairs two epochs."""
    import torch

    last = folder / "last.ckpt"
    state = torch.load(last, map_location="cpu", weights_only=False)
    best = [Path(v["best_model_path"]) for k, v in state.get("callbacks", {}).items()
            if k.startswith("ModelCheckpoint") and v.get("best_model_path")]
    return [last, *(folder / b.name for b in best if b.parent == folder and (folder / b.name).exists())]


def carry_checkpoints(out: Path, results: Path) -> int:
    """Copy the checkpoints of every training under `out` that has a last.ckpt and has not finished to the same
    place under `results` (its best epoch's file too: a training that tests tests its best epoch), with the
    folder they came from (CARRIED); the copies of trainings finished since are prune_checkpoints' to delete.
    Returns how many files were copied."""
    copied = 0
    for last in sorted(out.rglob(f"{CHECKPOINTS}/last.ckpt")) if out.exists() else []:
        if _finished(last.parent.parent):
            continue
        target = results / last.parent.relative_to(out)
        files = _checkpoint_files(last.parent)
        for src in files:
            if outdated(target / src.name, src):
                copy_file(src, target / src.name)
                copied += 1
        names = {f.name for f in files}
        for stale in target.glob("*.ckpt"):  # an earlier best epoch's file, replaced since
            if stale.name not in names:
                stale.unlink()
        (target / CARRIED).write_text(json.dumps({"from": str(last.parent.resolve())}) + "\n")
    return copied


def prune_checkpoints(out: Path, results: Path) -> int:
    """Delete the carried checkpoints under `results` of trainings finished in either tree; returns how many runs."""
    pruned = 0
    for carried in sorted(results.rglob(CHECKPOINTS)) if results.exists() else []:
        rel = carried.parent.relative_to(results)
        if carried.is_dir() and (_finished(results / rel) or _finished(out / rel)):
            shutil.rmtree(carried)
            pruned += 1
    return pruned


def restore_checkpoints(results: Path, out: Path) -> int:
    """Move the carried checkpoints under `results` into the trainings under `out` that have not finished and
    hold no checkpoint folder of their own (a local checkpoint is never replaced); returns how many files.
    Moved, not copied: a resume that train.py refuses (its settings changed since) is then fixed by deleting
    the local run, and nothing brings the refused checkpoint back. Checkpoints carried from another folder
    are left where they are, with a warning: Lightning's checkpoint state names its files by absolute path."""
    restored = 0
    for carried in sorted(results.rglob(CHECKPOINTS)) if results.exists() else []:
        run = out / carried.parent.relative_to(results)
        if not carried.is_dir() or _finished(run) or (run / CHECKPOINTS).exists():
            continue
        origin = json.loads((carried / CARRIED).read_text())["from"] if (carried / CARRIED).exists() else None
        if origin != str((run / CHECKPOINTS).resolve()):
            print(f"warning: {carried} was carried from {origin}, not {run / CHECKPOINTS}; not restored (run from "
                  "that checkout path to resume it, or delete it to train that run from scratch)", file=sys.stderr)
            continue
        for src in sorted(carried.glob("*.ckpt")):
            copy_file(src, run / CHECKPOINTS / src.name)
            restored += 1
        shutil.rmtree(carried)
    return restored
