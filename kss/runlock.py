"""One process per run directory: a second one (the same command started twice, a requeued SLURM
job while the old one runs) refuses in one line naming the holder, or waits if asked to.

A sharded search takes one lock per shard (`name`), so its shards run side by side in one
directory, and the directory's own lock only for a moment (settings, merge).

The lock is an OS file lock (filelock), so a crash releases it; the owner file only names the holder.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from pathlib import Path

from filelock import FileLock, Timeout

from kss.errors import KssError

LOCK, OWNER = ".kss.lock", ".kss.lock.owner"
_held: dict[Path, FileLock] = {}  # re-entrant within a process: training holds its dir while its search runs


def _is_launched_rank() -> bool:
    """A DDP worker that Lightning started for a run whose rank 0 already holds the lock."""
    return any(int(os.environ.get(name, "0") or 0) > 0 for name in ("LOCAL_RANK", "RANK", "NODE_RANK"))


def is_lock_file(name: str) -> bool:
    """The directory's lock or a shard's lock (not an owner file: that one means a holder, now or crashed)."""
    return name.startswith(".kss.") and name.endswith(".lock")


def is_held(out_dir: Path, name: str) -> bool:
    """Whether another process holds lock `name` in `out_dir` now (e.g. a shard that is running)."""
    path = Path(out_dir) / name
    if not path.exists():
        return False
    probe = FileLock(path)
    try:
        probe.acquire(timeout=0)
    except Timeout:
        return True
    probe.release()
    return False


@contextlib.contextmanager
def run_lock(out_dir: Path, wait: bool | float = False, name: str = LOCK):
    """Hold `out_dir` (lock file `name`); `wait`: False refuses at once, True waits, a number waits that many seconds."""
    if _is_launched_rank():
        yield
        return
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    path, owner_path = out_dir / name, out_dir / f"{name}.owner"
    lock = _held.setdefault(path, FileLock(path))
    try:
        lock.acquire(timeout=-1 if wait is True else float(wait))
    except Timeout:
        owner = owner_path.read_text().strip() if owner_path.exists() else "another process"
        what = out_dir if name == LOCK else f"{out_dir} ({name.strip('.').removeprefix('kss.').removesuffix('.lock')})"
        raise KssError(f"{what} is in use by {owner}; wait for it to finish (or pass lock_wait=true), "
                       "or use another hydra.run.dir") from None
    first = lock.lock_counter == 1
    if first:
        owner_path.write_text(f"pid {os.getpid()} on {socket.gethostname()} ({' '.join(sys.argv[:3])})\n")
    try:
        yield
    finally:
        if first:
            owner_path.unlink(missing_ok=True)
        lock.release()
