"""Hand-crafted fillers of the loss slot: per-sample losses with meta-parameters passed explicitly."""

from __future__ import annotations

import abc
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from autometa.errors import ConfigError
from autometa.slots._base import Filler


class Loss(Filler, abc.ABC):
    """Base class of the loss slot's fillers.

    Subclasses implement :meth:`loss` (per-sample losses, shape ``(n,)``); :meth:`mean_loss` is
    what learners minimise. ``meta`` holds the filler's meta-parameters (none for a fixed loss).
    """

    slot: ClassVar[str] = "loss"
    #: the task kinds this loss applies to
    KINDS: ClassVar[tuple[str, ...]] = ("classification",)

    @abc.abstractmethod
    def loss(self, outputs: Tensor, targets: Tensor, meta: dict[str, Tensor] | None = None) -> Tensor:
        """Per-sample losses ``(n,)`` of ``outputs`` against ``targets`` with the filler's ω ``meta``."""

    def mean_loss(self, outputs: Tensor, targets: Tensor, meta: dict[str, Tensor] | None = None) -> Tensor:
        """The scalar loss a learner minimises: the mean of :meth:`loss`."""
        return self.loss(outputs, targets, meta).mean()

    def check_kind(self, kind: str) -> None:
        """Raise :class:`ConfigError` if this loss does not apply to ``kind`` tasks."""
        if kind not in self.KINDS:
            example = "mse" if kind == "regression" else "cross_entropy"
            raise ConfigError(f"The {type(self).__name__} loss applies to {' or '.join(self.KINDS)} tasks, "
                              f"not {kind}. Choose a loss for {kind} (e.g. {example}).")


class CrossEntropy(Loss):
    """Cross-entropy of logits against class indices (``torch.nn.functional.cross_entropy``)."""

    def loss(self, outputs, targets, meta=None):
        return F.cross_entropy(outputs, targets, reduction="none")

    def mean_loss(self, outputs, targets, meta=None):
        return F.cross_entropy(outputs, targets)  # the fused mean: the exact numbers of wave 1


class MSE(Loss):
    """Squared error, averaged over output dimensions (``torch.nn.functional.mse_loss``)."""

    KINDS = ("regression",)

    def loss(self, outputs, targets, meta=None):
        return ((outputs - targets) ** 2).reshape(len(outputs), -1).mean(-1)

    def mean_loss(self, outputs, targets, meta=None):
        return F.mse_loss(outputs, targets)


class LabelSmoothing(Loss):
    """Cross-entropy against targets smoothed toward the uniform distribution.

    Args:
        smoothing: the probability mass spread uniformly over all classes (0: cross-entropy).

    References: Szegedy et al. 2016, "Rethinking the Inception Architecture for Computer Vision".
    """

    SPACE: ClassVar[dict] = {"smoothing": {"float": [0.0, 0.3]}}

    def __init__(self, smoothing: float = 0.1):
        super().__init__()
        if not isinstance(smoothing, (int, float)) or isinstance(smoothing, bool) or not 0 <= smoothing < 1:
            raise ConfigError(f"The `smoothing` of LabelSmoothing must be a float in [0, 1). Got {smoothing!r}.")
        self.smoothing = float(smoothing)

    def loss(self, outputs, targets, meta=None):
        return F.cross_entropy(outputs, targets, reduction="none", label_smoothing=self.smoothing)


class FocalLoss(Loss):
    """``-(1 - p_y)^gamma log p_y``: down-weights examples that are already classified well.

    Args:
        gamma: the focusing exponent (0: cross-entropy; 2 in the paper).

    References: Lin et al. 2017, "Focal Loss for Dense Object Detection".
    """

    SPACE: ClassVar[dict] = {"gamma": {"float": [0.0, 5.0]}}

    def __init__(self, gamma: float = 2.0):
        super().__init__()
        if not isinstance(gamma, (int, float)) or isinstance(gamma, bool) or gamma < 0:
            raise ConfigError(f"The `gamma` of FocalLoss must be a float >= 0. Got {gamma!r}.")
        self.gamma = float(gamma)

    def loss(self, outputs, targets, meta=None):
        log_p = torch.log_softmax(outputs, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        return -((1 - log_p.exp()) ** self.gamma) * log_p


class CallableLoss(Loss):
    """A user's own loss function ``fn(outputs, targets) -> scalar`` (or per-sample losses) as a filler.

    Example::

        MAML(net, loss=lambda out, y: torch.nn.functional.huber_loss(out, y), task="regression")
    """

    KINDS = ("classification", "regression")

    def __init__(self, fn):
        super().__init__()
        if not callable(fn):
            raise ConfigError(f"A loss must be a loss filler, a filler name or a callable fn(outputs, targets). "
                              f"Got {fn!r}.")
        self.fn = fn

    def loss(self, outputs, targets, meta=None):
        value = self.fn(outputs, targets)
        return value.expand(len(outputs)) if value.dim() == 0 else value

    def mean_loss(self, outputs, targets, meta=None):
        return self.fn(outputs, targets).mean()

    def config(self) -> dict:
        return {"name": "callable", "fn": getattr(self.fn, "__name__", repr(self.fn))}
