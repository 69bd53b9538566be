"""The training task behind `train.py`: architecture (given or searched) -> trained SNN -> metrics.json.

Run directory contents: checkpoints/ (best on val accuracy, and last), csv/version_N/metrics.csv
(per-epoch curves, one version per session of a resumed run), wandb/ (offline runs), metrics.json (the final numbers), and, when the architecture was
searched first, the search's own files (candidates.jsonl, search.json) exactly as search.py writes them.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, RichModelSummary
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from kss import config as C
from kss.errors import Interrupted, KssError
from kss.space.genotype import Genotype, check_fits, load_genotype, sample_genotype
from kss.train.module import SpikingClassifier, spans_the_run
from kss.space.params import count_params, memory_bytes
from kss.runlock import run_lock
from kss.cli import checked
from kss.io import write_json
from kss.names import kernel_set_override
from kss.search.loop import search
from kss.search.records import SUMMARY
from kss.search.setup import SearchSetup, check_batch_fits
from kss.space.cost import first_images, measure_cost
from kss.tasks.search import refuse_shards, run_search, setup_from_config

log = logging.getLogger(__name__)
# Lightning 2.6 on torch 2.14 warns about its own use of a deprecated torch API at every step.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


class _NoAdverts(logging.Filter):
    """Quiet by default: Lightning's "Tip" lines advertise services, they say nothing about the run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in record.getMessage()


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_NoAdverts())
# Lightning's info lines (GPU/TPU available, a model summary callback already configured) say nothing
# about the run; its warnings still show.
logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)


class ModelSummary(RichModelSummary):
    """Lightning's rich model summary without FLOPs, which it counts only from an example input (0 here);
    a spiking network's cost per image is in metrics.json (SOPs, MACs, energy)."""

    @staticmethod
    def summarize(summary_data, total_parameters: int, trainable_parameters: int, model_size: float,
                  total_training_modes: dict, total_flops: int, **summarize_kwargs) -> None:
        from lightning.pytorch.utilities.model_summary import get_formatted_model_size, get_human_readable_count
        from rich import get_console
        from rich.table import Table

        columns = [(name, values) for name, values in summary_data if name != "FLOPs"]
        table = Table(header_style=summarize_kwargs.get("header_style", "bold magenta"))
        for name, _ in columns:
            table.add_column(name, justify="right" if name not in ("Name", "Type", "Mode") else "left")
        for row in zip(*(values for _, values in columns)):
            table.add_row(*row)
        console = get_console()
        console.print(table)
        console.print(f"[bold]Trainable params[/]: {get_human_readable_count(int(trainable_parameters))}   "
                      f"[bold]Total params[/]: {get_human_readable_count(int(total_parameters))}   "
                      f"[bold]Size (MB)[/]: {get_formatted_model_size(model_size)}")

METRICS = "metrics.json"
CHECKPOINTS = "checkpoints"


class ArchitectureSearch(L.Callback):
    """Runs the R-score search on the trainer's device before the network is built.

    Under DDP only rank 0 searches (and writes the search files); the genotype is broadcast.
    """

    def __init__(self, setup: SearchSetup, out_dir: Path, progress: bool = True):
        self.search_setup, self.out_dir, self.progress = setup, out_dir, progress
        self.seconds = 0.0  # wall time spent here, inside trainer.fit, not training

    def setup(self, trainer: L.Trainer, pl_module: SpikingClassifier, stage: str) -> None:
        if pl_module.net is not None:
            return
        start, best = time.perf_counter(), None
        if trainer.is_global_zero:
            summary = search(self.search_setup, trainer.datamodule, self.out_dir,
                             trainer.strategy.root_device, self.progress)
            best = summary["best_genotype"]
        best = trainer.strategy.broadcast(best, src=0)
        if best is None:
            raise KssError("the search found no scorable candidate (all over budget or non-finite); "
                           "raise budget.max_params or iters")
        pl_module.set_genotype(Genotype.from_json(best))
        self.seconds = time.perf_counter() - start


class ImagesSeen(L.Callback):
    """Training images and seconds of this session, for images/s (a resumed run counts only its part)."""

    def __init__(self):
        self.images, self.seconds, self._start = 0, 0.0, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.images += len(batch[1])
        self.seconds += time.perf_counter() - self._start


