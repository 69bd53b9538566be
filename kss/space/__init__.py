"""The search space: genotype, op registry, network, neurons, parameter count, cost per image."""

from kss.space import snasnet_ops  # noqa: F401  (fills the op registry: every kss.space import sees SNASNet's ops)
