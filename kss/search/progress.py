"""What a search says while it runs: how long the rest will take, and how to resume after Ctrl-C."""

from __future__ import annotations

import contextlib

from kss.errors import Interrupted


def say_how_long(bar, seconds: float, remaining: int, device, compiled: float | None = None) -> None:
    """One line after the first timed candidate: what the whole search will take on this machine."""
    total = seconds * remaining
    hours = total / 3600
    if compiled is None:
        line = f"first candidate took {seconds:.1f} s on {device}: the remaining {remaining} take about "
    else:
        line = (f"a candidate takes {seconds:.1f} s on {device} (the first took {compiled:.1f} s, compiling "
                f"score.fused's blocks): the remaining {remaining} take about ")
    line += f"{hours:.1f} h" if hours >= 1 else f"{total / 60:.0f} min" if total >= 60 else f"{total:.0f} s"
    if device.type == "cpu" and hours >= 1:
        line += ("; a CPU-sized real-data search instead: "
                 "python search.py dataset=fashion_mnist model=cpu iters=50 score.batch_size=128")
    bar.write(line)


@contextlib.contextmanager
def interruptible(records: list, total: int, label: str = ""):
    """Ctrl-C ends the search in one line; every finished candidate is already on disk."""
    try:
        yield
    except KeyboardInterrupt:
        what = f"{label} " if label else ""
        raise Interrupted(f"{what}interrupted after {len(records)} of {total} candidates; "
                          "rerun the same command to resume") from None