def check_training_config(cfg: DictConfig) -> None:
    epochs = cfg.trainer.max_epochs
    if not isinstance(epochs, int) or epochs <= 0:
        raise KssError(f"trainer.max_epochs must be a positive integer (got {epochs})")
    lr = cfg.optimizer.get("lr")
    if lr is None or not lr > 0:
        raise KssError(f"optimizer.lr must be > 0 (got {lr})")
    if cfg.resume not in ("auto", True, False):
        raise KssError(f"resume must be auto, true or false (got {cfg.resume})")
    if cfg.trainer.sync_batchnorm and not torch.cuda.is_available():
        raise KssError("trainer.sync_batchnorm=true needs GPUs (torch's SyncBatchNorm is CUDA-only); drop it on CPU")
    if cfg.wandb.mode not in ("offline", "online", "disabled"):
        raise KssError(f"wandb.mode must be offline, online or disabled (got {cfg.wandb.mode})")
    compile_setting(cfg)
    scheduler = cfg.scheduler or {}
    interval = scheduler.get("interval", "epoch")
    if interval not in ("epoch", "step"):
        raise KssError(f"scheduler.interval must be epoch or step (got {interval!r})")
    if "T_max" in scheduler and scheduler.T_max is None and interval != "step":
        raise KssError("scheduler.T_max=null means the run's optimizer steps and needs scheduler.interval=step; "
                       "or give T_max in epochs")


# model.compile=auto: compile when the estimated eager training time is long enough for compiling to pay.
# Measured on a quiet 2-core CPU (docs/results/compile_speed_cpu.txt): compiled steps run 1.35x faster after
# 36-75 s of compiling the training graph. A run also compiles an eval graph and, for the short last batch, a
# dynamic-shape one (assumed, not timed: ~4 min in all), which the 1 - 1/1.35 = 26% saved wins back from
# ~15 min of eager training. The rate is assumed, not measured per run, so the choice depends on the config
# alone (same seed, same result): the Fashion-MNIST CPU preset's (c1=16, c2=32, T=4, 28 px) eager rate on
# 2 threads without deterministic mode (127-155 img/s in issue 21's quiet table), scaled by the model's
# activation volume and the thread count.
COMPILE_PAYS_FROM_S = 15 * 60
CPU_PRESET_RATE = 150.0  # images/s, training (forward + backward + optimizer step), 2 threads
CPU_PRESET_VOLUME = 4 * (16 * 28 * 28 + 32 * 14 * 14)  # timesteps x (c1 x cell1 px + c2 x cell2 px)


def compile_setting(cfg: DictConfig) -> bool | str:
    """model.compile: true, false or auto (anything else is refused in one line)."""
    value = cfg.model.get("compile", "auto")
    if isinstance(value, bool) or value == "auto":
        return value
    raise KssError(f"model.compile must be auto, true or false (got {value!r})")


def estimated_eager_seconds(cfg: DictConfig, data, spec) -> float:
    """Training seconds without compiling, from images per epoch x epochs and the assumed CPU rate."""
    fraction = cfg.trainer.get("limit_train_batches")
    total = len(data.train_set)
    per_epoch = total if fraction is None else (
        total * fraction if isinstance(fraction, float) else min(total, fraction * cfg.dataset.batch_size))
    fast_dev_run = cfg.trainer.get("fast_dev_run")
    if fast_dev_run:  # true: one batch; n: n batches
        per_epoch, epochs = cfg.dataset.batch_size * (1 if fast_dev_run is True else int(fast_dev_run)), 1
    else:
        epochs = cfg.trainer.max_epochs
    volume = spec.timesteps * (spec.c1 * spec.cell1_size ** 2 + spec.c2 * spec.cell2_size ** 2)
    rate = CPU_PRESET_RATE * CPU_PRESET_VOLUME / volume * torch.get_num_threads() / 2
    return per_epoch * epochs / rate


def should_compile(cfg: DictConfig, data, spec) -> bool:
    """model.compile, with auto decided: on for a CPU run whose estimated eager training time is at least
    COMPILE_PAYS_FROM_S; off on GPUs (not measured there: pass model.compile=true)."""
    value = compile_setting(cfg)
    if value != "auto":
        return value
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if not on_cpu:
        return False
    seconds = estimated_eager_seconds(cfg, data, spec)
    chosen = seconds >= COMPILE_PAYS_FROM_S
    log.info("model.compile=auto: %s (an estimated %.0f min of eager training on CPU; compiling pays from %.0f)",
             "compiling" if chosen else "not compiling", seconds / 60, COMPILE_PAYS_FROM_S / 60)
    return chosen


