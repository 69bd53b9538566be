"""What the benchmarks share: configs composed from conf/ as the scripts compose them (so model sizes
are the presets', never restated here) and candidates built by the library's own code."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import kss  # noqa: F401  (registers the config resolvers)
from kss import config as C
from kss.search.candidate import candidate_network, candidate_rngs
from kss.search.setup import SearchSetup
from kss.space.genotype import Genotype, sample_genotype
from kss.space.network import ModelSpec
from kss.tasks.search import setup_from_config

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def compose_config(*overrides: str, config_name: str = "search") -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))


def model_spec(model: str, dataset: str, **changes) -> ModelSpec:
    """conf/model/<model>.yaml at conf/dataset/<dataset>.yaml's input shape (nothing is downloaded)."""
    cfg = compose_config(f"model={model}", f"dataset={dataset}")
    return dataclasses.replace(C.model_spec(cfg, C.data_module(cfg)), **changes)


def search_setup(*overrides: str) -> SearchSetup:
    """The SearchSetup search.py would run with these overrides."""
    cfg = compose_config(*overrides)
    return setup_from_config(cfg, C.data_module(cfg))


def candidate(setup: SearchSetup, index: int, device="cpu") -> tuple[Genotype, torch.nn.Module]:
    """Candidate `index` of `setup`'s search: drawn and initialised exactly as the search does."""
    rng, init_seed = candidate_rngs(setup.seed, index)
    genotype = sample_genotype(rng, setup.kernels, setup.spec.cell_type)
    return genotype, candidate_network(setup, genotype, init_seed, torch.device(device))
