"""Meta-training data-parallel over the tasks of a meta-batch, with ``torch.distributed``.

Every process samples the same meta-batch (the same seed, the same generator), takes its own
contiguous share of the tasks (:func:`task_share`), accumulates the meta-gradient of those
tasks, and one all-reduce sums the shares weighted by their task counts: the result is the
single-process meta-gradient of the whole meta-batch, up to the order of float additions.
Nothing but gradients and metrics crosses processes, so the tasks need no sharding of the data.

Launch ``autometa run`` under ``torchrun --nproc-per-node N`` with ``run.distributed=true``:
the processes join the group that ``torchrun`` describes in the environment (NCCL on CUDA, one
GPU per process by ``LOCAL_RANK``; gloo on CPUs), only rank 0 writes the results directory, and
every rank evaluates the same test tasks (the same numbers). ``meta_batch`` must be at least the
number of processes.
"""

from __future__ import annotations

import os

import torch

from autometa.errors import ConfigError
from autometa.learners import Learner
from autometa.tasks import TaskBatch


def process_rank() -> int:
    """This process's rank: from an initialised process group, else ``RANK`` (set by torchrun), else 0."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", 0))


def init_distributed(device: str) -> tuple[int, int, str]:
    """Join the process group ``torchrun`` describes (if not joined yet); ``(rank, world, device)``.

    On CUDA each process takes GPU ``LOCAL_RANK`` and the NCCL backend; elsewhere gloo.

    Raises:
        ConfigError: not launched by torchrun (no ``WORLD_SIZE`` / ``MASTER_ADDR`` in the environment).
    """
    import torch.distributed as dist

    if not dist.is_initialized():
        missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise ConfigError(f"run.distributed=true needs the process group of a torchrun launch, but {missing} "
                              f"are not set. Launch with `torchrun --nproc-per-node 2 -m autometa.cli run CONFIG "
                              f"--set run.distributed=true`, or set run.distributed=false.")
        cuda = torch.device(device).type == "cuda"
        dist.init_process_group("nccl" if cuda else "gloo")
    if torch.device(device).type == "cuda" and torch.device(device).index is None:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        torch.cuda.set_device(device)
    return dist.get_rank(), dist.get_world_size(), device


def task_share(tasks: int, rank: int, world: int) -> slice:
    """The contiguous tasks of ``rank`` among ``world`` processes (the first ``tasks % world`` get one more)."""
    base, extra = divmod(tasks, world)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


def distributed_meta_backward(learner: Learner, batch: TaskBatch, group=None) -> dict[str, float]:
    """:meth:`Learner.meta_backward` of ``batch`` split over the processes of ``group``.

    Every process passes the same ``batch``; each runs its :func:`task_share`, and the gradients
    (added to whatever ``.grad`` held before, as ``meta_backward`` does) and the mean metrics
    end up equal on every process and equal to one process running the whole batch.

    Raises:
        ConfigError: fewer tasks than processes.
    """
    import torch.distributed as dist

    rank, world = dist.get_rank(group), dist.get_world_size(group)
    n = len(batch)
    if n < world:
        raise ConfigError(f"Data-parallel meta-training gives every process at least one task, but the meta-batch "
                          f"has {n} tasks for {world} processes; raise outer.meta_batch to >= {world}.")
    share = task_share(n, rank, world)
    local = share.stop - share.start
    params = [p for p in learner.parameters() if p.requires_grad]
    before = [p.grad for p in params]
    for p in params:
        p.grad = None
    metrics = learner.meta_backward(batch[share])  # the mean over this share's tasks
    names = sorted(metrics)
    device = params[0].device if params else batch.support_x.device
    stats = torch.tensor([metrics[k] for k in names], dtype=torch.float64, device=device) * local
    dist.all_reduce(stats, group=group)
    if params:
        # weighted by the share's tasks, so that the sum is the mean over the whole meta-batch; the
        # trailing entries say which parameters got a gradient on some process
        flat = torch.cat([(torch.zeros_like(p) if p.grad is None else p.grad * (local / n)).reshape(-1)
                          for p in params]
                         + [torch.tensor([float(p.grad is not None) for p in params], dtype=params[0].dtype,
                                         device=device)])
        dist.all_reduce(flat, group=group)
        offset, present = 0, flat[-len(params):].tolist()
        for p, prior, had in zip(params, before, present):
            grad = flat[offset: offset + p.numel()].view_as(p).clone() if had > 0 else None
            offset += p.numel()
            p.grad = prior if grad is None else (grad if prior is None else prior + grad)
    return {k: float(v) / n for k, v in zip(names, stats.tolist())}
