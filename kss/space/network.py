"""The SNASNet macro-architecture built from a genotype.

Tensors are time-major, [T, B, C, H, W] (spikingjelly's multi-step mode), so
every layer processes all timesteps in one call. A backward cell is the one
exception: its feedback edges need node values from the previous timestep, so
it steps through time itself, calling its ops on one-timestep slices.

With `batch_norm="per_step"` (the default) every BatchNorm normalises each timestep
with that timestep's statistics, exactly as SNASNet's single-step loop does;
kss/space/reference_snasnet.py is an independent transcription of the reference that
tests/test_equivalence.py holds this network to, spike for spike.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional, layer
from torch import nn

from kss.space import fused
from kss.errors import KssError
from kss.space.genotype import NODES, Genotype
from kss.space.neurons import NeuronSpec
from kss.space.ops import build_op


@dataclass
class ModelSpec:
    """Everything besides the genotype that fixes the network's shape."""

    in_channels: int = 3
    image_size: int = 32
    num_classes: int = 10
    c1: int = 128  # cell 1 width (SNASNet: 256 for CIFAR-10, 128 for CIFAR-100 and TinyImageNet)
    c2: int = 256  # cell 2 width (512, 256)
    population: int = 100  # output neurons, averaged in groups of population / num_classes
    hidden: int = 1024  # classifier width
    sap: int = 2  # spatial average pool after cell 2
    timesteps: int = 5
    dropout: float = 0.5
    cell_type: str = "forward"
    batch_norm: str = "per_step"  # per_step: SNASNet's statistics per timestep; joint: over T x B (tdBN-style)
    stem_stride: int = 1  # SNASNet: 2 for TinyImageNet's 64 px images, so its cells run at CIFAR's 32 and 16 px

    @property
    def cell1_size(self) -> int:
        return (self.image_size - 1) // self.stem_stride + 1  # a 3x3 conv with padding 1

    @property
    def cell2_size(self) -> int:
        return self.cell1_size // 2

    @property
    def features(self) -> int:
        side = self.cell2_size // self.sap
        return self.c2 * side * side

    def validate(self, kernels) -> None:
        kernels = list(kernels)
        for name in ("in_channels", "image_size", "num_classes", "c1", "c2", "population", "hidden", "sap", "timesteps",
                     "stem_stride"):
            if getattr(self, name) < 1:
                raise KssError(f"model.{name} must be >= 1 (got {getattr(self, name)})")
        check_kernels(kernels)
        if max(kernels) > self.cell2_size:
            raise KssError(
                f"kernel {max(kernels)}x{max(kernels)} is larger than cell 2's {self.cell2_size}x{self.cell2_size} "
                f"feature map ({self.image_size}px input); use smaller kernels or larger images"
            )
        if self.features == 0:
            raise KssError(f"model.sap={self.sap} pools cell 2's {self.cell2_size}px map to nothing; lower model.sap")
        if self.population % self.num_classes:
            raise KssError(
                f"model.population={self.population} must be a multiple of the {self.num_classes} classes"
            )
        if not 0 <= self.dropout < 1:
            raise KssError(f"model.dropout must be in [0, 1) (got {self.dropout})")
        if self.batch_norm not in BATCH_NORMS:
            raise KssError(f"unknown model.batch_norm {self.batch_norm!r}; use one of {', '.join(BATCH_NORMS)}")


def check_kernels(kernels: list) -> None:
    if not kernels:
        raise KssError("the kernel set is empty; give at least one kernel size, e.g. kernel_set.kernels=[3,5]")
    bad = [k for k in kernels if not isinstance(k, int) or isinstance(k, bool) or k < 1 or k % 2 == 0]
    if bad:
        raise KssError(f"kernel sizes must be positive odd integers (got {bad}); e.g. kernel_set.kernels=[3,5]")
    if len(set(kernels)) != len(kernels):
        raise KssError(f"kernel set {kernels} lists a size twice")


BATCH_NORMS = ("per_step", "joint")


class SeqBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d over a [T, B, C, H, W] sequence.

    per_step: in training, each timestep is normalised with its own batch statistics and the
    running statistics are updated once per timestep, as T single-step calls would do (SNASNet).
    joint: statistics over all T x B samples at once. In eval both use the running statistics.

    On CPU the per-step kernels write their slices of one output (and, backwards, of one input
    gradient), with no cat or stack copy: the bits of T BatchNorm2d calls, gradients included
    (tests/space/test_network.py). Elsewhere (CUDA, torch.compile, a time-constant view) it makes the T calls.
    """

    native_steps = True  # False: always the T BatchNorm2d calls (the reference the tests and benchmarks compare to)

    def __init__(self, channels: int, per_step: bool = True, owns_input: bool = False, track_running_stats: bool = True):
        super().__init__(channels, track_running_stats=track_running_stats)
        self.per_step = per_step
        # owns_input: nothing else reads the input (a convolution's fresh output), so the no-grad
        # path may normalise it in place, the same bits without a second [T, B, C, H, W] tensor
        self.owns_input = owns_input

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if self.per_step and self.training and x_seq.shape[0] > 1:
            native = self.native_steps and _dense_steps(x_seq) and x_seq.dtype == self.weight.dtype
            if native and not torch.is_grad_enabled():
                return self._per_step_into(x_seq)
            if native and x_seq.device.type == "cpu" and not torch.compiler.is_compiling():
                track = self.track_running_stats
                return _PerStepBatchNorm.apply(x_seq, self.weight, self.bias, self.running_mean if track else None,
                                               self.running_var if track else None, self._momenta(len(x_seq)), self.eps)
            # cat keeps channels-last, where stack would not
            return torch.cat([super(SeqBatchNorm2d, self).forward(x) for x in x_seq]).unflatten(0, x_seq.shape[:2])
        return super().forward(x_seq.flatten(0, 1)).unflatten(0, x_seq.shape[:2])

    def _momenta(self, steps: int) -> list[float]:
        """Each timestep's momentum, counted as BatchNorm2d.forward counts before each of T calls."""
        if not self.track_running_stats:  # batch statistics only, no update
            return [0.0] * steps
        momenta = []
        for _ in range(steps):
            self.num_batches_tracked.add_(1)
            momenta.append(self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked))
        return momenta

    def _per_step_into(self, x_seq: torch.Tensor) -> torch.Tensor:
        """The same per-step kernel calls, each writing its slice of one output (no cat copy):
        the input itself where this layer owns it (statistics are reduced before anything is written)."""
        out = x_seq if self.owns_input else torch.empty_like(x_seq)
        mean, invstd = x_seq.new_empty(0), x_seq.new_empty(0)  # the kernel's saved statistics (distinct buffers)
        track = self.track_running_stats  # as BatchNorm2d.forward: without it, batch statistics and no update
        for x, y, momentum in zip(x_seq, out, self._momenta(len(x_seq))):
            torch.ops.aten.native_batch_norm.out(
                x, self.weight, self.bias, self.running_mean if track else None, self.running_var if track else None,
                True, momentum, self.eps, out=y, save_mean=mean, save_invstd=invstd)
        return out

    def extra_repr(self) -> str:
        return super().extra_repr() + f", per_step={self.per_step}, owns_input={self.owns_input}"


class _PerStepBatchNorm(torch.autograd.Function):
    """Per-timestep batch norm of a dense [T, B, C, H, W] sequence with gradients: T native kernel
    calls writing slices of one output, T backward kernels writing slices of one input gradient.
    The weight and bias gradients are summed over t in the order autograd accumulates T calls'
    (last timestep first), so every result is the T-call path's to the bit."""

    @staticmethod
    def forward(ctx, x_seq, weight, bias, running_mean, running_var, momenta, eps):
        steps, channels = x_seq.shape[0], x_seq.shape[2]
        out = torch.empty_like(x_seq)
        mean, invstd = x_seq.new_empty(steps, channels), x_seq.new_empty(steps, channels)
        for t, momentum in enumerate(momenta):
            torch.ops.aten.native_batch_norm.out(x_seq[t], weight, bias, running_mean, running_var, True, momentum,
                                                 eps, out=out[t], save_mean=mean[t], save_invstd=invstd[t])
        ctx.save_for_backward(x_seq, weight, mean, invstd)
        ctx.eps = eps
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x_seq, weight, mean, invstd = ctx.saved_tensors
        steps, channels = x_seq.shape[0], x_seq.shape[2]
        grad = grad.flatten(0, 1).unflatten(0, x_seq.shape[:2])  # as the T-call path's unflatten hands it back
        grad_in = torch.empty_like(x_seq)
        grad_w, grad_b = x_seq.new_empty(steps, channels), x_seq.new_empty(steps, channels)
        for t in range(steps):
            torch.ops.aten.native_batch_norm_backward.out(
                grad[t], x_seq[t], weight, None, None, mean[t], invstd[t], True, ctx.eps, [True, True, True],
                out0=grad_in[t], out1=grad_w[t], out2=grad_b[t])
        sum_w, sum_b = grad_w[-1], grad_b[-1]
        for t in range(steps - 2, -1, -1):
            sum_w, sum_b = sum_w + grad_w[t], sum_b + grad_b[t]
        return grad_in, sum_w, sum_b, None, None, None, None


