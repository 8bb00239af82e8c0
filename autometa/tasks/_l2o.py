"""Optimizee families for learned optimizers: what an optimizer is trained and tested *on*.

Each family is a :class:`~autometa.tasks.TaskDistribution`; one task is one optimization
problem (an optimizee, its starting point and its data), so the run loop, ``sweep`` and
``compare`` treat "train an optimizer on quadratics" like any other meta-learning problem.
:class:`~autometa.learners.L2O` consumes them:

- :class:`QuadraticFamily` (``kind = "quadratic"``): ``f(theta) = ||W theta - y||^2``. A task is
  ``support_x = W (dim, dim)``, ``support_y = y (dim,)`` (the query set is the same function)
  and ``info["init"] = theta_0``. Loss: :func:`quadratic_loss`.
- :class:`MLPFamily` (``kind = "classification"``): training a network (the config's
  ``model``, e.g. ``{name: mlp, hidden: [20], activation: sigmoid}``) on a stream of
  minibatches. A task is ``support_x (steps + 1, batch_size, features)`` (minibatch ``t`` is
  the one the loss at iterate ``t`` sees, so every optimizer compared on a task sees the same
  data stream), ``support_y (steps + 1, batch_size)``, a query set of ``queries`` other
  examples, and ``info["init_seed"]``, from which the learner draws the network's starting
  weights. Loss: :func:`stream_loss`.

References: Andrychowicz et al. 2016, "Learning to learn by gradient descent by gradient
descent" (quadratics and the MNIST MLP); Metz et al. 2022, learned_optimization (the split of
*what* is learned, *on what*, and *how*).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from autometa.data import ArrayDataset
from autometa.errors import ConfigError, TaskSpecError
from autometa.tasks._base import TaskBatch, TaskDistribution


def _positive_int(owner: str, name: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise TaskSpecError(f"The `{name}` of {owner} must be an integer >= 1. Got {value!r} instead.")
    return value


def quadratic_loss(theta: Tensor, weights: Tensor, targets: Tensor) -> Tensor:
    """``||W theta - y||^2`` per task: ``theta (B, dim)``, ``W (B, dim, dim)``, ``y (B, dim)`` -> ``(B,)``."""
    return ((weights @ theta.unsqueeze(-1)).squeeze(-1) - targets).pow(2).sum(-1)


class QuadraticFamily(TaskDistribution):
    """Random quadratics ``||W theta - y||^2`` with ``W, y ~ N(0, 1)``, ``theta_0 ~ N(0, init_scale^2)``.

    Splits are statistically identical; seeds keep training and held-out problems apart. Draws
    ``W``, ``y`` then ``theta_0`` from the generator, in the order the paper reproduction used.

    Args:
        dim: the dimension (10 in the paper).
        init_scale: the standard deviation of the starting point.

    References: Andrychowicz et al. 2016, section 3.1.
    """

    kind = "quadratic"

    def __init__(self, dim: int = 10, init_scale: float = 1.0):
        self.dim = _positive_int("QuadraticFamily", "dim", dim)
        if not isinstance(init_scale, (int, float)) or isinstance(init_scale, bool) or init_scale <= 0:
            raise TaskSpecError(f"The `init_scale` of QuadraticFamily must be a float > 0. Got {init_scale!r}.")
        self.init_scale = float(init_scale)
        self.num_outputs = self.dim
        self.input_shape = (self.dim,)

    def sample(self, batch_size: int, generator: torch.Generator) -> TaskBatch:
        _positive_int("QuadraticFamily.sample", "batch_size", batch_size)
        w = torch.randn(batch_size, self.dim, self.dim, generator=generator)
        y = torch.randn(batch_size, self.dim, generator=generator)
        init = self.init_scale * torch.randn(batch_size, self.dim, generator=generator)
        return TaskBatch(w, y, w, y, {"init": init})


def stream_loss(model: nn.Module, params: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
    """Mean cross-entropy per task of a batch of networks: ``params`` and ``x (B, n, ...)`` batched over tasks.

    Returns:
        ``(B,)`` losses, each task's network applied to its own inputs (``torch.func.vmap``).
    """
    def one(p, xs, ys):
        logits = torch.func.functional_call(model, p, (xs,))
        return nn.functional.cross_entropy(logits, ys)

    return torch.func.vmap(one)(params, x, y)


def fresh_init(model: nn.Module, seed: int, dtype: torch.dtype | None = None) -> dict[str, Tensor]:
    """New starting weights for ``model`` drawn from ``seed``, with ``nn.Linear``'s default distribution.

    A weight of two or more dimensions is drawn from ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, the
    bias next to it from the same range (what ``nn.Linear`` and ``nn.Conv2d`` do); any other
    parameter (e.g. batch-norm scales) keeps the model's value. Never touches global RNG state.
    """
    generator = torch.Generator().manual_seed(int(seed))
    named = dict(model.named_parameters())
    out = {}
    for name, p in named.items():
        dtype_ = dtype or p.dtype
        weight = name[:-4] + "weight" if name.endswith("bias") else name
        if weight in named and named[weight].dim() >= 2:
            fan_in = math.prod(named[weight].shape[1:])
            bound = 1.0 / math.sqrt(fan_in)
            out[name] = ((torch.rand(p.shape, generator=generator, dtype=torch.float64) * 2 - 1) * bound).to(dtype_)
        else:
            out[name] = p.detach().clone().to(dtype_)
    return out


class MLPFamily(TaskDistribution):
    """Training a network from a fresh random init on a stream of minibatches of an image dataset.

    The paper's MNIST problem is ``MLPFamily(load_mnist(), steps=100, batch_size=128)`` with the
    config's ``model: {name: mlp, hidden: [20], activation: sigmoid}``; its generalization
    checks change the model (``hidden: [40]``, ``[20, 20]``, ``activation: relu``) or ``steps``.

    Args:
        dataset: images ``(n, C, H, W)`` (flattened here) and integer labels.
        steps: optimizer steps each task's stream supports (``steps + 1`` minibatches).
        batch_size: examples per step (128 in the paper).
        queries: examples of the query set (to measure the trained network on other data).
        name: how the family names itself in errors (e.g. ``mnist/train``).

    References: Andrychowicz et al. 2016, section 3.2.
    """

    kind = "classification"

    def __init__(self, dataset: ArrayDataset, steps: int = 100, batch_size: int = 128, queries: int = 256,
                 name: str = "mlp"):
        self.steps = _positive_int("MLPFamily", "steps", steps)
        self.batch_size = _positive_int("MLPFamily", "batch_size", batch_size)
        self.queries = _positive_int("MLPFamily", "queries", queries)
        self.inputs = torch.as_tensor(np.asarray(dataset.x, dtype=np.float32)).flatten(1)
        self.labels = torch.as_tensor(np.asarray(dataset.y)).long()
        self.num_classes = self.num_outputs = int(self.labels.max()) + 1
        self.input_shape = (self.inputs.shape[1],)
        self.name = name

    def sample(self, batch_size: int, generator: torch.Generator) -> TaskBatch:
        _positive_int("MLPFamily.sample", "batch_size", batch_size)
        stream = torch.randint(len(self.labels), (batch_size, self.steps + 1, self.batch_size), generator=generator)
        query = torch.randint(len(self.labels), (batch_size, self.queries), generator=generator)
        seeds = torch.randint(0, 2**62, (batch_size,), generator=generator)
        return TaskBatch(self.inputs[stream], self.labels[stream], self.inputs[query], self.labels[query],
                         {"init_seed": seeds})


def check_stream(batch: TaskBatch, step: int) -> None:
    """Raise :class:`ConfigError` if ``batch`` (of an :class:`MLPFamily`) holds no minibatch for ``step``."""
    if step >= batch.support_x.shape[1]:
        raise ConfigError(f"These tasks hold minibatches for {batch.support_x.shape[1] - 1} optimizer steps; step "
                          f"{step} was asked for. Raise tasks.steps, or lower the learner's horizon/eval_steps.")
