import csv
import json
import os
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

from kss import config as C
from kss.errors import KssError
from kss.train.module import SpikingClassifier, lr_scheduler
from kss.search.records import SUMMARY
from kss.tasks.search import run_search
from kss.space.genotype import Genotype, check_fits
from kss.space.params import count_params
from kss.tasks.train import CHECKPOINTS, METRICS, make_loggers, optional_callbacks, run_train

TRAIN = ["trainer.max_epochs=1", "wandb.mode=disabled", "optimizer=adam", "optimizer.lr=1e-2",
         "iters=2", "dataset.train_size=96", "dataset.val_size=32", "dataset.test_size=32"]


@pytest.fixture
def train_cfg(compose_cfg):
    def make(*overrides):
        return compose_cfg(*TRAIN, *overrides, config_name="train")

    return make


@pytest.mark.parametrize("cell_type", ["forward", "backward"])
@pytest.mark.parametrize("kernel_set", ["set1", "set5"])
def test_fast_dev_run(train_cfg, tmp_path, cell_type, kernel_set):
    cfg = train_cfg(f"model.cell_type={cell_type}", f"kernel_set={kernel_set}", "trainer.fast_dev_run=true")
    metrics = run_train(cfg, tmp_path)
    assert 0 <= metrics["test_acc"] <= 1
    assert metrics["genotype"]["cell_type"] == cell_type
    assert metrics["kernels"] == list(C.KERNEL_SETS[kernel_set])
    # the network trained and tested is the search's winner, counted as the search counted it
    winner = json.loads((tmp_path / SUMMARY).read_text())
    genotype = Genotype.from_json(metrics["genotype"])
    check_fits(genotype, C.KERNEL_SETS[kernel_set], cell_type)
    assert metrics["genotype"] == winner["best_genotype"] and metrics["search_score"] == winner["best_score"]
    spec = C.model_spec(cfg, C.data_module(cfg))
    assert metrics["params"] == winner["params"] == count_params(genotype, spec, C.neuron_spec(cfg))
    assert metrics["epochs"] == 1 and metrics["test_acc"] is not None


def test_search_callback_saves_the_search_as_search_py_does(train_cfg, compose_cfg, tmp_path):
    metrics = run_train(train_cfg(), tmp_path / "train")
    searched = json.loads((tmp_path / "train" / SUMMARY).read_text())
    alone = run_search(compose_cfg("iters=2", "dataset.train_size=96", "dataset.val_size=32"), tmp_path / "search")
    assert searched["best_genotype"] == alone["best_genotype"] == metrics["genotype"]
    assert searched["best_score"] == alone["best_score"] == metrics["search_score"]
    assert (tmp_path / "train" / "candidates.jsonl").read_text().count("\n") == 2
    for key in ("test_acc", "best_val_acc", "epochs", "params", "memory_fp32_bytes", "search_seconds",
                "train_seconds", "images_per_second"):
        assert metrics[key] is not None, key
    assert json.loads((tmp_path / "train" / METRICS).read_text()) == metrics
    assert (tmp_path / "train" / CHECKPOINTS / "last.ckpt").exists()


def test_genotype_file_path(train_cfg, compose_cfg, tmp_path):
    found = run_search(compose_cfg("kernel_set=set3"), tmp_path / "search")
    metrics = run_train(train_cfg("kernel_set=set3", f"genotype={tmp_path / 'search' / SUMMARY}"), tmp_path / "train")
    assert metrics["genotype"] == found["best_genotype"]
    # the given search's score, not a search of the training run's own
    assert metrics["search_score"] == found["best_score"] and not (tmp_path / "train" / SUMMARY).exists()


def test_published_genotype_by_name(train_cfg, tmp_path):
    metrics = run_train(train_cfg("genotype=snasnet_cifar100", "model.cell_type=backward",
                                  "trainer.fast_dev_run=true"), tmp_path)
    assert metrics["genotype"]["edges"]["2->0"] == "conv3"  # 0302 0030 3003 0000: code 3 = conv 3x3


