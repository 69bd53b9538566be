import numpy as np
import pytest
import torch
from spikingjelly.activation_based import functional

from kss.names import KERNEL_SETS
from kss.errors import KssError
from kss.space.genotype import Genotype, load_genotype, sample_genotype
from kss.space.network import ModelSpec, build_network
from kss.space.neurons import NeuronSpec
from kss.space.params import count_params, memory_bytes

SPEC = dict(c1=4, c2=6, hidden=12, population=20, image_size=16, timesteps=2)


def numel(net) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("kernel_set", sorted(KERNEL_SETS))
@pytest.mark.parametrize("cell_type", ["forward", "backward"])
@pytest.mark.parametrize("neuron", ["lif", "plif"])
def test_analytic_params_equal_numel(kernel_set, cell_type, neuron):
    spec = ModelSpec(cell_type=cell_type, **SPEC)
    rng = np.random.default_rng(0)
    for _ in range(8):
        g = sample_genotype(rng, KERNEL_SETS[kernel_set], cell_type)
        assert count_params(g, spec, NeuronSpec(kind=neuron)) == numel(build_network(g, spec, NeuronSpec(kind=neuron)))


def test_params_of_snasnet_cifar10_reference_widths():
    g = load_genotype("snasnet_cifar10")
    spec = ModelSpec(cell_type="backward")  # SNASNet's CIFAR-10 network: C1=128, C2=256, P=100
    assert count_params(g, spec, NeuronSpec()) == numel(build_network(g, spec, NeuronSpec()))
    assert memory_bytes(10) == {"memory_fp32_bytes": 40, "memory_int8_bytes": 10}


def test_larger_kernels_cost_more_params():
    ops = [["zero"] * 4 for _ in range(4)]
    ops[0][3] = "conv3"
    small = Genotype("forward", tuple(map(tuple, ops)))
    ops[0][3] = "conv7"
    large = Genotype("forward", tuple(map(tuple, ops)))
    spec, n = ModelSpec(**SPEC), NeuronSpec()
    # one conv edge per cell: (49 - 9) * (C1^2 + C2^2) more weights
    assert count_params(large, spec, n) - count_params(small, spec, n) == 40 * (4 * 4 + 6 * 6)


@pytest.mark.parametrize("cell_type", ["forward", "backward"])
def test_forward_shape_and_no_state_leak(cell_type):
    torch.manual_seed(0)
    g = sample_genotype(np.random.default_rng(5), [3, 5], cell_type)
    net = build_network(g, ModelSpec(cell_type=cell_type, **SPEC), NeuronSpec()).eval()
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        first = net(x)
        net(torch.randn(3, 3, 16, 16) * 5)  # a different batch in between
        again = net(x)
    assert first.shape == (3, 10)
    torch.testing.assert_close(first, again)


def test_backward_cell_feeds_back_one_step_later():
    # only the output node feeds node 1 back; node 1 -> output; so t=0 must equal a forward cell
    ops = [["zero"] * 4 for _ in range(4)]
    ops[0][3], ops[1][3], ops[3][1] = "skip", "skip", "skip"
    g = Genotype("backward", tuple(map(tuple, ops)))
    net = build_network(g, ModelSpec(cell_type="backward", **SPEC), NeuronSpec())
    x = torch.randn(2, 2, 4, 4)  # [T, B, C, H, W]
    y = net.cell1(x)
    torch.testing.assert_close(y[0], x[0])  # node 1 is zero at t=0
    torch.testing.assert_close(y[1], x[1] + y[0])  # node 1 at t=1 is the output at t=0


@pytest.mark.parametrize("kind", ["lif", "plif"])
def test_no_grad_neuron_path_is_bit_identical_to_spikingjelly(kind):
    neuron = NeuronSpec(kind=kind).make("m")
    x = torch.randn(4, 8, 16, 6, 6) * 2
    with torch.enable_grad():
        reference = neuron(x)  # spikingjelly's own kernel
    v_reference = neuron.v.clone()
    functional.reset_net(neuron)
    with torch.no_grad():
        fast = neuron(x)
    assert torch.equal(reference, fast)
    assert torch.equal(v_reference, neuron.v)


