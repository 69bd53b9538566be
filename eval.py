"""Evaluate a trained checkpoint: python eval.py ckpt_path=<run dir or .ckpt> dataset=fashion_mnist [quantize=int8] [export=nir]

Rebuilds the network from the checkpoint alone and writes eval.json (accuracy, cost, latency, genotype).
"""

import hydra
from omegaconf import DictConfig

import kss  # noqa: F401  (registers the config resolvers)
from kss.cli import launch, run_task
from kss.deploy.evaluate import run_eval


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> float | None:
    result = run_task(run_eval, cfg, "eval")
    return result and result["test_acc"]


if __name__ == "__main__":
    launch(main)