def test_weight_decay_is_really_applied(train_cfg, tmp_path):
    cfg = train_cfg("optimizer=sgd", "genotype=snasnet_cifar10", "model.cell_type=backward")
    module = SpikingClassifier(
        model={**C.model_spec(cfg, C.data_module(cfg)).__dict__}, neuron=dict(cfg.neuron),
        optimizer=dict(cfg.optimizer), scheduler=None,
        genotype=__import__("kss.space.genotype", fromlist=["x"]).load_genotype("snasnet_cifar10").to_json())
    optimizer = module.configure_optimizers()
    assert optimizer.param_groups[0]["weight_decay"] == 5e-4 and optimizer.param_groups[0]["momentum"] == 0.9


def small_module(seed=0) -> tuple[SpikingClassifier, torch.utils.data.DataLoader]:
    from kss.train.data import KssDataModule
    from kss.space.genotype import load_genotype

    torch.manual_seed(seed)
    data = KssDataModule("synthetic", batch_size=16, train_size=64, test_size=16, seed=seed, image_size=16)
    data.setup()
    module = SpikingClassifier(
        model=dict(in_channels=3, image_size=16, num_classes=10, c1=4, c2=8, population=10, hidden=32,
                   sap=2, timesteps=2, dropout=0.0, cell_type="backward"),
        neuron=dict(kind="lif"),
        optimizer={"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-2},
        genotype=load_genotype("snasnet_cifar10").to_json(),
    )
    return module, data.train_dataloader()


def test_training_reduces_the_loss():
    module, loader = small_module()
    images, labels = next(iter(loader))
    optimizer = module.configure_optimizers()
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(module(images), labels)
        optimizer.zero_grad()
        loss.backward()  # surrogate gradients through time
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses  # 2.30 -> ~1.36 here; no learning stays at ~2.30


def test_checkpoint_round_trip_gives_identical_predictions(tmp_path):
    module, loader = small_module()
    trainer = L.Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        accelerator="cpu", enable_model_summary=False)
    trainer.fit(module, train_dataloaders=loader)
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    loaded = SpikingClassifier.load_from_checkpoint(tmp_path / "model.ckpt", weights_only=True)
    images = next(iter(loader))[0]
    module.eval()
    loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(module(images), loaded(images), rtol=0, atol=0)
    assert loaded.hparams.genotype == module.hparams.genotype


def test_resume_continues_at_the_right_epoch(train_cfg, tmp_path):
    # constant LR: a longer run then equals continuing a shorter one (a cosine schedule would not)
    first = run_train(train_cfg("genotype=snasnet_cifar10", "model.cell_type=backward", "scheduler=none"), tmp_path)
    assert first["epochs"] == 1
    second = run_train(train_cfg("genotype=snasnet_cifar10", "model.cell_type=backward", "trainer.max_epochs=3",
                                 "scheduler=none", "resume=true"), tmp_path)
    assert second["epochs"] == 3
    epochs = set()
    for path in sorted((tmp_path / "csv").glob("version_*/metrics.csv")):
        epochs |= {int(row["epoch"]) for row in csv.DictReader(path.open()) if row.get("train/acc")}
    assert epochs == {0, 1, 2}  # epoch 0 from the first session, 1-2 from the resumed one
    again = run_train(train_cfg("genotype=snasnet_cifar10", "model.cell_type=backward", "trainer.max_epochs=3",
                                "scheduler=none"), tmp_path)
    assert again == second  # finished: reported, not retrained


def test_settings_that_change_the_result_are_never_mixed_into_a_run(train_cfg, tmp_path):
    base = ["genotype=snasnet_cifar10", "model.cell_type=backward"]
    run_train(train_cfg(*base), tmp_path)
    with pytest.raises(KssError, match="finished run with other settings .*model.*neuron"):
        run_train(train_cfg(*base, "neuron=plif", "model.timesteps=3"), tmp_path)
    with pytest.raises(KssError, match="finished run with other settings .*optimizer"):
        run_train(train_cfg(*base, "optimizer.lr=0.5"), tmp_path)
    # a longer cosine run is another schedule (T_max follows max_epochs): refused, not silently resumed
    with pytest.raises(KssError, match="scheduler differ .*length follows the run's: trainer.max_epochs"):
        run_train(train_cfg(*base, "trainer.max_epochs=2"), tmp_path)
    (tmp_path / METRICS).unlink()  # as if interrupted: only the checkpoint is left to compare with
    with pytest.raises(KssError, match="another scheduler"):
        run_train(train_cfg(*base, "trainer.max_epochs=2"), tmp_path)


