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

Memory. ``vmap`` keeps every task's graph alive at once: on an H200, second-order MAML of Conv4
at meta-batch 32 held 3.2 GiB (5-way) and 13 GiB (20-way) against 76-258 MiB for a loop (issue
15). So ``vmap`` runs the tasks in chunks whose size comes from a memory budget (:class:`ChunkPlan`):
the first task is run alone as a probe of one task's peak memory, the chunk size is the budget
divided by that peak, and the gradients of the chunks accumulate in ``.grad`` (the sum of the
chunks' ``sum(losses) / n`` is the mean over the meta-batch, so chunked equals unchunked up to
float rounding). The default budget is a quarter of the device's free memory (CUDA: what the
driver reports free plus what torch's allocator holds unused; CPU: a quarter of ``MemAvailable``).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass

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

    ``"vmap"`` on a GPU is the measured choice (H200, second-order MAML of Conv4 at meta-batch
    32: 12x the loop's tasks/s at 5-way, 4.7x at 20-way, 13x at 5 inner steps; issue 15) and
    never an unbounded one: :func:`batched` runs it in chunks that fit the learner's memory
    budget (a quarter of free device memory by default), so its memory is that of the loop
    times the chunk size, not of the whole meta-batch.
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
            mode: str, backward: bool, plan: ChunkPlan | None = None) -> tuple[Tensor, dict[str, Tensor]]:
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
        plan: for ``"vmap"``, the memory budget that bounds how many tasks run at once (see
            :class:`ChunkPlan`); None runs the whole meta-batch in one ``vmap``.

    Returns:
        The per-task losses ``(B,)`` and metrics ``{name: (B,)}``, detached when ``backward``.
    """
    if mode not in ("loop", "vmap", "threads"):
        raise ConfigError(f"batching must be one of {BATCHING_MODES}. Got {mode!r}.")
    n = tasks[0].shape[0]
    if mode == "threads":
        return _threaded(task_fn, shared, tasks, backward)
    if mode == "vmap":
        if plan is None:
            return _vmapped(task_fn, shared, tasks, backward, n)
        if plan.task_bytes is None:
            _probe(task_fn, shared, tasks, backward, plan)
        chunk, parts = plan.chunk_size(n), []
        plan.chunks = [min(chunk, n - i) for i in range(0, n, chunk)]
        for i in range(0, n, chunk):
            parts.append(_vmapped(task_fn, shared, tuple(t[i:i + chunk] for t in tasks), backward, n))
        losses = torch.cat([p[0] for p in parts])
        return losses, {k: torch.cat([p[1][k] for p in parts]) for k in parts[0][1]}
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


def _vmapped(task_fn, shared, tasks: tuple[Tensor, ...], backward: bool, total: int):
    """``vmap`` of ``task_fn`` over ``tasks``; with ``backward``, backpropagate ``sum(losses) / total``
    (``total``: the tasks of the whole meta-batch, so that the chunks' gradients add up to the mean's)."""
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
        (losses.sum() / total).backward()
        losses, metrics = losses.detach(), {k: v.detach() for k, v in metrics.items()}
    return losses, metrics


@dataclass
class ChunkPlan:
    """How many tasks ``vmap`` may run at once: a memory budget and one task's measured peak.

    Args:
        budget: bytes that one ``vmap`` call may hold (see :func:`memory_budget`).
        task_bytes: one task's peak memory, measured by the first :func:`batched` call that uses
            this plan (None until then; see :func:`_probe`).

    ``chunks`` records the task counts of the last call (the probe's single task included).
    """

    budget: int
    task_bytes: int | None = None
    chunks: tuple[int, ...] | list[int] = ()

    def chunk_size(self, n: int) -> int:
        """The most tasks whose peaks fit the budget together, between 1 and ``n``."""
        if not self.task_bytes:
            return n
        fits = self.budget // self.task_bytes
        if fits < 1 and not getattr(self, "_warned", False):
            self._warned = True
            _logger.warning("one task needs %.0f MiB but the memory budget is %.0f MiB: running the tasks one "
                            "at a time (raise memory_budget, or use a smaller meta-batch or network)",
                            self.task_bytes / 2**20, self.budget / 2**20)
        return int(min(max(fits, 1), n))


def check_memory_budget(budget, owner: str = "memory_budget") -> None:
    """Raise a :class:`ConfigError` unless ``budget`` is None, a fraction in (0, 1] or a byte count > 1."""
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float))
                               or not math.isfinite(budget) or budget <= 0):
        raise ConfigError(f"The {owner} must be a fraction in (0, 1] of free memory or a number of bytes > 1 "
                          f"(e.g. 0.25 or 2e9), or null for a quarter of free memory. Got {budget!r}.")


def memory_budget(device: torch.device | str, budget: float | int | None = None) -> int:
    """The bytes a ``vmap`` call may hold on ``device``.

    Args:
        device: where the tasks run.
        budget: None for the default (a quarter of free memory), a fraction in (0, 1] of free
            memory, or a number of bytes (> 1).

    Free memory: on CUDA, what the driver reports free plus what torch's caching allocator
    reserves but does not use; on a CPU, ``MemAvailable`` of ``/proc/meminfo`` (the total
    memory where that file does not exist).

    Raises:
        ConfigError: a budget that is not a positive number.
    """
    check_memory_budget(budget)
    if budget is not None and budget > 1:
        return int(budget)
    return int(free_memory(device) * (0.25 if budget is None else budget))


#: set by the Ray backend in a trial given a fraction of a GPU (``resources: {gpu: 0.25}``)
GPU_SHARE_VARIABLE = "AUTOMETA_GPU_SHARE"


def free_memory(device: torch.device | str) -> int:
    """Bytes free for tensors on ``device`` (see :func:`memory_budget`).

    On CUDA, in a process given a fraction of the GPU (``$AUTOMETA_GPU_SHARE``, set by the Ray backend
    for trials with ``gpu: 0.25``), at most that fraction of the device's memory: the trials sharing
    the GPU start at different times, and the first must not take what the others will need.
    """
    device = torch.device(device)
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return shared_free(int(free), int(total), os.environ.get(GPU_SHARE_VARIABLE))
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def shared_free(free: int, total: int, share: str | float | None) -> int:
    """``free``, capped at ``share`` of ``total`` when a valid fraction in (0, 1) is given."""
    try:
        fraction = float(share) if share is not None else 1.0
    except ValueError:
        fraction = 1.0
    if 0.0 < fraction < 1.0:
        return min(free, int(fraction * total))
    return free


def _probe(task_fn, shared, tasks, backward: bool, plan: ChunkPlan) -> None:
    """Run the first task alone, as a probe, and record its peak memory in ``plan.task_bytes``.

    CUDA: the rise of ``torch.cuda.max_memory_allocated`` while the task runs under ``vmap`` (its
    graph, gradients and the backward's buffers). Other devices have no peak counter: the bytes
    of the tensors its graph saves (counted by saved-tensor hooks while the task runs as the loop
    would run it; a lower bound of its peak, which misses the backward's transient buffers).
    The probe's gradients are discarded (``torch.autograd.grad``, nothing written to ``.grad``),
    so every step, the first included, runs the same chunks: a resumed run gets the numbers of an
    uninterrupted one. It costs one task's work once per plan.
    """
    first = tuple(t[:1] for t in tasks)
    leaves = [v for v in _leaves(shared).values() if v.requires_grad] if backward else []

    def discard(loss: Tensor) -> None:
        if leaves and loss.requires_grad:
            torch.autograd.grad(loss.sum(), leaves, allow_unused=True)

    device = tasks[0].device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        losses, _ = torch.func.vmap(task_fn, in_dims=(None,) + (0,) * len(first), randomness="different")(
            shared, *first)
        discard(losses)
        torch.cuda.synchronize(device)
        plan.task_bytes = max(int(torch.cuda.max_memory_allocated(device) - base), 1)
        return
    storages: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        try:
            storage = t.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
        except (RuntimeError, NotImplementedError):  # tensors without a storage (e.g. functorch wrappers)
            pass
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss, _ = task_fn(shared, *(t[0] for t in tasks))
    discard(loss)
    plan.task_bytes = max(sum(storages.values()), 1)


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
