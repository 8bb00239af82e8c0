"""The data slot's base class: a filler whose ω is (a selection of) the training set itself."""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor

from autometa.errors import ConfigError, UnsupportedFeatureError
from autometa.slots._base import Filler


def check_int(owner: str, key: str, value, low: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(f"The `{key}` of {owner} must be an integer >= {low}. Got {value!r}.")


def check_positive(owner: str, key: str, value) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        raise ConfigError(f"The `{key}` of {owner} must be a number > 0. Got {value!r}.")


def check_training_set(x: Tensor, y: Tensor, ipc: int, owner: str) -> int:
    """The number of classes of a training set ``(x (n, c, h, w) float, y (n,) int)`` with at least ``ipc``
    images in every class 0..classes-1; clear errors otherwise."""
    if not isinstance(x, Tensor) or not isinstance(y, Tensor) or x.ndim != 4 or y.ndim != 1 or len(x) != len(y):
        raise ConfigError(f"{owner}.fit needs images x (n, channels, height, width) and labels y (n,) as tensors. "
                          f"Got x {getattr(x, 'shape', type(x))} and y {getattr(y, 'shape', type(y))}.")
    if not x.is_floating_point() or y.dtype not in (torch.int64, torch.int32):
        raise ConfigError(f"{owner}.fit needs float images and integer labels. Got {x.dtype} and {y.dtype}.")
    classes = int(y.max()) + 1
    counts = torch.bincount(y.long(), minlength=classes)
    if int(counts.min()) < ipc:
        raise ConfigError(f"{owner} keeps ipc={ipc} images per class but class {int(counts.argmin())} has "
                          f"{int(counts.min())} training images; use a smaller ipc.")
    return classes


class DataFiller(Filler, abc.ABC):
    """Base class of the data slot: ``support(meta) -> (x, y)``, the (synthetic or selected) training set.

    :meth:`fit` builds the set from a real training set: a coreset filler selects ``ipc`` real images
    per class (they are buffers: no ω), a distillation filler learns ``ipc`` synthetic images per
    class (the parameter ``images``, and for DD and MTT learned step sizes ``lrs``: its ω). Labels are
    fixed, ``ipc`` per class in class order. ``fit`` is deterministic for the filler's ``seed``.

    The set is stored in the filler's ``state_dict`` (shapes are set by ``fit`` or by loading a
    state), so a fitted filler saves and reloads with ``torch.save``/``torch.load(weights_only=True)``.
    """

    slot: ClassVar[str] = "data"
    #: whether the images are learned (a parameter) rather than selected (a buffer)
    learned: ClassVar[bool] = False

    def __init__(self, ipc: int = 1, seed: int = 0):
        super().__init__()
        check_int(type(self).__name__, "ipc", ipc)
        check_int(type(self).__name__, "seed", seed, low=0)
        self.ipc, self.seed = ipc, seed
        if self.learned:
            self.images = torch.nn.Parameter(torch.empty(0))
        else:
            self.register_buffer("images", torch.empty(0))
        self.register_buffer("labels", torch.empty(0, dtype=torch.int64))
        #: CPU seconds and per-iteration records of the last fit
        self.history: list[dict] = []

    @property
    def fitted(self) -> bool:
        return self.labels.numel() > 0

    @abc.abstractmethod
    def fit(self, x: Tensor, y: Tensor, log: Callable[[str], None] | None = None) -> DataFiller:
        """Build the support set from the real training set ``(x, y)``; returns ``self``."""

    def support(self, meta: dict[str, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """The support set ``(images (classes * ipc, c, h, w), labels (classes * ipc,))``; with ``meta`` the
        images are ``meta["images"]`` (so a hypergradient reaches them)."""
        if not self.fitted:
            raise UnsupportedFeatureError(f"{type(self).__name__} has no support set yet: call fit(x, y) on a real "
                                          f"training set first, or load a fitted state_dict.")
        images = self.resolve(meta).get("images", self.images) if self.learned else self.images
        return images, self.labels

    def step_sizes(self, meta: dict[str, Tensor] | None = None) -> Tensor | None:
        """The learned inner step sizes (DD, MTT), or None when training on the set uses a fixed rate."""
        return None

    def _set(self, images: Tensor, labels: Tensor) -> None:
        if self.learned:
            self.images = torch.nn.Parameter(images.detach().clone())
        else:
            self.images = images.detach().clone()
        self.labels = labels.detach().clone().long().to(images.device)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # a fresh filler holds empty tensors: take the saved shapes (and dtypes) before loading the values
        for name, tensor in [*self._parameters.items(), *self._buffers.items()]:
            key = prefix + name
            if key in state_dict and tensor is not None and (tensor.shape != state_dict[key].shape
                                                             or tensor.dtype != state_dict[key].dtype):
                fresh = torch.empty_like(state_dict[key], dtype=state_dict[key].dtype)
                if name in self._parameters:
                    self._parameters[name] = torch.nn.Parameter(fresh, requires_grad=tensor.requires_grad)
                else:
                    self._buffers[name] = fresh
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


def per_class_labels(classes: int, ipc: int) -> Tensor:
    """``[0]*ipc + [1]*ipc + ...``: the labels of a support set in class order."""
    return torch.arange(classes).repeat_interleave(ipc)


def real_per_class(x: Tensor, y: Tensor, classes: int, ipc: int, generator: torch.Generator) -> Tensor:
    """``ipc`` random real images of every class, in class order ``(classes * ipc, c, h, w)`` (drawn on the
    CPU, so a generator state picks the same images on every device)."""
    picks, y = [], y.cpu()
    for c in range(classes):
        index = torch.nonzero(y == c).view(-1)
        picks.append(index[torch.randperm(len(index), generator=generator)[:ipc]])
    return x[torch.cat(picks).to(x.device)]
