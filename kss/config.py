"""From a composed Hydra config to the plain objects the rest of kss takes."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from kss.errors import KssError
from kss.names import (BUDGETS, CONF, KERNEL_SETS, check_budget, kernel_set_name,  # noqa: F401  (kss.config's names too)
                       read_kernel_sets, setting_tag)
from kss.space.cost import CostTable
from kss.space.network import ModelSpec, check_kernels
from kss.space.neurons import NeuronSpec


def kernel_set(cfg: DictConfig) -> tuple[str, list[int]]:
    """(name, kernels); the name follows the kernels: [3, 5] is set3 whatever the option said."""
    kernels = list(cfg.kernel_set.kernels)
    check_kernels(kernels)
    return kernel_set_name(kernels), kernels


def neuron_spec(cfg: DictConfig) -> NeuronSpec:
    return NeuronSpec(**OmegaConf.to_container(cfg.neuron, resolve=True))


def model_fields(cfg: DictConfig) -> dict:
    """The model preset's shape settings (model.compile is how training runs it, not what it is)."""
    fields = OmegaConf.to_container(cfg.model, resolve=True)
    fields.pop("compile", None)
    return fields


def model_spec(cfg: DictConfig, data) -> ModelSpec:
    """The model preset, completed with the data's shape."""
    fields = model_fields(cfg)
    return ModelSpec(
        in_channels=data.in_channels, image_size=data.image_size, num_classes=data.num_classes, **fields
    )


def data_split(cfg: DictConfig) -> dict:
    """The dataset settings that decide which images a search scores (not where files live or loader speed)."""
    fields = OmegaConf.to_container(cfg.dataset, resolve=True)
    return {k: v for k, v in fields.items()
            if k not in ("root", "download", "batch_size", "num_workers", "augment", "score_batch_size")}


def data_module(cfg: DictConfig, batch_size: int | None = None):
    from kss.train.data import KssDataModule  # here: lightning and torchvision take ~2 s that --help and refusals skip

    fields = OmegaConf.to_container(cfg.dataset, resolve=True)
    fields.pop("score_batch_size", None)  # the scoring batch the dataset brings (score.batch_size), not the loaders'
    if batch_size is not None:
        fields["batch_size"] = batch_size
    return KssDataModule(seed=cfg.seed, **fields)


def logged_config(cfg: DictConfig) -> dict:
    """The resolved config as dashboards should see it: the kernel set named after its kernels."""
    data = OmegaConf.to_container(cfg, resolve=True)
    name, kernels = kernel_set(cfg)
    data["kernel_set"]["name"] = name
    data["setting"] = setting_tag(kernels, cfg.iters)
    return data


def run_tags(cfg: DictConfig) -> list[str]:
    """W&B tags: enough to filter the six kernel sets, iteration counts, seeds and datasets apart."""
    name, kernels = kernel_set(cfg)
    return [name, setting_tag(kernels), f"iters={cfg.iters}", f"seed={cfg.seed}", cfg.dataset.name,
            cfg.neuron.kind, *cfg.wandb.tags]


def budgets(cfg: DictConfig) -> dict:
    """Every budget of `budget:` (null: none), validated: {max_params, max_energy_uj, max_sops}."""
    values = {name: cfg.budget.get(name) for name in BUDGETS}
    for name, value in values.items():
        check_budget(value, name)
    return values


def cost_table(cfg: DictConfig):
    cost = cfg.get("cost") or {}
    return CostTable(**{k: cost[k] for k in ("e_mac_pj", "e_ac_pj", "state_bytes") if k in cost})


def job_config(cfg: DictConfig, **overrides) -> DictConfig:
    """A copy of `cfg` with one job's settings (dotted keys), for tasks that run jobs in-process."""
    job = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    for key, value in overrides.items():
        OmegaConf.update(job, key, value, force_add=True)
    return job


TRAINING_GROUPS = ("optimizer", "scheduler", "trainer")


def without_training(cfg: DictConfig) -> DictConfig:
    """A search's config without the training settings an experiment preset brings along."""
    with open_dict(cfg):
        for group in TRAINING_GROUPS:
            cfg.pop(group, None)
    return cfg


