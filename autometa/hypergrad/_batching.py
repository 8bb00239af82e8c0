"""Running one per-task function over a meta-batch: a loop, threads, or ``torch.func.vmap``.

Which is faster depends on the device and the model, so it was measured
(``benchmarks/batching.py`` and ``benchmarks/maml_peers.py``, numbers in
``benchmarks/RESULTS.md``). On a 2-core CPU, for second-order MAML:

- Conv4 on Omniglot 5-way 1-shot: ``"threads"`` (tasks split over ``torch.get_num_threads()``
  Python threads with one intra-op thread each) took 1.12x less CPU time per meta-step than the
  loop, and 1.31x less than a plain PyTorch loop; ``vmap`` took 3.1x *more* (batched
  convolutions become grouped convolutions whose double backward is slow);
- the sinusoid MLP (40-40): ``vmap`` took 9.8x less CPU time than the loop (15x less wall
  time): per-task work is too small to amortise Python overhead.

On a GPU vmap fills the device better (not measured here: no GPU was available).

``"auto"`` never picks ``vmap`` for a network that it may not run correctly (see
:func:`vmap_hazard`): torch's own batch-norm layers, whose second-order gradient under ``vmap``
is wrong in torch 2.13 (MAML's meta-gradient of a Linear-BatchNorm1d-ReLU network was off by
3e-3 relative to the loop and to a float64 reference, in float64; first-order gradients agree;
autometa's :class:`~autometa.nets.BatchNorm2d` avoids the fused kernel under vmap), and buffers
of unknown kind, which a forward pass may write in place (``vmap`` cannot run that).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable

import torch
from torch import Tensor, nn

from autometa.errors import ConfigError, UnsupportedFeatureError

BATCHING_MODES = ("auto", "loop", "vmap", "threads")

_logger = logging.getLogger(__name__)
_NOTED: weakref.WeakSet = weakref.WeakSet()  # models whose fallback from vmap was already noted


def default_batching(model: nn.Module, device: torch.device | str) -> str:
    """The measured-faster mode for ``model`` on ``device`` that runs ``model`` correctly.

    Convolutional networks on a CPU: ``"threads"`` when torch may use more than one thread,
    else ``"loop"`` (the same computation); other networks, and any network on a GPU: ``"vmap"``,
    unless :func:`vmap_hazard` finds a reason not to: then the loop (``"threads"`` for a
    convolutional network on a CPU), noted once per network at INFO level.
    """
    has_conv = any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())
    cpu = torch.device(device).type == "cpu"
    hazard = vmap_hazard(model)
    if hazard:
        if model not in _NOTED:
            _NOTED.add(model)
            _logger.info("batching='auto' runs the tasks for %s in a loop, not with vmap: it %s",
                         type(model).__name__, hazard)
        return "threads" if has_conv and cpu and torch.get_num_threads() > 1 else "loop"
    if not cpu or not has_conv:
        return "vmap"
    return "threads" if torch.get_num_threads() > 1 else "loop"


def vmap_hazard(model: nn.Module) -> str | None:
    """Why ``vmap`` over tasks may not run ``model`` correctly, or None.

    - torch's batch / instance norm layers: their second-order gradient under ``vmap`` is wrong
      (see the module docstring);
    - buffers (other than those norm layers' running statistics): a forward pass may write them
      in place, which ``vmap`` refuses.
    """
    if any(isinstance(m, nn.modules.batchnorm._NormBase) for m in model.modules()):
        return "holds torch batch-norm layers, whose second-order gradient under vmap is wrong in torch"
    if any(True for _ in model.buffers()):
        return "holds buffers, which its forward pass may write in place (vmap cannot)"
    return None


def batched(task_fn: Callable[..., tuple[Tensor, dict[str, Tensor]]], shared, tasks: tuple[Tensor, ...],
            mode: str, backward: bool) -> tuple[Tensor, dict[str, Tensor]]:
    """Evaluate ``task_fn(shared, *task_tensors)`` for each task of a meta-batch.

    Args:
        task_fn: per-task function returning ``(loss, metrics)``, both made of tensors.
        shared: the argument common to every task (e.g. the meta-parameters).
        tasks: tensors whose first dimension indexes the tasks.
        mode: ``"loop"``, ``"threads"`` (the loop split over threads, see :func:`_threaded`)
            or ``"vmap"``.
        backward: if True, backpropagate the mean loss into ``shared``'s leaves; the loop
            does it one task at a time so that only one task's graph is alive at once (one
            per thread with ``"threads"``).

    Returns:
        The per-task losses ``(B,)`` and metrics ``{name: (B,)}``, detached when ``backward``.
    """
    if mode not in ("loop", "vmap", "threads"):
        raise ConfigError(f"batching must be one of {BATCHING_MODES}. Got {mode!r}.")
    n = tasks[0].shape[0]
    if mode == "threads":
        return _threaded(task_fn, shared, tasks, backward)
    if mode == "vmap":
        try:
            losses, metrics = torch.func.vmap(task_fn, in_dims=(None,) + (0,) * len(tasks),
                                              randomness="different")(shared, *tasks)
        except RuntimeError as error:
            if "inplace" not in str(error).replace("-", ""):  # torch: "in-place operation ... captured"
                raise
            raise UnsupportedFeatureError(
                "batching='vmap' cannot run this network: its forward pass writes a tensor in place "
                f"(torch: {str(error).splitlines()[0][:160]}). Use batching='loop'.") from error
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


def _threaded(task_fn, shared, tasks, backward: bool, workers: int | None = None):
    """The loop, split over ``workers`` Python threads that each run one intra-op thread.

    Task ``i`` goes to thread ``i % workers``; autograd releases the GIL inside operators, so
    the threads run tasks concurrently. Each thread sums its tasks' gradients in task order
    with ``torch.autograd.grad`` (no shared ``.grad`` is touched concurrently) and the
    per-thread sums are added in thread order: the result is deterministic for a given
    ``workers`` and equals the loop's up to float rounding.
    """
    n = tasks[0].shape[0]
    workers = min(workers or torch.get_num_threads(), n)
    leaves = {k: v for k, v in _leaves(shared).items() if v.requires_grad} if backward else {}
    grad_enabled = torch.is_grad_enabled()
    outputs: list = [None] * n
    sums: list[dict[str, Tensor]] = [{} for _ in range(workers)]
    errors: list[BaseException] = []

    def run(worker: int) -> None:
        torch.set_num_threads(1)
        try:
            with torch.set_grad_enabled(grad_enabled):
                for i in range(worker, n, workers):
                    loss, task_metrics = task_fn(shared, *(t[i] for t in tasks))
                    if backward:
                        names = list(leaves)
                        grads = torch.autograd.grad(loss / n, [leaves[k] for k in names], allow_unused=True)
                        for k, g in zip(names, grads):
                            if g is not None:
                                sums[worker][k] = sums[worker][k] + g if k in sums[worker] else g
                        loss = loss.detach()
                        task_metrics = {k: v.detach() for k, v in task_metrics.items()}
                    outputs[i] = (loss, task_metrics)
        except BaseException as error:  # re-raised in the calling thread
            errors.append(error)

    intra_op = torch.get_num_threads()
    threads = [threading.Thread(target=run, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    torch.set_num_threads(intra_op)
    if errors:
        raise errors[0]
    for k, leaf in leaves.items():
        total = None
        for part in sums:
            if k in part:
                total = part[k] if total is None else total + part[k]
        if total is not None:
            leaf.grad = total if leaf.grad is None else leaf.grad + total
    losses = torch.stack([o[0] for o in outputs])
    return losses, {k: torch.stack([o[1][k] for o in outputs]) for k in outputs[0][1]}


def _leaves(shared) -> dict[str, Tensor]:
    if isinstance(shared, Tensor):
        return {"": shared}
    if isinstance(shared, dict):
        return {k: v for k, v in shared.items() if isinstance(v, Tensor)}
    return {str(i): v for i, v in enumerate(shared) if isinstance(v, Tensor)}
