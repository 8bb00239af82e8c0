"""The learner (inner solver) interface shared by optimization-based and metric-based learners.

A learner is an ``nn.Module`` whose parameters are the meta-parameters ω (an initialization,
per-parameter learning rates, an embedding, ...). The run loop only ever calls:

- :meth:`Learner.meta_backward` on a meta-batch of training tasks: accumulates d(outer loss)/dω
  into ``.grad`` of the learner's parameters and returns training metrics;
- :meth:`Learner.evaluate` on a meta-batch of evaluation tasks: adapts to each support set and
  returns per-task query metrics, building no meta-gradient graph.

Everything random inside a learner comes from the tasks it is given, so a learner is
deterministic given its parameters and the tasks.
"""

from __future__ import annotations

import abc
import hashlib
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autometa.errors import ConfigError
from autometa.hypergrad import BATCHING_MODES, ChunkPlan, batched, check_memory_budget, default_batching, memory_budget
from autometa.learners._inputs import prepared
from autometa.tasks import TaskBatch

TASK_KINDS = ("classification", "regression")


def check_positive(owner: str, name: str, value, kind=float, allow_zero: bool = False) -> None:
    """Raise a :class:`ConfigError` unless ``value`` is a number of ``kind`` that is > 0 (>= 0)."""
    ok = isinstance(value, (int, float) if kind is float else int) and not isinstance(value, bool)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"The `{name}` of {owner} must be {'a float' if kind is float else 'an integer'} "
                          f"{bound}. Got {value!r} instead.")


def task_loss_fn(task: str):
    """Cross-entropy for classification, mean squared error for regression."""
    if task not in TASK_KINDS:
        raise ConfigError(f"task must be one of {TASK_KINDS}. Got {task!r}.")
    return F.cross_entropy if task == "classification" else F.mse_loss


def query_metrics(task: str, outputs: Tensor, targets: Tensor, loss: Tensor) -> dict[str, Tensor]:
    """Per-task metrics: ``loss`` always, ``accuracy`` for classification."""
    metrics = {"loss": loss.detach()}
    if task == "classification":
        metrics["accuracy"] = (outputs.argmax(-1) == targets).float().mean()
    return metrics


def check_augmentation(owner: str, augmentation, copies, batching: str):
    """The augmentation filler (or None) of a learner that augments its support sets; checks ``copies``."""
    if augmentation is None:
        return None
    from autometa.slots import build_filler

    filler = build_filler("augmentation", augmentation)
    check_positive(owner, "augmented_copies", copies, int)
    if batching == "vmap":
        raise ConfigError(f"{owner} with an `augmentation` draws each task's augmentation from a generator seeded "
                          f"by the task, which vmap cannot do; use batching 'auto', 'loop' or 'threads'.")
    return filler


def augmented_support(augmentation, meta: dict[str, Tensor], support_x: Tensor, support_y: Tensor,
                      copies: int) -> tuple[Tensor, Tensor]:
    """The support set followed by ``copies`` augmented copies of it (labels repeated).

    ``meta`` is the filler's ω (names without the ``augmentation.`` prefix; empty: its own). The
    draws come from a generator seeded by a hash of the task's support set, so a task is always
    augmented the same way, whatever the order or batching of tasks (a learner stays deterministic
    given its parameters and its tasks), and ω is differentiated through the augmented images.
    """
    digest = hashlib.sha1()
    for tensor in (support_x, support_y):
        digest.update(tensor.detach().cpu().numpy().tobytes())
    generator = torch.Generator().manual_seed(int(digest.hexdigest()[:15], 16))
    xs, ys = [support_x], [support_y]
    for _ in range(copies):
        x, y = augmentation.augment(support_x, support_y, meta or None, generator)
        xs.append(x)
        ys.append(y)
    return torch.cat(xs), torch.cat(ys)


