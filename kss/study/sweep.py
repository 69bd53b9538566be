"""The study behind `sweep.py`: kernel sets x iterations x seeds, as one Hydra multirun, then analysis.

The jobs are ordinary `train.py` (or `search.py`) runs, launched with `-m` so any Hydra launcher
works (local, joblib, submitit/SLURM). Each job writes into `<sweep>/jobs/<setting>_seed<seed>/`;
a rerun finds finished jobs finished (they report, not recompute) and resumes unfinished ones.
A failing job writes failed.json and the others go on; the analysis lists it.
"""

from __future__ import annotations

import json
import logging
import shlex
import statistics
import subprocess
from dataclasses import asdict
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from kss import config as C
from kss.cli import FAILED, checked, discard_run_dir
from kss.config import KERNEL_SETS, budgets, model_fields, run_dir, setting_tag
from kss.errors import KssError
from kss.search.candidate import evaluate_candidate
from kss.search.strategies import STRATEGIES
from kss.space.network import check_kernels
from kss.study.analysis import PLAN, analyse
from kss.tasks.search import setup_from_config
from kss.tasks.train import probe_epoch_seconds
from kss.tracking import image, table, wandb_run

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]  # where train.py and search.py live
SWEEP_KEYS = {"name", "kernel_sets", "iters", "seeds", "strategies", "train", "analyse", "dry_run"}
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
            kernels = list(entry) if OmegaConf.is_list(entry) or isinstance(entry, (list, tuple)) else [entry]
            check_kernels(kernels)
            resolved.append(kernels)
    return resolved


def as_list(name: str, values) -> list:
    values = list(values) if OmegaConf.is_list(values) or isinstance(values, (list, tuple)) else [values]
    if not values:
        raise KssError(f"{name} is empty; give at least one value, e.g. {name}=[1000]")
    if name == "iters" and any(not isinstance(v, int) or v <= 0 for v in values):
        raise KssError(f"iters must be positive integers (got {values})")
    return values


def plan(cfg: DictConfig) -> dict:
    kernel_sets = resolve_kernel_sets(cfg.kernel_sets)
    iters, seeds = as_list("iters", cfg.iters), as_list("seeds", cfg.seeds)
    strategies = resolve_strategies(cfg.get("strategies", ["random"]))
    limits = budgets(cfg)
    jobs = [{"kernels": k, "iters": n, "seed": s, "dir": f"jobs/{setting_tag(k, n)}{'' if g == 'random' else '_' + g}_seed{s}",
             **({} if g == "random" else {"strategy": g})}
            for k in kernel_sets for n in iters for g in strategies for s in seeds]
    return {"kind": "train" if cfg.train else "search", "dataset": cfg.dataset.name, "kernel_sets": kernel_sets,
            "iters": iters, "seeds": seeds, **({} if strategies == ["random"] else {"strategies": strategies}),
            **limits, "jobs": jobs}


def resolve_strategies(entries) -> list[str]:
    """strategies=[random,tpe]: search.strategy per job (kss.search.guided), compared like kernel sets."""
    entries = [entries] if isinstance(entries, str) else list(entries or [])
    if not entries:
        raise KssError("strategies is empty; e.g. strategies=[random,tpe]")
    unknown = [e for e in entries if e not in STRATEGIES]
    if unknown:
        raise KssError(f"unknown strategy {unknown[0]!r} in strategies; use {', '.join(STRATEGIES)}")
    return list(dict.fromkeys(entries))


def job_command(cfg: DictConfig, the_plan: dict, sweep_dir: Path, passed: list[str], hydra_passed: list[str]) -> list[str]:
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
        f"wandb.group={cfg.name}",
        "on_error=record",
        f"search_only={str(not cfg.train).lower()}",
        f"hydra.sweep.dir={sweep_dir / 'jobs'}",
        f"hydra.sweep.subdir={JOB_SUBDIR}",
        *hydra_passed,
    ]


def estimate(cfg: DictConfig, the_plan: dict, search_roots: list[Path]) -> dict[str, tuple]:
    """Seconds per job from earlier runs with the same dataset and model: candidates/s and images/s."""
    model = model_fields(cfg)
    rates: dict[tuple, list[float]] = {}
    images_per_second = []
    for root in search_roots:
        for path in Path(root).rglob("search.json"):
            try:
                s = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            same = s.get("dataset") == cfg.dataset.name and all(s.get("model", {}).get(k) == v for k, v in model.items())
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
        rates[kernels], probe_epoch = probe(cfg, list(kernels))  # nothing measured yet: measure it now
        per_epoch = per_epoch or probe_epoch
    out = {}
    for job in the_plan["jobs"]:
        cps = statistics.median(rates[tuple(job["kernels"])]) if tuple(job["kernels"]) in rates else None
        search_s = job["iters"] / cps if cps else None
        train_s = per_epoch * cfg.trainer.max_epochs if cfg.train and per_epoch else (0.0 if not cfg.train else None)
        out[job["dir"]] = (search_s, train_s)
    return out