def run_settings(cfg: DictConfig) -> dict:
    """Everything a finished run's result depends on, except max_epochs (a longer run may extend it)."""
    def plain(node):
        return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node

    source = str(cfg.genotype) if cfg.genotype is not None else "search"
    settings = {"kernels": list(cfg.kernel_set.kernels), "iters": cfg.iters, "seed": cfg.seed, "genotype": source,
                "dataset": {"name": cfg.dataset.name, **C.data_split(cfg)}, "augment": cfg.dataset.augment,
                "batch_size": cfg.dataset.batch_size, "precision": str(cfg.trainer.precision)}
    for key in ("model", "neuron", "optimizer", "scheduler", "score", "budget"):
        settings[key] = plain(cfg[key])
    settings["score"].pop("allocator", None)  # where the search's memory comes from, not what it computes
    # budgets added later count only when set, so runs from before them are still recognised as finished
    settings["budget"] = {k: v for k, v in settings["budget"].items() if v is not None or k == "max_params"}
    return settings


def _same_setting(key: str, finished, wanted) -> bool:
    """model.compile=auto accepts a finished run either way: metrics.json records what auto chose for it."""
    if key == "model" and isinstance(finished, dict) and isinstance(wanted, dict) and wanted.get("compile") == "auto":
        return {k: v for k, v in finished.items() if k != "compile"} == {k: v for k, v in wanted.items() if k != "compile"}
    return finished == wanted


def resume_checkpoint(cfg: DictConfig, out_dir: Path) -> str | None:
    last = out_dir / CHECKPOINTS / "last.ckpt"
    if cfg.resume is True and not last.exists():
        raise KssError(f"resume=true but {last} does not exist; drop resume=true to start a new run")
    if cfg.resume is False and last.exists():
        raise KssError(f"{out_dir} already holds a run (refusing to overwrite it); "
                       "pass resume=auto to continue it, or hydra.run.dir=<new dir>")
    return str(last) if last.exists() else None


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def optional_callbacks(cfg: DictConfig) -> list:
    """The `callbacks` group, instantiated; the progress bar only with progress=true."""
    from hydra.utils import instantiate

    chosen = cfg.get("callbacks") or {}
    return [instantiate(spec) for name, spec in chosen.items()
            if spec is not None and (name != "rich_progress_bar" or cfg.progress)]


def make_loggers(cfg: DictConfig, out_dir: Path) -> list:
    # A new csv/version_N per session: Lightning's CSV writer would delete an existing metrics.csv.
    loggers = [CSVLogger(out_dir, name="csv")]
    if cfg.wandb.mode != "disabled":
        wandb_logger = WandbLogger(
            project=cfg.wandb.project, save_dir=str(out_dir), mode=cfg.wandb.mode, group=cfg.wandb.group,
            job_type="train", tags=C.run_tags(cfg), name=out_dir.name, settings=wandb_settings(),
        )
        # Lightning passes anonymous=None to wandb.init, and wandb 0.31 warns that the setting has no effect
        wandb_logger._wandb_init.pop("anonymous", None)
        loggers.append(wandb_logger)
    if cfg.tensorboard:
        loggers.append(TensorBoardLogger(out_dir, name="tensorboard", version=""))
    return loggers


def wandb_settings():
    import wandb

    return wandb.Settings(quiet=True)


def finish_wandb() -> None:
    """Close the W&B run so the next multirun job gets its own."""
    try:
        import wandb

        if wandb.run is not None:
            wandb.finish()
    except ImportError:
        pass


def run_train(cfg: DictConfig, out_dir: str | Path | None = None) -> dict:
    """Config in, metrics.json's content out."""
    refuse_shards(cfg, "train.py")  # it would train the best of one shard's candidates
    out_dir = Path(out_dir or C.run_dir())
    if cfg.get("search_only"):
        return run_search(cfg, out_dir)
    check_training_config(cfg)
    done = out_dir / METRICS
    if done.exists():
        metrics = json.loads(done.read_text())
        changed = sorted(k for k, v in run_settings(cfg).items() if not _same_setting(k, metrics.get("settings", {}).get(k), v))
        if "genotype" in changed and same_architecture(cfg, metrics):  # the same cell, by another path
            changed.remove("genotype")
        if changed:
            hint = (" (a cosine schedule's length follows the run's: trainer.max_epochs, or its optimizer steps with "
                    "scheduler.interval=step)") if "scheduler" in changed else ""
            raise KssError(f"{out_dir} holds a finished run with other settings ({', '.join(changed)} differ{hint}); "
                           "pass hydra.run.dir=<new dir>")
        if metrics.get("max_epochs") != cfg.trainer.max_epochs and spans_the_run(cfg.scheduler):
            raise KssError(f"{out_dir} holds a finished {metrics.get('max_epochs')}-epoch run whose learning-rate "
                           f"schedule spans its own steps; {cfg.trainer.max_epochs} epochs is another schedule: "
                           "pass hydra.run.dir=<new dir>")
        if metrics.get("max_epochs") == cfg.trainer.max_epochs:
            log.info("%s is finished (test acc %s); not retraining", out_dir, _pct(metrics["test_acc"]))
            return metrics
    with run_lock(out_dir, cfg.get("lock_wait", False)):
        return _train(cfg, out_dir, done)


