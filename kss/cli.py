"""What the top-level scripts share: bad input ends in one line on stderr, not a traceback;
inside a sweep, a failing job records why (failed.json) and lets the other jobs run."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable

from omegaconf import DictConfig

from kss.config import run_dir
from kss.errors import KssError

FAILED = "failed.json"


def run_task(task: Callable[[DictConfig], dict], cfg: DictConfig, kind: str) -> dict | None:
    try:
        result = task(cfg)
    except Exception as error:  # noqa: BLE001 - reported, below, in one line or in full
        if cfg.get("on_error") == "record":
            record_failure(cfg, kind, error)
            return None
        if isinstance(error, KssError):
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
        raise
    if cfg.get("on_error") == "record":  # a rerun that now succeeds: the old failure is history
        (run_dir() / FAILED).unlink(missing_ok=True)
    return result


def record_failure(cfg: DictConfig, kind: str, error: Exception) -> None:
    out_dir = run_dir()
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    logging.getLogger("kss").error("%s job failed: %s", kind, message, exc_info=not isinstance(error, KssError))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / FAILED).write_text(json.dumps({
        "kind": kind, "error": f"{type(error).__name__}: {message}", "kernels": list(cfg.kernel_set.kernels),
        "iters": cfg.iters, "seed": cfg.seed, "dataset": cfg.dataset.name,
    }, indent=2) + "\n")
