"""The task behind `eval.py`: the config checked and read once, the checkpoint evaluated (kss.deploy.evaluate),
eval.json written, W&B told."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from kss import config as C
from kss.cli import checked
from kss.deploy.evaluate import EVAL, QUANTIZE, check_data_fits, evaluate, find_checkpoint, load_checkpoint
from kss.deploy.export import FORMATS
from kss.errors import KssError
from kss.io import write_json
from kss.tracking import wandb_run

log = logging.getLogger(__name__)


def check_eval_config(cfg: DictConfig) -> None:
    """Everything that can be refused before a file is read."""
    if cfg.ckpt_path is None:
        raise KssError("no checkpoint given; pass ckpt_path=<run dir>/checkpoints/<file>.ckpt")
    if "model" in cfg:  # conf/eval.yaml drops the dataset's reference model; only model=... brings one back
        raise KssError("eval.py takes the model from the checkpoint; drop model=...")
    if cfg.quantize is not None and cfg.quantize not in QUANTIZE:
        raise KssError(f"unknown quantize={cfg.quantize!r}; use quantize=int8 or leave it out (fp32)")
    if cfg.export is not None and cfg.export not in FORMATS:
        raise KssError(f"unknown export format {cfg.export!r}; use export={' or export='.join(FORMATS)}")
    for key in ("export_images", "latency_images"):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            raise KssError(f"{key} must be a positive integer (got {cfg[key]})")
    if cfg.wandb.mode not in ("offline", "online", "disabled"):
        raise KssError(f"wandb.mode must be offline, online or disabled (got {cfg.wandb.mode})")


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
    result = evaluate(module, ckpt, ckpt_path, data, device, C.cost_table(cfg), dataset=cfg.dataset.name,
                      out_dir=out_dir, cost_images=cfg.cost.images, latency_images=cfg.latency_images,
                      quantize=cfg.quantize, export=cfg.export, export_images=cfg.export_images,
                      progress=bool(cfg.get("progress", True)))
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / EVAL, result)
    log_to_wandb(cfg, out_dir, result)
    drop = f" ({100 * -result['int8_acc_drop']:+.2f} points vs fp32)" if "int8_acc_drop" in result else ""
    log.info("%s: test acc %.2f%%%s, %.3g uJ and %.3g SOPs per image, %.2f ms per image on %s", result["precision"],
             100 * result["test_acc"], drop, result["energy_uj"], result["sops"], result["latency_ms_per_image"],
             result["device"])
    return result


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
