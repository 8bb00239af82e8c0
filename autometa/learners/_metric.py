"""Metric-based learners: a task is solved by comparing query embeddings with the support set.

Instead of adapting weights per task (MAML), these learners meta-learn an embedding network
(``model``, built without a classification head) plus, for some, a small comparison module.
Every learner here implements :meth:`MetricLearner.task_loss` as a pure function of the
meta-parameter dict, so :meth:`Learner.meta_backward` / :meth:`Learner.evaluate` work looped or
vmapped over the tasks of a meta-batch, unchanged.

Episode conventions (as :class:`autometa.tasks.FewShotClassification` produces them):
support labels are ``0..ways-1`` with the same number of shots per class; the number of ways
is read from the support labels, never from the query labels. The order of the support
examples does not matter. Outside ``vmap`` the score matrices have ``ways`` columns; under
``vmap`` the number of ways cannot be read from the data, so they have one column per support
example and the columns of absent classes hold ``-inf`` (they never win an argmax and add
nothing to a softmax, so losses and accuracies are identical in both modes).

Embeddings: support and query images go through the network in one forward pass, so batch
norm (batch statistics, see :mod:`autometa.nets`) normalises them together, as in the
reference ProtoNet code. No query label enters that computation.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from autometa.errors import ConfigError, TaskSpecError
from autometa.learners._base import Learner, augmented_support, check_augmentation, check_positive
from autometa.nets import MLP, functional_forward
from autometa.tasks import TaskBatch

DISTANCES = ("euclidean", "cosine")
# stands in for -inf inside reductions, whose backward would otherwise produce NaN
_LARGE_NEGATIVE = -1e30


# ----------------------------------------------------------------------------- episode helpers

def _is_transformed(tensor: Tensor) -> bool:
    """True when ``tensor`` is seen through ``vmap`` (possibly under grad transforms), where
    its values cannot decide a shape."""
    from torch._C._functorch import get_unwrapped, is_batchedtensor, is_functorch_wrapped_tensor

    while is_functorch_wrapped_tensor(tensor):
        if is_batchedtensor(tensor):
            return True
        tensor = get_unwrapped(tensor)
    return False


def check_support_labels(owner: str, support_y: Tensor) -> tuple[int, int]:
    """Check support labels and return ``(ways, shots)``.

    Args:
        owner: the learner's name, for the message.
        support_y: integer labels of one task ``(n,)`` or of a meta-batch ``(B, n)``.

    Raises:
        TaskSpecError: labels that are not integers ``0..ways-1`` each with the same count.
    """
    if support_y.dtype in (torch.float16, torch.float32, torch.float64, torch.bfloat16, torch.bool):
        raise TaskSpecError(f"{owner} needs integer support labels. Got dtype {support_y.dtype}; "
                            f"pass class indices 0..ways-1.")
    rows = support_y.reshape(-1, support_y.shape[-1]) if support_y.dim() else support_y.reshape(1, 1)
    if support_y.dim() not in (1, 2) or rows.shape[-1] == 0:
        raise TaskSpecError(f"{owner} needs support labels of shape (n,) or (tasks, n) with n > 0. "
                            f"Got shape {tuple(support_y.shape)}.")
    result = None
    for i, row in enumerate(rows.cpu()):
        if int(row.min()) < 0:
            raise TaskSpecError(f"{owner}: support labels must be 0..ways-1. Task {i} has label "
                                f"{int(row.min())}.")
        counts = torch.bincount(row)
        if (counts == 0).any():
            missing = torch.nonzero(counts == 0).flatten().tolist()
            raise TaskSpecError(f"{owner}: support labels must cover 0..ways-1 with no gap. Task {i} "
                                f"lacks class(es) {missing}; relabel the classes 0..ways-1.")
        if (counts != counts[0]).any():
            raise TaskSpecError(f"{owner} needs the same number of shots for every class. Task {i} has "
                                f"counts {counts.tolist()} for classes 0..{len(counts) - 1}; sample "
                                f"balanced episodes (FewShotClassification does).")
        shape = (len(counts), int(counts[0]))
        if result is not None and shape != result:
            raise TaskSpecError(f"{owner}: all tasks of a meta-batch need the same ways and shots. "
                                f"Got {result} and {shape} (ways, shots).")
        result = shape
    return result


def class_membership(support_y: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """``(member, present)``: ``member[i, c] = 1`` if support example ``i`` is of class ``c``.

    ``c`` runs over ``ways`` columns when the labels are concrete, over one column per support
    example under ``vmap``; ``present[c]`` says whether class ``c`` has support examples.
    """
    columns = support_y.shape[-1] if _is_transformed(support_y) else int(support_y.max()) + 1
    member = (support_y[:, None] == torch.arange(columns, device=support_y.device)).to(dtype)
    return member, member.sum(0) > 0


def mask_absent(scores: Tensor, present: Tensor) -> Tensor:
    """Scores with the columns of absent classes set to ``-inf``."""
    return torch.where(present, scores, torch.full_like(scores, float("-inf")))


def squared_euclidean(a: Tensor, b: Tensor) -> Tensor:
    """``||a_i - b_j||^2`` for rows of ``a (n, d)`` and ``b (m, d)``, shape ``(n, m)``."""
    return (a[:, None, :] - b[None, :, :]).pow(2).sum(-1)


def cosine_similarity_matrix(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """Cosine of the angle between rows of ``a (n, d)`` and ``b (m, d)``, shape ``(n, m)``."""
    a = a / a.norm(dim=-1, keepdim=True).clamp_min(eps)
    b = b / b.norm(dim=-1, keepdim=True).clamp_min(eps)
    return a @ b.T


def _feature_dim(owner: str, model: nn.Module) -> int:
    dim = getattr(model, "feature_dim", None)
    if not isinstance(dim, int):
        raise ConfigError(f"{owner} needs a network that states its embedding size as `feature_dim` "
                          f"(Conv4, MLP). Got {type(model).__name__}, which does not.")
    return dim


def _submodule_params(meta: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    prefix = prefix + "."
    return {k[len(prefix):]: v for k, v in meta.items() if k.startswith(prefix)}


# ----------------------------------------------------------------------------- base class

class MetricLearner(Learner):
    """Base of the metric learners: an embedding network and a score per (query, class).

    Subclasses implement :meth:`scores`; the default loss is cross-entropy of the scores.
    ``HEAD = False`` tells the run loop to build the network without a classification head.

    Args:
        model: the embedding network (its output, flattened, is the embedding).
        task: only ``"classification"``.
        batching: see :class:`Learner`.
    """

    HEAD: ClassVar[bool] = False

    def __init__(self, model: nn.Module, task: str = "classification", batching: str = "auto"):
        if task != "classification":
            raise ConfigError(f"{type(self).__name__} solves classification tasks. Got task={task!r}; "
                              f"use an optimization-based learner (MAML) for regression.")
        super().__init__(model, task, batching)

    def embed(self, meta: dict[str, Tensor], *inputs: Tensor) -> list[Tensor]:
        """Flattened embeddings of each input, computed in one forward pass (shared batch norm)."""
        out = functional_forward(self.model, self.model_params(meta), torch.cat(inputs))
        return list(out.flatten(1).split([len(x) for x in inputs]))

    def call(self, meta: dict[str, Tensor], name: str, *args):
        """Submodule ``name`` of this learner applied with its parameters taken from ``meta``."""
        return functional_call(getattr(self, name), _submodule_params(meta, name), args)

    @abc.abstractmethod
    def scores(self, meta: dict[str, Tensor], support_x: Tensor, support_y: Tensor,
               query_x: Tensor) -> tuple[Tensor, Tensor]:
        """``(scores (queries, columns), present (columns,))``; a higher score means more likely."""

    def loss(self, scores: Tensor, present: Tensor, query_y: Tensor) -> Tensor:
        """Cross-entropy of the scores (absent classes excluded)."""
        return F.cross_entropy(mask_absent(scores, present), query_y)

    def task_loss(self, meta, support_x, support_y, query_x, query_y, training):
        scores, present = self.scores(meta, support_x, support_y, query_x)
        loss = self.loss(scores, present, query_y)
        prediction = mask_absent(scores, present).argmax(-1)
        return loss, {"loss": loss.detach(), "accuracy": (prediction == query_y).float().mean()}

    def predict(self, support_x: Tensor, support_y: Tensor, query_x: Tensor) -> Tensor:
        """Scores of one task's queries for each of its ``ways`` classes, shape ``(queries, ways)``.

        Raises:
            TaskSpecError: unbalanced or badly numbered support labels.
        """
        ways, _ = check_support_labels(type(self).__name__, support_y)
        meta = {k: v.detach() for k, v in self.meta_params().items()}
        with torch.no_grad():
            scores, present = self.scores(meta, support_x, support_y, query_x)
        return scores[:, :ways]

    def meta_backward(self, batch: TaskBatch) -> dict[str, float]:
        check_support_labels(type(self).__name__, batch.support_y)
        return super().meta_backward(batch)

    def evaluate(self, batch: TaskBatch) -> dict[str, Tensor]:
        check_support_labels(type(self).__name__, batch.support_y)
        return super().evaluate(batch)


# ----------------------------------------------------------------------------- ProtoNet

def _distance_logits(queries: Tensor, prototypes: Tensor, distance: str, temperature: float) -> Tensor:
    if distance == "euclidean":
        return -squared_euclidean(queries, prototypes) / temperature
    return -(1.0 - cosine_similarity_matrix(queries, prototypes)) / temperature


def _check_distance(owner: str, distance, temperature) -> None:
    if distance not in DISTANCES:
        raise ConfigError(f"The `distance` of {owner} must be one of {DISTANCES}. Got {distance!r} instead.")
    check_positive(owner, "temperature", temperature)


class ProtoNet(MetricLearner):
    """Prototypical networks: a class is the mean embedding of its support examples.

    Logits are ``-d(f(x), c_k) / temperature`` with ``d`` the squared Euclidean distance (the
    paper's choice, a Bregman divergence, which makes the classifier linear in ``f(x)``) or the
    cosine distance ``1 - cos``. Training with more ways than testing (the paper's 60-way
    Omniglot episodes) needs nothing here: set ``tasks.train_ways``.

    Args:
        model: the embedding network (Conv4 without head in the paper).
        distance: ``"euclidean"`` (squared) or ``"cosine"``.
        temperature: divides the negative distance (1 in the paper).
        augmentation: support-set augmentation, a filler of the augmentation slot, its name or a
            mapping (``{"name": "dada"}``); None: none. Each prototype is then the mean over the
            support examples and ``augmented_copies`` augmented copies of each; a learned policy's ω
            (``augmentation.*``) is meta-learned through them. Tasks are looped, not vmapped.
        augmented_copies: augmented copies of the support set (with ``augmentation``).

    Example::

        learner = ProtoNet(Conv4(out_features=None))
        metrics = learner.meta_backward(tasks.sample(1, generator))

    References: Snell, Swersky & Zemel 2017, "Prototypical Networks for Few-shot Learning".
    """

    SPACE = {"distance": {"choice": list(DISTANCES)}, "temperature": {"float": [0.01, 10.0], "log": True}}

    def __init__(self, model: nn.Module, distance: str = "euclidean", temperature: float = 1.0,
                 augmentation=None, augmented_copies: int = 1, task: str = "classification",
                 batching: str = "auto"):
        super().__init__(model, task, batching)
        _check_distance("ProtoNet", distance, temperature)
        self.distance, self.temperature = distance, float(temperature)
        self.augmentation = check_augmentation("ProtoNet", augmentation, augmented_copies, batching)
        self.augmented_copies = augmented_copies

    def space(self) -> dict:
        space = super().space()
        if self.augmentation is not None:
            space.update({f"augmentation.{k}": v for k, v in self.augmentation.space().items()})
        return space

    def _mode(self, batch) -> str:
        if self.augmentation is not None and self.batching == "auto":
            return "loop"
        return super()._mode(batch)

    def prototypes(self, support: Tensor, support_y: Tensor) -> tuple[Tensor, Tensor]:
        """Mean embedding per class ``(columns, d)`` and which classes are present."""
        member, present = class_membership(support_y, support.dtype)
        return (member.T @ support) / member.sum(0).clamp_min(1.0)[:, None], present

    def scores(self, meta, support_x, support_y, query_x):
        if self.augmentation is not None:
            support_x, support_y = augmented_support(self.augmentation, _submodule_params(meta, "augmentation"),
                                                     support_x, support_y, self.augmented_copies)
        support, queries = self.embed(meta, support_x, query_x)
        prototypes, present = self.prototypes(support, support_y)
        return _distance_logits(queries, prototypes, self.distance, self.temperature), present


# ----------------------------------------------------------------------------- MatchingNet

class _LSTMCell(nn.Module):
    """An LSTM cell written with two linear maps, so that ``functional_call`` and ``vmap`` apply."""

    def __init__(self, input_size: int, hidden_size: int, recurrent_size: int | None = None):
        super().__init__()
        self.input = nn.Linear(input_size, 4 * hidden_size)
        self.recurrent = nn.Linear(recurrent_size or hidden_size, 4 * hidden_size, bias=False)

    def forward(self, x: Tensor, recurrent: Tensor, cell: Tensor) -> tuple[Tensor, Tensor]:
        i, f, g, o = (self.input(x) + self.recurrent(recurrent)).chunk(4, dim=-1)
        cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(cell), cell


class _SupportContext(nn.Module):
    """``g(x_i) = g'(x_i) + h_forward_i + h_backward_i``: a bidirectional LSTM over the support set."""

    def __init__(self, dim: int):
        super().__init__()
        self.forward_cell, self.backward_cell = _LSTMCell(dim, dim), _LSTMCell(dim, dim)

    def _run(self, cell: _LSTMCell, sequence: Tensor) -> list[Tensor]:
        hidden = state = torch.zeros_like(sequence[0])
        outputs = []
        for item in sequence:
            hidden, state = cell(item, hidden, state)
            outputs.append(hidden)
        return outputs

    def forward(self, support: Tensor) -> Tensor:
        forward = torch.stack(self._run(self.forward_cell, support))
        backward = torch.stack(self._run(self.backward_cell, support.flip(0))[::-1])
        return support + forward + backward


class _AttentionLSTM(nn.Module):
    """``f(x, S)``: K steps of an LSTM that reads the support set by attention (Vinyals et al., app. A.1)."""

    def __init__(self, dim: int, steps: int):
        super().__init__()
        self.cell, self.steps = _LSTMCell(dim, dim, recurrent_size=2 * dim), steps

    def forward(self, queries: Tensor, support: Tensor) -> Tensor:
        hidden = readout = state = torch.zeros_like(queries)
        for _ in range(self.steps):
            hidden, state = self.cell(queries, torch.cat([hidden, readout], -1), state)
            hidden = hidden + queries
            readout = torch.softmax(hidden @ support.T, dim=-1) @ support
        return hidden


class MatchingNet(MetricLearner):
    """Matching networks: a query's label distribution is attention over the support labels.

    ``P(y | x, S) = sum_i a(x, x_i) y_i`` with ``a`` the softmax over the support set of the
    cosine similarity of the embeddings (divided by ``temperature``; 1 in the paper). With
    ``fce=True`` the embeddings are full-context: a bidirectional LSTM over the support set
    (``g``) and an attention LSTM reading the support set for ``processing_steps`` steps for the
    query (``f``).

    Args:
        model: the embedding network.
        fce: use full-context embeddings.
        processing_steps: steps of the attention LSTM (used when ``fce=True``).
        temperature: divides the cosine similarities.

    References: Vinyals, Blundell, Lillicrap, Kavukcuoglu & Wierstra 2016, "Matching Networks
    for One Shot Learning".
    """

    SPACE = {"fce": {"choice": [False, True]}, "processing_steps": {"int": [1, 10]},
             "temperature": {"float": [0.01, 10.0], "log": True}}

    def __init__(self, model: nn.Module, fce: bool = False, processing_steps: int = 5,
                 temperature: float = 1.0, task: str = "classification", batching: str = "auto"):
        super().__init__(model, task, batching)
        check_positive("MatchingNet", "processing_steps", processing_steps, int)
        check_positive("MatchingNet", "temperature", temperature)
        self.fce, self.processing_steps, self.temperature = bool(fce), processing_steps, float(temperature)
        if self.fce:
            dim = _feature_dim("MatchingNet", model)
            self.support_context = _SupportContext(dim)
            self.query_context = _AttentionLSTM(dim, processing_steps)

    def scores(self, meta, support_x, support_y, query_x):
        support, queries = self.embed(meta, support_x, query_x)
        if self.fce:
            support = self.call(meta, "support_context", support)
            queries = self.call(meta, "query_context", queries, support)
        member, present = class_membership(support_y, support.dtype)
        attention = torch.log_softmax(cosine_similarity_matrix(queries, support) / self.temperature, -1)
        # log P(class c) = logsumexp of the log-attention over the support examples of class c
        per_class = torch.where(member.bool()[None], attention[:, :, None],
                                torch.full_like(attention[:, :, None], _LARGE_NEGATIVE))
        return torch.logsumexp(per_class, dim=1), present

    def loss(self, scores, present, query_y):
        return F.nll_loss(mask_absent(scores, present), query_y)


# ----------------------------------------------------------------------------- RelationNet

def conv_feature_maps(model: nn.Module, params: dict[str, Tensor], x: Tensor, unpooled_blocks: int) -> Tensor:
    """Feature maps of a Conv4-style network, without the pooling of its last ``unpooled_blocks``.

    ``model.features`` must be a sequence of convolutional blocks (each a ``Sequential`` of conv,
    batch norm, ReLU, max-pool) optionally ending in ``Flatten``, which is skipped. With
    ``unpooled_blocks=2`` this is the embedding of the Relation Network paper (four blocks, the
    last two without pooling): 64 x 7 x 7 maps for 28 x 28 Omniglot images.
    """
    blocks = [(n, b) for n, b in model.features.named_children() if not isinstance(b, nn.Flatten)]
    out = x
    for index, (block_name, block) in enumerate(blocks):
        pool = index < len(blocks) - unpooled_blocks
        layers = block.named_children() if isinstance(block, nn.Sequential) else [("", block)]
        for layer_name, layer in layers:
            if isinstance(layer, nn.MaxPool2d) and not pool:
                continue
            prefix = "features." + ".".join(p for p in (block_name, layer_name) if p)
            out = functional_call(layer, _submodule_params(params, prefix), (out,))
    return out


class _MaskedBatchNorm2d(nn.Module):
    """Batch norm with batch statistics over the pairs whose ``weight`` is 1 only.

    Under ``vmap`` the relation module also sees pairs of padding classes (see the module
    docstring); excluding them from the statistics keeps the scores of real pairs identical to
    the looped computation.
    """

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.ones(channels)), nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor, pair_weight: Tensor) -> Tensor:
        w = pair_weight[:, None, None, None]
        count = w.sum() * x.shape[-1] * x.shape[-2]
        mean = (w * x).sum(dim=(0, 2, 3), keepdim=True) / count
        var = (w * (x - mean) ** 2).sum(dim=(0, 2, 3), keepdim=True) / count
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight[:, None, None] + self.bias[:, None, None]


