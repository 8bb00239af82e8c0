"""Model-based online learners: MANN (an LSTM with an external memory) and its baselines.

A sequence episode (:class:`autometa.tasks.SequenceClassification`) shows ``length`` images one
at a time; at step ``t`` the learner receives image ``x_t`` together with the one-hot label of
step ``t - 1`` (zeros at ``t = 0``) and predicts the label of ``x_t``. Nothing is adapted by
gradient inside an episode: what the learner knows about the task lives in its recurrent state
(and, for MANN, in its memory), written by a meta-learned controller, theta* = g_omega(D).

Every learner here takes the meta-batch as one recurrent batch (the tasks are the batch
dimension of the LSTM), so ``meta_backward`` / ``evaluate`` do not loop over tasks. Per-task
metrics are ``loss`` and ``accuracy`` over all steps, and ``accuracy_k``, the accuracy on the
steps where a class is shown for the ``k``-th time (Santoro et al. 2016, Table 1), for ``k``
up to ``instances`` (10).

The images pass through ``model`` first (the run loop builds it from the ``model`` section;
``{name: mlp, hidden: []}`` is the identity on the flattened pixels, the paper's input). A
network with batch norm would normalise every image with the statistics of the whole
meta-batch, later steps included; use one without batch norm for a strictly online protocol.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autometa.errors import ConfigError, TaskSpecError
from autometa.learners._base import Learner, check_positive
from autometa.nets import functional_forward
from autometa.tasks import TaskBatch, presentation_index

# ----------------------------------------------------------------------------- memory (pure functions)

def least_used(usage: Tensor, count: int) -> Tensor:
    """Indicator ``(B, N)`` of the ``count`` least-used memory slots of each row of ``usage (B, N)``.

    Ties go to the lower slot index (a stable sort), so an empty memory fills slots 0, 1, ...
    """
    order = torch.argsort(usage, dim=-1, stable=True)[:, :count]
    return torch.zeros_like(usage).scatter(1, order, 1.0)


def cosine_read_weights(keys: Tensor, memory: Tensor, eps: float = 1e-8) -> Tensor:
    """Softmax over slots of the cosine similarity of each key with each slot.

    Args:
        keys: ``(B, H, W)``, one key per read head.
        memory: ``(B, N, W)``.

    Returns:
        ``(B, H, N)`` read weights, each row summing to 1.
    """
    keys = keys / keys.norm(dim=-1, keepdim=True).clamp_min(eps)
    slots = memory / memory.norm(dim=-1, keepdim=True).clamp_min(eps)
    return torch.softmax(keys @ slots.transpose(1, 2), dim=-1)


def lru_memory_step(memory: Tensor, usage: Tensor, read_weights: Tensor, keys: Tensor, gates: Tensor,
                    decay: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One step of least-recently-used access (LRUA) to the memory of Santoro et al. 2016.

    With ``H`` heads, the ``H`` least-used slots of the previous usage ``w^lu_{t-1}`` are erased;
    each head ``h`` then writes its key into ``w^w_t = sigmoid(a_h) w^r_{t-1} + (1 - sigmoid(a_h))
    w^lu_{t-1}`` (the slot it last read, or an unused one); each head reads from the written
    memory with cosine-similarity weights; usage decays and accumulates what was read and written:
    ``w^u_t = decay w^u_{t-1} + sum_h (w^r_t + w^w_t)``.

    Args:
        memory: ``(B, N, W)`` memory before the step.
        usage: ``(B, N)`` usage weights before the step.
        read_weights: ``(B, H, N)`` the previous step's read weights.
        keys: ``(B, H, W)`` the keys of this step (written and read with, as in the paper).
        gates: ``(B, H)`` the gate logits ``a_h`` (before the sigmoid).
        decay: usage decay ``gamma`` in ``(0, 1]``.

    Returns:
        ``(memory, usage, read_weights, reads)`` after the step; ``reads`` is ``(B, H, W)``.

    Deviation: the paper sets "the least used memory location" to zero before writing, and both
    public reimplementations (tristandeleu/ntm-one-shot, snowkylin/ntm) zero that one slot; here all
    ``H`` slots that ``w^lu`` marks are zeroed, so that every slot an unused-slot write reaches
    starts empty (4 of the 128 slots every step with the paper's 4 heads). On an easy episode
    stream this memory learns faster than an LSTM (benchmarks/modelbased/mann_probe.py).

    References: Santoro et al. 2016, equations (4)-(8).
    """
    lu = least_used(usage, keys.shape[1])  # (B, N)
    gate = torch.sigmoid(gates)[..., None]  # (B, H, 1)
    write_weights = gate * read_weights + (1 - gate) * lu[:, None, :]  # (B, H, N)
    memory = memory * (1 - lu)[..., None] + write_weights.transpose(1, 2) @ keys
    new_read = cosine_read_weights(keys, memory)
    reads = new_read @ memory
    usage = decay * usage + new_read.sum(1) + write_weights.sum(1)
    return memory, usage, new_read, reads


