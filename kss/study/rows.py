"""What a sweep's analysis produces and its plots draw: a job, a setting (a row of summary.csv), what
"better" means for a row, and the Pareto front of rows against a cost."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from kss.names import setting_tag


@dataclass
class Job:
    path: str
    kernels: list[int]
    iters: int
    seed: int
    dataset: str
    kind: str  # "train" or "search"
    status: str  # "complete", "failed", "incomplete", "missing"
    best_score: float | None = None
    params: int | None = None
    memory_fp32_bytes: int | None = None
    memory_int8_bytes: int | None = None
    search_seconds: float | None = None
    test_acc: float | None = None
    best_val_acc: float | None = None
    checkpoint: str | None = None
    genotype_file: str | None = None
    error: str | None = None
    # cost per image (kss.space.cost): the trained network's on test images, else the search winner's at init
    energy_uj: float | None = None
    sops: float | None = None
    firing_rate: float | None = None
    neuron_state_bytes: int | None = None
    cost_source: str | None = None  # "test" (trained) or "search" (at initialisation)
    strategy: str = "random"  # search.strategy (kss.search.guided): a guided job's setting is named <tag>_<strategy>
    best_so_far: list | None = field(default=None, repr=False)  # best feasible R after each candidate

    @property
    def setting(self) -> str:
        return setting_tag(self.kernels, self.iters) + ("" if self.strategy == "random" else f"_{self.strategy}")


@dataclass
class Setting:
    setting: str
    kernel_set: str
    kernels: list[int]
    iters: int
    dataset: str
    seeds: list[int]
    complete: int
    params_mean: float | None = None
    params_max: int | None = None
    memory_fp32_bytes: float | None = None
    memory_int8_bytes: float | None = None
    score_mean: float | None = None
    score_std: float | None = None
    search_seconds_mean: float | None = None
    search_seconds_std: float | None = None
    search_time_normalised: float | None = None
    test_acc_mean: float | None = None
    test_acc_std: float | None = None
    best_val_acc_mean: float | None = None
    best_val_acc_std: float | None = None
    vs_set1: dict | None = None  # paired by seed against kernel set (1, 3) at the same iters (kss.study.stats)
    energy_uj_mean: float | None = None  # per image (kss.space.cost)
    energy_uj_max: float | None = None
    sops_mean: float | None = None
    sops_max: float | None = None
    firing_rate_mean: float | None = None
    neuron_state_bytes: float | None = None
    cost_source: str | None = None  # "test" (trained networks), "search" (winners at init) or "mixed"
    best_job: str | None = field(default=None, repr=False)
    strategy: str = "random"
    # a guided setting: candidates until its best R reached the best R of the largest random search of the same
    # kernels and dataset (median over seeds; None where a seed never reached it), and how many seeds did
    trials_to_random_best: float | None = None
    reached_random_best: str | None = None


def quality(row: Setting) -> tuple[str, float | None]:
    """What 'better' means: validation accuracy when trained (the test split is never used to
    choose), test accuracy for runs without a validation split, else the search score."""
    if row.best_val_acc_mean is not None:
        return "best_val_acc", row.best_val_acc_mean
    return ("test_acc", row.test_acc_mean) if row.test_acc_mean is not None else ("score", row.score_mean)


def quality_std(row: Setting) -> float | None:
    return {"best_val_acc": row.best_val_acc_std, "test_acc": row.test_acc_std, "score": row.score_std}[quality(row)[0]]


QUALITY_LABELS = {"best_val_acc": "validation accuracy", "test_acc": "test accuracy", "score": "best R-score"}


def pareto_front(rows: list[Setting], cost: str = "params_mean") -> list[Setting]:
    """Settings no other setting beats with less (or equal) `cost` and higher quality; of equal points, the first."""
    front, best = [], -math.inf
    for r in sorted(rows, key=lambda r: (getattr(r, cost), -quality(r)[1])):
        if quality(r)[1] > best:
            front.append(r)
            best = quality(r)[1]
    return front