def same_architecture(cfg: DictConfig, metrics: dict) -> bool:
    """Whether cfg.genotype names the architecture a finished run trained, though by another path (the run
    directory moved to another machine or checkout, with the genotype files beside it)."""
    if cfg.genotype is None or metrics.get("genotype") is None:
        return False
    try:
        return load_genotype(str(cfg.genotype)).to_json() == metrics["genotype"]
    except (KssError, OSError, ValueError):
        return False


def _train(cfg: DictConfig, out_dir: Path, done: Path) -> dict:
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    data = C.data_module(cfg)
    _, kernels = C.kernel_set(cfg)
    spec, neuron = C.model_spec(cfg, data), C.neuron_spec(cfg)
    spec.validate(kernels)
    genotype, searcher = None, None
    if cfg.genotype is not None:
        genotype = load_genotype(str(cfg.genotype))
        searched = search_record(cfg, out_dir).get("kernels")
        check_fits(genotype, kernels, spec.cell_type, searched_with=searched and kernel_set_override(searched))
    else:
        searcher = ArchitectureSearch(setup_from_config(cfg, data), out_dir, cfg.progress)
    callbacks = [searcher] if searcher else []
    ckpt_path = resume_checkpoint(cfg, out_dir)
    # the data is there (and holds a scoring batch) before any logger or file is made: refused input writes nothing
    if searcher:
        check_batch_fits(searcher.search_setup, data)
    data.setup()
    checked()  # the config tree (extras.print_config), once the input is valid

    module = SpikingClassifier(
        model=asdict(spec), neuron=asdict(neuron),
        optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
        scheduler=OmegaConf.to_container(cfg.scheduler, resolve=True) or None,
        genotype=genotype.to_json() if genotype else None,
        compile=should_compile(cfg, data, spec),
    )
    has_val = cfg.dataset.val_size > 0
    checkpoint = ModelCheckpoint(
        dirpath=out_dir / CHECKPOINTS, filename="best-{epoch:03d}", save_last=True,
        monitor="val/acc" if has_val else None, mode="max", save_top_k=1,
    )
    throughput = ImagesSeen()
    callbacks += [checkpoint, throughput, *optional_callbacks(cfg)]
    loggers = make_loggers(cfg, out_dir)
    try:
        for logger in loggers:
            logger.log_hyperparams(C.logged_config(cfg))
        trainer = L.Trainer(
            **OmegaConf.to_container(cfg.trainer, resolve=True), default_root_dir=out_dir,
            logger=loggers, callbacks=callbacks, enable_progress_bar=bool(cfg.progress),
        )
        start = time.perf_counter()
        try:
            trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
        except SystemExit:  # Lightning exits(1) on Ctrl-C after a clean shutdown
            if not trainer.interrupted:
                raise
        train_seconds = time.perf_counter() - start - (searcher.seconds if searcher else 0.0)
        if trainer.interrupted:  # last.ckpt is from the last finished epoch
            raise Interrupted(f"training interrupted in epoch {trainer.current_epoch}; rerun the same command "
                              f"to resume from {checkpoint.last_model_path or 'the start'}")
        best = checkpoint.best_model_path if has_val and checkpoint.best_model_path else None
        # test=false (the proxy study, model selection): the test split stays unseen
        test = trainer.test(module, datamodule=data, ckpt_path=best, verbose=False)[0] if cfg.get("test", True) else {}
        # the tested (best) weights' cost on test images: firing rates, so energy, change with training
        cost = test_set_cost(cfg, module, data) if cfg.get("test", True) else {}
        metrics = collect_metrics(cfg, out_dir, module, trainer, checkpoint, test, train_seconds, throughput, cost)
        if trainer.is_global_zero:
            write_json(done, metrics)
        for logger in loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.summary.update({k: v for k, v in metrics.items() if not isinstance(v, dict)})
                logger.experiment.summary.update({f"firing_rate/{k}": v for k, v in metrics.get("firing_rates", {}).items()})
        log.info("test acc %s (best val %s), %d params, %.0f s", _pct(metrics["test_acc"]),
                 _pct(metrics["best_val_acc"]), metrics["params"], train_seconds)
        return metrics
    finally:
        finish_wandb()