def test_a_per_step_schedule_is_not_stretched_over_a_longer_run(train_cfg, tmp_path):
    """cosine_steps' settings do not name the run's length (T_max: null), so the checkpoint's schedule is
    compared: extending the run, or resuming it longer, would start the cosine climbing again."""
    base = ["genotype=snasnet_cifar10", "model.cell_type=backward", "scheduler=cosine_steps"]
    assert run_train(train_cfg(*base), tmp_path)["optimizer_steps"] == 4  # 64 training images, batch 16
    with pytest.raises(KssError, match="finished 1-epoch run whose learning-rate schedule spans its own steps") as info:
        run_train(train_cfg(*base, "trainer.max_epochs=2"), tmp_path)  # refused before any training starts
    assert "\n" not in str(info.value) and len(list((tmp_path / "csv").glob("version_*"))) == 1
    (tmp_path / METRICS).unlink()  # as if interrupted: the checkpoint's schedule is compared
    with pytest.raises(KssError, match="spans 4 optimizer steps and this run has 8"):
        run_train(train_cfg(*base, "trainer.max_epochs=2"), tmp_path)
    assert run_train(train_cfg(*base), tmp_path)["epochs"] == 1  # the same length resumes (here: finished)


def test_search_leaves_the_training_random_state_alone(compose_cfg, tmp_path):
    from kss import config as C
    from kss.search.loop import search
    from kss.tasks.search import setup_from_config

    cfg = compose_cfg("iters=3")
    data = C.data_module(cfg)
    draws = []
    for _ in range(2):  # the first call searches, the second finds the search finished
        torch.manual_seed(0)
        search(setup_from_config(cfg, data), data, tmp_path, progress=False)
        draws.append(torch.rand(1).item())
    assert draws[0] == draws[1]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["optimizer.lr=0"], "optimizer.lr must be > 0"),
        (["optimizer.lr=-1"], "optimizer.lr must be > 0"),
        (["trainer.max_epochs=0"], "max_epochs must be a positive integer"),
        (["genotype=snasnet_cifar10"], "cell_type=backward"),
        (["genotype=snasnet_cifar10", "model.cell_type=backward", "kernel_set=set3"], "does not offer"),
        (["resume=true"], "does not exist"),
        (["wandb.mode=sometimes"], "wandb.mode"),
        (["trainer.sync_batchnorm=true"], "needs GPUs"),
        (["model.compile=maybe"], "model.compile must be auto, true or false"),
        (["scheduler=cosine_steps", "scheduler.interval=batch"], "scheduler.interval must be epoch or step"),
        (["scheduler=cosine", "scheduler.T_max=null"], "needs scheduler.interval=step"),
    ],
)
def test_bad_training_input(train_cfg, tmp_path, overrides, message):
    with pytest.raises(KssError, match=message) as info:
        run_train(train_cfg(*overrides), tmp_path)
    assert "\n" not in str(info.value)
    assert not (tmp_path / METRICS).exists()


@pytest.mark.parametrize("kernels, fix", [([3, 5], "kernel_set=set3"), ([5], "kernel_set.kernels=[5]")])
def test_a_search_json_of_another_kernel_set_names_the_override_that_trains_it(train_cfg, tmp_path, kernels, fix):
    found = tmp_path / "search.json"
    found.write_text(json.dumps({"kernels": kernels, "best_genotype": {"cell_type": "forward", "edges": {"0->3": "conv5"}}}))
    with pytest.raises(KssError) as info:
        run_train(train_cfg(f"genotype={found}"), tmp_path / "run")  # the default kernel set is set1
    assert str(info.value).endswith(f"it was searched with {fix}: pass that")