class _ConvRelationModule(nn.Module):
    """Two conv blocks then two linear layers, ending in a sigmoid score (Sung et al., fig. 2)."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.conv1, self.norm1 = nn.Conv2d(2 * channels, channels, 3, padding=1), _MaskedBatchNorm2d(channels)
        self.conv2, self.norm2 = nn.Conv2d(channels, channels, 3, padding=1), _MaskedBatchNorm2d(channels)
        self.fc1, self.fc2 = nn.Linear(channels, hidden), nn.Linear(hidden, 1)

    def forward(self, pairs: Tensor, pair_weight: Tensor) -> Tensor:
        out = pairs
        for conv, norm in ((self.conv1, self.norm1), (self.conv2, self.norm2)):
            out = F.relu(norm(conv(out), pair_weight))
            # pool while there is something to pool; on 28x28 Omniglot maps 7 -> 3 -> 1 as in the paper
            if out.shape[-1] >= 2:
                out = F.max_pool2d(out, 2)
        # global average: the identity for the paper's 1x1 maps, and size-independent otherwise
        out = out.mean(dim=(-2, -1))
        return torch.sigmoid(self.fc2(F.relu(self.fc1(out)))).squeeze(-1)


class _VectorRelationModule(nn.Module):
    """Relation module for vector embeddings: an MLP on the concatenated pair (Sung et al., sec. 3.4)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(2 * dim, hidden), nn.Linear(hidden, 1)

    def forward(self, pairs: Tensor, pair_weight: Tensor) -> Tensor:
        return torch.sigmoid(self.fc2(F.relu(self.fc1(pairs)))).squeeze(-1)