def probe_epoch_seconds(cfg: DictConfig, data, steps: int = 3) -> float:
    """Seconds per training epoch on this machine, from `steps` optimizer steps of a sampled candidate
    (plus one untimed warm-up step); validation is not counted."""
    import numpy as np

    _, kernels = C.kernel_set(cfg)
    spec, neuron = C.model_spec(cfg, data), C.neuron_spec(cfg)
    genotype = sample_genotype(np.random.default_rng(cfg.seed), kernels, spec.cell_type)
    module = SpikingClassifier(model=asdict(spec), neuron=asdict(neuron),
                               optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True), genotype=genotype.to_json())
    optimizer = module.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    data.setup("fit")
    loader = iter(data.train_dataloader())
    seconds = images = 0
    with torch.random.fork_rng():
        for step in range(steps + 1):
            images_batch, labels = next(loader)
            start = time.perf_counter()
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(module(images_batch), labels).backward()
            optimizer.step()
            if step:  # the first step pays for allocation and kernel selection
                seconds, images = seconds + time.perf_counter() - start, images + len(labels)
    fraction = cfg.trainer.get("limit_train_batches") or 1.0
    epoch_images = len(data.train_set) * (fraction if fraction <= 1 else fraction * cfg.dataset.batch_size / len(data.train_set))
    return epoch_images * seconds / images


def test_set_cost(cfg: DictConfig, module: SpikingClassifier, data) -> dict:
    """Cost per image (kss.space.cost) of the trained network on the first `cost.images` test images."""

    data.setup("test")
    return measure_cost(module.net, first_images(data.test_dataloader(), cfg.cost.images), C.cost_table(cfg))


def search_record(cfg: DictConfig, out_dir: Path) -> dict:
    """The search.json the trained architecture came from: the one in the run directory (searched first),
    or the one `genotype` names (the winner of that search); {} for a genotype file or a published cell."""
    path = out_dir / SUMMARY if cfg.genotype is None else Path(str(cfg.genotype))
    try:
        record = json.loads(path.read_text()) if path.suffix == ".json" and path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {}
    return record if isinstance(record, dict) and "best_genotype" in record else {}


def images_per_epoch(trainer: L.Trainer) -> int:
    """Training images an epoch really uses: trainer.limit_train_batches counted in (the last batch may be short)."""
    data = trainer.datamodule
    batches, size, total = trainer.num_training_batches, data.batch_size, len(data.train_set)
    if not isinstance(batches, int):  # inf: the whole split
        return total
    return min(batches * size * trainer.world_size, total)  # under DDP, each rank trains its share


def collect_metrics(cfg, out_dir, module, trainer, checkpoint, test, train_seconds, throughput, cost=None) -> dict:
    params = count_params(module.genotype, module.spec, module.neuron)
    assert params == sum(p.numel() for p in module.parameters()), "analytic count drifted from the network"
    search_summary = search_record(cfg, out_dir)
    best_val = checkpoint.best_model_score
    settings = run_settings(cfg)
    settings["model"]["compile"] = module.compile_network  # what model.compile=auto chose
    return {
        "test_acc": float(test["test/acc"]) if "test/acc" in test else None,
        "test_acc_top5": float(test["test/acc_top5"]) if "test/acc_top5" in test else None,
        "best_val_acc": float(best_val) if best_val is not None else None,
        "epochs": trainer.current_epoch,
        "max_epochs": cfg.trainer.max_epochs,
        "optimizer_steps": trainer.global_step,  # what a per-step schedule (T_max: null) spans
        "params": params,
        **memory_bytes(params),
        "genotype": module.hparams.genotype,
        "genotype_source": settings["genotype"],
        "settings": settings,
        "kernel_set": C.kernel_set(cfg)[0],
        "kernels": list(cfg.kernel_set.kernels),
        "iters": cfg.iters,
        "seed": cfg.seed,
        "dataset": cfg.dataset.name,
        "search_score": search_summary.get("best_score"),
        "search_seconds": search_summary.get("search_seconds"),
        "train_seconds": train_seconds,
        "images_per_second": throughput.images / throughput.seconds if throughput.seconds else None,
        "train_images_per_epoch": images_per_epoch(trainer),
        "checkpoint": checkpoint.best_model_path or checkpoint.last_model_path,
        "device": str(trainer.strategy.root_device),
        **(cost or {}),
    }
