"""Meta Networks (Munkhdalai & Yu 2017), reduced: fast weights generated from support-set loss
gradients, combined with slow weights, and retrieved per query by attention.

The published model, and what is kept here:

- a base learner ``b`` (here: the run's network, a Conv4 with a ``ways``-way linear head; the
  paper: 5 convolutional layers of 64 filters) and a dynamic representation function ``u``
  (here: a copy of the base learner's feature blocks with their own weights, followed by a
  linear layer to ``representation_dim`` features; the paper: a CNN of the same shape);
- task-level fast weights for ``u``, generated coordinate-wise by an MLP ``d`` from the
  gradient of a representation loss on the support set (the paper: a contrastive loss on ``T``
  sampled pairs; here: the contrastive loss on *every* pair of support examples);
- example-level fast weights for ``b``: for each support example, the gradient of its loss
  with respect to ``b``'s slow weights is turned coordinate-wise into fast weights by an MLP
  ``m`` and stored in a memory keyed by the example's representation ``u(x)``; a query reads
  the memory with a softmax over cosine similarities of its own representation with the keys;
- layer augmentation: slow and fast weights act side by side; the paper sums ``relu(W h)`` and
  ``relu(W* h)``. Here the output layer of ``b`` (the logits) has no ReLU, ``W h + W* h``, and the
  last layer of ``u`` keeps the ReLU on its slow part only, ``relu(U h + c) + U* h``: with the
  non-negative Conv4 features and a generator whose outputs start mostly negative, ``relu(U* h)``
  was dead at initialisation and ``d`` got no gradient at all (found by the tests);
- the meta-information (gradients) is preprocessed as in Andrychowicz et al. 2016 (``p = 10``)
  and ``m``, ``d`` are 3-layer MLPs with 20 hidden units, as in the paper.

Reduced: fast weights exist only for the *last* (linear) layer of ``b`` and of ``u``, where the
paper augments the layers of both networks; the networks are the run's Conv4 (4 blocks) rather
than 5-layer CNNs. The gradient of each support loss with respect to the head is computed in
closed form, ``(softmax(z) - onehot(y)) h^T``, so the whole computation is one differentiable
graph and the meta-gradient is exact (checked against finite differences).
"""

from __future__ import annotations

import copy
import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autometa.errors import ConfigError, TaskSpecError
from autometa.learners._base import Learner, check_positive, query_metrics
from autometa.learners._metric import _submodule_params, check_support_labels, cosine_similarity_matrix
from autometa.nets import functional_forward
from autometa.tasks import TaskBatch


def preprocess_gradient(grad: Tensor, p: float = 10.0) -> Tensor:
    """Andrychowicz et al.'s gradient preprocessing, a ``(..., 2)`` tensor per coordinate.

    ``(log|g| / p, sign g)`` where ``|g| >= exp(-p)``, else ``(-1, exp(p) g)``.
    """
    big = grad.abs() >= math.exp(-p)
    first = torch.where(big, grad.abs().clamp_min(math.exp(-p)).log() / p, -torch.ones_like(grad))
    second = torch.where(big, torch.sign(grad), math.exp(p) * grad)
    return torch.stack([first, second], -1)


def contrastive_loss(representations: Tensor, labels: Tensor, margin: float = 1.0) -> Tensor:
    """Mean over all pairs ``i < j``: ``d^2`` for a pair of one class, ``max(0, margin - d)^2`` else.

    Distances of identical points are computed as ``sqrt(d^2 + 1e-12)`` to keep the gradient finite.
    """
    n = representations.shape[0]
    i, j = torch.triu_indices(n, n, 1, device=representations.device)
    squared = (representations[i] - representations[j]).pow(2).sum(-1)
    same = labels[i] == labels[j]
    apart = F.relu(margin - (squared + 1e-12).sqrt()).pow(2)
    return torch.where(same, squared, apart).mean()


def head_gradients(features: Tensor, logits: Tensor, labels: Tensor) -> Tensor:
    """Per-example gradient of the cross-entropy w.r.t. a linear head's weight, ``(n, ways, d)``.

    ``d CE(W h + c, y) / dW = (softmax(W h + c) - onehot(y)) h^T``.
    """
    error = torch.softmax(logits, -1) - F.one_hot(labels, logits.shape[-1]).to(logits.dtype)
    return error[:, :, None] * features[:, None, :]


def _mlp(hidden: int) -> nn.Sequential:
    """A coordinate-wise fast-weight generator, 2 -> hidden -> hidden -> 1.

    The output bias starts at zero, so that the fast weights start closer to a function of the
    gradients they come from than of the generator's initial bias.
    """
    mlp = nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))
    nn.init.zeros_(mlp[-1].bias)
    return mlp


