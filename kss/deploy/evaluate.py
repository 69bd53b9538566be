"""Evaluating a trained checkpoint (the work behind `eval.py`; kss.tasks.eval reads the config).

The network is rebuilt from the checkpoint's hyperparameters (genotype, model and neuron settings:
kss.train.module), evaluated on the dataset's test split with the metric training reports (torchmetrics,
top-1 and, above 10 classes, top-5), costed (kss.space.cost) and timed. `quantize="int8"` evaluates the
fp32 network too and reports the drop; `export="nir"` writes model.nir and checks that the graph
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
from tqdm.auto import tqdm

from kss.space.cost import first_images, measure_cost
from kss.errors import KssError
from kss.deploy.export import run_graph, to_nir
from kss.train.module import SpikingClassifier
from kss.space.params import memory_bytes
from kss.deploy.quantize import quantize_int8, stored_bytes

log = logging.getLogger(__name__)

EVAL = "eval.json"
NIR_FILE = "model.nir"
QUANTIZE = ("int8",)


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


def evaluate(module: SpikingClassifier, ckpt: dict, ckpt_path: Path, data, device: torch.device, table, *,
             dataset: str, out_dir: Path, cost_images: int, latency_images: int, quantize: str | None = None,
             export: str | None = None, export_images: int = 1, progress: bool = False) -> dict:
    """eval.json's content for a loaded checkpoint on `data`'s test split (set up), on `device`: accuracy
    (fp32, and int8 with its drop), latency, cost per image under `table`; `export="nir"` writes model.nir
    into `out_dir` and checks the graph read back."""
    cost_batch = first_images(data.test_dataloader(), cost_images)
    fp32 = test_accuracy(module, module.net, data.test_dataloader(), device, progress, "test fp32")
    net, result = module.net, dict(fp32)
    if quantize == "int8":
        net = quantize_int8(module.net).eval()
        result = test_accuracy(module, net, data.test_dataloader(), device, progress, "test int8")
        result |= {"fp32_test_acc": fp32["test_acc"], "fp32_test_acc_top5": fp32["test_acc_top5"],
                   "int8_acc_drop": fp32["test_acc"] - result["test_acc"]}
    params = sum(p.numel() for p in module.net.parameters())
    result |= {
        "precision": quantize or "fp32",
        "latency_ms_per_image": latency_ms(net, cost_batch, device, latency_images, progress),
        "latency_images": latency_images,
        "weights_stored_bytes": stored_bytes(net),  # as held in memory (int8 values: 1 byte)
        **measure_cost(net, cost_batch, table),
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
        "dataset": dataset,
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "host": platform.node(),
    }
    if export is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        images = first_images(data.test_dataloader(), export_images)
        result["export"] = nir_round_trip(net, images, out_dir, progress)
    return result


def trained_metrics(ckpt_path: Path) -> dict:
    """The metrics.json of the training run a checkpoint belongs to ({} when there is none)."""
    metrics = ckpt_path.parent.parent / "metrics.json"
    try:
        return json.loads(metrics.read_text()) if metrics.exists() else {}
    except (OSError, json.JSONDecodeError):
        return {}