class Learner(nn.Module, abc.ABC):
    """Base class of every learner.

    Subclasses implement :meth:`task_loss`, a pure function of the meta-parameters and one task;
    :meth:`meta_backward` and :meth:`evaluate` then come for free, looped or vmapped over tasks.
    Learners whose meta-gradient is not the gradient of a loss (Reptile, iMAML) override
    :meth:`meta_backward`.

    Args:
        model: the network (the initialization for MAML-style learners, the embedding for
            metric learners).
        task: ``"classification"`` or ``"regression"``.
        batching: ``"auto"``, ``"loop"``, ``"threads"`` or ``"vmap"`` over the tasks of a meta-batch.
        memory_budget: what ``vmap`` may hold at once: a fraction in (0, 1] of the device's free
            memory or a number of bytes; None: a quarter of free memory. The tasks are run in
            chunks that fit it (see :class:`~autometa.hypergrad.ChunkPlan`); loops ignore it.
    """

    #: hyperparameters a search backend may tune, in autometa's neutral space format
    SPACE: ClassVar[dict] = {}

    #: see the ``memory_budget`` argument; set as an attribute by learners that do not take the argument
    memory_budget: float | int | None = None
    #: the precision policy of meta_backward / evaluate (:func:`autometa.hypergrad.precision`): "torch"
    #: leaves torch's settings alone; ``autometa run`` sets its ``run.precision`` (default "fp32", exact)
    precision_policy: str = "torch"

    def __init__(self, model: nn.Module, task: str = "classification", batching: str = "auto",
                 memory_budget: float | int | None = None):
        super().__init__()
        check_memory_budget(memory_budget, f"`memory_budget` of {type(self).__name__}")
        if not isinstance(model, nn.Module):
            raise ConfigError(f"A learner needs an nn.Module as model. Got {type(model).__name__}.")
        if batching not in BATCHING_MODES:
            raise ConfigError(f"batching must be one of {BATCHING_MODES}. Got {batching!r}.")
        self.model = model
        self.task = task
        self.loss_fn = task_loss_fn(task)
        self.batching = batching
        self.memory_budget = memory_budget
        self._plans: dict = {}  # (device, shapes, training) -> ChunkPlan, measured on first use

    def __init_subclass__(cls, **kwargs):
        # users' own models and tensors: every meta_backward / evaluate, overridden ones too,
        # first coerces and checks its batch and protects the network's buffers (_inputs.py)
        super().__init_subclass__(**kwargs)
        for name in ("meta_backward", "evaluate"):
            if name in vars(cls):
                setattr(cls, name, prepared(vars(cls)[name]))

    def space(self) -> dict:
        """The searchable hyperparameters of this learner (names are constructor arguments;
        a filler's are prefixed by its slot, e.g. ``optimizer.lr``)."""
        return {k: dict(v) for k, v in self.SPACE.items()}

    def meta_params(self) -> dict[str, Tensor]:
        """ω as a name -> tensor dict (the live parameters)."""
        return dict(self.named_parameters())

    def model_params(self, meta: dict[str, Tensor]) -> dict[str, Tensor]:
        """The network's parameters inside a meta-parameter dict (prefix ``model.`` removed)."""
        return {k[6:]: v for k, v in meta.items() if k.startswith("model.")}

    def _mode(self, batch: TaskBatch) -> str:
        if self.batching != "auto":
            return self.batching
        return default_batching(self.model, batch.support_x.device)

    def chunk_plan(self, batch: TaskBatch, training: bool) -> ChunkPlan:
        """The memory plan of ``vmap`` for batches shaped like ``batch`` (made, and measured, once).

        The budget is fixed when the plan is made, before any task of that shape has run.
        """
        device = batch.support_x.device
        key = (str(device), tuple(tuple(t.shape[1:]) for t in batch.tensors), training, self.memory_budget)
        if key not in self._plans:
            self._plans[key] = ChunkPlan(memory_budget(device, self.memory_budget))
        return self._plans[key]

    @abc.abstractmethod
    def task_loss(self, meta: dict[str, Tensor], support_x: Tensor, support_y: Tensor,
                  query_x: Tensor, query_y: Tensor, training: bool) -> tuple[Tensor, dict[str, Tensor]]:
        """Adapt to one task's support set and return the query loss and per-task metrics.

        ``training`` is True during meta-training (build the meta-gradient graph) and False
        for evaluation (inference settings, e.g. more inner steps; no graph needed).
        """

    @prepared
    def meta_backward(self, batch: TaskBatch) -> dict[str, float]:
        """Accumulate the meta-gradient of the mean query loss of ``batch`` into ``.grad``."""
        mode = self._mode(batch)
        _, metrics = batched(lambda m, *t: self.task_loss(m, *t, training=True), self.meta_params(),
                             batch.tensors, mode, backward=True,
                             plan=self.chunk_plan(batch, True) if mode == "vmap" else None)
        return {k: v.mean().item() for k, v in metrics.items()}

    @prepared
    def evaluate(self, batch: TaskBatch) -> dict[str, Tensor]:
        """Per-task query metrics after adaptation, shape ``(B,)`` each."""
        meta = {k: v.detach() for k, v in self.meta_params().items()}
        mode = self._mode(batch)
        with torch.no_grad():
            _, metrics = batched(lambda m, *t: self.task_loss(m, *t, training=False), meta,
                                 batch.tensors, mode, backward=False,
                                 plan=self.chunk_plan(batch, False) if mode == "vmap" else None)
        return metrics