def test_checkpoint_of_another_architecture_or_dataset_is_refused(train_cfg, tmp_path):
    run_train(train_cfg("genotype=snasnet_cifar10", "model.cell_type=backward"), tmp_path)
    with pytest.raises(KssError, match="finished run with other settings .*genotype"):
        run_train(train_cfg("genotype=snasnet_cifar100", "model.cell_type=backward"), tmp_path)
    (tmp_path / METRICS).unlink()  # as if interrupted: a checkpoint but no result
    before = (tmp_path / CHECKPOINTS / "last.ckpt").read_bytes()
    with pytest.raises(KssError, match="different architecture"):
        run_train(train_cfg("genotype=snasnet_cifar100", "model.cell_type=backward", "trainer.max_epochs=2"), tmp_path)
    with pytest.raises(KssError, match="trained on 10 classes, this dataset has 5"):
        run_train(train_cfg("genotype=snasnet_cifar10", "model.cell_type=backward", "trainer.max_epochs=2",
                            "dataset.num_classes=5"), tmp_path)
    with pytest.raises(KssError, match="refusing to overwrite"):
        run_train(train_cfg("genotype=snasnet_cifar10", "model.cell_type=backward", "trainer.max_epochs=2",
                            "resume=false"), tmp_path)
    assert (tmp_path / CHECKPOINTS / "last.ckpt").read_bytes() == before  # nothing overwritten


def test_paper_presets_compose(compose_cfg):
    for name, population in [("paper_cifar10", 100), ("paper_cifar100", 500)]:
        cfg = compose_cfg(f"experiment={name}", config_name="train", tiny=False)
        assert cfg.optimizer.lr == 0.1 and cfg.optimizer.momentum == 0.9 and cfg.optimizer.weight_decay == 5e-4
        assert cfg.scheduler.eta_min == pytest.approx(1e-3) and cfg.scheduler.T_max == 300 and cfg.trainer.max_epochs == 300
        assert cfg.dataset.batch_size == 64 and cfg.model.timesteps == 5
        assert (cfg.model.c1, cfg.model.c2, cfg.model.population, cfg.model.sap) == (128, 256, population, 4)
        assert cfg.model.batch_norm == "per_step"


def test_dataset_chooses_its_reference_model(compose_cfg):
    for config_name in ("search", "train"):
        cifar100 = compose_cfg("dataset=cifar100", config_name=config_name, tiny=False)
        assert (cifar100.model.c1, cifar100.model.c2, cifar100.model.population) == (128, 256, 500)
        assert cifar100.model.batch_norm == "per_step" and cifar100.model.sap == 2
        cifar10 = compose_cfg(config_name=config_name, tiny=False)
        assert (cifar10.dataset.name, cifar10.model.population) == ("cifar10", 100)
        assert compose_cfg("dataset=cifar100", "model=cpu", config_name=config_name, tiny=False).model.c1 == 16


def test_cosine_anneals_to_a_hundredth_of_the_learning_rate(compose_cfg):
    for optimizer, lr in [("sgd", 0.1), ("adamw", None)]:
        cfg = compose_cfg(f"optimizer={optimizer}", config_name="train")
        assert cfg.scheduler.eta_min == pytest.approx(0.01 * (lr or cfg.optimizer.lr))
    assert compose_cfg("optimizer.lr=0.5", config_name="train").scheduler.eta_min == pytest.approx(0.005)


@pytest.mark.parametrize("scheduler", ["cosine", "cosine_steps"])
def test_a_one_epoch_run_anneals_only_when_stepped_per_step(compose_cfg, scheduler):
    """One epoch of 5 steps, scheduled as Lightning does: per step, or once at the epoch's end."""
    cfg = compose_cfg(f"scheduler={scheduler}", "trainer.max_epochs=1", "optimizer=sgd", config_name="train")
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.optimizer.lr)
    entry = lr_scheduler(OmegaConf.to_container(cfg.scheduler, resolve=True), optimizer, lambda: 5)
    used = []
    for _ in range(5):
        used.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if entry["interval"] == "step":
            entry["scheduler"].step()
    if entry["interval"] == "epoch":
        entry["scheduler"].step()
    peak, end = cfg.optimizer.lr, cfg.scheduler.eta_min
    if scheduler == "cosine":  # T_max = 1 epoch: every step of it at the peak
        assert used == [peak] * 5
    else:  # decays within the epoch, to eta_min at its end
        assert used[0] == peak and all(a > b for a, b in zip(used, used[1:]))
    assert optimizer.param_groups[0]["lr"] == pytest.approx(end)
    with pytest.raises(KssError, match="has no end"):  # max_epochs=-1: never decaying is refused
        lr_scheduler({**OmegaConf.to_container(cfg.scheduler, resolve=True), "interval": "step", "T_max": None},
                     optimizer, lambda: float("inf"))