def probe(cfg: DictConfig, kernels: list[int], candidates: int = 2, steps: int = 3) -> tuple[list[float], float | None]:
    """Seconds of measurement on this machine: candidates/s of the search, and seconds per training epoch
    from a few optimizer steps (None when the sweep does not train)."""
    import time

    import torch

    # a sweep's iters is a list; a job's is one number
    job = C.job_config(cfg, **{"kernel_set.kernels": kernels, "iters": candidates})
    data = C.data_module(job)
    setup = setup_from_config(job, data)
    batches = data.search_batches(setup.batch_size, setup.repeats, setup.seed)
    device = C.resolve_device(cfg.device)
    with torch.random.fork_rng():
        start = time.perf_counter()
        for index in range(candidates):
            evaluate_candidate(setup, index, [b.to(device) for b in batches], device)
        per_second = candidates / (time.perf_counter() - start)
    return [per_second], probe_epoch_seconds(job, data, steps) if cfg.train else None


def print_plan(cfg: DictConfig, the_plan: dict, sweep_dir: Path, command: list[str]) -> None:
    guesses = estimate(cfg, the_plan, [sweep_dir, Path(cfg.paths.output_dir)])
    done_file = "metrics.json" if cfg.train else "search.json"
    print(f"sweep {cfg.name}: {len(the_plan['jobs'])} {the_plan['kind']} jobs on {cfg.dataset.name} -> {sweep_dir}")
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


def run_sweep(cfg: DictConfig, sweep_dir: str | Path | None = None, passed: list[str] | None = None,
              hydra_passed: list[str] | None = None) -> dict:
    """Plan, launch the remaining jobs, analyse. `passed`: the user's job-level overrides, forwarded."""
    if cfg.analyse:
        summary = analyse(Path(cfg.analyse), **budgets(cfg))
        print((Path(cfg.analyse) / "summary.md").read_text())
        return summary
    from_hydra = sweep_dir is None
    if from_hydra:
        from hydra.core.hydra_config import HydraConfig

        hydra = HydraConfig.get()
        sweep_dir = run_dir()
        passed = [o for o in hydra.overrides.task if o.split("=")[0].lstrip("+~") not in SWEEP_KEYS]
        hydra_passed = [o for o in hydra.overrides.hydra if o.startswith(("hydra/launcher", "hydra.launcher"))]
    sweep_dir = Path(sweep_dir).resolve()
    the_plan = plan(cfg)
    command = job_command(cfg, the_plan, sweep_dir, passed or [], hydra_passed or [])
    checked()  # the config tree (extras.print_config), once the input is valid
    if cfg.dry_run:
        print_plan(cfg, the_plan, sweep_dir, command)
        if from_hydra:  # a dry run writes nothing: not even the folder Hydra made for it
            discard_run_dir(sweep_dir)
        return {"plan": the_plan, "command": command}
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / PLAN).write_text(json.dumps(the_plan, indent=2) + "\n")
    log.info("launching %d jobs: %s", len(the_plan["jobs"]), " ".join(command))
    result = subprocess.run(command, cwd=Path.cwd())
    if result.returncode != 0:
        log.error("the job launcher exited with %d; analysing what finished", result.returncode)
    summary = analyse(sweep_dir, **budgets(cfg))
    log_summary_to_wandb(cfg, sweep_dir, summary)
    print((sweep_dir / "summary.md").read_text())
    failed = [job for job in summary["jobs"] if job.status == "failed"]
    if failed:  # what could be analysed is written; the exit code says that not everything ran
        raise KssError(f"{len(failed)} of {len(summary['jobs'])} jobs failed (summary.md lists why): "
                       + ", ".join(str(Path(job.path) / FAILED) for job in failed))
    if result.returncode != 0:
        raise KssError(f"the job launcher exited with {result.returncode}; rerun the same command to run "
                       "what did not finish")
    return summary


def log_summary_to_wandb(cfg: DictConfig, sweep_dir: Path, summary: dict) -> None:
    """The sweep's summary table and plots as one W&B run (job_type 'summary')."""
    rows = [asdict(r) for r in summary["settings"]]
    columns = [c for c in rows[0] if c not in ("best_job",)] if rows else []
    with wandb_run(cfg.wandb.mode, cfg.wandb.project, sweep_dir, "summary", group=cfg.name, name=f"{cfg.name}-summary",
                   tags=[cfg.dataset.name]) as run:
        if run is None:
            return
        data = table(columns, [[json.dumps(r[c]) if isinstance(r[c], (list, dict)) else r[c] for c in columns]
                               for r in rows])
        run.log({"summary": data, **{p.stem: image(p) for p in summary["plots"]}})
        run.summary["selection"] = summary["selection"]["message"]