def run_dir() -> Path:
    """The running Hydra job's output directory."""
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise KssError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise KssError(f"device={name} but CUDA is not available here; use device=auto or device=cpu")
    return device


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _names_data(name: str, dataset: str, seed=None) -> bool:
    """Whether a run name ends with its dataset and a seed (`seed`, when given): ..._fashion_mnist_seed0."""
    seed_part = r"_seed\d+" if seed is None else f"_seed{seed}"
    return re.search(f"_{re.escape(dataset)}{seed_part}$", name) is not None


def architecture_tag(genotype: str | None, kernels, iters: int, dataset: str, seed: int) -> str:
    """Run-directory name of a training run: <searched setting or genotype>_<dataset>_seed<seed>; a
    search.json's folder that already names the dataset and seed is not named twice."""
    if genotype is None:
        return f"{setting_tag(list(kernels), iters)}_{dataset}_seed{seed}"
    stem = Path(str(genotype)).stem if str(genotype).endswith(".json") else str(genotype)
    if stem == "search":  # .../3x3_5x5_1000x_cifar10_seed0/search.json -> that folder's name
        stem = Path(str(genotype)).parent.name
    stem = _safe(stem)
    if _names_data(stem, dataset, seed):
        return stem
    # searched with another seed: ..._cifar10_seed0_seed1 (search seed 0, training seed 1)
    return f"{stem}_seed{seed}" if _names_data(stem, dataset) else f"{stem}_{dataset}_seed{seed}"


def checkpoint_tag(ckpt_path: str | None, quantize: str | None, export: str | None = None,
                   dataset: str | None = None) -> str:
    """Run-directory name of an evaluation, one per setting: <training run>[_<checkpoint>]_<precision>[_<export>]
    [_<dataset>, unless the training run's name ends with it]."""
    if ckpt_path is None:
        return "no_checkpoint"
    path = Path(str(ckpt_path))
    if path.suffix != ".ckpt":  # a training run directory
        run, parts = path.name, [path.name]
    else:
        run = path.parent.parent.name if path.parent.name == "checkpoints" else path.parent.name
        parts = [run, path.stem]
    parts.append(quantize or "fp32")
    if export:
        parts.append(str(export))
    if dataset and not _names_data(run, str(dataset)):
        parts.append(str(dataset))
    return _safe("_".join(parts))


def project_root() -> str:
    """The folder with conf/ and the scripts (a source checkout), else the current directory."""
    root = Path(__file__).resolve().parents[1]
    return str(root if (root / "conf").is_dir() and (root / "train.py").exists() else Path.cwd())


def list_groups(*groups: str) -> str:
    """'group: option, option' lines for --help: only the groups a command reads (Hydra's own list has them all)."""
    conf = Path(project_root()) / "conf"
    return "\n".join(f"{g}: {', '.join(sorted(f.stem for f in (conf / g).glob('*.yaml')))}" for g in groups)


def register_resolvers() -> None:
    """`${kss_tag:...}` and `${kss_arch:...}` name run directories in the paper's form; `${kss_times:a,b}` = a*b."""
    if not OmegaConf.has_resolver("kss_tag"):
        OmegaConf.register_new_resolver("kss_tag", lambda kernels: setting_tag(list(kernels)))
    if not OmegaConf.has_resolver("kss_strategy"):  # run directories: a guided search's gets _tpe, ...
        OmegaConf.register_new_resolver("kss_strategy", lambda strategy: "" if strategy == "random" else f"_{strategy}")
    if not OmegaConf.has_resolver("kss_arch"):
        OmegaConf.register_new_resolver("kss_arch", architecture_tag)
    if not OmegaConf.has_resolver("kss_ckpt"):
        OmegaConf.register_new_resolver("kss_ckpt", checkpoint_tag)
    if not OmegaConf.has_resolver("kss_root"):
        OmegaConf.register_new_resolver("kss_root", project_root)
    if not OmegaConf.has_resolver("kss_groups"):  # --help: ${kss_groups:dataset,model,...}
        OmegaConf.register_new_resolver("kss_groups", list_groups)
    if not OmegaConf.has_resolver("kss_hydra_subdir"):  # shards sharing a run directory keep their own .hydra/
        OmegaConf.register_new_resolver(
            "kss_hydra_subdir", lambda shard, shards: ".hydra" if shard is None else f".hydra/shard-{shard}-of-{shards}")
    if not OmegaConf.has_resolver("kss_times"):  # e.g. eta_min: ${kss_times:${optimizer.lr},0.01}
        OmegaConf.register_new_resolver("kss_times", lambda a, b: float(a) * float(b))
