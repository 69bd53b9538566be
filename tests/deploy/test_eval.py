import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from spikingjelly.activation_based import functional

from kss.errors import KssError
from kss.deploy.evaluate import EVAL, run_eval
from kss.deploy.export import Deployed, deployed, run_graph, to_nir
from kss.space.genotype import Genotype, load_genotype, sample_genotype
from kss.space.network import ModelSpec, build_network
from kss.space.neurons import NeuronSpec
from kss.deploy.quantize import Int8Weight, quantize_int8, quantize_weight, stored_bytes
from kss.tasks.train import METRICS, run_train
from tests.conftest import CONF, TINY

ROOT = Path(__file__).resolve().parents[2]
DATA = ["dataset.train_size=96", "dataset.val_size=32", "dataset.test_size=32"]
TRAIN = ["trainer.max_epochs=2", "optimizer=adam", "optimizer.lr=1e-2", "iters=2", *DATA]


def cfg(config_name: str, *overrides, tiny=True):
    base = TINY if tiny else []
    if config_name == "eval":  # eval.yaml has no search settings
        base = ["dataset=synthetic", "progress=false", "device=cpu", "wandb.mode=disabled"]
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name=config_name, overrides=[*base, *overrides])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny forward-cell network trained for two epochs: (run dir, metrics.json)."""
    run = tmp_path_factory.mktemp("train")
    return run, run_train(cfg("train", *TRAIN), run)


def test_evaluating_the_checkpoint_gives_the_accuracy_training_reported(trained, tmp_path):
    run, metrics = trained
    result = run_eval(cfg("eval", f"ckpt_path={run}", *DATA), tmp_path)
    assert result["test_acc"] == metrics["test_acc"] == result["trained_test_acc"]
    assert result["checkpoint"] == str(Path(metrics["checkpoint"]).resolve())  # the run's best checkpoint
    assert result["genotype"] == metrics["genotype"] and result["model"]["c1"] == 4
    assert result["params"] == metrics["params"] and result["latency_ms_per_image"] > 0
    assert result["energy_uj"] == pytest.approx(metrics["energy_uj"]) and result["cost_bn"] == "running statistics"
    assert json.loads((tmp_path / EVAL).read_text()) == result
    assert result["precision"] == "fp32" and "export" not in result


def test_eval_shows_progress(trained, tmp_path, capsys):
    run, _ = trained
    run_eval(cfg("eval", f"ckpt_path={run}", "quantize=int8", "export=nir", "progress=true", *DATA), tmp_path)
    err = capsys.readouterr().err
    assert all(bar in err for bar in ("test fp32", "test int8", "latency", "NIR")), err


def test_each_eval_setting_gets_its_own_directory_named_without_repeats(tmp_path):
    from omegaconf import OmegaConf

    run = tmp_path / "1x1_3x3_50x_fashion_mnist_seed0"
    dirs = set()
    for setting in ([], ["quantize=int8"], ["export=nir"], ["quantize=int8", "export=nir"]):
        with initialize_config_dir(config_dir=CONF, version_base="1.3"):
            composed = compose(config_name="eval", overrides=[f"ckpt_path={run}", "dataset=fashion_mnist", *setting],
                               return_hydra_config=True)
        name = Path(OmegaConf.to_container(composed.hydra.run, resolve=True)["dir"]).name
        assert name.count("fashion_mnist") == 1 and name.count("seed0") == 1, name
        dirs.add(name)
    assert dirs == {f"{run.name}_fp32", f"{run.name}_int8", f"{run.name}_fp32_nir", f"{run.name}_int8_nir"}


def test_int8_weights_are_int8_and_the_model_runs(trained, tmp_path):
    run, metrics = trained
    result = run_eval(cfg("eval", f"ckpt_path={run}", "quantize=int8", *DATA), tmp_path)
    assert result["precision"] == "int8" and result["fp32_test_acc"] == metrics["test_acc"]
    assert result["int8_acc_drop"] == pytest.approx(result["fp32_test_acc"] - result["test_acc"])
    assert 0 <= result["test_acc"] <= 1 and result["sops"] > 0
    # int8 values + fp32 scales, BN and biases: well under the fp32 weights
    assert result["weights_stored_bytes"] < 0.5 * result["memory_fp32_bytes"]


def test_quantised_layers_hold_int8_values_and_per_channel_scales():
    torch.manual_seed(0)
    net = build_network(load_genotype("snasnet_cifar10"), ModelSpec(in_channels=1, image_size=8, c1=4, c2=8, hidden=16,
                                                                    population=10, timesteps=2, cell_type="backward"),
                        NeuronSpec()).eval()
    quantised = quantize_int8(net)
    layers = [m for m in quantised.modules() if isinstance(m, Int8Weight)]
    convs_and_linears = [m for m in net.modules() if type(m) in (torch.nn.Conv2d, torch.nn.Linear)]
    assert len(layers) == len(convs_and_linears) > 0
    assert not any(type(m) in (torch.nn.Conv2d, torch.nn.Linear) for m in quantised.modules())
    for layer, original in zip(layers, convs_and_linears):
        assert layer.weight_int8.dtype == torch.int8 and layer.weight_int8.abs().max() <= 127
        assert layer.weight_scale.shape == (original.weight.shape[0],)  # one scale per output channel
        assert (layer.dequantized() - original.weight).abs().max() <= layer.weight_scale.max() / 2 + 1e-7
    assert stored_bytes(quantised) < stored_bytes(net) / 2
    images = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        assert quantised(images).shape == net(images).shape == (4, 10)
    weight = torch.randn(8, 4, 3, 3)
    values, scales = quantize_weight(weight)
    with warnings.catch_warnings():  # torch's own per-channel quantiser gives the same integers
        warnings.simplefilter("ignore")
        theirs = torch.quantize_per_channel(weight, scales.double(), torch.zeros(8, dtype=torch.long), 0, torch.qint8)
    assert torch.equal(theirs.int_repr(), values)


def active_network(seed: int, kernels=(1, 3), spec=None):
    """A forward-cell network whose spiking layers fire (trained-like BN statistics and weights)."""
    torch.manual_seed(seed)
    genotype = sample_genotype(np.random.default_rng(seed), list(kernels), "forward")
    net = build_network(genotype, spec or ModelSpec(in_channels=3, image_size=16, c1=4, c2=8, population=20,
                                                    hidden=16, timesteps=3, dropout=0.0), NeuronSpec())
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 3)
            m.bias.data.uniform_(-0.3, 1.0)
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2)
    net.head[4].weight.data *= 300
    net.head[6].weight.data *= 100
    return genotype, net.eval()


@pytest.mark.parametrize("seed", [2, 5, 7])
def test_nir_round_trip_predicts_what_the_network_does(tmp_path, seed):
    import nir

    genotype, net = active_network(seed, kernels=(3, 5))
    images = torch.randn(32, 3, 16, 16)
    with torch.no_grad():
        ours = net(images)
    assert run_deployed(deployed(net), images).equal(ours)  # the plain-layer rebuild, BN folded
    graph = to_nir(net, images, tmp_path / "model.nir")
    read = nir.read(str(tmp_path / "model.nir"))
    assert set(read.nodes) == set(graph.nodes) and "vote" in read.nodes  # the population vote is in the graph
    assert read.metadata["timesteps"] == 3
    theirs = run_graph(tmp_path / "model.nir", images, 3)
    assert torch.equal(ours.argmax(1), theirs.argmax(1)), genotype
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-5)
    assert len(set(ours.argmax(1).tolist())) > 1  # the test is not trivially one class


def test_eval_exports_nir_and_checks_the_round_trip(trained, tmp_path):
    run, _ = trained
    result = run_eval(cfg("eval", f"ckpt_path={run}", "export=nir", "export_images=16", *DATA), tmp_path)
    assert result["export"]["round_trip_same_predictions"] == 1.0 and result["export"]["round_trip_images"] == 16
    assert (tmp_path / "model.nir").stat().st_size > 1000


def test_backward_cells_are_refused_in_one_line(tmp_path):
    net = build_network(load_genotype("snasnet_cifar10"), ModelSpec(in_channels=1, image_size=8, c1=4, c2=8, hidden=16,
                                                                    population=10, timesteps=2, cell_type="backward"),
                        NeuronSpec()).eval()
    with pytest.raises(KssError, match="NIR export supports forward cells only") as info:
        to_nir(net, torch.randn(1, 1, 8, 8), tmp_path / "x.nir")
    assert "\n" not in str(info.value)


def test_a_value_summed_twice_through_skips_survives_the_round_trip(tmp_path):
    """Skips 0->1, 1->3 and 0->3 make node 3 twice node 0; NIR's edge set alone would count it once."""
    _, net = active_network(0, spec=ModelSpec(in_channels=3, image_size=16, c1=4, c2=8, population=20, hidden=16,
                                              timesteps=3, dropout=0.0))
    twice = Genotype.from_json({"cell_type": "forward", "edges": {"0->1": "skip", "0->2": "zero", "1->2": "conv3",
                                                                  "0->3": "skip", "1->3": "skip", "2->3": "avgpool3"}})
    torch.manual_seed(0)
    other = build_network(twice, net.spec, NeuronSpec())
    state = {k: v for k, v in net.state_dict().items() if not k.startswith(("cell1", "cell2"))}
    other.load_state_dict(state, strict=False)
    other.eval()
    images = torch.randn(32, 3, 16, 16)
    with torch.no_grad():
        ours = other(images)
    to_nir(other, images, tmp_path / "twice.nir")
    theirs = run_graph(tmp_path / "twice.nir", images, 3)
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-5)


