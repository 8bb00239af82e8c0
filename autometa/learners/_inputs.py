"""What every learner does before its own ``meta_backward`` / ``evaluate`` code runs.

- The meta-batch is coerced to a :class:`~autometa.tasks.TaskBatch` (a plain tuple
  ``(support_x, support_y, query_x, query_y)`` is accepted) and checked against the learner:
  integer labels of shape ``(tasks, examples)`` for classification, floating-point targets of
  shape ``(tasks, examples, outputs)`` for regression, inputs of the network's dtype. A wrong
  kind of target would otherwise train silently on nonsense (float targets under
  cross-entropy give a zero loss; ``(tasks, examples)`` regression targets broadcast into an
  ``examples x examples`` loss).
- A torch shape or dtype error raised by the call is re-raised as one :class:`TaskSpecError`
  when the network itself fails on one task's inputs (integer inputs into a ``Linear`` network,
  a feature dimension other than the first layer's): it names the inputs' shape and dtype, the
  first layer and the fix, with torch's message chained (:func:`explain_model_error`). Integer
  inputs are legitimate for a network that starts with ``nn.Embedding``; the check is against
  the network, run once on one task's support inputs, and only after torch has already failed.
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
import re

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


#: torch's messages for inputs a layer cannot take (matmul shapes or dtypes, conv channels, ...)
_MISMATCH_WORDS = ("shapes cannot be multiplied", "same dtype", "scalar type", "size mismatch", "expected input",
                   "input type", "weight type", "to have", "dtype", "channels", "must match the size", "expected",
                   "index out of range")


def _first_layer(model: nn.Module) -> nn.Module | None:
    """The first module (in definition order) with parameters of its own: a Sequential's first layer."""
    return next((m for m in model.modules() if any(True for _ in m.parameters(recurse=False))), None)


def _fix(layer: nn.Module | None, x: Tensor, torch_says: str) -> str:
    """The likely fix for inputs ``x`` (one task: examples x features...) that ``layer`` cannot take."""
    integer = not (x.is_floating_point() or x.is_complex())
    weight = getattr(layer, "weight", None)
    if isinstance(layer, nn.Embedding):
        return (f"An nn.Embedding takes integer ids below {layer.num_embeddings}; pass x.long() with ids in "
                f"range.")
    if integer and isinstance(weight, Tensor) and weight.is_floating_point():
        return (f"Convert the inputs to the network's dtype (x.to({weight.dtype})), or, for integer token ids, use "
                f"an nn.Embedding as the network's first layer.")
    arrived = re.search(r"shapes cannot be multiplied \(\d+x(\d+) and", torch_says)
    if isinstance(layer, nn.Linear) and arrived and int(arrived.group(1)) != layer.in_features:
        features = int(arrived.group(1))  # what reached the layer (after any flattening)
        return (f"The inputs reach the first layer with {features} features but it takes {layer.in_features}: "
                f"build it as nn.Linear({features}, {layer.out_features}), or give it inputs with that many "
                f"features.")
    if isinstance(layer, nn.modules.conv._ConvNd) and x.dim() >= 2 and x.shape[1] != layer.in_channels:
        return (f"One example has shape {tuple(x.shape[1:])} (channels first) but the first convolution takes "
                f"{layer.in_channels} channels: build it with in_channels={x.shape[1]}, or pass inputs of shape "
                f"(tasks, examples, {layer.in_channels}, height, width).")
    return (f"Make the network accept one task's inputs: model(support_x[0]) must run on a tensor of shape "
            f"{tuple(x.shape)} and dtype {x.dtype}.")


def explain_model_error(learner, batch: TaskBatch, exc: Exception) -> TaskSpecError | None:
    """A :class:`TaskSpecError` for ``exc`` when the network cannot take the batch's inputs, else None.

    ``exc`` is a torch error raised inside a learner's call. It is explained only when its message
    is a shape or dtype complaint and the network, run by itself (no gradient, buffers protected)
    on the first task's support inputs, fails too: then the inputs do not fit the network, not the
    learner's code. Any other error is left to propagate unchanged.
    """
    model = getattr(learner, "model", None)
    if not isinstance(model, nn.Module) or not any(w in str(exc).lower() for w in _MISMATCH_WORDS):
        return None
    x = batch.support_x[0]
    try:
        with torch.no_grad(), no_buffer_updates(model):
            model(x)
    except (RuntimeError, IndexError) as probe:  # IndexError: an nn.Embedding given ids out of range
        torch_says = str(probe).strip().splitlines()[0] if str(probe).strip() else type(probe).__name__
    else:
        return None
    layer = _first_layer(model)
    owner = type(learner).__name__
    shown = f"{type(layer).__name__}({layer.extra_repr()})" if layer is not None else "none with parameters"
    dtype = next((p.dtype for p in model.parameters()), None)
    return TaskSpecError(
        f"{owner}: the network does not accept the meta-batch's inputs: support_x has shape "
        f"{tuple(batch.support_x.shape)} and dtype {batch.support_x.dtype} (one task: {tuple(x.shape)}); the "
        f"network's parameters are {dtype} and its first layer is {shown}. torch said: {torch_says}. "
        f"{_fix(layer, x, torch_says)}")


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
        except (RuntimeError, IndexError) as exc:  # torch's raw shape/dtype error, when the inputs do not fit
            explained = explain_model_error(self, batch, exc)
            if explained is None:
                raise
            raise explained from exc
        finally:
            self.__dict__["_autometa_in_call"] = False

    wrapper._autometa_prepared = True
    return wrapper
