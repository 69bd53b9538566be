import math

import numpy as np
import pytest
import torch
from spikingjelly.activation_based import monitor
from spikingjelly.activation_based.neuron import BaseNode

from kss.errors import KssError
from kss.space.genotype import sample_genotype
from kss.space.network import ModelSpec, build_network
from kss.space.neurons import NeuronSpec
from kss.search.score import hamming_kernel, log_abs_det, mean_kernel, naswot_kernel, score_network


def numpy_hamming(x: np.ndarray) -> np.ndarray:
    """SNASNet's final hook, one timestep: K = N - 0.5 * H / (E + 1e-3), E the expected number of
    disagreeing neurons (its first upload: the fraction, without the factor n)."""
    b, n = x.shape
    h = x @ (1 - x).T + (1 - x) @ x.T
    r = x.mean(1, keepdims=True)
    e = (r @ (1 - r).T + (1 - r) @ r.T) * n
    return n - 0.5 * h / (e + 1e-3)


def numpy_naswot(x: np.ndarray) -> np.ndarray:
    return x @ x.T + (1 - x) @ (1 - x).T


def fixed_spikes(seed=0, t=3, b=6, n=40, p=0.3) -> np.ndarray:
    return (np.random.default_rng(seed).random((t, b, n)) < p).astype(np.float64)


@pytest.mark.parametrize("ours, reference", [(hamming_kernel, numpy_hamming), (naswot_kernel, numpy_naswot)])
def test_kernel_equals_numpy_formula(ours, reference):
    x = fixed_spikes()
    expected = np.stack([reference(x[t]) for t in range(x.shape[0])])
    got = ours(torch.from_numpy(x).float())
    assert got.dtype == torch.float32 and got.shape == (3, 6, 6)  # float32 per timestep, as SNASNet's hook
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)
    off_diagonal = ~np.eye(6, dtype=bool)
    if ours is hamming_kernel:  # sparsity-aware: about N - 0.5 between inputs, N on the diagonal
        assert np.all(np.diag(got[0].numpy()) == 40)
        assert 39 < got[0].numpy()[off_diagonal].mean() < 40


def test_identical_patterns_are_singular():
    row = (np.random.default_rng(0).random(50) < 0.4).astype(np.float32)
    x = torch.from_numpy(np.tile(row, (1, 5, 1)))  # 5 identical inputs
    assert log_abs_det(hamming_kernel(x)[0]) == -math.inf
    assert log_abs_det(naswot_kernel(x)[0]) == -math.inf
    # distinct patterns give a finite score
    distinct = torch.from_numpy(fixed_spikes(t=1, b=5, n=50)).float()
    assert math.isfinite(log_abs_det(hamming_kernel(distinct)[0]))


def test_kernels_are_summed_timestep_by_timestep_in_call_order():
    layers = [torch.full((2, 3, 3), 1.0), torch.full((1, 3, 3), 4.0), torch.full((2, 3, 3), 16.0)]
    k = mean_kernel(layers)
    assert k.dtype == torch.float64
    assert torch.equal(k, torch.full((3, 3), (1 + 4 + 16 + 1 + 16) / 5, dtype=torch.float64))


def tiny_net(cell_type="forward", seed=0, kind="lif"):
    torch.manual_seed(seed)
    g = sample_genotype(np.random.default_rng(seed), [1, 3], cell_type)
    spec = ModelSpec(c1=4, c2=8, hidden=16, population=10, image_size=8, timesteps=3, cell_type=cell_type)
    return build_network(g, spec, NeuronSpec(kind=kind))


@pytest.mark.parametrize("cell_type", ["forward", "backward"])
def test_score_network_matches_numpy_on_recorded_spikes(cell_type):
    net = tiny_net(cell_type, seed=2)
    images = torch.randn(12, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)  # the same dropout masks in both passes
    score = score_network(net, [images], "hamming")

    # record the same forward pass independently and apply the numpy formula per (layer, timestep)
    torch.manual_seed(0)
    recorder = monitor.OutputMonitor(net, BaseNode, function_on_output=lambda s: s.detach().clone())
    with torch.no_grad():
        net.train()
        net(images)
    recorder.remove_hooks()
    kernels = [numpy_hamming(s[t].reshape(s.shape[1], -1).double().numpy()) for s in recorder.records for t in range(s.shape[0])]
    # float64 all through, where kss's kernels are float32 as SNASNet's: at K ~ N - 0.5 off the diagonal,
    # log|det K| rests on the small differences, so float32 rounding shows at ~1e-6 of R
    expected = np.linalg.slogdet(sum(kernels) / len(kernels))[1]
    # one record per neuron layer per call: multi-step layers give T rows, backward-cell ops 1 per step
    assert len(kernels) == len([m for m in net.modules() if isinstance(m, BaseNode)]) * 3
    assert score == pytest.approx(expected, rel=1e-5)


