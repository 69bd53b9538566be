"""Train a searched SNN: python train.py genotype=<search.json | genotype file | snasnet_cifar10>

With no genotype, the R-score search runs first (same settings as search.py), then the winner trains.
"""

import hydra
from omegaconf import DictConfig

import kss  # noqa: F401  (registers the config resolvers)
from kss.cli import launch, run_task
from kss.tasks.entry import train_task


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    kind = "search" if cfg.search_only else "train"
    result = run_task(train_task, cfg, kind)
    # the optimised metric, for Hydra sweepers: the search's best R, or validation accuracy (never the test split)
    return result and result["best_score" if cfg.search_only else "best_val_acc"]


if __name__ == "__main__":
    launch(main)
