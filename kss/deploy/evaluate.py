"""The evaluation task behind `eval.py`: a checkpoint alone -> eval.json.

The network is rebuilt from the checkpoint's hyperparameters (genotype, model and neuron settings:
kss.train.module), evaluated on the dataset's test split with the metric training reports (torchmetrics,
top-1 and, above 10 classes, top-5), costed (kss.space.cost) and timed. `quantize=int8` evaluates the
fp32 network too and reports the drop; `export=nir` writes model.nir and checks that the graph
read back by spikingjelly predicts what the network does.
"""

from __future__ import annotations

import json
import logging
import platform
import statistics
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from kss import config as C
from kss.cli import checked
from kss.space.cost import first_images, measure_cost
from kss.errors import KssError
from kss.deploy.export import FORMATS, run_graph, to_nir
from kss.train.module import SpikingClassifier
from kss.space.params import memory_bytes
from kss.deploy.quantize import quantize_int8, stored_bytes
from kss.io import write_json
from kss.tracking import wandb_run

log = logging.getLogger(__name__)

EVAL = "eval.json"
NIR_FILE = "model.nir"
QUANTIZE = ("int8",)


def check_eval_config(cfg: DictConfig) -> None:
    """Everything that can be refused before a file is read."""
    if cfg.ckpt_path is None:
        raise KssError("no checkpoint given; pass ckpt_path=<run dir>/checkpoints/<file>.ckpt")
    if cfg.quantize is not None and cfg.quantize not in QUANTIZE:
        raise KssError(f"unknown quantize={cfg.quantize!r}; use quantize=int8 or leave it out (fp32)")
    if cfg.export is not None and cfg.export not in FORMATS:
        raise KssError(f"unknown export format {cfg.export!r}; use export={' or export='.join(FORMATS)}")
    for key in ("export_images", "latency_images"):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            raise KssError(f"{key} must be a positive integer (got {cfg[key]})")
    if cfg.wandb.mode not in ("offline", "online", "disabled"):
        raise KssError(f"wandb.mode must be offline, online or disabled (got {cfg.wandb.mode})")


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a training run directory: its best checkpoint (metrics.json's, else the
    only checkpoints/best-*.ckpt, else checkpoints/last.ckpt). Lightning's file names contain '=',
    which a Hydra override must quote; a run directory needs no quotes."""
    path = Path(str(path))
    if not path.is_dir():
        return path
    recorded = trained_metrics(path / "checkpoints" / "x.ckpt").get("checkpoint")
    if recorded and Path(recorded).is_file():
        return Path(recorded)
    best = sorted((path / "checkpoints").glob("best-*.ckpt"))
    if len(best) == 1:
        return best[0]
    if (path / "checkpoints" / "last.ckpt").is_file():
        return path / "checkpoints" / "last.ckpt"
    raise KssError(f"{path} holds no checkpoint (checkpoints/best-*.ckpt or last.ckpt); pass a training run directory "
                   "or a checkpoint file")


def load_checkpoint(path: str | Path) -> tuple[SpikingClassifier, dict]:
    """The LightningModule and the raw checkpoint; one line for a missing or foreign file."""
    path = Path(str(path))
    if not path.is_file():
        raise KssError(f"checkpoint {path} does not exist; pass ckpt_path=<run dir>/checkpoints/<file>.ckpt")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - whatever torch says, the file is not ours
        raise KssError(f"{path} is not a kss checkpoint (torch cannot read it: {type(error).__name__}); "
                       "pass a checkpoint train.py wrote") from None
    saved = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not isinstance(saved, dict) or saved.get("genotype") is None or "model" not in saved or "state_dict" not in ckpt:
        raise KssError(f"{path} is not a kss checkpoint (it holds no genotype and model settings); "
                       "pass a checkpoint train.py wrote")
    module = SpikingClassifier(model=saved["model"], neuron=saved.get("neuron") or {},
                               optimizer=saved.get("optimizer") or {}, scheduler=saved.get("scheduler"),
                               genotype=saved["genotype"])
    module.load_state_dict(ckpt["state_dict"])
    return module.eval(), ckpt


def check_data_fits(module: SpikingClassifier, data, dataset: str) -> None:
    spec = module.spec
    theirs = (data.in_channels, data.image_size, data.num_classes)
    if (spec.in_channels, spec.image_size, spec.num_classes) != theirs:
        raise KssError(f"the checkpoint's network takes {spec.in_channels}x{spec.image_size}x{spec.image_size} images "
                       f"of {spec.num_classes} classes, dataset={dataset} has {theirs[0]}x{theirs[1]}x{theirs[1]} of "
                       f"{theirs[2]}; pass the dataset it was trained on")


@torch.no_grad()
def test_accuracy(module: SpikingClassifier, net: torch.nn.Module, loader, device, progress: bool = False,
                  desc: str = "test") -> dict:
    """The training run's test metrics (same torchmetrics collection) for `net`, and its throughput."""
    metrics = module.test_metrics.clone().to(device)
    metrics.reset()
    images, seconds = 0, 0.0
    for batch, labels in tqdm(loader, desc=desc, unit="batch", disable=not progress, dynamic_ncols=True, leave=False):
        batch, labels = batch.to(device), labels.to(device)
        start = time.perf_counter()
        logits = net(batch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds += time.perf_counter() - start
        metrics.update(logits, labels)
        images += len(labels)
    values = {k.split("/")[-1]: float(v) for k, v in metrics.compute().items()}
    return {"test_acc": values["acc"], "test_acc_top5": values.get("acc_top5"), "test_images": images,
            "images_per_second": images / seconds if seconds else None}


@torch.no_grad()
def latency_ms(net: torch.nn.Module, image: torch.Tensor, device, repeats: int, progress: bool = False) -> float:
    """Median wall time of a forward pass on one image, after two untimed warm-up passes."""
    image = image[:1].to(device)
    times = []
    for step in tqdm(range(repeats + 2), desc="latency", unit="pass", disable=not progress, dynamic_ncols=True,
                     leave=False):
        start = time.perf_counter()
        net(image)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step >= 2:
            times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def nir_round_trip(net: torch.nn.Module, images: torch.Tensor, out_dir: Path, progress: bool = False) -> dict:
    """Export to NIR, read the file back with spikingjelly, compare predictions on `images`."""
    path = out_dir / NIR_FILE
    net_cpu = net.to("cpu")
    with tqdm(total=3, desc="NIR export", unit="step", disable=not progress, dynamic_ncols=True, leave=False) as bar:
        graph = to_nir(net_cpu, images, path)
        bar.set_description("NIR: our network")
        bar.update()
        with torch.no_grad():
            ours = net_cpu(images)
        bar.set_description("NIR: the file read back")
        bar.update()
        theirs = run_graph(path, images, net_cpu.spec.timesteps)
        bar.update()
    same = (ours.argmax(1) == theirs.argmax(1)).float().mean().item()
    result = {"format": "nir", "file": str(path), "nodes": len(graph.nodes), "edges": len(graph.edges),
              "round_trip_images": len(images), "round_trip_same_predictions": same,
              "round_trip_max_abs_logit_diff": (ours - theirs).abs().max().item()}
    if same < 1.0:
        log.warning("the NIR graph read back predicts differently on %.2f%% of %d images", 100 * (1 - same), len(images))
    return result


def run_eval(cfg: DictConfig, out_dir: str | Path | None = None) -> dict:
    """Config in, eval.json's content out."""
    check_eval_config(cfg)
    out_dir = Path(out_dir or C.run_dir())
    ckpt_path = find_checkpoint(cfg.ckpt_path)
    module, ckpt = load_checkpoint(ckpt_path)
    data = C.data_module(cfg)
    check_data_fits(module, data, cfg.dataset.name)
    device = C.resolve_device(cfg.device)
    data.setup("test")
    checked()  # the config tree (extras.print_config), once the input is valid
    module.to(device)
    table = C.cost_table(cfg)
    cost_images = first_images(data.test_dataloader(), cfg.cost.images)

    progress = bool(cfg.get("progress", True))
    fp32 = test_accuracy(module, module.net, data.test_dataloader(), device, progress, "test fp32")
    net, result = module.net, dict(fp32)
    if cfg.quantize == "int8":
        net = quantize_int8(module.net).eval()
        result = test_accuracy(module, net, data.test_dataloader(), device, progress, "test int8")
        result |= {"fp32_test_acc": fp32["test_acc"], "fp32_test_acc_top5": fp32["test_acc_top5"],
                   "int8_acc_drop": fp32["test_acc"] - result["test_acc"]}
    params = sum(p.numel() for p in module.net.parameters())
    result |= {
        "precision": cfg.quantize or "fp32",
        "latency_ms_per_image": latency_ms(net, cost_images, device, cfg.latency_images, progress),
        "latency_images": cfg.latency_images,
        "weights_stored_bytes": stored_bytes(net),  # as held in memory (int8 values: 1 byte)
        **measure_cost(net, cost_images, table),
        **memory_bytes(params),
        "params": params,
        "checkpoint": str(ckpt_path.resolve()),
        "epoch": ckpt.get("epoch"),
        "global_step": ckpt.get("global_step"),
        "trained_test_acc": trained_metrics(ckpt_path).get("test_acc"),
        "genotype": module.hparams.genotype,
        "model": dict(module.hparams.model),
        "neuron": dict(module.hparams.neuron),
        "settings": {k: module.hparams.get(k) for k in ("optimizer", "scheduler")},
        "dataset": cfg.dataset.name,
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "host": platform.node(),
    }
    if cfg.export is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        images = first_images(data.test_dataloader(), cfg.export_images)
        result["export"] = nir_round_trip(net, images, out_dir, progress)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / EVAL, result)
    log_to_wandb(cfg, out_dir, result)
    drop = f" ({100 * -result['int8_acc_drop']:+.2f} points vs fp32)" if "int8_acc_drop" in result else ""
    log.info("%s: test acc %.2f%%%s, %.3g uJ and %.3g SOPs per image, %.2f ms per image on %s", result["precision"],
             100 * result["test_acc"], drop, result["energy_uj"], result["sops"], result["latency_ms_per_image"],
             result["device"])
    return result


def trained_metrics(ckpt_path: Path) -> dict:
    """The metrics.json of the training run a checkpoint belongs to ({} when there is none)."""
    metrics = ckpt_path.parent.parent / "metrics.json"
    try:
        return json.loads(metrics.read_text()) if metrics.exists() else {}
    except (OSError, json.JSONDecodeError):
        return {}


def log_to_wandb(cfg: DictConfig, out_dir: Path, result: dict) -> None:
    """One W&B run per evaluation (job_type 'eval'), offline by default; eval.json's figures as its summary."""
    with wandb_run(cfg.wandb.mode, cfg.wandb.project, out_dir, "eval", group=cfg.wandb.group, name=out_dir.name,
                   tags=[cfg.dataset.name, result["precision"], *cfg.wandb.tags],
                   config=OmegaConf.to_container(cfg, resolve=True)) as run:
        if run is None:
            return
        run.summary.update({k: v for k, v in result.items() if not isinstance(v, (dict, list))})
        run.summary.update({f"firing_rate/{k}": v for k, v in result["firing_rates"].items()})
        run.summary.update({f"export/{k}": v for k, v in result.get("export", {}).items()})
