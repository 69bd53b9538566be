"""The study behind `sweep.py`: kernel sets x iterations x seeds, as one Hydra multirun, then analysis.

The jobs are ordinary `train.py` (or `search.py`) runs, launched with `-m` so any Hydra launcher
works (local, joblib, submitit/SLURM). Each job writes into `<sweep>/jobs/<setting>_seed<seed>/`;
a rerun finds finished jobs finished (they report, not recompute) and resumes unfinished ones.
A failing job writes failed.json and the others go on; the analysis lists it. The plan, the
command and the estimates are made from plain values here; kss.tasks.sweep reads the config.
"""

from __future__ import annotations

import json
import logging
import shlex
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from kss.names import KERNEL_SETS, setting_tag
from kss.errors import KssError
from kss.search.strategies import STRATEGIES
from kss.space.network import check_kernels
from kss.study.analysis import PLAN, analyse

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]  # where train.py and search.py live
# Quoted: Hydra's override grammar takes a nested interpolation only inside quotes. A guided strategy adds
# _<strategy> after the iterations (kss_strategy: nothing for random, so random jobs keep their folders).
JOB_SUBDIR = "'${kss_tag:${kernel_set.kernels}}_${iters}x${kss_strategy:${search.strategy}}_seed${seed}'"


def resolve_kernel_sets(entries) -> list[list[int]]:
    """Names (set1..set6) or explicit kernel lists ([3], [3,5,7]) -> kernel lists."""
    if isinstance(entries, (str, int)):  # kernel_sets=set3
        entries = [entries]
    entries = list(entries) if entries is not None else []
    if not entries:
        raise KssError("kernel_sets is empty; e.g. kernel_sets=[set1,set3] or kernel_sets=[[1],[3],[5],[7]]")
    resolved = []
    for entry in entries:
        if isinstance(entry, str):
            if entry not in KERNEL_SETS:
                raise KssError(f"unknown kernel set {entry!r} in kernel_sets; use {', '.join(KERNEL_SETS)} or a list like [3,5]")
            resolved.append(list(KERNEL_SETS[entry]))
        else:
            kernels = list(entry) if _is_list(entry) else [entry]
            check_kernels(kernels)
            resolved.append(kernels)
    return resolved


def _is_list(value) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str)  # a list, tuple or OmegaConf ListConfig


def as_list(name: str, values) -> list:
    values = list(values) if _is_list(values) else [values]
    if not values:
        raise KssError(f"{name} is empty; give at least one value, e.g. {name}=[1000]")
    if name == "iters" and any(not isinstance(v, int) or v <= 0 for v in values):
        raise KssError(f"iters must be positive integers (got {values})")
    return values


def plan(kernel_sets: list[list[int]], iters: list[int], seeds: list, strategies: list[str], *, train: bool,
         dataset: str, limits: dict) -> dict:
    """The sweep's jobs, from resolved lists (resolve_kernel_sets, as_list, resolve_strategies) and the
    budgets (`limits`: max_params, max_energy_uj, max_sops)."""
    jobs = [{"kernels": k, "iters": n, "seed": s, "dir": f"jobs/{setting_tag(k, n)}{'' if g == 'random' else '_' + g}_seed{s}",
             **({} if g == "random" else {"strategy": g})}
            for k in kernel_sets for n in iters for g in strategies for s in seeds]
    return {"kind": "train" if train else "search", "dataset": dataset, "kernel_sets": kernel_sets,
            "iters": iters, "seeds": seeds, **({} if strategies == ["random"] else {"strategies": strategies}),
            **limits, "jobs": jobs}


def resolve_strategies(entries) -> list[str]:
    """strategies=[random,tpe]: search.strategy per job (kss.search.guided), compared like kernel sets."""
    entries = [entries] if isinstance(entries, str) else list(entries or [])
    if not entries:
        raise KssError("strategies is empty; e.g. strategies=[random,tpe]")
    if "halving" in entries:  # it trains its candidates: a sweep's training-free jobs and R analysis do not apply
        raise KssError("strategies cannot hold halving (a halving search trains its candidates): run `python search.py "
                       "search.strategy=halving kernel_set=<set>` per set, then `train.py genotype=<its search.json>`")
    unknown = [e for e in entries if e not in STRATEGIES]
    if unknown:
        raise KssError(f"unknown strategy {unknown[0]!r} in strategies; use {', '.join(STRATEGIES)}")
    return list(dict.fromkeys(entries))


