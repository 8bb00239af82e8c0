"""What every learner does before its own ``meta_backward`` / ``evaluate`` code runs.

- The meta-batch is coerced to a :class:`~autometa.tasks.TaskBatch` (a plain tuple
  ``(support_x, support_y, query_x, query_y)`` is accepted) and checked against the learner:
  integer labels of shape ``(tasks, examples)`` for classification, floating-point targets of
  shape ``(tasks, examples, outputs)`` for regression, inputs of the network's dtype. A wrong
  kind of target would otherwise train silently on nonsense (float targets under
  cross-entropy give a zero loss; ``(tasks, examples)`` regression targets broadcast into an
  ``examples x examples`` loss).
- The network's buffers are protected (:func:`autometa.nets.no_buffer_updates`): a user's
  batch norm uses batch statistics in ``train()`` mode and its stored running statistics in
  ``eval()`` mode, and no call changes them. Buffers of the learner itself (outside
  ``learner.model``) are its own state and left alone.

:class:`~autometa.learners.Learner` applies :func:`prepared` to ``meta_backward`` and
``evaluate`` of every subclass, so learners that override them get the same checks.
"""

from __future__ import annotations

import contextlib
import functools

import torch
from torch import Tensor, nn

from autometa.errors import TaskSpecError, UnsupportedFeatureError
from autometa.hypergrad import precision
from autometa.nets import no_buffer_updates
from autometa.tasks import TaskBatch


def check_batch(learner, batch) -> TaskBatch:
    """``batch`` as a :class:`TaskBatch` whose targets and inputs suit ``learner``.

    Raises:
        TaskSpecError: a batch of the wrong structure, targets of the wrong kind or shape for
            ``learner.task``, or inputs of another dtype than the network's parameters.
    """
    owner = type(learner).__name__
    batch = TaskBatch.coerce(batch, owner)
    task = getattr(learner, "task", None)
    for name in ("support_y", "query_y"):
        y: Tensor = getattr(batch, name)
        shape = tuple(y.shape)
        if task == "classification":
            if y.is_floating_point() or y.is_complex():
                raise TaskSpecError(
                    f"{owner} was built for task='classification' and needs integer class labels, but "
                    f"{name} has dtype {y.dtype}. For regression targets pass task='regression' to "
                    f"{owner}(...); for class labels pass integers (y.long()).")
            if y.dim() != 2:
                hint = " Use y.squeeze(-1)." if y.dim() == 3 and y.shape[-1] == 1 else ""
                raise TaskSpecError(f"{owner} (task='classification') needs {name} of shape (tasks, examples). "
                                    f"Got {shape}.{hint}")
        elif task == "regression":
            if not y.is_floating_point():
                raise TaskSpecError(
                    f"{owner} was built for task='regression' and needs floating-point targets, but {name} "
                    f"has dtype {y.dtype}. For class labels pass task='classification' to {owner}(...); for "
                    f"regression targets pass floats (y.float()).")
            if y.dim() != 3:
                raise TaskSpecError(
                    f"{owner} (task='regression') needs {name} of shape (tasks, examples, outputs). Got {shape}. "
                    f"For a batch of tasks with one output use y.unsqueeze(-1); for one task add the leading "
                    f"task dimension to every tensor (unsqueeze(0)).")
    dtypes = {p.dtype for p in learner.parameters() if p.is_floating_point()}
    for name in ("support_x", "query_x"):
        x: Tensor = getattr(batch, name)
        if len(dtypes) == 1 and x.is_floating_point() and x.dtype not in dtypes:
            (dtype,) = dtypes
            raise TaskSpecError(f"{owner}: {name} has dtype {x.dtype} but the network's parameters {dtype}. "
                                f"Convert the inputs (x.to({dtype})) or the network (model.to({x.dtype})).")
    return batch


def check_batching(learner) -> None:
    """Refuse ``batching="vmap"`` where torch would give a wrong second-order meta-gradient.

    Raises:
        UnsupportedFeatureError: a second-order learner (``first_order=False``) with explicit
            ``batching="vmap"`` over a network with torch batch-norm layers in ``train()`` mode
            (see :mod:`autometa.hypergrad._batching`; ``batching="auto"`` picks the loop).
    """
    if getattr(learner, "batching", None) != "vmap" or getattr(learner, "first_order", True):
        return
    norms = [type(m).__name__ for m in learner.modules()
             if isinstance(m, nn.modules.batchnorm._NormBase) and m.training]
    if norms:
        raise UnsupportedFeatureError(
            f"{type(learner).__name__} with batching='vmap' would compute a wrong second-order meta-gradient: "
            f"torch's {norms[0]} has a wrong second-order gradient under vmap (off by about 3e-3 relative, "
            f"measured in float64). Use batching='loop' (or 'auto'), first_order=True, or the network in eval().")


#: below this many parameters, a network without convolutions runs its tasks on one intra-op thread
SMALL_MODEL_PARAMETERS = 100_000


@contextlib.contextmanager
def _small_model_threads(model: nn.Module, batch):
    """One intra-op thread while a small, convolution-free network runs on the CPU.

    Its matrices are too small for torch to split usefully, and a second OpenMP thread only spins:
    the README's sinusoid example took 36 CPU-s per 100 meta-steps with torch's two default threads
    on a busy 2-core machine and 5 CPU-s with one (same wall time on an idle machine). The thread
    count is restored afterwards.
    """
    small = (batch.support_x.device.type == "cpu"
             and not any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())
             and sum(p.numel() for p in model.parameters()) < SMALL_MODEL_PARAMETERS)
    before = torch.get_num_threads()
    if small and before > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if small and before > 1:
            torch.set_num_threads(before)


def prepared(method):
    """Wrap a learner's ``meta_backward`` / ``evaluate``: check the batch, protect the buffers, apply
    the learner's precision policy (``learner.precision_policy``, see :func:`autometa.hypergrad.precision`).

    Calls nested in one another (a subclass calling ``super().meta_backward``) check once.
    """
    if getattr(method, "_autometa_prepared", False):
        return method

    @functools.wraps(method)
    def wrapper(self, batch, *args, **kwargs):
        if self.__dict__.get("_autometa_in_call"):
            return method(self, batch, *args, **kwargs)
        batch = check_batch(self, batch)
        if method.__name__ == "meta_backward":
            check_batching(self)
        self.__dict__["_autometa_in_call"] = True
        try:
            model = getattr(self, "model", self)
            with no_buffer_updates(model), _small_model_threads(model, batch), \
                    precision(getattr(self, "precision_policy", "torch"), batch.support_x.device):
                return method(self, batch, *args, **kwargs)
        finally:
            self.__dict__["_autometa_in_call"] = False

    wrapper._autometa_prepared = True
    return wrapper