def _dense_steps(x_seq: torch.Tensor) -> bool:
    """Timesteps stored one after another (not a time-constant view), each a dense NCHW or
    channels-last map: what empty_like reproduces, and what may be overwritten step by step."""
    step = x_seq[0]
    dense = step.is_contiguous() or step.is_contiguous(memory_format=torch.channels_last)
    return dense and x_seq.stride(0) == step.numel()


def conv_bn(c_in: int, c_out: int, kernel: int, per_step: bool) -> nn.Module:
    return nn.Sequential(
        layer.SeqToANNContainer(nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False)),
        SeqBatchNorm2d(c_out, per_step, owns_input=True),
    )


def make_op(op: str, channels: int, neuron: NeuronSpec, per_step: bool) -> nn.Module:
    """One edge, as the op registry (kss.space.ops) builds it: skip, 3x3 average pool, LIF -> Conv(kxk) -> BN, ..."""
    return build_op(op, channels, neuron, per_step)


class SeqAvgPool(nn.Module):
    """Average pool (zero padding counted) over [T, B, C, H, W]; flatten=True: then [T, B, C*H'*W'].

    A time-constant input (the stem's output, expanded over T) is pooled once, not T times.
    """

    def __init__(self, kernel: int, stride: int | None = None, padding: int = 0, flatten: bool = False):
        super().__init__()
        self.kernel, self.stride, self.padding, self.flatten = kernel, stride or kernel, padding, flatten

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if _time_constant(x_seq):
            once = self(x_seq[:1])
            return once.expand(x_seq.shape[0], *once.shape[1:])
        x = x_seq.flatten(0, 1)
        pool = fused.avg_pool if fused.active(x) else F.avg_pool2d
        y = pool(x, self.kernel, self.stride, self.padding).unflatten(0, x_seq.shape[:2])
        return y.flatten(2) if self.flatten else y

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, stride={self.stride}, padding={self.padding}, flatten={self.flatten}"


def _time_constant(x_seq: torch.Tensor) -> bool:
    """An expanded view: the same value at every timestep."""
    return x_seq.shape[0] > 1 and x_seq.stride(0) == 0


class Cell(nn.Module):
    """A DAG cell; each node is the sum of its incoming edges."""

    def __init__(self, genotype: Genotype, channels: int, neuron: NeuronSpec, per_step: bool = True):
        super().__init__()
        self.feedback = genotype.cell_type == "backward"
        self.edges = [(i, j) for i, j, _ in genotype.edges()]  # SNASNet's call order: forward, then feedback
        self.op_names = {f"{i}->{j}": op for i, j, op in genotype.edges()}  # the registry's names (kss.space.ops)
        self.ops = nn.ModuleDict(
            {f"{i}->{j}": make_op(op, channels, neuron, per_step) for i, j, op in genotype.edges()}
        )

    def _step(self, x: torch.Tensor, fed_back: list) -> list:
        """One pass over the forward edges, in SNASNet's order; an edge out of node i reads
        node i's value plus the feedback node i received this timestep (`x_i + last_x_i`)."""
        nodes = [x] + [None] * (NODES - 1)  # None: no input yet, i.e. zero
        for i, j in self.edges:
            if i < j:
                out = self.ops[f"{i}->{j}"](_or_zeros(_add(nodes[i], fed_back[i]), x))
                nodes[j] = _add(nodes[j], out)
        return nodes

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if not self.feedback:
            return self._step(x_seq, [None] * NODES)[-1]
        fed_back = [None] * NODES  # zeroed at the start of every forward
        outputs = []
        for t in range(x_seq.shape[0]):
            x = x_seq[t : t + 1]
            nodes = self._step(x, fed_back)
            received, fed_back = fed_back, [None] * NODES
            for i, j in self.edges:
                if i > j:  # node i feeds node j at the next timestep; it too reads x_i + last_x_i
                    fed_back[j] = _add(fed_back[j], self.ops[f"{i}->{j}"](_or_zeros(_add(nodes[i], received[i]), x)))
            outputs.append(nodes[-1])
        return torch.cat(outputs)


def _add(a, b):
    if a is None or b is None:
        return b if a is None else a
    if _time_constant(a) and _time_constant(b):  # e.g. stem + pooled stem: add once, not T times
        return (a[:1] + b[:1]).expand(torch.broadcast_shapes(a.shape, b.shape))
    return a + b