class RelationNet(MetricLearner):
    """Relation networks: a learned module scores each (class, query) pair in [0, 1].

    The embedding is the network's convolutional blocks with the pooling of the last
    ``unpooled_blocks`` blocks removed, so that the relation module sees spatial feature maps:
    with the shared Conv4 (padding 1) and ``unpooled_blocks=2`` these are 64 x 7 x 7 maps on
    28 x 28 images, the paper's embedding design (its own code pads only blocks 3-4, giving
    5 x 5). A class's feature map is the sum over its support examples (the paper's K-shot
    rule); it is concatenated with the query's along channels and scored by two conv blocks and
    two linear layers (``relation_hidden`` units). Training regresses the scores onto one-hot
    targets with the mean squared error. For networks without convolutions (MLP) the pair is a
    concatenated vector and the relation module an MLP.

    Args:
        model: the embedding network (Conv4 without head, or an MLP).
        relation_hidden: width of the relation module's hidden linear layer (8 in the paper).
        unpooled_blocks: trailing conv blocks whose max-pool is skipped (2 in the paper).

    References: Sung, Yang, Zhang, Xiang, Torr & Hospedales 2018, "Learning to Compare:
    Relation Network for Few-Shot Learning".
    """

    SPACE = {"relation_hidden": {"int": [4, 64], "log": True}, "unpooled_blocks": {"int": [0, 2]}}

    def __init__(self, model: nn.Module, relation_hidden: int = 8, unpooled_blocks: int = 2,
                 task: str = "classification", batching: str = "auto"):
        super().__init__(model, task, batching)
        check_positive("RelationNet", "relation_hidden", relation_hidden, int)
        check_positive("RelationNet", "unpooled_blocks", unpooled_blocks, int, allow_zero=True)
        self.unpooled_blocks = unpooled_blocks
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        self.spatial = bool(convs)
        if self.spatial:
            if not isinstance(getattr(model, "features", None), nn.Sequential):
                raise ConfigError(f"RelationNet needs a convolutional network with a `features` sequence of "
                                  f"conv blocks (Conv4). Got {type(model).__name__}.")
            blocks = [b for b in model.features if not isinstance(b, nn.Flatten)]
            if unpooled_blocks > len(blocks):
                raise ConfigError(f"The `unpooled_blocks` of RelationNet must be at most the network's "
                                  f"{len(blocks)} blocks. Got {unpooled_blocks} instead.")
            self.relation = _ConvRelationModule(convs[-1].out_channels, relation_hidden)
        else:
            self.relation = _VectorRelationModule(_feature_dim("RelationNet", model), relation_hidden)

    def feature_maps(self, meta: dict[str, Tensor], *inputs: Tensor) -> list[Tensor]:
        """Spatial feature maps (or vectors) of each input, in one forward pass."""
        if not self.spatial:
            return self.embed(meta, *inputs)
        out = conv_feature_maps(self.model, self.model_params(meta), torch.cat(inputs), self.unpooled_blocks)
        return list(out.split([len(x) for x in inputs]))

    def scores(self, meta, support_x, support_y, query_x):
        support, queries = self.feature_maps(meta, support_x, query_x)
        member, present = class_membership(support_y, support.dtype)
        classes = torch.einsum("nc,n...->c...", member, support)  # sum over each class's shots
        q, c = len(queries), len(classes)
        pairs = torch.cat([classes[None].expand(q, *classes.shape),
                           queries[:, None].expand(q, c, *queries.shape[1:])], dim=2)
        pair_weight = present.to(support.dtype).expand(q, c).reshape(q * c)
        relations = self.call(meta, "relation", pairs.reshape(q * c, *pairs.shape[2:]), pair_weight)
        return relations.reshape(q, c), present

    def loss(self, scores, present, query_y):
        target = (query_y[:, None] == torch.arange(scores.shape[1], device=scores.device)).to(scores.dtype)
        squared = torch.where(present[None], (scores - target) ** 2, torch.zeros_like(scores))
        return squared.sum() / (len(scores) * present.sum())