def test_every_config_option_instantiates(compose_cfg):
    """A typo in any _target_ fails here, not in a user's run."""
    from hydra.utils import instantiate

    conf = Path(__file__).resolve().parents[2] / "conf"
    params = [torch.nn.Parameter(torch.zeros(1))]
    for option in sorted(p.stem for p in (conf / "optimizer").glob("*.yaml")):
        optimizer = instantiate(compose_cfg(f"optimizer={option}", config_name="train").optimizer)(params=params)
        for sched in sorted(p.stem for p in (conf / "scheduler").glob("*.yaml")):
            cfg = compose_cfg(f"scheduler={sched}", config_name="train")
            if cfg.scheduler:
                lr_scheduler(OmegaConf.to_container(cfg.scheduler, resolve=True), optimizer, lambda: 10)
    for option in sorted(p.stem for p in (conf / "trainer").glob("*.yaml")):
        assert "max_epochs" in compose_cfg(f"trainer={option}", config_name="train").trainer
    for option in sorted(p.stem for p in (conf / "experiment").glob("*.yaml")):
        compose_cfg(f"experiment={option}", config_name="train", tiny=False)
    for option in sorted(p.stem for p in (conf / "callbacks").glob("*.yaml")):
        cfg = compose_cfg(f"callbacks={option}", "progress=true", config_name="train")
        made = optional_callbacks(cfg)
        assert len(made) == len([s for s in (cfg.get("callbacks") or {}).values() if s is not None])
        assert all(isinstance(c, L.Callback) for c in made), option
    for option in sorted(p.stem for p in (conf / "logger").glob("*.yaml")):
        cfg = compose_cfg(f"logger={option}", "dataset=synthetic", config_name="train", tiny=False)
        kinds = [type(logger).__name__ for logger in make_loggers(cfg, Path("unused"))]
        assert kinds == ["CSVLogger", *(["WandbLogger"] if cfg.wandb.mode != "disabled" else []),
                         *(["TensorBoardLogger"] if cfg.tensorboard else [])], option
    for option in sorted(p.stem for p in (conf / "dataset").glob("*.yaml")):
        cfg = compose_cfg(f"dataset={option}", config_name="train", tiny=False)
        data = C.data_module(cfg)  # constructed, not loaded: nothing is downloaded
        assert data.name == option and min(data.in_channels, data.image_size, data.num_classes) >= 1
        assert cfg.model.c1 > 0  # the dataset's reference model (its YAML's defaults list) composes too
        assert compose_cfg(f"dataset={option}", "model=tiny", config_name="train", tiny=False).model.c1 == 4  # model=... wins
    genotype = Genotype.from_json({"cell_type": "forward", "edges": {"0->3": "conv3"}})
    for option in sorted(p.stem for p in (conf / "model").glob("*.yaml")):
        dataset = "tinyimagenet" if "tinyimagenet" in option else "cifar100" if "cifar100" in option else "cifar10"
        cfg = compose_cfg(f"model={option}", f"dataset={dataset}", config_name="train", tiny=False)
        spec = C.model_spec(cfg, C.data_module(cfg))
        spec.validate([1, 3])
        assert count_params(genotype, spec, C.neuron_spec(cfg)) > spec.features * spec.hidden > 0, option


