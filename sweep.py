"""The study: kernel sets x iterations x seeds -> table, plots, model selection.

    python sweep.py                                   # the default study (six sets, 1000 iterations)
    python sweep.py kernel_sets=[set1,set3] iters=[1000,5000] seeds=[0,1] budget.max_params=10e6
    python sweep.py analyse=outputs/multirun/train_2026-11-26_10-00-00
"""

import hydra
from omegaconf import DictConfig

import kss  # noqa: F401  (registers the config resolvers)
from kss.cli import launch, run_task
from kss.study.sweep import run_sweep


@hydra.main(version_base="1.3", config_path="conf", config_name="sweep")
def main(cfg: DictConfig) -> None:
    run_task(run_sweep, cfg, "sweep")


if __name__ == "__main__":
    launch(main)
