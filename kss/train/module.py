"""The LightningModule: a searched SNN trained with surrogate gradients through time (full BPTT).

Everything needed to rebuild the network (genotype, model and neuron settings) is in the
hyperparameters, as plain data, so `SpikingClassifier.load_from_checkpoint(path)` works without
the Hydra config. The genotype may arrive late: the search callback sets it in `setup`, and the
network is then built in `configure_model`, before the optimizers are configured.
"""

from __future__ import annotations

import math

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torchmetrics import MaxMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from kss.errors import KssError
from kss.space.genotype import Genotype
from kss.space.network import ModelSpec, build_network
from kss.space.neurons import NeuronSpec


def spans_the_run(scheduler) -> bool:
    """A scheduler config stepped per optimizer step over the whole run (interval=step, T_max: null): its
    length is the run's, which the settings do not name."""
    scheduler = scheduler or {}
    return scheduler.get("interval") == "step" and "T_max" in scheduler and scheduler["T_max"] is None


def lr_scheduler(settings: dict, optimizer, run_steps) -> dict:
    """Lightning's lr_scheduler entry for a scheduler config (`_partial_: true`). `interval` (epoch, the
    default, or step) is ours, not the scheduler's: Lightning steps it. With interval=step, `T_max: null`
    is the whole run in optimizer steps, `run_steps()` (asked only then: it needs the trainer)."""
    over_the_run = spans_the_run(settings)
    settings = dict(settings)
    interval = settings.pop("interval", "epoch")
    if over_the_run:
        settings["T_max"] = run_steps()
        if not math.isfinite(settings["T_max"]):  # max_epochs=-1 without max_steps: the LR would never decay
            raise KssError("scheduler.T_max=null spans the run's steps, and this run has no end: set "
                           "trainer.max_epochs or trainer.max_steps")
    return {"scheduler": instantiate(settings)(optimizer=optimizer), "interval": interval}


class SpikingClassifier(L.LightningModule):
    def __init__(self, model: dict, neuron: dict, optimizer: dict, scheduler: dict | None = None,
                 genotype: dict | None = None, compile: bool = False):
        super().__init__()
        self.save_hyperparameters(ignore=["compile"])  # a checkpoint loads whether or not it was compiled
        self.compile_network = compile
        self.spec, self.neuron = ModelSpec(**model), NeuronSpec(**neuron)
        if not optimizer.get("lr", 1) > 0:
            raise KssError(f"optimizer.lr must be > 0 (got {optimizer.get('lr')})")
        self.net = None
        if genotype is not None:
            self.set_genotype(Genotype.from_json(genotype))
            self.configure_model()
        metrics = {"acc": MulticlassAccuracy(self.spec.num_classes, top_k=1)}
        if self.spec.num_classes > 10:
            metrics["acc_top5"] = MulticlassAccuracy(self.spec.num_classes, top_k=5)
        metrics = MetricCollection(metrics)
        self.train_metrics = metrics.clone(prefix="train/")
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        self.best_val_acc = MaxMetric()
        self.best_val_acc.persistent(True)  # survives a resume

    def set_genotype(self, genotype: Genotype) -> None:
        self.hparams["genotype"] = genotype.to_json()
        self.genotype = genotype

    def configure_model(self) -> None:
        if self.net is not None:
            return
        if self.hparams.genotype is None:
            raise KssError("no architecture: pass genotype=<file or name>, or train with the search callback")
        self.net = build_network(self.genotype, self.spec, self.neuron)
        if self.compile_network:  # in place: the state dict keeps its keys, checkpoints stay interchangeable
            self.net.compile()

    def _same(self, key: str, saved) -> bool:
        if key == "model" and isinstance(saved, dict):  # a field added later takes its default in an older checkpoint
            try:
                return ModelSpec(**saved) == self.spec
            except TypeError:
                return False
        return saved == self.hparams[key]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Refuse a checkpoint of another architecture or dataset, in one line."""
        saved = checkpoint.get("hyper_parameters", {})
        if saved.get("model", {}).get("num_classes") != self.spec.num_classes:
            raise KssError(
                f"the checkpoint was trained on {saved.get('model', {}).get('num_classes')} classes, "
                f"this dataset has {self.spec.num_classes}; use the dataset it was trained on"
            )
        for key in ("genotype", "model", "neuron"):
            if not self._same(key, saved.get(key)):
                raise KssError(
                    f"the checkpoint holds a different architecture ({key} differs); "
                    "resume with the settings it was trained with, or start a new run dir"
                )
        for key in ("optimizer", "scheduler"):
            if saved.get(key) != self.hparams[key]:
                raise KssError(
                    f"the checkpoint was trained with another {key} ({saved.get(key)}); resuming would not give "
                    "the run an uninterrupted one gives (a cosine schedule's T_max follows trainer.max_epochs); "
                    "rerun with the same settings, or start a new run dir"
                )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)  # neuron state is reset inside, for every batch

    def _step(self, batch, stage: str) -> torch.Tensor:
        images, labels = batch
        logits = self(images)  # time-averaged population vote
        loss = F.cross_entropy(logits, labels)
        getattr(self, f"{stage}_metrics").update(logits, labels)
        self.log(f"{stage}/loss", loss, on_step=stage == "train", on_epoch=True, prog_bar=True,
                 batch_size=len(labels), sync_dist=stage != "train")
        return loss

    def training_step(self, batch, batch_idx):
        loss = self._step(batch, "train")
        if not torch.isfinite(loss):  # one host sync per step: cheap next to a BPTT step
            raise KssError(f"the training loss became {loss.item()} in epoch {self.current_epoch}, step "
                           f"{self.global_step}; the last good checkpoint (checkpoints/last.ckpt, if an epoch "
                           "finished) is kept; lower optimizer.lr or check the data")
        return loss

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def _log_epoch(self, stage: str) -> dict:
        metrics = getattr(self, f"{stage}_metrics")
        values = metrics.compute()
        self.log_dict(values, prog_bar=True, sync_dist=True)
        metrics.reset()
        return values

    def on_train_epoch_end(self):
        self._log_epoch("train")

    def on_validation_epoch_end(self):
        values = self._log_epoch("val")
        if not self.trainer.sanity_checking:
            self.best_val_acc.update(values["val/acc"])
            self.log("val/best_acc", self.best_val_acc.compute(), prog_bar=True, sync_dist=True)

    def on_test_epoch_end(self):
        self._log_epoch("test")

    def configure_optimizers(self):
        # The configs are `_partial_: true`: instantiate gives a factory, completed here.
        optimizer = instantiate(self.hparams.optimizer)(params=self.parameters())
        if not self.hparams.scheduler:
            return optimizer
        return {"optimizer": optimizer,
                "lr_scheduler": lr_scheduler(self.hparams.scheduler, optimizer,
                                             lambda: self.trainer.estimated_stepping_batches)}

    def on_train_start(self):
        # A schedule over the run's steps (T_max: null) is not named by the settings, so a resumed run's
        # (restored from the checkpoint by now, whatever the strategy) is compared with this run's length.
        if spans_the_run(self.hparams.scheduler):
            spans, steps = self.lr_schedulers().T_max, self.trainer.estimated_stepping_batches
            if spans != steps:
                raise KssError(f"the checkpoint's learning-rate schedule spans {spans} optimizer steps and this run "
                               f"has {steps} (its epochs, batches per epoch or devices differ); rerun with the same "
                               "settings, or start a new run dir")
