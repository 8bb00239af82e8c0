"""The task-distribution contract and the meta-batch it yields."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field, fields

import torch
from torch import Tensor

from autometa.errors import TaskSpecError

_NAMES = ("support_x", "support_y", "query_x", "query_y")


@dataclass
class TaskBatch:
    """A meta-batch of tasks, stacked: every tensor's first dimension indexes the task.

    Classification: ``support_x (B, ways*shots, C, H, W)``, ``support_y (B, ways*shots)`` long
    labels in ``0..ways-1``; the same for the query set. Regression: ``x (B, n, d_in)``,
    ``y (B, n, d_out)``. ``info`` holds per-task tensors describing the task (e.g. the sinusoid's
    amplitude and phase; for classification ``classes`` and ``rotations``, the dataset class
    behind each episode label, and ``class_index``, its index among the split's classes).
    """

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor
    info: dict[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.support_x.shape[0]

    def to(self, device) -> TaskBatch:
        return TaskBatch(*(getattr(self, f.name).to(device) for f in fields(self)[:4]),
                         {k: v.to(device) for k, v in self.info.items()})

    def __getitem__(self, index) -> TaskBatch:
        """A sub-batch (``index`` a slice or index tensor); keeps the leading task dimension."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return TaskBatch(self.support_x[index], self.support_y[index], self.query_x[index],
                         self.query_y[index], {k: v[index] for k, v in self.info.items()})

    @property
    def tensors(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return self.support_x, self.support_y, self.query_x, self.query_y

    @classmethod
    def coerce(cls, batch, owner: str = "a learner") -> TaskBatch:
        """``batch`` as a :class:`TaskBatch`, after checking its structure.

        Accepts a :class:`TaskBatch` or a tuple / list ``(support_x, support_y, query_x, query_y)``
        of tensors whose first dimension indexes the tasks, with as many examples in each ``x``
        as in its ``y``. What the targets must look like depends on the learner (class labels
        or regression targets) and is checked by it.

        Raises:
            TaskSpecError: anything else, e.g. one task without the leading task dimension, or
                tensors that disagree on the number of tasks or examples.
        """
        if isinstance(batch, cls):
            tensors = batch.tensors
        elif isinstance(batch, (tuple, list)) and len(batch) == 4:
            tensors = tuple(batch)
        else:
            got = f"a {type(batch).__name__} of {len(batch)} items" if isinstance(batch, (tuple, list)) \
                else f"a {type(batch).__name__}"
            raise TaskSpecError(f"{owner} needs a meta-batch of tasks: a TaskBatch or a tuple (support_x, "
                                f"support_y, query_x, query_y) of tensors. Got {got}.")
        for name, t in zip(_NAMES, tensors):
            if not isinstance(t, Tensor):
                raise TaskSpecError(f"{owner}: {name} of the meta-batch must be a torch.Tensor. Got "
                                    f"{type(t).__name__}; convert it with torch.as_tensor(...).")
        shapes = ", ".join(f"{n} {tuple(t.shape)}" for n, t in zip(_NAMES, tensors))
        one_task = ("If this is one task, add the leading task dimension: "
                    "(support_x.unsqueeze(0), support_y.unsqueeze(0), ...).")
        if any(t.dim() < 2 for t in tensors):
            raise TaskSpecError(f"{owner} needs tensors of shape (tasks, examples, ...). Got {shapes}. {one_task}")
        if len({t.shape[0] for t in tensors}) != 1 or tensors[0].shape[0] == 0:
            raise TaskSpecError(f"{owner}: every tensor of a meta-batch needs the same number (> 0) of tasks "
                                f"in its first dimension. Got {shapes}. {one_task}")
        for x, y, kind in ((0, 1, "support"), (2, 3, "query")):
            if tensors[x].shape[1] != tensors[y].shape[1] or tensors[x].shape[1] == 0:
                raise TaskSpecError(f"{owner}: {kind}_x and {kind}_y need the same number (> 0) of examples "
                                    f"per task in their second dimension. Got {shapes}. {one_task}")
        if isinstance(batch, cls):
            return batch
        return cls(*tensors)


class TaskDistribution(abc.ABC):
    """Samples tasks. Subclasses set ``kind`` and ``num_outputs`` and implement :meth:`sample`.

    Contract: :meth:`sample` draws all randomness from the ``generator`` it is given, never from
    global state, so the same generator state gives the same tasks. Distributions of different
    splits of one dataset never share classes.
    """

    kind: str  # "classification" or "regression"
    num_outputs: int  # ways for classification, output dimension for regression
    input_shape: tuple[int, ...]

    @abc.abstractmethod
    def sample(self, batch_size: int, generator: torch.Generator) -> TaskBatch:
        """Return ``batch_size`` tasks as a :class:`TaskBatch`."""

    def episodes(self, count: int, batch_size: int, seed: int):
        """Yield ``count`` tasks as batches of at most ``batch_size``, from a fixed ``seed``.

        Used for evaluation: the same seed always gives the same test tasks.
        """
        gen = torch.Generator().manual_seed(seed)
        done = 0
        while done < count:
            n = min(batch_size, count - done)
            yield self.sample(n, gen)
            done += n
