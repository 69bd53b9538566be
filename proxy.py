"""Does the score predict accuracy? python proxy.py experiment=fmnist_cpu kernel_sets=[set1,set3] iters=200

Searches each kernel set, trains picks spread over the score range under one budget, and reports
Kendall's tau / Spearman's rho of every proxy (R, NASWOT, params, random) against validation accuracy.
"""

import hydra
from omegaconf import DictConfig

import kss  # noqa: F401  (registers the config resolvers)
from kss.cli import launch, run_task
from kss.study.proxy import run_proxy


@hydra.main(version_base="1.3", config_name="proxy", config_path="conf")
def main(cfg: DictConfig) -> float | None:
    result = run_task(run_proxy, cfg, "proxy")
    pooled = (result or {}).get("correlations", {}).get("pooled", {}).get("hamming", {})
    return pooled.get("tau")  # the study's headline, for Hydra sweepers


if __name__ == "__main__":
    launch(main)