# ----------------------------------------------------------------------------- SiameseNet

class SiameseNet(MetricLearner):
    """Siamese networks: a learned same/different score on the L1 distance of two embeddings.

    ``p(same | x1, x2) = sigmoid(w . |f(x1) - f(x2)| + b)``. Meta-training uses every (query,
    support) pair of an episode, labelled same or different, with binary cross-entropy in which
    same and different pairs weigh ``positive_weight`` and ``1 - positive_weight`` in total
    (0.5: balanced, as the paper's pair sampling). A query is classified as the class of the
    most similar support example; with K > 1 shots the similarity is averaged per class.
    The paper's deeper 105 x 105 network is replaced by the shared embedding network.

    Args:
        model: the embedding network.
        positive_weight: share of the pair loss carried by same-class pairs.

    References: Koch, Zemel & Salakhutdinov 2015, "Siamese Neural Networks for One-shot Image
    Recognition".
    """

    SPACE = {"positive_weight": {"float": [0.1, 0.9]}}

    def __init__(self, model: nn.Module, positive_weight: float = 0.5, task: str = "classification",
                 batching: str = "auto"):
        super().__init__(model, task, batching)
        if not (isinstance(positive_weight, (int, float)) and 0 < positive_weight < 1):
            raise ConfigError(f"The `positive_weight` of SiameseNet must be a float in (0, 1). "
                              f"Got {positive_weight!r} instead.")
        self.positive_weight = float(positive_weight)
        self.similarity = nn.Linear(_feature_dim("SiameseNet", model), 1)

    def pair_logits(self, meta, support_x, query_x) -> Tensor:
        """Same-class logits of every (query, support) pair, shape ``(queries, support)``."""
        support, queries = self.embed(meta, support_x, query_x)
        return self.call(meta, "similarity", (queries[:, None] - support[None]).abs()).squeeze(-1)

    def scores(self, meta, support_x, support_y, query_x):
        return self._class_scores(self.pair_logits(meta, support_x, query_x), support_y)

    @staticmethod
    def _class_scores(pair_logits: Tensor, support_y: Tensor) -> tuple[Tensor, Tensor]:
        member, present = class_membership(support_y, pair_logits.dtype)
        return (torch.sigmoid(pair_logits) @ member) / member.sum(0).clamp_min(1.0), present

    def task_loss(self, meta, support_x, support_y, query_x, query_y, training):
        logits = self.pair_logits(meta, support_x, query_x)
        same = (query_y[:, None] == support_y[None]).to(logits.dtype)
        weight = torch.where(same.bool(), self.positive_weight / same.sum().clamp_min(1.0),
                             (1 - self.positive_weight) / (1 - same).sum().clamp_min(1.0))
        loss = F.binary_cross_entropy_with_logits(logits, same, weight=weight, reduction="sum")
        scores, present = self._class_scores(logits, support_y)
        prediction = mask_absent(scores, present).argmax(-1)
        return loss, {"loss": loss.detach(), "accuracy": (prediction == query_y).float().mean()}


