"""kss's multi-step network against the reference transcription (kss/space/reference_snasnet.py).

With identical weights and input, kss's fast path (multi-step, channels-last, no-grad LIF,
per-step BN, one Gram product per layer) must give the reference's spikes in every layer
and timestep, and the same R. This is the guard for every speed-up: run it against each
fast path. No tolerance is needed in NCHW, the layout the search scores in
(kss.space.network.scoring_network): convolutions and pooling give the same bits for a [T*B] call as
for per-timestep calls. Channels-last (the training layout) does not: PyTorch's CPU kernels
reduce BatchNorm statistics and some convolutions in another order, flipping ~1e-5 of the spikes
(benchmarks/search_speed.py measured it), which is why the search does not use it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kss.space import fused
from kss.space.genotype import Genotype, load_genotype, sample_genotype
from kss.space.network import ModelSpec, scoring_network
from kss.space.neurons import NeuronSpec
from kss.search.score import score_network
from kss.space.reference_snasnet import ReferenceSNASNet, load_from_kss, reference_score, spike_flips

SPEC = dict(in_channels=1, image_size=16, num_classes=10, c1=6, c2=8, population=20, hidden=24, sap=2,
            timesteps=3, dropout=0.5)


def backward_with_every_feedback_edge() -> Genotype:
    """A backward cell in which every feedback edge that may exist carries a conv (3->0 may not)."""
    edges = {"0->1": "conv3", "0->3": "conv1", "1->3": "avgpool3", "0->2": "skip",
             "2->1": "conv3", "3->2": "conv1", "2->0": "conv3"}
    all_edges = {f"{i}->{j}": "zero" for i in range(4) for j in range(4) if i != j}
    return Genotype.from_json({"cell_type": "backward", "edges": all_edges | edges})


def genotypes():
    cases = []
    for kernels in [(1, 3), (3, 5), (5, 7)]:
        for cell_type in ("forward", "backward"):
            for seed in range(2):
                g = sample_genotype(np.random.default_rng(100 + seed), kernels, cell_type)
                cases.append(pytest.param(g, kernels, id=f"{cell_type}-{kernels[0]}_{kernels[1]}-{seed}"))
    cases.append(pytest.param(load_genotype("snasnet_cifar10"), (1, 3), id="published-cifar10"))
    cases.append(pytest.param(load_genotype("snasnet_cifar100"), (1, 3), id="published-cifar100"))
    cases.append(pytest.param(backward_with_every_feedback_edge(), (1, 3), id="all-feedback"))
    return cases


def build_pair(genotype, kernels, seed=0, **overrides):
    spec = ModelSpec(**(SPEC | overrides), cell_type=genotype.cell_type, batch_norm="per_step")
    torch.manual_seed(seed)
    net = scoring_network(genotype, spec, NeuronSpec())
    # At init the classifier's 0.01-std weights keep its neurons silent on tiny inputs; wider
    # weights make them fire, so the dropout mask and the last layers are compared too.
    for linear in (net.head[4], net.head[6]):
        torch.nn.init.normal_(linear.weight, 0.0, 0.5)
    torch.nn.init.normal_(net.head[6].bias, 0.0, 0.5)
    ref = ReferenceSNASNet(genotype, kernels, **(SPEC | overrides))
    pairs = load_from_kss(ref, net)
    return net, ref, pairs


def images(seed, batch=32, size=16):
    return torch.randn(batch, SPEC["in_channels"], size, size, generator=torch.Generator().manual_seed(seed))


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (benchmarks/gpu.sh runs this there)")
PATHS = [pytest.param("cpu", False, id="cpu-eager"), pytest.param("cpu", True, id="cpu-fused"),
         pytest.param("cuda", False, id="cuda", marks=CUDA)]


@pytest.mark.parametrize("device, fused_blocks", PATHS)
@pytest.mark.parametrize("genotype, kernels", genotypes())
def test_spikes_and_score_equal_the_reference(genotype, kernels, device, fused_blocks):
    """Every fast path of the scoring forward (kss.space.fused's compiled blocks; CUDA) gives the reference's bits."""
    net, ref, pairs = build_pair(genotype, kernels)
    net, ref = net.to(device), ref.to(device)
    batches = [images(1).to(device), images(2).to(device)]

    with fused.enabled(fused_blocks):
        flips, total, classifier, kss_logits, ref_logits = spike_flips(net, ref, pairs, batches[0])
    assert total > 0 and len(pairs) >= 3
    assert 0 < classifier.mean() < 1  # the last spiking layer is neither silent nor saturated
    assert flips == 0, f"{flips} of {total} spikes differ"
    torch.testing.assert_close(kss_logits, ref_logits, rtol=1e-5, atol=1e-6)

    torch.manual_seed(9)
    ref_r = reference_score(ref, batches)
    torch.manual_seed(9)
    kss_r = score_network(net, batches, "hamming", fused_blocks=fused_blocks)
    assert np.isfinite(ref_r)
    assert kss_r == ref_r  # bit for bit: same float32 kernels, same float64 summation order, same slogdet


def test_repeats_carry_neuron_state_as_the_reference_does_and_independent_repeats_do_not():
    """score.carry_state=true (the default) is SNASNet's final code: the second repeat starts from the
    first's membranes and dropout mask. false starts it from rest: the first repeat's R is the same,
    the second's is not."""
    for cell_type in ("forward", "backward"):
        genotype = sample_genotype(np.random.default_rng(7), (1, 3), cell_type)
        net, ref, _ = build_pair(genotype, (1, 3))
        batches = [images(1), images(2)]
        torch.manual_seed(9)
        carried = score_network(net, batches)
        torch.manual_seed(9)
        assert carried == reference_score(ref, batches)
        torch.manual_seed(9)
        first = reference_score(ref, batches[:1])
        torch.manual_seed(9)
        independent = score_network(net, batches, carry_state=False)
        torch.manual_seed(9)
        assert score_network(net, batches[:1], carry_state=False) == first
        assert independent != carried  # the second repeat's R moved


def test_hamming_kernel_is_the_final_codes_scale():
    """K ~ N - 0.5 off the diagonal (the expected distance counted in neurons), not the first upload's ~N/2."""
    from kss.search.score import hamming_kernel

    spikes = (torch.rand(1, 16, 4096, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    k = hamming_kernel(spikes)[0]
    off = k[~torch.eye(16, dtype=torch.bool)]
    assert torch.all(k.diagonal() == 4096)
    assert torch.allclose(off, torch.full_like(off, 4096 - 0.5), atol=0.05)


def test_training_mode_batch_norm_running_statistics_match_the_reference():
    """per_step updates the running statistics once per timestep, as T single-step calls do."""
    genotype = load_genotype("snasnet_cifar100")
    net, ref, _ = build_pair(genotype, (1, 3))
    with torch.no_grad():
        torch.manual_seed(3)
        ref(images(4))
        torch.manual_seed(3)
        net(images(4))
    kss_bn = net.cell1.ops["0->1"][1][1]
    ref_bn = ref.cell1.cell_architecture[0][2]
    assert int(kss_bn.num_batches_tracked) == int(ref_bn.num_batches_tracked) == SPEC["timesteps"]
    torch.testing.assert_close(kss_bn.running_mean, ref_bn.running_mean, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(kss_bn.running_var, ref_bn.running_var, rtol=1e-6, atol=1e-7)
    # in eval mode both use the running statistics: the same predictions
    net.eval(), ref.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(images(6)), ref(images(6)), rtol=1e-5, atol=1e-6)


def test_joint_batch_norm_differs_from_the_reference():
    """The guard can fail: joint statistics over T x B change the spikes (so R) of a forward cell."""
    genotype = sample_genotype(np.random.default_rng(3), (1, 3), "forward")
    net, ref, _ = build_pair(genotype, (1, 3))
    joint = scoring_network(genotype, ModelSpec(**SPEC, batch_norm="joint"), NeuronSpec())
    joint.load_state_dict(net.state_dict())
    torch.manual_seed(9)
    r_joint = score_network(joint, [images(1)])
    torch.manual_seed(9)
    assert r_joint != reference_score(ref, [images(1)])


def test_dropout_mask_is_shared_across_timesteps_and_renewed_per_forward():
    genotype = sample_genotype(np.random.default_rng(0), (1, 3), "forward")
    net = scoring_network(genotype, ModelSpec(**SPEC), NeuronSpec())
    dropout = net.head[3]
    seen = []
    handle = dropout.register_forward_hook(lambda m, i, o: seen.append((i[0].clone(), o.clone(), m.mask.clone())))
    net.train()
    with torch.no_grad():
        net(images(1))
        net(images(1))
    handle.remove()
    for x_seq, y_seq, mask in seen:
        assert mask.shape == x_seq.shape[1:]  # one [B, F] mask for all T timesteps
        assert set(mask.unique().tolist()) == {0.0, 2.0}
        assert torch.equal(y_seq, x_seq * mask)
    assert not torch.equal(seen[0][2], seen[1][2]), "dropout mask not renewed between forwards"


@torch.no_grad()
def test_fused_blocks_are_bitwise_the_eager_ops():
    """Membrane potentials too, not just spikes: a rewrite such as x * (1 / tau) for x / tau fails here."""
    from kss.space.neurons import _lif_no_grad

    x = torch.randn(3, 64, 8, 32, 32, generator=torch.Generator().manual_seed(0)) * 2
    for kwargs in (dict(tau=4.0 / 3.0), dict(rate=torch.tensor(0.75).sigmoid())):
        eager_spikes, eager_v = _lif_no_grad(x, 0.0, 1.0, 0.0, **kwargs)
        fused_spikes, fused_v = fused.lif(x, 0.0, 1.0, 0.0, **kwargs)
        assert torch.equal(eager_spikes, fused_spikes) and torch.equal(eager_v, fused_v)
        # a bf16 network's currents: the membrane stays float32, so the spikes are those of the same
        # values in float32 (a bf16 membrane would round v and flip spikes)
        low = x.bfloat16()
        for lif in (_lif_no_grad, fused.lif):
            spikes, v = lif(low, 0.0, 1.0, 0.0, **kwargs)
            want_spikes, want_v = lif(low.float(), 0.0, 1.0, 0.0, **kwargs)
            assert spikes.dtype == torch.bfloat16 and v.dtype == torch.float32
            assert torch.equal(spikes.float(), want_spikes) and torch.equal(v, want_v)
    for kernel, stride, padding in ((3, 1, 1), (2, 2, 0), (4, 4, 0)):
        pooled = torch.nn.functional.avg_pool2d(x[0], kernel, stride=stride, padding=padding)
        assert torch.equal(fused.avg_pool(x[0], kernel, stride, padding), pooled)