def test_each_run_gets_its_own_finished_wandb_run_and_tensorboard(train_cfg, tmp_path):
    import wandb

    for name in ("a", "b"):
        run_train(train_cfg("genotype=snasnet_cifar10", "model.cell_type=backward", "wandb.mode=offline",
                            "tensorboard=true", "trainer.limit_train_batches=2"), tmp_path / name)
        assert wandb.run is None  # finished, so the next job cannot log into it
    runs = {name: list((tmp_path / name / "wandb").glob("offline-run-*")) for name in ("a", "b")}
    assert all(len(r) == 1 for r in runs.values()) and runs["a"][0].name != runs["b"][0].name
    assert list((tmp_path / "a" / "tensorboard").rglob("events.out.tfevents*"))


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_searches_once_and_broadcasts(tmp_path):
    """The DDP path on CPU (gloo): rank 0 searches, rank 1 receives the genotype; one metrics.json."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "train.py", "dataset=synthetic", "model=tiny", "iters=2", "score.batch_size=16",
         "trainer=cpu", "trainer.devices=2", "trainer.strategy=ddp_find_unused_parameters_true",
         "trainer.max_epochs=1", "wandb.mode=disabled", "progress=false", f"hydra.run.dir={tmp_path}"],
        cwd=root, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "candidates.jsonl").read_text().count("\n") == 2  # searched once
    metrics = json.loads((tmp_path / METRICS).read_text())
    assert metrics["genotype"] == json.loads((tmp_path / SUMMARY).read_text())["best_genotype"]


def test_a_nan_loss_stops_training_in_one_line_and_keeps_the_last_good_checkpoint(train_cfg, tmp_path, monkeypatch):
    run_train(train_cfg("genotype=snasnet_cifar10", "model.cell_type=backward", "scheduler=none"), tmp_path)
    last = tmp_path / CHECKPOINTS / "last.ckpt"
    before = last.read_bytes()
    real = SpikingClassifier.forward

    def poisoned(self, images):
        logits = real(self, images)
        return logits * float("nan") if self.current_epoch >= 1 else logits

    monkeypatch.setattr(SpikingClassifier, "forward", poisoned)
    with pytest.raises(KssError, match=r"the training loss became nan in epoch 1, step \d+; the last good checkpoint") as info:
        run_train(train_cfg("genotype=snasnet_cifar10", "model.cell_type=backward", "scheduler=none",
                            "trainer.max_epochs=2"), tmp_path)
    assert "\n" not in str(info.value)
    assert last.read_bytes() == before  # epoch 0's checkpoint, untouched


@pytest.mark.parametrize("trainer", ["default", "cpu"])
def test_the_same_seed_trains_to_the_same_metrics(train_cfg, tmp_path, trainer):
    """The cpu preset trains without torch.use_deterministic_algorithms (no op of a kss CPU training
    needs it) and still gives the same bits; the default preset asks for it (warn), for GPUs."""
    runs = [run_train(train_cfg("genotype=snasnet_cifar10", "model.cell_type=backward", "dataset.augment=true",
                                "dataset.num_workers=1", f"trainer={trainer}"), tmp_path / name) for name in ("a", "b")]
    assert torch.are_deterministic_algorithms_enabled() == (trainer == "default")
    for key in ("test_acc", "best_val_acc"):
        assert runs[0][key] == runs[1][key]
    a = torch.load(runs[0]["checkpoint"], weights_only=False)["state_dict"]
    b = torch.load(runs[1]["checkpoint"], weights_only=False)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("preset", ["default", "fdr", "limit", "overfit", "profiler"])
def test_debug_presets_compose(compose_cfg, preset):
    cfg = compose_cfg(f"debug={preset}", config_name="train", tiny=False)
    assert cfg.trainer.accelerator == "cpu" and cfg.wandb.mode == "disabled" and cfg.trainer.detect_anomaly
    expected = {"fdr": ("fast_dev_run", True), "limit": ("limit_train_batches", 4), "overfit": ("overfit_batches", 2),
                "profiler": ("profiler", "simple"), "default": ("max_epochs", 1)}[preset]
    assert cfg.trainer[expected[0]] == expected[1]


@pytest.mark.parametrize("preset", ["fdr", "limit"])
def test_debug_presets_run_on_the_tiny_config(train_cfg, tmp_path, preset):
    metrics = run_train(train_cfg(f"debug={preset}", "genotype=snasnet_cifar10", "model.cell_type=backward"), tmp_path)
    assert 0 <= metrics["test_acc"] <= 1


def test_the_resolved_config_is_printed_as_a_tree_unless_switched_off(compose_cfg, capsys):
    from kss.cli import checked, run_task

    run_task(lambda cfg: checked(), compose_cfg(), "search")  # printed once the task has checked its input
    out = capsys.readouterr().out
    assert "config" in out and "kernel_set" in out and "eta_min" not in out  # search config: no training groups
    run_task(lambda cfg: checked(), compose_cfg("extras=none"), "search")
    assert capsys.readouterr().out == ""


@pytest.mark.slow
def test_optuna_hparams_search_maximises_validation_accuracy(tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "train.py", "-m", "hparams_search=optuna", "hydra.sweeper.n_trials=2",
         "hydra.sweeper.sampler.n_startup_trials=1", "dataset=synthetic", "model=tiny", "iters=2", "score.batch_size=16",
         "genotype=snasnet_cifar10", "model.cell_type=backward", "trainer.max_epochs=1", "wandb.mode=disabled",
         "progress=false", "extras=none", "optimizer=adam", *TRAIN[-3:], f"hydra.sweep.dir={tmp_path}"],
        cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    best = (tmp_path / "optimization_results.yaml").read_text()
    trials = [json.loads((tmp_path / f"trial_{i}" / METRICS).read_text()) for i in range(2)]
    assert f"best_value: {max(t['best_val_acc'] for t in trials)}" in best  # validation, not test accuracy
    # kss's own sweeper (hydra_plugins/kss_optuna_sweeper) on the current Optuna, not hydra-optuna-sweeper
    assert "best_params:" in best and "optimizer.lr" in best and "best_trial:" in best


@pytest.mark.parametrize("logger, wandb_mode, tensorboard", [
    ("wandb", "offline", False), ("csv", "disabled", False), ("tensorboard", "disabled", True),
    ("many_loggers", "offline", True)])
def test_logger_presets(compose_cfg, logger, wandb_mode, tensorboard):
    for config_name in ("search", "train"):
        cfg = compose_cfg(f"logger={logger}", config_name=config_name, tiny=False)
        assert (cfg.wandb.mode, cfg.tensorboard) == (wandb_mode, tensorboard)


def test_callback_presets_run_and_kss_keeps_its_own(train_cfg, tmp_path):
    from kss.tasks.train import optional_callbacks

    cfg = train_cfg("callbacks=early_stopping", "logger=csv", "progress=true")
    names = sorted(type(c).__name__ for c in optional_callbacks(cfg))
    assert names == ["EarlyStopping", "LearningRateMonitor", "ModelSummary", "RichProgressBar"]
    assert optional_callbacks(train_cfg("callbacks=none")) == []
    assert "RichProgressBar" not in [type(c).__name__ for c in optional_callbacks(train_cfg("progress=false"))]
    metrics = run_train(train_cfg("callbacks=early_stopping", "logger=csv", "debug=fdr",
                                  "genotype=snasnet_cifar10", "model.cell_type=backward"), tmp_path)
    assert 0 <= metrics["test_acc"] <= 1 and (tmp_path / CHECKPOINTS).is_dir() is not None


def test_compile_switch_compiles_the_network_in_place(train_cfg):
    from dataclasses import asdict

    from kss.space.genotype import load_genotype
    from kss.tasks.train import run_settings

    cfg = train_cfg("genotype=snasnet_cifar10", "model.cell_type=backward", "model.compile=true")
    data = C.data_module(cfg)
    spec = C.model_spec(cfg, data)  # compile is not part of the network's shape
    eager = SpikingClassifier(model=asdict(spec), neuron=asdict(C.neuron_spec(cfg)), optimizer={"lr": 0.1},
                              genotype=load_genotype("snasnet_cifar10").to_json())
    compiled = SpikingClassifier(model=asdict(spec), neuron=asdict(C.neuron_spec(cfg)), optimizer={"lr": 0.1},
                                 genotype=load_genotype("snasnet_cifar10").to_json(), compile=True)
    assert compiled.net._compiled_call_impl is not None and eager.net._compiled_call_impl is None
    assert compiled.state_dict().keys() == eager.state_dict().keys()  # checkpoints load either way
    assert "compile" not in compiled.hparams
    assert run_settings(cfg)["model"]["compile"] is True  # a rerun with another setting is refused, not mixed


@pytest.mark.slow
def test_compiled_training_switches_between_train_val_and_test_without_recompiling_each_time(tmp_path):
    """Traced, spikingjelly's reset guarded the compiled forward on the last forward's membranes, so each
    switch between training and evaluation compiled again until dynamo's recompile limit (8) sent the rest
    of the run back to eager. A fresh process: dynamo's caches are per process."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    run = subprocess.run(
        [sys.executable, "train.py", "dataset=synthetic", "model=tiny", "iters=2", "score.batch_size=16", "trainer=cpu",
         "trainer.max_epochs=3", "optimizer=adam", "dataset.train_size=100", "dataset.val_size=36",
         "dataset.test_size=36", "model.compile=true", "wandb.mode=disabled", "progress=false", "extras=none",
         f"hydra.run.dir={tmp_path}"], cwd=root, capture_output=True, text=True, env={**os.environ, "TORCH_LOGS": "recompiles"})
    assert run.returncode == 0, run.stderr[-2000:]
    assert "recompile_limit" not in run.stderr
    # what stays: grad mode (train/validation), inference mode (test), the short last batches
    assert run.stderr.count("Recompiling function") < 8, run.stderr[-3000:]  # 5 with torch 2.14