def test_score_is_repeatable_and_averages_batches():
    net = tiny_net()
    a = torch.randn(10, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    b = torch.randn(10, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    sa, sb = score_network(net, [a]), score_network(net, [b])
    assert score_network(net, [a]) == sa  # a scoring starts from rest: nothing left from the last one
    assert score_network(net, [a, b], carry_state=False) == pytest.approx((sa + sb) / 2)
    # SNASNet's repeats (the default): b starts from the state a left, so its R is not b's alone
    assert score_network(net, [a, b]) != pytest.approx((sa + sb) / 2)


def test_unknown_score_kind():
    with pytest.raises(KssError, match="unknown score kind"):
        score_network(tiny_net(), [torch.randn(4, 3, 8, 8)], "synflow")


@pytest.mark.parametrize("batch", [6, 24])  # 6: the float bmm; 24: the int8 product
@pytest.mark.parametrize("kernel", [hamming_kernel, naswot_kernel])
def test_bf16_spikes_give_the_float32_kernel_exactly(kernel, batch):
    """0/1 is exact in bf16, so a bf16 network's kernel must be the fp32 one; with N = 4096 a
    product or count kept in bf16 (8 bits of mantissa) would round counts above 256."""
    spikes = torch.from_numpy(fixed_spikes(b=batch, n=4096, p=0.5)).float()
    k32, k16 = kernel(spikes), kernel(spikes.bfloat16())
    assert k16.dtype == torch.float32 and torch.equal(k16, k32)


def test_bf16_scores_a_bf16_channels_last_copy_and_leaves_the_candidate_alone(monkeypatch):
    from kss.search import score
    from kss.search.score import prepared

    net = tiny_net(kind="plif")
    images = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    twin, (cast,) = prepared(net, [images], "bf16")
    conv = twin.stem[0].weight
    assert conv.dtype == torch.bfloat16 and conv.is_contiguous(memory_format=torch.channels_last)
    assert cast.dtype == torch.bfloat16 and twin.memory_format == torch.channels_last
    assert all(p.dtype == torch.float32 for m in twin.modules() if isinstance(m, BaseNode) for p in m.parameters())
    assert net.stem[0].weight.dtype == torch.float32 and net.memory_format == torch.channels_last  # untouched
    seen = []  # what reaches the kernel: bf16 spikes, from the bf16 copy
    monkeypatch.setitem(score.KERNELS, "probe", lambda x: (seen.append(x.dtype), hamming_kernel(x))[1])
    fp32 = score_network(net, [images])
    bf16 = score_network(net, [images], "probe", precision="bf16")
    assert set(seen) == {torch.bfloat16}
    assert math.isfinite(bf16) and bf16 == pytest.approx(fp32, rel=0.05)
    assert score_network(net, [images]) == fp32  # the candidate still scores as before


def test_cuda_switches_hold_inside_the_scoring_context_only():
    """TF32 and cuDNN's autotuner are flags; set for the score on a CUDA device, restored after."""
    from kss.search.score import arithmetic

    flags = lambda: (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,  # noqa: E731
                     torch.backends.cudnn.benchmark)
    before = flags()
    with arithmetic("tf32", torch.device("cuda"), cudnn_benchmark=True):
        assert flags() == (True, True, True)
    with arithmetic("fp32", torch.device("cuda")):
        assert flags() == (False, False, False)  # the reference's arithmetic: cuDNN's TF32 default off too
    with arithmetic("fp32", torch.device("cpu"), cudnn_benchmark=True):
        assert flags() == before  # nothing to switch on a CPU
    assert flags() == before


def test_layout_is_a_copy_of_the_candidate_in_that_layout():
    from kss.space.network import scoring_network
    from kss.search.score import prepared

    torch.manual_seed(0)
    g = sample_genotype(np.random.default_rng(4), [1, 3], "forward")
    net = scoring_network(g, ModelSpec(c1=4, c2=8, hidden=16, population=10, image_size=8, timesteps=3), NeuronSpec())
    images = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert prepared(net, [images], "fp32")[0] is net and prepared(net, [images], "fp32", "nchw")[0] is net
    twin, _ = prepared(net, [images], "fp32", "channels_last")
    assert twin.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert net.stem[0].weight.is_contiguous() and net.memory_format == torch.contiguous_format
    assert prepared(tiny_net(), [images], "fp32", "nchw")[0].stem[0].weight.is_contiguous()  # a channels-last net
    scores = {}
    for layout in ("auto", "channels_last"):
        torch.manual_seed(0)
        scores[layout] = score_network(net, [images], layout=layout)
    assert math.isfinite(scores["channels_last"]) and scores["channels_last"] == pytest.approx(scores["auto"], rel=1e-3)
    with pytest.raises(KssError, match="unknown score.layout"):
        score_network(net, [images], layout="nhwc")
