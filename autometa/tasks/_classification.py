"""N-way K-shot classification episodes over class splits that never overlap."""

from __future__ import annotations

import copy

import numpy as np
import torch

from autometa.data import ArrayDataset
from autometa.errors import ConfigError, TaskSpecError
from autometa.tasks._base import TaskBatch, TaskDistribution


class FewShotClassification(TaskDistribution):
    """N-way K-shot Q-query episodes drawn from the given classes of a dataset.

    Each class (optionally rotated by 90/180/270 degrees, each rotation a class of its own, as
    in Santoro et al. 2016 and Vinyals et al. 2016) is relabelled ``0..ways-1`` in random order
    within the episode. Support and query examples of one class never coincide.

    Args:
        dataset: the examples; images ``(n, C, H, W)``.
        classes: the dataset labels this distribution may use.
        ways, shots, queries: classes per task, support and query examples per class.
        rotations: quarter turns making new classes, e.g. ``(0, 1, 2, 3)``; ``(0,)`` for none.
        name: used in error messages (e.g. ``"omniglot/test"``).

    Raises:
        TaskSpecError: when the split has fewer than ``ways`` classes or a class has fewer
            than ``shots + queries`` examples.

    Device-resident sampling: :meth:`to` gives a copy whose images (only this split's) and index
    tables live on a device, so that an episode is gathered there instead of being assembled on
    the CPU and copied every step. Its random draws are made on the ``generator``'s device: with
    a CPU generator it yields exactly the episodes of the CPU sampler (same seed, same tensors);
    with a generator on the device (``torch.Generator(device="cuda")``) nothing leaves the device,
    and the episodes are seeded and reproducible but differ from the CPU generator's (another
    random stream), their content still being the images the drawn indices name
    (``info["example_index"]``, rotated by ``info["rotations"]``).
    """

    kind = "classification"

    def __init__(self, dataset: ArrayDataset, classes, ways: int, shots: int, queries: int,
                 rotations=(0,), name: str = "dataset"):
        for key, value, low in (("ways", ways, 2), ("shots", shots, 1), ("queries", queries, 1)):
            if not isinstance(value, (int, np.integer)) or value < low:
                raise TaskSpecError(f"`{key}` must be an integer >= {low}. Got {value!r} for {name}.")
        rotations = tuple(int(r) % 4 for r in rotations)
        classes = np.asarray(classes)
        self.ways, self.shots, self.queries, self.name = int(ways), int(shots), int(queries), name
        self.num_outputs = self.ways
        n_classes = len(classes) * len(rotations)
        if self.ways > n_classes:
            raise TaskSpecError(
                f"`ways`={ways} needs {ways} classes but {name} has {n_classes}; "
                f"use a smaller `ways` or another split."
            )
        order = np.argsort(dataset.y, kind="stable")
        sorted_y = dataset.y[order]
        starts = np.searchsorted(sorted_y, classes)
        ends = np.searchsorted(sorted_y, classes, side="right")
        counts = ends - starts
        need = self.shots + self.queries
        if counts.min() < need:
            worst = classes[counts.argmin()]
            raise TaskSpecError(
                f"`shots`+`queries`={need} examples per class are needed but class {worst} of "
                f"{name} has {counts.min()}; use fewer shots or queries (at most {counts.min()} in all)."
            )
        # A padded table of example indices per class, so that sampling is one vectorised op.
        max_n = counts.max()
        table = np.zeros((len(classes), max_n), np.int64)
        for i, (s, c) in enumerate(zip(starts, counts)):
            table[i, :c] = order[s:s + c]
        self._x = torch.as_tensor(dataset.x)
        self._table = torch.as_tensor(table)
        self._counts = torch.as_tensor(counts)
        self._classes = torch.as_tensor(classes)
        self._rotations = torch.as_tensor(rotations)
        self.input_shape = tuple(dataset.x.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self._classes) * len(self._rotations)

    @property
    def device(self) -> torch.device:
        """Where the images are and the episodes are assembled."""
        return self._x.device

    def to(self, device: torch.device | str) -> FewShotClassification:
        """A copy of this distribution whose images and index tables live on ``device``.

        Only the images of this split's classes are copied. Sampling from the copy with the same
        generator gives the same episodes as sampling from ``self`` (see the class docstring).
        """
        device = torch.device(device)
        new = copy.copy(self)
        valid = torch.arange(self._table.shape[1]) < self._counts[:, None]
        used = torch.unique(self._table[valid])  # sorted example indices of this split
        new._x = self._x[used].to(device)
        new._table = torch.where(valid, torch.searchsorted(used, self._table), 0).to(device)
        new._counts, new._classes, new._rotations = (t.to(device) for t in (self._counts, self._classes,
                                                                              self._rotations))
        examples = getattr(self, "_examples", None)  # a copy of a copy maps back to the dataset's indices
        new._examples = (used if examples is None else examples.cpu()[used]).to(device)  # dataset index per row
        new._host = self if getattr(self, "_host", None) is None else self._host
        new._sync_free = device.type != "cpu"  # rotate without asking the device which episodes need it
        return new

    def sample(self, batch_size: int, generator: torch.Generator) -> TaskBatch:
        b, w, k, q = batch_size, self.ways, self.shots, self.queries
        host = getattr(self, "_host", None) or self
        draw = generator.device  # the random draws are made where the generator is
        counts = host._counts if draw.type == "cpu" else self._counts.to(draw)
        # classes: the first `ways` of a random permutation of (class, rotation) pairs, per task
        pick = torch.rand(b, self.num_classes, generator=generator, device=draw).argsort(dim=1)[:, :w]
        n_rot = len(self._rotations)
        # examples: the first shots+queries of a random order of that class's examples
        keys = torch.rand(b, w, self._table.shape[1], generator=generator, device=draw)
        keys[torch.arange(self._table.shape[1], device=draw) >= counts[pick // n_rot][..., None]] = float("inf")
        slot = keys.argsort(dim=2)[..., : k + q]
        pick, slot = pick.to(self.device), slot.to(self.device)
        cls, rot = pick // n_rot, self._rotations[pick % n_rot]
        row = self._table[cls[..., None], slot]  # (b, w, k+q): rows of self._x
        x = self._x[row].float()  # (b, w, k+q, C, H, W)
        if not getattr(self, "_sync_free", False):
            for r in (1, 2, 3):
                mask = rot == r
                if mask.any():
                    x[mask] = torch.rot90(x[mask], r, dims=(-2, -1))
        else:  # no host synchronisation: every rotation computed, each episode class takes its own
            for r in (1, 2, 3):
                if bool((host._rotations == r).any()):
                    x = torch.where((rot == r)[..., None, None, None, None], torch.rot90(x, r, dims=(-2, -1)), x)
        y = torch.arange(w, device=self.device).view(1, w, 1).expand(b, w, k + q)
        shape = x.shape[3:]
        examples = getattr(self, "_examples", None)
        return TaskBatch(
            x[:, :, :k].reshape(b, w * k, *shape), y[:, :, :k].reshape(b, w * k),
            x[:, :, k:].reshape(b, w * q, *shape), y[:, :, k:].reshape(b, w * q),
            {"classes": self._classes[cls], "rotations": rot, "class_index": pick,
             "example_index": row if examples is None else examples[row]},
        )


def split_classes(classes: np.ndarray, fractions: dict[str, int], seed: int) -> dict[str, np.ndarray]:
    """Partition ``classes`` into named disjoint splits of given sizes after a seeded shuffle."""
    perm = np.random.default_rng(seed).permutation(np.sort(classes))
    out, start = {}, 0
    for name, size in fractions.items():
        out[name] = perm[start:start + size]
        start += size
    return out


def omniglot_splits(dataset: ArrayDataset, scheme: str = "vinyals", val_classes: int = 100,
                    seed: int = 1) -> dict[str, np.ndarray]:
    """Character-level splits of Omniglot.

    - ``"vinyals"`` (used by MAML and ProtoNet): after a seeded shuffle of all 1623 characters,
      1200 are for meta-training, of which ``val_classes`` are carved out for validation, and
      the remaining 423 for testing. Pair it with rotations as new classes.
    - ``"lake"``: Lake et al.'s background alphabets (964 characters) for training, minus
      ``val_classes`` for validation, and the evaluation alphabets (659) for testing.
    """
    chars = np.unique(dataset.y)
    if scheme == "vinyals":
        if len(chars) != 1623:
            raise ConfigError(f"The Vinyals split needs all 1623 Omniglot characters. Got {len(chars)}.")
        return split_classes(chars, {"train": 1200 - val_classes, "val": val_classes, "test": 423}, seed)
    if scheme == "lake":
        bg = np.unique(dataset.y[dataset.meta["background"]])
        ev = np.unique(dataset.y[~dataset.meta["background"]])
        parts = split_classes(bg, {"train": len(bg) - val_classes, "val": val_classes}, seed)
        return {**parts, "test": ev}
    raise ConfigError(f"Unknown Omniglot split scheme {scheme!r}; use 'vinyals' or 'lake'.")
