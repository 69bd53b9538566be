"""What settings and run files are called, without a config: the kernel sets conf/ defines, setting tags,
the budgets and their units, the failure record. The stage packages name things through this module; only
kss.config and kss/tasks read a composed Hydra config."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from kss.errors import KssError

FAILED = "failed.json"  # what a failed run leaves in its directory (kss.cli writes it, sweeps read it)
CONF = Path(__file__).resolve().parents[1] / "conf"


def read_kernel_sets(conf: Path = CONF) -> dict[str, tuple[int, ...]]:
    """The kernel_set group's options, name -> kernels, from conf/kernel_set/*.yaml (their only definition;
    set1 is SNASNet's). A file's `name:` must be its option name."""
    sets = {}
    for path in sorted((conf / "kernel_set").glob("*.yaml"), key=lambda p: (len(p.stem), p.stem)):
        option = OmegaConf.load(path)
        if option.get("name") != path.stem:
            raise KssError(f"{path} names itself {option.get('name')!r}; its name must be {path.stem!r}")
        sets[path.stem] = tuple(option.kernels)
    return sets


# The paper's kernel sets, as conf/ defines them.
KERNEL_SETS = read_kernel_sets()


def setting_tag(kernels, iters: int | None = None) -> str:
    """The paper's name for a setting: (3, 5), 1000 -> '3x3_5x5_1000x'."""
    tag = "_".join(f"{k}x{k}" for k in kernels)
    return f"{tag}_{iters}x" if iters is not None else tag


def kernel_set_name(kernels) -> str:
    return next((name for name, ks in KERNEL_SETS.items() if list(ks) == list(kernels)), "custom")


def kernel_set_override(kernels) -> str:
    """The override that selects `kernels`: kernel_set=set3, or kernel_set.kernels=[...] for a custom set."""
    name = kernel_set_name(kernels)
    return f"kernel_set={name}" if name != "custom" else f"kernel_set.kernels=[{','.join(map(str, kernels))}]"


# The budgets a search and a sweep's selection respect, and their units.
BUDGETS = {"max_params": "parameters", "max_energy_uj": "uJ per image", "max_sops": "synaptic operations per image"}


def check_budget(value, name: str = "max_params") -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0):
        raise KssError(f"budget.{name} must be > 0 (got {value}); use null for no budget")
