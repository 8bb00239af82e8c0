"""Zero-shot task distributions: classes described by meta-data vectors instead of examples."""

from __future__ import annotations

import numpy as np
import torch

from autometa.errors import ConfigError, TaskSpecError
from autometa.tasks._base import TaskBatch, TaskDistribution

# Seven-segment display codes of the digits (segments a-g: top, upper right, lower right,
# bottom, lower left, upper left, middle), the usual rendering with a tailed 6 and 9 and a
# 7 of three segments.
SEVEN_SEGMENT = {0: "abcdef", 1: "bc", 2: "abdeg", 3: "abcdg", 4: "bcfg", 5: "acdfg", 6: "acdefg",
                 7: "abc", 8: "abcdefg", 9: "abcdfg"}


def seven_segment_vectors() -> np.ndarray:
    """``(10, 7)`` float array: row ``d`` is digit ``d``'s seven-segment code (1 = segment lit)."""
    return np.array([[float(s in SEVEN_SEGMENT[d]) for s in "abcdefg"] for d in range(10)], np.float32)


class ClassAttributeTasks(TaskDistribution):
    """Zero-shot episodes: each class is described by a meta-data vector, queries are images.

    A task draws ``ways`` of the given classes (relabelled ``0..ways-1`` in random order) and
    ``queries`` images of each. The support slot holds the classes' meta-data vectors,
    ``support_x (B, ways, dim)``, ``support_y (B, ways) = 0..ways-1``; ``info["classes"]`` the
    dataset labels.

    Args:
        dataset: labelled images.
        class_vectors: ``(num_dataset_classes, dim)``; row ``k`` describes dataset label ``k``.
        classes: the dataset labels this distribution may use (disjoint across splits).
        ways, queries: classes per task and query images per class.
        name: used in messages.

    Raises:
        TaskSpecError: too few classes for ``ways`` or too few images for ``queries``.
    """

    kind = "classification"

    def __init__(self, dataset, class_vectors, classes, ways: int, queries: int, name: str = "dataset"):
        classes = np.asarray(classes)
        for key, value, low in (("ways", ways, 2), ("queries", queries, 1)):
            if not isinstance(value, (int, np.integer)) or value < low:
                raise TaskSpecError(f"`{key}` must be an integer >= {low}. Got {value!r} for {name}.")
        if ways > len(classes):
            raise TaskSpecError(f"`ways`={ways} needs {ways} classes but {name} has {len(classes)}; "
                                f"use a smaller `ways`.")
        vectors = np.asarray(class_vectors, np.float32)
        if vectors.ndim != 2 or classes.max() >= len(vectors):
            raise TaskSpecError(f"class_vectors must be (num_classes, dim) with a row for every label of "
                                f"{name}. Got shape {vectors.shape} for labels up to {classes.max()}.")
        self.ways, self.queries, self.name, self.num_outputs = int(ways), int(queries), name, int(ways)
        self._x = torch.as_tensor(dataset.x)
        self._vectors = torch.as_tensor(vectors)
        self._classes = torch.as_tensor(classes)
        self._members = [torch.as_tensor(np.flatnonzero(dataset.y == c)) for c in classes]
        fewest = min(len(m) for m in self._members)
        if fewest < queries:
            raise TaskSpecError(f"`queries`={queries} images per class are needed but a class of {name} "
                                f"has {fewest}; use fewer queries.")
        self.input_shape = tuple(dataset.x.shape[1:])

    def sample(self, batch_size: int, generator: torch.Generator) -> TaskBatch:
        b, w, q = batch_size, self.ways, self.queries
        pick = torch.rand(b, len(self._classes), generator=generator).argsort(dim=1)[:, :w]
        index = torch.stack([torch.stack([
            self._members[c][torch.randperm(len(self._members[c]), generator=generator)[:q]]
            for c in row.tolist()]) for row in pick])  # (b, w, q)
        x = self._x[index].float()
        labels = self._classes[pick]
        y = torch.arange(w).view(1, w, 1).expand(b, w, q)
        return TaskBatch(self._vectors[labels], torch.arange(w).expand(b, w).clone(),
                         x.reshape(b, w * q, *x.shape[3:]), y.reshape(b, w * q), {"classes": labels})


#: MNIST digits held out for the zero-shot test split (fixed, so results are comparable).
SEVEN_SEGMENT_TEST_DIGITS = (2, 7, 9)


def seven_segment_mnist(split: str, ways: int | None = None, queries: int = 15, root=None,
                        test_digits=SEVEN_SEGMENT_TEST_DIGITS) -> ClassAttributeTasks:
    """Zero-shot MNIST: each digit is described by its seven-segment display code.

    The meta-data vectors were defined by hand for this toolkit (:data:`SEVEN_SEGMENT`); they
    are not learned from images and are not a published attribute set. ``"train"`` episodes
    use the seven other digits with MNIST's training images, ``"test"`` (and ``"val"``)
    episodes the ``test_digits`` with MNIST's test images, so test classes are never seen in
    training. Default ways: 5 for training, ``len(test_digits)`` for testing.
    """
    from autometa.data import load_mnist

    if split not in ("train", "val", "test"):
        raise ConfigError(f"split must be 'train', 'val' or 'test'. Got {split!r}.")
    test = sorted(int(d) for d in test_digits)
    train = [d for d in range(10) if d not in test]
    classes = train if split == "train" else test
    dataset = load_mnist(root, train=split == "train")
    ways = ways if ways is not None else (5 if split == "train" else len(test))
    return ClassAttributeTasks(dataset, seven_segment_vectors(), classes, ways, queries,
                               name=f"seven_segment_mnist/{split}")
