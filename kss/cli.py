"""What the top-level scripts share: bad input ends in one line on stderr, not a traceback, and leaves
nothing behind; inside a sweep, a failing job records why (failed.json) and lets the other jobs run."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from kss.config import run_dir
from kss.errors import Interrupted, KssError
from kss.names import FAILED
from kss.runlock import is_lock_file

STORAGE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.EPERM}
# What else a group's option can be replaced by, for the one-line refusal of an unknown option.
GROUP_HINTS = {"kernel_set": "kernel_set.kernels=[...]", "iterations": "iters=N"}
_OUR_FULL_ERROR = "KSS_HYDRA_FULL_ERROR"  # set when kss, not the user, asked Hydra to raise its errors


def launch(main: Callable[[], object]) -> None:
    """Run a `@hydra.main` function as a script. What Hydra refuses before the task runs (an unknown
    option of a config group, a key that does not exist, an output folder that cannot be written) ends
    in one line and exit 2, as the task's own refusals do. HYDRA_FULL_ERROR=1 shows Hydra's own error."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1" and not os.environ.get(_OUR_FULL_ERROR):
        main()  # the user asked for Hydra's full errors
        return
    os.environ["HYDRA_FULL_ERROR"] = os.environ[_OUR_FULL_ERROR] = "1"  # Hydra raises, instead of printing and exit(1)
    try:
        main()
    except Exception as error:  # noqa: BLE001 - config and storage errors in one line, the rest as they are
        from hydra.errors import HydraException

        storage = storage_error(error)
        if isinstance(error, HydraException):
            message = config_error(error)
        elif storage is not None:
            message = (f"cannot write to {storage.filename or 'the output folder'}: {storage.strerror}; "
                       "pass a writable hydra.run.dir or paths.output_dir")
        else:
            raise
        discard_run_dir(_NEW_DIRS[-1][0] if _NEW_DIRS else None)
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def storage_error(error: BaseException) -> OSError | None:
    """The OSError of a full, read-only or forbidden file system in `error` or its causes (Hydra wraps
    a job log that cannot be opened in logging's ValueError)."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in STORAGE_ERRORS:
            return error
        error = error.__cause__ or error.__context__
    return None


def config_error(error: Exception) -> str:
    """Hydra's composition error in one line; an unknown option lists the group's options."""
    from hydra.errors import MissingConfigException

    missing = getattr(error, "missing_cfg_file", None)
    if isinstance(error, MissingConfigException) and missing and getattr(error, "options", None):
        group, option = missing.rsplit("/", 1)
        hint = f" or {GROUP_HINTS[group]}" if group in GROUP_HINTS else ""
        return f"{group}={option} is not an option; use one of {', '.join(error.options)}{hint}"
    lines = [line.strip().rstrip(".") for line in str(error).splitlines() if line.strip()]
    cause = error.__cause__
    if cause is not None and str(cause).strip():
        lines.append(str(cause).strip().splitlines()[0].rstrip("."))
    return "; ".join(lines) or type(error).__name__


# (run or sweep directory, the deepest folder of its path that existed before this command), recorded by
# NewDirs before Hydra creates the directory: what a refused command may remove is what it created.
_NEW_DIRS: list[tuple[Path, Path]] = []


class NewDirs(Callback):
    """Hydra callback (conf: hydra.callbacks): notes which folders of the run directory's path exist
    before Hydra creates it, so a refused command removes only what it created."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        self._note(config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self._note(config.hydra.sweep.dir)

    @staticmethod
    def _note(directory) -> None:
        try:
            path = Path(str(directory)).absolute()
        except Exception:  # noqa: BLE001 - an unresolvable dir fails in Hydra, with its own message
            return
        existing = next(p for p in (path, *path.parents) if p.exists())
        _NEW_DIRS.append((path, existing))


_tree: list[DictConfig] = []  # the config whose tree is printed once the task has checked its input


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


def checked() -> None:
    """A task calls this once its input is validated: the resolved config is printed now (extras.print_config),
    so a refused command prints its one line and nothing else."""
    while _tree:
        print_config_tree(_tree.pop())


def run_task(task: Callable[[DictConfig], dict], cfg: DictConfig, kind: str) -> dict | None:
    _tree.clear()
    if cfg.get("extras") and cfg.extras.get("print_config"):
        _tree.append(cfg)
    try:
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
        discard_run_dir(run_dir() if HydraConfig.initialized() else None)
        print(f"error: could not write {error.filename or 'a result file'}: {error.strerror}; "
              "free some space or pass a writable hydra.run.dir, then rerun to resume", file=sys.stderr)
        sys.exit(2)
    except Exception as error:  # noqa: BLE001 - reported, below, in one line or in full
        if cfg.get("on_error") == "record":
            record_failure(cfg, kind, error)
            return None
        if isinstance(error, KssError):
            discard_run_dir(run_dir() if HydraConfig.initialized() else None)
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
        raise
    finally:
        _tree.clear()
    if cfg.get("on_error") == "record":  # a rerun that now succeeds: the old failure is history
        (run_dir() / FAILED).unlink(missing_ok=True)
    return result


def discard_run_dir(out_dir: Path | None) -> None:
    """Remove a run directory that holds nothing but what Hydra wrote for this command (.hydra/, the job
    log, lock files), and the folders above it that this command created and nothing else uses, so bad
    input (or a dry run) leaves nothing behind. A directory that existed before the command stays."""
    if out_dir is None:
        return
    out_dir = Path(out_dir).absolute()
    record = next(((path, before) for path, before in reversed(_NEW_DIRS) if path == out_dir or path in out_dir.parents),
                  None)
    if record is not None and record[1] == out_dir:
        return  # it was there before this command: not ours to remove
    if out_dir.is_dir():
        hydra_files = {".hydra", f"{HydraConfig.get().job.name}.log"} if HydraConfig.initialized() else {".hydra"}
        if any(p.name not in hydra_files and not is_lock_file(p.name) for p in out_dir.iterdir()):
            return
        shutil.rmtree(out_dir / ".hydra", ignore_errors=True)
        for p in out_dir.iterdir():
            p.unlink()
        out_dir.rmdir()
    # the folders above it that this command created (outputs/, outputs/search/) and nothing else uses;
    # without a record (no NewDirs callback), only the one right above it
    top = record[1] if record is not None else out_dir.parent.parent
    for parent in out_dir.parents:
        if parent == top or top not in parent.parents:
            break
        try:
            parent.rmdir()
        except OSError:
            break


def record_failure(cfg: DictConfig, kind: str, error: Exception) -> None:
    out_dir = run_dir()
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    logging.getLogger("kss").error("%s job failed: %s", kind, message, exc_info=not isinstance(error, KssError))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / FAILED).write_text(json.dumps({
        "kind": kind, "error": f"{type(error).__name__}: {message}", "kernels": list(cfg.kernel_set.kernels),
        "iters": cfg.iters, "seed": cfg.seed, "dataset": cfg.dataset.name,
    }, indent=2) + "\n")
