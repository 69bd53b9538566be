"""Training budgets in epochs, fractional ones included, as ordinary train.py runs (kss.tasks.train).

A budget of b epochs of the training split is trained from scratch as ceil(b) epochs (at least one) on
b / ceil(b) of the split each (trainer.limit_train_batches): 0.111 -> 1 epoch on 11.1% of the batches,
1 -> 1 full epoch, 3 -> 3 full epochs, 1.5 -> 2 epochs on 75%. A cosine schedule is stepped per optimizer
step over the budget's own steps (budget_schedule), so every budget is a complete, short training rather
than the start of a longer one.
Each training is `run_train` with its own run directory (the budget is in its name: limit_train_batches
is not among a run's settings), so a finished one is reported from its metrics.json and an interrupted
one resumes from its last checkpoint. test=false: the test split stays unseen.

Used by the calibration of the proxy study (kss.tasks.calibration) and by multi-fidelity search (kss.tasks.halving).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

from kss import config as C
from kss.errors import KssError
from kss.tasks.train import run_train


def epochs_and_fraction(budget: float) -> tuple[int, float]:
    """Budget in epochs -> (trainer.max_epochs, trainer.limit_train_batches)."""
    epochs = max(1, math.ceil(budget - 1e-9))
    return epochs, budget / epochs


def budget_tag(budget: float) -> str:
    epochs, fraction = epochs_and_fraction(budget)
    return f"e{epochs}_f{fraction:.4g}"


def check_budgets(budgets, name: str, increasing: bool = True) -> list[float]:
    """A non-empty list of positive numbers (epochs), strictly increasing when asked; one line otherwise."""
    if isinstance(budgets, (str, bytes)) or not isinstance(budgets, Sequence):
        raise KssError(f"{name} must be a list of training budgets in epochs, e.g. [0.3,1,3] (got {budgets!r})")
    values = list(budgets)
    if not values or any(isinstance(b, bool) or not isinstance(b, (int, float)) or not b > 0 for b in values):
        raise KssError(f"{name} must be a non-empty list of positive budgets in epochs, e.g. [0.3,1,3] (got {values})")
    if increasing and any(b >= a for a, b in zip(values[1:], values)):
        raise KssError(f"{name} must increase from rung to rung (got {values})")
    return [float(b) for b in values]


def check_budget_fits(budget: float, batches_per_epoch: int, name: str) -> None:
    """A budget must give every epoch at least one batch (Lightning refuses zero)."""
    epochs, fraction = epochs_and_fraction(budget)
    if int(fraction * batches_per_epoch) < 1:
        raise KssError(f"{name}: a budget of {budget:g} epoch(s) is {epochs} epoch(s) on {fraction:.3g} of the "
                       f"{batches_per_epoch} training batches, less than one batch; raise it to at least "
                       f"{1 / batches_per_epoch:.3g} or use a smaller dataset.batch_size")


def batches_per_epoch(cfg: DictConfig) -> int:
    """Training batches of one full epoch (loads the data: missing data is refused here)."""
    data = C.data_module(cfg)
    data.setup()
    return math.ceil(len(data.train_set) / cfg.dataset.batch_size)


def budget_schedule(cfg: DictConfig) -> dict:
    """Overrides that anneal a cosine schedule per step over a budget's own steps, so every budget ends
    annealed as a full training does. Stepped per epoch (scheduler=cosine, SNASNet's), it does not decay at
    all within a one-epoch budget (T_max = 1: the learning rate stays at its peak) and ends a 3-epoch
    budget at a quarter of it. Other schedules are left as they are."""
    scheduler = cfg.get("scheduler") or {}
    if str(scheduler.get("_target_", "")).endswith("CosineAnnealingLR") and scheduler.get("interval", "epoch") == "epoch":
        return {"scheduler.interval": "step", "scheduler.T_max": None}
    return {}


def budget_job(cfg: DictConfig, genotype_file: Path, kernels, seed: int, epochs: int, fraction: float,
               group: str | None = None) -> DictConfig:
    """The config of one budgeted training: `epochs` epochs on `fraction` of the batches, annealed to its
    end, validation only (the test split stays unseen)."""
    return C.job_config(cfg, **{
        "kernel_set.kernels": list(kernels), "genotype": str(genotype_file), "seed": seed,
        # a float: Lightning reads an int as a number of batches (proxy.train_fraction=1 would be one batch)
        "trainer.max_epochs": epochs, "trainer.limit_train_batches": float(fraction), "test": False,
        "search_only": False, "wandb.group": group, **budget_schedule(cfg),
    })


def train_at_budget(cfg: DictConfig, out_dir: Path, genotype_file: Path, kernels, seed: int, budget: float,
                    group: str | None = None) -> dict:
    """metrics.json of one training of `genotype_file` for `budget` epochs (resumable, test split unseen)."""
    return run_train(budget_job(cfg, genotype_file, kernels, seed, *epochs_and_fraction(budget), group), out_dir)


def training_config(cfg: DictConfig) -> DictConfig:
    """A config that trains: `cfg` itself when it has the training groups (train.py, proxy.py, tests), else
    train.yaml composed with this command's own overrides (search.py drops the training groups; the same
    overrides, experiment presets included, give the same training settings train.py would use)."""
    if all(cfg.get(group) is not None for group in C.TRAINING_GROUPS):
        return cfg
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    if not (GlobalHydra.instance().is_initialized() and HydraConfig.initialized()):
        raise KssError("this search trains candidates and needs the training settings: run it with search.py or "
                       "train.py search_only=true")
    overrides = [o for o in HydraConfig.get().overrides.task if not o.lstrip("+~").startswith(("shard=", "shards="))]
    return compose(config_name="train", overrides=list(overrides))
