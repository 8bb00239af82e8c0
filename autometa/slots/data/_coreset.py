"""Coreset fillers of the data slot: ``ipc`` real images per class, selected by a rule (no ω).

- :class:`RandomReal` (``random_real``): uniformly at random per class; the sanity baseline.
- :class:`Herding` (``herding``): greedily, so that the running mean of the selected features follows
  the class mean (Welling 2009; used as a coreset baseline by Rebuffi et al. 2017 and Zhao et al. 2021).
- :class:`KCenter` (``k_center``): greedy k-center in feature space (Sener & Savarese 2018).
- :class:`Forgetting` (``forgetting``): the examples forgotten most often while a network trains on
  the real set (Toneva et al. 2019); never-learned examples count as forgotten infinitely often.

Features (herding, k-center) come from a ConvNet trained for ``feature_epochs`` on ``pool`` random real
images per class (``features="convnet"``), or are the raw pixels (``features="pixels"``).
"""

from __future__ import annotations

import abc
import time
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from autometa.errors import ConfigError
from autometa.slots.data._base import DataFiller, check_int, check_training_set, per_class_labels
from autometa.slots.data._convnet import build_convnet


class RandomReal(DataFiller):
    """``ipc`` real images per class drawn uniformly at random (seeded)."""

    def fit(self, x, y, log=None):
        classes = check_training_set(x, y, self.ipc, type(self).__name__)
        start = time.process_time()
        g = torch.Generator().manual_seed(self.seed)
        y_cpu = y.cpu()
        picks = [_draw(torch.nonzero(y_cpu == c).view(-1), self.ipc, g) for c in range(classes)]
        self._set(x[torch.cat(picks).to(x.device)], per_class_labels(classes, self.ipc))
        self.history = [{"cpu_s": time.process_time() - start}]
        return self


def _draw(index: Tensor, k: int, g: torch.Generator) -> Tensor:
    return index[torch.randperm(len(index), generator=g)[:k]]


def _pool(y: Tensor, classes: int, pool: int, g: torch.Generator) -> Tensor:
    """Up to ``pool`` random indices of every class, concatenated, on the device of ``y`` (drawn on the CPU)."""
    y_cpu = y.cpu()
    return torch.cat([_draw(torch.nonzero(y_cpu == c).view(-1), pool, g) for c in range(classes)]).to(y.device)


