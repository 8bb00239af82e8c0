"""Optimizee problems for learned optimizers: what an optimizer is trained and tested *on*.

A *family* samples *problems*; a problem holds a batch of independent optimizee instances (one
per task) and evaluates them all at once:

- ``problem.init_params()`` -> dict of tensors whose first dimension indexes the task;
- ``problem.loss(params, step)`` -> per-task losses ``(tasks,)``; ``step`` selects the
  minibatch, so every optimizer compared on a problem sees the same data stream.

Batching the instances lets a coordinatewise optimizer treat many tasks as one long vector of
coordinates, which is how the comparison evaluates 32 held-out tasks at the price of one.

References: Andrychowicz et al. 2016, "Learning to learn by gradient descent by gradient
descent" (quadratics and the MNIST MLP); Metz et al. 2022, learned_optimization (the split of
*what* is learned, *on what*, and *how*).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from autometa.data import ArrayDataset
from autometa.errors import ConfigError
from autometa.tasks._regression import RandomQuadratics


def _positive_int(owner: str, name: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"The `{name}` of {owner} must be an integer >= 1. Got {value!r} instead.")
    return value


class QuadraticProblem:
    """A batch of quadratics ``f(theta) = ||W theta - y||^2``, one ``(W, y)`` per task.

    Args:
        weights: ``W`` of shape ``(tasks, dim, dim)``.
        targets: ``y`` of shape ``(tasks, dim)``.
        init: the starting point ``theta_0`` of shape ``(tasks, dim)``.
    """

    def __init__(self, weights: Tensor, targets: Tensor, init: Tensor):
        self.weights, self.targets, self.init = weights, targets, init

    @property
    def num_tasks(self) -> int:
        return self.weights.shape[0]

    def init_params(self) -> dict[str, Tensor]:
        return {"theta": self.init.clone()}

    def loss(self, params: dict[str, Tensor], step: int) -> Tensor:
        return RandomQuadratics.loss(params["theta"], self.weights, self.targets)

    def to(self, dtype: torch.dtype) -> QuadraticProblem:
        return QuadraticProblem(self.weights.to(dtype), self.targets.to(dtype), self.init.to(dtype))


class QuadraticFamily:
    """Random 10-dimensional quadratics with ``W, y ~ N(0, 1)`` and ``theta_0 ~ N(0, init_scale^2)``.

    Uses :class:`autometa.tasks.RandomQuadratics` for ``(W, y)``.

    References: Andrychowicz et al. 2016, section 3.1.
    """

    def __init__(self, dim: int = 10, init_scale: float = 1.0):
        self.tasks = RandomQuadratics(dim=dim)
        self.dim, self.init_scale = dim, float(init_scale)

    def sample(self, num_tasks: int, horizon: int, generator: torch.Generator) -> QuadraticProblem:
        """``num_tasks`` quadratics (``horizon`` is unused: the function has no minibatches)."""
        _positive_int("QuadraticFamily.sample", "num_tasks", num_tasks)
        batch = self.tasks.sample(num_tasks, generator)
        init = self.init_scale * torch.randn(num_tasks, self.dim, generator=generator)
        return QuadraticProblem(batch.support_x, batch.support_y, init)


_ACTIVATIONS = {"sigmoid": torch.sigmoid, "relu": torch.relu, "tanh": torch.tanh}


class MLPProblem:
    """A batch of fully connected classifiers, each with its own weights and minibatch stream.

    Parameters are stored batched, ``layer{i}.weight`` of shape ``(tasks, in, out)`` and
    ``layer{i}.bias`` of shape ``(tasks, 1, out)``, and applied with ``torch.bmm``.

    Args:
        inputs: all examples, ``(n, features)`` float.
        labels: ``(n,)`` long.
        batch_indices: ``(steps, tasks, batch_size)`` indices of the minibatch of each step.
        init: initial parameters (batched as above).
        activation: ``sigmoid``, ``relu`` or ``tanh`` between layers.
    """

    def __init__(self, inputs: Tensor, labels: Tensor, batch_indices: Tensor, init: dict[str, Tensor],
                 activation: str):
        self.inputs, self.labels, self.batch_indices = inputs, labels, batch_indices
        self.init, self.activation = init, activation
        self.layers = len(init) // 2

    @property
    def num_tasks(self) -> int:
        return self.batch_indices.shape[1]

    def init_params(self) -> dict[str, Tensor]:
        return {k: v.clone() for k, v in self.init.items()}

    def logits(self, params: dict[str, Tensor], x: Tensor) -> Tensor:
        """Outputs ``(tasks, batch, classes)`` for inputs ``x`` of shape ``(tasks, batch, features)``."""
        act = _ACTIVATIONS[self.activation]
        for i in range(self.layers):
            x = torch.baddbmm(params[f"layer{i}.bias"], x, params[f"layer{i}.weight"])
            if i < self.layers - 1:
                x = act(x)
        return x

    def loss(self, params: dict[str, Tensor], step: int) -> Tensor:
        if step >= self.batch_indices.shape[0]:
            raise ConfigError(f"This MLPProblem holds minibatches for {self.batch_indices.shape[0]} steps; "
                              f"step {step} was asked for. Sample it with a longer horizon.")
        index = self.batch_indices[step]
        x = self.inputs[index].to(params["layer0.weight"].dtype)
        logits = self.logits(params, x)
        per_example = torch.nn.functional.cross_entropy(
            logits.flatten(0, 1), self.labels[index].flatten(), reduction="none")
        return per_example.view(index.shape).mean(-1)

    def to(self, dtype: torch.dtype) -> MLPProblem:
        return MLPProblem(self.inputs.to(dtype), self.labels, self.batch_indices,
                          {k: v.to(dtype) for k, v in self.init.items()}, self.activation)


class MLPFamily:
    """Training an MLP classifier on an image dataset from a random init, one minibatch a step.

    The paper's MNIST problem is ``MLPFamily(load_mnist(), hidden=(20,), activation="sigmoid",
    batch_size=128)``; its generalization checks change ``hidden`` (``(40,)``, ``(20, 20)``) and
    ``activation`` (``"relu"``).

    Args:
        dataset: images ``(n, C, H, W)`` (flattened here) and integer labels.
        hidden: widths of the hidden layers.
        activation: ``sigmoid``, ``relu`` or ``tanh``.
        batch_size: examples per step (128 in the paper).

    References: Andrychowicz et al. 2016, section 3.2.
    """

    def __init__(self, dataset: ArrayDataset, hidden: Sequence[int] = (20,), activation: str = "sigmoid",
                 batch_size: int = 128):
        if activation not in _ACTIVATIONS:
            raise ConfigError(f"MLPFamily activation must be one of {sorted(_ACTIVATIONS)}. "
                              f"Got {activation!r}.")
        hidden = tuple(hidden)
        for width in hidden:
            _positive_int("MLPFamily", "hidden", width)
        self.batch_size = _positive_int("MLPFamily", "batch_size", batch_size)
        self.inputs = torch.as_tensor(np.asarray(dataset.x, dtype=np.float32)).flatten(1)
        self.labels = torch.as_tensor(dataset.y).long()
        self.num_classes = int(self.labels.max()) + 1
        self.hidden, self.activation = hidden, activation

    def sample(self, num_tasks: int, horizon: int, generator: torch.Generator) -> MLPProblem:
        """``num_tasks`` networks with fresh initial weights and minibatches for ``horizon + 1`` steps."""
        _positive_int("MLPFamily.sample", "num_tasks", num_tasks)
        _positive_int("MLPFamily.sample", "horizon", horizon)
        sizes = [self.inputs.shape[1], *self.hidden, self.num_classes]
        init = {}
        for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
            # nn.Linear's default initialisation, drawn from the explicit generator
            bound = 1.0 / math.sqrt(fan_in)
            for kind, shape in (("weight", (num_tasks, fan_in, fan_out)), ("bias", (num_tasks, 1, fan_out))):
                init[f"layer{i}.{kind}"] = (torch.rand(shape, generator=generator) * 2 - 1) * bound
        shape = (horizon + 1, num_tasks, self.batch_size)
        indices = torch.randint(len(self.labels), shape, generator=generator)
        return MLPProblem(self.inputs, self.labels, indices, init, self.activation)
