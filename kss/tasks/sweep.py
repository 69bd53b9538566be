"""The task behind `sweep.py`: the config (and Hydra's overrides) turned into a plan once, the plan's jobs
launched and analysed (kss.study.sweep, kss.study.analysis), the summary logged to W&B."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from kss import config as C
from kss.cli import checked, discard_run_dir
from kss.names import FAILED
from kss.config import budgets, model_fields, run_dir
from kss.errors import KssError
from kss.search.candidate import evaluate_candidate
from kss.study.analysis import analyse
from kss.study.sweep import (as_list, estimate, job_command, launch, plan, print_plan, resolve_kernel_sets,
                             resolve_strategies)
from kss.tasks.search import setup_from_config
from kss.tasks.train import probe_epoch_seconds
from kss.tracking import image, table, wandb_run

# The sweep's own keys; every other override of the command is the jobs', forwarded to them.
SWEEP_KEYS = {"name", "kernel_sets", "iters", "seeds", "strategies", "train", "analyse", "dry_run"}


def _plain(value):
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def plan_from_config(cfg: DictConfig) -> dict:
    """kss.study.sweep.plan from the config's kernel_sets, iters, seeds, strategies and budgets; each refused
    in one line."""
    kernel_sets = resolve_kernel_sets(_plain(cfg.kernel_sets))
    iters, seeds = as_list("iters", _plain(cfg.iters)), as_list("seeds", _plain(cfg.seeds))
    strategies = resolve_strategies(_plain(cfg.get("strategies", ["random"])))
    return plan(kernel_sets, iters, seeds, strategies, train=bool(cfg.train), dataset=cfg.dataset.name,
                limits=budgets(cfg))


def probe(cfg: DictConfig, kernels: list[int], candidates: int = 2, steps: int = 3) -> tuple[list[float], float | None]:
    """Seconds of measurement on this machine: candidates/s of the search, and seconds per training epoch
    from a few optimizer steps (None when the sweep does not train)."""
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
    the_plan = plan_from_config(cfg)
    command = job_command(the_plan, cfg.name, sweep_dir, passed or [], hydra_passed or [])
    checked()  # the config tree (extras.print_config), once the input is valid
    if cfg.dry_run:
        max_epochs = cfg.trainer.max_epochs if cfg.train else None
        guesses = estimate(the_plan, [sweep_dir, Path(cfg.paths.output_dir)], model_fields(cfg), max_epochs,
                           lambda kernels: probe(cfg, kernels))
        print_plan(cfg.name, the_plan, sweep_dir, command, guesses)
        if from_hydra:  # a dry run writes nothing: not even the folder Hydra made for it
            discard_run_dir(sweep_dir)
        return {"plan": the_plan, "command": command}
    summary, returncode = launch(the_plan, command, sweep_dir, budgets(cfg))
    log_summary_to_wandb(cfg, sweep_dir, summary)
    print((sweep_dir / "summary.md").read_text())
    failed = [job for job in summary["jobs"] if job.status == "failed"]
    if failed:  # what could be analysed is written; the exit code says that not everything ran
        raise KssError(f"{len(failed)} of {len(summary['jobs'])} jobs failed (summary.md lists why): "
                       + ", ".join(str(Path(job.path) / FAILED) for job in failed))
    if returncode != 0:
        raise KssError(f"the job launcher exited with {returncode}; rerun the same command to run "
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