def _train_epochs(net, x: Tensor, y: Tensor, epochs: int, g: torch.Generator, lr: float = 0.01,
                  batch_size: int = 256, on_batch=None):
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g)
        for start in range(0, len(x), batch_size):
            index = order[start:start + batch_size].to(x.device)
            logits = net(x[index])
            if on_batch is not None:
                on_batch(index, logits.detach())
            loss = F.cross_entropy(logits, y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return net


class _FeatureCoreset(DataFiller):
    FEATURES: ClassVar[tuple] = ("convnet", "pixels")

    def __init__(self, ipc: int = 1, features: str = "convnet", feature_epochs: int = 2, pool: int = 500,
                 net: dict | None = None, seed: int = 0):
        super().__init__(ipc, seed)
        name = type(self).__name__
        if features not in self.FEATURES:
            raise ConfigError(f"The `features` of {name} must be one of {self.FEATURES}. Got {features!r}.")
        check_int(name, "feature_epochs", feature_epochs)
        check_int(name, "pool", pool)
        self.features, self.feature_epochs, self.pool, self.net = features, feature_epochs, pool, net

    def _features(self, x: Tensor, y: Tensor, classes: int, g: torch.Generator) -> Tensor:
        if self.features == "pixels":
            return x.flatten(1)
        index = _pool(y, classes, self.pool, g)
        net = build_convnet(x.shape[1:], classes, self.net, seed=self.seed, dtype=x.dtype, device=x.device)
        _train_epochs(net, x[index], y[index], self.feature_epochs, g)
        net.eval()
        with torch.no_grad():
            return torch.cat([net.embed(x[i:i + 1000]) for i in range(0, len(x), 1000)])

    def fit(self, x, y, log=None):
        classes = check_training_set(x, y, self.ipc, type(self).__name__)
        start = time.process_time()
        g = torch.Generator().manual_seed(self.seed)
        index = _pool(y, classes, self.pool, g)  # selection among a pool per class, as features are costly
        x_pool, y_pool = x[index], y[index]
        features = self._features(x_pool, y_pool, classes, g)
        picks = []
        for c in range(classes):
            members = torch.nonzero(y_pool == c).view(-1)
            picks.append(members[self._select(features[members], self.ipc).to(members.device)])
        self._set(x_pool[torch.cat(picks)], per_class_labels(classes, self.ipc))
        self.history = [{"cpu_s": time.process_time() - start}]
        return self

    @abc.abstractmethod
    def _select(self, features: Tensor, k: int) -> Tensor:
        """Indices of the ``k`` rows of ``features`` (one class's pool) to keep."""


class Herding(_FeatureCoreset):
    """Herding: pick, one at a time, the image that brings the mean of the picked features closest to the
    class mean. References: Welling, "Herding dynamical weights to learn", ICML 2009."""

    def _select(self, features, k):
        mean = features.mean(0)
        chosen: list[int] = []
        total = torch.zeros_like(mean)
        for t in range(1, k + 1):
            gaps = ((total + features) / t - mean).norm(dim=1)
            if chosen:
                gaps[chosen] = float("inf")
            i = int(gaps.argmin())
            chosen.append(i)
            total = total + features[i]
        return torch.tensor(chosen)


class KCenter(_FeatureCoreset):
    """Greedy k-center: start at the image nearest the class mean, then add the image farthest from the
    picked ones. References: Sener & Savarese, "Active Learning for CNNs: A Core-Set Approach", ICLR 2018."""

    def _select(self, features, k):
        first = int((features - features.mean(0)).norm(dim=1).argmin())
        chosen = [first]
        distance = (features - features[first]).norm(dim=1)
        for _ in range(k - 1):
            i = int(distance.argmax())
            chosen.append(i)
            distance = torch.minimum(distance, (features - features[i]).norm(dim=1))
        return torch.tensor(chosen)


def top_per_class(score: Tensor, labels: Tensor, classes: int, k: int, descending: bool = True) -> Tensor:
    """Positions of the ``k`` highest (``descending=False``: lowest) scores of every class, in class order."""
    return torch.cat([members[score[members].argsort(descending=descending)[:k]]
                      for members in (torch.nonzero(labels == c).view(-1) for c in range(classes))])


class Forgetting(DataFiller):
    """The most often forgotten images per class (a forgetting event: an example classified correctly at
    one visit and wrongly at the next) while a ConvNet trains ``epochs`` on ``pool`` images per class.
    References: Toneva et al., "An Empirical Study of Example Forgetting during Deep Neural Network
    Learning", ICLR 2019."""

    def __init__(self, ipc: int = 1, epochs: int = 3, pool: int = 500, net: dict | None = None, seed: int = 0):
        super().__init__(ipc, seed)
        check_int(type(self).__name__, "epochs", epochs)
        check_int(type(self).__name__, "pool", pool)
        self.epochs, self.pool, self.net = epochs, pool, net

    def fit(self, x, y, log=None):
        classes = check_training_set(x, y, self.ipc, type(self).__name__)
        start = time.process_time()
        g = torch.Generator().manual_seed(self.seed)
        index = _pool(y, classes, self.pool, g)
        x_pool, y_pool = x[index], y[index]
        previous = torch.zeros(len(x_pool), dtype=torch.bool, device=x.device)
        learned = torch.zeros(len(x_pool), dtype=torch.bool, device=x.device)
        events = torch.zeros(len(x_pool), device=x.device)

        def on_batch(batch, logits):
            correct = logits.argmax(1) == y_pool[batch]
            events[batch] += (previous[batch] & ~correct).float()
            previous[batch] = correct
            learned[batch] |= correct

        net = build_convnet(x.shape[1:], classes, self.net, seed=self.seed, dtype=x.dtype, device=x.device)
        _train_epochs(net, x_pool, y_pool, self.epochs, g, on_batch=on_batch)
        score = torch.where(learned, events, torch.full_like(events, float("inf")))
        score = score + 1e-3 * torch.rand(len(score), generator=g).to(score.device)  # ties broken at random (seeded)
        self._set(x_pool[top_per_class(score, y_pool, classes, self.ipc)], per_class_labels(classes, self.ipc))
        # diagnostics: the pool (indices into x) and every pool image's forgetting events and rank score
        self.pool_index, self.forgetting_events, self.forgetting_score = index, events, score
        self.history = [{"cpu_s": time.process_time() - start}]
        return self