# ----------------------------------------------------------------------------- learners

def check_sequence_batch(owner: str, batch: TaskBatch, ways: int) -> None:
    """Refuse a batch that is not a sequence episode with labels ``0..ways-1``.

    Raises:
        TaskSpecError: support and query are not the same sequence, or a label is out of range.
    """
    same = (batch.support_x.shape == batch.query_x.shape and torch.equal(batch.support_y, batch.query_y)
            and torch.equal(batch.support_x, batch.query_x))
    if not same:
        raise TaskSpecError(f"{owner} learns online from sequence episodes, whose support and query are the same "
                            f"sequence (each step is predicted, then its label shown one step late). Got support "
                            f"{tuple(batch.support_x.shape)} and query {tuple(batch.query_x.shape)} that differ; "
                            f"use tasks: {{name: omniglot_sequence}} (autometa.tasks.SequenceClassification).")
    low, high = int(batch.support_y.min()), int(batch.support_y.max())
    if low < 0 or high >= ways:
        raise TaskSpecError(f"{owner} was built for ways={ways} and needs labels 0..{ways - 1}. Got labels "
                            f"{low}..{high}; build it with ways={high + 1} (learner.ways) or sample {ways}-way "
                            f"episodes.")


class SequenceLearner(Learner):
    """Base of the online sequence learners: an input network, a recurrent core, a linear readout.

    Subclasses implement :meth:`initial_state` and :meth:`step`; :meth:`sequence_logits` runs the
    episode. ``HEAD = False``: the run loop builds ``model`` without a classification head.

    Args:
        model: the network applied to each image (its flattened output is the step's input).
        ways: classes per episode (the size of the label input and of the output).
        instances: the per-instance accuracies reported (``accuracy_1`` .. ``accuracy_<instances>``).
        task: only ``"classification"``.
        batching: accepted for the common interface; the tasks are always the recurrent batch.
    """

    HEAD: ClassVar[bool] = False

    def __init__(self, model: nn.Module, ways: int = 5, instances: int = 10, task: str = "classification",
                 batching: str = "auto"):
        name = type(self).__name__
        if task != "classification":
            raise ConfigError(f"{name} classifies sequences. Got task={task!r}; use a MAML-style learner for "
                              f"regression.")
        super().__init__(model, task, batching)
        check_positive(name, "ways", ways, int)
        check_positive(name, "instances", instances, int)
        self.ways, self.instances = int(ways), int(instances)
        dim = getattr(model, "feature_dim", None)
        if not isinstance(dim, int):
            raise ConfigError(f"{name} needs a network that states its output size as `feature_dim` (Conv4, MLP; "
                              f"model: {{name: mlp, hidden: []}} gives the raw pixels). Got {type(model).__name__}.")
        self.input_dim = dim + self.ways

    @abc.abstractmethod
    def initial_state(self, batch_size: int, like: Tensor):
        """The recurrent state before step 0 of ``batch_size`` episodes (dtype and device of ``like``)."""

    @abc.abstractmethod
    def step(self, inputs: Tensor, state):
        """``(logits (B, ways), state)`` for one step's inputs ``(B, input_dim)``."""

    def sequence_logits(self, images: Tensor, labels: Tensor) -> Tensor:
        """Logits ``(B, T, ways)``: step ``t`` sees image ``t`` and the one-hot label of step ``t - 1``."""
        b, t = labels.shape
        features = functional_forward(self.model, dict(self.model.named_parameters()), images.flatten(0, 1))
        features = features.flatten(1).view(b, t, -1)
        previous = F.one_hot(labels[:, :-1], self.ways).to(features.dtype)
        previous = torch.cat([torch.zeros_like(previous[:, :1]), previous], 1)  # nothing shown before step 0
        inputs = torch.cat([features, previous], -1)
        state = self.initial_state(b, inputs)
        logits = []
        for step in range(t):
            out, state = self.step(inputs[:, step], state)
            logits.append(out)
        return torch.stack(logits, 1)

    def sequence_metrics(self, logits: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """Per-task ``loss``, ``accuracy`` and ``accuracy_k`` (k = 1..instances), shape ``(B,)``."""
        losses = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none").view(labels.shape)
        correct = (logits.argmax(-1) == labels).to(logits.dtype)
        metrics = {"loss": losses.mean(1), "accuracy": correct.mean(1)}
        instance = presentation_index(labels)
        for k in range(1, self.instances + 1):
            mask = (instance == k).to(logits.dtype)
            if bool((mask.sum(1) > 0).all()):  # reported only where every episode shows a class k times
                metrics[f"accuracy_{k}"] = (correct * mask).sum(1) / mask.sum(1)
        return metrics

    def meta_backward(self, batch: TaskBatch) -> dict[str, float]:
        check_sequence_batch(type(self).__name__, batch, self.ways)
        logits = self.sequence_logits(batch.query_x, batch.query_y)
        metrics = self.sequence_metrics(logits, batch.query_y)
        metrics["loss"].mean().backward()
        return {k: v.mean().item() for k, v in metrics.items()}

    def evaluate(self, batch: TaskBatch) -> dict[str, Tensor]:
        check_sequence_batch(type(self).__name__, batch, self.ways)
        with torch.no_grad():
            metrics = self.sequence_metrics(self.sequence_logits(batch.query_x, batch.query_y), batch.query_y)
        return {k: v.detach() for k, v in metrics.items()}

    def task_loss(self, meta, support_x, support_y, query_x, query_y, training):
        # one task as a batch of one (the learners above run whole meta-batches at once)
        metrics = self.sequence_metrics(self.sequence_logits(query_x[None], query_y[None]), query_y[None])
        return metrics["loss"][0], {k: v[0] for k, v in metrics.items()}


class SequenceFeedForward(SequenceLearner):
    """The feed-forward baseline of Santoro et al. 2016: an MLP on each step alone (no memory).

    It sees the previous step's label but cannot relate it to anything, so it stays at chance.

    Args:
        hidden: width of the hidden layer (200).
    """

    SPACE = {"hidden": {"int": [32, 512], "log": True}}

    def __init__(self, model: nn.Module, ways: int = 5, hidden: int = 200, instances: int = 10,
                 task: str = "classification", batching: str = "auto"):
        super().__init__(model, ways, instances, task, batching)
        check_positive("SequenceFeedForward", "hidden", hidden, int)
        self.net = nn.Sequential(nn.Linear(self.input_dim, hidden), nn.ReLU(), nn.Linear(hidden, self.ways))

    def initial_state(self, batch_size, like):
        return None

    def step(self, inputs, state):
        return self.net(inputs), None


class SequenceLSTM(SequenceLearner):
    """The LSTM baseline of Santoro et al. 2016: what it knows of the episode is in its state.

    Args:
        hidden: LSTM units (200 in the paper).

    References: Santoro et al. 2016; Hochreiter, Younger & Conwell 2001.
    """

    SPACE = {"hidden": {"int": [32, 512], "log": True}}

    def __init__(self, model: nn.Module, ways: int = 5, hidden: int = 200, instances: int = 10,
                 task: str = "classification", batching: str = "auto"):
        super().__init__(model, ways, instances, task, batching)
        check_positive("SequenceLSTM", "hidden", hidden, int)
        self.controller = nn.LSTMCell(self.input_dim, hidden)
        self.readout = nn.Linear(hidden, self.ways)

    def initial_state(self, batch_size, like):
        zeros = like.new_zeros(batch_size, self.controller.hidden_size)
        return zeros, zeros

    def step(self, inputs, state):
        h, c = self.controller(inputs, state)
        return self.readout(h), (h, c)


class MANN(SequenceLearner):
    """Memory-augmented neural network: an LSTM controller with an external LRUA memory.

    At step ``t`` the controller (an LSTM fed the image, the previous label and the previous
    step's reads, as in a neural Turing machine) emits one key and one gate per read head; the
    memory is written and read by :func:`lru_memory_step`; the output is a linear function of
    the controller's state and the reads. The memory starts every episode at ``1e-6`` with zero
    usage.

    Args:
        hidden: controller units (200).
        memory_slots, memory_width: the memory's size (128 x 40).
        read_heads: read (and write) heads (4 in the paper's Omniglot experiments).
        usage_decay: ``gamma`` of the usage weights (0.95).

    Example::

        learner = MANN(MLP(400, None, hidden=[]), ways=5)
        metrics = learner.meta_backward(tasks.sample(16, generator))  # tasks: omniglot_sequence

    References: Santoro, Bartunov, Botvinick, Wierstra & Lillicrap 2016, "Meta-Learning with
    Memory-Augmented Neural Networks".
    """

    SPACE = {"hidden": {"int": [64, 512], "log": True}, "read_heads": {"int": [1, 8]},
             "usage_decay": {"float": [0.8, 0.999]}}

    def __init__(self, model: nn.Module, ways: int = 5, hidden: int = 200, memory_slots: int = 128,
                 memory_width: int = 40, read_heads: int = 4, usage_decay: float = 0.95, instances: int = 10,
                 task: str = "classification", batching: str = "auto"):
        super().__init__(model, ways, instances, task, batching)
        for key, value in (("hidden", hidden), ("memory_slots", memory_slots), ("memory_width", memory_width),
                           ("read_heads", read_heads)):
            check_positive("MANN", key, value, int)
        if not (isinstance(usage_decay, (int, float)) and 0 < usage_decay <= 1):
            raise ConfigError(f"The `usage_decay` of MANN must be a float in (0, 1]. Got {usage_decay!r} instead.")
        if read_heads > memory_slots:
            raise ConfigError(f"MANN erases `read_heads` slots per step, so it needs read_heads <= memory_slots. Got "
                              f"read_heads={read_heads}, memory_slots={memory_slots}.")
        self.slots, self.width, self.heads, self.decay = memory_slots, memory_width, read_heads, float(usage_decay)
        self.controller = nn.LSTMCell(self.input_dim + read_heads * memory_width, hidden)
        self.keys = nn.Linear(hidden, read_heads * memory_width)
        self.gates = nn.Linear(hidden, read_heads)
        self.readout = nn.Linear(hidden + read_heads * memory_width, self.ways)

    def initial_state(self, batch_size, like):
        h = like.new_zeros(batch_size, self.controller.hidden_size)
        memory = like.new_full((batch_size, self.slots, self.width), 1e-6)
        usage = like.new_zeros(batch_size, self.slots)
        read_weights = like.new_zeros(batch_size, self.heads, self.slots)
        reads = like.new_zeros(batch_size, self.heads * self.width)
        return h, h, memory, usage, read_weights, reads

    def step(self, inputs, state):
        h, c, memory, usage, read_weights, reads = state
        h, c = self.controller(torch.cat([inputs, reads], -1), (h, c))
        keys = torch.tanh(self.keys(h)).view(-1, self.heads, self.width)
        memory, usage, read_weights, new_reads = lru_memory_step(memory, usage, read_weights, keys, self.gates(h),
                                                                 self.decay)
        reads = new_reads.flatten(1)
        return self.readout(torch.cat([h, reads], -1)), (h, c, memory, usage, read_weights, reads)
