"""Training-free architecture search: python search.py kernel_set=set3 iters=1000"""

import hydra
from omegaconf import DictConfig

import kss  # noqa: F401  (registers the config resolvers)
from kss.cli import launch, run_task
from kss.config import without_training
from kss.tasks.entry import search_task


@hydra.main(version_base="1.3", config_path="conf", config_name="search")
def main(cfg: DictConfig) -> float | None:
    result = run_task(search_task, without_training(cfg), "search")
    return result["best_score"] if result else None  # the optimised metric, for Hydra sweepers


if __name__ == "__main__":
    launch(main)