class MetaNet(Learner):
    """Meta Networks with fast weights in the last layer of the base learner and of the
    representation function (see the module docstring for exactly what is reduced).

    Args:
        model: the base learner, a network with ``features`` and a linear ``head`` of ``ways``
            outputs (Conv4 or MLP built with a head).
        representation_dim: size of ``u``'s output (the memory keys).
        generator_hidden: hidden units of the fast-weight generators ``m`` and ``d`` (20).
        margin: margin of the contrastive representation loss.

    References: Munkhdalai & Yu 2017, "Meta Networks"; Andrychowicz et al. 2016 (gradient
    preprocessing).
    """

    SPACE: ClassVar[dict] = {"representation_dim": {"int": [16, 256], "log": True},
                             "generator_hidden": {"int": [8, 64], "log": True}}

    def __init__(self, model: nn.Module, representation_dim: int = 64, generator_hidden: int = 20,
                 margin: float = 1.0, task: str = "classification", batching: str = "auto"):
        if task != "classification":
            raise ConfigError(f"MetaNet classifies. Got task={task!r}; use a MAML-style learner for regression.")
        super().__init__(model, task, batching)
        head = getattr(model, "head", None)
        if not isinstance(head, nn.Linear) or not hasattr(model, "features"):
            raise ConfigError(f"MetaNet needs a base network with `features` and a linear `head` (Conv4 or MLP built "
                              f"with a head of `ways` outputs). Got {type(model).__name__} with head "
                              f"{type(head).__name__}.")
        check_positive("MetaNet", "representation_dim", representation_dim, int)
        check_positive("MetaNet", "generator_hidden", generator_hidden, int)
        check_positive("MetaNet", "margin", margin)
        if batching == "vmap":
            raise ConfigError("MetaNet reads the number of ways from the support labels, which vmap cannot; use "
                              "batching='loop' or 'threads'.")
        self.margin = float(margin)
        self.representation = copy.deepcopy(model.features)  # u's blocks: the same shape, own weights
        for module in self.representation.modules():
            if hasattr(module, "reset_parameters") and module is not self.representation:
                module.reset_parameters()
        self.representation_head = nn.Linear(head.in_features, representation_dim)
        self.base_generator = _mlp(generator_hidden)  # m: example-level fast weights of b
        self.representation_generator = _mlp(generator_hidden)  # d: task-level fast weights of u

    def _mode(self, batch: TaskBatch) -> str:
        mode = super()._mode(batch)
        return "loop" if mode == "vmap" else mode

    def _call(self, meta, name: str, x: Tensor) -> Tensor:
        return functional_forward(getattr(self, name), _submodule_params(meta, name), x)  # thread-safe

    def _generate(self, meta, name: str, grad: Tensor) -> Tensor:
        """Fast weights of ``grad``'s shape from the coordinate-wise generator ``name``."""
        return self._call(meta, name, preprocess_gradient(grad)).squeeze(-1)

    def representations(self, meta, hidden: Tensor, fast: Tensor | None) -> Tensor:
        """``relu(U h + c) + U* h`` (``U*`` None: the slow part alone); see the module docstring."""
        weight, bias = meta["representation_head.weight"], meta["representation_head.bias"]
        slow = F.relu(hidden @ weight.T + bias)
        return slow if fast is None else slow + hidden @ fast.T

    def task_loss(self, meta, support_x, support_y, query_x, query_y, training):
        ways = int(support_y.max()) + 1
        n = len(support_x)
        both = torch.cat([support_x, query_x])
        # u: task-level fast weights from the representation loss of the support set
        hidden = self._call(meta, "representation", both).flatten(1)
        weight = meta["representation_head.weight"]
        loss_u = contrastive_loss(self.representations(meta, hidden[:n], None), support_y, self.margin)
        (grad_u,) = torch.autograd.grad(loss_u, weight, create_graph=True)
        keys_all = self.representations(meta, hidden, self._generate(meta, "representation_generator", grad_u))
        keys, query_keys = keys_all[:n], keys_all[n:]
        # b: example-level fast weights from each support example's loss gradient, stored under its key
        params = self.model_params(meta)
        features = functional_forward(self.model.features, _submodule_params(params, "features"), both).flatten(1)
        head_w, head_b = params["head.weight"][:ways], params["head.bias"][:ways]
        support_logits = features[:n] @ head_w.T + head_b
        memory = self._generate(meta, "base_generator", head_gradients(features[:n], support_logits, support_y))
        # queries: attention over the memory, slow and fast weights side by side
        attention = torch.softmax(cosine_similarity_matrix(query_keys, keys), -1)  # (q, n)
        fast = torch.einsum("qn,nwd->qwd", attention, memory)
        logits = features[n:] @ head_w.T + head_b + torch.einsum("qwd,qd->qw", fast, features[n:])
        loss = F.cross_entropy(logits, query_y)
        return loss, query_metrics(self.task, logits, query_y, loss)

    def meta_backward(self, batch: TaskBatch) -> dict[str, float]:
        self._check(batch)
        return super().meta_backward(batch)

    def evaluate(self, batch: TaskBatch) -> dict[str, Tensor]:
        # the fast weights need gradients of the support losses, so evaluation keeps autograd on
        # for that inner computation only; no graph reaches the meta-parameters
        self._check(batch)
        meta = {k: v.detach().requires_grad_(k == "representation_head.weight") for k, v in self.meta_params().items()}
        metrics: dict[str, list] = {}
        for i in range(len(batch)):
            with torch.enable_grad():
                _, task_metrics = self.task_loss(meta, *(t[i] for t in batch.tensors), training=False)
            for k, v in task_metrics.items():
                metrics.setdefault(k, []).append(v.detach())
        return {k: torch.stack(v) for k, v in metrics.items()}

    def _check(self, batch: TaskBatch) -> None:
        ways, _ = check_support_labels("MetaNet", batch.support_y)
        if ways > self.model.head.out_features:
            raise TaskSpecError(f"MetaNet's head has {self.model.head.out_features} outputs but the tasks have {ways} "
                              f"ways; build the network with a head of at least {ways} outputs (tasks.train_ways = "
                              f"tasks.ways).")