@pytest.mark.parametrize(
    "kernels, fields, message",
    [
        ([], {}, "empty"),
        ([4], {}, "odd"),
        ([-1], {}, "odd"),
        ([0], {}, "odd"),
        ([9], {"image_size": 16}, "larger than cell 2's 8x8"),
        ([3], {"population": 15}, "multiple of the 10 classes"),
        ([3], {"sap": 16}, "pools cell 2"),
        ([3], {"timesteps": 0}, "timesteps must be >= 1"),
    ],
)
def test_bad_model_settings(kernels, fields, message):
    with pytest.raises(KssError, match=message):
        ModelSpec(**{**SPEC, **fields}).validate(kernels)


def test_bad_neuron_settings():
    with pytest.raises(KssError, match="unknown neuron kind"):
        NeuronSpec(kind="izhikevich")
    with pytest.raises(KssError, match="tau must be > 1"):
        NeuronSpec(tau=0.5)


@pytest.mark.parametrize("owns_input", [False, True])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_per_step_batch_norm_writes_the_same_bits_in_place(layout, owns_input, monkeypatch):
    """The no-grad path (each timestep's kernel writing its slice of one output, or of the input
    itself where the layer owns it) against the concatenating path, in both layouts a network
    runs in; running statistics too."""
    from kss.space.network import SeqBatchNorm2d

    x = torch.randn(3, 4, 6, 5, 5, generator=torch.Generator().manual_seed(0))
    x = x.flatten(0, 1).contiguous(memory_format=layout).unflatten(0, (3, 4))
    fast, plain = SeqBatchNorm2d(6, owns_input=owns_input), SeqBatchNorm2d(6)
    with monkeypatch.context() as patch:
        patch.setattr(SeqBatchNorm2d, "native_steps", False)
        want = plain(x).detach()  # the T-call (cat) path
    given = x.clone()
    with torch.no_grad():
        out = fast(given)
    assert torch.equal(out, want) and out[0].is_contiguous(memory_format=layout)
    assert (out.data_ptr() == given.data_ptr()) == owns_input  # the fast path ran, in place only if owned
    assert torch.equal(fast.running_mean, plain.running_mean) and torch.equal(fast.running_var, plain.running_var)
    assert int(fast.num_batches_tracked) == 3


def test_per_step_batch_norm_never_writes_into_a_time_constant_view():
    """An expanded input (one map for every timestep) must not be normalised step by step in place."""
    from kss.space.network import SeqBatchNorm2d

    once = torch.randn(1, 4, 6, 5, 5, generator=torch.Generator().manual_seed(1))
    x = once.expand(3, -1, -1, -1, -1)
    with torch.no_grad():
        out = SeqBatchNorm2d(6, owns_input=True)(x)
    assert torch.equal(x[0], once[0])  # untouched
    assert torch.equal(out[0], out[2]) and out.stride(0) == out[0].numel()


def _t_call_batch_norm(x_seq, channels, monkeypatch, native, **settings):
    """One training step through a SeqBatchNorm2d (native_steps on or off): output, gradients, the
    layer; then a second step's output and eval-mode outputs from the running statistics."""
    from kss.space.network import SeqBatchNorm2d

    with monkeypatch.context() as patch:
        patch.setattr(SeqBatchNorm2d, "native_steps", native)
        torch.manual_seed(0)
        bn = SeqBatchNorm2d(channels, track_running_stats=settings.get("track_running_stats", True))
        if "momentum" in settings:
            bn.momentum = settings["momentum"]
        with torch.no_grad():  # not the init's ones and zeros: the affine parameters take part
            bn.weight.uniform_(0.5, 1.5), bn.bias.uniform_(-0.5, 0.5)
        x = x_seq.clone().requires_grad_()
        out = bn(x)
        grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
        grad = grad.flatten(0, 1).contiguous(memory_format=_layout(x_seq)).unflatten(0, out.shape[:2])
        (out * grad).sum().backward()
        second = bn(x_seq * 0.5 + 1).detach()  # running statistics updated twice by now
        bn.eval()
        with torch.no_grad():
            evaluated = bn(x_seq)
    return out.detach(), x.grad, bn, second, evaluated


