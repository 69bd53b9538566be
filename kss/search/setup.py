"""What a search depends on (`SearchSetup`, validated once) and how its scoring uses the machine
(allocator, fused blocks)."""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import asdict, dataclass, field

import torch

from kss.errors import KssError
from kss.names import BUDGETS, check_budget
from kss.search.score import KERNELS, SCORE_VERSION, check_precision, memory_format
from kss.search.strategies import check_strategy
from kss.space.cost import CostTable
from kss.space.network import ModelSpec
from kss.space.neurons import NeuronSpec
from kss.space.params import check_budget_reachable


# Settings added after searches had been run: a stored search without one ran at its default
# (and one that stored the default resumes as well).
LATER_SETTINGS = {"shards": 1, "max_energy_uj": None, "max_sops": None, "cost_every": False, "precision": "fp32",
                  "layout": "nchw", "cudnn_benchmark": False, "carry_state": False, "score_version": 1,
                  "strategy": "random"}


@dataclass
class SearchSetup:
    """Everything a search depends on, validated."""

    kernel_set: str
    kernels: list[int]
    iters: int
    seed: int
    dataset: str
    spec: ModelSpec
    neuron: NeuronSpec
    score: str = "hamming"
    batch_size: int = 256
    repeats: int = 2
    carry_state: bool = True  # score.carry_state: repeats carry neuron state and dropout masks (SNASNet's final code)
    max_params: float | None = None
    data_split: dict | None = None  # dataset settings that decide which images are scored (val_size, ...)
    precision: str = "fp32"  # score.precision: fp32 (the reference's bits) | tf32 | bf16
    layout: str = "auto"  # score.layout: auto (NCHW; channels-last for bf16) | nchw | channels_last
    cudnn_benchmark: bool = False  # score.cudnn_benchmark: cuDNN's autotuner (CUDA)
    fused: bool | str = "auto"  # score.fused: compiled LIF/pool blocks; the same bits, so not a setting
    allocator: str = "keep_freed"  # score.allocator: glibc keeps freed memory while scoring; same bits, not a setting
    shards: int = 1  # how many processes split the candidates (kss.search.shards); 1: one process scores them all
    max_energy_uj: float | None = None  # filtered after scoring: the cost needs a forward pass
    max_sops: float | None = None
    cost_every: bool = False  # cost every scored candidate (always, when an energy or SOP budget is set)
    cost: CostTable = field(default_factory=CostTable)
    strategy: str = "random"  # search.strategy: random (SNASNet's sampler) | tpe | evolution | pareto (kss.search.guided)
    storage: str | None = None  # search.storage (guided): None = sqlite in the run dir; any SQLAlchemy URL; memory
    population: int = 20  # search.population: evolution's population size
    minimise: str | None = "params"  # search.minimise: pareto's second objective (params | energy_uj | sops)

    FUSED_FROM = 100  # candidates: below this, compiling (~10 s per layer shape on a CPU) does not pay off

    def __post_init__(self):
        if not isinstance(self.iters, int) or self.iters <= 0:
            raise KssError(f"iters must be a positive integer (got {self.iters}); e.g. iters=1000")
        if self.score not in KERNELS:
            raise KssError(f"unknown score kind {self.score!r}; use one of {', '.join(KERNELS)}")
        if self.repeats < 1:
            raise KssError(f"score.repeats must be >= 1 (got {self.repeats})")
        check_precision(self.precision, layout=self.layout)
        if not isinstance(self.carry_state, bool):
            raise KssError(f"score.carry_state must be true or false (got {self.carry_state!r})")
        if not isinstance(self.cudnn_benchmark, bool):
            raise KssError(f"score.cudnn_benchmark must be true or false (got {self.cudnn_benchmark!r})")
        if self.fused not in ("auto", True, False):
            raise KssError(f"score.fused must be auto, true or false (got {self.fused!r})")
        if self.allocator not in ALLOCATORS:
            raise KssError(f"score.allocator must be {' or '.join(ALLOCATORS)} (got {self.allocator!r})")
        for name in BUDGETS:
            check_budget(getattr(self, name), name)
        self.spec.validate(self.kernels)
        check_budget_reachable(self.max_params, self.spec, self.neuron)
        check_strategy(self)

    def settings(self) -> dict:
        """What the results depend on (iters is not: a longer search extends a shorter one)."""
        data = asdict(self)
        data.pop("iters")
        data.pop("fused")  # bit-identical either way (tests/test_equivalence.py)
        data.pop("allocator")  # where memory comes from, not what is computed (tests/test_search.py)
        data["layout"] = self.effective_layout()  # auto is NCHW (scoring_network's) unless bf16
        data["score_version"] = SCORE_VERSION
        # Cost settings change the result only through a budget; left out at their defaults, so
        # searches from before they existed still resume.
        if not self.cost_budgets():
            data.pop("cost")
        for name, default in LATER_SETTINGS.items():
            if name != "shards" and data[name] == default:
                data.pop(name)
        data.pop("storage")  # where the study lives, not what it finds
        if self.strategy != "evolution":
            data.pop("population")
        if self.strategy != "pareto":
            data.pop("minimise")
        return json.loads(json.dumps(data))

    def effective_layout(self) -> str:
        return "channels_last" if memory_format(self.precision, self.layout) == torch.channels_last else "nchw"

    def cost_budgets(self) -> dict:
        """The budgets that need a candidate's cost (a forward pass), when set."""
        return {name: value for name in ("max_energy_uj", "max_sops") if (value := getattr(self, name)) is not None}

    def exceeded(self, cost: dict) -> str | None:
        """The first cost budget `cost` exceeds, or None."""
        key = {"max_energy_uj": "energy_uj", "max_sops": "sops"}
        return next((name for name, limit in self.cost_budgets().items() if cost[key[name]] > limit), None)