def test_compile_auto_is_off_for_tests_and_short_runs_and_on_for_a_long_cpu_run(train_cfg, compose_cfg, tmp_path):
    from types import SimpleNamespace

    from kss.tasks.train import COMPILE_PAYS_FROM_S, estimated_eager_seconds, should_compile

    tiny = train_cfg("genotype=snasnet_cifar10", "model.cell_type=backward")
    assert tiny.model.compile == "auto"  # the default
    data = C.data_module(tiny)
    data.setup()
    assert not should_compile(tiny, data, C.model_spec(tiny, data))
    metrics = run_train(tiny, tmp_path)
    assert metrics["settings"]["model"]["compile"] is False  # what auto chose is recorded
    # a finished auto run is recognised by an explicit false (what auto chose), and by auto
    assert run_train(train_cfg("genotype=snasnet_cifar10", "model.cell_type=backward", "model.compile=false"),
                     tmp_path) == metrics
    # Fashion-MNIST's 55,000 training images, 5 epochs, the CPU preset: on; 40 batches or 1 epoch: off
    fmnist = SimpleNamespace(train_set=range(55_000), in_channels=1, image_size=28, num_classes=10)

    def decide(*overrides):
        cfg = compose_cfg("experiment=fmnist_cpu", *overrides, config_name="train", tiny=False)
        return should_compile(cfg, fmnist, C.model_spec(cfg, fmnist)), estimated_eager_seconds(
            cfg, fmnist, C.model_spec(cfg, fmnist))

    on, seconds = decide()
    assert on and seconds >= COMPILE_PAYS_FROM_S
    assert not decide("trainer.limit_train_batches=40")[0] and not decide("trainer.max_epochs=1")[0]
    assert not decide("trainer.fast_dev_run=true")[0]
    assert decide("model.compile=false") == (False, seconds) and decide("model.compile=true")[0]
    assert not decide("trainer.accelerator=gpu")[0]  # not measured on GPUs: auto leaves it off there


