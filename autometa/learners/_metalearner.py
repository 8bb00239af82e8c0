"""The meta-learner LSTM of Ravi & Larochelle 2017: an LSTM whose cell state is the learner's weights."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.func import functional_call

from autometa.errors import UnsupportedFeatureError
from autometa.learners._base import Learner, check_positive, query_metrics
from autometa.nets import functional_forward
from autometa.slots.optimizer._lstm import check_finite_update, preprocess_gradients
from autometa.tasks import TaskBatch


class MetaLearnerLSTM(Learner):
    """Few-shot learner whose inner optimizer is a meta-learned LSTM (Ravi & Larochelle 2017).

    The learner network's flattened parameters are the cell state ``c`` of a coordinatewise LSTM
    cell. Each inner step computes the support loss ``L`` and gradient ``g`` at ``c`` and updates

        ``f = sigmoid(W_f [h, c, f_prev] + b_f)``, ``i = sigmoid(W_i [h, c, i_prev] + b_i)``,
        ``c = f * c - i * g``,

    where ``h`` is the output of a first, ordinary LSTM layer (``hidden_size`` units, shared
    across coordinates) reading the preprocessed ``[g, L]`` (log-magnitude and sign, ``p = 10``,
    as in Andrychowicz et al. 2016). ``i`` is a learned per-coordinate learning rate, ``f`` a
    learned shrinkage. The initial cell state ``c_0`` is the network's initialization, also
    meta-learned. As in the paper, the gradient and loss fed to the LSTM are treated as
    constants (first-order: no second derivatives of the learner's loss).

    Args:
        model: the learner network (its parameters are ``c_0``).
        inner_steps: LSTM updates on the support set during meta-training.
        eval_inner_steps: updates at evaluation (default: ``inner_steps``).
        hidden_size: units of the first LSTM layer (20 in the paper).
        preprocess: the ``p`` of the input preprocessing (10).
        task: ``"classification"`` or ``"regression"``.
        batching: ``"loop"`` (the inner gradients use ``torch.autograd.grad``, which ``vmap``
            does not support; ``"auto"`` means ``"loop"``).

    Raises:
        UnsupportedFeatureError: for ``batching="vmap"``.

    Example::

        learner = MetaLearnerLSTM(Conv4(out_features=5, hidden=32), inner_steps=5)
        metrics = learner.meta_backward(tasks.sample(8, generator))

    References: Ravi & Larochelle 2017, "Optimization as a Model for Few-Shot Learning".
    """

    SPACE: ClassVar[dict] = {"inner_steps": {"int": [1, 20]}, "hidden_size": {"int": [4, 40]}}

    def __init__(self, model: nn.Module, inner_steps: int = 5, eval_inner_steps: int | None = None,
                 hidden_size: int = 20, preprocess: float = 10.0, task: str = "classification",
                 batching: str = "auto"):
        if batching == "vmap":
            raise UnsupportedFeatureError(
                "MetaLearnerLSTM computes inner gradients with torch.autograd.grad, which vmap cannot "
                "batch. Got batching='vmap'; use batching='loop' (or 'auto').")
        super().__init__(model, task, batching)
        check_positive("MetaLearnerLSTM", "inner_steps", inner_steps, int)
        check_positive("MetaLearnerLSTM", "hidden_size", hidden_size, int)
        check_positive("MetaLearnerLSTM", "preprocess", preprocess)
        if eval_inner_steps is not None:
            check_positive("MetaLearnerLSTM", "eval_inner_steps", eval_inner_steps, int)
        self.inner_steps, self.eval_inner_steps = inner_steps, eval_inner_steps or inner_steps
        self.hidden_size, self.preprocess = hidden_size, float(preprocess)
        self.input_lstm = nn.LSTMCell(4, hidden_size)
        # Gate weights read [h, c, previous gate]. Biases start the forget gate near 1 (keep the
        # weights) and the input gate near 0 (small learning rate), as the paper does.
        self.forget_weight = nn.Parameter(torch.empty(hidden_size + 2).uniform_(-0.01, 0.01))
        self.input_weight = nn.Parameter(torch.empty(hidden_size + 2).uniform_(-0.01, 0.01))
        self.forget_bias = nn.Parameter(torch.empty(()).uniform_(4.0, 6.0))
        self.input_bias = nn.Parameter(torch.empty(()).uniform_(-5.0, -4.0))

    def _mode(self, batch: TaskBatch) -> str:
        return "loop"

    def adapt(self, meta: dict[str, Tensor], support_x: Tensor, support_y: Tensor,
              steps: int) -> dict[str, Tensor]:
        """The network's parameters after ``steps`` LSTM updates on one task's support set.

        Raises:
            NumericalError: if an update holds NaN or inf (names the step and parameter).
        """
        init = self.model_params(meta)
        lstm_params = {k[len("input_lstm."):]: v for k, v in meta.items() if k.startswith("input_lstm.")}
        names, shapes = list(init), [p.shape for p in init.values()]
        sizes = [p.numel() for p in init.values()]

        def unflatten(flat: Tensor) -> dict[str, Tensor]:
            return {k: part.view(shape) for k, part, shape in zip(names, flat.split(sizes), shapes)}

        cell = torch.cat([p.reshape(-1) for p in init.values()])
        count = cell.numel()
        hidden = torch.zeros(count, self.hidden_size, dtype=cell.dtype, device=cell.device)
        memory = torch.zeros_like(hidden)
        forget_gate = torch.zeros_like(cell)
        input_gate = torch.zeros_like(cell)
        for step in range(steps):
            # First-order, as in the paper: loss and gradient enter the LSTM as constants.
            with torch.enable_grad():
                point = cell.detach().requires_grad_(True)
                loss = self.loss_fn(functional_forward(self.model, unflatten(point), support_x), support_y)
                grad = torch.autograd.grad(loss, point)[0]
            loss = loss.detach()
            features = torch.cat([preprocess_gradients(grad, self.preprocess),
                                  preprocess_gradients(loss.expand(count), self.preprocess)], dim=-1)
            hidden, memory = functional_call(self.input_lstm, lstm_params, (features, (hidden, memory)))
            forget_gate = torch.sigmoid(
                torch.cat([hidden, cell[:, None], forget_gate[:, None]], -1) @ meta["forget_weight"]
                + meta["forget_bias"])
            input_gate = torch.sigmoid(
                torch.cat([hidden, cell[:, None], input_gate[:, None]], -1) @ meta["input_weight"]
                + meta["input_bias"])
            new_cell = forget_gate * cell - input_gate * grad
            delta = new_cell.detach() - cell.detach()
            if not bool(torch.isfinite(delta).all()):
                for name, part, g in zip(names, delta.split(sizes), grad.split(sizes)):
                    check_finite_update("MetaLearnerLSTM", step + 1, name, part, g)
            cell = new_cell
        return unflatten(cell)

    def task_loss(self, meta, support_x, support_y, query_x, query_y, training):
        steps = self.inner_steps if training else self.eval_inner_steps
        adapted = self.adapt(meta, support_x, support_y, steps)
        out = functional_forward(self.model, adapted, query_x)
        loss = self.loss_fn(out, query_y)
        return loss, query_metrics(self.task, out, query_y, loss)
