"""Running one per-task function over a meta-batch: a Python loop or ``torch.func.vmap``.

Which is faster depends on the device and the model, so it was measured
(``benchmarks/batching.py``, numbers in ``benchmarks/RESULTS.md``): on a CPU the loop wins for
convolutional networks (vmap turns them into grouped convolutions whose double backward is
slow) while vmap wins for small MLPs, whose per-task work is too small to amortise
Python overhead; on a GPU vmap fills the device better.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from autometa.errors import ConfigError

BATCHING_MODES = ("auto", "loop", "vmap")


def default_batching(model: nn.Module, device: torch.device | str) -> str:
    """The measured-faster mode for ``model`` on ``device`` (see module docstring)."""
    if torch.device(device).type != "cpu":
        return "vmap"
    has_conv = any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())
    return "loop" if has_conv else "vmap"


def batched(task_fn: Callable[..., tuple[Tensor, dict[str, Tensor]]], shared, tasks: tuple[Tensor, ...],
            mode: str, backward: bool) -> tuple[Tensor, dict[str, Tensor]]:
    """Evaluate ``task_fn(shared, *task_tensors)`` for each task of a meta-batch.

    Args:
        task_fn: per-task function returning ``(loss, metrics)``, both made of tensors.
        shared: the argument common to every task (e.g. the meta-parameters).
        tasks: tensors whose first dimension indexes the tasks.
        mode: ``"loop"`` or ``"vmap"``.
        backward: if True, backpropagate the mean loss into ``shared``'s leaves; the loop
            does it one task at a time so that only one task's graph is alive at once.

    Returns:
        The per-task losses ``(B,)`` and metrics ``{name: (B,)}``, detached when ``backward``.
    """
    if mode not in ("loop", "vmap"):
        raise ConfigError(f"batching must be one of {BATCHING_MODES}. Got {mode!r}.")
    n = tasks[0].shape[0]
    if mode == "vmap":
        losses, metrics = torch.func.vmap(task_fn, in_dims=(None,) + (0,) * len(tasks),
                                          randomness="different")(shared, *tasks)
        if backward:
            losses.mean().backward()
            losses, metrics = losses.detach(), {k: v.detach() for k, v in metrics.items()}
        return losses, metrics
    losses, metrics = [], {}
    for i in range(n):
        loss, task_metrics = task_fn(shared, *(t[i] for t in tasks))
        if backward:
            (loss / n).backward()
            loss = loss.detach()
            task_metrics = {k: v.detach() for k, v in task_metrics.items()}
        losses.append(loss)
        for k, v in task_metrics.items():
            metrics.setdefault(k, []).append(v)
    return torch.stack(losses), {k: torch.stack(v) for k, v in metrics.items()}
