"""The task behind `proxy.py`: the proxy study (kss.tasks.proxy_study) or, with proxy.calibrate=true, its budget
calibration (kss.tasks.calibration)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from kss import config as C
from kss.errors import KssError
from kss.tasks.proxy_study import run_study
from kss.study.sweep import resolve_kernel_sets
from kss.tasks.calibration import run_calibration
from kss.tasks.search import refuse_shards


def run_proxy(cfg: DictConfig, out_dir: str | Path | None = None) -> dict:
    """Config in, proxy.json's (or calibration.json's) content out."""
    out_dir = Path(out_dir or C.run_dir())
    kernel_sets = resolve_kernel_sets(cfg.kernel_sets)
    if cfg.proxy.get("calibrate", False) not in (True, False):
        raise KssError(f"proxy.calibrate must be true or false (got {cfg.proxy.calibrate!r})")
    if cfg.proxy.get("calibrate"):
        refuse_shards(cfg, "proxy.py")
        return run_calibration(cfg, out_dir, kernel_sets, C.resolve_device(cfg.device))
    return run_study(cfg, out_dir, kernel_sets)
