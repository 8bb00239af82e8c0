"""The retraining protocol shared by every filler of the architecture slot.

A derived DARTS cell, a random cell, the hand-crafted cells and Conv4 are all trained from scratch
by :func:`train_network` with the same optimiser, schedule, batch size, epochs and data, so that a
difference in test accuracy is a difference of architectures.

Protocol (the DARTS paper's evaluation settings, without its auxiliary head, drop-path and
cutout): SGD with momentum 0.9 and weight decay 3e-4, learning rate 0.025 cosine-annealed to 0
per epoch, gradient norm clipped at 5, batch size 64 (the paper uses 96 on CIFAR-10).

References: Liu, Simonyan & Yang, "DARTS", ICLR 2019, Section 3.2 and Appendix A.2.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autometa.errors import ConfigError, NumericalError


def train_network(filler, x: Tensor, y: Tensor, test_x: Tensor, test_y: Tensor, *, epochs: int = 10,
                  batch_size: int = 64, lr: float = 0.025, momentum: float = 0.9, weight_decay: float = 3e-4,
                  grad_clip: float = 5.0, max_steps: int | None = None, eval_batch: int = 500, seed: int = 0,
                  num_classes: int | None = None, per_example: bool = False,
                  log: Callable[[dict], None] | None = None) -> dict:
    """Train ``filler.derived_network(...)`` from scratch on ``(x, y)``; test it on ``(test_x, test_y)``.

    Args:
        filler: a filler of the architecture slot.
        epochs, batch_size, lr, momentum, weight_decay, grad_clip: the shared protocol.
        max_steps: stop after this many steps in all (a budget; ``None``: ``epochs`` full epochs).
        seed: the weights' initialisation and the batch order.
        per_example: also return ``correct`` and ``losses``, one value per test image (for CIs).

    Returns:
        ``{"test_accuracy", "test_loss", "train_loss" (last epoch's mean), "steps", "cpu_s",
        "parameters"}`` (floats and ints).

    Raises:
        ConfigError: inputs of the wrong shape or an empty budget. NumericalError: a NaN loss.
    """
    if x.dim() != 4 or len(x) != len(y) or test_x.dim() != 4 or len(test_x) != len(test_y):
        raise ConfigError(f"train_network needs images (N, C, H, W) with one label each. Got {tuple(x.shape)} / "
                          f"{tuple(y.shape)} and {tuple(test_x.shape)} / {tuple(test_y.shape)}.")
    if epochs < 1 or batch_size < 1 or len(x) < batch_size:
        raise ConfigError(f"train_network needs epochs >= 1 and at least one batch of {batch_size} images. "
                          f"Got epochs={epochs} and {len(x)} images.")
    num_classes = int(max(y.max(), test_y.max())) + 1 if num_classes is None else num_classes
    network = filler.derived_network(tuple(x.shape[1:]), num_classes, seed=seed).to(x.dtype)
    optimizer = torch.optim.SGD(network.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed + 1)
    per_epoch = len(x) // batch_size
    total = epochs * per_epoch if max_steps is None else min(max_steps, epochs * per_epoch)
    start, steps, train_loss = time.process_time(), 0, float("nan")
    network.train()
    for epoch in range(epochs):
        if steps >= total:
            break
        for group in optimizer.param_groups:
            group["lr"] = lr * (1 + math.cos(math.pi * epoch / epochs)) / 2
        order = torch.randperm(len(x), generator=generator)
        sums, count = 0.0, 0
        for i in range(per_epoch):
            if steps >= total:
                break
            idx = order[i * batch_size:(i + 1) * batch_size]
            loss = F.cross_entropy(network(x[idx]), y[idx])
            if not torch.isfinite(loss):
                raise NumericalError(f"Retraining diverged at epoch {epoch}, step {i} (loss {loss.item()}); "
                                     f"lower `lr`.")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip:
                nn.utils.clip_grad_norm_(network.parameters(), grad_clip)
            optimizer.step()
            sums, count, steps = sums + loss.item(), count + 1, steps + 1
        train_loss = sums / max(count, 1)
        if log is not None:
            log({"epoch": epoch, "train_loss": train_loss, "steps": steps})
    test = evaluate_network(network, test_x, test_y, eval_batch, per_example)
    return {**test, "train_loss": train_loss, "steps": steps, "cpu_s": time.process_time() - start,
            "parameters": sum(p.numel() for p in network.parameters())}


@torch.no_grad()
def evaluate_network(network: nn.Module, x: Tensor, y: Tensor, batch: int = 500, per_example: bool = False) -> dict:
    """Accuracy and mean cross-entropy of ``network`` on ``(x, y)``, in batches (batch statistics);
    with ``per_example``, also the lists ``correct`` (0/1) and ``losses``, one entry per image."""
    correct, losses = [], []
    for i in range(0, len(x), batch):
        logits = network(x[i:i + batch])
        correct.append((logits.argmax(-1) == y[i:i + batch]).double())
        losses.append(F.cross_entropy(logits, y[i:i + batch], reduction="none").double())
    correct_t, losses_t = torch.cat(correct), torch.cat(losses)
    out = {"test_accuracy": correct_t.mean().item(), "test_loss": losses_t.mean().item()}
    if per_example:
        out.update(correct=correct_t.tolist(), losses=losses_t.tolist())
    return out