# ----------------------------------------------------------------------------- GraphNet

class _Adjacency(nn.Module):
    """Learned edge weights ``softmax_j MLP(|x_i - x_j|)``, without self-loops (Garcia & Bruna, eq. 3)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(dim, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, 1)

    def forward(self, nodes: Tensor) -> Tensor:
        diff = (nodes[..., :, None, :] - nodes[..., None, :, :]).abs()
        logits = self.fc3(F.leaky_relu(self.fc2(F.leaky_relu(self.fc1(diff))))).squeeze(-1)
        eye = torch.eye(nodes.shape[-2], dtype=torch.bool, device=nodes.device)
        return torch.softmax(logits.masked_fill(eye, float("-inf")), dim=-1)


class _GraphNetwork(nn.Module):
    """Graph convolutions ``x <- [x, leaky_relu(W [x, A(x) x])]`` then a last one giving class logits."""

    def __init__(self, dim: int, classes: int, layers: int, growth: int, adjacency_hidden: int):
        super().__init__()
        self.adjacency, self.convs = nn.ModuleList(), nn.ModuleList()
        for _ in range(layers):
            self.adjacency.append(_Adjacency(dim, adjacency_hidden))
            self.convs.append(nn.Linear(2 * dim, growth))
            dim += growth
        self.last_adjacency = _Adjacency(dim, adjacency_hidden)
        self.last_conv = nn.Linear(2 * dim, classes)

    def forward(self, nodes: Tensor) -> Tensor:
        for adjacency, conv in zip(self.adjacency, self.convs):
            messages = adjacency(nodes) @ nodes
            nodes = torch.cat([nodes, F.leaky_relu(conv(torch.cat([nodes, messages], -1)))], -1)
        return self.last_conv(torch.cat([nodes, self.last_adjacency(nodes) @ nodes], -1))


class GraphNet(MetricLearner):
    """Few-shot learning with graph neural networks over the support set and one query.

    Each query gets its own graph whose nodes are the support examples and the query. A node's
    features are its embedding concatenated with a label vector: the one-hot label for support
    nodes, the uniform distribution over the episode's classes for the query. ``layers`` graph
    convolutions, each with its own learned adjacency ``softmax_j MLP(|x_i - x_j|)``, append
    ``growth`` features to every node; a last graph convolution gives the query node's class
    logits. Queries never share a graph, so one query cannot inform another (the paper's
    non-transductive few-shot setting). The label vectors have ``max_ways`` entries, so a
    trained model serves any ``ways <= max_ways``.

    Args:
        model: the embedding network.
        max_ways: the largest number of ways of any episode (the label vector's length).
        layers: graph convolutions before the output one (2 in the paper's Omniglot model).
        growth: features each graph convolution adds (48 in the paper).
        adjacency_hidden: width of the adjacency MLP (the paper used 2 x 96, 96 wide layers).
        query_chunk: graphs processed together, to bound memory.

    References: Garcia & Bruna 2018, "Few-Shot Learning with Graph Neural Networks".
    """

    SPACE = {"layers": {"int": [1, 4]}, "growth": {"int": [16, 128], "log": True},
             "adjacency_hidden": {"int": [16, 128], "log": True}}

    def __init__(self, model: nn.Module, max_ways: int = 5, layers: int = 2, growth: int = 48,
                 adjacency_hidden: int = 64, query_chunk: int = 32, task: str = "classification",
                 batching: str = "auto"):
        super().__init__(model, task, batching)
        for name, value in (("max_ways", max_ways), ("layers", layers), ("growth", growth),
                            ("adjacency_hidden", adjacency_hidden), ("query_chunk", query_chunk)):
            check_positive("GraphNet", name, value, int)
        if max_ways < 2:
            raise ConfigError(f"The `max_ways` of GraphNet must be an integer >= 2. Got {max_ways} instead.")
        self.max_ways, self.query_chunk = max_ways, query_chunk
        self.graph = _GraphNetwork(_feature_dim("GraphNet", model) + max_ways, max_ways, layers, growth,
                                   adjacency_hidden)

    def _check_ways(self, support_y: Tensor) -> None:
        ways, _ = check_support_labels("GraphNet", support_y)
        if ways > self.max_ways:
            raise TaskSpecError(f"GraphNet was built for at most `max_ways`={self.max_ways} classes. Got a "
                                f"{ways}-way episode; set learner.max_ways >= {ways}.")

    def meta_backward(self, batch):
        self._check_ways(batch.support_y)
        return super().meta_backward(batch)

    def evaluate(self, batch):
        self._check_ways(batch.support_y)
        return super().evaluate(batch)

    def predict(self, support_x, support_y, query_x):
        self._check_ways(support_y)
        return super().predict(support_x, support_y, query_x)

    def scores(self, meta, support_x, support_y, query_x):
        support, queries = self.embed(meta, support_x, query_x)
        ways_range = torch.arange(self.max_ways, device=support_y.device)
        labels = (support_y[:, None] == ways_range).to(support.dtype)
        present = labels.sum(0) > 0
        uniform = labels.mean(0)  # 1/ways on the episode's classes, as the shots are equal
        support_nodes = torch.cat([support, labels], -1)
        logits = []
        for start in range(0, len(queries), self.query_chunk):
            chunk = queries[start:start + self.query_chunk]
            query_nodes = torch.cat([chunk, uniform.expand(len(chunk), -1)], -1)
            nodes = torch.cat([support_nodes.expand(len(chunk), *support_nodes.shape),
                               query_nodes[:, None]], 1)
            logits.append(self.call(meta, "graph", nodes)[:, -1])
        columns = len(present) if _is_transformed(support_y) else int(support_y.max()) + 1
        return torch.cat(logits)[:, :columns], present[:columns]


# ----------------------------------------------------------------------------- zero-shot

class ZeroShotProtoNet(MetricLearner):
    """Zero-shot prototypical networks: prototypes come from class meta-data, not images.

    ``c_k = g(v_k)`` with ``g`` an MLP (``class_hidden`` units) on the class's meta-data vector
    ``v_k`` and, with ``normalize=True``, scaled to unit length (the paper found this helped
    because ``v_k`` and images come from different domains). Queries are embedded by the image
    network; logits are negative squared Euclidean (or cosine) distances.

    Task format (see :class:`ClassAttributeTasks`): the support slot holds one meta-data vector
    per class, ``support_x (ways, class_dim)`` with ``support_y = 0..ways-1``; no support image
    is ever seen.

    Args:
        model: the image embedding network.
        class_dim: length of the meta-data vectors.
        class_hidden: hidden width of ``g``.
        normalize: scale prototypes to unit length.
        distance, temperature: as in :class:`ProtoNet`.

    References: Snell, Swersky & Zemel 2017, "Prototypical Networks for Few-shot Learning",
    section 2.5 (zero-shot learning).
    """

    SPACE = {"class_hidden": {"int": [16, 512], "log": True}, "normalize": {"choice": [True, False]},
             "temperature": {"float": [0.01, 10.0], "log": True}}

    def __init__(self, model: nn.Module, class_dim: int = 7, class_hidden: int = 64, normalize: bool = True,
                 distance: str = "euclidean", temperature: float = 1.0, task: str = "classification",
                 batching: str = "auto"):
        super().__init__(model, task, batching)
        check_positive("ZeroShotProtoNet", "class_dim", class_dim, int)
        check_positive("ZeroShotProtoNet", "class_hidden", class_hidden, int)
        _check_distance("ZeroShotProtoNet", distance, temperature)
        self.class_dim, self.normalize = class_dim, bool(normalize)
        self.distance, self.temperature = distance, float(temperature)
        self.class_encoder = MLP(class_dim, _feature_dim("ZeroShotProtoNet", model), hidden=(class_hidden,))

    def scores(self, meta, support_x, support_y, query_x):
        if support_x.dim() != 2 or support_x.shape[-1] != self.class_dim:
            raise TaskSpecError(f"ZeroShotProtoNet expects one meta-data vector of length class_dim="
                                f"{self.class_dim} per class in the support slot. Got support_x of shape "
                                f"{tuple(support_x.shape)}; set learner.class_dim or use "
                                f"ClassAttributeTasks.")
        (queries,) = self.embed(meta, query_x)
        vectors = self.call(meta, "class_encoder", support_x)
        if self.normalize:
            vectors = vectors / vectors.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        member, present = class_membership(support_y, vectors.dtype)
        prototypes = (member.T @ vectors) / member.sum(0).clamp_min(1.0)[:, None]
        return _distance_logits(queries, prototypes, self.distance, self.temperature), present

