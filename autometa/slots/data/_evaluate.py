"""The one evaluation protocol every arm of the data slot shares (Zhao et al. 2021's ``evaluate_synset``).

A fresh randomly initialised ConvNet-3 (width 128, instance norm, average pooling) is trained on the
support set only: SGD lr 0.01, momentum 0.9, weight decay 5e-4, minibatches of 256, the learning
rate divided by 10 after half of the epochs, optionally with augmentation of every minibatch: DSA
(one draw per image; what the DSA, DM and MTT papers evaluate with) or the DC reference's own
crop/scale/rotate (``augment_mode="dc"``; what Zhao et al. 2021 evaluate MNIST with, for 1000 epochs);
then its accuracy on the real test images is the score. It runs on the device of the support set. Repeated over
evaluation networks (seeds) and synthetic sets, the scores' mean and std are what papers report.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from autometa.errors import ConfigError
from autometa.slots.data._augment import check_dc_strategy, check_strategy, dc_augment, dsa
from autometa.slots.data._convnet import build_convnet


@dataclass(frozen=True)
class EvalProtocol:
    """The evaluation settings (defaults: the published protocol with 300 epochs)."""

    epochs: int = 300
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    augment: str | None = None      # a DSA ("color_crop_cutout_scale_rotate") or DC ("crop_scale_rotate") strategy
    augment_mode: str = "dsa"       # "dsa" (differentiable siamese operations) or "dc" (the DC reference's augment)
    net: tuple = ()                 # ConvNet keyword arguments as (key, value) pairs; () = ConvNet-3 width 128

    def __post_init__(self):
        for key in ("epochs", "batch_size"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"The evaluation's `{key}` must be an integer >= 1. Got {value!r}.")
        if not isinstance(self.lr, (int, float)) or self.lr <= 0:
            raise ConfigError(f"The evaluation's `lr` must be a number > 0. Got {self.lr!r}.")
        if self.augment_mode not in ("dsa", "dc"):
            raise ConfigError(f"The evaluation's `augment_mode` must be 'dsa' or 'dc'. Got {self.augment_mode!r}.")
        if self.augment is not None:
            (check_strategy if self.augment_mode == "dsa" else check_dc_strategy)(self.augment)


def train_on_support(x: Tensor, y: Tensor, classes: int, protocol: EvalProtocol, seed: int):
    """A fresh ConvNet (initialised from ``seed``) trained on ``(x, y)`` under ``protocol``; returns the net."""
    net = build_convnet(x.shape[1:], classes, dict(protocol.net), seed=seed, dtype=x.dtype, device=x.device)
    net.train()
    optimizer = torch.optim.SGD(net.parameters(), lr=protocol.lr, momentum=protocol.momentum,
                                weight_decay=protocol.weight_decay)
    generator = torch.Generator().manual_seed(seed + 1_000_003)
    x, y = x.detach(), y.detach()
    decay_at = protocol.epochs // 2 + 1  # the reference's lr_schedule = [Epoch // 2 + 1]
    for epoch in range(protocol.epochs):
        if epoch == decay_at:
            for group in optimizer.param_groups:
                group["lr"] = protocol.lr * 0.1
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), protocol.batch_size):
            index = order[start:start + protocol.batch_size].to(x.device)
            batch = x[index]
            if protocol.augment is not None:
                seed_aug = int(torch.randint(0, 2 ** 31 - 1, (1,), generator=generator))
                batch = (dsa(batch, protocol.augment, seed=seed_aug, shared=False) if protocol.augment_mode == "dsa"
                         else dc_augment(batch, protocol.augment, seed=seed_aug))
            loss = F.cross_entropy(net(batch), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return net


@torch.no_grad()
def accuracy(net, x: Tensor, y: Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``net`` on ``(x, y)`` (batches moved to the network's device)."""
    net.eval()
    device = next(net.parameters()).device
    correct = sum(int((net(x[i:i + batch_size].to(device)).argmax(1) == y[i:i + batch_size].to(device)).sum())
                  for i in range(0, len(x), batch_size))
    return correct / len(x)


def evaluate_support(x: Tensor, y: Tensor, x_test: Tensor, y_test: Tensor, protocol: EvalProtocol = EvalProtocol(),
                     seeds=(0,), classes: int | None = None) -> dict:
    """Train one fresh network per seed on the support set and test each on ``(x_test, y_test)``.

    Returns ``{"accuracies": [...], "mean", "std", "cpu_s", "wall_s"}`` (std over the networks, ddof=0 as papers do).

    Example::

        result = evaluate_support(x_syn, y_syn, x_test, y_test, EvalProtocol(epochs=300), seeds=range(5))
    """
    if len(x) != len(y) or len(x) == 0:
        raise ConfigError(f"The support set needs as many labels as images (> 0). Got {len(x)} images, "
                          f"{len(y)} labels.")
    classes = int(max(int(y.max()), int(y_test.max())) + 1) if classes is None else classes
    start, wall = time.process_time(), time.perf_counter()
    accuracies = [accuracy(train_on_support(x, y, classes, protocol, int(s)), x_test, y_test) for s in seeds]
    return {"accuracies": accuracies, "mean": float(np.mean(accuracies)), "std": float(np.std(accuracies)),
            "cpu_s": time.process_time() - start, "wall_s": time.perf_counter() - wall}