def _or_zeros(value, like: torch.Tensor) -> torch.Tensor:
    # A node whose only inputs are feedback edges is zero at t=0; ops must see a real zero
    # tensor (BN of zeros is its bias, not zero).
    return torch.zeros_like(like) if value is None else value


class SNASNet(nn.Module):
    """stem -> cell1 -> BN-LIF-conv-BN-pool -> cell2 -> BN-LIF-pool -> classifier -> population vote."""

    def __init__(self, genotype: Genotype, spec: ModelSpec, neuron: NeuronSpec, channels_last: bool = True):
        super().__init__()
        self.spec = spec
        self.stem = nn.Sequential(
            nn.Conv2d(spec.in_channels, spec.c1, 3, stride=spec.stem_stride, padding=1, bias=False), nn.BatchNorm2d(spec.c1)
        )
        per_step = spec.batch_norm == "per_step"
        self.cell1 = Cell(genotype, spec.c1, neuron, per_step)
        self.down = nn.Sequential(
            SeqBatchNorm2d(spec.c1, per_step),
            neuron.make("m"),
            conv_bn(spec.c1, spec.c2, 3, per_step),
            SeqAvgPool(2),
        )
        self.cell2 = Cell(genotype, spec.c2, neuron, per_step)
        self.head = nn.Sequential(
            SeqBatchNorm2d(spec.c2, per_step),
            neuron.make("m"),
            SeqAvgPool(spec.sap, flatten=True),
            # one mask for the whole time window, renewed when the network is reset (every batch)
            layer.Dropout(spec.dropout, step_mode="m"),
            nn.Linear(spec.features, spec.hidden, bias=False),
            neuron.make("m"),
            nn.Linear(spec.hidden, spec.population),
        )
        self._init_weights()
        self.use_memory_format(torch.channels_last if channels_last else torch.contiguous_format)

    @property
    def pooled_linear(self) -> nn.Module:
        """The classifier's first Linear, over the average-pooled spikes (head: BN, LIF, pool, dropout, this, ...)."""
        return self.head[4]

    def use_memory_format(self, memory_format: torch.memory_format) -> "SNASNet":
        """Weights and every activation in this layout from now on (images are converted on entry)."""
        self.memory_format = memory_format
        return self.to(memory_format=memory_format)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=2)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, images: torch.Tensor, reset: bool = True) -> torch.Tensor:
        """[B, C, H, W] images -> [B, classes] logits (population vote averaged over time).

        reset=False starts from the membranes and dropout mask the last forward left (SNASNet's
        scoring repeats, kss.search.score); a backward cell's feedback starts from zero either way."""
        if reset:
            reset_state(self)  # no neuron state survives from a previous batch
        x = self.stem(images.contiguous(memory_format=self.memory_format))  # direct encoding: the same analog input at every timestep
        x = x.unsqueeze(0).expand(self.spec.timesteps, *x.shape)
        x = self.cell2(self.down(self.cell1(x)))
        votes = self.head(x)  # [T, B, population]
        T, B, _ = votes.shape
        return votes.view(T, B, self.spec.num_classes, -1).mean(dim=(0, 3))


@torch.compiler.disable
def reset_state(net: nn.Module) -> None:
    """spikingjelly's reset_net, run eagerly under torch.compile: traced, it guarded the compiled forward on
    spikingjelly's module cache and on the last forward's membranes (grad or no grad), so every switch between
    training and evaluation compiled the network again, until dynamo's recompile limit sent the rest of the
    run (the test pass of a 5-epoch training) back to eager."""
    functional.reset_net(net)


def build_network(genotype: Genotype, spec: ModelSpec, neuron: NeuronSpec, channels_last: bool = True) -> SNASNet:
    """The network to train: channels-last makes training steps 1.3-1.5x faster on CPU."""
    if genotype.cell_type != spec.cell_type:
        raise KssError(
            f"the genotype is a {genotype.cell_type} cell but model.cell_type={spec.cell_type}; "
            f"pass model.cell_type={genotype.cell_type}"
        )
    return SNASNet(genotype, spec, neuron, channels_last)


def scoring_network(genotype: Genotype, spec: ModelSpec, neuron: NeuronSpec) -> SNASNet:
    """The network the search scores: NCHW, the reference's layout.

    PyTorch's CPU kernels reduce some sums (BatchNorm statistics, 1-channel and some small
    convolutions) in another order for channels-last tensors, which flips ~1e-5 of the spikes
    and moves R by ~1e-3; in NCHW the spikes and R are the reference's bit for bit
    (tests/test_equivalence.py), and with per-step BN scoring is no slower than channels-last.
    """
    return build_network(genotype, spec, neuron, channels_last=False)