def run_script(script: str, *args):
    return subprocess.run([sys.executable, script, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def one_line_exit_2(result, message: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, last


@pytest.mark.slow
def test_cli_bad_input_is_one_line_each(trained, tmp_path):
    run, _ = trained
    common = ["dataset=synthetic", "wandb.mode=disabled", "extras.print_config=false"]
    files, tmp_path = tmp_path, tmp_path / "runs"  # a refused run removes its empty parent folders too
    one_line_exit_2(run_script("eval.py", f"ckpt_path={run}", "export=onnx", *common, f"hydra.run.dir={tmp_path / 'a'}"),
                    "unknown export format 'onnx'; use export=nir")
    one_line_exit_2(run_script("eval.py", f"ckpt_path={files / 'none.ckpt'}", *common, f"hydra.run.dir={tmp_path / 'b'}"),
                    "does not exist")
    (files / "text.ckpt").write_text("not a checkpoint")
    one_line_exit_2(run_script("eval.py", f"ckpt_path={files / 'text.ckpt'}", *common, f"hydra.run.dir={tmp_path / 'c'}"),
                    "is not a kss checkpoint (torch cannot read it")
    torch.save({"state_dict": {}, "hyper_parameters": {"lr": 1}}, files / "other.ckpt")
    one_line_exit_2(run_script("eval.py", f"ckpt_path={files / 'other.ckpt'}", *common, f"hydra.run.dir={tmp_path / 'd'}"),
                    "is not a kss checkpoint (it holds no genotype")
    one_line_exit_2(run_script("eval.py", f"ckpt_path={run}", "dataset=fashion_mnist", "wandb.mode=disabled",
                               f"hydra.run.dir={tmp_path / 'e'}"), "pass the dataset it was trained on")
    assert not any((tmp_path / d).exists() for d in "abcde")  # refused: no run directory left behind
    one_line_exit_2(run_script("search.py", "budget.max_energy_uj=-1", *TINY, f"hydra.run.dir={tmp_path / 'f'}"),
                    "budget.max_energy_uj must be > 0")
    one_line_exit_2(run_script("train.py", "budget.max_sops=-3", *TINY, f"hydra.run.dir={tmp_path / 'g'}"),
                    "budget.max_sops must be > 0")


def test_bad_eval_input(trained, tmp_path):
    run, _ = trained
    with pytest.raises(KssError, match="no checkpoint given"):
        run_eval(cfg("eval"), tmp_path)
    with pytest.raises(KssError, match="unknown quantize='int4'"):
        run_eval(cfg("eval", f"ckpt_path={run}", "quantize=int4"), tmp_path)
    with pytest.raises(KssError, match="holds no checkpoint"):
        run_eval(cfg("eval", f"ckpt_path={tmp_path}"), tmp_path)
    assert not (tmp_path / EVAL).exists()
    assert (run / METRICS).exists()


@torch.no_grad()
def run_deployed(model: Deployed, images: torch.Tensor) -> torch.Tensor:
    """Mean class vote over the timesteps, [B, classes]: the kss network's logits."""
    functional.reset_net(model)
    votes = sum(model(images) for _ in range(model.timesteps)) / model.timesteps
    functional.reset_net(model)
    return votes