def job_command(the_plan: dict, name: str, sweep_dir: Path, passed: list[str], hydra_passed: list[str]) -> list[str]:
    """The one multirun of train.py that runs the plan's jobs; `passed`: the user's job-level overrides,
    `hydra_passed`: their launcher overrides, both forwarded; `name`: the sweep's W&B group."""
    # Always train.py: its config accepts every override a training sweep does (experiment, trainer, ...);
    # search_only=true makes a job stop after the search.
    script = ROOT / "train.py"
    lists = ",".join("[" + ",".join(map(str, k)) + "]" for k in the_plan["kernel_sets"])
    return [
        sys.executable, str(script), "-m",
        f"kernel_set.kernels={lists}",
        f"iters={','.join(map(str, the_plan['iters']))}",
        f"seed={','.join(map(str, the_plan['seeds']))}",
        *([f"search.strategy={','.join(the_plan['strategies'])}"] if "strategies" in the_plan else []),
        *passed,
        f"wandb.group={name}",
        "on_error=record",
        f"search_only={str(the_plan['kind'] != 'train').lower()}",
        f"hydra.sweep.dir={sweep_dir / 'jobs'}",
        f"hydra.sweep.subdir={JOB_SUBDIR}",
        *hydra_passed,
    ]


def estimate(the_plan: dict, search_roots: list[Path], model: dict, max_epochs: int | None,
             probe: Callable[[list[int]], tuple[list[float], float | None]]) -> dict[str, tuple]:
    """Seconds per job from earlier runs with the same dataset and model (`model`: the preset's shape
    fields): candidates/s and images/s. Kernels no earlier run measured are measured now:
    `probe(kernels)` -> ([candidates/s], seconds per training epoch or None)."""
    train = the_plan["kind"] == "train"
    rates: dict[tuple, list[float]] = {}
    images_per_second = []
    for root in search_roots:
        for path in Path(root).rglob("search.json"):
            try:
                s = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            same = s.get("dataset") == the_plan["dataset"] and all(s.get("model", {}).get(k) == v for k, v in model.items())
            # a search that scored nothing (all over budget) says nothing about the speed of scoring
            if same and s.get("candidates_per_second") and s.get("candidates_scored"):
                rates.setdefault(tuple(s["kernels"]), []).append(s["candidates_per_second"])
                metrics = path.parent / "metrics.json"
                if metrics.exists():
                    m = json.loads(metrics.read_text())
                    if m.get("images_per_second") and m.get("train_images_per_epoch"):
                        images_per_second.append(m["train_images_per_epoch"] / m["images_per_second"])
    per_epoch = statistics.median(images_per_second) if images_per_second else None
    for kernels in {tuple(job["kernels"]) for job in the_plan["jobs"]} - rates.keys():
        rates[kernels], probe_epoch = probe(list(kernels))  # nothing measured yet: measure it now
        per_epoch = per_epoch or probe_epoch
    out = {}
    for job in the_plan["jobs"]:
        cps = statistics.median(rates[tuple(job["kernels"])]) if tuple(job["kernels"]) in rates else None
        search_s = job["iters"] / cps if cps else None
        train_s = per_epoch * max_epochs if train and per_epoch else (0.0 if not train else None)
        out[job["dir"]] = (search_s, train_s)
    return out


def print_plan(name: str, the_plan: dict, sweep_dir: Path, command: list[str], guesses: dict[str, tuple]) -> None:
    """The dry run's page: each job done or its estimate (`guesses`: estimate's), the total, the command."""
    done_file = "metrics.json" if the_plan["kind"] == "train" else "search.json"
    print(f"sweep {name}: {len(the_plan['jobs'])} {the_plan['kind']} jobs on {the_plan['dataset']} -> {sweep_dir}")
    total, unknown = 0.0, 0
    for job in the_plan["jobs"]:
        done = (sweep_dir / job["dir"] / done_file).exists()
        parts = guesses[job["dir"]]
        if not done:
            total += sum(p or 0 for p in parts)
            unknown += None in parts
        when = "done" if done else "  ".join(
            f"{what} " + (f"~{p / 60:.1f} min" if p is not None else "unknown")
            for what, p in zip(("search", "train"), parts) if p != 0.0)
        print(f"  {setting_tag(job['kernels'], job['iters']):<22} seed {job['seed']:<3} {when}")
    print(f"estimated remaining: ~{total / 60:.1f} min" + (f" (+ {unknown} jobs with parts of no measured speed yet)" if unknown else ""))
    print("(from earlier runs with the same dataset and model, or a few seconds of measurement here)")
    print("command: " + shlex.join(command))


def launch(the_plan: dict, command: list[str], sweep_dir: Path, limits: dict) -> tuple[dict, int]:
    """Write the plan, run the jobs' command, analyse what finished under the budgets `limits`:
    (analyse's summary, the launcher's exit status)."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / PLAN).write_text(json.dumps(the_plan, indent=2) + "\n")
    log.info("launching %d jobs: %s", len(the_plan["jobs"]), " ".join(command))
    result = subprocess.run(command, cwd=Path.cwd())
    if result.returncode != 0:
        log.error("the job launcher exited with %d; analysing what finished", result.returncode)
    return analyse(sweep_dir, **limits), result.returncode
