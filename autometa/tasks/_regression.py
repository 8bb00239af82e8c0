"""Regression task families: the MAML paper's sinusoids and random quadratics."""

from __future__ import annotations

import math

import torch

from autometa.errors import TaskSpecError
from autometa.tasks._base import TaskBatch, TaskDistribution


def _positive_int(name: str, value, owner: str) -> int:
    if not isinstance(value, int) or value < 1:
        raise TaskSpecError(f"`{name}` of {owner} must be an integer >= 1. Got {value!r}.")
    return value


class Sinusoid(TaskDistribution):
    """Sine regression as in Finn et al. 2017: ``y = A sin(x - phase)``.

    Amplitude ``A ~ U[0.1, 5]``, phase ``~ U[0, pi]``, inputs ``x ~ U[-5, 5]``; ``shots`` support
    and ``queries`` query points per task. Splits are statistically identical (the family is
    continuous), so different seeds are what keeps train and test tasks apart.

    References: Finn, Abbeel & Levine 2017, "Model-Agnostic Meta-Learning", section 5.1.
    """

    kind = "regression"
    num_outputs = 1
    input_shape = (1,)

    def __init__(self, shots: int = 10, queries: int = 10, amplitude=(0.1, 5.0),
                 phase=(0.0, math.pi), x_range=(-5.0, 5.0)):
        self.shots = _positive_int("shots", shots, "Sinusoid")
        self.queries = _positive_int("queries", queries, "Sinusoid")
        for name, (low, high) in (("amplitude", amplitude), ("phase", phase), ("x_range", x_range)):
            if low > high:
                raise TaskSpecError(f"`{name}` range of Sinusoid has low > high: {low} > {high}.")
        self.amplitude, self.phase, self.x_range = amplitude, phase, x_range

    def sample(self, batch_size: int, generator: torch.Generator) -> TaskBatch:
        def uniform(shape, low, high):
            return low + (high - low) * torch.rand(shape, generator=generator)

        amp = uniform((batch_size, 1, 1), *self.amplitude)
        phase = uniform((batch_size, 1, 1), *self.phase)
        x = uniform((batch_size, self.shots + self.queries, 1), *self.x_range)
        y = amp * torch.sin(x - phase)
        k = self.shots
        return TaskBatch(x[:, :k], y[:, :k], x[:, k:], y[:, k:],
                         {"amplitude": amp.view(-1), "phase": phase.view(-1)})


class RandomQuadratics(TaskDistribution):
    """Random quadratics ``f(theta) = ||W theta - y||^2`` with ``W, y ~ N(0, 1)``.

    The task family of Andrychowicz et al. 2016 (10 dimensions). A task is given as
    ``support_x = W (dim, dim)`` and ``support_y = y (dim,)``; the query set is the same function.

    References: Andrychowicz et al. 2016, "Learning to learn by gradient descent by gradient descent".
    """

    kind = "regression"

    def __init__(self, dim: int = 10):
        self.dim = _positive_int("dim", dim, "RandomQuadratics")
        self.num_outputs = self.dim
        self.input_shape = (self.dim,)

    def sample(self, batch_size: int, generator: torch.Generator) -> TaskBatch:
        w = torch.randn(batch_size, self.dim, self.dim, generator=generator)
        y = torch.randn(batch_size, self.dim, generator=generator)
        return TaskBatch(w, y, w, y)

    @staticmethod
    def loss(theta: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``||W theta - y||^2`` for one task (or a batch, summed over the last dimension)."""
        return ((w @ theta.unsqueeze(-1)).squeeze(-1) - y).pow(2).sum(-1)
