"""What search.py and train.py call. Multi-fidelity search (search.strategy=halving, kss.tasks.halving) trains
its candidates through the training task, so it sits above both tasks and is dispatched here: the training-free
search task (kss.tasks.search) and the training task (kss.tasks.train) never import it."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from kss import config as C
from kss.search.records import SUMMARY
from kss.tasks.halving import run_halving
from kss.tasks.search import refuse_shards, run_search
from kss.tasks.train import check_training_config, run_train


def is_halving(cfg: DictConfig) -> bool:
    return (cfg.get("search") or {}).get("strategy") == "halving"


def search_task(cfg: DictConfig, out_dir: str | Path | None = None) -> dict:
    """search.py: search.json's content out (halving trains its candidates; every other strategy scores them)."""
    if is_halving(cfg):
        return run_halving(cfg, Path(out_dir or C.run_dir()))
    return run_search(cfg, out_dir)


def train_task(cfg: DictConfig, out_dir: str | Path | None = None) -> dict:
    """train.py: metrics.json's content out. Without a genotype, search.strategy=halving searches first (its rungs
    and search.json in the run dir), then its winner is trained there."""
    if not is_halving(cfg) or cfg.genotype is not None:
        return run_train(cfg, out_dir)
    if cfg.get("search_only"):
        return search_task(cfg, out_dir)
    refuse_shards(cfg, "train.py")  # it would train the best of one shard's candidates
    out_dir = Path(out_dir or C.run_dir())
    check_training_config(cfg)
    run_halving(cfg, out_dir)
    return run_train(C.job_config(cfg, genotype=str(out_dir / SUMMARY)), out_dir)
