"""One process per run directory: a second one (the same command started twice, a requeued SLURM
job while the old one runs) refuses in one line naming the holder, or waits if asked to.

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


@contextlib.contextmanager
def run_lock(out_dir: Path, wait: bool = False):
    if _is_launched_rank():
        yield
        return
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = _held.setdefault(out_dir, FileLock(out_dir / LOCK))
    try:
        lock.acquire(timeout=-1 if wait else 0)
    except Timeout:
        owner = (out_dir / OWNER).read_text().strip() if (out_dir / OWNER).exists() else "another process"
        raise KssError(f"{out_dir} is in use by {owner}; wait for it to finish (or pass lock_wait=true), "
                       "or use another hydra.run.dir") from None
    first = lock.lock_counter == 1
    if first:
        (out_dir / OWNER).write_text(f"pid {os.getpid()} on {socket.gethostname()} ({' '.join(sys.argv[:3])})\n")
    try:
        yield
    finally:
        if first:
            (out_dir / OWNER).unlink(missing_ok=True)
        lock.release()