def _layout(x_seq):
    return torch.channels_last if x_seq[0].is_contiguous(memory_format=torch.channels_last) and not \
        x_seq[0].is_contiguous() else torch.contiguous_format


@pytest.mark.parametrize("settings", [{}, {"momentum": None}, {"track_running_stats": False}],
                         ids=["momentum", "cumulative", "untracked"])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=["nchw", "channels_last"])
def test_per_step_batch_norm_with_gradients_is_the_t_call_path_to_the_bit(layout, settings, monkeypatch):
    """Training-mode per-step BN with autograd (the native kernels writing slices of one output and
    one input gradient) against T BatchNorm2d calls: outputs, input/weight/bias gradients, running
    statistics, the next step and eval-mode outputs are equal to the bit (tolerance 0), and the
    output keeps the input's layout."""
    x = torch.randn(4, 8, 6, 7, 7, generator=torch.Generator().manual_seed(0)) * 3 + 1
    x = x.flatten(0, 1).contiguous(memory_format=layout).unflatten(0, (4, 8))
    fast = _t_call_batch_norm(x, 6, monkeypatch, True, **settings)
    slow = _t_call_batch_norm(x, 6, monkeypatch, False, **settings)
    for a, b in zip(fast[:2] + fast[3:], slow[:2] + slow[3:]):
        assert torch.equal(a, b)
    assert fast[0].stride() == slow[0].stride() and fast[1].stride() == slow[1].stride()
    bn_fast, bn_slow = fast[2], slow[2]
    assert torch.equal(bn_fast.weight.grad, bn_slow.weight.grad) and torch.equal(bn_fast.bias.grad, bn_slow.bias.grad)
    if settings.get("track_running_stats", True):
        assert int(bn_fast.num_batches_tracked) == int(bn_slow.num_batches_tracked) == 8  # T updates per step
        assert torch.equal(bn_fast.running_mean, bn_slow.running_mean)
        assert torch.equal(bn_fast.running_var, bn_slow.running_var)
        assert not torch.equal(bn_fast.running_mean, torch.zeros(6))  # they did move
    else:
        assert bn_fast.running_mean is None and bn_slow.running_mean is None


@pytest.mark.parametrize("channels_last", [True, False], ids=["channels_last", "nchw"])
@pytest.mark.parametrize("cell_type", ["forward", "backward"])
def test_a_training_step_with_native_per_step_batch_norm_is_the_t_call_step_to_the_bit(cell_type, channels_last,
                                                                                       monkeypatch):
    """A whole network's loss, every parameter's gradient and every running statistic after one
    forward/backward: the same bits with the native per-step path as with T BatchNorm2d calls."""
    import kss.space.network as N

    genotype = load_genotype("snasnet_cifar10") if cell_type == "backward" else Genotype.from_json(
        {"cell_type": "forward", "edges": {"0->1": "conv3", "0->2": "conv5", "1->2": "avgpool3", "0->3": "conv5",
                                           "1->3": "conv5", "2->3": "conv3"}})
    applied = []
    real = N._PerStepBatchNorm.apply
    monkeypatch.setattr(N._PerStepBatchNorm, "apply", lambda *a: applied.append(1) or real(*a))

    def step(native):
        monkeypatch.setattr(N.SeqBatchNorm2d, "native_steps", native)
        torch.manual_seed(0)
        spec = ModelSpec(**SPEC | dict(timesteps=3), in_channels=1, cell_type=cell_type)
        net = build_network(genotype, spec, NeuronSpec(), channels_last=channels_last).train()
        images = torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(1))
        loss = torch.nn.functional.cross_entropy(net(images), torch.arange(8) % 10)
        loss.backward()
        return loss, net

    (loss_a, a), (loss_b, b) = step(True), step(False)
    assert applied  # the native path ran
    assert torch.equal(loss_a, loss_b)
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p.grad, q.grad), name
    for (name, p), q in zip(a.named_buffers(), b.buffers()):
        assert torch.equal(p, q), name