log = logging.getLogger(__name__)

ALLOCATORS = ("keep_freed", "default")
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4  # glibc's mallopt parameters (malloc.h)
_GLIBC_MMAP_MAX = 65536  # glibc's default, put back after scoring
# Any mallopt of these switches glibc's dynamic mmap threshold off for the rest of the process, and nothing
# switches it back on: frozen where it stood (128 KiB in a process that has freed no large block yet), every
# later tensor over it is mmapped, faulted in, zeroed and unmapped again, and a training after the search ran
# 1.6x slower (issue 21). So scoring leaves the thresholds at the ceiling the dynamic rule climbs to (mmap
# 32 MiB on 64-bit, trim twice that): large tensors are recycled as in a process that has freed big blocks.
_GLIBC_DYNAMIC_MMAP_CEILING = 32 * 1024 * 1024


def _glibc():
    """glibc's malloc controls, or None (another C library, another OS)."""
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def uses_allocator(setup: SearchSetup, device: torch.device) -> str:
    """The allocator a search on `device` scores with: keep_freed only on a CPU with glibc."""
    return "keep_freed" if setup.allocator == "keep_freed" and device.type == "cpu" and _glibc() else "default"


@contextlib.contextmanager
def scoring_allocator(setup: SearchSetup, device: torch.device):
    """score.allocator=keep_freed (the default; Linux CPUs): while candidates are scored, glibc keeps freed
    memory in the process (no mmap for large blocks, no trimming) instead of handing every block over
    32 MB back to the kernel, which then faults in and zeroes each layer's output again. Measured at
    CIFAR-100 widths: 1.24x-1.39x per candidate for ~18% more peak memory (README, Speed); the same bits.
    Afterwards blocks are mmapped again above the dynamic rule's ceiling (32 MiB), and the kept memory is
    returned. score.allocator=default: untouched."""
    libc = _glibc() if uses_allocator(setup, device) == "keep_freed" else None
    if libc is None:
        yield
        return
    libc.mallopt(_M_MMAP_MAX, 0)
    libc.mallopt(_M_TRIM_THRESHOLD, -1)  # -1: never trim
    try:
        yield
    finally:
        libc.mallopt(_M_MMAP_MAX, _GLIBC_MMAP_MAX)
        if not (libc.mallopt(_M_MMAP_THRESHOLD, _GLIBC_DYNAMIC_MMAP_CEILING)
                and libc.mallopt(_M_TRIM_THRESHOLD, 2 * _GLIBC_DYNAMIC_MMAP_CEILING)):
            log.warning("glibc refused the mmap/trim thresholds after scoring: a training in this process may run "
                        "slower; score.allocator=default avoids it")
        libc.malloc_trim(0)


def use_fused(setup: SearchSetup, device: torch.device) -> bool:
    """score.fused=auto: on a CPU, for searches long enough to pay for compiling."""
    if setup.fused == "auto":
        return device.type == "cpu" and setup.iters >= setup.FUSED_FROM
    return bool(setup.fused) and device.type == "cpu"


def check_batch_fits(setup: SearchSetup, data) -> None:
    """The scoring batch must fit the training split; loads the data, so missing data is refused here too."""
    data.setup()
    n = len(data.train_set)
    if setup.batch_size > n:
        raise KssError(f"score.batch_size={setup.batch_size} is larger than the {setup.dataset} training split "
                       f"({n} images); pass score.batch_size={n} or less")
