"""kss against SNASNet's own code (its final commit), not a transcription of it.

Runs where KSS_SNASNET_DIR names a folder made by benchmarks/prepare_snasnet.py (SNASNet's
`model_snn.py` and `searchcells/` at 498040912c, with only the three edits a CPU and spikingjelly 2.x
need); skips elsewhere (CI has no copy: the repository has no licence file to ship it under).

With kss's weights copied into SNASNet's `SNASNet`, module by module, at the widths kss's own
`snasnet_cifar10` / `snasnet_cifar100` presets compose to:
- every spiking layer's spikes at every timestep, and the logits, equal SNASNet's forward;
- R over two repeats (state carried from the first to the second, as SNASNet's search does)
  equals what SNASNet's own `find_best_neuroncell` prints as its max score.
`find_best_neuroncell` is run as written, except: its hard-coded `search_batchsize = 256` is set to
the test's batch (a CPU test cannot afford 256 images at CIFAR-10 widths), its DataLoader hands out
the test's two batches in turn (instead of two random shuffles), and `connection_matrix_gen` /
`SNASNet` give the test's genotype and the network holding kss's weights.
"""

from __future__ import annotations

import inspect
import os
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from kss.config import model_fields
from kss.space.genotype import sample_genotype
from kss.space.network import ModelSpec, scoring_network
from kss.space.neurons import NeuronSpec
from kss.search.score import score_network
from kss.space.reference_snasnet import con_mat, load_from_kss, spike_flips

FOLDER = os.environ.get("KSS_SNASNET_DIR")
pytestmark = pytest.mark.skipif(
    not FOLDER, reason="KSS_SNASNET_DIR is unset (README: checking against SNASNet's own code)")

BATCH, TIMESTEPS = 8, 2
CLASSES = {"cifar10": 10, "cifar100": 100}


@pytest.fixture(scope="module")
def model_snn():
    folder = Path(FOLDER)
    if not (folder / "model_snn.py").is_file():
        pytest.fail(f"KSS_SNASNET_DIR={folder} has no model_snn.py; make it with benchmarks/prepare_snasnet.py")
    sys.path.insert(0, str(folder))
    try:
        import model_snn

        yield model_snn
    finally:
        sys.path.remove(str(folder))


def preset(compose, dataset: str) -> dict:
    """The model kss composes for `dataset=...` alone (SNASNet's network for that dataset)."""
    fields = model_fields(compose(f"dataset={dataset}", tiny=False))
    return fields | {"timesteps": TIMESTEPS}


def pair(model_snn, compose, dataset: str, cell_type: str, seed: int, widen: bool):
    genotype = sample_genotype(np.random.default_rng(seed), (1, 3), cell_type)
    spec = ModelSpec(in_channels=3, image_size=32, num_classes=CLASSES[dataset],
                     **preset(compose, dataset) | {"cell_type": cell_type})
    torch.manual_seed(seed)
    net = scoring_network(genotype, spec, NeuronSpec())
    if widen:  # the classifier's 0.01-std init keeps it silent on small batches: make it fire (dropout mask too)
        for linear in (net.head[4], net.head[6]):
            torch.nn.init.normal_(linear.weight, 0.0, 0.5)
    args = types.SimpleNamespace(dataset=dataset, celltype=cell_type, timestep=TIMESTEPS, second_avgpooling=spec.sap,
                                 threshold=1.0, tau=4.0 / 3.0, num_search=1)
    mat = con_mat(genotype, (1, 3)).float()
    ref = model_snn.SNASNet(args, mat)
    pairs = load_from_kss(ref, net)
    return net, ref, pairs, args, mat


class Batches:
    """Stands in for find_best_neuroncell's DataLoader: the i-th iter() yields the i-th batch."""

    def __init__(self, batches):
        self.batches, self.calls = batches, 0

    def __iter__(self):
        images = self.batches[self.calls]
        self.calls += 1
        return iter([(images, torch.zeros(len(images), dtype=torch.long))])


def snasnet_score(model_snn, args, ref, mat, batches, monkeypatch, capsys) -> float:
    source = inspect.getsource(model_snn.find_best_neuroncell)
    assert source.count("search_batchsize = 256") == 1
    source = source.replace("search_batchsize = 256", f"search_batchsize = {len(batches[0])}")
    namespace = dict(vars(model_snn))

    def network(_, matrix):
        assert torch.equal(matrix, mat), "SNASNet's pruning changed the test's cell"
        return ref

    namespace.update(SNASNet=network, connection_matrix_gen=lambda *a, **k: mat.clone())
    exec(compile(source, model_snn.__file__, "exec"), namespace)
    loader = Batches(batches)
    monkeypatch.setattr(torch.utils.data, "DataLoader", lambda *a, **k: loader)
    capsys.readouterr()
    namespace["find_best_neuroncell"](args, trainset=None)
    assert loader.calls == len(batches) == 2  # SNASNet's repeat = 2
    printed = capsys.readouterr().out
    return float(re.search(r"max score: (\S+)", printed).group(1))


CASES = [pytest.param(d, c, id=f"{d}-{c}") for d in ("cifar10", "cifar100") for c in ("forward", "backward")]


@pytest.mark.slow
@pytest.mark.parametrize("dataset, cell_type", CASES)
def test_r_over_two_repeats_equals_snasnets_own_search(model_snn, compose_cfg, dataset, cell_type, monkeypatch, capsys):
    net, ref, _, args, mat = pair(model_snn, compose_cfg, dataset, cell_type, seed=11, widen=False)
    gen = torch.Generator().manual_seed(3)
    batches = [torch.randn(BATCH, 3, 32, 32, generator=gen) for _ in range(2)]
    torch.manual_seed(9)
    theirs = snasnet_score(model_snn, args, ref, mat, batches, monkeypatch, capsys)
    torch.manual_seed(9)
    ours = score_network(net, batches)  # score.carry_state=true: the second repeat starts where the first ended
    assert np.isfinite(theirs)
    assert ours == theirs, f"kss R {ours!r} != SNASNet's {theirs!r}"


@pytest.mark.slow
@pytest.mark.parametrize("dataset, cell_type", CASES)
def test_spikes_and_logits_equal_snasnets_own_forward(model_snn, compose_cfg, dataset, cell_type):
    net, ref, pairs, *_ = pair(model_snn, compose_cfg, dataset, cell_type, seed=12, widen=True)
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in ref.parameters())
    images = torch.randn(BATCH, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    flips, total, classifier, kss_logits, ref_logits = spike_flips(net, ref, pairs, images)
    assert total > 0 and 0 < classifier.mean() < 1
    assert flips == 0, f"{flips} of {total} spikes differ"
    # identical spikes: the logits differ only in float32 summation order (SNASNet averages each timestep's
    # population vote as it goes, kss all timesteps at once, and BLAS blocks a batch of B and one of T x B
    # differently). A sum's rounding error scales with its terms, not its result, so the tolerance is absolute:
    # 16 float32 epsilons of the largest logit (~15 here; 4e-6 seen), which a relative one fails near zero
    scale = float(ref_logits.abs().max())
    torch.testing.assert_close(kss_logits, ref_logits, rtol=0, atol=16 * torch.finfo(torch.float32).eps * scale)
