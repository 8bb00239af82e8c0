"""The baselines of the MAML paper's tables: pretraining + fine-tuning, and nearest neighbours.

They are hand-crafted fillers of the initialization slot: what a practitioner does without
meta-learning. :class:`Pretrained` with ``outer.steps: 0`` is the random initialization.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from autometa.errors import ConfigError, TaskSpecError
from autometa.hypergrad import inner_sgd
from autometa.learners._base import Learner, check_positive, query_metrics
from autometa.learners._gradient import MAML
from autometa.nets import functional_forward
from autometa.tasks import TaskBatch


class Pretrained(MAML):
    """Pretrain on all meta-training tasks jointly, then fine-tune on each test task's support set.

    - Regression: the network is fit to the pooled data of the training tasks (no adaptation
      during training), then fine-tuned with ``eval_inner_steps`` of SGD at ``inner_lr``: the
      "pretrained" baseline of Finn et al. 2017, figure 2.
    - Classification: the network's features are trained with a head over every training class
      (global labels), then a new zero-initialised ``ways``-way head is fitted to the support set
      (``eval_inner_steps`` steps at ``inner_lr``; ``finetune_all=True`` also tunes the features):
      the fine-tuning baseline of Finn et al. 2017, Table 1 (after Ravi & Larochelle 2017).

    With ``outer.steps: 0`` it is the randomly initialised network fine-tuned the same way.

    Args:
        num_classes: training classes for the pretraining head (filled in by the run loop).
    """

    SPACE = {"inner_lr": {"float": [1e-3, 1.0], "log": True}, "eval_inner_steps": {"int": [1, 50]}}
    NEEDS_NUM_CLASSES = True

    def __init__(self, model: nn.Module, inner_lr: float = 0.01, eval_inner_steps: int = 10,
                 finetune_all: bool = False, num_classes: int | None = None, **kwargs):
        kwargs.pop("inner_steps", None)
        super().__init__(model, inner_lr=inner_lr, inner_steps=1, eval_inner_steps=eval_inner_steps,
                         first_order=True, **kwargs)
        self.finetune_all = bool(finetune_all)
        if self.task == "classification":
            if not hasattr(model, "features") or not hasattr(model, "head"):
                raise ConfigError("Pretrained needs a network with `features` and `head` (Conv4, MLP). "
                                  f"Got {type(model).__name__}.")
            check_positive("Pretrained", "num_classes", num_classes, int)
            self.pretrain_head = nn.Linear(model.feature_dim, num_classes)

    def adapts(self, name: str) -> bool:
        return self.task == "regression" or self.finetune_all or name.startswith("head.")

    def meta_backward(self, batch: TaskBatch) -> dict[str, float]:
        x = torch.cat([batch.support_x, batch.query_x], 1).flatten(0, 1)
        if self.task == "regression":
            y = torch.cat([batch.support_y, batch.query_y], 1).flatten(0, 1)
            out = self.model(x)
            loss = self.loss_fn(out, y)
            loss.backward()
            return {"loss": loss.item()}
        if "class_index" not in batch.info:
            raise TaskSpecError("Pretrained needs the split-wide class of each episode label "
                                "(TaskBatch.info['class_index'], set by FewShotClassification).")
        index = batch.info["class_index"]  # (B, ways): the class behind each episode label
        labels = torch.cat([batch.support_y, batch.query_y], 1)
        y = torch.gather(index, 1, labels).flatten()
        logits = self.pretrain_head(self.model.features(x))
        loss = F.cross_entropy(logits, y)
        loss.backward()
        return {"loss": loss.item(), "accuracy": (logits.argmax(-1) == y).float().mean().item()}

    def task_loss(self, meta, support_x, support_y, query_x, query_y, training):
        adapted = self.adapt(support_x, support_y, meta=meta, training=training)
        out = self.predict(adapted, query_x)
        loss = self.loss_fn(out, query_y)
        return loss, query_metrics(self.task, out, query_y, loss)

    def adapt(self, support_x, support_y, steps=None, meta=None, training=False):
        params = self.model_params(self.meta_params() if meta is None else meta)
        if self.task == "classification":
            params = {**params, "head.weight": torch.zeros_like(params["head.weight"]),
                      "head.bias": torch.zeros_like(params["head.bias"])}

        def support_loss(p):
            return self.loss_fn(functional_forward(self.model, p, support_x), support_y)

        return inner_sgd(support_loss, params, steps or self.eval_inner_steps, self.inner_lr,
                         first_order=True, adapt=self.adapts)


class NearestNeighbor(Learner):
    """1-nearest-neighbour classification in input space: nothing is learned.

    A query takes the label of the closest support example (Euclidean distance on the raw
    inputs); the pixel baseline of Vinyals et al. 2016 and Finn et al. 2017.
    """

    HEAD = False

    def __init__(self, model: nn.Module | None = None, task: str = "classification", batching: str = "auto"):
        if task != "classification":
            raise ConfigError(f"NearestNeighbor classifies; it cannot solve {task!r} tasks. Use it with "
                              f"classification tasks.")
        super().__init__(nn.Identity(), task, batching)

    def task_loss(self, meta, support_x, support_y, query_x, query_y, training):
        scores = -torch.cdist(query_x.flatten(1), support_x.flatten(1))  # (queries, support)
        # member[c, i]: support example i has label c (labels are 0..ways-1 < number of examples)
        member = F.one_hot(support_y, support_x.shape[0]).T.bool()
        logits = torch.where(member[None], scores[:, None, :], -1e9).amax(-1)  # best score per class
        loss = F.cross_entropy(logits, query_y)
        return loss, query_metrics(self.task, logits, query_y, loss)
