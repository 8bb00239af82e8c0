"""Learning to optimize: meta-train a filler of the optimizer slot on a family of optimizees.

The learned optimizer is *what* is learned (a filler: :class:`~autometa.slots.optimizer.LSTMOptimizer`,
:class:`~autometa.slots.optimizer.LearnedRates`, or a hand-crafted rule, which only gets tested),
the optimizee family is *on what* (:class:`~autometa.tasks.QuadraticFamily`,
:class:`~autometa.tasks.MLPFamily`), and the hypergradient estimator is *how*
(:class:`~autometa.hypergrad.TruncatedBPTT` by default, or ``unrolled`` or ``es``). Each
meta-step hands one :class:`~autometa.hypergrad.InnerProblem` to the estimator, so ``autometa
run``, ``sweep`` and ``compare`` train and test learned optimizers like any other learner.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from autometa.errors import ConfigError, UnsupportedFeatureError
from autometa.hypergrad import ES, InnerProblem, TruncatedBPTT, Unrolled, build_estimator
from autometa.hypergrad._unrolled import gradients
from autometa.learners._base import Learner, check_positive
from autometa.slots import build_filler
from autometa.tasks import TaskBatch, check_stream, fresh_init, quadratic_loss, stream_loss

PROBLEM_KINDS = ("quadratic", "classification")


def _sub(meta: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    n = len(prefix) + 1
    return {k[n:]: v for k, v in meta.items() if k.startswith(prefix + ".")}


class L2O(Learner):
    """Meta-trains an optimizer filler on optimizee problems ("learning to learn by gradient descent").

    A meta-batch of tasks is *one* optimization problem holding ``meta_batch`` independent
    optimizees (a coordinatewise optimizer sees all their coordinates as one vector, as in the
    paper). With the default :class:`~autometa.hypergrad.TruncatedBPTT` estimator, each
    meta-step runs the next ``length`` steps of the problem in progress, so one problem of
    ``horizon`` steps takes ``horizon / length`` meta-steps (the meta-batches sampled meanwhile
    are not used); the meta-loss is the mean optimizee loss over the iterates of the truncation.
    With ``unrolled`` or ``es`` each meta-step is a new problem optimized for ``inner_steps``
    steps, and the meta-loss is the loss at the last iterate.

    Evaluation optimizes each held-out problem for ``eval_steps`` steps with the (fixed)
    optimizer and reports per task: ``loss`` (the optimizee's loss at the last iterate, on the
    minibatch of that step), ``loss_step_<t>`` at step 0 and every ``curve_every`` steps (the loss curve),
    and for networks the query-set ``accuracy`` and ``query_loss`` of the trained network.

    Args:
        model: the optimizee network for :class:`~autometa.tasks.MLPFamily` problems (each
            problem draws fresh starting weights; the model's own are not used or learned);
            ignored for quadratics.
        optimizer: the optimizer filler (a name, a mapping ``{name: lstm, hidden_size: 20}`` or
            a filler); default the LSTM optimizer.
        estimator: how the meta-gradient is computed; default
            ``{name: truncated, length: 20, horizon: 100}`` (first order, as in the paper).
        inner_steps: optimizee steps per meta-gradient for the ``unrolled`` and ``es`` estimators.
        eval_steps: optimizee steps at evaluation (the "step 100" of the paper).
        curve_every: record the loss curve every this many steps at evaluation.
        task: the problem kind, set by the task family (``quadratic`` or ``classification``).

    Example::

        learner = L2O(MLP(784, 10, (20,), "sigmoid"), optimizer={"name": "lstm"})
        metrics = learner.meta_backward(MLPFamily(load_mnist()).sample(1, generator))

    References: Andrychowicz et al. 2016, "Learning to learn by gradient descent by gradient
    descent"; Metz et al. 2019/2022 (truncated and ES estimators for learned optimizers).
    """

    SPACE: ClassVar[dict] = {}

    def __init__(self, model: nn.Module, optimizer="lstm", estimator=None, inner_steps: int = 20,
                 eval_steps: int = 100, curve_every: int = 10, task: str = "classification",
                 batching: str = "loop"):
        if task not in PROBLEM_KINDS:
            raise ConfigError(f"L2O trains optimizers on optimizee families (tasks.name: l2o_quadratic or "
                              f"l2o_mlp), whose kind is one of {PROBLEM_KINDS}. Got task kind {task!r}.")
        super().__init__(model, "classification", batching)
        # the optimizee's kind; ``task`` is not a few-shot kind, so the few-shot batch checks (targets of
        # shape (tasks, examples)) leave the optimizee families' batches alone
        self.kind, self.task = task, "optimization"
        for name, value in (("inner_steps", inner_steps), ("eval_steps", eval_steps), ("curve_every", curve_every)):
            check_positive("L2O", name, value, int)
        self.inner_steps, self.eval_steps, self.curve_every = inner_steps, eval_steps, curve_every
        for p in model.parameters():  # every problem starts from fresh weights: nothing to learn here
            p.requires_grad_(False)
        self.optimizer = build_filler("optimizer", optimizer)
        if hasattr(self.optimizer, "build"):  # fillers whose meta-parameters are shaped like the optimizee's
            if task == "quadratic":
                raise ConfigError(f"The {type(self.optimizer).__name__} filler needs the optimizee's parameter "
                                  f"shapes before training; on quadratics use a coordinatewise optimizer "
                                  f"(lstm) or a hand-crafted rule.")
            self.optimizer.build(dict(model.named_parameters()))
        estimator = {"name": "truncated", "length": 20, "horizon": 100} if estimator is None else estimator
        self.estimator = build_estimator(estimator)
        if not isinstance(self.estimator, (TruncatedBPTT, Unrolled, ES)):
            raise ConfigError(f"L2O trains an optimizer with the truncated, unrolled or es estimator. "
                              f"Got {self.estimator!r}.")
        self._problem: TaskBatch | None = None  # the problem truncated BPTT is working through

    def get_extra_state(self) -> dict:
        """The truncated-BPTT problem in progress (its tasks, step, iterates and rule state), saved with the
        weights so that a run resumed from a checkpoint continues it as an uninterrupted run does; empty
        when no problem is in progress. Tensors and plain containers only (``weights_only`` loading)."""
        carry = getattr(self.estimator, "_carry", None)
        if self._problem is None or carry is None:
            return {}
        step, params, state = carry
        batch = self._problem
        return {"step": step, "params": dict(params), "state": dict(state), "support_x": batch.support_x,
                "support_y": batch.support_y, "query_x": batch.query_x, "query_y": batch.query_y,
                "info": dict(batch.info)}

    def set_extra_state(self, extra: dict) -> None:
        if not extra:
            self._problem = None
            if isinstance(self.estimator, TruncatedBPTT):
                self.estimator.reset()
            return
        self._problem = TaskBatch(extra["support_x"], extra["support_y"], extra["query_x"], extra["query_y"],
                                  dict(extra["info"]))
        self.estimator._carry = (int(extra["step"]), dict(extra["params"]), dict(extra["state"]))

    def meta_params(self) -> dict[str, Tensor]:
        """ω: the optimizer filler's meta-parameters, named ``optimizer.*`` (empty for a hand-crafted rule)."""
        return {f"optimizer.{k}": v for k, v in self.optimizer.meta_params().items()}

    def space(self) -> dict:
        """The optimizer filler's searchable hyperparameters, prefixed ``optimizer.``."""
        return {f"optimizer.{k}": v for k, v in self.optimizer.space().items()}

    # the optimizee
    def init_params(self, batch: TaskBatch) -> dict[str, Tensor]:
        """The starting point of every optimizee of ``batch``, batched over tasks (leading dimension)."""
        if self.kind == "quadratic":
            return {"theta": batch.info["init"].clone()}
        if "init_seed" not in batch.info:
            raise ConfigError("L2O needs tasks that carry each network's init_seed (tasks.name: l2o_mlp).")
        dtype = batch.support_x.dtype
        inits = [fresh_init(self.model, int(s), dtype) for s in batch.info["init_seed"].tolist()]
        return {k: torch.stack([i[k] for i in inits]).to(batch.support_x.device) for k in inits[0]}

    def losses(self, params: dict[str, Tensor], batch: TaskBatch, step: int) -> Tensor:
        """Per-task optimizee losses ``(B,)`` at iterate ``step`` (its minibatch, for networks)."""
        if self.kind == "quadratic":
            return quadratic_loss(params["theta"], batch.support_x, batch.support_y)
        check_stream(batch, step)
        return stream_loss(self.model, params, batch.support_x[:, step], batch.support_y[:, step])

    def problem(self, batch: TaskBatch) -> InnerProblem:
        """``batch`` as one stepwise inner problem whose meta-parameters are the optimizer's."""

        def outer_loss(params, meta, step):
            losses = self.losses(params, batch, step)
            return losses.mean(), {"loss": losses.detach()}

        return InnerProblem(
            init=lambda meta: self.init_params(batch),
            # summed over tasks: each optimizee's gradient is its own loss's
            inner_loss=lambda p, meta, step: self.losses(p, batch, step).sum(),
            outer_loss=outer_loss,
            init_state=lambda p, meta: self.optimizer.init(p, _sub(meta, "optimizer")),
            update=lambda g, s, p, meta: self.optimizer.update(g, s, p, _sub(meta, "optimizer")),
            steps=self.inner_steps,
            stepwise=True,
        )

    def task_loss(self, meta, support_x, support_y, query_x, query_y, training):
        raise UnsupportedFeatureError("L2O optimizes the tasks of a meta-batch together, as one problem: call "
                                      "meta_backward(batch) or evaluate(batch) with the whole TaskBatch.")

    def meta_backward(self, batch: TaskBatch) -> dict[str, float]:
        """Accumulate the meta-gradient of one truncation (or one unroll) into the optimizer's ``.grad``."""
        if isinstance(self.estimator, TruncatedBPTT):
            if self.estimator.in_progress and self._problem is not None:
                batch = self._problem
            else:
                self.estimator.reset()
                self._problem = batch
        meta = self.meta_params()
        surrogate, metrics = self.estimator(self.problem(batch), meta, True, self.inner_steps)
        if surrogate.requires_grad:
            surrogate.backward()
        return {k: float(v.double().mean()) for k, v in metrics.items()}

    def evaluate(self, batch: TaskBatch) -> dict[str, Tensor]:
        """Optimize each problem of ``batch`` for ``eval_steps`` steps; per-task loss, curve and query metrics."""
        meta = {k: v.detach() for k, v in self.meta_params().items()}
        problem = self.problem(batch)
        params = problem.init(meta)
        state = problem.init_state(params, meta)
        names = list(params)
        with torch.no_grad():
            metrics = {"loss_step_0": self.losses(params, batch, 0)}
        for t in range(self.eval_steps):
            grads = gradients(lambda p, t=t: problem.inner_loss(p, meta, t), params, names, first_order=True)
            with torch.no_grad():
                params, state = problem.update(grads, state, params, meta)
            if (t + 1) % self.curve_every == 0 or t + 1 == self.eval_steps:
                with torch.no_grad():
                    metrics[f"loss_step_{t + 1}"] = self.losses(params, batch, t + 1)
        metrics = {"loss": metrics[f"loss_step_{self.eval_steps}"], **metrics}
        if self.kind == "classification":
            with torch.no_grad():
                logits = torch.func.vmap(lambda p, x: torch.func.functional_call(self.model, p, (x,)))(
                    params, batch.query_x)
                metrics["query_loss"] = torch.nn.functional.cross_entropy(
                    logits.flatten(0, 1), batch.query_y.flatten(), reduction="none").view(batch.query_y.shape).mean(-1)
                metrics["accuracy"] = (logits.argmax(-1) == batch.query_y).float().mean(-1)
        return metrics
