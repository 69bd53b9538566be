"""What the top-level scripts share: bad input ends in one line on stderr, not a traceback;
inside a sweep, a failing job records why (failed.json) and lets the other jobs run."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from kss.config import run_dir
from kss.errors import Interrupted, KssError
from kss.runlock import is_lock_file

FAILED = "failed.json"
STORAGE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.EPERM}


def print_config_tree(cfg: DictConfig) -> None:
    """The resolved config as a rich tree, one branch per top-level group (extras.print_config)."""
    import rich
    import rich.syntax
    import rich.tree
    from omegaconf import OmegaConf

    tree = rich.tree.Tree("config", guide_style="dim")
    for key, value in cfg.items():
        text = OmegaConf.to_yaml(value, resolve=True) if OmegaConf.is_config(value) else f"{value}"
        tree.add(f"[bold]{key}[/bold]").add(rich.syntax.Syntax(text.rstrip(), "yaml", theme="ansi_dark"))
    rich.print(tree)


def run_task(task: Callable[[DictConfig], dict], cfg: DictConfig, kind: str) -> dict | None:
    try:
        if cfg.get("extras") and cfg.extras.get("print_config"):
            print_config_tree(cfg)
        result = task(cfg)
    except KeyboardInterrupt:  # Ctrl-C outside the loops that name what finished
        print("error: interrupted; rerun the same command to resume", file=sys.stderr)
        sys.exit(130)
    except Interrupted as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(130)
    except OSError as error:
        if error.errno not in STORAGE_ERRORS or cfg.get("on_error") == "record":
            raise
        # files already written stay valid: results are written atomically or line by line
        print(f"error: could not write {error.filename or 'a result file'}: {error.strerror}; "
              "free some space or pass a writable hydra.run.dir, then rerun to resume", file=sys.stderr)
        sys.exit(2)
    except Exception as error:  # noqa: BLE001 - reported, below, in one line or in full
        if cfg.get("on_error") == "record":
            record_failure(cfg, kind, error)
            return None
        if isinstance(error, KssError):
            discard_if_untouched(run_dir())
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
        raise
    if cfg.get("on_error") == "record":  # a rerun that now succeeds: the old failure is history
        (run_dir() / FAILED).unlink(missing_ok=True)
    return result


def discard_if_untouched(out_dir: Path) -> None:
    """Remove a run directory that holds nothing but what Hydra wrote for this refused command
    (.hydra/, the job log, lock files), so bad input leaves nothing behind; anything else stays."""
    hydra_files = {".hydra", f"{HydraConfig.get().job.name}.log"}
    if not out_dir.is_dir() or any(p.name not in hydra_files and not is_lock_file(p.name) for p in out_dir.iterdir()):
        return
    shutil.rmtree(out_dir / ".hydra", ignore_errors=True)
    for p in out_dir.iterdir():
        p.unlink()
    out_dir.rmdir()
    with contextlib.suppress(OSError):  # parents Hydra created and nothing else uses (outputs/search)
        out_dir.parent.rmdir()


def record_failure(cfg: DictConfig, kind: str, error: Exception) -> None:
    out_dir = run_dir()
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    logging.getLogger("kss").error("%s job failed: %s", kind, message, exc_info=not isinstance(error, KssError))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / FAILED).write_text(json.dumps({
        "kind": kind, "error": f"{type(error).__name__}: {message}", "kernels": list(cfg.kernel_set.kernels),
        "iters": cfg.iters, "seed": cfg.seed, "dataset": cfg.dataset.name,
    }, indent=2) + "\n")
