"""Plain supervised tasks: train a network on a small labelled dataset, test it on held-out examples.

Unlike few-shot episodes (balanced, ``shots`` examples per class, classes never seen in
meta-training), a task here is an ordinary small supervised problem: a random subset of the
dataset's classes, a training set drawn at random from their examples (so classes come in
whatever proportions the draw gives) and a disjoint held-out set from the same classes. The
splits of the distribution partition the dataset's *examples*, so meta-test tasks hold images no
meta-training task ever saw. Paired with a learner that trains each task from a fresh random
initialization (``MAML(..., reinit=True)``), this is the setting in which ML3 meta-learns a loss
and Andrychowicz et al. meta-learn an optimizer.
"""

from __future__ import annotations

import numpy as np
import torch

from autometa.data import ArrayDataset
from autometa.errors import TaskSpecError
from autometa.tasks._base import TaskBatch, TaskDistribution


def split_examples(labels: np.ndarray, fractions: dict[str, float], seed: int) -> dict[str, np.ndarray]:
    """Partition example indices into named disjoint splits, stratified by class, after a seeded shuffle.

    ``fractions`` maps split names to fractions of every class's examples (summing to at most 1).
    """
    rng = np.random.default_rng(seed)
    parts: dict[str, list] = {name: [] for name in fractions}
    for label in np.unique(labels):
        index = rng.permutation(np.flatnonzero(labels == label))
        start, cumulative = 0, 0.0
        for name, fraction in fractions.items():
            cumulative += fraction  # rounding the running total: fractions summing to 1 use every example
            stop = int(round(cumulative * len(index)))
            parts[name].append(index[start:stop])
            start = stop
    return {name: np.sort(np.concatenate(chunks)) for name, chunks in parts.items()}


class SupervisedClassification(TaskDistribution):
    """Tasks that are small supervised classification problems over random subsets of classes.

    Each task picks ``ways`` of the dataset's classes, relabels them ``0..ways-1`` in random
    order, and draws ``train_size + test_size`` distinct examples of those classes uniformly at
    random: the first ``train_size`` are the training (support) set, the rest the held-out
    (query) set.

    Args:
        dataset: the examples; images ``(n, C, H, W)`` or features ``(n, d)``.
        indices: the example indices this distribution may use (one split of the dataset).
        ways: classes per task (all of the dataset's classes if None).
        train_size: training examples per task.
        test_size: held-out examples per task.
        name: used in error messages (e.g. ``"digits/test"``).

    Raises:
        TaskSpecError: fewer than ``ways`` classes, or too few examples for one task.
    """

    kind = "classification"

    def __init__(self, dataset: ArrayDataset, indices, ways: int | None = None, train_size: int = 50,
                 test_size: int = 100, name: str = "dataset"):
        indices = np.asarray(indices, dtype=np.int64)
        labels = np.asarray(dataset.y)[indices]
        classes = np.unique(labels)
        ways = len(classes) if ways is None else ways
        for key, value, low in (("ways", ways, 2), ("train_size", train_size, 1), ("test_size", test_size, 1)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
                raise TaskSpecError(f"`{key}` must be an integer >= {low}. Got {value!r} for {name}.")
        if ways > len(classes):
            raise TaskSpecError(f"`ways`={ways} needs {ways} classes but {name} has {len(classes)}; "
                                f"use a smaller `ways`.")
        counts = np.array([np.sum(labels == c) for c in classes])
        fewest = int(np.sort(counts)[:ways].sum())
        if train_size + test_size > fewest:
            raise TaskSpecError(f"`train_size`+`test_size`={train_size + test_size} examples are needed per task but "
                                f"the {ways} smallest classes of {name} hold {fewest}; use smaller sizes or a larger "
                                f"split.")
        self.ways, self.train_size, self.test_size, self.name = int(ways), int(train_size), int(test_size), name
        self.num_outputs = self.ways
        # a padded table of example indices per class, as in FewShotClassification
        table = np.zeros((len(classes), counts.max()), np.int64)
        for i, c in enumerate(classes):
            table[i, :counts[i]] = indices[labels == c]
        self._x = torch.as_tensor(dataset.x)
        self._table, self._counts = torch.as_tensor(table), torch.as_tensor(counts)
        self._classes = torch.as_tensor(classes)
        self.input_shape = tuple(dataset.x.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self._classes)

    def sample(self, batch_size: int, generator: torch.Generator) -> TaskBatch:
        b, w, n = batch_size, self.ways, self.train_size + self.test_size
        pick = torch.rand(b, self.num_classes, generator=generator).argsort(dim=1)[:, :w]  # (b, w)
        # every example of the picked classes gets a random key; the n smallest are the task's
        keys = torch.rand(b, w, self._table.shape[1], generator=generator)
        keys[torch.arange(self._table.shape[1]) >= self._counts[pick][..., None]] = float("inf")
        order = keys.flatten(1).argsort(dim=1)[:, :n]  # (b, n) positions in the (w, max_count) table
        label = order // self._table.shape[1]
        index = self._table[pick.gather(1, label), order % self._table.shape[1]]
        x = self._x[index].float()
        t = self.train_size
        return TaskBatch(x[:, :t], label[:, :t], x[:, t:], label[:, t:],
                         {"classes": self._classes[pick], "class_index": pick})


def supervised_tasks(data: ArrayDataset, split: str, ways: int | None = None, train_size: int = 50,
                     test_size: int = 100, examples: dict[str, float] | None = None,
                     split_seed: int = 1) -> SupervisedClassification:
    """The ``split`` of a supervised task family over ``data``.

    Args:
        examples: fractions of every class's examples in each split (default 0.6/0.2/0.2).
        split_seed: seeds the split of the examples.
        ways, train_size, test_size: see :class:`SupervisedClassification`.

    Raises:
        TaskSpecError: bad fractions or a split that cannot hold a task.
    """
    fractions = dict(examples or {"train": 0.6, "val": 0.2, "test": 0.2})
    bad = [k for k, v in fractions.items() if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0]
    if bad or sum(fractions.values()) > 1 + 1e-9 or set(fractions) - {"train", "val", "test"}:
        raise TaskSpecError(f"tasks.examples must map train/val/test to fractions >= 0 summing to at most 1. "
                            f"Got {fractions!r}.")
    if split not in fractions or fractions[split] == 0:
        raise TaskSpecError(f"The {split!r} split of the supervised {data.name} tasks has no examples "
                            f"(tasks.examples={fractions}); give it a fraction, or set run.validate_every=0 "
                            f"to train without validation.")
    indices = split_examples(np.asarray(data.y), fractions, split_seed)[split]
    return SupervisedClassification(data, indices, ways, train_size, test_size, name=f"{data.name}/{split}")
