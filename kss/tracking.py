"""One W&B run context for every task: search, sweep summary, proxy study, evaluation (training uses
Lightning's WandbLogger). Offline by default; `mode="disabled"` opens nothing."""

from __future__ import annotations

import contextlib
from pathlib import Path


@contextlib.contextmanager
def wandb_run(mode: str, project: str, out_dir: Path, job_type: str, **init):
    """`with wandb_run(...) as run:` a W&B run in `out_dir` (None when mode is disabled), finished
    however the block ends. `init`: wandb.init's other arguments (name, group, tags, config)."""
    if mode == "disabled":
        yield None
        return
    import wandb  # here, not at the top: importing wandb takes seconds, and most runs never log to it

    run = wandb.init(project=project, job_type=job_type, dir=str(out_dir), mode=mode,
                     settings=wandb.Settings(quiet=True), **init)
    try:
        yield run
    finally:
        run.finish()


def table(columns: list[str], rows: list[list]):
    """A wandb.Table (only called inside a run, so wandb is imported by then)."""
    import wandb

    return wandb.Table(columns=columns, data=rows)


def image(path: Path):
    import wandb

    return wandb.Image(str(path))
