"""Sequence episodes for online learners (MANN): labelled examples arrive one at a time.

In the protocol of Santoro et al. 2016 an episode is a sequence of ``length`` images drawn from
``ways`` classes; the learner predicts the label of each image when it sees it and is shown
that label at the next step, so every step is first a query and then, one step later, a
support example. A :class:`~autometa.tasks.TaskBatch` of such episodes therefore holds the same
sequence as its support and its query set (the same tensors, no copy):

- ``support_x = query_x``: ``(B, length, C, H, W)`` images in presentation order;
- ``support_y = query_y``: ``(B, length)`` labels ``0..ways-1``, shuffled per episode;
- ``info["instance"]``: ``(B, length)``, how many times the class of step ``t`` has been shown
  up to and including step ``t`` (1 for a class's first presentation), used for the
  per-instance accuracies of the paper's Table 1.

Presenting the label one step late is the learner's business (it reads ``support_y[t - 1]``
at step ``t``); the task only fixes the order.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from autometa.data import ArrayDataset
from autometa.errors import TaskSpecError
from autometa.tasks._base import TaskBatch, TaskDistribution
from autometa.tasks._classification import FewShotClassification


def presentation_index(labels: Tensor) -> Tensor:
    """``instance[b, t]``: the number of steps ``s <= t`` with ``labels[b, s] == labels[b, t]``.

    Example::

        >>> presentation_index(torch.tensor([[2, 0, 2, 2, 0]])).tolist()
        [[1, 1, 2, 3, 2]]
    """
    same = labels[:, :, None] == labels[:, None, :]  # (B, t, s)
    earlier = torch.ones(labels.shape[1], labels.shape[1], dtype=torch.bool, device=labels.device).tril()
    return (same & earlier).sum(-1)


def resize_images(x: Tensor, size: int) -> Tensor:
    """Images ``(n, C, H, W)`` resized to ``size x size`` (antialiased bilinear), in float32."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x.float()
    return F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)


class SequenceClassification(TaskDistribution):
    """Episodes of ``length`` steps over ``ways`` classes, each class shown ``length // ways`` times.

    The classes of an episode (a rotation of a character being a class of its own, as in
    :class:`FewShotClassification`) get the labels ``0..ways-1`` in random order, and the
    ``length`` examples are presented in a random order. Santoro et al. 2016 use 5 classes, 50
    steps, 20x20 images; here every class appears exactly ``length // ways`` times (10), so the
    1st..10th-presentation accuracies are defined in every episode.

    Args:
        dataset: the examples; images ``(n, C, H, W)``.
        classes: the dataset labels this distribution may use.
        ways: classes per episode.
        length: steps per episode, a multiple of ``ways``.
        rotations: quarter turns making new classes, e.g. ``(0, 1, 2, 3)``; ``(0,)`` for none.
        image_size: images are resized to this side (20 in the paper); None keeps them.
        name: used in error messages (e.g. ``"omniglot/test"``).

    Raises:
        TaskSpecError: ``length`` not a multiple of ``ways``, too few classes, or a class with
            fewer than ``length // ways`` examples.

    References: Santoro, Bartunov, Botvinick, Wierstra & Lillicrap 2016, "Meta-Learning with
    Memory-Augmented Neural Networks".
    """

    kind = "classification"

    def __init__(self, dataset: ArrayDataset, classes, ways: int = 5, length: int = 50, rotations=(0,),
                 image_size: int | None = 20, name: str = "dataset"):
        for key, value, low in (("ways", ways, 2), ("length", length, 2)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
                raise TaskSpecError(f"`{key}` of a sequence episode must be an integer >= {low}. Got {value!r} "
                                    f"for {name}.")
        if length % ways:
            raise TaskSpecError(f"`length`={length} of a sequence episode must be a multiple of `ways`={ways}, "
                                f"so that every class is shown equally often; use e.g. length={ways * 10}.")
        if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
            raise TaskSpecError(f"`image_size` of a sequence episode must be an integer >= 1 or None. Got "
                                f"{image_size!r} for {name}.")
        if image_size is not None:
            dataset = ArrayDataset(resize_images(torch.as_tensor(dataset.x), image_size).numpy(), dataset.y,
                                   name=dataset.name, meta=dataset.meta)
        # an episode is a few-shot episode of `length // ways` shots and no query (its constructor
        # checks the classes and their example counts, asking for one query more than needed)
        self._episodes = FewShotClassification(dataset, classes, ways, length // ways, 1, rotations, name)
        self._episodes.queries = 0
        self.ways, self.length, self.name = int(ways), int(length), name
        self.num_outputs = self.ways
        self.input_shape = self._episodes.input_shape

    @property
    def num_classes(self) -> int:
        return self._episodes.num_classes

    def sample(self, batch_size: int, generator: torch.Generator) -> TaskBatch:
        grouped = self._episodes.sample(batch_size, generator)  # (B, length) grouped by class 0..ways-1
        # drawn where the generator is (as FewShotClassification draws), applied where the images are
        order = torch.rand(batch_size, self.length, generator=generator, device=generator.device).argsort(dim=1)
        order = order.to(grouped.support_y.device)
        x = torch.gather(grouped.support_x, 1, order.view(*order.shape, *[1] * (grouped.support_x.dim() - 2))
                         .expand_as(grouped.support_x))
        y = torch.gather(grouped.support_y, 1, order)
        info = {**grouped.info, "instance": presentation_index(y)}
        return TaskBatch(x, y, x, y, info)