def test_metrics_count_the_images_trained_and_carry_the_score_of_a_given_search(train_cfg, compose_cfg, tmp_path):
    search_dir = tmp_path / "search"
    searched = run_search(compose_cfg("iters=2"), search_dir)
    # 64 training images in batches of 16: limit_train_batches=2 trains 32 of them per epoch
    metrics = run_train(train_cfg(f"genotype={search_dir / SUMMARY}", "trainer.limit_train_batches=2",
                                  "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"), tmp_path / "train")
    assert metrics["train_images_per_epoch"] == 32
    assert metrics["search_score"] == searched["best_score"]
    assert metrics["search_seconds"] == searched["search_seconds"]


def test_a_training_run_of_a_search_json_is_named_without_repeats(compose_cfg):
    from omegaconf import OmegaConf

    def run_name(*overrides):
        composed = compose_cfg(*overrides, config_name="train", hydra=True)
        return Path(OmegaConf.to_container(composed.hydra.run, resolve=True)["dir"]).name

    search = "outputs/search/1x1_3x3_50x_synthetic_seed0/search.json"
    assert run_name(f"genotype={search}") == "1x1_3x3_50x_synthetic_seed0"
    assert run_name(f"genotype={search}", "seed=1") == "1x1_3x3_50x_synthetic_seed0_seed1"
    assert run_name() == "1x1_3x3_4x_synthetic_seed0"
    assert run_name("genotype=snasnet_cifar10") == "snasnet_cifar10_synthetic_seed0"
